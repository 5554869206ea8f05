//! `pipe --consumer NAME --connect HOST:PORT`: durable events to one TCP peer, acknowledged
//! only once the peer must have read them.
//!
//! A write to a socket only hands bytes to the kernel: when a connection is lost, what sat in
//! this socket's send buffer and in the peer's receive buffer is gone unread. So a line is
//! acknowledged only once more bytes than those buffers can hold have been written after it
//! on the same connection (then the peer has read it), or when the run ends and the peer,
//! told by a half-close that nothing more comes, closes its end too (it read everything).
//! Until then the lines are kept (at most about that window, some megabytes), and a new
//! connection after a lost one begins with them again: the peer may see a line twice, never
//! miss one. A crash repeats at most what was unacknowledged.
//!
//! The loop writes on its own thread, and waits while the peer is away or slow: the events
//! wait in the outbox meanwhile (nothing is dropped, and no gap record is written).

use super::Sink;
use super::peer::{open_peer, risk_window};
use super::socket::{hung_up, write_from};
use crate::backoff::backoff;
use crate::exit::UsageError;
use crate::format::Encoder;
use crate::msg;
use crate::notification::{Gap, Notification, Position, Watermark};
use anyhow::Result;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the end of a run waits for the peer to close its end.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct AckedPeer {
    address: String,
    encoder: Encoder,
    stream: Option<TcpStream>,
    /// Lines written since the last flush, and the last event among them.
    buf: Vec<u8>,
    last: Option<Position>,
    /// What the current connection was sent and the peer may not have read yet, oldest
    /// first, with the last event of each chunk; and their bytes.
    unread: VecDeque<(Vec<u8>, Option<Position>)>,
    unread_bytes: usize,
    /// The bytes a lost connection can take with it (see `peer::risk_window`).
    window: usize,
    mark: Option<Arc<Watermark>>,
    attempts: u32,
}

impl AckedPeer {
    pub(crate) fn connect(address: &str, encoder: Encoder) -> Result<AckedPeer> {
        if !super::socket::host_port(address) {
            return Err(UsageError(format!("--connect needs HOST:PORT, not \"{address}\"")).into());
        }
        Ok(AckedPeer {
            address: address.to_owned(),
            encoder,
            stream: None,
            buf: Vec::new(),
            last: None,
            unread: VecDeque::new(),
            unread_bytes: 0,
            window: 0,
            mark: None,
            attempts: 0,
        })
    }

    /// Connects, unless connected, retrying with backoff for as long as it takes, and sends
    /// the new connection what the lost one may not have delivered; false when a signal ends
    /// the run first.
    fn connect_now(&mut self) -> bool {
        while self.stream.is_none() {
            if crate::signals::stopping() {
                return false;
            }
            match open_peer(&self.address) {
                Ok(stream) => {
                    msg::info(&format!("connected to the TCP peer {}", self.address));
                    // Writes wait in slices, so that a signal is seen while the peer does not
                    // read.
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                    self.window = risk_window(&stream);
                    self.attempts = 0;
                    self.stream = Some(stream);
                    self.resend();
                }
                Err(e) => {
                    if self.attempts == 0 {
                        msg::warn(&format!(
                            "could not connect to the TCP peer {}: {e}; retrying (the events \
                             wait in the database)",
                            self.address
                        ));
                    }
                    self.attempts += 1;
                    let until =
                        Instant::now() + backoff(self.attempts).max(Duration::from_millis(100));
                    while Instant::now() < until && !crate::signals::stopping() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        true
    }

    /// Sends the unread lines of a lost connection again (a failure loses this one too).
    fn resend(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let failed = self
            .unread
            .iter()
            .find_map(|(chunk, _)| send(stream, chunk).err());
        match failed {
            Some(Sent::Lost(why)) => self.lost(&why),
            Some(Sent::Stopped) => self.stream = None,
            None => {}
        }
    }

    fn lost(&mut self, why: &str) {
        self.stream = None;
        msg::warn(&format!(
            "lost the TCP peer {}: {why}; reconnecting, and sending the last {} lines again \
             (the peer may not have read them)",
            self.address,
            self.unread
                .iter()
                .map(|(c, _)| c.iter().filter(|b| **b == b'\n').count())
                .sum::<usize>()
        ));
    }

    /// Acknowledges the chunks that more than the window has followed: the peer read them.
    fn settle(&mut self) {
        while let Some((chunk, at)) = self.unread.front() {
            if self.unread_bytes - chunk.len() < self.window {
                break;
            }
            self.unread_bytes -= chunk.len();
            if let (Some(mark), Some(at)) = (&self.mark, at) {
                mark.advance(*at);
            }
            self.unread.pop_front();
        }
    }
}

/// Why a chunk did not go out whole.
enum Sent {
    /// The connection is lost (why, in words).
    Lost(String),
    /// A signal ends the run while the peer does not read.
    Stopped,
}

/// Writes `chunk` whole, in the socket's write-timeout slices, looking for a signal between
/// them.
fn send(stream: &mut TcpStream, chunk: &[u8]) -> Result<(), Sent> {
    let mut offset = 0;
    loop {
        match write_from(stream, chunk, &mut offset) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if crate::signals::stopping() {
                    return Err(Sent::Stopped);
                }
            }
            Err(e) => return Err(Sent::Lost(e.to_string())),
        }
    }
}

impl Sink for AckedPeer {
    fn write(&mut self, n: &Notification) -> Result<()> {
        self.encoder.write(&mut self.buf, n)?;
        if n.stored.is_some() {
            self.last = n.stored;
        }
        Ok(())
    }

