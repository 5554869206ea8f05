//! The events a running `listen` or `pipe` waits on, and the bounded queue that carries them
//! from the source thread (and the signal and stdout watchers) to the main loop.
//!
//! The queue is bounded in bytes of notifications, because one cluster-wide queue on the server
//! holds every notification until the slowest listener has read it (a listener that stops
//! reading holds back every sender's commits, in every database): a pgnotify whose output is
//! slow must keep reading the server, not push back on it. When the
//! bound is reached, the source waits up to [`GRACE`] for room (so a healthy but briefly slower
//! consumer loses nothing), then applies the `--on-overflow` policy. Control events (signals,
//! gaps, errors) are never bounded or dropped.

use crate::deadline;
use crate::msg;
use crate::notification::{Drops, Gap, Notification};
use crate::sink::Express;
use crate::stats;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Something the main loop must act on.
#[derive(Debug)]
pub(super) enum Event {
    /// Notifications read from the server, in arrival order.
    Notifications(Vec<Notification>),
    /// Notifications may have been lost between two points in time.
    Gap(Gap),
    /// The run cannot go on (the connection is lost for good).
    Fatal(anyhow::Error),
    /// The output could not keep up (`--on-overflow exit`): end the run without writing what
    /// is still queued, after completing the line being written.
    Overflowed(anyhow::Error),
    /// SIGINT or SIGTERM arrived: write what was received, then exit 128+n.
    Signal(i32),
    /// The reader of stdout went away (`| head -1`): exit 0.
    OutputClosed,
    /// The console's `quit`: write what was received, then exit 0.
    Quit,
}

/// What the source does when the queue stays full (`--on-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Drop notifications, count them, and report the count in a gap record and on stderr.
    #[default]
    Drop,
    /// Stop reading the server until there is room (holds back the server's queue).
    Block,
    /// End the run with status 1.
    Exit,
}

/// How long a full queue may hold the source back before the overflow policy applies.
pub(super) const GRACE: Duration = Duration::from_secs(1);

/// The bounded event queue between the source and the main loop.
pub(super) struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    limit: usize,
    policy: Overflow,
    /// Set with the reason when an [`Event::Overflowed`] is pushed: a sink waiting for its
    /// reader gives up at the next line boundary (`sink::StopWriting`).
    stop_writing: Arc<OnceLock<String>>,
    /// The source's express lane to a stdout pipe, when the run has one ([`Express`]); only
    /// the source thread uses it.
    express: Mutex<Option<Express>>,
}

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    bytes: usize,
    drops: Drops,
    /// When the block policy last said so on stderr (at most once a minute).
    block_warned: Option<Instant>,
    /// The main loop waits for events, everything it took written and flushed.
    main_idle: bool,
    /// The source is writing a batch by the express lane: main takes nothing meanwhile.
    source_writing: bool,
    /// How many notifications the express lane may write while main waits (`--count`: one
    /// fewer than are left, so that main writes the last and ends the run); zero while main
    /// waits with a deadline, which a notification may change.
    express_budget: Option<u64>,
    /// Notifications the express lane wrote that main has not counted yet.
    expressed: u64,
}

/// The memory notifications hold until written: each one's struct and its strings' heap
/// blocks, as the allocator rounds them (16-byte steps, 32 at least, 8 of them its own).
pub(super) fn cost(batch: &[Notification]) -> usize {
    let heap = |len: usize| match len {
        0 => 0,
        n => (n + 8).next_multiple_of(16).max(32),
    };
    batch
        .iter()
        .map(|n| {
            size_of::<Notification>()
                + heap(n.channel.len())
                + heap(n.payload.len())
                + n.exact_payload.as_ref().map_or(0, |b| heap(b.len()))
        })
        .sum()
}

