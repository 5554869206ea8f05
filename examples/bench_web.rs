//! The clients of `bench/web.sh`: CLIENTS connections to one `pgnotify pipe` server, each
//! of which checks that it gets the COUNT notifications of the benchmark, payloads `1:xxx…` to
//! `COUNT:xxx…`, every one and in order. Each is read by a thread of its own (blocking reads),
//! or, given THREADS, the clients are shared among that many threads, each of which poll()s
//! its share and reads once from each that has something, in turn.
//!
//!   bench_web tcp|ws|sse HOST:PORT CLIENTS COUNT [THREADS]
//!
//! - `tcp`: `--serve`, NDJSON lines.
//! - `ws`: `--websocket`; the opening handshake is written here (the answer's
//!   Sec-WebSocket-Accept is not checked), and frames are taken apart by their headers alone:
//!   a text frame's JSON is looked at only for its payload's number; a ping is answered
//!   (masked, as a client must), a close ends the client.
//! - `sse`: `--sse`, `GET /` with `Accept: text/event-stream`; events are cut into lines, the
//!   id's sequence (RUN-SEQ) must follow the payload's number (SEQ = number - 1), `retry:` and
//!   comments are skipped.
//!
//! It prints `ready` on stdout once every connection is open (and, for ws and sse, answered),
//! then, once every client has had its COUNT or has failed, one line:
//!
//!   done BYTES FIRST_NS LAST_NS CPU_TICKS FAILED
//!
//! BYTES: what the clients read after the HTTP answer heads, all together; FIRST_NS: when the
//! first notification was taken apart by any client, LAST_NS: when the last client had its
//! COUNT (both Unix nanoseconds, CLOCK_REALTIME, to set against `date +%s%N`; clients that
//! failed are left out of LAST_NS); CPU_TICKS: this process's user + system time (clock ticks,
//! /proc/self/stat); FAILED: how many clients did not get every notification in order. Each of
//! those says on stderr why, when (after the first notification came), and how far the client
//! furthest ahead was then; the exit status is then 1.
//!
//! The cost per byte is kept low, since the clients share the CPUs with pgnotify and
//! PostgreSQL: reads of 256 KiB, a word-at-a-time search for line ends (tcp, sse: each byte
//! is looked at once), none at all for ws (the frame header gives the length), and the
//! payload's number is found within the first bytes of each record.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BUFFER: usize = 256 * 1024;
/// How long a client waits for its next bytes before it counts as failed.
const SILENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Ws,
    Sse,
}

/// What one client found.
#[derive(Default)]
struct Outcome {
    bytes: u64,
    first: Option<u128>,
    last: u128,
    got: u64,
    error: Option<String>,
    /// On a failure, how many notifications the client furthest ahead had then.
    ahead: u64,
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (kind, address, clients, count, threads) = match &args[..] {
        [_, kind, address, clients, count] => (kind, address, clients, count, None),
        [_, kind, address, clients, count, threads] => {
            (kind, address, clients, count, Some(threads))
        }
        _ => return Err("usage: bench_web tcp|ws|sse HOST:PORT CLIENTS COUNT [THREADS]".into()),
    };
    let kind = match kind.as_str() {
        "tcp" => Kind::Tcp,
        "ws" => Kind::Ws,
        "sse" => Kind::Sse,
        _ => return Err(format!("unknown kind {kind}: tcp, ws or sse").into()),
    };
    let clients: usize = clients.parse()?;
    let count: u64 = count.parse()?;
    let threads: usize = match threads {
        Some(t) => t.parse::<usize>()?.clamp(1, clients.max(1)),
        None => clients.max(1),
    };
    let furthest = Arc::new(AtomicU64::new(0));
    let mut groups: Vec<Vec<Client>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..clients {
        let (stream, rest) = open(kind, address)?;
        let client = Client::new(kind, count, stream, rest, Arc::clone(&furthest));
        groups[i % threads].push(client);
    }
    let mut handles = Vec::with_capacity(threads);
    for group in groups {
        let handle = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || run_group(group))?;
        handles.push(handle);
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut outcomes = Vec::with_capacity(clients);
    for handle in handles {
        outcomes.extend(handle.join().map_err(|_| "a client thread panicked")?);
    }
    let (mut bytes, mut first, mut last, mut failed) = (0, u128::MAX, 0, 0);
    for outcome in &outcomes {
        bytes += outcome.bytes;
        first = first.min(outcome.first.unwrap_or(u128::MAX));
        if outcome.error.is_none() {
            last = last.max(outcome.last);
        }
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if let Some(why) = &outcome.error {
            failed += 1;
            eprintln!(
                "bench_web: client {i} got {} of {count} notifications, then, {:.3} s after the \
                 first one came (the client furthest ahead had {}): {why}",
                outcome.got,
                outcome.last.saturating_sub(first) as f64 / 1e9,
                outcome.ahead
            );
        }
    }
    println!("done {bytes} {first} {last} {} {failed}", cpu_ticks());
    std::io::stdout().flush()?;
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// This process's user + system time, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (in parentheses): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Connects, and for ws and sse sends the request and reads the answer's head: the stream,
/// and what came after the head.
fn open(kind: Kind, address: &str) -> Result<(TcpStream, Vec<u8>), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SILENCE))?;
    let request = match kind {
        Kind::Tcp => return Ok((stream, Vec::new())),
        Kind::Ws => format!(
            "GET / HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        Kind::Sse => format!(
            "GET / HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\n\r\n"
        ),
    };
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err("the server closed the connection before answering".into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = find(&head, b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 16 * 1024 {
            return Err("the answer's head is over 16 KiB".into());
        }
    };
    let status = match kind {
        Kind::Ws => b"HTTP/1.1 101 ".as_slice(),
        _ => b"HTTP/1.1 200 ".as_slice(),
    };
    if !head.starts_with(status) {
        let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
        return Err(format!("answered {}", String::from_utf8_lossy(line)).into());
    }
    Ok((stream, head.split_off(end)))
}

