//! Text from outside (channel names, payloads, server and OS messages) made safe and plain to
//! show: control characters made visible, OS error numbers dropped.

use std::borrow::Cow;

/// Makes control characters visible: `\n`, `\t`, `\r`, `\x1b`..., so user data can neither
/// break a line-per-event format nor drive the terminal (a payload or channel name is
/// anyone's text: any role that can connect can send one).
pub(crate) fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A character that acts on the terminal instead of showing: a control character, or one of
/// Unicode's invisible format characters that reorder or hide text (the bidirectional
/// overrides and isolates, zero-width ones, the byte-order mark).
pub(crate) fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// "Connection refused (os error 111)" -> "Connection refused".
pub(crate) fn strip_os_error(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_that_reorder_or_hide_text_are_shown() {
        assert_eq!(
            escape_controls("a\u{202e}b\u{200b}c"),
            "a\\u{202e}b\\u{200b}c"
        );
        assert_eq!(escape_controls("plain é"), "plain é");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_controls("plain é"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nb\tc\r\x1b[1m\u{85}"),
            "a\\nb\\tc\\r\\x1b[1m\\x85"
        );
    }

    #[test]
    fn os_error_numbers_are_dropped() {
        assert_eq!(
            strip_os_error("Connection refused (os error 111)"),
            "Connection refused"
        );
        assert_eq!(strip_os_error("plain"), "plain");
    }
}
