//! NDJSON over TCP: to one peer that pgnotify connects to (`pipe --connect`), or to every
//! client that connects to pgnotify (`pipe --serve`).
//!
//! Each destination has an [`Outbox`]: a bounded queue of chunks of whole NDJSON lines, written
//! by a thread of its own, so a slow or absent destination never slows the relay, the server
//! connection, or another client.
//!
//! - The peer (`--connect`) is connected, and reconnected, with backoff and TCP keepalive.
//!   While it is away, lines wait in its outbox (4 MiB); past that they are dropped and
//!   counted, and a gap record with the count goes out first once there is room. A line cut by
//!   a lost connection is sent again whole on the next one, so every connection's stream starts
//!   at a line boundary.
//! - A client (`--serve`) gets every line from the moment it connected. One that does not read
//!   fast enough to keep its outbox (1 MiB) from filling is disconnected, with a stderr line;
//!   nobody else waits for it.

use super::{Printer, Sink};
use crate::events::{Gap, GapKind};
use crate::msg;
use crate::notification::Notification;
use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What may wait for the peer while it is away.
const PEER_BYTES: usize = 4 << 20;
/// How many `--serve` clients may be connected at once; more are refused.
const MAX_CLIENTS: usize = 256;
/// What may wait for one `--serve` client before it is disconnected.
const CLIENT_BYTES: usize = 1 << 20;
/// The size at which buffered lines are handed to the destinations without waiting for the
/// relay's flush: a burst becomes many chunks, not one chunk larger than any outbox.
const CHUNK_BYTES: usize = 64 * 1024;
/// How long the end of a run waits for the peer to take what is buffered.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// A bounded queue of chunks of whole lines for one destination.
///
/// Past `limit` bytes, more is taken only while the destination keeps making progress (it
/// finished a write within the last second) and up to four times the limit: a healthy reader
/// that is briefly slower than a burst is not cut off, a stalled one is.
pub struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
    limit: usize,
    /// Who it is for, in messages ("the TCP peer HOST:PORT").
    name: String,
    /// Whether a gap record goes out after a drop.
    gaps: bool,
}

struct OutboxState {
    chunks: VecDeque<Arc<[u8]>>,
    bytes: usize,
    writing: bool,
    closed: bool,
    /// When a write last finished (or started); `None`: never, which counts as stalled.
    progress: Option<Instant>,
    /// Lines refused since when, and how many (`--connect` only).
    dropping: Option<(jiff::Timestamp, u64)>,
}

/// How long a destination over its limit may go without finishing a write.
const PROGRESS_GRACE: Duration = Duration::from_secs(1);