impl Queue {
    pub(super) fn new(limit: usize, policy: Overflow) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            limit,
            policy,
            stop_writing: Arc::default(),
            express: Mutex::new(None),
        })
    }

    /// Lets the source write small batches to stdout itself while the main loop is idle
    /// ([`Express`]). Only for a run whose main loop does nothing with a notification but
    /// write and count it (no `--fetch`); `--count` and `--timeout` bound it through
    /// [`Queue::take`]'s budget.
    pub(super) fn open_express_lane(&self, express: Express) {
        *self.express.lock().unwrap_or_else(PoisonError::into_inner) = Some(express);
    }

    /// The express lane: writes `batch` when nothing is queued, no drop is to be reported and
    /// main is idle, so the stream's order is kept. Returns the batch when it must be queued.
    fn express(&self, batch: Vec<Notification>) -> Option<Vec<Notification>> {
        let mut lane = self.express.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(express) = lane.as_mut() else {
            return Some(batch);
        };
        {
            let mut state = self.lock();
            let clear = state.events.is_empty()
                && state.main_idle
                && !state.source_writing
                && state
                    .express_budget
                    .is_none_or(|left| left >= batch.len() as u64)
                && !state.drops.dropping()
                && self.stop_writing.get().is_none();
            if !clear {
                return Some(batch);
            }
            state.source_writing = true;
        }
        // Counted before it is written, so that a reader who has read a line finds it counted.
        let n = batch.len() as u64;
        stats::written(n);
        let written = express.write(&batch);
        if !matches!(written, Ok(true)) {
            stats::unwritten(n);
        }
        let mut state = self.lock();
        state.source_writing = false;
        if let Ok(true) = written {
            state.expressed += n;
            if let Some(left) = state.express_budget.as_mut() {
                *left -= n;
            }
        }
        drop(state);
        self.changed.notify_all();
        match written {
            Ok(true) => None,
            Ok(false) => Some(batch),
            // The main loop's sink writes it, and says what is wrong.
            Err(_) => {
                *lane = None;
                Some(batch)
            }
        }
    }

    /// What tells a sink to stop waiting for its reader (see [`Event::Overflowed`]).
    pub(super) fn stop_writing(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.stop_writing)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a control event; never blocks, never drops.
    pub(super) fn push(&self, event: Event) {
        if let Event::Overflowed(why) = &event {
            let _ = self.stop_writing.set(format!("{why:#}"));
        }
        self.lock().events.push_back(event);
        self.changed.notify_all();
    }

    /// Adds a control event ahead of everything queued (the console's quit: what is queued
    /// is then written without its `--fetch` rows).
    pub(super) fn push_first(&self, event: Event) {
        self.lock().events.push_front(event);
        self.changed.notify_all();
    }

    /// Adds notifications from the server, applying the overflow policy when the queue stays
    /// full. An error (`--on-overflow exit`) says why the run must end now: the main loop may
    /// be stuck writing to the slow output, so the caller ends the program itself.
    pub(super) fn push_notifications(&self, batch: Vec<Notification>) -> Result<(), String> {
        stats::received(batch.len(), batch.last().map(|n| n.received_at));
        let Some(batch) = self.express(batch) else {
            return Ok(());
        };
        let size = cost(&batch);
        let mut state = self.lock();
        if state.bytes > 0 && state.bytes + size > self.limit {
            state = self.wait_for_room(state, size);
            if state.bytes > 0 && state.bytes + size > self.limit {
                return self.overflow(state, batch.len());
            }
        }
        if let Some(gap) = end_drop(&mut state) {
            state.events.push_back(gap);
        }
        state.bytes += size;
        stats::queue_bytes(state.bytes);
        state.events.push_back(Event::Notifications(batch));
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// For a source that can wait (the `--consumer` reader): queues `batch` if there is room
    /// within `wait`, else gives it back.
    pub(super) fn offer(
        &self,
        batch: Vec<Notification>,
        wait: Duration,
    ) -> Option<Vec<Notification>> {
        let size = cost(&batch);
        let state = self.lock();
        let full = |s: &mut State| s.bytes > 0 && s.bytes + size > self.limit;
        let (mut state, _) =
            deadline::wait_while(&self.changed, state, deadline::after(wait), full);
        if full(&mut state) {
            return Some(batch);
        }
        stats::received(batch.len(), batch.last().map(|n| n.received_at));
        state.bytes += size;
        stats::queue_bytes(state.bytes);
        state.events.push_back(Event::Notifications(batch));
        drop(state);
        self.changed.notify_all();
        None
    }

    fn wait_for_room<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        size: usize,
    ) -> MutexGuard<'a, State> {
        let full = |s: &mut State| s.bytes > 0 && s.bytes + size > self.limit;
        if self.policy == Overflow::Block {
            if state
                .block_warned
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
            {
                state.block_warned = Some(Instant::now());
                msg::warn(
                    "the output is slow: stopped reading from the server until it catches up (--on-overflow block)",
                );
            }
            return deadline::wait_while(&self.changed, state, None, full).0;
        }
        // While a drop goes on, notifications are dropped at once: no grace again.
        let grace = deadline::after(GRACE);
        let blocked = |s: &mut State| full(s) && !s.drops.dropping();
        deadline::wait_while(&self.changed, state, grace, blocked).0
    }

    fn overflow(&self, mut state: MutexGuard<'_, State>, count: usize) -> Result<(), String> {
        if self.policy == Overflow::Exit {
            return Err(format!(
                "the output could not keep up: {} bytes of notifications waited for it for {} s \
                 (--on-overflow exit)",
                state.bytes,
                GRACE.as_secs()
            ));
        }
        stats::dropped_in_queue(count as u64);
        if state.drops.count(count as u64) {
            msg::warn("the output is too slow: dropping notifications until it catches up");
        }
        Ok(())
    }

    /// Takes every queued event, waiting until there is one or `deadline` passes (then the
    /// result is empty). `None` waits as long as it takes.
    /// Main is idle while it waits here: the source may write up to `budget` notifications by
    /// the express lane meanwhile (`None`: any number; none while a deadline runs, since a
    /// notification may lift it), and events are taken only once it is done. What it wrote is
    /// counted by [`Queue::take_expressed`].
    pub(super) fn take(&self, deadline: Option<Instant>, budget: Option<u64>) -> Vec<Event> {
        let mut state = self.lock();
        state.main_idle = true;
        state.express_budget = match deadline {
            Some(_) => Some(0),
            None => budget,
        };
        let empty = |s: &mut State| s.events.is_empty() || s.source_writing;
        let (mut state, timed_out) = deadline::wait_while(&self.changed, state, deadline, empty);
        if state.source_writing {
            // Timed out during an express write (one non-blocking write): it ends first.
            state = deadline::wait_while(&self.changed, state, None, |s| s.source_writing).0;
        }
        state.main_idle = false;
        if timed_out && state.events.is_empty() {
            return Vec::new();
        }
        self.take_locked(state)
    }

    /// How many notifications the express lane wrote since this was last asked.
    pub(super) fn take_expressed(&self) -> u64 {
        std::mem::take(&mut self.lock().expressed)
    }

    /// At the end of a run: lets go of every queued event unwritten, so that a source waiting
    /// for room goes on (and sees that the run ends).
    pub(super) fn discard(&self) {
        let mut state = self.lock();
        state.events.clear();
        state.bytes = 0;
        stats::queue_bytes(0);
        drop(state);
        self.changed.notify_all();
    }

    /// Takes every queued event without waiting.
    pub(super) fn try_take(&self) -> Vec<Event> {
        self.take_locked(self.lock())
    }

    /// The main loop has written (or dropped) a batch it took: its memory is free, and the
    /// source may queue as much again.
    pub(super) fn written(&self, batch: &[Notification]) {
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(cost(batch));
        stats::queue_bytes(state.bytes);
        drop(state);
        self.changed.notify_all();
    }

    /// Taken events still count against the limit until [`Queue::written`]: memory holds the
    /// queue and what is being written, together at most the limit (and one batch over it).
    fn take_locked(&self, mut state: MutexGuard<'_, State>) -> Vec<Event> {
        let mut events: Vec<Event> = state.events.drain(..).collect();
        // Everything kept before a drop is now taken: report the drop at once, whether or not
        // another notification ever comes (or the run is ending).
        if let Some(gap) = end_drop(&mut state) {
            events.push(gap);
        }
        drop(state);
        self.changed.notify_all();
        events
    }
}

