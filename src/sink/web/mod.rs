//! `pipe --websocket` and `pipe --sse`: the stream for browsers, on one PostgreSQL
//! connection however many clients there are.
//!
//! Each notification is encoded once, into a WebSocket text frame and an SSE event, and the
//! loop's batch is handed to every client's bounded [`Backlog`] (a client that asked for some
//! channels gets a chunk made for its selection, once per selection). Each client has a thread
//! that writes its backlog; one whose backlog fills (1 MiB) is disconnected with a stderr line,
//! and nobody else waits for it.
//!
//! A connection is first a request: its head is read by a thread of its own within bounds
//! (`http`, at most 64 at once), and [`admit`] decides what it gets: the stream, the page,
//! an answer to a preflight, or an error status. The same rules apply to both kinds of
//! stream: the path, the token, the origin, the channels asked for.

mod http;
mod metrics;
mod sse;
mod websocket;

use super::FINISH_WAIT;
use super::Sink;
use super::backlog::{Backlog, WRITER_WAIT};
use super::server::listen_address;
use super::socket::{hung_up, keepalive, takes_data, write_from};
use crate::deadline;
use crate::exit::UsageError;
use crate::format::{Encoder, write_gap_record};
use crate::msg;
use crate::notification::{Gap, Notification};
use crate::sanitize::escape_controls;
use crate::stats;
use anyhow::{Context, Result, bail};
use http::{Answer, Method, Request, Unread};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub(crate) use metrics::serve as serve_metrics;

/// How many WebSocket and SSE clients may be connected at once; more are answered 503.
const MAX_CLIENTS: usize = 256;
/// How many connections may be sending their request at once: one more makes room by letting
/// the oldest go (408).
const MAX_RECEPTION: usize = 64;
/// How many threads may be reading a request or answering one; more connections are
/// answered 503 from the accepting thread.
const MAX_ANSWERING: usize = 2 * MAX_RECEPTION;
/// What may wait for one client before it is disconnected.
const CLIENT_BYTES: usize = 1 << 20;
/// The size at which a batch is handed to the clients before the loop's flush.
const CHUNK_BYTES: usize = 64 * 1024;
/// How long a write may be stuck before its thread looks whether the client was disconnected.
const WRITE_STALL: Duration = Duration::from_secs(1);
/// The most channels web clients may be served (their indexes are `u16`, below these two).
const MAX_CHANNELS: u16 = 65_000;
/// The channel index of a gap record, which every client gets.
const GAP: u16 = u16::MAX;
/// The channel index of a notification on a channel that is not piped (none should come).
const OTHER: u16 = u16::MAX - 1;

/// What `--websocket`, `--sse` and their options say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WebSettings {
    /// `--websocket [ADDR:]PORT`
    pub(crate) websocket: Option<String>,
    /// `--sse [ADDR:]PORT`
    pub(crate) sse: Option<String>,
    /// `--path`: where the stream (and the page) is served.
    pub(crate) path: String,
    /// `--page`: serve the page to browsers that ask for HTML.
    pub(crate) page: bool,
    /// `--allow-channel GLOB`: what a client may ask for (empty: every piped channel).
    pub(crate) allow_channels: Vec<String>,
    /// `--token-file`: the bearer token every request must carry.
    pub(crate) token_file: Option<PathBuf>,
    /// `--allow-origin`: the origins of other sites' pages that may connect (`*`: any).
    pub(crate) allow_origins: Vec<String>,
    /// `--keepalive`: how often an idle client is pinged (WebSocket) or sent a comment (SSE).
    pub(crate) keepalive: Duration,
    /// The piped channels.
    pub(crate) channels: Vec<String>,
}

/// Which streams a listening socket serves.
#[derive(Clone, Copy, Debug)]
struct Serves {
    websocket: bool,
    sse: bool,
}

/// The rules every request is admitted by, fixed at the start.
struct Rules {
    path: String,
    page: bool,
    /// The SHA-256 of the token, compared in constant time with that of the one presented.
    token: Option<[u8; 32]>,
    origins: Vec<String>,
    channels: Vec<String>,
    /// Each piped channel's index.
    index: std::collections::HashMap<String, u16>,
    /// For each piped channel, whether a client may have it.
    allowed: Vec<bool>,
    keepalive: Duration,
}

