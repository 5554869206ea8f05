//! NDJSON: one JSON object per notification, one line each (README "Output formats").
//!
//! The four fields `channel`, `payload`, `pid`, `received_at` are a contract: fields may be
//! added, never renamed or removed. `payload` is always the raw string; with `--data`, `data`
//! holds the payload parsed as JSON when it parses. A payload that is not UTF-8 (a SQL_ASCII
//! database) has U+FFFD for each invalid sequence in `payload`, and its exact bytes in
//! `payload_base64`, present only then.
//!
//! A gap record says notifications may be missing. It has no `payload` key, so a consumer tells
//! the two apart by that key (`jq 'select(.payload)'`, `select(.gap)`):
//! `{"gap":"reconnect","reason":"...","from":"...Z","until":"...Z","down_ms":1234,"dropped":0}`.

use crate::notification::{Gap, Notification};
use crate::sanitize::hidden;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde::Serialize;
use std::fmt;
use std::io::{self, Write};

/// The NDJSON record of one notification.
#[derive(Serialize)]
struct Record<'a> {
    pub(crate) channel: &'a str,
    pub(crate) payload: &'a str,
    /// Only when the payload is not UTF-8 (a SQL_ASCII database): its exact bytes, in base64
    /// (standard alphabet, padded); `payload` then has U+FFFD for each invalid sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_base64: Option<String>,
    pub(crate) pid: i32,
    pub(crate) received_at: Micros,
    /// With `--consumer`: the event's id in the outbox, and its transaction's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) xid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Data<'a>>,
}

/// `data`: the payload parsed as JSON, and a fetched row as its `new` member, written in place
/// of the payload's own `new` or after its last member (where inserting it would put it),
/// borrowed rather than copied into the parsed payload.
enum Data<'a> {
    Payload(serde_json::Value),
    WithRow(
        serde_json::Map<String, serde_json::Value>,
        &'a serde_json::Value,
    ),
}

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (object, row) = match self {
            Data::Payload(value) => return value.serialize(s),
            Data::WithRow(object, row) => (object, row),
        };
        let replaced = object.contains_key("new");
        let mut map = s.serialize_map(Some(object.len() + usize::from(!replaced)))?;
        for (key, value) in object {
            match key == "new" {
                true => map.serialize_entry(key, row)?,
                false => map.serialize_entry(key, value)?,
            }
        }
        if !replaced {
            map.serialize_entry("new", row)?;
        }
        map.end()
    }
}

/// The NDJSON record of a gap.
#[derive(Serialize)]
struct GapRecord<'a> {
    /// `reconnect` (the connection was lost) or `overflow` (pgnotify dropped notifications).
    pub(crate) gap: &'static str,
    pub(crate) reason: &'a str,
    pub(crate) from: Micros,
    /// `null` when the stream never became complete again (pgnotify gave up reconnecting).
    pub(crate) until: Option<Micros>,
    pub(crate) down_ms: i64,
    pub(crate) dropped: u64,
}

/// A UTC timestamp written as RFC 3339 with microseconds: `2026-11-24T01:02:03.456789Z`.
pub(super) struct Micros(pub jiff::Timestamp);

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

/// Writes one record. With `escape` (a terminal), the characters that act on a terminal and
/// that JSON allows raw in a string (DEL, C1 controls, bidirectional overrides, zero-width
/// characters) are written as `\uXXXX` escapes: the same JSON, the same payload once parsed.
pub(super) fn write(
    out: &mut impl Write,
    n: &Notification,
    data: bool,
    escape: bool,
) -> io::Result<()> {
    let record = Record {
        channel: &n.channel,
        payload: &n.payload,
        payload_base64: n
            .exact_payload
            .as_deref()
            .map(|b| BASE64_STANDARD.encode(b)),
        pid: n.pid,
        received_at: Micros(n.received_at),
        id: n.stored.map(|s| s.id),
        xid: n.stored.map(|s| s.xid),
        data: if data || n.fetched.is_some() {
            with_fetched(n)
        } else {
            None
        },
    };
    if !escape {
        serde_json::to_writer(&mut *out, &record)?;
        return out.write_all(b"\n");
    }
    let line = serde_json::to_string(&record)?;
    let mut escaped = String::with_capacity(line.len());
    for c in line.chars() {
        if !hidden(c) {
            escaped.push(c);
            continue;
        }
        // JSON's escapes are UTF-16: a character past the Basic Multilingual Plane (a tag
        // character) is a surrogate pair.
        for unit in c.encode_utf16(&mut [0; 2]) {
            escaped.push_str(&format!("\\u{unit:04x}"));
        }
    }
    out.write_all(escaped.as_bytes())?;
    out.write_all(b"\n")
}

