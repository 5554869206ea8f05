//! The notification source that `listen` and `pipe` share: a thread that connects, LISTENs on
//! every channel, reads notifications into the bounded event queue, proves the connection
//! alive with a heartbeat, and reconnects when it is lost.
//!
//! Owns: LISTEN, reading, liveness, reconnecting, gap events. Does not own: output, stopping.
//!
//! - The connection stays in autocommit and never opens a transaction: a listener inside one
//!   receives nothing until it ends and pins the server's queue (notify-facts F12, F22).
//! - After a loss it reconnects at once, then after 0.1 s, doubling up to 10 s, with jitter;
//!   it re-LISTENs on every channel and only then reports the gap (sqlx#1102: reporting before
//!   LISTEN is back hides losses). `--max-downtime` bounds how long it tries.
//! - The heartbeat, every `--heartbeat` interval: an empty query answered within 5 s, then a
//!   notification to itself on a private channel that must come back within 5 s. So a hung
//!   backend, a black-holed network or a connection that no longer delivers notifications
//!   (a transaction pooler) is noticed within interval + 5 s and replaced.

use crate::conn::{self, Settings, describe_pg_error};
use crate::events::{Event, Gap, GapKind, Queue};
use crate::exit::ConnectionError;
use crate::msg;
use crate::notification::{Notification, check_channel, quote_ident};
use anyhow::{Context, Result};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, SimpleQueryMessage};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most notifications pushed as one batch; bounds the latency of a burst's first line.
const MAX_BATCH: usize = 1024;
/// How long the heartbeat's query and self-notification may take.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A bound on each reconnection attempt when `connect_timeout` sets none.
const RECONNECT_TIMEOUT_SECS: u64 = 10;

/// How the source behaves.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// The channels, exactly as given.
    pub channels: Vec<String>,
    /// Retry the first connection too, instead of failing at once (`--wait`).
    pub wait: bool,
    /// Give up (status 3) after being disconnected this long (`--max-downtime`).
    pub max_downtime: Option<Duration>,
    /// The heartbeat interval; `None` turns it off.
    pub heartbeat: Option<Duration>,
}

/// Checks the channels, connects (unless `--wait`: then the thread does), and starts the
/// reading thread.
///
/// Without `--wait`, returns once every LISTEN has committed: a notification committed after
/// this returns is received (the readiness rule of `LISTEN`, failure-modes F11).
pub fn start(conn: &Settings, settings: SourceSettings, queue: Arc<Queue>) -> Result<()> {
    for channel in &settings.channels {
        check_channel(channel)?;
    }
    let source = Source {
        conn: conn.clone(),
        heartbeat_channel: format!("pgnotify.heartbeat.{}", std::process::id()),
        settings,
        queue,
    };
    let first = match source.settings.wait {
        true => None,
        false => Some(source.open(&source.conn)?),
    };
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || source.run(first))
        .context("could not start the reading thread")?;
    Ok(())
}

struct Source {
    conn: Settings,
    settings: SourceSettings,
    heartbeat_channel: String,
    queue: Arc<Queue>,
}

/// An open, listening connection.
struct Session {
    client: Client,
    server: String,
}

/// When and why the stream stopped being complete.
struct Outage {
    since: Instant,
    from: jiff::Timestamp,
    reason: String,
    attempts: u32,
}