/// Ends a drop, if one is going on: says so on stderr, and returns its gap event.
fn end_drop(state: &mut State) -> Option<Event> {
    let gap = state.drops.end("the output was too slow")?;
    msg::warn(&format!(
        "the output was too slow: {} notifications were dropped (--on-overflow drop)",
        gap.dropped
    ));
    Some(Event::Gap(gap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Notification> {
        (0..n)
            .map(|i| Notification {
                channel: "c".into(),
                payload: i.to_string(),
                exact_payload: None,
                pid: 1,
                received_at: jiff::Timestamp::UNIX_EPOCH,
                fetched: None,
                stored: None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_after_the_grace_and_reports_a_gap() {
        let queue = Queue::new(cost(&batch(10)), Overflow::Drop);
        assert!(queue.push_notifications(batch(10)).is_ok());
        let started = Instant::now();
        assert!(
            queue.push_notifications(batch(5)).is_ok(),
            "dropped, not fatal"
        );
        assert!(started.elapsed() >= GRACE);
        assert!(
            queue.push_notifications(batch(3)).is_ok(),
            "dropped at once while dropping"
        );
        // The drop is reported as soon as what was kept is taken, with no further push.
        match &queue.try_take()[..] {
            [Event::Notifications(b), Event::Gap(gap)] => {
                assert_eq!(
                    (b.len(), gap.kind, gap.dropped),
                    (10, crate::notification::GapKind::Overflow, 8)
                );
                // Taken is not yet written: still no room.
                let started = Instant::now();
                assert!(queue.push_notifications(batch(1)).is_ok());
                assert!(started.elapsed() >= GRACE);
                queue.written(b);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&queue.try_take()[..], [Event::Gap(gap)] if gap.dropped == 1));
        assert!(queue.push_notifications(batch(2)).is_ok());
        assert!(matches!(&queue.try_take()[..], [Event::Notifications(b)] if b.len() == 2));
    }

    #[test]
    fn exit_policy_says_why() {
        let queue = Queue::new(1, Overflow::Exit);
        assert!(queue.push_notifications(batch(1)).is_ok());
        let err = queue.push_notifications(batch(1)).unwrap_err();
        assert!(err.contains("--on-overflow exit"), "{err}");
    }

    #[test]
    fn block_policy_waits_for_the_consumer() {
        let queue = Queue::new(1, Overflow::Block);
        assert!(queue.push_notifications(batch(1)).is_ok());
        let consumer = Arc::clone(&queue);
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            let taken = consumer.try_take();
            for event in &taken {
                if let Event::Notifications(batch) = event {
                    consumer.written(batch);
                }
            }
            taken.len()
        });
        assert!(
            queue.push_notifications(batch(1)).is_ok(),
            "waits past the grace, then goes in"
        );
        assert_eq!(handle.join().unwrap(), 1);
        assert_eq!(queue.try_take().len(), 1);
    }

    #[test]
    fn take_honours_its_deadline() {
        let queue = Queue::new(1000, Overflow::Drop);
        assert!(
            queue
                .take(Some(Instant::now() + Duration::from_millis(20)), None)
                .is_empty()
        );
        queue.push(Event::OutputClosed);
        assert_eq!(queue.take(None, None).len(), 1);
    }
}
