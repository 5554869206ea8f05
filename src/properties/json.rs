//! The NDJSON encoder (`format/json.rs`): whatever a channel name or payload holds, a record is
//! exactly one line of valid JSON that decodes to what was received, with `--data` the payload
//! parsed when it is JSON, and on a terminal nothing in it that acts on one.
//!
//! Any payload: any string, every control character, NUL, U+2028 and U+2029 included, JSON
//! text with escapes a parser refuses (lone surrogates), and any bytes that are not UTF-8, as
//! a SQL_ASCII database sends them (`pg/wire.rs` keeps them in `exact_payload`, the text with
//! U+FFFD in their place): then `payload_base64` decodes to exactly those bytes.

use super::{config, wild_string};
use crate::format::{Encoder, Format, JsonOptions, Style};
use crate::notification::{Notification, Position};
use crate::sanitize::hidden;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use proptest::prelude::*;

/// JSON text, sometimes with a lone surrogate's escape, a NUL's, deep nesting or a number no
/// float holds.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("1e999999".to_owned()),
        Just("123456789012345678901234567890.5".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"\\udc00x\\u0000\"".to_owned()),
        wild_string(10).prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((wild_string(6), inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v
                    .into_iter()
                    .map(|(k, v)| {
                        format!("{} : {v}", serde_json::to_string(&k).unwrap_or_default())
                    })
                    .collect();
                format!("{{ {} }}", members.join(",\n"))
            }),
        ]
    })
}

fn payload() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => wild_string(80),
        2 => json_text(),
        1 => (1..200usize).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
}

/// A payload as the listener hands it on: text, and the exact bytes when they are not UTF-8.
fn payload_as_received() -> impl Strategy<Value = (String, Option<Vec<u8>>)> {
    prop_oneof![
        3 => payload().prop_map(|p| (p, None)),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(|bytes| {
            match String::from_utf8(bytes) {
                Ok(text) => (text, None),
                Err(e) => {
                    let bytes = e.into_bytes();
                    (String::from_utf8_lossy(&bytes).into_owned(), Some(bytes))
                }
            }
        }),
    ]
}

pub(super) fn notification() -> impl Strategy<Value = Notification> {
    (
        wild_string(24),
        payload_as_received(),
        any::<i32>(),
        proptest::option::of((any::<u64>(), any::<i64>())),
        proptest::option::of(prop_oneof![
            Just(serde_json::Value::Null),
            wild_string(8).prop_map(|s| serde_json::json!({"id": 1, "note": s})),
        ]),
        -10_000_000_000i64..10_000_000_000,
    )
        .prop_map(
            |(channel, (payload, exact_payload), pid, stored, fetched, secs)| Notification {
                channel,
                payload,
                exact_payload,
                pid,
                received_at: jiff::Timestamp::from_second(secs)
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                fetched,
                stored: stored.map(|(xid, id)| Position { xid, id }),
            },
        )
}

/// How deep arrays and objects nest in a value.
fn nesting(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(v) => 1 + v.iter().map(nesting).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_record_is_one_line_of_json_that_decodes_to_what_was_received(
        n in notification(),
        data in any::<bool>(),
        escape in any::<bool>(),
    ) {
        let style = Style { color: true, escape };
        let json = JsonOptions { data, gap_records: true };
        let mut out = Vec::new();
        prop_assert!(Encoder::new(Format::Json, style, json).write(&mut out, &n).is_ok());
        let line = String::from_utf8(out);
        prop_assert!(line.is_ok(), "not UTF-8");
        let line = line.unwrap_or_default();
        prop_assert!(line.ends_with('\n'), "{:?}", line);
        let body = &line[..line.len() - 1];
        prop_assert!(!body.contains(['\n', '\r']), "{:?}", line);
        if escape {
            prop_assert!(!body.chars().any(hidden), "{:?}", line);
        }
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(body);
        prop_assert!(parsed.is_ok(), "not JSON: {:?} {:?}", parsed, line);
        let parsed = parsed.unwrap_or_default();
        prop_assert_eq!(parsed["channel"].as_str(), Some(n.channel.as_str()));
        prop_assert_eq!(parsed["payload"].as_str(), Some(n.payload.as_str()));
        // Bytes that are not UTF-8 come back exactly from `payload_base64`, present only then.
        let exact = parsed.get("payload_base64").map(|b| {
            BASE64_STANDARD.decode(b.as_str().unwrap_or("!")).map_err(|e| e.to_string())
        });
        prop_assert_eq!(exact, n.exact_payload.clone().map(Ok), "{:?}", line);
        prop_assert_eq!(parsed["pid"].as_i64(), Some(i64::from(n.pid)));
        let when: Result<jiff::Timestamp, _> = parsed["received_at"].as_str().unwrap_or("").parse();
        prop_assert_eq!(when.ok(), Some(n.received_at));
        prop_assert_eq!(parsed["id"].as_i64(), n.stored.map(|s| s.id));
        prop_assert_eq!(parsed["xid"].as_u64(), n.stored.map(|s| s.xid));
        // `data`: the payload parsed, with a fetched row as its `new`, when it is JSON.
        // A payload as deep as serde_json reads gets none: the record would be deeper.
        let mut expected: Option<serde_json::Value> = match (data || n.fetched.is_some())
            && n.exact_payload.is_none()
        {
            true => serde_json::from_str(&n.payload).ok().filter(|v| nesting(v) < 127),
            false => None,
        };
        if let (Some(serde_json::Value::Object(object)), Some(row)) = (expected.as_mut(), &n.fetched) {
            object.insert("new".to_owned(), row.clone());
        }
        prop_assert_eq!(parsed.get("data"), expected.as_ref(), "{:?}", line);
    }
}