impl Outbox {
    fn new(limit: usize, name: String, gaps: bool) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                chunks: VecDeque::new(),
                bytes: 0,
                writing: false,
                closed: false,
                progress: None,
                dropping: None,
            }),
            changed: Condvar::new(),
            limit,
            name,
            gaps,
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `size` more bytes may go in (see the type's documentation).
    fn has_room(&self, state: &OutboxState, size: usize) -> bool {
        let after = state.bytes + size;
        let stalled = state.progress.is_none_or(|p| p.elapsed() > PROGRESS_GRACE);
        !state.closed && after <= 4 * self.limit && (after <= self.limit || !stalled)
    }

    /// Adds the chunks, in order, all or none: false when there is no room or the outbox is
    /// closed.
    fn push(&self, chunks: &[Arc<[u8]>]) -> bool {
        let size: usize = chunks.iter().map(|c| c.len()).sum();
        let mut state = self.lock();
        if !self.has_room(&state, size) {
            return false;
        }
        state.bytes += size;
        state.chunks.extend(chunks.iter().cloned());
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Adds a chunk of `lines` notifications, or counts them as dropped when there is no room.
    /// After a drop, a gap record with the count goes in first (`gaps`), as soon as there is
    /// room for a chunk or the backlog has drained (see `pop`).
    fn push_counted(&self, chunk: Arc<[u8]>, lines: u64) {
        let mut state = self.lock();
        if self.has_room(&state, chunk.len() + 512) {
            if let Some(gap) = take_gap(&mut state, self.gaps, &self.name) {
                state.bytes += gap.len();
                state.chunks.push_back(gap);
            }
            state.bytes += chunk.len();
            state.chunks.push_back(chunk);
            drop(state);
            self.changed.notify_all();
            return;
        }
        let entry = state.dropping.get_or_insert_with(|| {
            msg::warn(&format!(
                "{} is away or slow: dropping notifications until it catches up",
                self.name
            ));
            (jiff::Timestamp::now(), 0)
        });
        entry.1 += lines;
    }

    /// The next chunk, waiting for one; `None` once closed. Until [`Outbox::done`], the chunk
    /// counts as being written.
    fn pop(&self) -> Option<Arc<[u8]>> {
        match self.next(None) {
            Popped::Chunk(chunk) => Some(chunk),
            Popped::Idle | Popped::Closed => None,
        }
    }

    /// Like `pop`, but gives up after `wait` when nothing comes.
    fn pop_within(&self, wait: Duration) -> Popped {
        self.next(Some(Instant::now() + wait))
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
                state.chunks.push_back(gap);
            }
            if let Some(chunk) = state.chunks.pop_front() {
                state.bytes = state.bytes.saturating_sub(chunk.len());
                if !state.writing {
                    state.progress = Some(Instant::now());
                }
                state.writing = true;
                return Popped::Chunk(chunk);
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Popped::Idle;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// The chunk from the last `pop` is written.
    fn done(&self) {
        let mut state = self.lock();
        state.writing = false;
        state.progress = Some(Instant::now());
        drop(state);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until everything is written, at most `timeout`; false if it was not.
    fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.closed && (state.writing || !state.chunks.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Ends a drop, if one is going on: says so, and makes the gap record when `gaps`.
fn take_gap(state: &mut OutboxState, gaps: bool, name: &str) -> Option<Arc<[u8]>> {
    let (from, dropped) = state.dropping.take()?;
    msg::warn(&format!(
        "{name} missed {dropped} notifications while it was away or slow"
    ));
    if !gaps {
        return None;
    }
    let mut record = Vec::new();
    super::json::write_gap(&mut record, &overflow_gap(from, dropped)).ok()?;
    Some(Arc::from(record.into_boxed_slice()))
}

/// What `Outbox::pop_within` found.
enum Popped {
    Chunk(Arc<[u8]>),
    Idle,
    Closed,
}

/// Encodes NDJSON lines into a buffer until the relay flushes.
struct Lines {
    printer: Printer,
    buf: Vec<u8>,
    count: u64,
}

impl Lines {
    fn new(printer: Printer) -> Lines {
        Lines {
            printer,
            buf: Vec::with_capacity(64 * 1024),
            count: 0,
        }
    }

    /// Encodes a notification; true when enough is buffered to hand on as a chunk.
    fn write(&mut self, n: &Notification) -> io::Result<bool> {
        self.count += 1;
        self.printer.write(&mut self.buf, n)?;
        Ok(self.buf.len() >= CHUNK_BYTES)
    }

    fn write_gap(&mut self, gap: &Gap) -> io::Result<()> {
        self.printer.write_gap(&mut self.buf, gap)
    }

    /// The lines written since the last take, as one chunk, and how many notifications.
    fn take(&mut self) -> Option<(Arc<[u8]>, u64)> {
        if self.buf.is_empty() {
            return None;
        }
        let chunk = Arc::from(std::mem::take(&mut self.buf).into_boxed_slice());
        Some((chunk, std::mem::take(&mut self.count)))
    }
}

/// `--connect`: the sink side of the peer.
pub struct Peer {
    lines: Lines,
    outbox: Arc<Outbox>,
    address: String,
}

/// Starts the thread that connects to `address` (HOST:PORT) and writes to it.
pub fn connect(address: &str, printer: Printer) -> Result<Peer> {
    if address
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        bail!("--connect needs HOST:PORT, not \"{address}\"");
    }
    let outbox = Outbox::new(
        PEER_BYTES,
        format!("the TCP peer {address}"),
        printer.gap_records(),
    );
    let writer = PeerWriter {
        address: address.to_owned(),
        outbox: Arc::clone(&outbox),
    };
    std::thread::Builder::new()
        .name("peer".into())
        .spawn(move || writer.run())
        .context("could not start the TCP peer thread")?;
    Ok(Peer {
        lines: Lines::new(printer),
        outbox,
        address: address.to_owned(),
    })
}

impl Sink for Peer {
    fn write(&mut self, n: &Notification) -> io::Result<()> {
        if self.lines.write(n)? {
            self.flush()?;
        }
        Ok(())
    }

    fn write_gap(&mut self, gap: &Gap) -> io::Result<()> {
        self.lines.write_gap(gap)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some((chunk, count)) = self.lines.take() {
            self.outbox.push_counted(chunk, count);
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        if !self.outbox.wait_empty(FINISH_WAIT) {
            msg::warn(&format!(
                "the TCP peer {} did not take everything within {} s",
                self.address,
                FINISH_WAIT.as_secs()
            ));
        }
        Ok(())
    }
}

fn overflow_gap(from: jiff::Timestamp, dropped: u64) -> Gap {
    Gap {
        kind: GapKind::Overflow,
        reason: format!("the TCP peer was away or too slow: {dropped} notifications were dropped"),
        from,
        until: jiff::Timestamp::now(),
        dropped,
    }
}

/// The thread that owns the connection to the peer.
struct PeerWriter {
    address: String,
    outbox: Arc<Outbox>,
}

impl PeerWriter {
    fn run(self) {
        let mut stream: Option<TcpStream> = None;
        let mut current: Option<(Arc<[u8]>, usize)> = None;
        let mut attempt = 0;
        loop {
            let Some(connected) = stream.as_mut() else {
                match open_peer(&self.address) {
                    Ok(s) => {
                        msg::info(&format!("connected to the TCP peer {}", self.address));
                        stream = Some(s);
                        attempt = 0;
                    }
                    Err(e) => {
                        if attempt == 0 {
                            msg::warn(&format!(
                                "could not connect to the TCP peer {}: {e}; retrying",
                                self.address
                            ));
                        }
                        std::thread::sleep(crate::source::backoff(attempt + 1));
                        attempt += 1;
                    }
                }
                continue;
            };
            if current.is_none() {
                match self.outbox.pop() {
                    Some(chunk) => current = Some((chunk, 0)),
                    None => return,
                }
            }
            let Some((chunk, offset)) = current.as_mut() else {
                continue;
            };
            // A peer that hung up still accepts a first write, into the void: look first.
            if hung_up(connected) {
                stream = None;
                msg::warn(&format!(
                    "the TCP peer {} closed the connection; reconnecting",
                    self.address
                ));
                continue;
            }
            match write_from(connected, chunk, offset) {
                Ok(()) => {
                    current = None;
                    self.outbox.done();
                }
                Err(e) => {
                    *offset = line_start(chunk, *offset);
                    stream = None;
                    msg::warn(&format!(
                        "lost the TCP peer {}: {e}; reconnecting",
                        self.address
                    ));
                }
            }
        }
    }
}

fn open_peer(address: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => {
                keepalive(&stream);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Keepalive (30 s idle, 10 s interval, 3 probes) for an idle connection, and TCP_USER_TIMEOUT
/// (60 s) so that a destination that stops acknowledging is given up instead of blocking a
/// write for the kernel's 15 minutes.
fn keepalive(stream: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = setsockopt(stream, sockopt::TcpKeepIdle, &30);
    let _ = setsockopt(stream, sockopt::TcpKeepInterval, &10);
    let _ = setsockopt(stream, sockopt::TcpKeepCount, &3);
    let _ = setsockopt(stream, sockopt::TcpUserTimeout, &60_000);
}

/// True when the peer has closed its side (or the connection failed). Anything the peer sent
/// is read and ignored on the way.
fn hung_up(stream: &TcpStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    loop {
        match recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(nix::errno::Errno::EAGAIN) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// Writes `chunk[*offset..]`, advancing `offset` as bytes go out.
fn write_from(stream: &mut TcpStream, chunk: &[u8], offset: &mut usize) -> io::Result<()> {
    while *offset < chunk.len() {
        match stream.write(&chunk[*offset..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *offset += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the line containing `offset` starts: a cut line is sent again whole.
fn line_start(chunk: &[u8], offset: usize) -> usize {
    chunk[..offset]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1)
}

/// `--serve`: every connected client gets every line.
pub struct Server {
    lines: Lines,
    clients: Arc<Mutex<Vec<Client>>>,
}

struct Client {
    address: SocketAddr,
    outbox: Arc<Outbox>,
    stream: TcpStream,
}

/// Listens on `spec` (PORT, or ADDR:PORT) and starts accepting clients.
pub fn serve(spec: &str, printer: Printer) -> Result<Server> {
    let address = listen_address(spec)?;
    let listener =
        TcpListener::bind(address).with_context(|| format!("could not listen on {address}"))?;
    let local = listener.local_addr()?;
    if !address.ip().is_loopback() {
        msg::warn(&format!(
            "serving on {local}: anyone who can reach it gets every notification, without authentication"
        ));
    }
    msg::info(&format!("serving NDJSON on {local}"));
    let clients = Arc::new(Mutex::new(Vec::new()));
    let registry = Arc::clone(&clients);
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept(listener, &registry))
        .context("could not start the TCP server thread")?;
    Ok(Server {
        lines: Lines::new(printer),
        clients,
    })
}

/// `8080` means 127.0.0.1:8080: another address only when the user names it.
fn listen_address(spec: &str) -> Result<SocketAddr> {
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    match spec.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(address) => Ok(address),
        None => bail!("--serve needs PORT or ADDRESS:PORT, not \"{spec}\""),
    }
}

fn accept(listener: TcpListener, clients: &Mutex<Vec<Client>>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, say: do not spin, try again shortly.
                msg::warn(&format!("could not accept a client: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let Ok(address) = stream.peer_addr() else {
            continue;
        };
        let connected = match clients.lock() {
            Ok(mut list) => {
                list.retain(|c| !c.outbox.is_closed());
                list.len()
            }
            Err(_) => continue,
        };
        if connected >= MAX_CLIENTS {
            msg::warn(&format!(
                "refused client {address}: {MAX_CLIENTS} clients are connected already"
            ));
            continue;
        }
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        keepalive(&stream);
        let _ = stream.set_nodelay(true);
        let outbox = Outbox::new(CLIENT_BYTES, format!("client {address}"), false);
        let thread_outbox = Arc::clone(&outbox);
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || write_client(writer, address, &thread_outbox));
        if spawned.is_ok()
            && let Ok(mut list) = clients.lock()
        {
            list.push(Client {
                address,
                outbox,
                stream,
            });
            drop(list);
            msg::info(&format!("client {address} connected"));
        }
    }
}

fn write_client(mut stream: TcpStream, address: SocketAddr, outbox: &Outbox) {
    loop {
        // While idle, look every second whether the client hung up, so that it does not keep
        // its socket and thread until the next notification.
        let chunk = match outbox.pop_within(Duration::from_secs(1)) {
            Popped::Chunk(chunk) => chunk,
            Popped::Closed => return,
            Popped::Idle if hung_up(&stream) => {
                msg::info(&format!("client {address} left"));
                outbox.close();
                return;
            }
            Popped::Idle => continue,
        };
        if stream.write_all(&chunk).is_err() {
            if !outbox.is_closed() {
                msg::info(&format!("client {address} left"));
            }
            outbox.close();
            return;
        }
        outbox.done();
    }
}

impl Sink for Server {
    fn write(&mut self, n: &Notification) -> io::Result<()> {
        if self.lines.write(n)? {
            self.flush()?;
        }
        Ok(())
    }

    fn write_gap(&mut self, gap: &Gap) -> io::Result<()> {
        self.lines.write_gap(gap)
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some((chunk, _)) = self.lines.take() else {
            return Ok(());
        };
        let Ok(mut clients) = self.clients.lock() else {
            return Ok(());
        };
        clients.retain(|client| {
            if client.outbox.push(std::slice::from_ref(&chunk)) {
                return true;
            }
            if !client.outbox.is_closed() {
                msg::warn(&format!(
                    "client {} is not reading: disconnected (over {} KiB waited for it)",
                    client.address,
                    CLIENT_BYTES >> 10
                ));
                client.outbox.close();
                let _ = client.stream.shutdown(Shutdown::Both);
            }
            false
        });
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        let clients: Vec<Arc<Outbox>> = self
            .clients
            .lock()
            .map(|c| c.iter().map(|c| Arc::clone(&c.outbox)).collect())
            .unwrap_or_default();
        let deadline = Instant::now() + FINISH_WAIT;
        for outbox in clients {
            outbox.wait_empty(deadline.saturating_duration_since(Instant::now()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_line_restarts_at_its_beginning() {
        let chunk = b"{\"a\":1}\n{\"b\":2}\n";
        assert_eq!(line_start(chunk, 0), 0);
        assert_eq!(line_start(chunk, 3), 0);
        assert_eq!(line_start(chunk, 8), 8);
        assert_eq!(line_start(chunk, 12), 8);
    }

    #[test]
    fn an_outbox_is_bounded() {
        let outbox = Outbox::new(10, "test".into(), false);
        let chunk = |s: &[u8]| -> Arc<[u8]> { Arc::from(s) };
        assert!(outbox.push(&[chunk(b"12345")]));
        assert!(outbox.push(&[chunk(b"1"), chunk(b"1234")]));
        assert!(
            !outbox.push(&[chunk(b"1")]),
            "no progress yet: nothing over the limit"
        );
        outbox.lock().progress = Some(Instant::now());
        assert!(
            outbox.push(&[chunk(b"0123456789")]),
            "over the limit while making progress"
        );
        assert!(
            !outbox.push(&[chunk(&[b'x'; 30])]),
            "never over four times the limit"
        );
        outbox.lock().progress = Instant::now().checked_sub(2 * PROGRESS_GRACE);
        assert!(
            !outbox.push(&[chunk(b"1")]),
            "stalled over the limit: refused"
        );
        assert_eq!(outbox.pop().as_deref(), Some(&b"12345"[..]));
        assert_eq!(outbox.pop().as_deref(), Some(&b"1"[..]));
        outbox.done();
        outbox.close();
        assert_eq!(outbox.pop(), None);
    }

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(
            listen_address("8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            listen_address("0.0.0.0:9").unwrap(),
            "0.0.0.0:9".parse().unwrap()
        );
        assert!(listen_address("nonsense").is_err());
    }
}
