//! `--exec COMMAND`: run a command per notification instead of printing it.
//!
//! The command runs through `/bin/sh -c`, so it is found on PATH and may have arguments and
//! redirections; the notification never enters the command line (no quoting, no injection):
//! the payload arrives on the command's stdin and in `PGNOTIFY_PAYLOAD` (its exact bytes, also
//! when they are not UTF-8, from a SQL_ASCII database), with
//! `PGNOTIFY_CHANNEL` and `PGNOTIFY_PID`; with `--fetch`, a row read for an event is the
//! stdin instead, and `PGNOTIFY_FETCHED=1`. When notifications may have been lost, the command
//! runs once with `PGNOTIFY_GAP` set to `reconnect` or `overflow` and the gap record on stdin
//! (unless `--no-gap-records`). `--jobs N` runs up to N at once (default 1: one after the
//! other, in arrival order). Every child is waited for; a command that fails is reported on
//! stderr and the run goes on. While all jobs are busy, notifications wait in the source's
//! queue, where `--on-overflow` applies.

use super::Sink;
use crate::format::write_gap_record;
use crate::msg;
use crate::notification::{Gap, Notification, Position, Watermark};
use anyhow::{Result, anyhow};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) struct Exec {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    gaps: bool,
    /// With `--consumer`: which events' commands have succeeded (each job carries it).
    ledger: Option<Arc<Ledger>>,
    stops: Stops,
}

/// What a command runs for.
enum Job {
    /// A notification, and with `--consumer` its number in the ledger and the ledger.
    Notification(Notification, Option<(u64, Arc<Ledger>)>),
    /// The gap's kind and its NDJSON record.
    Gap(&'static str, Vec<u8>),
}

/// `--consumer`: the events handed to commands, in order, and which have succeeded. The mark
/// moves over the longest run of successes from the first event, so that with `--jobs N` an
/// event is acknowledged only when every event before it is too.
struct Ledger {
    state: Mutex<LedgerState>,
    /// Signalled when an event is acknowledged (the ledger may have room again).
    acknowledged: Condvar,
    mark: Arc<Watermark>,
}

/// The most events handed to commands and not yet acknowledged: behind a command that keeps
/// failing, the other workers go on only this far, so that the ledger stays bounded.
const LEDGER_OPEN: usize = 10_000;

#[derive(Default)]
struct LedgerState {
    next: u64,
    /// Handed out and not yet acknowledged: the event's place, and whether it succeeded.
    open: BTreeMap<u64, (Option<Position>, bool)>,
}

impl Ledger {
    /// Numbers the next event, waiting while [`LEDGER_OPEN`] are unacknowledged (not once the
    /// run ends: its commands are then not run).
    fn open(&self, at: Option<Position>, stops: &Stops) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.open.len() >= LEDGER_OPEN && !stops.ending() {
            state = self
                .acknowledged
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let seq = state.next;
        state.next += 1;
        state.open.insert(seq, (at, false));
        seq
    }

    fn succeeded(&self, seq: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = state.open.get_mut(&seq) {
            entry.1 = true;
        }
        while let Some(entry) = state.open.first_entry() {
            if !entry.get().1 {
                break;
            }
            if let (_, (Some(at), _)) = entry.remove_entry() {
                self.mark.advance(at);
            }
        }
        drop(state);
        self.acknowledged.notify_all();
    }
}

/// With `--consumer`: the first pause before a failed command runs again, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Exec {
    /// Starts `jobs` workers that run `command` for each notification (and gap) handed to them.
    pub(crate) fn start(command: &str, jobs: usize, gaps: bool) -> io::Result<Exec> {
        let (tx, rx) = mpsc::sync_channel::<Job>(0);
        let rx = Arc::new(Mutex::new(rx));
        let stops = Stops::default();
        let mut workers = Vec::with_capacity(jobs);
        for i in 0..jobs {
            let rx = Arc::clone(&rx);
            let command = command.to_owned();
            let stops = stops.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("exec-{i}"))
                    .spawn(move || work(&command, &rx, &stops))?,
            );
        }
        Ok(Exec {
            jobs: Some(tx),
            workers,
            gaps,
            ledger: None,
            stops,
        })
    }

    /// Hands a job to a free worker, waiting while all are busy.
    fn send(&self, job: Job) -> Result<()> {
        match &self.jobs {
            Some(jobs) => jobs
                .send(job)
                .map_err(|_| anyhow!("the --exec workers stopped")),
            None => Ok(()),
        }
    }
}

/// What tells a worker the run ends: `ending`, a signal or a failed run (no new command is
/// begun); `finishing`, the run is over (the commands handed out still run, but a failed one
/// is not retried).
#[derive(Clone, Default)]
struct Stops {
    ending: Arc<AtomicBool>,
    finishing: Arc<AtomicBool>,
}

