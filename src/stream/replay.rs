//! `--consumer NAME`: the source that reads the outbox (`durable`) instead of listening. It
//! replays what the consumer has not acknowledged, then follows new events as NOTIFY wakes it,
//! on the same queries, so there is no seam between replay and live where an event could fall.
//!
//! Acknowledging: the sink, or the main loop after each flush, advances the [`Watermark`] of
//! what is delivered; this thread stores it as the consumer's checkpoint, at most every
//! [`STORE_EVERY`], and once more when the run ends ([`Acks::close`]). A crash repeats at most
//! what was written since the last store; nothing is skipped. It also deletes, in batches, the
//! events every consumer has acknowledged.
//!
//! A lost connection is re-established like the listening source's, and costs nothing: the
//! reading resumes after the last event queued. No gap record is written, because none is lost.

use super::queue::{Event, Queue};
use super::source::{ListeningOn, SourceSettings};
use crate::backoff::backoff;
use crate::deadline;
use crate::durable::{self, Position, WAKE_CHANNEL, statements};
use crate::exit::{ConnectionError, Rejected};
use crate::msg;
use crate::notification::{Notification, Watermark};
use crate::pg::{self, ConnSettings, Target, describe_pg_error, quote_ident};
use crate::stats;
use anyhow::{Context, Result, anyhow, bail};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a name held by another session is waited for before the run is refused.
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Events read in one query, and the payload bytes they may hold together (a larger event is
/// read alone).
const BATCH: i64 = 2000;
const BATCH_BYTES: i64 = 1 << 20;
/// The longest a checkpoint waits to be stored while events are acknowledged.
const STORE_EVERY: Duration = Duration::from_millis(200);
/// How often a consumer with nothing to acknowledge says it is alive (`seen_at`).
const SEEN_EVERY: Duration = Duration::from_secs(30);
/// How often acknowledged events are deleted, and how many per statement.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// The longest wait for a wake-up before looking anyway (a NOTIFY lost while reconnecting).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often to look while events wait for an older transaction (which may send no NOTIFY).
const HELD_POLL: Duration = Duration::from_millis(50);
/// How long events may wait for an open transaction before stderr says so, and how often it
/// says so again while they wait.
const HELD_SAY_AFTER: Duration = Duration::from_secs(10);
const HELD_SAY_EVERY: Duration = Duration::from_secs(60);
/// The slice of a wait after which the end of the run and acknowledgements are looked at.
const SLICE: Duration = Duration::from_millis(20);
/// An attempt that failed faster than this was answered at once, and the next one waits at
/// most this long.
const ANSWERED_AT_ONCE: Duration = Duration::from_secs(1);
/// How long what the reader sent may go unacknowledged by the server's host before the
/// connection is given up (libpq's `tcp_user_timeout`, unless set).
const USER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end of a run waits for the last checkpoint to be stored.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How far delivery has got (the sink's or the loop's mark), and what this thread has stored.
#[derive(Default)]
pub(super) struct Acks {
    mark: Arc<Watermark>,
    state: Mutex<AckState>,
    changed: Condvar,
}

#[derive(Default)]
struct AckState {
    /// The checkpoint as stored in the database.
    stored: Option<Position>,
    /// The run is ending: store the checkpoint now and stop.
    closing: bool,
    /// The reading thread has ended.
    gone: bool,
}

impl Acks {
    fn lock(&self) -> MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mark that the sink (or the loop, after each flush) advances.
    pub(super) fn mark(&self) -> Arc<Watermark> {
        Arc::clone(&self.mark)
    }

    /// Ends the run: the last checkpoint is stored (waiting at most [`CLOSE_WAIT`]), and what
    /// is still queued is let go. Says on stderr when the checkpoint could not be stored.
    pub(super) fn close(&self, queue: &Queue) {
        self.lock().closing = true;
        self.changed.notify_all();
        // The reader may wait for room in the queue: nothing will take it now.
        queue.discard();
        let state = self.lock();
        let written = self.mark.get();
        let pending = |s: &mut AckState| !s.gone && written.is_some() && s.stored < written;
        let (state, _) =
            deadline::wait_while(&self.changed, state, deadline::after(CLOSE_WAIT), pending);
        if written.is_some() && state.stored < written {
            msg::warn(
                "could not store the consumer's last checkpoint: the events written since the \
                 last one stored will be delivered again",
            );
        }
    }

    fn stored(&self, at: Position) {
        self.lock().stored = Some(at);
        self.changed.notify_all();
    }

    fn gone(&self) {
        self.lock().gone = true;
        self.changed.notify_all();
    }
}

/// Connects (unless `--wait`), registers the consumer, and starts the reading thread.
pub(super) fn start(
    conn: &ConnSettings,
    settings: SourceSettings,
    name: String,
    queue: Arc<Queue>,
    acks: Arc<Acks>,
    listening_on: ListeningOn,
) -> Result<()> {
    durable::check_consumer_name(&name)?;
    let replay = Replay {
        // The reader queries at least once a second: a query unanswered this long means the
        // network is gone (a listener's heartbeat does this job on its connection).
        conn: conn.with_default("tcp_user_timeout", &USER_TIMEOUT.as_millis().to_string()),
        settings,
        name,
        queue,
        acks,
        listening_on,
        registered: AtomicBool::new(false),
        session_pid: Mutex::new(None),
    };
    let first = match replay.settings.wait {
        true => None,
        false => Some(replay.open(&replay.conn)?),
    };
    std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            replay.run(first);
            replay.acks.gone();
        })
        .context("could not start the reading thread")?;
    Ok(())
}

