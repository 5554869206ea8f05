//! The human format: `2026-11-24 12:34:56.789  orders  pid=4242  {"id":1}`, local time.
//!
//! One line per notification whatever the payload holds: control characters are always
//! escaped here, since this format is for reading, not parsing (use `--json` for that). The
//! payload reads as `payload.rs` shows it: a `watch-table` event as a sentence, other JSON
//! compact. With colour, each channel has a colour of its own (`paint::channel_slot`), the
//! same in every run, and JSON is coloured by kind of token.

use super::Style;
use super::paint::{Part, channel_slot, push};
use super::payload::{push_payload, push_value};
use crate::notification::Notification;
use crate::sanitize::{escape_bytes, escape_controls};
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
        let color = style.color;
        let time = self.zone.to_datetime(n.received_at);
        let time = time.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string();
        let mut line = String::with_capacity(64 + n.payload.len());
        push(&mut line, Part::Quiet, &time, color);
        line.push_str("  ");
        let channel = escape_controls(&n.channel);
        push(
            &mut line,
            Part::Channel(channel_slot(&n.channel)),
            &channel,
            color,
        );
        line.push_str("  ");
        push(&mut line, Part::Quiet, &format!("pid={}", n.pid), color);
        if let Some(stored) = n.stored {
            // `--consumer`: the event's place in the outbox.
            line.push_str("  ");
            let place = format!("id={} xid={}", stored.id, stored.xid);
            push(&mut line, Part::Quiet, &place, color);
        }
        line.push_str("  ");
        match &n.exact_payload {
            // Not UTF-8 (a SQL_ASCII database): invalid bytes as `\xHH`.
            Some(bytes) => line.push_str(&escape_bytes(bytes)),
            None => push_payload(&mut line, &n.payload, color),
        }
        if let Some(row) = &n.fetched {
            // `--fetch`: the row as read now, after the payload.
            line.push_str("  ");
            push(&mut line, Part::Label, "new=", color);
            push_value(&mut line, row, color);
        }
        line.push('\n');
        out.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(channel: &str, payload: &str) -> Notification {
        Notification {
            channel: channel.into(),
            payload: payload.into(),
            exact_payload: None,
            pid: 7,
            received_at: "2026-11-24T01:02:03.456789Z".parse().unwrap(),
            fetched: None,
            stored: None,
        }
    }

    fn line(n: &Notification, color: bool) -> String {
        let text = Text {
            zone: jiff::tz::TimeZone::UTC,
        };
        let mut out = Vec::new();
        let style = Style {
            color,
            escape: true,
        };
        text.write(&mut out, n, style).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_line_fields_in_order() {
        let n = notification("My Chan", "a\nb");
        assert_eq!(
            line(&n, false),
            "2026-11-24 01:02:03.456  My Chan  pid=7  a\\nb\n"
        );
        assert!(line(&n, true).contains('\u{1b}'));
    }

    #[test]
    fn a_durable_event_shows_its_place() {
        let mut n = notification("jobs", "x");
        n.stored = Some(crate::notification::Position { xid: 736, id: 17 });
        assert_eq!(
            line(&n, false),
            "2026-11-24 01:02:03.456  jobs  pid=7  id=17 xid=736  x\n"
        );
    }

    #[test]
    fn json_payloads_and_fetched_rows_are_compact() {
        let mut n = notification(
            "orders",
            "{\"op\":\"UPDATE\",\"schema\":\"public\",\"table\":\"orders\",\"key\":{\"id\":42}}",
        );
        n.fetched = Some(serde_json::json!({"id": 42, "note": "a\u{1b}b"}));
        assert_eq!(
            line(&n, false),
            "2026-11-24 01:02:03.456  orders  pid=7  UPDATE public.orders {\"id\":42}  \
             new={\"id\":42,\"note\":\"a\\u001bb\"}\n"
        );
        let n = notification("c", "{ \"a\" : [1, 2] }");
        assert!(line(&n, false).ends_with("  pid=7  {\"a\":[1,2]}\n"));
    }

    #[test]
    fn a_channel_keeps_its_colour_and_names_are_escaped() {
        let colour_of = |channel: &str| {
            let l = line(&notification(channel, "x"), true);
            let start = l.find("  \u{1b}[").unwrap() + 2;
            l[start..start + 7].to_owned()
        };
        assert_eq!(colour_of("orders"), colour_of("orders"));
        assert_ne!(colour_of("orders"), colour_of("jobs"));
        let l = line(&notification("evil\u{1b}]0;x\u{7}", "x"), true);
        assert!(l.contains("evil\\x1b]0;x\\x07"), "{l:?}");
        assert_eq!(
            l.matches('\u{1b}').count(),
            6,
            "only our own escapes, of the time, channel and pid: {l:?}"
        );
    }
}
