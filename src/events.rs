//! The events a running `listen` or `pipe` waits on, and the bounded queue that carries them
//! from the source thread (and the signal and stdout watchers) to the main loop.
//!
//! The queue is bounded in bytes of notifications, because one cluster-wide queue on the server
//! holds every notification until the slowest listener has read it (notify-facts F22): a
//! pgnotify whose output is slow must keep reading the server, not push back on it. When the
//! bound is reached, the source waits up to [`GRACE`] for room (so a healthy but briefly slower
//! consumer loses nothing), then applies the `--on-overflow` policy. Control events (signals,
//! gaps, errors) are never bounded or dropped.

use crate::msg;
use crate::notification::Notification;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Something the main loop must act on.
#[derive(Debug)]
pub enum Event {
    /// Notifications read from the server, in arrival order.
    Notifications(Vec<Notification>),
    /// Notifications may have been lost between two points in time.
    Gap(Gap),
    /// The run cannot go on (the connection is lost for good).
    Fatal(anyhow::Error),
    /// SIGINT or SIGTERM arrived: write what was received, then exit 128+n.
    Signal(i32),
    /// The reader of stdout went away (`| head -1`): exit 0.
    OutputClosed,
}

/// Why notifications may be missing from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapKind {
    /// The connection was lost and re-established: what was sent meanwhile is lost.
    Reconnect,
    /// The output was too slow and notifications were dropped (`--on-overflow drop`).
    Overflow,
}

/// A stretch of time in which notifications may have been lost.
#[derive(Clone, Debug)]
pub struct Gap {
    pub kind: GapKind,
    /// What happened, in words.
    pub reason: String,
    /// When the stream stopped being complete.
    pub from: jiff::Timestamp,
    /// When it was complete again (for a reconnect: once every LISTEN was re-established).
    pub until: jiff::Timestamp,
    /// How many notifications pgnotify itself dropped (0 for a reconnect: the server's are
    /// unknowable).
    pub dropped: u64,
}

/// What the source does when the queue stays full (`--on-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Overflow {
    /// Drop notifications, count them, and report the count in a gap record and on stderr.
    #[default]
    Drop,
    /// Stop reading the server until there is room (holds back the server's queue).
    Block,
    /// End the run with status 1.
    Exit,
}

/// How long a full queue may hold the source back before the overflow policy applies.
pub const GRACE: Duration = Duration::from_secs(1);

/// The bounded event queue between the source and the main loop.
pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    limit: usize,
    policy: Overflow,
}

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    bytes: usize,
    dropping: Option<(jiff::Timestamp, u64)>,
    /// When the block policy last said so on stderr (at most once a minute).
    block_warned: Option<Instant>,
}

/// The memory a notification holds while queued, roughly: its strings and its bookkeeping.
fn cost(batch: &[Notification]) -> usize {
    batch
        .iter()
        .map(|n| n.channel.len() + n.payload.len() + 96)
        .sum()
}

impl Queue {
    pub fn new(limit: usize, policy: Overflow) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            limit,
            policy,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a control event; never blocks, never drops.
    pub fn push(&self, event: Event) {
        self.lock().events.push_back(event);
        self.changed.notify_all();
    }

    /// Adds notifications from the server, applying the overflow policy when the queue stays
    /// full. An error (`--on-overflow exit`) says why the run must end now: the main loop may
    /// be stuck writing to the slow output, so the caller ends the program itself.
    pub fn push_notifications(&self, batch: Vec<Notification>) -> Result<(), String> {
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
        state.events.push_back(Event::Notifications(batch));
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    fn wait_for_room<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        size: usize,
    ) -> MutexGuard<'a, State> {
        let full = |s: &State| s.bytes > 0 && s.bytes + size > self.limit;
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
            while full(&state) {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            return state;
        }
        let deadline = Instant::now() + GRACE;
        while full(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.dropping.is_some() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state
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
        let entry = state.dropping.get_or_insert_with(|| {
            msg::warn("the output is too slow: dropping notifications until it catches up");
            (jiff::Timestamp::now(), 0)
        });
        entry.1 += count as u64;
        Ok(())
    }

