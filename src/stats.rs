//! The counters of a `listen` or `pipe` run, and their three renderings: the `--stats` line
//! (logfmt, `key=value`), its JSON fields (`--log-format json`), and the Prometheus text
//! exposition that `--metrics` serves.
//!
//! Owns: the numbers and how they read. Does not own: where they are counted (the queue, the
//! loop, the source and the sinks call in here, once per batch rather than per event where they
//! can), printing (`msg`), the metrics server (`sink::web::metrics`), or SIGUSR1 (`signals`).
//!
//! One run per process, so the counters are one process-wide set of atomics, as `msg`'s level
//! is: no wing has to carry them through its signatures, and a count costs one relaxed atomic
//! add, which is no more than an add on a core that owns the cache line.
//!
//! What each counts (README, "Health"):
//! - `received`: notifications read from the server (or, with `--consumer`, from the outbox)
//!   and offered to the queue, heartbeats left out; those the queue then drops included.
//! - `written`: notifications the loop (or the express lane) wrote to the output: to stdout,
//!   to an `--exec` worker, or into the backlog of a network destination (once, however many
//!   destinations and clients there are).
//! - `dropped_queue`: received, never written: dropped by `--on-overflow drop`.
//! - `dropped_backlog`: written, then refused by a `--connect` peer's full backlog (counted per
//!   peer). A `--serve` or web client that cannot keep up is disconnected instead, and what it
//!   would have got is not counted here.
//! - `gaps_*`: gaps by kind, counted as they are reported (whether or not `--no-gap-records`
//!   leaves their records out of the stream).
//! - `reconnects`: connections to the server re-established after a loss.
//! - `clients`: `--serve`, `--websocket` and `--sse` clients streaming now.
//! - `queue_bytes`: what the queue holds now (`queue::cost`), what is being written included.
//! - `last_event_age_s`: seconds since the last notification was received (none yet: absent).

use crate::notification::GapKind;
use serde_json::{Map, Value};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The counters of the run.
struct Counters {
    received: AtomicU64,
    written: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_backlog: AtomicU64,
    /// By [`GapKind`], in [`GAP_KINDS`]' order.
    gaps: [AtomicU64; 4],
    reconnects: AtomicU64,
    clients: AtomicI64,
    queue_bytes: AtomicU64,
    /// When the last notification was received, in milliseconds since the epoch (0: never).
    last_event_ms: AtomicI64,
}

static COUNTERS: Counters = Counters {
    received: AtomicU64::new(0),
    written: AtomicU64::new(0),
    dropped_queue: AtomicU64::new(0),
    dropped_backlog: AtomicU64::new(0),
    gaps: [const { AtomicU64::new(0) }; 4],
    reconnects: AtomicU64::new(0),
    clients: AtomicI64::new(0),
    queue_bytes: AtomicU64::new(0),
    last_event_ms: AtomicI64::new(0),
};

const GAP_KINDS: [GapKind; 4] = [
    GapKind::Reconnect,
    GapKind::Overflow,
    GapKind::Peer,
    GapKind::Client,
];

fn gap_index(kind: GapKind) -> usize {
    match kind {
        GapKind::Reconnect => 0,
        GapKind::Overflow => 1,
        GapKind::Peer => 2,
        GapKind::Client => 3,
    }
}

/// `n` notifications were received, the last of them at `last`.
pub(crate) fn received(n: usize, last: Option<jiff::Timestamp>) {
    if n == 0 {
        return;
    }
    COUNTERS.received.fetch_add(n as u64, Relaxed);
    if let Some(at) = last {
        COUNTERS.last_event_ms.store(at.as_millisecond(), Relaxed);
    }
}

/// `n` notifications were written to the output.
pub(crate) fn written(n: u64) {
    if n > 0 {
        COUNTERS.written.fetch_add(n, Relaxed);
    }
}

/// `n` notifications counted as written by [`written`] were not, after all.
pub(crate) fn unwritten(n: u64) {
    if n > 0 {
        COUNTERS.written.fetch_sub(n, Relaxed);
    }
}

/// `--on-overflow drop` dropped `n` notifications in the queue.
pub(crate) fn dropped_in_queue(n: u64) {
    COUNTERS.dropped_queue.fetch_add(n, Relaxed);
}