/// Reads the clients of one thread to the end: a client alone with blocking reads, more with
/// `poll`, one read for each client that has something, in turn.
fn run_group(mut clients: Vec<Client>) -> Vec<Outcome> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut through = vec![false; clients.len()];
    if let [client] = &mut clients[..] {
        while !client.step() {}
    } else {
        let timeout = PollTimeout::try_from(SILENCE).unwrap_or(PollTimeout::MAX);
        loop {
            let waiting: Vec<usize> = (0..clients.len()).filter(|i| !through[*i]).collect();
            if waiting.is_empty() {
                break;
            }
            let mut fds: Vec<PollFd> = waiting
                .iter()
                .map(|i| PollFd::new(clients[*i].stream.as_fd(), PollFlags::POLLIN))
                .collect();
            let ready = poll(&mut fds, timeout);
            let readable: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            match ready {
                Ok(0) => {
                    for i in waiting {
                        let client = &mut clients[i];
                        client.outcome.error = Some(format!("nothing for {SILENCE:?}"));
                        client.outcome.ahead = client.furthest.load(Ordering::Relaxed);
                        client.outcome.last = unix_ns();
                    }
                    break;
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    for i in waiting {
                        clients[i].outcome.error = Some(format!("poll: {e}"));
                        clients[i].outcome.last = unix_ns();
                    }
                    break;
                }
            }
            for (i, readable) in waiting.into_iter().zip(readable) {
                if readable && clients[i].step() {
                    through[i] = true;
                }
            }
        }
    }
    clients.into_iter().map(|c| c.outcome).collect()
}

/// One connection, read to its COUNT.
struct Client {
    kind: Kind,
    count: u64,
    stream: TcpStream,
    /// The most notifications any client has had so far (updated once a read).
    furthest: Arc<AtomicU64>,
    /// What was read and not yet taken: `buf[..filled]`.
    buf: Vec<u8>,
    filled: usize,
    /// The number the next notification's payload must have.
    next: u64,
    /// sse: the sequence in the id of the event being read.
    sse_id: Option<u64>,
    outcome: Outcome,
}

/// Why a client stops before its COUNT.
type Failure = String;

impl Client {
    fn new(
        kind: Kind,
        count: u64,
        stream: TcpStream,
        rest: Vec<u8>,
        furthest: Arc<AtomicU64>,
    ) -> Client {
        let mut buf = vec![0u8; BUFFER];
        buf[..rest.len()].copy_from_slice(&rest);
        Client {
            kind,
            count,
            stream,
            furthest,
            buf,
            filled: rest.len(),
            next: 1,
            sse_id: None,
            outcome: Outcome {
                bytes: rest.len() as u64,
                ..Outcome::default()
            },
        }
    }

    /// Reads once (blocking) and takes what that completed: whether the client is through,
    /// with COUNT or a failure (in `outcome.error`; `outcome.last` is when).
    fn step(&mut self) -> bool {
        match self.read_once() {
            Ok(false) => return false,
            Ok(true) => {}
            Err(why) => {
                self.outcome.error = Some(why);
                self.outcome.ahead = self.furthest.load(Ordering::Relaxed);
            }
        }
        self.outcome.last = unix_ns();
        true
    }