impl Stops {
    /// No new command: a signal, or the run failed.
    fn ending(&self) -> bool {
        self.ending.load(Ordering::Relaxed) || crate::signals::stopping()
    }

    /// No more retries: that, or the run is over.
    fn no_retry(&self) -> bool {
        self.ending() || self.finishing.load(Ordering::Relaxed)
    }
}

fn work(command: &str, jobs: &Mutex<Receiver<Job>>, stops: &Stops) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match next {
            Ok(Job::Notification(n, Some((seq, ledger)))) => {
                // --consumer: again until it succeeds (or the run ends), then acknowledged.
                // Once the run ends, nothing more is begun: the events stay in the outbox.
                if stops.ending() {
                    continue;
                }
                let stop = || stops.no_retry();
                let mut pause = RETRY_FIRST;
                let mut succeeded = run_for(command, &n);
                while !succeeded && !stop() {
                    msg::warn(&format!(
                        "retrying in {} s: the event is acknowledged only once its command \
                         succeeds (--consumer)",
                        pause.as_secs()
                    ));
                    let until = Instant::now() + pause;
                    while Instant::now() < until && !stop() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                    succeeded = !stop() && run_for(command, &n);
                }
                // A command that exited 0 is acknowledged, even as the run ends.
                if succeeded {
                    ledger.succeeded(seq);
                }
            }
            Ok(Job::Notification(n, None)) => {
                run_for(command, &n);
            }
            Ok(Job::Gap(kind, record)) => {
                let mut cmd = shell(command);
                cmd.env("PGNOTIFY_GAP", kind);
                execute(cmd, &record, "a gap record");
            }
            Err(_) => return,
        }
    }
}

/// Runs the command for one notification; true when it exited 0.
fn run_for(command: &str, n: &Notification) -> bool {
    let mut cmd = shell(command);
    cmd.env("PGNOTIFY_CHANNEL", &n.channel)
        .env("PGNOTIFY_PID", n.pid.to_string())
        .env(
            "PGNOTIFY_PAYLOAD",
            std::os::unix::ffi::OsStrExt::from_bytes(n.payload_bytes()) as &std::ffi::OsStr,
        );
    let what = format!(
        "a notification on {:?} from server process {}",
        n.channel, n.pid
    );
    match &n.fetched {
        // --fetch read the row: it is the input, one JSON line (null: gone).
        Some(row) => {
            cmd.env("PGNOTIFY_FETCHED", "1");
            let mut input = serde_json::to_vec(row).unwrap_or_default();
            input.push(b'\n');
            execute(cmd, &input, &what)
        }
        None => execute(cmd, n.payload_bytes(), &what),
    }
}

fn shell(command: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    for name in [
        "PGNOTIFY_CHANNEL",
        "PGNOTIFY_PID",
        "PGNOTIFY_PAYLOAD",
        "PGNOTIFY_GAP",
        "PGNOTIFY_FETCHED",
        // sd_notify's unset_environment: a command must not speak for the service.
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs the command with `input` on its stdin and waits for it; true when it exited 0.
fn execute(mut cmd: Command, input: &[u8], what: &str) -> bool {
    let mut child = match cmd.stdin(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            msg::warn(&format!("could not run the --exec command: {e}"));
            return false;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine: ignore the broken pipe.
        let _ = stdin.write_all(input);
    }
    match child.wait() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            msg::warn(&format!("the --exec command failed ({status}) for {what}"));
            false
        }
        Err(e) => {
            msg::warn(&format!("could not wait for the --exec command: {e}"));
            false
        }
    }
}

impl Sink for Exec {
    fn write(&mut self, n: &Notification) -> Result<()> {
        let ticket = self
            .ledger
            .as_ref()
            .map(|ledger| (ledger.open(n.stored, &self.stops), Arc::clone(ledger)));
        self.send(Job::Notification(n.clone(), ticket))
    }

    /// Runs the command for the gap too (PGNOTIFY_GAP set), unless `--no-gap-records`.
    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        if !self.gaps {
            return Ok(());
        }
        let mut record = Vec::new();
        write_gap_record(&mut record, gap)?;
        self.send(Job::Gap(gap.kind.as_str(), record))
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// `--consumer`: an event is acknowledged once its command exits 0.
    fn acknowledges(&mut self, mark: &Arc<Watermark>) -> bool {
        self.ledger = Some(Arc::new(Ledger {
            state: Mutex::default(),
            acknowledged: Condvar::new(),
            mark: Arc::clone(mark),
        }));
        true
    }

    fn ending(&mut self) {
        self.stops.ending.store(true, Ordering::Relaxed);
    }

    /// Lets the running commands finish, and reaps them. A command retried until it
    /// succeeds (`--consumer`) is not run again: its event stays unacknowledged.
    fn finish(&mut self) -> Result<()> {
        self.stops.finishing.store(true, Ordering::Relaxed);
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        Ok(())
    }
}
