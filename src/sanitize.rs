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

/// Bytes that may not be UTF-8 (a SQL_ASCII database's payload) as text: valid UTF-8 as
/// [`escape_controls`] shows it, each byte of an invalid sequence as `\xHH`.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape_controls(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A character that acts on the terminal instead of showing: a control character, or one of
/// the invisible characters that reorder or hide text: Unicode's format characters (general
/// category Cf: bidirectional marks, overrides and isolates, zero-width ones, the soft
/// hyphen, the byte-order mark, interlinear annotations, the tag characters that can carry
/// hidden text), the line and paragraph separators, and the Hangul fillers that show nothing.
pub(crate) fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061c}'
                | '\u{06dd}'
                | '\u{070f}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08e2}'
                | '\u{115f}'..='\u{1160}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
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
    fn bytes_that_are_not_utf8_are_shown_as_hex_and_controls_escaped() {
        assert_eq!(escape_bytes(b"caf\xe9"), "caf\\xe9");
        assert_eq!(
            escape_bytes(b"\x1b[1m\xe2\x82 \xc3\xa9\n\x80"),
            "\\x1b[1m\\xe2\\x82 \u{e9}\\n\\x80"
        );
        assert_eq!(escape_bytes(b""), "");
        let all: Vec<u8> = (1..=255).collect();
        let shown = escape_bytes(&all);
        assert!(!shown.chars().any(hidden), "{shown:?}");
    }

    #[test]
    fn characters_that_reorder_or_hide_text_are_shown() {
        assert_eq!(
            escape_controls("a\u{202e}b\u{200b}c"),
            "a\\u{202e}b\\u{200b}c"
        );
        assert_eq!(escape_controls("plain é"), "plain é");
        // The rest of the format characters, the separators, the fillers, the tags.
        for c in [
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{2028}',
            '\u{2029}',
            '\u{3164}',
            '\u{fff9}',
            '\u{e0041}',
        ] {
            let shown = escape_controls(&format!("a{c}b")).into_owned();
            assert_eq!(shown, format!("a\\u{{{:x}}}b", c as u32));
        }
        // Letters and marks that show are left alone.
        assert_eq!(escape_controls("日本語 ñ ü ä"), "日本語 ñ ü ä");
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
