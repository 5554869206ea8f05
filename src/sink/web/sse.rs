//! `--sse`: Server-Sent Events, which `new EventSource(url)` reads with no library. Each
//! notification is an event named after its channel (`gap` for a gap record), whose data is
//! the NDJSON object and whose id is `RUN-SEQ`: this run of pgnotify, then a sequence. A
//! client that comes back with `Last-Event-ID` first gets a `client` gap record saying how many
//! events it missed meanwhile, counted from the [`History`] of what was sent.

use super::{Attached, GAP, Selection, write_whole};
use crate::notification::{Gap, GapKind};
use crate::sink::backlog::Popped;
use crate::sink::socket::hung_up;
use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How many events the history remembers (10 bytes each).
const HISTORY: usize = 1 << 16;

/// The head of the answer that starts the stream; `retry` asks browsers to come back after
/// 2 s when it ends.
pub(super) fn head(extra: &[(&'static str, String)]) -> String {
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
         Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n",
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out
}

/// The stream's first bytes.
pub(super) const PREAMBLE: &[u8] = b"retry: 2000\n\n";

/// Appends one event: its id (`None`: none, so that a client's `Last-Event-ID` stays), its
/// name, and `data`, a JSON object (which has no line breaks).
pub(super) fn event(out: &mut Vec<u8>, id: Option<(u64, u64)>, name: &str, data: &[u8]) {
    if let Some((run, seq)) = id {
        let _ = writeln!(out, "id: {run}-{seq}");
    }
    // EventSource names its own events `open` and `error`: a channel of either name (or of
    // `message`) comes unnamed, for `onmessage`, as does one whose name breaks the line.
    if !name.contains(['\r', '\n']) && !matches!(name, "message" | "open" | "error") {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Writes the backlog's events to the client until it leaves or is disconnected; a comment
/// every `keepalive` while there is nothing to send, so that a dead client is found out and
/// proxies keep the connection open.
pub(super) fn run(mut stream: TcpStream, client: &Attached, keepalive: Duration) {
    let mut wrote = Instant::now();
    let idle = keepalive.min(Duration::from_secs(1));
    loop {
        match client.backlog.pop_within(idle) {
            Popped::Chunk(chunk, _) => {
                if write_whole(&mut stream, &chunk, &client.backlog).is_err() {
                    client.left("left");
                    return;
                }
                client.backlog.done();
                wrote = Instant::now();
            }
            Popped::Closed => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Popped::Idle if hung_up(&stream) => {
                client.left("left");
                return;
            }
            Popped::Idle => {
                if wrote.elapsed() >= keepalive {
                    if write_whole(&mut stream, b": keep-alive\n\n", &client.backlog).is_err() {
                        client.left("left");
                        return;
                    }
                    wrote = Instant::now();
                }
            }
        }
    }
}

/// What was sent lately, by sequence: each event's channel (or [`GAP`]) and when.
pub(super) struct History {
    /// This run: its start, in milliseconds since the epoch, begins every id.
    pub(super) run: u64,
    started: jiff::Timestamp,
    /// The sequence of the oldest event remembered.
    first: u64,
    channels: VecDeque<u16>,
    /// Milliseconds since `started`.
    times: VecDeque<u64>,
}

impl History {
    pub(super) fn new() -> History {
        let started = jiff::Timestamp::now();
        History {
            run: u64::try_from(started.as_millisecond()).unwrap_or(0),
            started,
            first: 0,
            channels: VecDeque::new(),
            times: VecDeque::new(),
        }
    }

    /// The sequence the next event sent gets.
    pub(super) fn next(&self) -> u64 {
        self.first + self.channels.len() as u64
    }

    /// The next event was sent (to every client that follows `channel`).
    pub(super) fn sent(&mut self, channel: u16) {
        if self.channels.len() == HISTORY {
            self.channels.pop_front();
            self.times.pop_front();
            self.first += 1;
        }
        let ms = jiff::Timestamp::now()
            .duration_since(self.started)
            .as_millis()
            .clamp(0, i128::from(i64::MAX));
        self.channels.push_back(channel);
        self.times.push_back(ms as u64);
    }

    fn at(&self, index: usize) -> jiff::Timestamp {
        let ms = self.times.get(index).copied().unwrap_or(0);
        let since = jiff::SignedDuration::from_millis(i64::try_from(ms).unwrap_or(i64::MAX));
        self.started.checked_add(since).unwrap_or(self.started)
    }

    /// The gap of a client that saw the event `last` (its `Last-Event-ID`) and follows
    /// `selection`; `None` when it missed nothing.
    pub(super) fn missed(&self, last: &str, selection: &Selection) -> Option<Gap> {
        let now = jiff::Timestamp::now();
        let gap = |from, dropped, reason: String| Gap {
            kind: GapKind::Client,
            reason,
            from,
            until: Some(now),
            dropped,
        };
        let seen = last
            .split_once('-')
            .filter(|(run, _)| run.parse() == Ok(self.run))
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|seq| *seq < self.next());
        let Some(seen) = seen else {
            // Everything this run sent on its channels, at least, and what was sent before
            // this run began, unknown.
            let dropped = self
                .channels
                .iter()
                .filter(|c| **c != GAP && selection.takes(**c))
                .count() as u64;
            return Some(gap(
                self.started,
                dropped,
                format!(
                    "the client's last event ({}) is not from this run of pgnotify, which \
                     started at {}: it missed at least the {dropped} events sent since, and \
                     what was sent before is unknown",
                    crate::sanitize::escape_controls(&last.chars().take(64).collect::<String>()),
                    self.started
                ),
            ));
        };
        if seen + 1 < self.first {
            // Older than the history: every event since counts, whatever its channel.
            let dropped = self.next() - seen - 1;
            return Some(gap(
                self.at(0),
                dropped,
                format!(
                    "the client came back after event {last}: at most {dropped} events were sent \
                     while it was away"
                ),
            ));
        }
        let start = (seen + 1 - self.first) as usize;
        let mut dropped = 0;
        let mut gaps = 0;
        for &channel in self.channels.range(start..) {
            if channel == GAP {
                gaps += 1;
            } else if selection.takes(channel) {
                dropped += 1;
            }
        }
        if dropped == 0 && gaps == 0 {
            return None;
        }
        let mut reason = format!(
            "the client came back after event {last}: {dropped} events were sent while it was away"
        );
        if gaps > 0 {
            reason.push_str(&format!(", and {gaps} gap records"));
        }
        Some(gap(self.at(start), dropped, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_an_id_a_name_and_one_data_line() {
        let mut out = Vec::new();
        event(&mut out, Some((7, 3)), "jobs", br#"{"a":1}"#);
        event(&mut out, None, "odd\nname", b"{}");
        event(&mut out, None, "error", b"{}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 7-3\nevent: jobs\ndata: {\"a\":1}\n\ndata: {}\n\ndata: {}\n\n"
        );
    }

    #[test]
    fn what_a_client_missed_is_counted_for_its_channels() {
        let mut history = History::new();
        for channel in [0, 1, 0, GAP, 1] {
            history.sent(channel);
        }
        let id = |seq: u64| format!("{}-{seq}", history.run);
        let all = Selection(None);
        let ones = Selection(Some(vec![1].into()));
        assert!(history.missed(&id(4), &all).is_none(), "saw the last one");
        let gap = history.missed(&id(0), &all).unwrap();
        assert_eq!((gap.kind, gap.dropped), (GapKind::Client, 3));
        assert!(gap.reason.contains("1 gap records"), "{}", gap.reason);
        assert_eq!(history.missed(&id(1), &ones).unwrap().dropped, 1);
        let other_run = history.missed("1-0", &all).unwrap();
        assert_eq!(other_run.dropped, 4, "at least every event of this run");
        assert!(other_run.reason.contains("not from this run"));
        assert_eq!(history.missed("garbage", &ones).unwrap().dropped, 2);
        assert!(
            history
                .missed(&id(99), &all)
                .unwrap()
                .reason
                .contains("not from this run")
        );
    }
}
