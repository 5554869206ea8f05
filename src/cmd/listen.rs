//! `listen`: print notifications as they arrive, until a count, a timeout, a signal, or the
//! reader of stdout going away.

use crate::config::{ListenSettings, Wait};
use crate::conn;
use crate::events::{self, Event};
use crate::exit::{ConnectionError, Exit};
use crate::msg;
use crate::output::{self, Stdout};
use crate::source;
use anyhow::{Result, bail};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

pub fn run(settings: ListenSettings, conn: &conn::Settings) -> Result<Exit> {
    let (tx, rx) = mpsc::channel();
    source::start(conn, &settings.channels, tx.clone())?;
    events::deliver_signals_to(tx.clone());
    events::watch_output_closed(tx);
    let mut out = Stdout::new(settings.printer);
    match receive(&rx, &mut out, settings.wait) {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(output::is_broken_pipe) =>
        {
            Ok(Exit::Success)
        }
        other => other,
    }
}

/// The main loop: writes what arrives, flushes whenever nothing more is waiting, and decides
/// how the run ends.
fn receive(rx: &Receiver<Event>, out: &mut Stdout, wait: Wait) -> Result<Exit> {
    let mut counter = Counter::new(wait);
    loop {
        let event = match rx.try_recv() {
            Ok(event) => event,
            Err(TryRecvError::Empty) => {
                out.flush()?;
                match next_before(rx, counter.deadline()) {
                    Some(event) => event,
                    None => {
                        msg::info(&counter.timeout_message());
                        return Ok(Exit::Timeout);
                    }
                }
            }
            Err(TryRecvError::Disconnected) => {
                bail!("the notification source stopped unexpectedly")
            }
        };
        match event {
            Event::Notifications(batch) => {
                if counter.write(out, &batch)? {
                    out.flush()?;
                    return Ok(Exit::Success);
                }
            }
            Event::Signal(signal) => {
                drain(rx, out, &mut counter)?;
                return Ok(Exit::for_signal(signal));
            }
            Event::OutputClosed => return Ok(Exit::Success),
            Event::Lost(why) => {
                drain(rx, out, &mut counter)?;
                return Err(ConnectionError(why).into());
            }
        }
    }
}

/// Waits for the next event, until `deadline` if there is one; `None` when it passed.
fn next_before(rx: &Receiver<Event>, deadline: Option<Instant>) -> Option<Event> {
    let Some(deadline) = deadline else {
        return rx.recv().ok();
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(event) => Some(event),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => rx.recv().ok(),
    }
}

/// Writes every notification already received, then flushes: nothing received is lost on the
/// way out.
fn drain(rx: &Receiver<Event>, out: &mut Stdout, counter: &mut Counter) -> Result<()> {
    while let Ok(event) = rx.try_recv() {
        if let Event::Notifications(batch) = event
            && counter.write(out, &batch)?
        {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// Counts notifications against `--count` and keeps the `--timeout` deadline.
struct Counter {
    wait: Wait,
    received: u64,
    deadline: Option<Instant>,
}

impl Counter {
    fn new(wait: Wait) -> Counter {
        Counter {
            wait,
            received: 0,
            deadline: wait.timeout.map(|t| Instant::now() + t),
        }
    }

    /// The deadline still in force: without `--count`, the first notification disarms it.
    fn deadline(&self) -> Option<Instant> {
        match self.wait.count {
            None if self.received > 0 => None,
            _ => self.deadline,
        }
    }

    /// Writes a batch; true when `--count` is reached (the rest of the batch is not written).
    fn write(
        &mut self,
        out: &mut Stdout,
        batch: &[crate::notification::Notification],
    ) -> Result<bool> {
        for n in batch {
            out.write(n)?;
            self.received += 1;
            if Some(self.received) == self.wait.count {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn timeout_message(&self) -> String {
        let wanted = match self.wait.count {
            Some(count) => format!("{count} notifications"),
            None => "a notification".to_owned(),
        };
        format!("timed out waiting for {wanted}; {} received", self.received)
    }
}
