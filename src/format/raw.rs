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
use crate::sanitize::escape_controls;
use std::borrow::Cow;
use std::io::{self, Write};

pub(super) fn write(out: &mut impl Write, n: &Notification, style: Style) -> io::Result<()> {
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
}
