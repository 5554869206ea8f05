//! `notify`: send one notification, or one per line of stdin in batched transactions.
//!
//! Every payload travels as a bind parameter of `pg_notify($1, $2)` (`NOTIFY` takes only a
//! literal, and `pg_notify` takes the channel exactly as given); nothing is spliced into SQL.
//! Channel and payloads are checked before any round trip.

use crate::config::{Input, NotifySettings};
use crate::durable::{self, statements};
use crate::exit::{ConnectionError, Exit, TimedOut, UsageError};
use crate::msg;
use crate::pg::{
    self, ConnSettings, MAX_PAYLOAD_BYTES, Target, check_channel, check_payload, describe_pg_error,
};
use anyhow::{Context, Result, anyhow, bail};
use postgres::types::Type;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

const NOTIFY_ONE: &str = "SELECT pg_catalog.pg_notify($1, $2)";

/// One statement per batch: one round trip and one transaction for N notifications, in the
/// order of the array (a function scan over `unnest` yields elements in order).
const NOTIFY_MANY: &str = "SELECT pg_catalog.count(pg_catalog.pg_notify($1, p)) \
                           FROM pg_catalog.unnest($2::pg_catalog.text[]) AS p";

pub(crate) fn run(settings: NotifySettings, conn: &ConnSettings) -> Result<Exit> {
    check_channel(&settings.channel)?;
    match settings.timeout {
        None => send(settings, conn, &Progress::default()),
        Some(timeout) => send_within(settings, conn, timeout),
    }
}

/// Where a send is, for the message when `--timeout` runs out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Reading the payload, or the next lines, from standard input.
    #[default]
    Reading,
    Connecting,
    /// The notification, or a batch of lines, is sent and not yet answered.
    InFlight,
}

/// How far a send has got. Under `--timeout`, main stops it at the deadline: from then on no
/// batch is begun, so the message main gives is exactly what may have been committed.
#[derive(Default)]
struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    phase: Phase,
    /// Lines of `--lines` committed so far.
    sent: u64,
    stopped: bool,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        self.lock().phase = phase;
    }

    /// Marks a send as begun; false when the run has timed out (nothing more may go).
    fn begin_send(&self) -> bool {
        let mut state = self.lock();
        state.phase = Phase::InFlight;
        !state.stopped
    }

    fn sent(&self, lines: u64) {
        let mut state = self.lock();
        state.sent += lines;
        state.phase = Phase::Reading;
    }

    /// Stops the send and says what it had done.
    fn stop(&self) -> (Phase, u64) {
        let mut state = self.lock();
        state.stopped = true;
        (state.phase, state.sent)
    }
}

/// `--timeout`: the send runs on a thread of its own, and the main thread gives up at the
/// deadline, ending the run (the send's connection goes with the process). Connecting gets the
/// same bound as libpq's `connect_timeout`, so a server that accepts and never answers holds
/// nothing past it. A password is asked for before the clock starts (`-W`), never while it
/// runs: the run must not end with the terminal's echo off.
fn send_within(settings: NotifySettings, conn: &ConnSettings, timeout: Duration) -> Result<Exit> {
    pg::ask_password_first(conn)?;
    let conn = conn.attempts_within(timeout).without_prompt();
    let progress = Arc::new(Progress::default());
    let lines = matches!(settings.input, Input::Lines { .. });
    let (tx, rx) = mpsc::channel();
    let shared = Arc::clone(&progress);
    let started = std::time::Instant::now();
    std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            let _ = tx.send(send(settings, &conn, &shared));
        })
        .context("could not start the sending thread")?;
    let result = rx.recv_timeout(timeout);
    let (phase, sent) = progress.stop();
    match result {
        // A failure that comes at the deadline is the deadline's: on a loaded machine the
        // attempt's own bound (the same time, started a moment later) can be heard first.
        Ok(Err(_)) if started.elapsed() >= timeout => {}
        Ok(result) => return result,
        Err(_) => {}
    }
    let done = match (phase, lines, sent) {
        (Phase::Reading, false, _) => {
            "still reading the payload from standard input: nothing was sent".to_owned()
        }
        (Phase::Connecting, _, _) => "still connecting: nothing was sent".to_owned(),
        (Phase::InFlight, false, _) => "the notification was sent but not confirmed: it may \
                                        or may not have been committed"
            .to_owned(),
        (Phase::Reading, true, 0) => "still reading standard input: nothing was sent".to_owned(),
        (Phase::Reading, true, n) => format!(
            "the first {n} lines were sent and committed; nothing after them was (it was \
             reading standard input)"
        ),
        (Phase::InFlight, true, 0) => {
            "no batch was confirmed; the one in flight may or may not have been committed"
                .to_owned()
        }
        (Phase::InFlight, true, n) => format!(
            "the first {n} lines were sent and committed; the batch in flight may or may not \
             have been, and nothing after it was"
        ),
    };
    Err(TimedOut(format!(
        "timed out after {} (--timeout): {done}",
        humanize(timeout)
    ))
    .into())
}