    /// One read, and what it completed taken (with what was left over before it).
    fn read_once(&mut self) -> Result<bool, Failure> {
        if self.filled == self.buf.len() {
            // A record larger than the buffer: none of the benchmark's are.
            return Err(format!("a record over {BUFFER} bytes"));
        }
        loop {
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => {
                    self.filled += n;
                    self.outcome.bytes += n as u64;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let data = std::mem::take(&mut self.buf);
        let used = self.take(&data[..self.filled]);
        self.buf = data;
        let used = used?;
        self.furthest.fetch_max(self.outcome.got, Ordering::Relaxed);
        if self.next > self.count {
            return Ok(true);
        }
        self.buf.copy_within(used..self.filled, 0);
        self.filled -= used;
        Ok(false)
    }

    /// Takes the complete records at the start of `data`: how many bytes they were.
    fn take(&mut self, data: &[u8]) -> Result<usize, Failure> {
        match self.kind {
            Kind::Tcp => self.take_lines(data),
            Kind::Ws => self.take_frames(data),
            Kind::Sse => self.take_events(data),
        }
    }

    /// One notification, the JSON object `record`.
    fn notification(&mut self, record: &[u8]) -> Result<(), Failure> {
        let number = payload_number(record).ok_or_else(|| {
            format!(
                "a record without a numbered payload: {}",
                String::from_utf8_lossy(&record[..record.len().min(200)])
            )
        })?;
        if number != self.next {
            return Err(format!(
                "notification {number} where {} was due (lost or out of order)",
                self.next
            ));
        }
        if self.outcome.first.is_none() {
            self.outcome.first = Some(unix_ns());
        }
        self.next += 1;
        self.outcome.got += 1;
        Ok(())
    }

    fn take_lines(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let mut at = 0;
        while self.next <= self.count {
            let Some(end) = find_byte(&data[at..], b'\n') else {
                break;
            };
            self.notification(&data[at..at + end])?;
            at += end + 1;
        }
        Ok(at)
    }

    fn take_frames(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let mut at = 0;
        while self.next <= self.count {
            let frame = &data[at..];
            if frame.len() < 2 {
                break;
            }
            let (opcode, masked) = (frame[0] & 0x0f, frame[1] & 0x80 != 0);
            let (length, header) = match frame[1] & 0x7f {
                126 if frame.len() >= 4 => (u64::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
                127 if frame.len() >= 10 => {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&frame[2..10]);
                    (u64::from_be_bytes(bytes), 10)
                }
                126 | 127 => break,
                n => (u64::from(n), 2),
            };
            if masked {
                return Err("a masked frame from the server".into());
            }
            if frame[0] & 0x80 == 0 || frame[0] & 0x70 != 0 {
                return Err(format!(
                    "a fragmented or extended frame ({:#04x})",
                    frame[0]
                ));
            }
            let Ok(length) = usize::try_from(length) else {
                return Err("a frame too large".into());
            };
            if frame.len() < header + length {
                break;
            }
            let payload = &frame[header..header + length];
            match opcode {
                1 => self.notification(payload)?,
                9 => self.pong(payload)?,
                10 => {}
                8 => {
                    let code = payload
                        .get(..2)
                        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                    let why = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    return Err(format!("the server closed the WebSocket: {code} {why}"));
                }
                other => return Err(format!("a frame with opcode {other}")),
            }
            at += header + length;
        }
        Ok(at)
    }

    /// Answers a ping: a pong with its payload, masked with a zero key (which leaves it as is).
    fn pong(&mut self, payload: &[u8]) -> Result<(), Failure> {
        if payload.len() > 125 {
            return Err("a ping over 125 bytes".into());
        }
        let mut frame = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("pong: {e}"))
    }

    fn take_events(&mut self, data: &[u8]) -> Result<usize, Failure> {
        let mut at = 0;
        while self.next <= self.count {
            let Some(end) = find_byte(&data[at..], b'\n') else {
                break;
            };
            let line = &data[at..at + end];
            at += end + 1;
            if line.is_empty() {
                self.sse_id = None;
            } else if let Some(data) = line.strip_prefix(b"data: ") {
                if let (Some(seq), Some(number)) = (self.sse_id, payload_number(data))
                    && seq + 1 != number
                {
                    return Err(format!("event id …-{seq} for notification {number}"));
                }
                self.notification(data)?;
            } else if let Some(value) = line.strip_prefix(b"id: ") {
                let seq = value
                    .iter()
                    .rposition(|b| *b == b'-')
                    .and_then(|dash| parse_number(&value[dash + 1..]));
                self.sse_id = Some(seq.ok_or("an id that is not RUN-SEQ")?);
            } else if !(line.starts_with(b"event: ")
                || line.starts_with(b":")
                || line.starts_with(b"retry: "))
            {
                return Err(format!(
                    "an unexpected line: {}",
                    String::from_utf8_lossy(line)
                ));
            }
        }
        Ok(at)
    }
}

/// The number before the `:` of a record's `"payload":"N:xxx…"`, looked for from the record's
/// start (it is in its first few dozen bytes).
fn payload_number(record: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"payload\":\"";
    let start = find(record, KEY)? + KEY.len();
    let digits = &record[start..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    (digits.get(end) == Some(&b':')).then(|| parse_number(&digits[..end]))?
}

fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Where `needle` first is in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = 0;
    while let Some(i) = find_byte(&hay[at..], first) {
        let start = at + i;
        if hay[start..].starts_with(needle) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// Where `byte` first is in `hay`, eight bytes at a time (a zero byte of `word ^ pattern`:
/// the lowest flagged one is exact).
fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = LOW * u64::from(byte);
    let mut words = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let x = u64::from_le_bytes(bytes) ^ pattern;
        let zero = x.wrapping_sub(LOW) & !x & HIGH;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| *b == byte)
        .map(|i| at + i)
}
