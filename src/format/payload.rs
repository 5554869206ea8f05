//! How a payload reads in the text format: a `watch-table` event as a sentence
//! (`UPDATE public.orders {"id":42}`), any other JSON object or array compact, coloured by
//! kind of token when colour is on, and anything else as it is. Control characters are always
//! escaped: nothing a sender puts in a payload reaches the terminal as a control character.
//!
//! JSON is shown from its own text, without its insignificant whitespace, rather than
//! re-serialised from a parsed value: keys stay in order and duplicates stay visible, and
//! numbers and string escapes keep the sender's spelling (`\u001b` stays six characters).
//! Scalars (`42`, `"x"`, `true`) are shown as they are: a bare number is as plain as text.

use super::paint::{OpKind, Part, push};
use crate::sanitize::escape_controls;
use serde_json::{Map, Value};

/// Appends the payload as the text format shows it.
pub(super) fn push_payload(out: &mut String, payload: &str, color: bool) {
    let starts_like_json = payload
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with(['{', '[']);
    let parsed = starts_like_json
        .then(|| serde_json::from_str::<Value>(payload).ok())
        .flatten();
    if let Some(value) = parsed {
        // Duplicate keys are lost in `value`: then the text alone tells the truth.
        let whole = members(&value) == colons(payload);
        match value.as_object().and_then(Event::of) {
            Some(event) if whole => event.push(out, color),
            _ => push_json(out, payload, color),
        }
        return;
    }
    out.push_str(&escape_controls(payload));
}

/// Appends a JSON value compactly (a fetched row, a key, a row image).
pub(super) fn push_value(out: &mut String, value: &impl serde::Serialize, color: bool) {
    match serde_json::to_string(value) {
        Ok(text) => push_json(out, &text, color),
        Err(_) => out.push('?'),
    }
}

/// Appends valid JSON text without insignificant whitespace, each token in its colour.
fn push_json(out: &mut String, json: &str, color: bool) {
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            ' ' | '\t' | '\n' | '\r' => {
                rest = &rest[1..];
                continue;
            }
            '"' => string_len(rest),
            '-' | '0'..='9' => rest
                .find(|c: char| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
                .unwrap_or(rest.len()),
            'a'..='z' => rest
                .find(|c: char| !c.is_ascii_lowercase())
                .unwrap_or(rest.len()),
            c => c.len_utf8(),
        };
        let (token, after) = rest.split_at(len);
        let part = match c {
            '"' if after.trim_start().starts_with(':') => Some(Part::Key),
            '"' => Some(Part::Text),
            '-' | '0'..='9' => Some(Part::Number),
            'a'..='z' => Some(Part::Literal),
            _ => None,
        };
        match part {
            Some(part) => push(out, part, &escape_controls(token), color),
            None => out.push_str(token),
        }
        rest = after;
    }
}

/// The length of the JSON string at the start of `s`, quotes included.
fn string_len(s: &str) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// How many object members valid JSON text has: its colons outside strings.
fn colons(json: &str) -> usize {
    let mut count = 0;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        let len = if c == '"' {
            string_len(rest)
        } else {
            c.len_utf8()
        };
        count += usize::from(c == ':');
        rest = &rest[len..];
    }
    count
}

/// How many object members a parsed value has, all levels counted.
fn members(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.len() + map.values().map(members).sum::<usize>(),
        Value::Array(items) => items.iter().map(members).sum(),
        _ => 0,
    }
}

/// A `watch-table` event (`watch/sql.rs` builds them): op, schema, table, key, and what may
/// come with them. Anything else in the object, or a member of another type, and it is not
/// one: it is then shown as the JSON it is, so that nothing is hidden.
struct Event<'a> {
    op: OpKind,
    schema: &'a str,
    table: &'a str,
    key: Option<&'a Map<String, Value>>,
    old_key: Option<&'a Map<String, Value>>,
    old: Option<&'a Map<String, Value>>,
    new: Option<&'a Map<String, Value>>,
    truncated: bool,
    stale: bool,
}

