//! NDJSON: one JSON object per notification, one line each (DESIGN.md "Output").
//!
//! The four fields `channel`, `payload`, `pid`, `received_at` are a contract: fields may be
//! added, never renamed or removed. `payload` is always the raw string.

use crate::notification::Notification;
use serde::Serialize;
use std::fmt;
use std::io::{self, Write};

/// The NDJSON record of one notification.
#[derive(Serialize)]
pub struct Record<'a> {
    pub channel: &'a str,
    pub payload: &'a str,
    pub pid: i32,
    pub received_at: Micros,
}

/// A UTC timestamp written as RFC 3339 with microseconds: `2026-11-24T01:02:03.456789Z`.
pub struct Micros(pub jiff::Timestamp);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.0)
    }
}

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

pub fn write(out: &mut impl Write, n: &Notification) -> io::Result<()> {
    let record = Record {
        channel: &n.channel,
        payload: &n.payload,
        pid: n.pid,
        received_at: Micros(n.received_at),
    };
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_the_contract_fields() {
        let n = Notification {
            channel: "Or\"ders\n".into(),
            payload: "{\"id\":1}\nnext\u{1b}".into(),
            pid: 4242,
            received_at: "2026-11-24T01:02:03.456789Z".parse().unwrap(),
        };
        let mut out = Vec::new();
        write(&mut out, &n).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert_eq!(
            line,
            "{\"channel\":\"Or\\\"ders\\n\",\"payload\":\"{\\\"id\\\":1}\\nnext\\u001b\",\
             \"pid\":4242,\"received_at\":\"2026-11-24T01:02:03.456789Z\"}\n"
        );
    }

    #[test]
    fn whole_seconds_still_have_six_digits() {
        let t: jiff::Timestamp = "2026-11-24T01:02:03Z".parse().unwrap();
        assert_eq!(Micros(t).to_string(), "2026-11-24T01:02:03.000000Z");
    }
}
