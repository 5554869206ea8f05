//! The human format: `2026-11-24 12:34:56.789  orders  pid=4242  {"id":1}`, local time.
//!
//! One line per notification whatever the payload holds: control characters are always
//! escaped here, since this format is for reading, not parsing (use `--json` for that).

use super::Style;
use crate::notification::Notification;
use crate::sanitize::escape_controls;
use crossterm::style::Stylize;
use std::io::{self, Write};

pub(super) struct Text {
    zone: jiff::tz::TimeZone,
}

impl Text {
    pub(super) fn new() -> Text {
        Text {
            zone: jiff::tz::TimeZone::system(),
        }
    }

    pub(super) fn write(
        &self,
        out: &mut impl Write,
        n: &Notification,
        style: Style,
    ) -> io::Result<()> {
        let time = self.zone.to_datetime(n.received_at);
        let time = time.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string();
        let channel = escape_controls(&n.channel);
        let mut payload = escape_controls(&n.payload);
        if let Some(row) = &n.fetched {
            // `--fetch`: the row as read now, after the payload.
            let row = serde_json::to_string(row).unwrap_or_default();
            payload = format!("{payload}  new={}", escape_controls(&row)).into();
        }
        if style.color {
            writeln!(
                out,
                "{}  {}  {}  {payload}",
                time.dim(),
                channel.as_ref().bold().cyan(),
                format!("pid={}", n.pid).dim()
            )
        } else {
            writeln!(out, "{time}  {channel}  pid={}  {payload}", n.pid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_fields_in_order() {
        let n = Notification {
            channel: "My Chan".into(),
            payload: "a\nb".into(),
            pid: 7,
            received_at: "2026-11-24T01:02:03.456789Z".parse().unwrap(),
            fetched: None,
        };
        let text = Text {
            zone: jiff::tz::TimeZone::UTC,
        };
        let mut out = Vec::new();
        text.write(&mut out, &n, Style::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-24 01:02:03.456  My Chan  pid=7  a\\nb\n"
        );
        let mut colored = Vec::new();
        let style = Style {
            color: true,
            escape: true,
        };
        text.write(&mut colored, &n, style).unwrap();
        assert!(colored.contains(&0x1b));
    }
}