impl<'a> Event<'a> {
    fn of(m: &'a Map<String, Value>) -> Option<Event<'a>> {
        const KNOWN: [&str; 9] = [
            "op",
            "schema",
            "table",
            "key",
            "old_key",
            "old",
            "new",
            "truncated",
            "stale",
        ];
        if !m.keys().all(|k| KNOWN.contains(&k.as_str())) {
            return None;
        }
        let op = match m.get("op")?.as_str()? {
            "INSERT" => OpKind::Insert,
            "UPDATE" => OpKind::Update,
            "DELETE" => OpKind::Delete,
            "TRUNCATE" => OpKind::Truncate,
            _ => return None,
        };
        // Absent: None; an object: Some; anything else: not an event.
        let object = |name: &str| match m.get(name) {
            None => Some(None),
            Some(Value::Object(o)) => Some(Some(o)),
            Some(_) => None,
        };
        let flag = |name: &str| match m.get(name) {
            None => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => None,
        };
        let key = match m.get("key")? {
            Value::Null => None,
            Value::Object(o) => Some(o),
            _ => return None,
        };
        Some(Event {
            op,
            schema: m.get("schema")?.as_str()?,
            table: m.get("table")?.as_str()?,
            key,
            old_key: object("old_key")?,
            old: object("old")?,
            new: object("new")?,
            truncated: flag("truncated")?,
            stale: flag("stale")?,
        })
    }

    /// `UPDATE public.orders {"id":43} old_key={"id":42} old={...} new={...} truncated`.
    fn push(&self, out: &mut String, color: bool) {
        let op = match self.op {
            OpKind::Insert => "INSERT",
            OpKind::Update => "UPDATE",
            OpKind::Delete => "DELETE",
            OpKind::Truncate => "TRUNCATE",
        };
        push(out, Part::Op(self.op), op, color);
        out.push(' ');
        let table = format!("{}.{}", ident(self.schema), ident(self.table));
        push(out, Part::Table, &escape_controls(&table), color);
        if let Some(key) = self.key {
            out.push(' ');
            push_value(out, key, color);
        }
        for (label, image) in [
            ("old_key=", self.old_key),
            ("old=", self.old),
            ("new=", self.new),
        ] {
            if let Some(image) = image {
                out.push(' ');
                push(out, Part::Label, label, color);
                push_value(out, image, color);
            }
        }
        for (word, on) in [("truncated", self.truncated), ("stale", self.stale)] {
            if on {
                out.push(' ');
                push(out, Part::Label, word, color);
            }
        }
    }
}

/// A name as SQL would need it written: bare when it is a plain lower-case identifier,
/// else double-quoted (`"My Schema"`), so that `schema.table` is never ambiguous.
fn ident(name: &str) -> std::borrow::Cow<'_, str> {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.into()
    } else {
        format!("\"{}\"", name.replace('"', "\"\"")).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(payload: &str, color: bool) -> String {
        let mut out = String::new();
        push_payload(&mut out, payload, color);
        out
    }

    #[test]
    fn json_objects_and_arrays_are_compact_and_keep_their_spelling() {
        assert_eq!(
            shown(
                "{ \"b\" : 1.50 ,\n  \"a\": [1, 2e3, -0], \"s\": \"x y\\n\\u00e9\" }",
                false
            ),
            "{\"b\":1.50,\"a\":[1,2e3,-0],\"s\":\"x y\\n\\u00e9\"}"
        );
        assert_eq!(shown("  [ true, false, null ]", false), "[true,false,null]");
        // Duplicate keys stay visible.
        assert_eq!(shown("{\"a\": 1, \"a\": 2}", false), "{\"a\":1,\"a\":2}");
        // A big number keeps every digit.
        assert_eq!(
            shown("[123456789012345678901234567890]", false),
            "[123456789012345678901234567890]"
        );
    }

    #[test]
    fn scalars_and_non_json_stay_as_they_are() {
        assert_eq!(shown("42", false), "42");
        assert_eq!(shown("\"quoted\"", false), "\"quoted\"");
        assert_eq!(shown("true", false), "true");
        assert_eq!(shown("{not json", false), "{not json");
        assert_eq!(shown("a  b", false), "a  b");
        assert_eq!(
            shown("line\nbreak\u{1b}[31m", false),
            "line\\nbreak\\x1b[31m"
        );
    }

    #[test]
    fn json_is_coloured_by_kind_of_token() {
        let out = shown("{\"k\": \"v\", \"n\": 1, \"b\": true, \"z\": null}", true);
        assert_eq!(
            out,
            "{\u{1b}[34m\"k\"\u{1b}[0m:\u{1b}[32m\"v\"\u{1b}[0m,\
             \u{1b}[34m\"n\"\u{1b}[0m:\u{1b}[36m1\u{1b}[0m,\
             \u{1b}[34m\"b\"\u{1b}[0m:\u{1b}[35mtrue\u{1b}[0m,\
             \u{1b}[34m\"z\"\u{1b}[0m:\u{1b}[35mnull\u{1b}[0m}"
        );
        // A string that ends in an escaped quote is still one token.
        let out = shown("[\"a\\\"\", 1]", true);
        assert!(out.contains("\u{1b}[32m\"a\\\"\"\u{1b}[0m"), "{out:?}");
    }

    #[test]
    fn nothing_in_json_reaches_the_terminal_as_a_control_character() {
        // An escaped ESC stays six characters; DEL, C1 controls and bidi overrides, which
        // JSON allows raw in strings, are escaped.
        for color in [false, true] {
            let out = shown("{\"\u{7f}k\": \"\\u001b[2J\u{9b}\u{202e}x\"}", color);
            let controls: Vec<char> = out
                .chars()
                .filter(|c| c.is_control() || *c == '\u{202e}')
                .filter(|c| !(color && *c == '\u{1b}'))
                .collect();
            assert!(controls.is_empty(), "{out:?}");
            assert!(out.contains("\\u001b[2J") && out.contains("\\x9b") && out.contains("\\x7f"));
        }
        // With colour, every ESC is one of ours: an SGR that begins a colour or resets it.
        let out = shown("[\"\\u001b\"]", true);
        assert_eq!(out, "[\u{1b}[32m\"\\u001b\"\u{1b}[0m]");
    }

    #[test]
    fn watch_table_events_read_as_sentences() {
        let event = |body: &str| shown(&format!("{{{body}}}"), false);
        assert_eq!(
            event(r#""op":"UPDATE","schema":"public","table":"orders","key":{"id":42}"#),
            "UPDATE public.orders {\"id\":42}"
        );
        assert_eq!(
            event(r#""op":"TRUNCATE","schema":"public","table":"orders","key":null"#),
            "TRUNCATE public.orders"
        );
        assert_eq!(
            event(
                r#""op":"UPDATE","schema":"public","table":"orders","key":{"id":43},"old_key":{"id":42},"old":{"id":42,"n":"a"},"new":{"id":43,"n":"b"}"#
            ),
            "UPDATE public.orders {\"id\":43} old_key={\"id\":42} old={\"id\":42,\"n\":\"a\"} \
             new={\"id\":43,\"n\":\"b\"}"
        );
        assert_eq!(
            event(
                r#""op":"INSERT","schema":"public","table":"big","key":{"id":1},"truncated":true"#
            ),
            "INSERT public.big {\"id\":1} truncated"
        );
        assert_eq!(
            event(
                r#""op":"DELETE","schema":"My Schema","table":"Or\"ders","key":null,"stale":true"#
            ),
            "DELETE \"My Schema\".\"Or\"\"ders\" stale"
        );
    }

    #[test]
    fn what_is_not_quite_an_event_stays_json() {
        for body in [
            r#""op":"UPSERT","schema":"public","table":"t","key":{"id":1}"#,
            r#""op":"INSERT","schema":"public","table":"t""#,
            r#""op":"INSERT","schema":"public","table":"t","key":1"#,
            r#""op":"INSERT","schema":"public","table":"t","key":{"id":1},"extra":1"#,
            r#""op":"INSERT","schema":"public","table":"t","key":{"id":1},"truncated":"yes""#,
            r#""op":"INSERT","schema":"public","table":"t","key":{"id":1},"key":{"id":2}"#,
        ] {
            let payload = format!("{{{body}}}");
            assert_eq!(shown(&payload, false), payload);
        }
    }

    #[test]
    fn an_event_has_its_op_coloured_by_kind_and_names_escaped() {
        let out = shown(
            r#"{"op":"DELETE","schema":"public","table":"t\u001b","key":{"id":1}}"#,
            true,
        );
        assert!(
            out.starts_with("\u{1b}[1;31mDELETE\u{1b}[0m \u{1b}[1mpublic.\"t\\x1b\"\u{1b}[0m "),
            "{out:?}"
        );
        let insert = shown(r#"{"op":"INSERT","schema":"s","table":"t","key":{}}"#, true);
        assert!(insert.starts_with("\u{1b}[1;32mINSERT"), "{insert:?}");
    }
}