/// `1.5 s`, `250 ms`.
fn humanize(d: Duration) -> String {
    match d.as_secs() {
        0 => format!("{} ms", d.as_millis()),
        _ => format!("{:.1} s", d.as_secs_f64()),
    }
}

/// The limits a payload is held to: PostgreSQL's for a notification, or the outbox's for a
/// durable event, whose payload is a row and not a notification.
#[derive(Clone, Copy)]
struct Limits {
    durable: bool,
}

impl Limits {
    fn max(self) -> usize {
        match self.durable {
            true => durable::MAX_PAYLOAD_BYTES,
            false => MAX_PAYLOAD_BYTES,
        }
    }

    fn check(self, payload: &str) -> Result<()> {
        match self.durable {
            false => check_payload(payload),
            true if payload.len() > durable::MAX_PAYLOAD_BYTES => bail!(
                "payload is {} bytes long; a durable event holds at most {} bytes",
                payload.len(),
                durable::MAX_PAYLOAD_BYTES
            ),
            true if payload.contains('\0') => {
                bail!("payload contains a NUL byte, which PostgreSQL text cannot hold")
            }
            true => Ok(()),
        }
    }

    /// How the limit reads in an error.
    fn describe(self) -> String {
        match self.durable {
            false => format!("PostgreSQL's limit is {MAX_PAYLOAD_BYTES} bytes (less than 8000)"),
            true => format!(
                "a durable event holds at most {} bytes",
                durable::MAX_PAYLOAD_BYTES
            ),
        }
    }
}

fn send(settings: NotifySettings, conn: &ConnSettings, progress: &Progress) -> Result<Exit> {
    let limits = Limits {
        durable: settings.durable,
    };
    let payload = match settings.input {
        Input::Lines { batch } => {
            return send_lines(&settings.channel, batch, limits, conn, progress);
        }
        Input::Argument(payload) => {
            // A PAYLOAD argument is malformed on its face: a usage error, as a bad channel is;
            // a payload read from stdin is data, and a bad one a runtime error.
            limits
                .check(&payload)
                .map_err(|e| UsageError(format!("{e:#}")))?;
            payload
        }
        Input::Empty => String::new(),
        Input::Stdin => {
            let payload = read_stdin(limits)?;
            limits.check(&payload)?;
            payload
        }
    };
    progress.set(Phase::Connecting);
    let pg::Connection {
        mut client, target, ..
    } = pg::connect(conn)?;
    if limits.durable {
        durable_session(&mut client, &target)?;
    }
    if !progress.begin_send() {
        return Ok(Exit::Timeout);
    }
    let (sql, what) = match limits.durable {
        true => (statements::STORE_ONE, "could not store the durable event"),
        false => (NOTIFY_ONE, "could not send the notification"),
    };
    client
        .execute_typed(
            sql,
            &[(&settings.channel, Type::TEXT), (&payload, Type::TEXT)],
        )
        .map_err(|e| send_error(what, &e, &target))?;
    Ok(Exit::Success)
}

/// `--durable`: the schema in place, and commits that survive a server crash whatever the
/// server's default (`synchronous_commit`): status 0 means the event is stored.
fn durable_session(client: &mut postgres::Client, target: &Target) -> Result<()> {
    client
        .batch_execute("SET synchronous_commit = on")
        .map_err(|e| send_error("could not set up the session", &e, target))?;
    durable::ensure(client)
}

