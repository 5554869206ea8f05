//! The human formats (`format/text.rs`, `psql.rs` and `raw.rs` on a terminal, through
//! `sanitize`): whatever a channel name or payload holds, a line never carries a control
//! character or an escape of its own; with colour, every ESC is one of the palette's SGR
//! sequences, and without them the line is the colourless one.

use super::json::notification;
use super::{config, sql_names, wild_string};
use crate::format::{Encoder, Format, JsonOptions, Style};
use crate::notification::Notification;
use crate::sanitize::hidden;
use proptest::prelude::*;

/// The line `format` writes for `n`.
fn line(format: Format, style: Style, n: &Notification) -> String {
    let mut out = Vec::new();
    let written = Encoder::new(format, style, JsonOptions::default()).write(&mut out, n);
    assert!(written.is_ok(), "{written:?}");
    String::from_utf8(out).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
}

/// The line without its SGR sequences (`ESC [ digits;... m`), or the first ESC that does not
/// begin one.
fn without_sgr(line: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let params = after.strip_prefix('[').map(|p| {
            p.find(|c: char| !c.is_ascii_digit() && c != ';')
                .map(|end| (p, end))
        });
        match params.flatten() {
            Some((p, end)) if p[end..].starts_with('m') && end > 0 => rest = &p[end + 1..],
            _ => return Err(format!("an ESC that is no SGR at {at}: {line:?}")),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One line, and nothing in it that acts on a terminal.
fn is_clean(line: &str) -> Result<(), String> {
    let Some(body) = line.strip_suffix('\n') else {
        return Err(format!("no final newline: {line:?}"));
    };
    match body.chars().find(|c| hidden(*c)) {
        Some(c) => Err(format!("{c:?} in {line:?}")),
        None => Ok(()),
    }
}

/// A `watch-table` event, with any names and values.
fn event() -> impl Strategy<Value = (String, String, String)> {
    let name = || wild_string(12).prop_filter("a name", |s| !s.is_empty());
    (
        proptest::sample::select(&["INSERT", "UPDATE", "DELETE", "TRUNCATE"][..]),
        name(),
        name(),
        wild_string(12),
        any::<bool>(),
    )
        .prop_map(|(op, schema, table, value, truncated)| {
            let payload = serde_json::json!({
                "op": op,
                "schema": schema,
                "table": table,
                "key": {"id": value},
                "new": {"id": value, "x": [1, null, true]},
                "truncated": truncated,
            });
            (payload.to_string(), schema, table)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_text_format_never_acts_on_a_terminal(n in notification()) {
        let plain = line(Format::Text, Style { color: false, escape: true }, &n);
        prop_assert_eq!(is_clean(&plain), Ok(()));
        let escapes = plain.matches('\u{1b}').count();
        prop_assert_eq!(escapes, 0);
        let coloured = line(Format::Text, Style { color: true, escape: true }, &n);
        // Every ESC begins one of the palette's sequences, and they are all it adds.
        prop_assert_eq!(without_sgr(&coloured), Ok(plain));
    }

    #[test]
    fn a_watch_table_event_never_acts_on_a_terminal((payload, schema, table) in event(), n in notification()) {
        let n = Notification { payload, exact_payload: None, ..n };
        let plain = line(Format::Text, Style { color: false, escape: true }, &n);
        prop_assert_eq!(is_clean(&plain), Ok(()));
        let coloured = line(Format::Text, Style { color: true, escape: true }, &n);
        prop_assert_eq!(without_sgr(&coloured), Ok(plain.clone()));
        // The sentence names the table as SQL would, so that it reads back.
        if !schema.chars().chain(table.chars()).any(hidden) {
            let op_at = plain.find(" INSERT ").or(plain.find(" UPDATE ")).or(plain.find(" DELETE ")).or(plain.find(" TRUNCATE "));
            prop_assert!(op_at.is_some(), "not a sentence: {:?}", plain);
            let after_op = plain[op_at.unwrap_or(0) + 1..].split_once(' ').map_or("", |(_, rest)| rest);
            // The name ends at the space before the key (names with spaces are quoted).
            let name = quoted_prefix(after_op);
            prop_assert_eq!(sql_names(name), Some(vec![schema, table]), "{:?}", plain);
        }
    }

    #[test]
    fn psql_and_raw_on_a_terminal_never_act_on_it(n in notification(), color in any::<bool>()) {
        for format in [Format::Psql, Format::Raw] {
            let l = line(format, Style { color, escape: true }, &n);
            prop_assert_eq!(is_clean(&l), Ok(()));
        }
    }

    #[test]
    fn raw_into_a_pipe_is_one_line_of_the_bytes_as_sent(n in notification()) {
        // Into a pipe raw writes the payload's bytes (not UTF-8 ones too) as sent, but for
        // its line breaks, written `\n` and `\r`.
        let mut out = Vec::new();
        let written = Encoder::new(Format::Raw, Style { color: false, escape: false }, JsonOptions::default())
            .write(&mut out, &n);
        prop_assert!(written.is_ok());
        prop_assert_eq!(out.pop(), Some(b'\n'));
        prop_assert!(!out.contains(&b'\n') && !out.contains(&b'\r'), "{:?}", out);
        let mut expected = Vec::new();
        for &b in n.payload_bytes() {
            match b {
                b'\n' => expected.extend_from_slice(b"\\n"),
                b'\r' => expected.extend_from_slice(b"\\r"),
                b => expected.push(b),
            }
        }
        prop_assert_eq!(out, expected);
    }
}

/// The text up to the first space outside double quotes.
fn quoted_prefix(s: &str) -> &str {
    let mut inside = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => inside = !inside,
            ' ' if !inside => return &s[..i],
            _ => {}
        }
    }
    s
}
