//! The notification source that `listen` and `pipe` share: a thread that connects, LISTENs on
//! every channel, reads notifications into the bounded event queue, proves the connection
//! alive with a heartbeat, and reconnects when it is lost.
//!
//! Owns: LISTEN, reading, liveness, reconnecting, gap events. Does not own: output, stopping.
//!
//! - The connection stays in autocommit and never opens a transaction: a session inside one
//!   is sent nothing until it ends, and meanwhile holds back the server's queue for everyone.
//! - After a loss it reconnects at once, then after 0.1 s, doubling up to 10 s, with jitter;
//!   it re-LISTENs on every channel and only then reports the gap (sqlx#1102: reporting before
//!   LISTEN is back hides losses). `--max-downtime` bounds how long it tries.
//! - The heartbeat (`heartbeat`) notices a hung backend, a black-holed network or a connection
//!   that no longer delivers notifications within `--heartbeat` + 5 s; the session is replaced.

use super::control::Control;
use super::heartbeat::Heartbeat;
use super::queue::{Event, Queue};
use crate::backoff::backoff;
use crate::deadline;
use crate::exit::{ConnectionError, Rejected};
use crate::msg;
use crate::notification::{Gap, GapKind, Notification};
use crate::pg::{self, ConnSettings, Listener, Target, describe_pg_error, quote_ident};
use crate::readiness::Notifier;
use crate::sanitize::escape_controls;
use crate::stats;
use anyhow::{Context, Result, anyhow};
use postgres::SimpleQueryMessage;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long LISTEN may take to be answered when `connect_timeout` sets no bound.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// An attempt that failed faster than this was answered by the server (or its host) at once,
/// and the next one waits at most this long.
const ANSWERED_AT_ONCE: Duration = Duration::from_secs(1);
/// How often stderr says that reconnecting still fails (without `-v`).
const STILL_TRYING_EVERY: Duration = Duration::from_secs(60);
/// A bound on each reconnection attempt when `connect_timeout` sets none.
const RECONNECT_TIMEOUT_SECS: u64 = 10;

/// How the source behaves.
#[derive(Clone, Debug)]
pub(crate) struct SourceSettings {
    /// The channels, exactly as given (the console changes them as it runs: [`Control`]).
    pub(crate) channels: Vec<String>,
    /// Say on a terminal's stderr when listening begins (not under the console, which says
    /// it itself).
    pub(crate) greet: bool,
    /// Retry the first connection too, instead of failing at once (`--wait`).
    pub(crate) wait: bool,
    /// Give up (status 3) after being disconnected this long (`--max-downtime`).
    pub(crate) max_downtime: Option<Duration>,
    /// The heartbeat interval; `None` turns it off.
    pub(crate) heartbeat: Option<Duration>,
    /// The service manager, told once every LISTEN has committed (`NOTIFY_SOCKET`).
    pub(crate) notifier: Notifier,
}

/// Connects (unless `--wait`: then the thread does), and starts the reading thread.
///
/// Without `--wait`, returns once every LISTEN has committed: a notification committed after
/// this returns is received (`LISTEN` takes effect when its transaction commits; a
/// notification committed before that is not delivered).
/// The server the source listens on now (`--fetch` reads rows there, and nowhere else).
pub(crate) type ListeningOn = Arc<Mutex<Option<Target>>>;