/// A failed send: an SQL error (status 1), or a lost connection (status 3, naming the server).
fn send_error(what: &str, e: &postgres::Error, target: &Target) -> anyhow::Error {
    if pg::connection_lost(e) {
        let why = describe_pg_error(e);
        return ConnectionError(format!(
            "{what}: lost the connection to {}: {why}",
            target.describe()
        ))
        .into();
    }
    durable::sql_error(what, e)
}

/// How much of stdin is read for one payload: enough to report an oversized payload's exact
/// size in the usual cases, little enough that `< /dev/zero` fails fast.
const STDIN_LIMIT: usize = 64 * 1024;

/// All of stdin as the payload, with one trailing newline removed.
fn read_stdin(limits: Limits) -> Result<String> {
    let limit = match limits.durable {
        true => limits.max() + 2,
        false => STDIN_LIMIT,
    };
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit as u64)
        .read_to_end(&mut bytes)
        .context("could not read the payload from standard input")?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.len() >= limit - usize::from(limits.durable) {
        anyhow::bail!(
            "the payload on standard input is more than {} bytes long; {}",
            limit - 1 - usize::from(limits.durable),
            limits.describe()
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "the payload on standard input is not valid UTF-8 (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Lines of stdin, read and checked one batch at a time.
struct LineReader<R> {
    reader: BufReader<R>,
    batch: usize,
    line: u64,
    buf: Vec<u8>,
    limits: Limits,
    /// Whether more input can be read without waiting.
    ready: fn() -> bool,
}

impl<R: Read> LineReader<R> {
    /// The next batch of payloads (empty at the end of input), every one already checked.
    /// A batch ends early when no more input is ready, so `tail -f log | pgnotify notify
    /// --lines ch` sends each line as it comes instead of waiting for a full batch.
    fn next_batch(&mut self) -> Result<Vec<String>> {
        let mut payloads = Vec::with_capacity(self.batch);
        while payloads.len() < self.batch {
            if !payloads.is_empty() && self.reader.buffer().is_empty() && !(self.ready)() {
                break;
            }
            self.buf.clear();
            // At most one byte past the longest line that could be sent and its newline (so
            // that the error for a line one byte too long can still give its exact size): an
            // endless line is refused once it is that long, never read whole into memory.
            let line_limit = self.limits.max() + 2;
            let read = (&mut self.reader)
                .take(line_limit as u64)
                .read_until(b'\n', &mut self.buf)
                .context("could not read standard input")?;
            if read == 0 {
                break;
            }
            self.line += 1;
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            } else if read == line_limit {
                bail!(
                    "line {}: payload is more than {} bytes long; {}",
                    self.line,
                    line_limit - 1,
                    self.limits.describe()
                );
            }
            let payload = String::from_utf8(std::mem::take(&mut self.buf))
                .map_err(|_| anyhow!("line {} is not valid UTF-8", self.line))?;
            self.limits
                .check(&payload)
                .with_context(|| format!("line {}", self.line))?;
            payloads.push(payload);
        }
        Ok(payloads)
    }
}

fn send_lines(
    channel: &str,
    batch: usize,
    limits: Limits,
    conn: &ConnSettings,
    progress: &Progress,
) -> Result<Exit> {
    let stdin = std::io::stdin().lock();
    let mut lines = LineReader {
        reader: BufReader::with_capacity(256 * 1024, stdin),
        batch,
        line: 0,
        buf: Vec::new(),
        limits,
        ready: stdin_ready,
    };
    let mut sent: u64 = 0;
    let mut payloads = lines.next_batch().map_err(|e| unsent(e, sent))?;
    progress.set(Phase::Connecting);
    let pg::Connection {
        mut client, target, ..
    } = pg::connect(conn)?;
    if limits.durable {
        durable_session(&mut client, &target).map_err(|e| unsent(e, sent))?;
    }
    let sql = match limits.durable {
        true => statements::STORE_MANY,
        false => NOTIFY_MANY,
    };
    let statement = client
        .prepare_typed(sql, &[Type::TEXT, Type::TEXT_ARRAY])
        .map_err(|e| {
            unsent(
                send_error("could not prepare the notifications", &e, &target),
                sent,
            )
        })?;
    let mut folded = 0;
    while !payloads.is_empty() {
        // Durable events are rows: each line is one, repeated or not.
        if !limits.durable {
            folded += repeated(&payloads);
        }
        if !progress.begin_send() {
            return Ok(Exit::Timeout);
        }
        client
            .query_one(&statement, &[&channel, &payloads])
            .map_err(|e| {
                unsent(
                    send_error("could not send the notifications", &e, &target),
                    sent,
                )
            })?;
        sent += payloads.len() as u64;
        progress.sent(payloads.len() as u64);
        payloads = lines.next_batch().map_err(|e| unsent(e, sent))?;
    }
    if folded > 0 {
        msg::warn(&format!(
            "{folded} lines repeated a payload already sent in the same transaction; PostgreSQL \
             delivers each channel+payload pair once per transaction (use --batch 1 to send every line)"
        ));
    }
    let what = match limits.durable {
        true => "durable events",
        false => "notifications",
    };
    msg::info(&format!("sent {sent} {what} on {channel:?}"));
    Ok(Exit::Success)
}

/// True when standard input has data (or its end) to read without waiting.
fn stdin_ready() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&stdin),
        PollFlags::POLLIN,
    )];
    poll(&mut fds, PollTimeout::ZERO).map_or(true, |n| n > 0)
}

