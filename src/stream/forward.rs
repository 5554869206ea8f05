//! The main loop that `listen` and `pipe` share: take events from the queue and hand them to
//! the sink until a count, a timeout, a signal, the reader leaving, or a fatal event ends the
//! run.
//!
//! Writing: everything already queued is written, then flushed once, then the loop blocks
//! (the stdout sink also flushes per line on a terminal). On a signal or a fatal event, every
//! notification already received is written and flushed before the exit.

use super::fetch::Fetcher;
use super::queue::{Event, Queue};
use crate::deadline;
use crate::exit::Exit;
use crate::msg;
use crate::notification::{Gap, Notification, Position, Watermark};
use crate::sink::Sink;
use crate::{signals, stats};
use anyhow::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When `listen` or `pipe` stops by itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Until {
    /// Stop with status 0 after this many notifications (`--count`).
    pub(crate) count: Option<u64>,
    /// Stop with status 124 if they (or a first one, without a count) have not arrived by then
    /// (`--timeout`).
    pub(crate) timeout: Option<Duration>,
}

pub(super) fn run(
    queue: &Queue,
    out: &mut dyn Sink,
    counter: Counter,
    fetcher: Option<&mut Fetcher>,
) -> Result<Exit> {
    let consumer = counter.consumer;
    match (
        run_loop(queue, out, counter, fetcher),
        consumer,
        signals::received(),
    ) {
        // A consumer's output gave up at a signal (its reader did not read): that is the
        // signal's exit, with what was flushed acknowledged.
        (Err(_), true, Some(signal)) => Ok(Exit::for_signal(signal)),
        (outcome, _, _) => outcome,
    }
}

fn run_loop(
    queue: &Queue,
    out: &mut dyn Sink,
    mut counter: Counter,
    mut fetcher: Option<&mut Fetcher>,
) -> Result<Exit> {
    loop {
        let mut events = queue.try_take();
        if events.is_empty() {
            counter.flush(out)?;
            events = queue.take(counter.deadline(), counter.left());
            counter.received += queue.take_expressed();
            if events.is_empty() {
                msg::info(&counter.timeout_message());
                return Ok(Exit::Timeout);
            }
        }
        let mut events = events.into_iter().peekable();
        while let Some(event) = events.next() {
            match event {
                Event::Notifications(mut batch) => {
                    if fetcher.is_some() && events.peek().is_none() {
                        // What came meanwhile is taken now, so that --fetch reads the rows
                        // of the next batch while this one is written.
                        events = queue.try_take().into_iter().peekable();
                    }
                    fetch(&mut fetcher, &mut batch, events.peek());
                    let reached = counter.write(out, &batch)?;
                    // Its memory is free either way (the rest of it is never written).
                    queue.written(&batch);
                    if reached {
                        counter.flush(out)?;
                        return Ok(Exit::Success);
                    }
                    counter.acknowledge_batch(out)?;
                }
                Event::Gap(gap) => write_gap(out, &gap)?,
                Event::Signal(signal) => {
                    out.ending();
                    // A consumer's events not yet written stay in the outbox for the next
                    // run: it stops at once, with what it wrote flushed and acknowledged.
                    match counter.consumer {
                        true => counter.flush(out)?,
                        false => drain(
                            queue,
                            events.chain(queue.try_take()),
                            out,
                            &mut counter,
                            fetcher,
                        )?,
                    }
                    return Ok(Exit::for_signal(signal));
                }
                Event::OutputClosed => return Ok(Exit::Success),
                Event::Quit => {
                    out.ending();
                    // The person asked to leave: what is queued is shown without waiting
                    // for --fetch to read its rows (a hung fetch must not hold the exit).
                    drain(
                        queue,
                        events.chain(queue.try_take()),
                        out,
                        &mut counter,
                        None,
                    )?;
                    return Ok(Exit::Success);
                }
                Event::Fatal(error) => {
                    out.ending();
                    drain(
                        queue,
                        events.chain(queue.try_take()),
                        out,
                        &mut counter,
                        fetcher,
                    )?;
                    return Err(error);
                }
                Event::Overflowed(error) => {
                    counter.flush(out)?;
                    return Err(error);
                }
            }
        }
    }
}