/// What the clients share with the sink.
struct Hub {
    rules: Rules,
    clients: Mutex<Clients>,
    /// Connections still sending their request, and the threads not yet streaming.
    reception: Mutex<Reception>,
    /// Client threads still running.
    live: (Mutex<usize>, Condvar),
    /// Whether the sink writes gap records (so does a client's resume).
    gap_records: bool,
    /// Whether SSE is served (which keeps the history of what was sent).
    sse: bool,
    /// When a refused client was last said, and how many were refused since.
    refused: Mutex<(Option<Instant>, u64)>,
}

struct Clients {
    list: Vec<Client>,
    history: sse::History,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    WebSocket,
    Sse,
}

/// The channels a client gets (indexes into the piped channels, sorted); `None`: all.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selection(Option<Box<[u16]>>);

impl Selection {
    fn takes(&self, channel: u16) -> bool {
        channel == GAP
            || self
                .0
                .as_ref()
                .is_none_or(|s| s.binary_search(&channel).is_ok())
    }
}

struct Client {
    kind: Kind,
    selection: Selection,
    backlog: Arc<Backlog>,
    stream: TcpStream,
    end: Arc<AtomicU8>,
    name: String,
}

/// Why a client's backlog was closed, for its thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Running = 0,
    /// It did not read fast enough.
    Slow = 1,
    /// The run is over.
    Over = 2,
}

/// What a client's thread holds: its backlog, and how to say it is gone.
struct Attached {
    /// It counts among the clients (`stats`) while it lives.
    _counted: stats::Client,
    backlog: Arc<Backlog>,
    end: Arc<AtomicU8>,
    name: String,
    hub: Arc<Hub>,
}

impl Attached {
    fn ending(&self) -> Ending {
        match self.end.load(Ordering::Acquire) {
            1 => Ending::Slow,
            2 => Ending::Over,
            _ => Ending::Running,
        }
    }

    /// The client went away by itself (`how`, for `-v`).
    fn left(&self, how: &str) {
        if self.ending() == Ending::Running && !self.backlog.is_closed() {
            msg::info(&format!("{} {how}", self.name));
        }
        self.backlog.close();
    }
}