/// Says what was committed before a failure, so a script knows where to resume.
fn unsent(err: anyhow::Error, sent: u64) -> anyhow::Error {
    match sent {
        0 => err.context("nothing was sent"),
        n => err.context(format!(
            "the first {n} lines were sent and committed; nothing after them was"
        )),
    }
}

/// How many payloads of a batch repeat an earlier one of the same batch (PostgreSQL delivers
/// identical channel+payload pairs of one transaction once).
fn repeated(payloads: &[String]) -> usize {
    let mut seen = HashSet::with_capacity(payloads.len());
    payloads.iter().filter(|p| !seen.insert(p.as_str())).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(input: &str, size: usize) -> Vec<Result<Vec<String>, String>> {
        let mut lines = LineReader {
            reader: BufReader::new(input.as_bytes()),
            batch: size,
            line: 0,
            buf: Vec::new(),
            limits: Limits { durable: false },
            ready: || true,
        };
        let mut out = Vec::new();
        loop {
            match lines.next_batch() {
                Ok(b) if b.is_empty() => return out,
                Ok(b) => out.push(Ok(b)),
                Err(e) => {
                    out.push(Err(format!("{e:#}")));
                    return out;
                }
            }
        }
    }

    #[test]
    fn lines_are_split_and_batched() {
        let got = batches("a\nb\n\nc", 2);
        assert_eq!(
            got,
            vec![
                Ok(vec!["a".into(), "b".into()]),
                Ok(vec!["".into(), "c".into()])
            ]
        );
        assert_eq!(batches("x\r\n", 5), vec![Ok(vec!["x\r".to_string()])]);
    }

    #[test]
    fn a_bad_line_fails_its_batch() {
        let big = "y".repeat(8000);
        let got = batches(&format!("a\nb\nc\n{big}\n"), 2);
        assert_eq!(got[0], Ok(vec!["a".to_string(), "b".to_string()]));
        let err = got[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("line 4: payload is 8000 bytes long"),
            "{err}"
        );
    }

    #[test]
    fn an_endless_line_is_refused_once_it_is_too_long() {
        let mut lines = LineReader {
            reader: BufReader::new(std::io::repeat(b'x')),
            batch: 10,
            line: 0,
            buf: Vec::new(),
            limits: Limits { durable: false },
            ready: || true,
        };
        let err = format!("{:#}", lines.next_batch().unwrap_err());
        assert!(
            err.starts_with("line 1: payload is more than 8000 bytes"),
            "{err}"
        );
        assert!(lines.buf.capacity() < 64 * 1024, "{}", lines.buf.capacity());
    }

    #[test]
    fn repeats_within_a_batch_are_counted() {
        let p = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(repeated(&p(&["a", "b", "a", "a"])), 2);
        assert_eq!(repeated(&p(&["a", "b"])), 0);
    }
}
