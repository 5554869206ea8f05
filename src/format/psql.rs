//! psql's own sentences, so that scripts written against psql's output keep working
//! (psql's `PrintNotifications` in common.c).

use super::Style;
use crate::notification::Notification;
use crate::sanitize::{escape_bytes, escape_controls};
use std::io::{self, Write};

pub(super) fn write(out: &mut impl Write, n: &Notification, style: Style) -> io::Result<()> {
    let (channel, payload) = if let Some(bytes) = &n.exact_payload {
        // Not UTF-8 (a SQL_ASCII database): invalid bytes as `\xHH`, never raw.
        (escape_controls(&n.channel), escape_bytes(bytes).into())
    } else if style.escape {
        (escape_controls(&n.channel), escape_controls(&n.payload))
    } else {
        (n.channel.as_str().into(), n.payload.as_str().into())
    };
    if payload.is_empty() {
        writeln!(
            out,
            "Asynchronous notification \"{channel}\" received from server process with PID {}.",
            n.pid
        )
    } else {
        writeln!(
            out,
            "Asynchronous notification \"{channel}\" with payload \"{payload}\" received from server process with PID {}.",
            n.pid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: &str) -> String {
        let n = Notification {
            channel: "virtual".into(),
            payload: payload.into(),
            exact_payload: None,
            pid: 8448,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        };
        let mut out = Vec::new();
        write(&mut out, &n, Style::default()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn psql_sentences() {
        assert_eq!(
            line(""),
            "Asynchronous notification \"virtual\" received from server process with PID 8448.\n"
        );
        assert_eq!(
            line("This is the payload"),
            "Asynchronous notification \"virtual\" with payload \"This is the payload\" received from server process with PID 8448.\n"
        );
    }
}