impl Drop for Attached {
    /// Its thread ends: the client's socket is given back at once, not at the next delivery.
    fn drop(&mut self) {
        self.backlog.close();
        lock(&self.hub.clients)
            .list
            .retain(|c| !c.backlog.is_closed());
        let (count, changed) = &self.hub.live;
        *lock(count) -= 1;
        changed.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `chunk` whole. While the client takes nothing, looks every second whether it was
/// disconnected meanwhile (its backlog closed): then gives up, perhaps in the middle.
/// `Err(at)`: it failed after `at` bytes.
fn write_whole(stream: &mut TcpStream, chunk: &[u8], backlog: &Backlog) -> Result<(), usize> {
    write_while(stream, chunk, || !backlog.is_closed())
}

/// Writes what the client takes of `bytes` until `deadline`; whether it took all.
fn write_until(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> bool {
    write_while(stream, bytes, || Instant::now() < deadline).is_ok()
}

/// Writes `bytes`, going on through the socket's write timeouts while `going_on` holds.
fn write_while(
    stream: &mut TcpStream,
    bytes: &[u8],
    going_on: impl Fn() -> bool,
) -> Result<(), usize> {
    let mut at = 0;
    loop {
        match write_from(stream, bytes, &mut at) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && going_on() => {}
            Err(_) => return Err(at),
        }
    }
}

/// The sink of `--websocket` and `--sse`.
pub(crate) struct Web {
    hub: Arc<Hub>,
    encoder: Encoder,
    websocket: bool,
    sse: bool,
    /// This run, in SSE ids.
    run: u64,
    /// The sequence the next event gets.
    seq: u64,
    line: Vec<u8>,
    batch: Batch,
}

/// An event of a batch: its channel index, and where it ends in `ws` and `sse`.
struct Item {
    channel: u16,
    ws_end: usize,
    sse_end: usize,
}

/// The chunks made for one delivery, by kind of client and selection.
type Made = Vec<(Kind, Option<Box<[u16]>>, Option<Arc<[u8]>>)>;

/// What the loop wrote since the last flush, encoded for each kind of client.
#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    ws: Vec<u8>,
    sse: Vec<u8>,
}

impl Web {
    /// Reads the token, opens the listening sockets and starts accepting clients.
    pub(crate) fn start(settings: &WebSettings, encoder: Encoder) -> Result<Web> {
        if settings.channels.len() > usize::from(MAX_CHANNELS) {
            return Err(UsageError(format!(
                "--websocket and --sse serve at most {MAX_CHANNELS} channels"
            ))
            .into());
        }
        let token = match &settings.token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let allowed: Vec<bool> = settings
            .channels
            .iter()
            .map(|c| {
                settings.allow_channels.is_empty()
                    || settings.allow_channels.iter().any(|g| glob_match(g, c))
            })
            .collect();
        for glob in &settings.allow_channels {
            if !settings.channels.iter().any(|c| glob_match(glob, c)) {
                msg::warn(&format!(
                    "--allow-channel {glob} matches none of the piped channels"
                ));
            }
        }
        if !allowed.contains(&true) {
            return Err(UsageError(
                "--allow-channel allows none of the piped channels: no client could get anything"
                    .into(),
            )
            .into());
        }
        let mut listeners = Vec::new();
        let specs = [
            ("--websocket", settings.websocket.as_deref()),
            ("--sse", settings.sse.as_deref()),
        ];
        for (option, spec) in specs {
            let Some(spec) = spec else { continue };
            let address = listen_address(option, spec)?;
            if !address.ip().is_loopback() && token.is_none() {
                return Err(UsageError(format!(
                    "{option} {spec} would serve every notification to anyone who can reach it: \
                     give --token-file FILE, or listen on 127.0.0.1"
                ))
                .into());
            }
            // --websocket and --sse on the same port: one socket serves both.
            if let Some((_, _, serves)) = listeners
                .iter_mut()
                .find(|(a, _, _): &&mut (SocketAddr, TcpListener, Serves)| *a == address)
            {
                serves.sse = true;
                continue;
            }
            if !address.ip().is_loopback() {
                msg::warn(&format!(
                    "{option} {spec}: serving beyond this machine over plain HTTP: the token and \
                     every event cross the network unencrypted (put a TLS proxy in front)"
                ));
            }
            let listener = TcpListener::bind(address)
                .with_context(|| format!("{option}: could not listen on {address}"))?;
            let serves = Serves {
                websocket: option == "--websocket",
                sse: option == "--sse",
            };
            listeners.push((address, listener, serves));
        }
        let hub = Arc::new(Hub {
            rules: Rules {
                path: settings.path.clone(),
                page: settings.page,
                token,
                origins: settings.allow_origins.clone(),
                channels: settings.channels.clone(),
                index: settings
                    .channels
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), i as u16))
                    .collect(),
                allowed,
                keepalive: settings.keepalive,
            },
            clients: Mutex::new(Clients {
                list: Vec::new(),
                history: sse::History::new(),
            }),
            reception: Mutex::new(Reception::default()),
            live: (Mutex::new(0), Condvar::new()),
            gap_records: encoder.gap_records(),
            sse: settings.sse.is_some(),
            refused: Mutex::new((None, 0)),
        });
        for (_, listener, serves) in listeners {
            let local = listener.local_addr()?;
            if serves.websocket {
                msg::note(&format!(
                    "serving WebSocket on ws://{local}{}",
                    settings.path
                ));
            }
            if serves.sse {
                msg::note(&format!("serving SSE on http://{local}{}", settings.path));
            }
            if settings.page {
                msg::note(&format!("the page is at http://{local}{}", settings.path));
            }
            let hub = Arc::clone(&hub);
            std::thread::Builder::new()
                .name("web-accept".into())
                .spawn(move || accept(&listener, &hub, serves))
                .context("could not start the web server thread")?;
        }
        let run = lock(&hub.clients).history.run;
        Ok(Web {
            hub,
            encoder,
            websocket: settings.websocket.is_some(),
            sse: settings.sse.is_some(),
            run,
            seq: 0,
            line: Vec::new(),
            batch: Batch::default(),
        })
    }

    /// Adds the encoded line in `self.line` as the next event, on `channel` named `name`.
    fn push(&mut self, channel: u16, name: &str) -> Result<()> {
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if self.websocket {
            websocket::text_frame(&mut self.batch.ws, &self.line);
        }
        if self.sse {
            sse::event(
                &mut self.batch.sse,
                Some((self.run, self.seq)),
                name,
                &self.line,
            );
        }
        self.seq += 1;
        self.batch.items.push(Item {
            channel,
            ws_end: self.batch.ws.len(),
            sse_end: self.batch.sse.len(),
        });
        if self.batch.ws.len().max(self.batch.sse.len()) >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

/// Reads the token from the first line of `path`.
fn read_token(path: &std::path::Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        msg::warn(&format!(
            "the token file {} can be read by others than its owner (chmod 600 it)",
            path.display()
        ));
    }
    Ok(openssl::sha::sha256(token.as_bytes()))
}