impl Source {
    fn run(self, first: Option<Session>) {
        let reconnect_conn = self
            .conn
            .with_default("connect_timeout", &RECONNECT_TIMEOUT_SECS.to_string());
        let mut session = first;
        let mut outage = session
            .is_none()
            .then(|| Outage::new("waiting for the server (--wait)".into()));
        let mut reported = session.is_some();
        loop {
            let current = match session.take() {
                Some(current) => current,
                None => match self.open(&reconnect_conn) {
                    Ok(current) => {
                        if let Some(outage) = outage.take()
                            && reported
                        {
                            self.report_gap(&outage);
                        }
                        reported = true;
                        current
                    }
                    Err(e) => {
                        let Some(down) = outage.as_mut() else { return };
                        if !self.retry(down, &e) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let reason = self.read(current);
            msg::warn(&format!("{reason}; reconnecting"));
            outage = Some(Outage::new(reason));
        }
    }

    /// Waits before the next attempt; false when `--max-downtime` is exhausted.
    fn retry(&self, down: &mut Outage, error: &anyhow::Error) -> bool {
        let elapsed = down.since.elapsed();
        if let Some(max) = self.settings.max_downtime
            && elapsed >= max
        {
            self.queue.push(Event::Fatal(
                ConnectionError(format!(
                    "gave up reconnecting after {} attempts over {:.1} s (--max-downtime): {error:#}",
                    down.attempts,
                    elapsed.as_secs_f64()
                ))
                .into(),
            ));
            return false;
        }
        if down.attempts == 0 {
            msg::warn(&format!("could not reconnect yet: {error:#}; retrying"));
        } else {
            msg::info(&format!(
                "reconnection attempt {} failed: {error:#}",
                down.attempts + 1
            ));
        }
        let mut pause = backoff(down.attempts);
        if let Some(max) = self.settings.max_downtime {
            pause = pause.min(max.saturating_sub(elapsed));
        }
        std::thread::sleep(pause);
        down.attempts += 1;
        true
    }

    fn report_gap(&self, outage: &Outage) {
        let down = outage.since.elapsed();
        msg::warn(&format!(
            "reconnected after {:.1} s; notifications sent in between are lost",
            down.as_secs_f64()
        ));
        self.queue.push(Event::Gap(Gap {
            kind: GapKind::Reconnect,
            reason: outage.reason.clone(),
            from: outage.from,
            until: jiff::Timestamp::now(),
            dropped: 0,
        }));
    }

    /// Connects and LISTENs on every channel (and the heartbeat's), in one round trip.
    fn open(&self, conn: &Settings) -> Result<Session> {
        let conn::Connection { mut client, target } = conn::connect(conn)?;
        let mut sql: String = self
            .channels()
            .map(|c| format!("LISTEN {};", quote_ident(c)))
            .collect();
        sql.push_str("SELECT pg_catalog.pg_backend_pid()");
        let messages = client.simple_query(&sql).map_err(|e| {
            ConnectionError(format!(
                "could not listen on {}: {}",
                target.describe(),
                describe_pg_error(&e)
            ))
        })?;
        let pid = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0)?.parse::<i32>().ok(),
            _ => None,
        });
        let names: Vec<String> = self
            .settings
            .channels
            .iter()
            .map(|c| crate::output::escape_controls(&quote_ident(c)).into_owned())
            .collect();
        msg::info(&format!(
            "listening on {} (server process {})",
            names.join(", "),
            pid.unwrap_or_default()
        ));
        Ok(Session {
            client,
            server: target.describe(),
        })
    }

    fn channels(&self) -> impl Iterator<Item = &String> {
        let heartbeat = self.settings.heartbeat.map(|_| &self.heartbeat_channel);
        self.settings.channels.iter().chain(heartbeat)
    }

    /// Reads until the connection is lost, and says why. The session is then closed on a
    /// thread of its own: closing waits for the server, which may be hung.
    fn read(&self, mut session: Session) -> String {
        let ended = self.read_session(&mut session);
        let _ = std::thread::Builder::new()
            .name("close".into())
            .spawn(move || drop(session));
        ended
    }

    fn read_session(&self, session: &mut Session) -> String {
        let server = session.server.clone();
        let lost = |why: String| format!("lost the connection to {server}: {why}");
        let mut beat = Heartbeat::new(self.settings.heartbeat);
        loop {
            let (batch, failure) = next_batch(&mut session.client, beat.wait());
            let batch = beat.filter(batch, &self.heartbeat_channel);
            let pushing = Instant::now();
            if !batch.is_empty()
                && let Err(why) = self.queue.push_notifications(batch)
            {
                exit_now(&why);
            }
            // Time spent waiting for room in the queue is not the server's: the heartbeat's
            // deadlines move by it, or a slow output would look like a dead connection.
            beat.postpone(pushing.elapsed());
            if let Some(why) = failure {
                return lost(why);
            }
            if session.client.is_closed() {
                return lost("the server closed the connection".into());
            }
            if let Err(why) = beat.check(&mut session.client, &self.heartbeat_channel) {
                return lost(why);
            }
        }
    }
}

impl Outage {
    fn new(reason: String) -> Outage {
        Outage {
            since: Instant::now(),
            from: jiff::Timestamp::now(),
            reason,
            attempts: 0,
        }
    }
}

/// Ends the program from the source thread: the main loop may be stuck writing to the output
/// that could not keep up (`--on-overflow exit`), so it cannot be asked to.
fn exit_now(why: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "pgnotify: error: {why}");
    std::process::exit(i32::from(crate::exit::Exit::Failure.code()));
}

/// Waits up to `wait` for a notification, then takes every one already buffered. On an
/// error, what was read before it is returned too, with the reason: nothing received is lost.
fn next_batch(client: &mut Client, wait: Duration) -> (Vec<Notification>, Option<String>) {
    let mut notifications = client.notifications();
    let mut batch = Vec::new();
    match notifications.timeout_iter(wait).next() {
        Ok(Some(n)) => batch.push(Notification::from_pg(&n, jiff::Timestamp::now())),
        Ok(None) => return (batch, None),
        Err(e) => return (batch, Some(describe_pg_error(&e))),
    }
    let mut pending = notifications.iter();
    while batch.len() < MAX_BATCH {
        match pending.next() {
            Ok(Some(n)) => batch.push(Notification::from_pg(&n, jiff::Timestamp::now())),
            Ok(None) => break,
            Err(e) => return (batch, Some(describe_pg_error(&e))),
        }
    }
    (batch, None)
}