struct Replay {
    conn: ConnSettings,
    settings: SourceSettings,
    name: String,
    queue: Arc<Queue>,
    acks: Arc<Acks>,
    listening_on: ListeningOn,
    /// Registered by this run: a reconnect finds the consumer, and stops if it was dropped.
    registered: AtomicBool,
    /// The server process of this run's last session, which holds the consumer's name.
    session_pid: Mutex<Option<i32>>,
}

/// Another session holds the consumer's name.
#[derive(Debug)]
struct Busy(String);

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Busy {}

/// A connection with the consumer registered and the wake-up channel listened on.
struct Session {
    client: postgres::Client,
    target: Target,
    /// The consumer's checkpoint when it was registered.
    checkpoint: Position,
}

/// Why a session ended.
enum Ended {
    /// The run is over and the checkpoint stored.
    Closed,
    /// The connection was lost: reconnect.
    Lost(String),
    /// The run cannot go on.
    Fatal(anyhow::Error),
}

impl Replay {
    fn run(&self, first: Option<Session>) {
        let reconnect = self
            .conn
            .without_deadline()
            .with_default("connect_timeout", "10")
            .without_prompt();
        let mut session = first;
        // Where reading resumes: after the last event queued (what is queued is still written).
        let mut from = session.as_ref().map(|s| s.checkpoint);
        let mut down: Option<(Instant, u32)> = session.is_none().then(|| (Instant::now(), 0));
        // How long the last attempt took: one answered at once is retried soon.
        let mut tried = Duration::ZERO;
        loop {
            let current = match session.take() {
                Some(current) => current,
                None => match self.timed_open(&reconnect, &mut tried) {
                    Ok(current) => {
                        if let Some((since, _)) = down.take()
                            && from.is_some()
                        {
                            stats::reconnected();
                            msg::warn(&format!(
                                "reconnected after {:.1} s; the consumer resumes where it was \
                                 (durable: nothing is lost)",
                                since.elapsed().as_secs_f64()
                            ));
                        }
                        from.get_or_insert(current.checkpoint);
                        current
                    }
                    Err(e) => {
                        let (since, attempts) = down.get_or_insert((Instant::now(), 0));
                        // The name still held: by the session just lost, until the server
                        // notices that it is gone.
                        let busy = e.chain().any(|c| c.is::<Busy>());
                        let rejected = e.chain().any(|c| c.is::<Rejected>())
                            || !(busy || e.chain().any(|c| c.is::<ConnectionError>()));
                        let exhausted = self
                            .settings
                            .max_downtime
                            .is_some_and(|max| since.elapsed() >= max);
                        if rejected || exhausted || self.closing() {
                            let e = match exhausted && !rejected {
                                true => ConnectionError(format!(
                                    "gave up reconnecting after {:.1} s (--max-downtime): {e:#}",
                                    since.elapsed().as_secs_f64()
                                ))
                                .into(),
                                false => e,
                            };
                            self.queue.push(Event::Fatal(e));
                            return;
                        }
                        if *attempts == 0 {
                            msg::warn(&format!("could not connect yet: {e:#}; retrying"));
                        } else {
                            msg::info(&format!(
                                "connection attempt {} failed: {e:#}",
                                *attempts + 1
                            ));
                        }
                        *attempts += 1;
                        // A server that answered at once (refused, starting up) is tried again
                        // within a second; the longer backoff is for attempts that time out.
                        let mut pause = backoff(*attempts).max(Duration::from_millis(100));
                        if tried < ANSWERED_AT_ONCE {
                            pause = pause.min(ANSWERED_AT_ONCE);
                        }
                        if let Some(max) = self.settings.max_downtime {
                            pause = pause.min(max.saturating_sub(since.elapsed()));
                        }
                        std::thread::sleep(pause);
                        continue;
                    }
                },
            };
            // Registered and listening for wake-ups: reading begins (READY=1 the first time).
            self.settings.notifier.ready(&format!(
                "consumer {} reading {}",
                self.name,
                self.settings.channels.join(", ")
            ));
            let mut at = from.unwrap_or(current.checkpoint);
            let ended = self.serve(current, &mut at);
            from = Some(at);
            match ended {
                Ended::Closed => return,
                Ended::Fatal(e) => {
                    self.queue.push(Event::Fatal(e));
                    return;
                }
                Ended::Lost(why) => {
                    msg::warn(&format!("{why}; reconnecting"));
                    self.settings
                        .notifier
                        .status(&format!("{why}; reconnecting"));
                    down = Some((Instant::now(), 0));
                }
            }
        }
    }