    /// Durable reading has no gaps.
    fn write_gap(&mut self, _gap: &Gap) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buf);
        loop {
            if !self.connect_now() {
                // The run ends: these lines are not acknowledged, and come again next time.
                return Ok(());
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            // A peer that hung up still accepts a first write, into the void: look first.
            if hung_up(stream) {
                self.lost("closed the connection");
                continue;
            }
            match send(stream, &chunk) {
                Ok(()) => break,
                Err(Sent::Lost(why)) => self.lost(&why),
                // The run ends: these lines are not acknowledged, and come again next time.
                Err(Sent::Stopped) => {
                    self.stream = None;
                    return Ok(());
                }
            }
        }
        self.unread_bytes += chunk.len();
        self.unread.push_back((chunk, self.last.take()));
        self.settle();
        Ok(())
    }

    fn acknowledges(&mut self, mark: &Arc<Watermark>) -> bool {
        self.mark = Some(Arc::clone(mark));
        true
    }

    /// Half-closes the connection and waits for the peer to close its end: then it has read
    /// everything, which is acknowledged.
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        let Some(mut stream) = self.stream.take() else {
            return Ok(());
        };
        // A peer that closed before being told the end may have left lines unread.
        if hung_up(&stream) {
            if !self.unread.is_empty() {
                msg::warn(&format!(
                    "the TCP peer {} closed the connection before the end: what it may not \
                     have read is not acknowledged, and comes again on the next run",
                    self.address
                ));
            }
            return Ok(());
        }
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut buf = [0u8; 4096];
        let why = loop {
            if Instant::now() >= deadline {
                break format!("did not close its end within {} s", CLOSE_WAIT.as_secs());
            }
            match stream.read(&mut buf) {
                // Its end closed after ours: it read everything, unless lines still on the
                // way reach a closed socket, whose reset comes a moment later.
                Ok(0) => {
                    std::thread::sleep(Duration::from_millis(50));
                    if super::socket::reset(&stream) {
                        break "reset the connection after closing it (lines may be unread)"
                            .to_owned();
                    }
                    self.window = 0;
                    self.settle();
                    return Ok(());
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                // Closed with lines still unread in its buffer, the kernel resets it.
                Err(e) => break format!("ended the connection before reading everything ({e})"),
            }
        };
        if !self.unread.is_empty() {
            msg::warn(&format!(
                "the TCP peer {} {why} after the last line: what it may not have read is not \
                 acknowledged, and comes again on the next run",
                self.address
            ));
        }
        Ok(())
    }
}