/// The heartbeat's schedule and the self-notification it waits for.
struct Heartbeat {
    interval: Option<Duration>,
    next: Option<Instant>,
    awaiting: Option<(String, Instant)>,
    sequence: u64,
}

impl Heartbeat {
    fn new(interval: Option<Duration>) -> Heartbeat {
        Heartbeat {
            interval,
            next: interval.map(|i| Instant::now() + i),
            awaiting: None,
            sequence: 0,
        }
    }

    /// How long reading may block before the heartbeat needs attention.
    fn wait(&self) -> Duration {
        let due = [self.next, self.awaiting.as_ref().map(|a| a.1)]
            .into_iter()
            .flatten()
            .min();
        match due {
            Some(due) => due
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
            None => Duration::from_secs(3600),
        }
    }

    /// Moves the schedule and the pending deadline later by `by`.
    fn postpone(&mut self, by: Duration) {
        if by < Duration::from_millis(100) {
            return;
        }
        if let Some(next) = self.next.as_mut() {
            *next += by;
        }
        if let Some((_, deadline)) = self.awaiting.as_mut() {
            *deadline += by;
        }
    }

    /// Removes the heartbeat's own notifications from a batch, noting the awaited one.
    fn filter(&mut self, mut batch: Vec<Notification>, channel: &str) -> Vec<Notification> {
        if self.interval.is_none() {
            return batch;
        }
        batch.retain(|n| {
            if n.channel != channel {
                return true;
            }
            if self
                .awaiting
                .as_ref()
                .is_some_and(|(payload, _)| *payload == n.payload)
            {
                self.awaiting = None;
            }
            false
        });
        batch
    }

    /// Sends a heartbeat when one is due; fails when the last one did not come back in time.
    fn check(&mut self, client: &mut Client, channel: &str) -> Result<(), String> {
        let now = Instant::now();
        if let Some((_, deadline)) = &self.awaiting
            && now >= *deadline
        {
            return Err(format!(
                "the heartbeat notification did not come back within {} s (is this connection \
                 through a transaction pooler?)",
                HEARTBEAT_TIMEOUT.as_secs()
            ));
        }
        let (Some(interval), Some(next)) = (self.interval, self.next) else {
            return Ok(());
        };
        if now < next || self.awaiting.is_some() {
            return Ok(());
        }
        client.is_valid(HEARTBEAT_TIMEOUT).map_err(|e| {
            format!(
                "no answer to the heartbeat within {} s ({})",
                HEARTBEAT_TIMEOUT.as_secs(),
                describe_pg_error(&e)
            )
        })?;
        self.sequence += 1;
        let payload = self.sequence.to_string();
        client
            .execute("SELECT pg_catalog.pg_notify($1, $2)", &[&channel, &payload])
            .map_err(|e| format!("the heartbeat failed: {}", describe_pg_error(&e)))?;
        self.awaiting = Some((payload, Instant::now() + HEARTBEAT_TIMEOUT));
        self.next = Some(now + interval);
        Ok(())
    }
}

/// The pause before reconnection attempt `attempt` (0-based): none, then 0.1 s doubling to
/// 10 s, each scaled by a jitter in [0.5, 1) so that many listeners do not retry in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let base = Duration::from_millis(100)
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    let jitter =
        0.5 + f64::from(jiff::Timestamp::now().subsec_nanosecond().rem_euclid(1000)) / 2000.0;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        let first = backoff(1);
        assert!(
            first >= Duration::from_millis(50) && first < Duration::from_millis(100),
            "{first:?}"
        );
        let later = backoff(30);
        assert!(later >= MAX_BACKOFF / 2 && later < MAX_BACKOFF, "{later:?}");
    }

    #[test]
    fn heartbeat_notifications_are_filtered_and_acknowledged() {
        let mut beat = Heartbeat::new(Some(Duration::from_secs(10)));
        beat.awaiting = Some(("7".into(), Instant::now() + HEARTBEAT_TIMEOUT));
        let n = |channel: &str, payload: &str| Notification {
            channel: channel.into(),
            payload: payload.into(),
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
        };
        let kept = beat.filter(vec![n("hb", "7"), n("jobs", "x"), n("hb", "6")], "hb");
        assert_eq!(kept, vec![n("jobs", "x")]);
        assert!(beat.awaiting.is_none());
    }
}