/// Whether `name` matches `glob`: `*` is any run of characters, `?` any one.
fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

impl Sink for Web {
    fn write(&mut self, n: &Notification) -> Result<()> {
        let channel = self
            .hub
            .rules
            .index
            .get(&n.channel)
            .copied()
            .unwrap_or(OTHER);
        self.line.clear();
        self.encoder.write(&mut self.line, n)?;
        self.push(channel, &n.channel)
    }

    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        self.line.clear();
        self.encoder.write_gap(&mut self.line, gap)?;
        if self.line.is_empty() {
            return Ok(());
        }
        self.push(GAP, "gap")
    }

    fn flush(&mut self) -> Result<()> {
        if !self.batch.items.is_empty() {
            self.hub.deliver(&self.batch);
            self.batch.items.clear();
            self.batch.ws.clear();
            self.batch.sse.clear();
        }
        Ok(())
    }

    /// Waits (boundedly) until every client took what it was sent, then closes them.
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        let clients: Vec<(Arc<Backlog>, Arc<AtomicU8>)> = lock(&self.hub.clients)
            .list
            .iter()
            .map(|c| (Arc::clone(&c.backlog), Arc::clone(&c.end)))
            .collect();
        let deadline = deadline::after(FINISH_WAIT);
        for (backlog, _) in &clients {
            backlog.wait_empty(deadline);
        }
        for (backlog, end) in &clients {
            let _ =
                end.compare_exchange(0, Ending::Over as u8, Ordering::AcqRel, Ordering::Acquire);
            backlog.close();
        }
        // Their threads say goodbye (a WebSocket close frame), for a moment.
        let (count, changed) = &self.hub.live;
        let _ = deadline::wait_while(changed, lock(count), deadline::after(WRITE_STALL), |n| {
            *n > 0
        });
        Ok(())
    }
}

impl Hub {
    /// Hands the batch to every client: the whole of it, or what its selection takes.
    fn deliver(&self, batch: &Batch) {
        let mut clients = lock(&self.clients);
        let mut made: Made = Vec::new();
        let Clients { list, history } = &mut *clients;
        let deadline = Instant::now() + WRITER_WAIT;
        list.retain(|client| {
            if client.backlog.is_closed() {
                return false;
            }
            let chunk = match made
                .iter()
                .find(|(k, s, _)| *k == client.kind && *s == client.selection.0)
            {
                Some((_, _, chunk)) => chunk.clone(),
                None => {
                    let chunk = select(batch, client.kind, &client.selection);
                    made.push((client.kind, client.selection.0.clone(), chunk.clone()));
                    chunk
                }
            };
            let Some(chunk) = chunk else { return true };
            if client.backlog.push_or_wait(
                std::slice::from_ref(&chunk),
                || takes_data(&client.stream),
                deadline,
            ) {
                return true;
            }
            if client.backlog.is_closed() {
                // It left meanwhile.
                return false;
            }
            msg::warn(&format!(
                "{} is not reading fast enough: disconnected (over {} KiB waited for it)",
                client.name,
                CLIENT_BYTES >> 10
            ));
            client.end.store(Ending::Slow as u8, Ordering::Release);
            client.backlog.close();
            if client.kind == Kind::Sse {
                let _ = client.stream.shutdown(Shutdown::Both);
            }
            false
        });
        if self.sse {
            for item in &batch.items {
                history.sent(item.channel);
            }
        }
    }
}

/// The part of `batch` that `selection` takes, for one kind of client; `None`: nothing.
fn select(batch: &Batch, kind: Kind, selection: &Selection) -> Option<Arc<[u8]>> {
    let bytes = match kind {
        Kind::WebSocket => &batch.ws,
        Kind::Sse => &batch.sse,
    };
    if selection.0.is_none() {
        return (!bytes.is_empty()).then(|| Arc::from(bytes.as_slice()));
    }
    let mut out = Vec::new();
    let mut start = 0;
    for item in &batch.items {
        let end = match kind {
            Kind::WebSocket => item.ws_end,
            Kind::Sse => item.sse_end,
        };
        if selection.takes(item.channel) {
            out.extend_from_slice(&bytes[start..end]);
        }
        start = end;
    }
    (!out.is_empty()).then(|| Arc::from(out.into_boxed_slice()))
}

