//! Notifications to stdout, flushed per line on a terminal and per batch elsewhere.
//!
//! Flushing per batch (everything already received, then one flush before blocking again) is
//! as prompt as flushing each line and much cheaper (xh's buffer.rs does the same). A failed
//! write is a [`StdoutError`]: a broken pipe ends the run quietly with status 0.
//!
//! Into a pipe, only whole lines that fit in it are written, so a write never blocks halfway
//! through a line: when the run must end while the reader takes nothing (`--on-overflow exit`),
//! the main thread is waiting between lines, sees [`StopWriting`], and ends the run with the
//! stream ending in a whole line. (A line longer than the pipe can hold is written as it
//! goes.)

use super::Sink;
use crate::exit::StdoutError;
use crate::format::Encoder;
use crate::notification::{Gap, Notification};
use anyhow::{Result, anyhow};
use std::io::{self, IsTerminal, StdoutLock, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The buffered size at which lines are written without waiting for the loop's flush.
const BUFFER_BYTES: usize = 64 * 1024;
/// How often a writer waiting for room in the pipe looks again.
const ROOM_POLL: Duration = Duration::from_millis(10);
/// The room a writable pipe has at least (Linux).
const PIPE_BUF: usize = 4096;

/// Set, with the reason, when the run must end without writing what is still buffered.
pub(crate) type StopWriting = Arc<OnceLock<String>>;

pub(crate) struct Stdout {
    out: StdoutLock<'static>,
    buf: Vec<u8>,
    encoder: Encoder,
    flush_each_line: bool,
    /// The pipe's capacity, when stdout is a pipe.
    pipe: Option<usize>,
    stop: StopWriting,
}

impl Stdout {
    pub(crate) fn new(encoder: Encoder, stop: StopWriting) -> Stdout {
        let stdout = io::stdout();
        let flush_each_line = stdout.is_terminal();
        let pipe = pipe_capacity(&stdout);
        Stdout {
            out: stdout.lock(),
            buf: Vec::with_capacity(BUFFER_BYTES),
            encoder,
            flush_each_line,
            pipe,
            stop,
        }
    }

    /// Writes out what is buffered (whole lines).
    fn write_buffered(&mut self) -> Result<()> {
        let result = match self.pipe {
            Some(capacity) => self.write_into_pipe(capacity),
            None => self
                .out
                .write_all(&self.buf)
                .map_err(|e| StdoutError(e).into()),
        };
        self.buf.clear();
        result
    }

    /// Writes the buffer into the pipe, each write whole lines that fit in the room it has.
    fn write_into_pipe(&mut self, capacity: usize) -> Result<()> {
        let mut written = 0;
        while written < self.buf.len() {
            let pending = &self.buf[written..];
            let room = capacity.saturating_sub(queued(&self.out));
            let whole = match pending.len() <= room {
                true => pending.len(),
                false => pending[..room]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1),
            };
            let line = pending
                .iter()
                .position(|&b| b == b'\n')
                .map_or(pending.len(), |i| i + 1);
            let n = match whole {
                // Too long to ever fit, or the reader is gone (the write then says so).
                0 if line > capacity || reader_gone(&self.out) => line,
                0 => {
                    if let Some(why) = self.stop.get() {
                        return Err(anyhow!("{why}"));
                    }
                    wait_for_room(&self.out, room);
                    continue;
                }
                n => n,
            };
            self.out.write_all(&pending[..n]).map_err(StdoutError)?;
            written += n;
        }
        Ok(())
    }
}

/// The capacity of the pipe stdout is, or `None` when it is not a pipe.
fn pipe_capacity(stdout: &io::Stdout) -> Option<usize> {
    let stat = nix::sys::stat::fstat(stdout.as_fd()).ok()?;
    let fifo = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode)
        .contains(nix::sys::stat::SFlag::S_IFIFO);
    if !fifo {
        return None;
    }
    let size = nix::fcntl::fcntl(stdout.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).ok()?;
    usize::try_from(size).ok()
}

/// Waits a little for the reader to make room: until the pipe is writable (POLLOUT says
/// `PIPE_BUF` bytes are free) when less is, else a short sleep, up to [`ROOM_POLL`].
fn wait_for_room(out: &StdoutLock<'_>, room: usize) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if room >= PIPE_BUF {
        std::thread::sleep(Duration::from_millis(1));
        return;
    }
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
    let timeout = PollTimeout::try_from(ROOM_POLL).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, timeout).is_err() {
        std::thread::sleep(ROOM_POLL);
    }
}

/// Whether the pipe's reader has closed it.
fn reader_gone(out: &StdoutLock<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// Bytes waiting in the pipe for its reader (all of it, when that cannot be told).
fn queued(out: &StdoutLock<'_>) -> usize {
    rustix::io::ioctl_fionread(out.as_fd()).map_or(usize::MAX, |n| n as usize)
}

impl Sink for Stdout {
    /// Writes one notification; flushes it too on a terminal.
    fn write(&mut self, n: &Notification) -> Result<()> {
        self.encoder.write(&mut self.buf, n).map_err(StdoutError)?;
        if self.flush_each_line {
            return self.flush();
        }
        if self.buf.len() >= BUFFER_BYTES {
            self.write_buffered()?;
        }
        Ok(())
    }

    /// Writes a gap record (in NDJSON), flushed at once: the consumer should know promptly.
    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        self.encoder
            .write_gap(&mut self.buf, gap)
            .map_err(StdoutError)?;
        self.flush()
    }

    /// Hands everything written so far to the reader.
    fn flush(&mut self) -> Result<()> {
        self.write_buffered()?;
        Ok(self.out.flush().map_err(StdoutError)?)
    }
}