/// A network destination's backlog refused `n` notifications.
pub(crate) fn dropped_in_backlog(n: u64) {
    COUNTERS.dropped_backlog.fetch_add(n, Relaxed);
}

/// A gap was reported.
pub(crate) fn gap(kind: GapKind) {
    COUNTERS.gaps[gap_index(kind)].fetch_add(1, Relaxed);
}

/// The connection to the server was re-established.
pub(crate) fn reconnected() {
    COUNTERS.reconnects.fetch_add(1, Relaxed);
}

/// The queue holds `bytes` now.
pub(crate) fn queue_bytes(bytes: usize) {
    COUNTERS.queue_bytes.store(bytes as u64, Relaxed);
}

/// A client that streams: counted among the `clients` while it lives.
#[derive(Debug)]
pub(crate) struct Client(());

impl Client {
    pub(crate) fn connected() -> Client {
        COUNTERS.clients.fetch_add(1, Relaxed);
        Client(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        COUNTERS.clients.fetch_sub(1, Relaxed);
    }
}

/// The counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) received: u64,
    pub(crate) written: u64,
    pub(crate) dropped_queue: u64,
    pub(crate) dropped_backlog: u64,
    pub(crate) gaps: [u64; 4],
    pub(crate) reconnects: u64,
    pub(crate) clients: i64,
    pub(crate) queue_bytes: u64,
    /// Seconds since the last notification was received; `None`: none was.
    pub(crate) last_event_age: Option<f64>,
}

/// The counters now.
pub(crate) fn snapshot() -> Snapshot {
    let c = &COUNTERS;
    let last = c.last_event_ms.load(Relaxed);
    let last_event_age = (last != 0).then(|| {
        let now = jiff::Timestamp::now().as_millisecond();
        (now.saturating_sub(last)).max(0) as f64 / 1000.0
    });
    Snapshot {
        received: c.received.load(Relaxed),
        written: c.written.load(Relaxed),
        dropped_queue: c.dropped_queue.load(Relaxed),
        dropped_backlog: c.dropped_backlog.load(Relaxed),
        gaps: std::array::from_fn(|i| c.gaps[i].load(Relaxed)),
        reconnects: c.reconnects.load(Relaxed),
        clients: c.clients.load(Relaxed).max(0),
        queue_bytes: c.queue_bytes.load(Relaxed),
        last_event_age,
    }
}

impl Snapshot {
    /// The fields in their order, as name and JSON value (the age: null when none came).
    pub(crate) fn fields(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |k: &str, v: Value| {
            map.insert(k.to_owned(), v);
        };
        put("received", self.received.into());
        put("written", self.written.into());
        put(
            "dropped",
            (self.dropped_queue + self.dropped_backlog).into(),
        );
        put("dropped_queue", self.dropped_queue.into());
        put("dropped_backlog", self.dropped_backlog.into());
        put("gaps", self.gaps.iter().sum::<u64>().into());
        for (kind, n) in GAP_KINDS.iter().zip(self.gaps) {
            put(&format!("gaps_{}", kind.as_str()), n.into());
        }
        put("reconnects", self.reconnects.into());
        put("clients", self.clients.into());
        put("queue_bytes", self.queue_bytes.into());
        put(
            "last_event_age_s",
            match self.last_event_age {
                Some(age) => {
                    serde_json::Number::from_f64(round3(age)).map_or(Value::Null, Value::Number)
                }
                None => Value::Null,
            },
        );
        map
    }

    /// The fields as one logfmt line: `received=3 written=3 ... last_event_age_s=0.25`
    /// (`none` for an age when nothing came yet).
    pub(crate) fn line(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.fields() {
            let value = match value {
                Value::Null => "none".to_owned(),
                v => v.to_string(),
            };
            let _ = write!(
                out,
                "{}{key}={value}",
                if out.is_empty() { "" } else { " " }
            );
        }
        out
    }