    /// Takes every queued event, waiting until there is one or `deadline` passes (then the
    /// result is empty). `None` waits as long as it takes.
    pub fn take(&self, deadline: Option<Instant>) -> Vec<Event> {
        let mut state = self.lock();
        while state.events.is_empty() {
            match deadline {
                None => state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Vec::new();
                    }
                    state = self
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        self.take_locked(state)
    }

    /// Takes every queued event without waiting.
    pub fn try_take(&self) -> Vec<Event> {
        self.take_locked(self.lock())
    }

    fn take_locked(&self, mut state: MutexGuard<'_, State>) -> Vec<Event> {
        state.bytes = 0;
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
    let (from, dropped) = state.dropping.take()?;
    msg::warn(&format!(
        "the output was too slow: {dropped} notifications were dropped (--on-overflow drop)"
    ));
    Some(Event::Gap(Gap {
        kind: GapKind::Overflow,
        reason: format!("the output was too slow: {dropped} notifications were dropped"),
        from,
        until: jiff::Timestamp::now(),
        dropped,
    }))
}

type SignalSink = Box<dyn Fn(i32) -> bool + Send>;

/// Where the signal thread delivers the first SIGINT/SIGTERM; `None` until a main loop runs.
static SIGNAL_SINK: Mutex<Option<SignalSink>> = Mutex::new(None);

/// Installs the SIGINT/SIGTERM handling for the whole run.
///
/// Until a main loop asks for signals with [`deliver_signals_to`], a signal ends the program at
/// once with 128+n: nothing has been received yet that would need writing. After that, the
/// first signal goes to that loop and a second one ends the program at once.
pub fn install_signal_handling() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut delivered = false;
            for signal in signals.forever() {
                let taken = !delivered
                    && SIGNAL_SINK
                        .lock()
                        .ok()
                        .is_some_and(|sink| sink.as_ref().is_some_and(|deliver| deliver(signal)));
                if !taken {
                    std::process::exit(128 + signal);
                }
                delivered = true;
            }
        })?;
    Ok(())
}

/// From now on the first SIGINT/SIGTERM is handed to `deliver`, which returns false if it
/// could not take it (then the program exits at once).
pub fn deliver_signals_to(deliver: impl Fn(i32) -> bool + Send + 'static) {
    if let Ok(mut sink) = SIGNAL_SINK.lock() {
        *sink = Some(Box::new(deliver));
    }
}

/// When stdout is a pipe or socket, watches for its reader going away and pushes
/// [`Event::OutputClosed`], so `listen ch | head -1` ends as soon as `head` does, even while
/// no notification arrives (failure-modes F8).
pub fn watch_output_closed(queue: Arc<Queue>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::stat::{SFlag, fstat};
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return;
    }
    let Ok(stat) = fstat(&stdout) else { return };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            loop {
                // No events requested: poll reports only POLLERR/POLLHUP, which a pipe's write
                // end gets when its last reader closes.
                let mut fds = [PollFd::new(
                    std::os::fd::AsFd::as_fd(&stdout),
                    PollFlags::empty(),
                )];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(n) if n > 0 => {
                        queue.push(Event::OutputClosed);
                        return;
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
        });
    if spawned.is_err() {
        msg::warn("could not watch stdout for its reader closing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Notification> {
        (0..n)
            .map(|i| Notification {
                channel: "c".into(),
                payload: i.to_string(),
                pid: 1,
                received_at: jiff::Timestamp::UNIX_EPOCH,
                fetched: None,
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
                assert_eq!((b.len(), gap.kind, gap.dropped), (10, GapKind::Overflow, 8));
            }
            other => panic!("{other:?}"),
        }
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
            consumer.try_take().len()
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
                .take(Some(Instant::now() + Duration::from_millis(20)))
                .is_empty()
        );
        queue.push(Event::OutputClosed);
        assert_eq!(queue.take(None).len(), 1);
    }
}
