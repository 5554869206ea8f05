//! Notifications to stdout, flushed per line on a terminal and per batch elsewhere.
//!
//! Flushing per batch (everything already received, then one flush before blocking again) is
//! as prompt as flushing each line and much cheaper (xh's buffer.rs does the same). A failed
//! write is a [`StdoutError`]: a broken pipe ends the run quietly with status 0.
//!
//! Into a pipe, writes never block and never leave a line half written when they can help it:
//! stdout is reopened without blocking (`/proc/self/fd/1`: a file description of our own, so
//! nobody else sharing the pipe is affected), lines go out in writes of at most `PIPE_BUF`
//! bytes (all or nothing, for a pipe), or of up to the pipe's size when it is empty, and
//! between writes the main thread waits in `poll`. So when the run must end while the reader
//! takes nothing (`--on-overflow exit`), main is waiting between two lines, sees
//! [`StopWriting`], and ends the run with the stream ending in a whole line. A line longer than
//! `PIPE_BUF` waits for an empty pipe; one longer than the pipe itself is written in pieces,
//! and only if the reader stops in the middle of one of those for 5 s is it cut.

use super::Sink;
use crate::exit::StdoutError;
use crate::format::Encoder;
use crate::notification::{Gap, Notification};
use anyhow::{Result, anyhow};
use std::fs::File;
use std::io::{self, IsTerminal, StdoutLock, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The buffered size at which lines are written without waiting for the loop's flush.
const BUFFER_BYTES: usize = 64 * 1024;
/// How long a writer waiting for the pipe to empty (for a long line) sleeps between looks.
const EMPTY_POLL: Duration = Duration::from_millis(20);
/// How long a writer waits for room, at most, before it looks at [`StopWriting`] again.
const ROOM_POLL: Duration = Duration::from_millis(100);
/// How long a line cut by a pipe that filled up may wait to be completed once the run must end.
const CUT_LINE_GRACE: Duration = Duration::from_secs(5);
/// What one write to a pipe moves all or nothing of (POSIX's `PIPE_BUF` on Linux).
const PIPE_BUF: usize = 4096;

/// Set, with the reason, when the run must end without writing what is still buffered.
pub(crate) type StopWriting = Arc<OnceLock<String>>;

pub(crate) struct Stdout {
    out: StdoutLock<'static>,
    buf: Vec<u8>,
    encoder: Encoder,
    flush_each_line: bool,
    /// When stdout is a pipe: the pipe, opened again without blocking, and its size.
    pipe: Option<(File, usize)>,
    stop: StopWriting,
}

impl Stdout {
    pub(crate) fn new(encoder: Encoder, stop: StopWriting) -> Stdout {
        let stdout = io::stdout();
        let flush_each_line = stdout.is_terminal();
        let pipe = open_pipe(&stdout);
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
        let result = match &mut self.pipe {
            Some((pipe, size)) => write_into_pipe(pipe, *size, &self.buf, &self.stop),
            None => self
                .out
                .write_all(&self.buf)
                .map_err(|e| StdoutError(e).into()),
        };
        self.buf.clear();
        result
    }
}

/// The express lane into a stdout pipe: while the main loop has nothing to write, the source
/// thread writes a small batch itself, saving the hand-off to main (a thread wake-up, tens of
/// microseconds on a virtual machine) on the way from the server to the reader. Only what
/// goes in one write that a pipe takes all or nothing of (`PIPE_BUF`), and only when there is
/// room: it never blocks and never leaves a line half written. Anything else, or a failed
/// write, goes the usual way (the main loop's [`Stdout`], which reports the failure).
pub(crate) struct Express {
    pipe: File,
    encoder: Encoder,
    buf: Vec<u8>,
}

impl Express {
    /// The lane, when stdout is a pipe.
    pub(crate) fn open(encoder: Encoder) -> Option<Express> {
        let (pipe, _) = open_pipe(&io::stdout())?;
        Some(Express {
            pipe,
            encoder,
            buf: Vec::with_capacity(PIPE_BUF),
        })
    }

    /// Writes `batch` whole, or nothing: false when it does not fit in one write or the pipe
    /// has no room for it now.
    pub(crate) fn write(&mut self, batch: &[Notification]) -> io::Result<bool> {
        self.buf.clear();
        for n in batch {
            self.encoder.write(&mut self.buf, n)?;
            if self.buf.len() > PIPE_BUF {
                return Ok(false);
            }
        }
        loop {
            return match self.pipe.write(&self.buf) {
                Ok(n) if n == self.buf.len() => Ok(true),
                // Not for a write of at most PIPE_BUF into a pipe; said, not hidden, if ever.
                Ok(_) => Err(io::Error::other("a pipe took part of an atomic write")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}

/// Stdout again, without blocking, and the pipe's size; `None` when stdout is not a pipe (or
/// cannot be reopened: then writes block as usual).
fn open_pipe(stdout: &io::Stdout) -> Option<(File, usize)> {
    use nix::sys::stat::{SFlag, fstat};
    let stat = fstat(stdout.as_fd()).ok()?;
    if !SFlag::from_bits_truncate(stat.st_mode).contains(SFlag::S_IFIFO) {
        return None;
    }
    let size = nix::fcntl::fcntl(stdout.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).ok()?;
    let pipe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open("/proc/self/fd/1")
        .ok()?;
    Some((pipe, usize::try_from(size).ok()?))
}

/// Writes `buf` (whole lines) into the pipe without ever blocking in the kernel: see the
/// module documentation.
fn write_into_pipe(pipe: &mut File, size: usize, buf: &[u8], stop: &StopWriting) -> Result<()> {
    let mut written = 0;
    let mut stopped_at = None;
    // Looks at a pipe not yet empty enough for a long line, since the last write.
    let mut idle: u32 = 0;
    while written < buf.len() {
        let mid_line = written > 0 && buf[written - 1] != b'\n';
        if let Some(why) = stop.get() {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if !mid_line || since.elapsed() >= CUT_LINE_GRACE {
                return Err(anyhow!("{why}"));
            }
        }
        let pending = &buf[written..];
        let empty = queued(pipe) == 0;
        let limit = if empty { size.max(PIPE_BUF) } else { PIPE_BUF };
        let n = match mid_line {
            // The rest of a line already begun: as much of it as may go at once.
            true => line_end(pending).min(limit),
            false => match whole_lines(pending, limit) {
                0 if line_end(pending) > size => line_end(pending).min(limit),
                n => n,
            },
        };
        if n == 0 {
            // A long line waits for an empty pipe, where it fits whole.
            if reader_gone(pipe) {
                pipe.write_all(pending).map_err(StdoutError)?;
                return Ok(());
            }
            idle += 1;
            match idle {
                // A reader that keeps up empties the pipe within microseconds: look again at
                // once a few times, then back off to EMPTY_POLL for one that stalled.
                0..=64 => std::thread::yield_now(),
                n => {
                    std::thread::sleep(EMPTY_POLL.min(Duration::from_micros(50 << (n - 64).min(9))))
                }
            }
            continue;
        }
        match pipe.write(&pending[..n]) {
            Ok(k) => {
                written += k;
                idle = 0;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(pipe),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StdoutError(e).into()),
        }
    }
    Ok(())
}

/// The length of the first line of `bytes`, its newline included.
fn line_end(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1)
}

/// The length of the longest run of whole lines at the start of `bytes` within `limit`.
fn whole_lines(bytes: &[u8], limit: usize) -> usize {
    if bytes.len() <= limit {
        return bytes.len();
    }
    bytes[..limit]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

/// Waits until the pipe takes data (or its reader is gone), at most [`ROOM_POLL`].
fn wait_writable(pipe: &File) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLOUT)];
    let timeout = PollTimeout::try_from(ROOM_POLL).unwrap_or(PollTimeout::MAX);
    let _ = poll(&mut fds, timeout);
}

/// Whether the pipe's reader has closed it.
fn reader_gone(pipe: &File) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// Bytes waiting in the pipe for its reader (some, when that cannot be told).
fn queued(pipe: &File) -> u64 {
    rustix::io::ioctl_fionread(pipe).unwrap_or(1)
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