    /// The Prometheus text exposition format (version 0.0.4): each family with its HELP and
    /// TYPE, counters named `_total`, everything prefixed `pgnotify_`.
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            let _ = writeln!(out, "# HELP pgnotify_{name} {help}");
            let _ = writeln!(out, "# TYPE pgnotify_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "pgnotify_{name}{labels} {value}");
            }
        };
        family(
            "received_total",
            "counter",
            "Notifications read from the server (or the outbox), dropped ones included.",
            &[("", self.received.to_string())],
        );
        family(
            "written_total",
            "counter",
            "Notifications written to the output (stdout, --exec, the network destinations' backlogs).",
            &[("", self.written.to_string())],
        );
        family(
            "dropped_total",
            "counter",
            "Notifications dropped: in the queue by --on-overflow drop, or by a --connect peer's full backlog.",
            &[
                ("{stage=\"queue\"}", self.dropped_queue.to_string()),
                ("{stage=\"backlog\"}", self.dropped_backlog.to_string()),
            ],
        );
        let gaps: Vec<(String, String)> = GAP_KINDS
            .iter()
            .zip(self.gaps)
            .map(|(kind, n)| (format!("{{kind=\"{}\"}}", kind.as_str()), n.to_string()))
            .collect();
        let gaps: Vec<(&str, String)> = gaps.iter().map(|(l, v)| (l.as_str(), v.clone())).collect();
        family(
            "gaps_total",
            "counter",
            "Gaps reported (stretches in which notifications may be missing), by kind.",
            &gaps,
        );
        family(
            "reconnects_total",
            "counter",
            "Connections to the server re-established after a loss.",
            &[("", self.reconnects.to_string())],
        );
        family(
            "clients",
            "gauge",
            "--serve, --websocket and --sse clients streaming now.",
            &[("", self.clients.to_string())],
        );
        family(
            "queue_bytes",
            "gauge",
            "Bytes of notifications in the queue now, those being written included.",
            &[("", self.queue_bytes.to_string())],
        );
        let age: Vec<(&str, String)> = self
            .last_event_age
            .map(|age| ("", format!("{:.3}", age)))
            .into_iter()
            .collect();
        family(
            "last_event_age_seconds",
            "gauge",
            "Seconds since the last notification was received (no sample until one is).",
            &age,
        );
        out
    }
}

/// Prints the counters now on stderr as one line: `label` says which ("stats", "final stats").
pub(crate) fn print(label: &str) {
    let now = snapshot();
    crate::msg::stats(label, &now.line(), &now.fields());
}

/// Prints the counters every `interval`, on a thread of its own, until the process ends.
pub(crate) fn print_every(interval: std::time::Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                print("stats");
            }
        })
        .map(drop)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            received: 5,
            written: 3,
            dropped_queue: 2,
            dropped_backlog: 1,
            gaps: [1, 2, 0, 0],
            reconnects: 1,
            clients: 2,
            queue_bytes: 640,
            last_event_age: Some(0.25),
        }
    }

    #[test]
    fn the_line_is_logfmt() {
        assert_eq!(
            sample().line(),
            "received=5 written=3 dropped=3 dropped_queue=2 dropped_backlog=1 gaps=3 \
             gaps_reconnect=1 gaps_overflow=2 gaps_peer=0 gaps_client=0 reconnects=1 clients=2 \
             queue_bytes=640 last_event_age_s=0.25"
        );
        let none = Snapshot {
            last_event_age: None,
            ..sample()
        };
        assert!(none.line().ends_with(" last_event_age_s=none"));
        assert_eq!(none.fields()["last_event_age_s"], Value::Null);
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = sample().prometheus();
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families += 1;
                let name = rest.split(' ').next().unwrap();
                assert!(text.contains(&format!("# HELP {name} ")), "{name}");
                assert!(name.starts_with("pgnotify_"));
                if rest.ends_with(" counter") {
                    assert!(name.ends_with("_total"), "{name}");
                }
            }
        }
        assert_eq!(families, 8);
        assert!(text.contains("pgnotify_dropped_total{stage=\"queue\"} 2\n"));
        assert!(text.contains("pgnotify_gaps_total{kind=\"overflow\"} 2\n"));
        assert!(text.contains("pgnotify_last_event_age_seconds 0.250\n"));
        let none = Snapshot {
            last_event_age: None,
            ..sample()
        };
        assert!(
            !none
                .prometheus()
                .contains("\npgnotify_last_event_age_seconds ")
        );
    }
}
