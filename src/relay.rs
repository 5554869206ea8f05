//! The main loop that `listen` and `pipe` share: start the source, then take events from the
//! queue and write them out until a count, a timeout, a signal, the reader leaving, or a fatal
//! event ends the run.
//!
//! Writing: everything already queued is written, then flushed once, then the loop blocks
//! (per line on a terminal). On a signal or a fatal event, every notification already received
//! is written and flushed before the exit.

use crate::config::Wait;
use crate::conn;
use crate::events::{self, Event, Overflow, Queue};
use crate::exit::Exit;
use crate::fetch::Fetcher;
use crate::msg;
use crate::notification::Notification;
use crate::output::{self, Printer, Sink, Stdout, tcp};
use crate::source::{self, SourceSettings};
use anyhow::Result;
use std::sync::Arc;
use std::time::Instant;

/// Bytes of notifications (with bookkeeping) that may wait for the output.
pub const BUFFER_BYTES: usize = 4 << 20;

/// Where a relay writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// `--connect HOST:PORT`
    Connect(String),
    /// `--serve [ADDR:]PORT`
    Serve(String),
    /// `--exec COMMAND --jobs N`
    Exec {
        command: String,
        jobs: usize,
        /// Run it for gaps too.
        gaps: bool,
    },
}

/// Everything a relay needs besides the connection.
pub struct RelaySettings {
    pub source: SourceSettings,
    pub wait: Wait,
    pub printer: Printer,
    pub overflow: Overflow,
    pub destination: Destination,
    /// `--fetch`: read the rows of `watch-table` events.
    pub fetch: bool,
}

pub fn run(conn: &conn::Settings, settings: RelaySettings) -> Result<Exit> {
    // --timeout counts from the start: connecting must not outlast it.
    let counter = Counter::new(settings.wait);
    let conn = match settings.wait.timeout {
        Some(t) => conn.with_default("connect_timeout", &t.as_millis().div_ceil(1000).to_string()),
        None => conn.clone(),
    };
    let queue = Queue::new(BUFFER_BYTES, settings.overflow);
    let mut out: Box<dyn Sink> = match &settings.destination {
        Destination::Stdout => {
            events::watch_output_closed(Arc::clone(&queue));
            Box::new(Stdout::new(settings.printer))
        }
        Destination::Connect(address) => Box::new(tcp::connect(address, settings.printer)?),
        Destination::Serve(spec) => Box::new(tcp::serve(spec, settings.printer)?),
        Destination::Exec {
            command,
            jobs,
            gaps,
        } => Box::new(output::exec::start(command, *jobs, *gaps)?),
    };
    source::start(&conn, settings.source, Arc::clone(&queue))?;
    let signals = Arc::clone(&queue);
    events::deliver_signals_to(move |signal| {
        signals.push(Event::Signal(signal));
        true
    });
    let mut fetcher = settings.fetch.then(|| Fetcher::new(&conn));
    let outcome = relay(&queue, out.as_mut(), counter, fetcher.as_mut());
    // Also after a failure: TCP outboxes get their chance, --exec children are reaped.
    let finished = out.finish();
    let outcome = outcome.and_then(|exit| finished.map(|()| exit).map_err(Into::into));
    match outcome {
        Err(e) => match e.downcast_ref::<std::io::Error>() {
            Some(io) if output::is_broken_pipe(io) => Ok(Exit::Success),
            Some(io) => Err(anyhow::anyhow!(
                "could not write to standard output: {}",
                conn::strip_os_error(&io.to_string())
            )),
            None => Err(e),
        },
        ok => ok,
    }
}

fn relay(
    queue: &Queue,
    out: &mut dyn Sink,
    mut counter: Counter,
    mut fetcher: Option<&mut Fetcher>,
) -> Result<Exit> {
    loop {
        let mut events = queue.try_take();
        if events.is_empty() {
            out.flush()?;
            events = queue.take(counter.deadline());
            if events.is_empty() {
                msg::info(&counter.timeout_message());
                return Ok(Exit::Timeout);
            }
        }
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            match event {
                Event::Notifications(mut batch) => {
                    fetch(&mut fetcher, &mut batch);
                    if counter.write(out, &batch)? {
                        out.flush()?;
                        return Ok(Exit::Success);
                    }
                }
                Event::Gap(gap) => out.write_gap(&gap)?,
                Event::Signal(signal) => {
                    drain(events.chain(queue.try_take()), out, &mut counter, fetcher)?;
                    return Ok(Exit::for_signal(signal));
                }
                Event::OutputClosed => return Ok(Exit::Success),
                Event::Fatal(error) => {
                    drain(events.chain(queue.try_take()), out, &mut counter, fetcher)?;
                    return Err(error);
                }
            }
        }
    }
}

/// Writes every notification already received, then flushes: nothing received is lost on the
/// way out.
fn drain(
    events: impl Iterator<Item = Event>,
    out: &mut dyn Sink,
    counter: &mut Counter,
    mut fetcher: Option<&mut Fetcher>,
) -> Result<()> {
    for event in events {
        match event {
            Event::Notifications(mut batch) => {
                fetch(&mut fetcher, &mut batch);
                if counter.write(out, &batch)? {
                    break;
                }
            }
            Event::Gap(gap) => out.write_gap(&gap)?,
            _ => {}
        }
    }
    out.flush()?;
    Ok(())
}

/// `--fetch`: adds the rows to a batch before it is written.
fn fetch(fetcher: &mut Option<&mut Fetcher>, batch: &mut [Notification]) {
    if let Some(fetcher) = fetcher {
        for n in batch {
            fetcher.fetch(n);
        }
    }
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
            // A timeout too large to add is no timeout.
            deadline: wait.timeout.and_then(|t| Instant::now().checked_add(t)),
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
    fn write(&mut self, out: &mut dyn Sink, batch: &[Notification]) -> Result<bool> {
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