/// Writes every notification already received, then flushes: nothing received is lost on the
/// way out.
fn drain(
    queue: &Queue,
    events: impl Iterator<Item = Event>,
    out: &mut dyn Sink,
    counter: &mut Counter,
    mut fetcher: Option<&mut Fetcher>,
) -> Result<()> {
    let mut events = events.peekable();
    while let Some(event) = events.next() {
        match event {
            Event::Notifications(mut batch) => {
                fetch(&mut fetcher, &mut batch, events.peek());
                let reached = counter.write(out, &batch)?;
                queue.written(&batch);
                if reached {
                    break;
                }
            }
            Event::Gap(gap) => write_gap(out, &gap)?,
            _ => {}
        }
    }
    counter.flush(out)
}

/// Writes a gap record (where the format has them), and counts the gap.
fn write_gap(out: &mut dyn Sink, gap: &Gap) -> Result<()> {
    stats::gap(gap.kind);
    out.write_gap(gap)
}

/// `--fetch`: adds the rows to a batch before it is written (one query per table); those of
/// the next event, if it is a batch too, are read while this one is written.
fn fetch(fetcher: &mut Option<&mut Fetcher>, batch: &mut [Notification], next: Option<&Event>) {
    if let Some(fetcher) = fetcher {
        let next = match next {
            Some(Event::Notifications(next)) => Some(next.as_slice()),
            _ => None,
        };
        fetcher.fetch_batch(batch, next);
    }
}

/// Counts notifications against `--count` and keeps the `--timeout` deadline.
pub(super) struct Counter {
    until: Until,
    received: u64,
    deadline: Option<Instant>,
    /// With `--consumer`, unless the sink acknowledges itself: the mark each flush advances,
    /// and the last event written.
    mark: Option<Arc<Watermark>>,
    written: Option<Position>,
    /// `--consumer`: what is not written yet is read again next time.
    consumer: bool,
}

impl Counter {
    pub(super) fn new(until: Until) -> Counter {
        Counter {
            until,
            received: 0,
            // A timeout too large to add is no timeout.
            deadline: until.timeout.and_then(deadline::after),
            mark: None,
            written: None,
            consumer: false,
        }
    }

    /// `--consumer`: a signal stops the run without writing what is queued.
    pub(super) fn consuming(mut self) -> Counter {
        self.consumer = true;
        self
    }

    /// `--consumer`: each flush acknowledges what was written before it.
    pub(super) fn acknowledging(mut self, mark: Arc<Watermark>) -> Counter {
        self.mark = Some(mark);
        self
    }

    /// Flushes the sink; then what was written is delivered, and acknowledged.
    fn flush(&mut self, out: &mut dyn Sink) -> Result<()> {
        out.flush()?;
        if let (Some(mark), Some(at)) = (&self.mark, self.written) {
            mark.advance(at);
        }
        Ok(())
    }

    /// `--consumer`: every batch is flushed, and so acknowledged, once written: a stream that
    /// never lets the loop idle (a replay) would otherwise acknowledge nothing until it ends,
    /// and a crash would repeat all of it.
    fn acknowledge_batch(&mut self, out: &mut dyn Sink) -> Result<()> {
        match self.mark.is_some() {
            true => self.flush(out),
            false => Ok(()),
        }
    }

    /// How many more may be written before the one that reaches `--count` (None: no count).
    fn left(&self) -> Option<u64> {
        self.until
            .count
            .map(|count| count.saturating_sub(self.received).saturating_sub(1))
    }

    /// The deadline still in force: without `--count`, the first notification disarms it.
    fn deadline(&self) -> Option<Instant> {
        match self.until.count {
            None if self.received > 0 => None,
            _ => self.deadline,
        }
    }

    /// Writes a batch; true when `--count` is reached (the rest of the batch is not written).
    fn write(&mut self, out: &mut dyn Sink, batch: &[Notification]) -> Result<bool> {
        // Counted before it is written (a reader who has read a line finds it counted), then
        // what was not written after all (the count reached, an error) is taken back.
        let planned = match self.until.count {
            Some(count) => (batch.len() as u64).min(count.saturating_sub(self.received)),
            None => batch.len() as u64,
        };
        stats::written(planned);
        let before = self.received;
        let outcome = self.write_counted(out, batch);
        stats::unwritten(planned.saturating_sub(self.received - before));
        outcome
    }

    fn write_counted(&mut self, out: &mut dyn Sink, batch: &[Notification]) -> Result<bool> {
        for n in batch {
            out.write(n)?;
            if n.stored.is_some() {
                self.written = n.stored;
            }
            self.received += 1;
            if Some(self.received) == self.until.count {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn timeout_message(&self) -> String {
        let wanted = match self.until.count {
            Some(count) => format!("{count} notifications"),
            None => "a notification".to_owned(),
        };
        format!("timed out waiting for {wanted}; {} received", self.received)
    }
}
