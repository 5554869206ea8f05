//! `--format raw`: the payload alone, one line per notification, for
//! `pgnotify listen jobs --format raw | while read -r p; do ...; done`.
//!
//! The payload is written exactly as sent, except that its line breaks become the two
//! characters `\n` and `\r`, so that one notification is always one line (a payload that
//! holds a backslash and an `n` reads the same: use `--json` when that matters). On a
//! terminal every control character is escaped as in the text format, so a payload cannot
//! drive the terminal. Never any colour.

use super::Style;
use crate::notification::Notification;
use crate::sanitize::{escape_bytes, escape_controls};
use std::borrow::Cow;
use std::io::{self, Write};

pub(super) fn write(out: &mut impl Write, n: &Notification, style: Style) -> io::Result<()> {
    if let Some(bytes) = &n.exact_payload {
        // Not UTF-8 (a SQL_ASCII database): the bytes as they were sent, on one line.
        match style.escape {
            true => out.write_all(escape_bytes(bytes).as_bytes())?,
            false => {
                for piece in bytes.split_inclusive(|&b| b == b'\n' || b == b'\r') {
                    match piece.split_last() {
                        Some((b'\n', rest)) => out.write_all(&[rest, b"\\n"].concat())?,
                        Some((b'\r', rest)) => out.write_all(&[rest, b"\\r"].concat())?,
                        _ => out.write_all(piece)?,
                    }
                }
            }
        }
        return out.write_all(b"\n");
    }
    let line = if style.escape {
        escape_controls(&n.payload)
    } else {
        one_line(&n.payload)
    };
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// The payload with LF and CR written as `\n` and `\r`, nothing else changed.
fn one_line(payload: &str) -> Cow<'_, str> {
    if !payload.contains(['\n', '\r']) {
        return Cow::Borrowed(payload);
    }
    Cow::Owned(payload.replace('\n', "\\n").replace('\r', "\\r"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: &str, escape: bool) -> String {
        let n = Notification {
            channel: "jobs".into(),
            payload: payload.into(),
            exact_payload: None,
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: Some(serde_json::json!({"id": 1})),
            stored: None,
        };
        let mut out = Vec::new();
        let style = Style {
            color: true,
            escape,
        };
        write(&mut out, &n, style).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_payload_alone_exactly_as_sent_but_on_one_line() {
        assert_eq!(line("it's \"a b\" c:\\d", false), "it's \"a b\" c:\\d\n");
        assert_eq!(line("a\nb\r\nc", false), "a\\nb\\r\\nc\n");
        assert_eq!(line("", false), "\n");
        // Into a pipe other control characters pass, as sent; JSON is not reformatted.
        assert_eq!(
            line("\t\u{1b}[1m{ \"x\": 1 }", false),
            "\t\u{1b}[1m{ \"x\": 1 }\n"
        );
    }

    #[test]
    fn on_a_terminal_every_control_character_is_escaped_and_there_is_no_colour() {
        assert_eq!(
            line("a\nb\t\u{1b}[2J\u{202e}", true),
            "a\\nb\\t\\x1b[2J\\u{202e}\n"
        );
        assert_eq!(line("plain", true), "plain\n", "no colour, no fetched row");
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_written_as_its_bytes_on_one_line() {
        let n = Notification {
            channel: "c".into(),
            payload: "?".into(),
            exact_payload: Some(b"caf\xe9\nx\r\xff\x1b".to_vec()),
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        };
        let mut out = Vec::new();
        write(&mut out, &n, Style::default()).unwrap();
        assert_eq!(out, b"caf\xe9\\nx\\r\xff\x1b\n");
        let mut out = Vec::new();
        let terminal = Style {
            color: false,
            escape: true,
        };
        write(&mut out, &n, terminal).unwrap();
        assert_eq!(out, b"caf\\xe9\\nx\\r\\xff\\x1b\n");
    }
}
