//! `--exec COMMAND`: run a command per notification instead of printing it.
//!
//! The command runs through `/bin/sh -c`, so it is found on PATH and may have arguments and
//! redirections; the notification never enters the command line (no quoting, no injection):
//! the payload arrives on the command's stdin and in `PGNOTIFY_PAYLOAD`, with
//! `PGNOTIFY_CHANNEL` and `PGNOTIFY_PID`. `--jobs N` runs up to N at once (default 1: one after
//! the other, in arrival order). Every child is waited for; a command that fails is reported on
//! stderr and the run goes on. While all jobs are busy, notifications wait in the source's
//! queue, where `--on-overflow` applies.

use super::Sink;
use crate::events::Gap;
use crate::msg;
use crate::notification::Notification;
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct Exec {
    jobs: Option<SyncSender<Notification>>,
    workers: Vec<JoinHandle<()>>,
}

/// Starts `jobs` workers that run `command` for each notification handed to them.
pub fn start(command: &str, jobs: usize) -> io::Result<Exec> {
    let (tx, rx) = mpsc::sync_channel::<Notification>(0);
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
    })
}

fn work(command: &str, jobs: &Mutex<Receiver<Notification>>) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(n) = next else { return };
        run(command, &n);
    }
}

/// Runs the command for one notification and waits for it.
fn run(command: &str, n: &Notification) {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("PGNOTIFY_CHANNEL", &n.channel)
        .env("PGNOTIFY_PID", n.pid.to_string())
        .env("PGNOTIFY_PAYLOAD", &n.payload)
        .stdin(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            msg::warn(&format!("could not run the --exec command: {e}"));
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine: ignore the broken pipe.
        let _ = stdin.write_all(n.payload.as_bytes());
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => msg::warn(&format!(
            "the --exec command failed ({status}) for a notification on {:?} from server process {}",
            n.channel, n.pid
        )),
        Err(e) => msg::warn(&format!("could not wait for the --exec command: {e}")),
    }
}

impl Sink for Exec {
    /// Hands the notification to a free worker, waiting while all are busy.
    fn write(&mut self, n: &Notification) -> io::Result<()> {
        match &self.jobs {
            Some(jobs) => jobs
                .send(n.clone())
                .map_err(|_| io::Error::other("the --exec workers stopped")),
            None => Ok(()),
        }
    }

    /// Gaps are said on stderr by the source; a command has no stream to put them in.
    fn write_gap(&mut self, _gap: &Gap) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Lets the running commands finish, and reaps them.
    fn finish(&mut self) -> io::Result<()> {
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        Ok(())
    }
}