pub(crate) fn start(
    conn: &ConnSettings,
    settings: SourceSettings,
    queue: Arc<Queue>,
    listening_on: ListeningOn,
    control: Arc<Control>,
) -> Result<()> {
    let source = Source {
        conn: conn.clone(),
        listening_on,
        control,
        heartbeat_channel: format!("pgnotify.heartbeat.{}", std::process::id()),
        settings,
        queue,
        greeted: AtomicBool::new(false),
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
    conn: ConnSettings,
    listening_on: ListeningOn,
    /// The channels, and what the console asks of the connection.
    control: Arc<Control>,
    settings: SourceSettings,
    heartbeat_channel: String,
    queue: Arc<Queue>,
    /// Whether the person at the terminal was told it listens.
    greeted: AtomicBool,
}

/// An open, listening connection.
struct Session {
    listener: Listener,
    server: String,
    /// When every LISTEN had committed: the first evidence that the stream is complete.
    listening_since: jiff::Timestamp,
    /// Notifications that arrived with LISTEN's answer still to come (they prove it committed).
    early: Vec<Notification>,
    /// The channels LISTENed on at the start (for the message once LISTEN is answered).
    channels: Vec<String>,
}

/// When and why the stream stopped being complete.
struct Outage {
    since: Instant,
    from: jiff::Timestamp,
    reason: String,
    attempts: u32,
    /// How long the last attempt took: a quick refusal is retried soon.
    last_attempt: Duration,
    /// When stderr last said the source is still trying.
    said: Instant,
}

impl Source {
    fn run(self, first: Option<Session>) {
        // Reconnects outlive --timeout: once a notification came, listen keeps running.
        let reconnect_conn = self
            .conn
            .without_deadline()
            .with_default("connect_timeout", &RECONNECT_TIMEOUT_SECS.to_string());
        // Once it has run, a listener never stops at a prompt: nobody may be there to answer
        // it (another host of the list, a server that newly wants a password). Before that
        // (--wait at a terminal), asking is what starting it asked for.
        let unattended = reconnect_conn.without_prompt();
        let mut session = first;
        let mut outage = session.is_none().then(|| {
            Outage::new(
                "waiting for the server (--wait)".into(),
                jiff::Timestamp::now(),
            )
        });
        let mut reported = session.is_some();
        loop {
            let current = match session.take() {
                Some(current) => current,
                None => match self.timed_open(
                    if reported {
                        &unattended
                    } else {
                        &reconnect_conn
                    },
                    outage.as_mut(),
                ) {
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
                        if !self.retry(down, &e, reported) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let (reason, evidence) = self.read(current);
            self.control.disconnected();
            msg::warn(&format!("{reason}; reconnecting"));
            self.settings
                .notifier
                .status(&format!("{reason}; reconnecting"));
            outage = Some(Outage::new(reason, evidence));
        }
    }

    /// `open`, noting in the outage how long the attempt took.
    fn timed_open(&self, conn: &ConnSettings, outage: Option<&mut Outage>) -> Result<Session> {
        let started = Instant::now();
        let result = self.open(conn);
        if let Some(down) = outage {
            down.last_attempt = started.elapsed();
        }
        result
    }

    /// Waits before the next attempt; false when the run must end: the server refused for
    /// good (a wrong password, no such database: retrying cannot help), or `--max-downtime`
    /// is exhausted. Giving up after a stream was running writes a last gap record first, with
    /// no end (`until` null): a stream appended to a file must never look complete across the
    /// loss.
    ///
    /// A server that answers at once (connection refused, starting up, too many connections)
    /// is tried again within a second, so that a restart loses as little as possible; the
    /// backoff up to 10 s is for attempts that time out. One stderr line per attempt with
    /// `-v`; otherwise the first failure, then one line a minute.
    fn retry(&self, down: &mut Outage, error: &anyhow::Error, reported: bool) -> bool {
        let elapsed = down.since.elapsed();
        let rejected = error.chain().any(|c| c.is::<Rejected>());
        let exhausted = self.settings.max_downtime.is_some_and(|max| elapsed >= max);
        if rejected || exhausted {
            let why = match rejected {
                true => "the server refused the connection for good".to_owned(),
                false => format!(
                    "gave up reconnecting after {} attempts over {:.1} s (--max-downtime)",
                    down.attempts + 1,
                    elapsed.as_secs_f64()
                ),
            };
            if reported {
                self.queue.push(Event::Gap(Gap {
                    kind: GapKind::Reconnect,
                    reason: format!("{}; {why}", down.reason),
                    from: down.from,
                    until: None,
                    dropped: 0,
                }));
            }
            let fatal = match rejected {
                true => Rejected(format!("{error:#}")).into(),
                false => ConnectionError(format!("{why}: {error:#}")).into(),
            };
            self.queue.push(Event::Fatal(fatal));
            return false;
        }
        let attempt = down.attempts + 1;
        // --wait before the first connection connects; afterwards, it reconnects.
        let (verb, noun) = match reported {
            true => ("reconnect", "reconnection"),
            false => ("connect", "connection"),
        };
        if down.attempts == 0 {
            msg::warn(&format!("could not {verb} yet: {error:#}; retrying"));
            down.said = Instant::now();
        } else if down.said.elapsed() >= STILL_TRYING_EVERY {
            msg::warn(&format!(
                "still trying to {verb} (attempt {attempt}, down {:.0} s): {error:#}",
                elapsed.as_secs_f64()
            ));
            down.said = Instant::now();
        } else {
            msg::info(&format!("{noun} attempt {attempt} failed: {error:#}"));
        }
        let mut pause = backoff(down.attempts);
        if down.last_attempt < ANSWERED_AT_ONCE {
            pause = pause.min(ANSWERED_AT_ONCE);
        }
        if let Some(max) = self.settings.max_downtime {
            pause = pause.min(max.saturating_sub(elapsed));
        }
        std::thread::sleep(pause);
        down.attempts += 1;
        true
    }

    fn report_gap(&self, outage: &Outage) {
        stats::reconnected();
        let down = outage.since.elapsed();
        msg::warn(&format!(
            "reconnected after {:.1} s; notifications sent in between are lost",
            down.as_secs_f64()
        ));
        self.queue.push(Event::Gap(Gap {
            kind: GapKind::Reconnect,
            reason: outage.reason.clone(),
            from: outage.from,
            until: Some(jiff::Timestamp::now()),
            dropped: 0,
        }));
    }

    /// Connects and LISTENs on every channel (and the heartbeat's), in one round trip. Returns
    /// once LISTEN has committed: when its answer comes, or a notification before it (the
    /// server sends none inside a transaction); the answer is then still in flight.
    ///
    /// A server where LISTEN fails or never answers is passed over like one that refused: the
    /// next server of the list is tried, so that one hung host cannot hold the others back.
    fn open(&self, conn: &ConnSettings) -> Result<Session> {
        let mut rest = conn.clone();
        let mut failures: Vec<String> = Vec::new();
        loop {
            let connection = match pg::connect_as::<Listener>(&rest) {
                Ok(connection) => connection,
                Err(e) if failures.is_empty() => return Err(e),
                Err(e) => {
                    failures.push(format!("{e:#}"));
                    return Err(ConnectionError(failures.join("; ")).into());
                }
            };
            let (target, index) = (connection.target.clone(), connection.index);
            match self.listen_on(conn, connection) {
                Ok(session) => {
                    *self
                        .listening_on
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(target);
                    // Every LISTEN has committed: a notification committed from now on is
                    // received, so this is when a service is ready (READY=1 the first time).
                    self.settings
                        .notifier
                        .ready(&listening_status(session.channels.len()));
                    return Ok(session);
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
            // By position, not by name: a host may be listed twice.
            match rest.after(index + 1) {
                Some(next) => rest = next,
                None => return Err(ConnectionError(failures.join("; ")).into()),
            }
        }
    }

    /// LISTENs on a new connection: see [`Source::open`].
    fn listen_on(
        &self,
        conn: &ConnSettings,
        connection: pg::Connection<Listener>,
    ) -> Result<Session> {
        let pg::Connection {
            client: mut listener,
            target,
            ..
        } = connection;
        let channels = self.control.channels();
        let mut sql: String = channels
            .iter()
            .chain(self.heartbeat())
            .map(|c| format!("LISTEN {};", quote_ident(c)))
            .collect();
        sql.push_str("SELECT pg_catalog.pg_backend_pid()");
        listener.send_simple(sql);
        let failed = |why: String| {
            ConnectionError(format!("could not listen on {}: {why}", target.describe()))
        };
        // A server that accepted the connection and then hangs must not hold the start
        // forever: connect_timeout, or 30 s, for LISTEN's answer, and never past --timeout.
        let deadline = pg::connect_timeout_of(conn)
            .or(Some(LISTEN_TIMEOUT))
            .and_then(deadline::after);
        let deadline = match conn.deadline() {
            Some(run) => deadline.map(|d| d.min(run)),
            None => deadline,
        };
        loop {
            let wait = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            let read = listener.read(wait);
            let early: Vec<Notification> = read.notifications.into_iter().map(received).collect();
            if let Some(answer) = read.answer {
                let messages = answer.map_err(|e| failed(describe_pg_error(&e)))?;
                self.say_listening(&channels, &messages);
            } else if let Some(why) = read.ended {
                return Err(failed(why).into());
            } else if early.is_empty() {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(failed(
                        "no answer in time (connect_timeout, else 30 s; --timeout)".into(),
                    )
                    .into());
                }
                continue;
            }
            self.control
                .connected(listener.waker(), target.describe(), &channels);
            return Ok(Session {
                listener,
                server: target.describe(),
                listening_since: jiff::Timestamp::now(),
                early,
                channels,
            });
        }
    }

    /// Says on stderr what LISTEN's answer tells: the channels and the server process.
    fn say_listening(&self, channels: &[String], messages: &[SimpleQueryMessage]) {
        let pid = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0)?.parse::<i32>().ok(),
            _ => None,
        });
        let names: Vec<String> = channels
            .iter()
            .map(|c| escape_controls(&quote_ident(c)).into_owned())
            .collect();
        let names = match names.is_empty() {
            true => "no channel yet".to_owned(),
            false => names.join(", "),
        };
        msg::info(&format!(
            "listening on {names} (server process {}){}",
            pid.unwrap_or_default(),
            case_hint(channels)
        ));
        // A person at a terminal sees that it works before any event comes, once, as psql
        // prints LISTEN.
        // The console says it listens in its banner; with --wait, the banner came first, so
        // the connection arriving is a line of its own.
        if !self.settings.greet
            && self.settings.wait
            && !msg::verbose()
            && !self.greeted.swap(true, Ordering::Relaxed)
        {
            msg::note(&format!(
                "connected: listening on {names} (server process {})",
                pid.unwrap_or_default()
            ));
        }
        if self.settings.greet
            && !msg::verbose()
            && std::io::stderr().is_terminal()
            && !self.greeted.swap(true, Ordering::Relaxed)
        {
            msg::note(&format!(
                "listening on {names} (Ctrl-C to stop){}",
                case_hint(channels)
            ));
        }
    }

    /// The heartbeat's own channel, when it beats.
    fn heartbeat(&self) -> Option<&String> {
        self.settings.heartbeat.map(|_| &self.heartbeat_channel)
    }

    /// Reads until the connection is lost, and says why and since when the stream may be
    /// incomplete. Besides why, returns the last evidence that the connection delivered
    /// everything committed until then: LISTEN committing, or a heartbeat answered (the server
    /// sends what is pending before it answers a query). A notification is no such evidence:
    /// its commit time is unknown, and one committed just after it may be what the connection
    /// lost. Whatever was committed after the evidence may be lost, so the gap starts there,
    /// not when the loss was noticed.
    ///
    /// Nothing is read while a batch waits for room in the queue: the server waits, and memory
    /// holds the queue and one batch, whatever the backlog on the server.
    fn read(&self, mut session: Session) -> (String, jiff::Timestamp) {
        let server = session.server.clone();
        let mut evidence = session.listening_since;
        let lost =
            |why: String, evidence| (format!("lost the connection to {server}: {why}"), evidence);
        let mut beat = Heartbeat::new(self.settings.heartbeat);
        // LISTEN's answer is still in flight when notifications came before it: it gets the
        // heartbeat's deadline.
        let mut listen_answer_due = session.listener.busy();
        if listen_answer_due {
            beat.await_answer("LISTEN", session.listening_since);
        }
        let mut batch = std::mem::take(&mut session.early);
        let mut failure = None;
        // A request of the console's is in flight: the next answer is its.
        let mut asked = false;
        loop {
            // What arrived is delivered before any failure is acted on: nothing received is
            // lost, whatever came with it.
            if !batch.is_empty() {
                beat.traffic();
                let batch = beat.filter(std::mem::take(&mut batch), &self.heartbeat_channel);
                let pushing = Instant::now();
                if !batch.is_empty()
                    && let Err(why) = self.queue.push_notifications(batch)
                {
                    self.end_run_for_overflow(why);
                }
                // Time spent waiting for room in the queue is not the server's: the heartbeat's
                // deadlines move by it, or a slow output would look like a dead connection.
                beat.postpone(pushing.elapsed());
            }
            if let Some(why) = failure.take() {
                return lost(why, evidence);
            }
            if let Err(why) = beat.check(&mut session.listener, &self.heartbeat_channel) {
                return lost(why, evidence);
            }
            // The console's requests take turns with the heartbeat's on the one connection.
            if !asked
                && !listen_answer_due
                && beat.idle()
                && !session.listener.busy()
                && self.control.send_next(&mut session.listener)
            {
                asked = true;
                beat.await_answer("a request of the console's", jiff::Timestamp::now());
            }
            let read = session.listener.read(beat.wait());
            batch = read.notifications.into_iter().map(received).collect();
            if let Some(answer) = read.answer {
                if std::mem::take(&mut listen_answer_due) {
                    match answer {
                        Ok(messages) => {
                            self.say_listening(&session.channels, &messages);
                            let _ = beat.answered(Ok(Vec::new()));
                        }
                        Err(e) => failure = Some(describe_pg_error(&e)),
                    }
                } else if std::mem::take(&mut asked) {
                    // Like the heartbeat's, its answer comes after everything sent before.
                    if let Ok(Some(since)) = beat.answered(Ok(Vec::new())) {
                        evidence = evidence.max(since);
                    }
                    self.control.answered(answer);
                } else {
                    match beat.answered(answer) {
                        Ok(Some(asked)) => evidence = evidence.max(asked),
                        Ok(None) => {}
                        Err(why) => failure = Some(why),
                    }
                }
            }
            if let Some(why) = read.ended {
                failure = failure.or(Some(why));
            }
        }
    }
}

impl Source {
    /// `--on-overflow exit`: the main loop ends the run once it has completed the line it is
    /// writing, so the output ends with a whole line; into a pipe whose reader takes nothing,
    /// it gives up waiting at a line boundary. Only main ends the process: this thread reads
    /// no more.
    fn end_run_for_overflow(&self, why: String) -> ! {
        msg::warn(&format!("{why}; ending the run"));
        self.queue.push(Event::Overflowed(anyhow!(why)));
        loop {
            std::thread::park();
        }
    }
}

impl Outage {
    /// An outage noticed now, of a stream last known complete at `from`.
    fn new(reason: String, from: jiff::Timestamp) -> Outage {
        Outage {
            since: Instant::now(),
            from,
            reason,
            attempts: 0,
            last_attempt: Duration::ZERO,
            said: Instant::now(),
        }
    }
}

/// For channel names with capitals: psql's unquoted `NOTIFY Orders` goes to `orders`, so its
/// events never arrive here; said where pgnotify says what it listens on.
pub(crate) fn case_hint(channels: &[String]) -> String {
    // PostgreSQL folds unquoted names in ASCII only (`Ärger` stays `Ärger`), and only a name
    // that can be written unquoted at all is worth the hint.
    let foldable = |c: &str| {
        c.chars()
            .next()
            .is_some_and(|f| f.is_alphabetic() || f == '_')
            && c.chars()
                .all(|ch| ch.is_alphanumeric() || ch == '_' || ch == '$')
            && c.to_ascii_lowercase() != c
    };
    let Some(first) = channels.iter().find(|c| foldable(c)) else {
        return String::new();
    };
    let shown = escape_controls(first);
    let lower = escape_controls(&first.to_ascii_lowercase()).into_owned();
    format!(
        "; names are exact: psql's unquoted NOTIFY {shown} goes to \"{lower}\", not here \
         (quote it: NOTIFY {})",
        escape_controls(&quote_ident(first))
    )
}

/// The service manager's status line while listening.
fn listening_status(channels: usize) -> String {
    match channels {
        1 => "listening on 1 channel".to_owned(),
        n => format!("listening on {n} channels"),
    }
}

/// A notification from the server, stamped with the time it was read.
fn received(n: pg::Received) -> Notification {
    Notification {
        channel: n.channel,
        payload: n.payload,
        exact_payload: n.exact,
        pid: n.pid,
        received_at: jiff::Timestamp::now(),
        fetched: None,
        stored: None,
    }
}
