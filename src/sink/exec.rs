//! `--exec COMMAND`: run a command per notification instead of printing it.
//!
//! The command runs through `/bin/sh -c`, so it is found on PATH and may have arguments and
//! redirections; the notification never enters the command line (no quoting, no injection):
//! the payload arrives on the command's stdin and in `PGNOTIFY_PAYLOAD`, with
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
use crate::notification::{Gap, Notification};
use anyhow::{Result, anyhow};
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(crate) struct Exec {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    gaps: bool,
}

/// What a command runs for.
enum Job {
    Notification(Notification),
    /// The gap's kind and its NDJSON record.
    Gap(&'static str, Vec<u8>),
}

impl Exec {
    /// Starts `jobs` workers that run `command` for each notification (and gap) handed to them.
    pub(crate) fn start(command: &str, jobs: usize, gaps: bool) -> io::Result<Exec> {
        let (tx, rx) = mpsc::sync_channel::<Job>(0);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(jobs);
        for i in 0..jobs {
            let rx = Arc::clone(&rx);
            let command = command.to_owned();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("exec-{i}"))
                    .spawn(move || work(&command, &rx))?,
            );
        }
        Ok(Exec {
            jobs: Some(tx),
            workers,
            gaps,
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

fn work(command: &str, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match next {
            Ok(Job::Notification(n)) => {
                let mut cmd = shell(command);
                cmd.env("PGNOTIFY_CHANNEL", &n.channel)
                    .env("PGNOTIFY_PID", n.pid.to_string())
                    .env("PGNOTIFY_PAYLOAD", &n.payload);
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
                        execute(cmd, &input, &what);
                    }
                    None => execute(cmd, n.payload.as_bytes(), &what),
                }
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

fn shell(command: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    for name in [
        "PGNOTIFY_CHANNEL",
        "PGNOTIFY_PID",
        "PGNOTIFY_PAYLOAD",
        "PGNOTIFY_GAP",
        "PGNOTIFY_FETCHED",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs the command with `input` on its stdin and waits for it.
fn execute(mut cmd: Command, input: &[u8], what: &str) {
    let mut child = match cmd.stdin(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            msg::warn(&format!("could not run the --exec command: {e}"));
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine: ignore the broken pipe.
        let _ = stdin.write_all(input);
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => msg::warn(&format!("the --exec command failed ({status}) for {what}")),
        Err(e) => msg::warn(&format!("could not wait for the --exec command: {e}")),
    }
}

impl Sink for Exec {
    fn write(&mut self, n: &Notification) -> Result<()> {
        self.send(Job::Notification(n.clone()))
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

    /// Lets the running commands finish, and reaps them.
    fn finish(&mut self) -> Result<()> {
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        Ok(())
    }
}