fn accept(listener: &TcpListener, hub: &Arc<Hub>, serves: Serves) {
    // Refused connections, kept open a moment so that the 503 is read, not lost to a reset.
    let mut refused: std::collections::VecDeque<(TcpStream, Instant)> = Default::default();
    for stream in listener.incoming() {
        while refused
            .front()
            .is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(1))
            || refused.len() > MAX_CLIENTS
        {
            if let Some((closing, _)) = refused.pop_front() {
                hung_up(&closing);
            }
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, say: do not spin, try again shortly.
                msg::warn(&format!("could not accept a web client: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let Some(ticket) = hub.receive(&stream) else {
            refuse(
                &mut stream,
                "too many connections are sending their request: try again",
            );
            refused.push_back((stream, Instant::now()));
            continue;
        };
        let thread_hub = Arc::clone(hub);
        // A thread that cannot start drops its ticket, which gives its place back, and its
        // connection, which is closed.
        if let Err(e) = std::thread::Builder::new()
            .name("web-client".into())
            .spawn(move || serve(stream, &thread_hub, ticket, serves))
        {
            msg::warn(&format!("could not start a thread for a web client: {e}"));
        }
    }
}

/// The connections whose request is being read (the oldest first), and how many threads
/// read or answer one.
#[derive(Default)]
struct Reception {
    pending: std::collections::VecDeque<(u64, TcpStream, Arc<AtomicBool>)>,
    next: u64,
    threads: usize,
}

/// A connection's place in reception: its thread holds it until the connection becomes a
/// stream or is done with (dropped, it gives the place back).
struct Ticket {
    hub: Arc<Hub>,
    id: u64,
    /// Set when a newer connection took its place.
    evicted: Arc<AtomicBool>,
    /// Whether it still counts among the threads (not yet a stream).
    counted: bool,
    /// Whether it still is among the pending.
    pending: bool,
}

impl Hub {
    /// A place in reception for a new connection: when 64 are sending their request, the
    /// oldest is let go to make room; `None` when the threads reading or answering requests
    /// are at their bound.
    fn receive(self: &Arc<Hub>, stream: &TcpStream) -> Option<Ticket> {
        let clone = stream.try_clone().ok()?;
        let mut reception = lock(&self.reception);
        if reception.threads >= MAX_ANSWERING {
            return None;
        }
        if reception.pending.len() >= MAX_RECEPTION
            && let Some((_, oldest, evicted)) = reception.pending.pop_front()
        {
            evicted.store(true, Ordering::Release);
            let _ = oldest.shutdown(Shutdown::Read);
        }
        let id = reception.next;
        reception.next += 1;
        let evicted = Arc::new(AtomicBool::new(false));
        reception
            .pending
            .push_back((id, clone, Arc::clone(&evicted)));
        reception.threads += 1;
        Some(Ticket {
            hub: Arc::clone(self),
            id,
            evicted,
            counted: true,
            pending: true,
        })
    }
}

impl Ticket {
    /// The request is read whole: false when a newer connection took its place first (and
    /// shut its reading side).
    fn received(&mut self) -> bool {
        let mut reception = lock(&self.hub.reception);
        if std::mem::take(&mut self.pending) {
            reception.pending.retain(|(id, _, _)| *id != self.id);
        }
        // Set, under this lock, only by taking it out of the pending.
        !self.evicted.load(Ordering::Acquire)
    }

    /// The connection is done with, or becomes a stream.
    fn release(&mut self) {
        self.received();
        if std::mem::take(&mut self.counted) {
            lock(&self.hub.reception).threads -= 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

/// A 503 written without waiting, from the accepting thread; the connection is closed later
/// (what the client sent is read first: closing with it unread would reset the connection).
fn refuse(stream: &mut TcpStream, why: &str) {
    let _ = stream.set_nonblocking(true);
    let answer = Answer::text(503, why).with("Retry-After", "1");
    let _ = stream.write_all(&answer.bytes(false));
    let _ = stream.shutdown(Shutdown::Write);
}

/// One connection: its request, then what it was admitted to.
fn serve(mut stream: TcpStream, hub: &Arc<Hub>, mut ticket: Ticket, serves: Serves) {
    let Ok(address) = stream.peer_addr() else {
        return;
    };
    let request = match http::read_request(&mut stream) {
        Ok(request) => request,
        Err(unread) => {
            let answer = match unread {
                _ if ticket.evicted.load(Ordering::Acquire) => Answer::text(
                    408,
                    "the request head was not sent whole, and newer connections needed its place",
                ),
                Unread::TooLarge => Answer::text(400, "the request head is over 8 KiB"),
                Unread::TooMany => Answer::text(400, "the request has over 64 headers"),
                Unread::TooSlow => Answer::text(408, "the request head took over 10 s"),
                Unread::Malformed(why) => Answer::text(400, format!("not an HTTP request: {why}")),
                Unread::Gone => return,
            };
            ticket.received();
            msg::info(&format!(
                "web client {address}: {}",
                escape_controls(answer.body.trim_end())
            ));
            answer.send(&mut stream, false);
            return;
        }
    };
    if !ticket.received() {
        Answer::text(408, "newer connections needed this one's place").send(&mut stream, false);
        return;
    }
    let head_only = request.method == Method::Head;
    let admitted = match admit(&request, &hub.rules, serves) {
        Ok(admitted) => admitted,
        Err(answer) => {
            msg::info(&format!(
                "web client {address}: {} {}",
                answer.status,
                escape_controls(answer.body.trim_end())
            ));
            answer.send(&mut stream, head_only);
            return;
        }
    };
    let (kind, selection, cors) = match admitted {
        Admitted::Answer(answer) => {
            answer.send(&mut stream, head_only);
            return;
        }
        Admitted::Stream {
            kind,
            selection,
            cors,
        } => (kind, selection, cors),
    };
    let _ = stream.set_write_timeout(Some(WRITE_STALL));
    let _ = stream.set_nodelay(true);
    keepalive(&stream);
    let head = match kind {
        Kind::WebSocket => {
            websocket::switching(request.header("sec-websocket-key").unwrap_or_default())
        }
        Kind::Sse => sse::head(&cors),
    };
    if head_only {
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let mut opening = head.into_bytes();
    if kind == Kind::Sse {
        opening.extend_from_slice(sse::PREAMBLE);
    }
    let name = match kind {
        Kind::WebSocket => format!("WebSocket client {address}"),
        Kind::Sse => format!("SSE client {address}"),
    };
    let resume = match kind {
        Kind::Sse => request
            .header("last-event-id")
            .or_else(|| request.query_all("lastEventId").next())
            .map(str::to_string),
        Kind::WebSocket => None,
    };
    // Attached before its head is written: whatever is sent once it has the head, it gets.
    let Some(client) = hub.attach(kind, selection, &stream, name, resume.as_deref()) else {
        Answer::text(
            503,
            format!("{MAX_CLIENTS} clients are connected already: try again"),
        )
        .with("Retry-After", "1")
        .send(&mut stream, false);
        return;
    };
    // A stream now: it counts among the clients, not the threads of reception.
    ticket.release();
    if stream.write_all(&opening).is_err() {
        client.left("left");
        return;
    }
    match kind {
        Kind::WebSocket => websocket::run(stream, request.rest, &client, hub.rules.keepalive),
        Kind::Sse => sse::run(stream, &client, hub.rules.keepalive),
    }
}

impl Hub {
    /// Registers a client, with its resume gap first when it came back (SSE); `None` when
    /// there are too many.
    fn attach(
        self: &Arc<Hub>,
        kind: Kind,
        selection: Selection,
        stream: &TcpStream,
        name: String,
        resume: Option<&str>,
    ) -> Option<Attached> {
        let writer = stream.try_clone().ok()?;
        let mut clients = lock(&self.clients);
        clients.list.retain(|c| !c.backlog.is_closed());
        if clients.list.len() >= MAX_CLIENTS {
            drop(clients);
            // Said once a minute at most: refusals are what a flood of connections makes.
            let mut refused = lock(&self.refused);
            refused.1 += 1;
            if refused
                .0
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
            {
                msg::warn(&format!(
                    "refused {name} ({} refused since the last such line): {MAX_CLIENTS} web \
                     clients are connected already",
                    refused.1
                ));
                *refused = (Some(Instant::now()), 0);
            }
            return None;
        }
        let backlog = Backlog::new(CLIENT_BYTES, name.clone(), None);
        if let Some(last) = resume
            && self.gap_records
            && let Some(gap) = clients.history.missed(last, &selection)
        {
            msg::info(&format!("{name}: {}", escape_controls(&gap.reason)));
            stats::gap(gap.kind);
            let mut record = Vec::new();
            if write_gap_record(&mut record, &gap).is_ok() {
                if record.last() == Some(&b'\n') {
                    record.pop();
                }
                let mut event = Vec::new();
                sse::event(&mut event, None, "gap", &record);
                backlog.push(&[Arc::from(event.into_boxed_slice())], true);
            }
        }
        let end = Arc::new(AtomicU8::new(0));
        clients.list.push(Client {
            kind,
            selection,
            backlog: Arc::clone(&backlog),
            stream: writer,
            end: Arc::clone(&end),
            name: name.clone(),
        });
        drop(clients);
        *lock(&self.live.0) += 1;
        msg::info(&format!("{name} connected"));
        Some(Attached {
            _counted: stats::Client::connected(),
            backlog,
            end,
            name,
            hub: Arc::clone(self),
        })
    }
}

/// What an admitted request gets.
enum Admitted {
    /// A short answer (the page, a preflight's).
    Answer(Answer),
    Stream {
        kind: Kind,
        selection: Selection,
        /// CORS headers for a page of another origin that may read the stream.
        cors: Vec<(&'static str, String)>,
    },
}

/// Decides what a request gets, or the error status it is answered with.
fn admit(request: &Request, rules: &Rules, serves: Serves) -> Result<Admitted, Answer> {
    if request.method == Method::Other {
        return Err(Answer::text(405, "only GET, HEAD and OPTIONS are served")
            .with("Allow", "GET, HEAD, OPTIONS"));
    }
    if request.header_count("host") > 1 {
        return Err(Answer::text(400, "a request has one Host header"));
    }
    let host = request.header("host");
    if rules.token.is_none()
        && let Some(host) = host
        && !local_host(host)
    {
        return Err(Answer::text(
            403,
            format!(
                "Host {host} is not an address of this machine or localhost (a guard against DNS \
                 rebinding): use an IP address, or give pgnotify a --token-file"
            ),
        ));
    }
    let mut cors = Vec::new();
    if let Some(origin) = request.header("origin") {
        let same = host.is_some_and(|h| same_origin(origin, h));
        let listed = rules
            .origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if !same && !listed {
            return Err(Answer::text(
                403,
                format!("pages from {origin} may not read this stream (see --allow-origin)"),
            ));
        }
        if !same {
            cors.push(("Access-Control-Allow-Origin", origin.to_string()));
            cors.push(("Vary", "Origin".to_string()));
        }
    }
    if request.method == Method::Options {
        if request.path != rules.path {
            return Err(Answer::text(404, "nothing is served here"));
        }
        let mut answer = Answer {
            status: 204,
            headers: cors,
            body: String::new(),
        }
        .with("Allow", "GET, HEAD, OPTIONS");
        if answer
            .headers
            .iter()
            .any(|(n, _)| *n == "Access-Control-Allow-Origin")
        {
            answer = answer
                .with("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
                .with(
                    "Access-Control-Allow-Headers",
                    "Authorization, Last-Event-ID, Cache-Control",
                )
                .with("Access-Control-Max-Age", "600");
        }
        return Ok(Admitted::Answer(answer));
    }
    if let Some(token) = &rules.token {
        let presented = request
            .header("authorization")
            .and_then(|a| {
                let (scheme, value) = a.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
            })
            .or_else(|| request.query_all("token").next());
        let refusal = |why: &str| {
            Answer::text(401, why).with("WWW-Authenticate", "Bearer realm=\"pgnotify\"")
        };
        match presented {
            None => {
                return Err(refusal(
                    "a token is needed: send Authorization: Bearer TOKEN, or add ?token=TOKEN",
                ));
            }
            Some(p) if !openssl::memcmp::eq(&openssl::sha::sha256(p.as_bytes()), token) => {
                return Err(refusal("the token is wrong"));
            }
            Some(_) => {}
        }
    }
    if request.path != rules.path {
        return Err(Answer::text(
            404,
            format!(
                "nothing is served at {}: the stream is at {}",
                request.path, rules.path
            ),
        ));
    }
    let selection = select_channels(request, rules)?;
    let upgrade = request.header_has("upgrade", "websocket");
    if upgrade {
        if !serves.websocket {
            return Err(Answer::text(400, "this port serves SSE, not WebSocket"));
        }
        if request.header("sec-websocket-version") != Some("13") {
            return Err(Answer::text(426, "only WebSocket version 13 is spoken")
                .with("Sec-WebSocket-Version", "13"));
        }
        if !request.header_has("connection", "upgrade")
            || !request
                .header("sec-websocket-key")
                .is_some_and(websocket::valid_key)
        {
            return Err(Answer::text(400, "not a valid WebSocket handshake"));
        }
        return Ok(Admitted::Stream {
            kind: Kind::WebSocket,
            selection,
            cors,
        });
    }
    let wants_html = request
        .header("accept")
        .is_some_and(|a| a.contains("text/html"));
    if rules.page && wants_html {
        let mode = if serves.sse { "sse" } else { "websocket" };
        let mut answer = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", "text/html; charset=utf-8".into()),
                ("Cache-Control", "no-store".into()),
                (
                    "Content-Security-Policy",
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'"
                        .into(),
                ),
            ],
            body: page(mode, rules, &selection),
        };
        answer.headers.extend(cors);
        return Ok(Admitted::Answer(answer));
    }
    if !serves.sse {
        return Err(Answer::text(
            426,
            "this port serves WebSocket: connect with a WebSocket client",
        )
        .with("Upgrade", "websocket"));
    }
    Ok(Admitted::Stream {
        kind: Kind::Sse,
        selection,
        cors,
    })
}

/// The channels a request asks for (`?channel=`), all of them piped and allowed.
fn select_channels(request: &Request, rules: &Rules) -> Result<Selection, Answer> {
    let mut asked = Vec::new();
    for name in request.query_all("channel") {
        let Some(&index) = rules.index.get(name) else {
            return Err(Answer::text(
                404,
                format!("the channel {name:?} is not piped here"),
            ));
        };
        if !rules.allowed[usize::from(index)] {
            return Err(Answer::text(
                403,
                format!("the channel {name:?} is not allowed (see --allow-channel)"),
            ));
        }
        asked.push(index);
    }
    if asked.is_empty() {
        asked = (0..rules.channels.len() as u16)
            .filter(|i| rules.allowed[*i as usize])
            .collect();
    }
    asked.sort_unstable();
    asked.dedup();
    if asked.len() == rules.channels.len() {
        return Ok(Selection(None));
    }
    Ok(Selection(Some(asked.into_boxed_slice())))
}

/// Whether `host` (a Host header) names this machine without a name a stranger controls: an
/// IP address, or localhost.
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
}

/// Whether a page from `origin` is on the same site as the `host` it asks.
fn same_origin(origin: &str, host: &str) -> bool {
    // pgnotify serves http only: a page of https://HOST is another origin.
    origin
        .strip_prefix("http://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The page, set to read the stream it is served with.
fn page(mode: &str, rules: &Rules, selection: &Selection) -> String {
    let channels: Vec<&str> = rules
        .channels
        .iter()
        .enumerate()
        .filter(|(i, _)| selection.takes(*i as u16) && rules.allowed[*i])
        .map(|(_, c)| c.as_str())
        .collect();
    // Inside a script element, "<" could end it: JSON's \u003c says the same.
    let channels = serde_json::to_string(&channels)
        .unwrap_or_else(|_| "[]".into())
        .replace('<', "\\u003c");
    include_str!("page.html")
        .replace("__MODE__", mode)
        .replace("__CHANNELS__", &channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_the_shell_does() {
        assert!(glob_match("jobs", "jobs"));
        assert!(glob_match("job*", "jobs.eu"));
        assert!(glob_match("*.eu", "jobs.eu"));
        assert!(glob_match("j?bs", "jobs"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("job", "jobs"));
        assert!(!glob_match("*.eu", "jobs.us"));
    }

    #[test]
    fn hosts_and_origins() {
        assert!(local_host("127.0.0.1:8080"));
        assert!(local_host("localhost"));
        assert!(local_host("[::1]:9"));
        assert!(!local_host("evil.example:8080"));
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8080"));
    }
}
