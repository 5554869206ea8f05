//! The bounded backlog of chunks of whole NDJSON lines that each network destination has
//! (a `--connect` peer, each `--serve` client; the WebSocket and SSE clients to come), written
//! by a thread of its own, so that a slow or absent destination never slows the loop, the
//! server connection, or another destination; and the [`Chunked`] sink that fills them.

use super::Sink;
use crate::deadline;
use crate::format::{Encoder, write_gap_record};
use crate::msg;
use crate::notification::{Drops, Gap, Notification};
use crate::stats;
use anyhow::Result;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The size at which buffered lines are handed to the destinations without waiting for the
/// loop's flush: a burst becomes many chunks, not one chunk larger than any backlog.
const CHUNK_BYTES: usize = 64 * 1024;

/// A bounded queue of chunks of whole lines for one destination.
///
/// Past `limit` bytes, more is taken only while the destination keeps making progress (it
/// finished a write within the last second) and up to four times the limit: a healthy reader
/// that is briefly slower than a burst is not cut off, a stalled one is.
pub(crate) struct Backlog {
    state: Mutex<BacklogState>,
    changed: Condvar,
    limit: usize,
    /// Who it is for, in messages ("the TCP peer HOST:PORT").
    name: String,
    /// The reason a gap record gives after a drop ("the TCP peer was away or too slow"), or
    /// `None`: no gap records.
    gaps: Option<&'static str>,
}

struct BacklogState {
    /// Each chunk with when it was handed over (its lines' notifications arrived just before).
    chunks: VecDeque<(Arc<[u8]>, jiff::Timestamp)>,
    bytes: usize,
    writing: bool,
    closed: bool,
    /// When a write last finished (or started); `None`: never, which counts as stalled.
    progress: Option<Instant>,
    /// Lines refused since when, and how many (`--connect` only).
    drops: Drops,
}

/// How long a destination over its limit may go without finishing a write.
const PROGRESS_GRACE: Duration = Duration::from_secs(1);

/// How long one hand-over to every client may wait for the threads of clients that read
/// (see [`Backlog::push_or_wait`]).
pub(super) const WRITER_WAIT: Duration = Duration::from_secs(2);