/// The payload parsed as JSON, with the fetched row (if any) as `new`. A payload that is not
/// UTF-8 is not JSON, whatever its stand-in text reads.
///
/// Not for a payload nested as deep as serde_json reads (127 levels): inside the record it
/// would be one level deeper, a line that serde_json, and every reader with its limit, refuse.
fn with_fetched(n: &Notification) -> Option<Data<'_>> {
    if n.exact_payload.is_some() {
        return None;
    }
    let data: serde_json::Value = serde_json::from_str(&n.payload).ok()?;
    if depth(&data) >= MAX_DEPTH {
        return None;
    }
    Some(match (data, &n.fetched) {
        (serde_json::Value::Object(object), Some(row)) => Data::WithRow(object, row),
        (data, _) => Data::Payload(data),
    })
}

/// The deepest nesting serde_json reads: its recursion limit, 128, is reached on the 128th.
const MAX_DEPTH: usize = 127;

/// How many arrays and objects deep a value nests (a scalar: 0).
fn depth(value: &serde_json::Value) -> usize {
    let inner = match value {
        serde_json::Value::Array(items) => items.iter().map(depth).max(),
        serde_json::Value::Object(map) => map.values().map(depth).max(),
        _ => return 0,
    };
    1 + inner.unwrap_or(0)
}