    fn timed_open(&self, conn: &ConnSettings, took: &mut Duration) -> Result<Session> {
        let started = Instant::now();
        let result = self.open(conn);
        *took = started.elapsed();
        result
    }

    fn closing(&self) -> bool {
        self.acks.lock().closing
    }

    /// Connects, makes sure the schema is there, registers the consumer (or takes up its
    /// place), and listens for wake-ups.
    fn open(&self, conn: &ConnSettings) -> Result<Session> {
        let pg::Connection {
            mut client, target, ..
        } = pg::connect(conn)?;
        match self.set_up(&mut client, &target) {
            Ok(checkpoint) => Ok(Session {
                client,
                target,
                checkpoint,
            }),
            // Lost while setting up: retried like a failed connection.
            Err(e) if client.is_closed() => Err(ConnectionError(format!(
                "lost the connection to {} while setting up the consumer: {e:#}",
                target.describe()
            ))
            .into()),
            Err(e) => Err(e),
        }
    }

    /// Makes sure the schema is there, claims the consumer's name, registers it (or, on a
    /// reconnect, finds it), and listens for wake-ups; returns its checkpoint.
    fn set_up(&self, client: &mut postgres::Client, target: &Target) -> Result<Position> {
        // The consumer's own writes (its registration, its checkpoints) survive a server
        // crash whatever the server's default; deletions are read-committed wherever the
        // role's default isolation is stricter.
        client
            .batch_execute(
                "SET synchronous_commit = on; \
                 SET default_transaction_isolation = 'read committed'; \
                 SET lock_timeout = 0; SET statement_timeout = 0",
            )
            .map_err(|e| lost_or_sql("could not set up the session", &e, target))?;
        durable::ensure(client)?;
        let previous = self
            .session_pid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // A consumer killed and started again at once may find its name still held by its
        // old session, until the server sees that session's client gone: that is waited for,
        // a moment, before another process is said to hold it.
        let asked = Instant::now();
        let (claimed, pid) = loop {
            let row = client
                .query_one(statements::CLAIM, &[&self.name])
                .map_err(|e| lost_or_sql("could not claim the consumer's name", &e, target))?;
            let (claimed, pid): (bool, i32) = (row.get(0), row.get(1));
            if claimed || previous.is_some() || asked.elapsed() >= CLAIM_WAIT {
                break (claimed, pid);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !claimed {
            // Our own session, lost but not yet noticed by the server, may still hold it:
            // end that one, and the next attempt takes the name.
            if let Some(old) = previous {
                let _ = client.query(statements::TAKE_BACK, &[&self.name, &old]);
                *self
                    .session_pid
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(old);
            }
            return Err(Busy(format!(
                "consumer {:?} is running already (another process holds its name, and two \
                 would race for its checkpoint); stop it, or use another name",
                self.name
            ))
            .into());
        }
        *self
            .session_pid
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(pid);
        let first = !self.registered.load(Ordering::Relaxed);
        let row = match first {
            true => client
                .query_one(statements::REGISTER, &[&self.name, &self.settings.channels])
                .map_err(|e| durable::sql_error("could not register the consumer", &e))?,
            false => client
                .query_opt(statements::LOOKUP, &[&self.name])
                .map_err(|e| durable::sql_error("could not find the consumer", &e))?
                .ok_or_else(|| {
                    anyhow!(
                        "consumer {:?} was dropped while it ran (pgnotify consumers --drop); \
                         stopping",
                        self.name
                    )
                })?,
        };
        let checkpoint = position(row.get(0), row.get(1))?;
        let stored: Vec<String> = row.get(2);
        let new: bool = row.get(3);
        let added: Vec<&String> = self
            .settings
            .channels
            .iter()
            .filter(|c| !stored.contains(c))
            .collect();
        if !added.is_empty() {
            // One checkpoint for all its channels: a channel taken on now would start after
            // it, skipping that channel's earlier events.
            bail!(
                "consumer {:?} follows {}, not {}: its place is past that channel's earlier \
                 events, which it would skip; use another consumer name for it (or drop this \
                 one with `pgnotify consumers --drop` to start over)",
                self.name,
                stored.join(", "),
                added
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if stored.len() > self.settings.channels.len() {
            client
                .execute(statements::NARROW, &[&self.name, &self.settings.channels])
                .map_err(|e| durable::sql_error("could not update the consumer", &e))?;
        }
        self.registered.store(true, Ordering::Relaxed);
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(WAKE_CHANNEL)))
            .map_err(|e| lost_or_sql("could not LISTEN for wake-ups", &e, target))?;
        *self
            .listening_on
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(target.clone());
        let channels = self.settings.channels.join(", ");
        match (new, first) {
            (true, _) => msg::info(&format!(
                "consumer {:?} is new: it reads every stored event on {channels}",
                self.name
            )),
            (false, true) => msg::info(&format!(
                "consumer {:?} reads {channels} after event {} (transaction {})",
                self.name, checkpoint.id, checkpoint.xid
            )),
            (false, false) => {}
        }
        Ok(checkpoint)
    }

    /// Reads, queues and acknowledges until the run ends or the connection is lost.
    fn serve(&self, session: Session, at: &mut Position) -> Ended {
        let Session {
            mut client, target, ..
        } = session;
        let lost = |what: &str, e: &postgres::Error| -> Ended {
            match lost_or_sql(what, e, &target).downcast::<ConnectionError>() {
                Ok(lost) => Ended::Lost(lost.0),
                Err(other) => Ended::Fatal(other),
            }
        };
        let read = match client.prepare_typed(
            statements::READ,
            &[
                Type::TEXT,
                Type::INT8,
                Type::TEXT_ARRAY,
                Type::INT8,
                Type::INT8,
            ],
        ) {
            Ok(read) => read,
            Err(e) => return lost("could not read the outbox", &e),
        };
        let channels = &self.settings.channels;
        let mut upkeep = Upkeep::new(self.acks.lock().stored);
        let mut held_since: Option<Instant> = None;
        let mut held_said: Option<Instant> = None;
        loop {
            let closing = self.closing();
            if let Err(ended) = upkeep.run(self, &mut client, closing, &lost) {
                return ended;
            }
            if closing {
                return Ended::Closed;
            }
            let rows = match client.query(
                &read,
                &[&at.xid.to_string(), &at.id, channels, &BATCH, &BATCH_BYTES],
            ) {
                Ok(rows) => rows,
                Err(e) => return lost("could not read the outbox", &e),
            };
            let count = rows.len() as i64;
            if !rows.is_empty() {
                let received_at = jiff::Timestamp::now();
                let mut batch = Vec::with_capacity(rows.len());
                for row in rows {
                    let stored = match position(row.get(0), row.get(1)) {
                        Ok(p) => p,
                        Err(e) => return Ended::Fatal(e),
                    };
                    batch.push(Notification {
                        channel: row.get(2),
                        payload: row.get(3),
                        exact_payload: None,
                        pid: row.get(4),
                        received_at,
                        fetched: None,
                        stored: Some(stored),
                    });
                }
                // Fewer than asked for is all there is, unless the next did not fit in
                // BATCH_BYTES: then the rows read hold at least that much.
                let bytes: usize = batch.iter().map(|n| n.payload.len()).sum();
                let full = count == BATCH || bytes as i64 >= BATCH_BYTES;
                // Reading resumes after this batch only once it is queued: a session lost
                // while it waits for room must read it again.
                let last = batch.last().and_then(|n| n.stored);
                // Waits for room (the outbox keeps what the output has not taken), storing
                // what the output acknowledges meanwhile.
                let mut batch = Some(batch);
                while let Some(waiting) = batch.take() {
                    batch = self.queue.offer(waiting, SLICE);
                    if batch.is_some() {
                        let closing = self.closing();
                        if let Err(ended) = upkeep.run(self, &mut client, closing, &lost) {
                            return ended;
                        }
                        if closing {
                            return Ended::Closed;
                        }
                    }
                }
                if let Some(last) = last {
                    *at = last;
                }
                if full {
                    continue;
                }
            }
            let held: i64 = match client.query_one(statements::HELD, &[channels]) {
                Ok(row) => row.get(0),
                Err(e) => return lost("could not read the outbox", &e),
            };
            if held > 0 {
                let since = *held_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= HELD_SAY_AFTER
                    && held_said.is_none_or(|t| t.elapsed() >= HELD_SAY_EVERY)
                {
                    say_blocker(&mut client, held);
                    held_said = Some(Instant::now());
                }
            } else {
                held_since = None;
                held_said = None;
            }
            let wait = if held > 0 { HELD_POLL } else { IDLE_POLL };
            if let Err(e) = wait_for_wakeup(&mut client, wait, || {
                self.closing() || self.acks.mark.get() > upkeep.stored
            }) {
                return lost("lost the connection while waiting", &e);
            }
        }
    }
}

/// The consumer's upkeep between reads: its checkpoint stored, its liveness, retention.
struct Upkeep {
    /// The checkpoint as stored.
    stored: Option<Position>,
    last_store: Instant,
    last_seen: Instant,
    last_prune: Instant,
    /// The checkpoint when this consumer last deleted what all had read.
    pruned_at: Option<Position>,
}

impl Upkeep {
    fn new(stored: Option<Position>) -> Upkeep {
        let now = Instant::now();
        Upkeep {
            stored,
            last_store: now,
            last_seen: now,
            last_prune: now,
            pruned_at: stored,
        }
    }

    /// Stores the checkpoint when it moved (at most every [`STORE_EVERY`], at once when
    /// `closing`), says the consumer is alive, deletes what every consumer has read.
    fn run(
        &mut self,
        replay: &Replay,
        client: &mut postgres::Client,
        closing: bool,
        lost: &dyn Fn(&str, &postgres::Error) -> Ended,
    ) -> Result<(), Ended> {
        if let Some(w) = replay.acks.mark.get()
            && self.stored.is_none_or(|s| s < w)
            && (closing || self.last_store.elapsed() >= STORE_EVERY)
        {
            match client.execute(
                statements::CHECKPOINT,
                &[&replay.name, &w.xid.to_string(), &w.id],
            ) {
                Ok(0) => {
                    return Err(Ended::Fatal(anyhow!(
                        "consumer {:?} was dropped while it ran (pgnotify consumers --drop); \
                         stopping",
                        replay.name
                    )));
                }
                Ok(_) => {
                    self.stored = Some(w);
                    replay.acks.stored(w);
                    self.last_store = Instant::now();
                    self.last_seen = self.last_store;
                }
                Err(e) => return Err(lost("could not store the checkpoint", &e)),
            }
        }
        if closing {
            return Ok(());
        }
        if self.last_seen.elapsed() >= SEEN_EVERY {
            client
                .execute(statements::SEEN, &[&replay.name])
                .map_err(|e| lost("could not update the consumer", &e))?;
            self.last_seen = Instant::now();
        }
        if self.stored != self.pruned_at && self.last_prune.elapsed() >= PRUNE_EVERY {
            // A few statements at most, so that reading goes on. A failure (a deadlock with
            // another consumer's prune, a statement timeout) is tried again next time.
            if let Err(e) = durable::prune(client, Some(10)) {
                match lost("could not delete acknowledged events", &e) {
                    Ended::Lost(why) => return Err(Ended::Lost(why)),
                    _ => msg::warn(&format!(
                        "could not delete acknowledged events (tried again in {} s): {}",
                        PRUNE_EVERY.as_secs(),
                        describe_pg_error(&e)
                    )),
                }
            }
            self.pruned_at = self.stored;
            self.last_prune = Instant::now();
        }
        Ok(())
    }
}

/// Waits up to `wait` for a wake-up, in slices, returning early when `stop` says so; takes
/// every wake-up already received.
fn wait_for_wakeup(
    client: &mut postgres::Client,
    wait: Duration,
    stop: impl Fn() -> bool,
) -> Result<(), postgres::Error> {
    let started = Instant::now();
    loop {
        let slice = SLICE.min(wait.saturating_sub(started.elapsed()));
        let mut notifications = client.notifications();
        let woken = notifications.timeout_iter(slice).next()?.is_some();
        // Wake-ups that came together count once.
        let mut rest = notifications.iter();
        while rest.next()?.is_some() {}
        if woken || started.elapsed() >= wait || stop() {
            return Ok(());
        }
    }
}

/// Says which open transaction holds delivery back.
fn say_blocker(client: &mut postgres::Client, held: i64) {
    let who = match client.query_opt(statements::BLOCKER, &[]) {
        Ok(Some(row)) => {
            let pid: i32 = row.get(0);
            let app: Option<String> = row.get(1);
            let age: Option<f64> = row.get(2);
            let age = age.map_or("an unknown time".to_owned(), |s| format!("{s:.0} s"));
            match pid {
                0 => format!("{} open for {age}", app.unwrap_or_default()),
                pid => format!(
                    "the transaction of pid {pid} ({}) open for {age}",
                    app.filter(|a| !a.is_empty())
                        .unwrap_or_else(|| "no application name".into())
                ),
            }
        }
        _ => "a transaction still open (its session is not visible to this role)".to_owned(),
    };
    let held = match held >= statements::HELD_COUNTED {
        true => "more than 10,000".to_owned(),
        false => held.to_string(),
    };
    msg::warn(&format!(
        "{held} committed events wait for {who}: durable delivery keeps transaction order, so \
         nothing committed after it began is delivered until it ends"
    ));
}

/// A position as the outbox stores it.
fn position(xid: String, id: i64) -> Result<Position> {
    let xid = xid
        .parse()
        .map_err(|_| anyhow!("the outbox holds a transaction id pgnotify cannot read: {xid:?}"))?;
    Ok(Position { xid, id })
}

/// A failed query: a lost connection ([`ConnectionError`]; a connection exception, class
/// 08, too), or an SQL error.
fn lost_or_sql(what: &str, e: &postgres::Error, target: &Target) -> anyhow::Error {
    let lost = pg::connection_lost(e) || e.code().is_some_and(|c| c.code().starts_with("08"));
    match lost {
        true => ConnectionError(format!(
            "{what}: lost the connection to {}: {}",
            target.describe(),
            describe_pg_error(e)
        ))
        .into(),
        false => durable::sql_error(what, e),
    }
}