impl Backlog {
    pub(super) fn new(limit: usize, name: String, gaps: Option<&'static str>) -> Arc<Backlog> {
        Arc::new(Backlog {
            state: Mutex::new(BacklogState {
                chunks: VecDeque::new(),
                bytes: 0,
                writing: false,
                closed: false,
                progress: None,
                drops: Drops::default(),
            }),
            changed: Condvar::new(),
            limit,
            name,
            gaps,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BacklogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `size` more bytes may go in (see the type's documentation). A destination whose
    /// socket is `draining` (it takes data now) is never stalled, however long ago its thread
    /// last finished a write: after an idle spell, or with the CPU busy elsewhere, the thread
    /// may simply not have run yet.
    fn has_room(&self, state: &BacklogState, size: usize, draining: bool) -> bool {
        let after = state.bytes + size;
        let stalled = !draining && state.progress.is_none_or(|p| p.elapsed() > PROGRESS_GRACE);
        !state.closed && after <= 4 * self.limit && (after <= self.limit || !stalled)
    }

    /// Adds the chunks, in order, all or none: false when there is no room or the backlog is
    /// closed. `draining`: the destination's socket takes data now.
    pub(super) fn push(&self, chunks: &[Arc<[u8]>], draining: bool) -> bool {
        self.push_or_wait(chunks, || draining, Instant::now())
    }

    /// Adds the chunks like `push`, but while there is no room and the destination's socket
    /// takes data (`draining`, asked again each time), waits for its thread, at most until
    /// `deadline`: the destination is not what is slow then, its thread is (it has not had a
    /// core), and giving up on a client that reads is no cure. False when it still has no
    /// room.
    pub(super) fn push_or_wait(
        &self,
        chunks: &[Arc<[u8]>],
        draining: impl Fn() -> bool,
        deadline: Instant,
    ) -> bool {
        let size: usize = chunks.iter().map(|c| c.len()).sum();
        let mut state = self.lock();
        loop {
            if self.has_room(&state, size, false) {
                break;
            }
            let takes = draining();
            if self.has_room(&state, size, takes) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || !takes || left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left.min(Duration::from_millis(20)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.bytes += size;
        let now = jiff::Timestamp::now();
        state
            .chunks
            .extend(chunks.iter().map(|c| (Arc::clone(c), now)));
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Adds a chunk of `lines` notifications, or counts them as dropped when there is no room.
    /// After a drop, a gap record with the count goes in first (`gaps`), as soon as there is
    /// room for a chunk or the backlog has drained (see `pop`).
    pub(super) fn push_counted(&self, chunk: Arc<[u8]>, lines: u64) {
        let mut state = self.lock();
        if self.has_room(&state, chunk.len() + 512, false) {
            let now = jiff::Timestamp::now();
            if let Some(gap) = take_gap(&mut state, self.gaps, &self.name) {
                state.bytes += gap.len();
                state.chunks.push_back((gap, now));
            }
            state.bytes += chunk.len();
            state.chunks.push_back((chunk, now));
            drop(state);
            self.changed.notify_all();
            return;
        }
        stats::dropped_in_backlog(lines);
        if state.drops.count(lines) {
            msg::warn(&format!(
                "{} is away or slow: dropping notifications until it catches up",
                self.name
            ));
        }
    }

    /// The next chunk and when it was handed over, waiting for one; `None` once closed.
    /// Until [`Backlog::done`], the chunk counts as being written.
    pub(super) fn pop(&self) -> Option<(Arc<[u8]>, jiff::Timestamp)> {
        match self.next(None) {
            Popped::Chunk(chunk, at) => Some((chunk, at)),
            Popped::Idle | Popped::Closed => None,
        }
    }

    /// Like `pop`, but gives up after `wait` when nothing comes.
    pub(super) fn pop_within(&self, wait: Duration) -> Popped {
        self.next(deadline::after(wait))
    }

    /// The next chunk, waiting until `deadline` (`None`: as long as it takes). A drop whose
    /// backlog has drained is reported here, as a gap record, before anything newer.
    fn next(&self, deadline: Option<Instant>) -> Popped {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Popped::Closed;
            }
            if state.chunks.is_empty()
                && let Some(gap) = take_gap(&mut state, self.gaps, &self.name)
            {
                state.chunks.push_back((gap, jiff::Timestamp::now()));
            }
            if let Some((chunk, at)) = state.chunks.pop_front() {
                state.bytes = state.bytes.saturating_sub(chunk.len());
                if !state.writing {
                    state.progress = Some(Instant::now());
                }
                state.writing = true;
                return Popped::Chunk(chunk, at);
            }
            let idle =
                |s: &mut BacklogState| !s.closed && s.chunks.is_empty() && !s.drops.dropping();
            let timed_out;
            (state, timed_out) = deadline::wait_while(&self.changed, state, deadline, idle);
            if timed_out {
                return Popped::Idle;
            }
        }
    }

    /// The chunk from the last `pop` is written.
    pub(super) fn done(&self) {
        let mut state = self.lock();
        state.writing = false;
        state.progress = Some(Instant::now());
        drop(state);
        self.changed.notify_all();
    }

    /// Closes the backlog, and lets go of what waits in it at once (a chunk being written is
    /// the writer's until it returns).
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.chunks = VecDeque::new();
        state.bytes = 0;
        drop(state);
        self.changed.notify_all();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until everything is written, at most until `deadline`; false if it was not.
    pub(super) fn wait_empty(&self, deadline: Option<Instant>) -> bool {
        let busy = |s: &mut BacklogState| !s.closed && (s.writing || !s.chunks.is_empty());
        !deadline::wait_while(&self.changed, self.lock(), deadline, busy).1
    }
}

/// Ends a drop, if one is going on: says so, and makes the gap record when `gaps` says why.
fn take_gap(state: &mut BacklogState, gaps: Option<&str>, name: &str) -> Option<Arc<[u8]>> {
    let gap = state.drops.end(gaps.unwrap_or("dropped"))?;
    msg::warn(&format!(
        "{name} missed {} notifications while it was away or slow",
        gap.dropped
    ));
    gaps?;
    stats::gap(gap.kind);
    let mut record = Vec::new();
    write_gap_record(&mut record, &gap).ok()?;
    Some(Arc::from(record.into_boxed_slice()))
}

/// What `Backlog::pop_within` found.
pub(super) enum Popped {
    Chunk(Arc<[u8]>, jiff::Timestamp),
    Idle,
    Closed,
}

/// Where a [`Chunked`] sink hands its chunks: one peer's backlog, or every client's.
pub(crate) trait Deliver {
    /// Hands on a chunk of whole lines holding `lines` notifications.
    fn deliver(&mut self, chunk: Arc<[u8]>, lines: u64);
    /// At the end of a run: waits, boundedly, until what was handed on is written; an error
    /// when what had to arrive did not.
    fn finish(&mut self) -> Result<()>;
}

/// The sink of a network destination: encodes NDJSON lines into a buffer until the loop
/// flushes (or a chunk's worth is there), and hands them to its destination as one chunk.
pub(crate) struct Chunked<D> {
    encoder: Encoder,
    buf: Vec<u8>,
    count: u64,
    to: D,
}

impl<D: Deliver> Chunked<D> {
    pub(super) fn new(encoder: Encoder, to: D) -> Chunked<D> {
        Chunked {
            encoder,
            buf: Vec::with_capacity(CHUNK_BYTES),
            count: 0,
            to,
        }
    }
}

impl<D: Deliver> Sink for Chunked<D> {
    fn write(&mut self, n: &Notification) -> Result<()> {
        self.count += 1;
        self.encoder.write(&mut self.buf, n)?;
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        Ok(self.encoder.write_gap(&mut self.buf, gap)?)
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let chunk = Arc::from(std::mem::take(&mut self.buf).into_boxed_slice());
            self.to.deliver(chunk, std::mem::take(&mut self.count));
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.to.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_bounded() {
        let backlog = Backlog::new(10, "test".into(), None);
        let chunk = |s: &[u8]| -> Arc<[u8]> { Arc::from(s) };
        assert!(backlog.push(&[chunk(b"12345")], false));
        assert!(backlog.push(&[chunk(b"1"), chunk(b"1234")], false));
        assert!(
            !backlog.push(&[chunk(b"1")], false),
            "no progress yet: nothing over the limit"
        );
        backlog.lock().progress = Some(Instant::now());
        assert!(
            backlog.push(&[chunk(b"0123456789")], false),
            "over the limit while making progress"
        );
        assert!(
            !backlog.push(&[chunk(&[b'x'; 30])], true),
            "never over four times the limit"
        );
        backlog.lock().progress = Instant::now().checked_sub(2 * PROGRESS_GRACE);
        assert!(
            !backlog.push(&[chunk(b"1")], false),
            "stalled over the limit: refused"
        );
        assert!(
            backlog.push(&[chunk(b"1")], true),
            "a socket that takes data is not stalled, whenever its thread last wrote"
        );
        assert_eq!(backlog.pop().unwrap().0.as_ref(), b"12345");
        assert_eq!(backlog.pop().unwrap().0.as_ref(), b"1");
        backlog.done();
        backlog.close();
        assert_eq!(backlog.pop(), None);
    }

    #[test]
    fn a_full_backlog_whose_socket_takes_data_waits_for_its_writer() {
        let backlog = Backlog::new(10, "test".into(), None);
        let chunk = |n: usize| -> Arc<[u8]> { Arc::from(vec![b'x'; n]) };
        assert!(
            backlog.push(&[chunk(40)], true),
            "up to four times the limit"
        );
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(
            !backlog.push_or_wait(&[chunk(5)], || false, soon),
            "a socket that takes nothing: no waiting"
        );
        assert!(
            !backlog.push_or_wait(&[chunk(5)], || true, soon),
            "nobody writes: the wait ends at the deadline"
        );
        let writer = Arc::clone(&backlog);
        let popping = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            writer.pop();
            writer.done();
        });
        let later = Instant::now() + Duration::from_secs(10);
        assert!(backlog.push_or_wait(&[chunk(5)], || true, later));
        popping.join().unwrap();
    }
}