pub(crate) fn write_gap(out: &mut impl Write, gap: &Gap) -> io::Result<()> {
    let record = GapRecord {
        gap: gap.kind.as_str(),
        reason: &gap.reason,
        from: Micros(gap.from),
        until: gap.until.map(Micros),
        // Without an end: how long it had been down when pgnotify gave up.
        down_ms: gap
            .until
            .unwrap_or_else(jiff::Timestamp::now)
            .duration_since(gap.from)
            .as_millis() as i64,
        dropped: gap.dropped,
    };
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_row_is_new_where_inserting_it_would_put_it() {
        let row = serde_json::json!({"id": 7, "note": "n\"q"});
        for payload in [
            r#"{"op":"INSERT","key":{"id":7},"z":1}"#,
            r#"{"op":"UPDATE","new":null,"key":{"id":7}}"#,
            r#"[1,2]"#,
            r#""text""#,
        ] {
            let n = Notification {
                channel: "c".into(),
                payload: payload.into(),
                exact_payload: None,
                pid: 1,
                received_at: jiff::Timestamp::UNIX_EPOCH,
                fetched: Some(row.clone()),
                stored: None,
            };
            let mut data: serde_json::Value = serde_json::from_str(payload).unwrap();
            if let Some(object) = data.as_object_mut() {
                object.insert("new".to_owned(), row.clone());
            }
            let written = serde_json::to_string(&with_fetched(&n).unwrap()).unwrap();
            assert_eq!(written, serde_json::to_string(&data).unwrap(), "{payload}");
        }
    }

    #[test]
    fn one_line_with_the_contract_fields() {
        let n = Notification {
            channel: "Or\"ders\n".into(),
            payload: "{\"id\":1}\nnext\u{1b}".into(),
            exact_payload: None,
            pid: 4242,
            received_at: "2026-11-24T01:02:03.456789Z".parse().unwrap(),
            fetched: None,
            stored: None,
        };
        let mut out = Vec::new();
        write(&mut out, &n, false, false).unwrap();
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
    fn on_a_terminal_what_acts_on_it_is_escaped_and_the_payload_the_same() {
        let n = Notification {
            channel: "c\u{202e}".into(),
            payload: "A\u{9b}2J\u{7f}\u{200b}é\u{e0041}".into(),
            exact_payload: None,
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        };
        let mut out = Vec::new();
        write(&mut out, &n, false, true).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(!line.trim_end().chars().any(hidden), "{line:?}");
        assert!(
            line.contains("A\\u009b2J\\u007f\\u200bé\\udb40\\udc41"),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["payload"], n.payload);
        assert_eq!(parsed["channel"], n.channel);
    }

    #[test]
    fn data_holds_parsed_json_payloads_only() {
        let mut n = Notification {
            channel: "c".into(),
            payload: "{\n  \"id\": 1\n}".into(),
            exact_payload: None,
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        };
        let mut out = Vec::new();
        write(&mut out, &n, true, false).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with(",\"data\":{\"id\":1}}\n"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
        n.payload = "not json".into();
        let mut out = Vec::new();
        write(&mut out, &n, true, false).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("\"data\""));
    }

    #[test]
    fn a_payload_as_deep_as_json_is_read_gets_no_data() {
        // Found by the properties (src/properties/json.rs): with 127 nested arrays, `data`
        // made the record 128 deep, which serde_json refused to read back.
        for (levels, data) in [(126, true), (127, false)] {
            let n = Notification {
                channel: "c".into(),
                payload: format!("{}{}", "[".repeat(levels), "]".repeat(levels)),
                exact_payload: None,
                pid: 1,
                received_at: jiff::Timestamp::UNIX_EPOCH,
                fetched: None,
                stored: None,
            };
            let mut out = Vec::new();
            write(&mut out, &n, true, false).unwrap();
            let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(line.get("data").is_some(), data, "{levels}");
            assert_eq!(line["payload"], n.payload);
        }
    }

    #[test]
    fn gap_records_have_no_payload() {
        use crate::notification::GapKind;
        let gap = Gap {
            kind: GapKind::Reconnect,
            reason: "lost".into(),
            from: "2026-11-24T01:02:03Z".parse().unwrap(),
            until: Some("2026-11-24T01:02:04.5Z".parse().unwrap()),
            dropped: 0,
        };
        let mut out = Vec::new();
        write_gap(&mut out, &gap).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"gap\":\"reconnect\",\"reason\":\"lost\",\"from\":\"2026-11-24T01:02:03.000000Z\",\
             \"until\":\"2026-11-24T01:02:04.500000Z\",\"down_ms\":1500,\"dropped\":0}\n"
        );
    }

    #[test]
    fn a_gap_without_an_end_has_a_null_until() {
        use crate::notification::GapKind;
        let gap = Gap {
            kind: GapKind::Reconnect,
            reason: "gave up".into(),
            from: jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2),
            until: None,
            dropped: 0,
        };
        let mut out = Vec::new();
        write_gap(&mut out, &gap).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["until"], serde_json::Value::Null);
        assert!(line["down_ms"].as_i64().unwrap() >= 2000, "{line}");
    }

    #[test]
    fn whole_seconds_still_have_six_digits() {
        let t: jiff::Timestamp = "2026-11-24T01:02:03Z".parse().unwrap();
        assert_eq!(Micros(t).to_string(), "2026-11-24T01:02:03.000000Z");
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_flagged_with_its_exact_bytes_and_not_parsed() {
        let exact = b"{\"k\":\"caf\xe9\"}".to_vec();
        let n = Notification {
            channel: "c".into(),
            payload: String::from_utf8_lossy(&exact).into_owned(),
            exact_payload: Some(exact.clone()),
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        };
        for escape in [false, true] {
            let mut out = Vec::new();
            write(&mut out, &n, true, escape).unwrap();
            let line = String::from_utf8(out).unwrap();
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(record["payload"], "{\"k\":\"caf\u{fffd}\"}", "{line}");
            let bytes = BASE64_STANDARD
                .decode(record["payload_base64"].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes, exact);
            assert!(record.get("data").is_none(), "not parsed: {line}");
        }
        let valid = Notification {
            exact_payload: None,
            payload: "caf\u{e9}".into(),
            ..n
        };
        let mut out = Vec::new();
        write(&mut out, &valid, true, false).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("payload_base64"));
    }
}
