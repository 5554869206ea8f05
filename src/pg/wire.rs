//! The listening connection's bytes, between the socket (or TLS) and `tokio-postgres`: what
//! lets a SQL_ASCII database's notifications arrive whole when they are not UTF-8.
//!
//! A SQL_ASCII database stores whatever bytes a session sends, and a payload may hold any of
//! them (`NOTIFY c, E'\xff'`, Latin-1 text). A session whose `client_encoding` differs from
//! SQL_ASCII gets each such payload checked on the way out, and its backend ends with
//! `FATAL 22021 invalid byte sequence`: the notification is lost with the session. With
//! `client_encoding` SQL_ASCII the server sends the bytes as they are, but `tokio-postgres`
//! reads a notification's channel and payload as UTF-8 and ends the connection on anything
//! else.
//!
//! So the listener's stream goes through a [`Filtered`] stream that frames the backend
//! messages (a type byte, then a length that counts itself). Once told to ([`Wire::inspect`]),
//! it looks into every NotificationResponse (`A`) whose channel or payload is not UTF-8: the
//! exact bytes are kept on the side ([`Wire::take`]) under the notification's ordinal among
//! the connection's `A` messages, and each invalid byte in the stream is replaced by `?` (the
//! length stays the same), so that `tokio-postgres` delivers it, in its place, and the
//! listener attaches the exact bytes to it. Only a notification that is not whole in one read
//! is held back until it is (nothing is delayed by it: `tokio-postgres` decodes a message only
//! once it has all of it); every other message passes through as it is read, framed by its
//! length alone. Nothing is written differently.

use super::tls::{Handshake, TlsStream};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::Config;
use tokio_postgres::config::Host;
use tokio_postgres::tls::TlsConnect;

/// The largest notification message looked into: PostgreSQL's are at most a 63-byte channel
/// and a payload shorter than 8000 bytes. A longer `A` message is passed through untouched.
const MAX_INSPECTED: usize = 64 << 10;

/// The SSLRequest packet: when the client writes it, the server's next byte is its one-byte
/// answer (`S` or `N`), not a message.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// What a [`Filtered`] stream shares with its listener.
#[derive(Debug, Default)]
pub(super) struct Wire {
    inspect: AtomicBool,
    found: Mutex<VecDeque<Exact>>,
}

/// The exact bytes of a notification that was not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Exact {
    /// Its ordinal among the connection's notifications, from 0.
    pub(super) ordinal: u64,
    /// The channel's bytes, when they are not UTF-8.
    pub(super) channel: Option<Vec<u8>>,
    /// The payload's bytes, when they are not UTF-8.
    pub(super) payload: Option<Vec<u8>>,
}

impl Wire {
    /// From now on, notifications are looked into (the database is SQL_ASCII).
    pub(super) fn inspect(&self) {
        self.inspect.store(true, Ordering::Relaxed);
    }

    /// The exact bytes of the notification with this ordinal, when it was not UTF-8. Asked in
    /// order: what was found for an earlier ordinal is dropped.
    pub(super) fn take(&self, ordinal: u64) -> Option<Exact> {
        if !self.inspect.load(Ordering::Relaxed) {
            // Not a SQL_ASCII database: nothing is ever found, and no lock is taken for each
            // notification.
            return None;
        }
        let mut found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        while found.front().is_some_and(|e| e.ordinal < ordinal) {
            found.pop_front();
        }
        match found.front() {
            Some(e) if e.ordinal == ordinal => found.pop_front(),
            _ => None,
        }
    }

    fn push(&self, exact: Exact) {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(exact);
    }
}

/// Frames backend messages across reads and makes notifications valid UTF-8.
#[derive(Debug, Default)]
struct Framer {
    /// Bytes left of the message being passed through.
    skip: usize,
    /// `A` messages seen so far.
    seen: u64,
    /// A length below 4 was read: the stream is not framed as expected, and everything after
    /// passes untouched (`tokio-postgres` reports the broken stream).
    lost: bool,
}

impl Framer {
    /// Scans `bytes`, which continue the stream scanned so far; notifications that are not
    /// UTF-8 are made valid in place and their exact bytes given to `found`. Returns how many
    /// bytes may be handed on: the rest begins an incomplete message (a header cut short, or a
    /// notification to look into), to scan again from its start once more bytes follow it.
    fn scan(&mut self, bytes: &mut [u8], inspect: bool, found: &mut dyn FnMut(Exact)) -> usize {
        let mut at = 0;
        loop {
            if self.lost {
                return bytes.len();
            }
            let passed = self.skip.min(bytes.len() - at);
            at += passed;
            self.skip -= passed;
            let rest = &bytes[at..];
            if rest.len() < 5 {
                return at;
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if len < 4 {
                self.lost = true;
                continue;
            }
            let total = 1 + len;
            if rest[0] == b'A' {
                if inspect && total <= MAX_INSPECTED {
                    if rest.len() < total {
                        return at;
                    }
                    if let Some(mut exact) = make_valid(&mut bytes[at..at + total]) {
                        exact.ordinal = self.seen;
                        found(exact);
                    }
                    self.seen += 1;
                    at += total;
                    continue;
                }
                self.seen += 1;
            }
            self.skip = total - 5;
            at += 5;
        }
    }
}

/// Makes a whole NotificationResponse (`A`, length, pid, channel NUL, payload NUL) valid
/// UTF-8 in place; returns the exact bytes of what was not.
fn make_valid(message: &mut [u8]) -> Option<Exact> {
    let body = message.get_mut(9..)?;
    let channel_end = body.iter().position(|&b| b == 0)?;
    let (channel, rest) = body.split_at_mut(channel_end);
    let rest = &mut rest[1..];
    let payload_end = rest.iter().position(|&b| b == 0)?;
    let payload = &mut rest[..payload_end];
    let bad_channel = std::str::from_utf8(channel).is_err();
    let bad_payload = std::str::from_utf8(payload).is_err();
    if !bad_channel && !bad_payload {
        return None;
    }
    let exact = Exact {
        ordinal: 0,
        channel: bad_channel.then(|| channel.to_vec()),
        payload: bad_payload.then(|| payload.to_vec()),
    };
    replace_invalid(channel);
    replace_invalid(payload);
    Some(exact)
}

/// Replaces each byte of every invalid UTF-8 sequence with `?`.
fn replace_invalid(bytes: &mut [u8]) {
    let mut at = 0;
    while let Err(e) = std::str::from_utf8(&bytes[at..]) {
        at += e.valid_up_to();
        let bad = e.error_len().unwrap_or(bytes.len() - at);
        bytes[at..at + bad].fill(b'?');
        at += bad;
    }
}

/// A stream whose backend messages go through a [`Framer`] on the way in.
#[derive(Debug)]
pub(super) struct Filtered<S> {
    inner: S,
    wire: Arc<Wire>,
    framer: Framer,
    /// Bytes read and not yet handed on: `held[..released]` may go, the rest begins an
    /// incomplete message.
    held: Vec<u8>,
    released: usize,
    /// Whether anything was read yet.
    started: bool,
    /// An SSLRequest was written: the next byte read is the server's answer.
    answer_next: bool,
}

impl<S> Filtered<S> {
    pub(super) fn new(inner: S, wire: Arc<Wire>) -> Filtered<S> {
        Filtered {
            inner,
            wire,
            framer: Framer::default(),
            held: Vec::new(),
            released: 0,
            started: false,
            answer_next: false,
        }
    }

    /// The stream and the wire, for TLS to be set up on the stream (nothing was read past the
    /// server's answer to the SSLRequest, so nothing is held).
    pub(super) fn into_parts(self) -> (S, Arc<Wire>) {
        (self.inner, self.wire)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Filtered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            // Nothing can be read into it (and a read of nothing is not the end here).
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.released > 0 {
                let n = this.released.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                // The end: an incomplete message goes on as it is, and the reader sees it cut.
                if this.held.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.released = this.held.len();
                continue;
            }
            let mut from = start;
            if std::mem::take(&mut this.answer_next) && !this.started {
                from += 1;
            }
            this.started = true;
            let inspect = this.wire.inspect.load(Ordering::Relaxed);
            let wire = &this.wire;
            let mut found = |exact| wire.push(exact);
            if this.held.is_empty() {
                let bytes = &mut buf.filled_mut()[from..end];
                let go = this.framer.scan(bytes, inspect, &mut found);
                if go < bytes.len() {
                    this.held.extend_from_slice(&bytes[go..]);
                    buf.set_filled(from + go);
                }
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
            } else {
                this.held.extend_from_slice(&buf.filled()[from..end]);
                buf.set_filled(start);
                this.released = this.framer.scan(&mut this.held, inspect, &mut found);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Filtered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.started && buf.starts_with(&SSL_REQUEST) {
            this.answer_next = true;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream for Filtered<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.inner.channel_binding()
    }
}

/// The listener's socket: opened here, not by `tokio-postgres` (whose socket type cannot be
/// wrapped), the way `tokio-postgres` opens one: each address of the host in turn (or the
/// `hostaddr`), every TCP connect bounded by `connect_timeout`, with TCP_NODELAY, keepalives
/// and TCP_USER_TIMEOUT as configured; or the unix socket `DIR/.s.PGSQL.PORT`.
#[derive(Debug)]
pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// One that could not be opened: the first write fails with why, so that the attempt
    /// fails as `tokio-postgres`'s own does, with its error type (its constructors are
    /// private), read the same way (`describe_pg_error`).
    Failed(Option<io::Error>),
}

/// Opens the socket for a configuration of one host (`connect.rs` makes one per target).
pub(super) async fn open(config: &Config) -> Socket {
    opened(config)
        .await
        .unwrap_or_else(|e| Socket::Failed(Some(e)))
}

async fn opened(config: &Config) -> io::Result<Socket> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let timeout = config.get_connect_timeout().copied();
    let addresses: Vec<IpAddr> = match (config.get_hostaddrs().first(), config.get_hosts().first())
    {
        (Some(address), _) => vec![*address],
        (None, Some(Host::Unix(dir))) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            return within(timeout, UnixStream::connect(path))
                .await
                .map(Socket::Unix);
        }
        (None, Some(Host::Tcp(host))) => tokio::net::lookup_host((host.as_str(), port))
            .await?
            .map(|a| a.ip())
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut last = None;
    for address in addresses {
        match within(timeout, TcpStream::connect((address, port))).await {
            Ok(stream) => {
                tune(&stream, config)?;
                return Ok(Socket::Tcp(stream));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve any addresses",
        )
    }))
}

async fn within<T>(
    timeout: Option<Duration>,
    connect: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                ))
            }),
        None => connect.await,
    }
}

/// TCP_NODELAY, TCP_USER_TIMEOUT and keepalives, as `tokio-postgres` sets them.
fn tune(stream: &TcpStream, config: &Config) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    stream.set_nodelay(true)?;
    if let Some(timeout) = config.get_tcp_user_timeout() {
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        setsockopt(stream, sockopt::TcpUserTimeout, &millis)?;
    }
    if config.get_keepalives() {
        setsockopt(stream, sockopt::KeepAlive, &true)?;
        setsockopt(
            stream,
            sockopt::TcpKeepIdle,
            &secs(config.get_keepalives_idle()),
        )?;
        if let Some(interval) = config.get_keepalives_interval() {
            setsockopt(stream, sockopt::TcpKeepInterval, &secs(interval))?;
        }
        if let Some(count) = config.get_keepalives_retries() {
            setsockopt(stream, sockopt::TcpKeepCount, &count)?;
        }
    }
    Ok(())
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Failed(e) => Poll::Ready(Err(failure(e))),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Failed(e) => Poll::Ready(Err(failure(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
            Socket::Failed(e) => Poll::Ready(Err(failure(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Failed(_) => Poll::Ready(Ok(())),
        }
    }
}

fn failure(e: &mut Option<io::Error>) -> io::Error {
    e.take()
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))
}

/// The listener's TLS: the same handshake as every connection's ([`Handshake`]), on the
/// socket beneath the filter, with the filter put back above it, on the decrypted bytes.
pub(super) struct ListeningTls {
    pub(super) handshake: Handshake,
    /// Whether the settings name a host: as `tokio-postgres` does, TLS needs one (an address
    /// alone, `hostaddr`, is not checked against a certificate).
    pub(super) has_hostname: bool,
}

impl TlsConnect<Filtered<Socket>> for ListeningTls {
    type Stream = Filtered<TlsStream<Socket>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: Filtered<Socket>) -> Self::Future {
        if !self.has_hostname {
            return Box::pin(async { Err("no hostname provided for TLS handshake".into()) });
        }
        let (socket, wire) = stream.into_parts();
        let handshake = TlsConnect::<Socket>::connect(self.handshake, socket);
        Box::pin(async move { Ok(Filtered::new(handshake.await?, wire)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NotificationResponse.
    fn notification(pid: i32, channel: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut body = pid.to_be_bytes().to_vec();
        body.extend_from_slice(channel);
        body.push(0);
        body.extend_from_slice(payload);
        body.push(0);
        message(b'A', &body)
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// A stream of every kind: a DataRow whose bytes are not UTF-8 (passed as it is), valid
    /// and invalid notifications, a ReadyForQuery, a large message.
    fn stream() -> (Vec<u8>, Vec<u8>, Vec<Exact>) {
        let parts: Vec<(Vec<u8>, Vec<u8>)> = vec![
            same(message(b'D', b"\x00\x01\x00\x00\x00\x01\xff")),
            same(notification(7, b"c", b"plain")),
            (notification(7, b"c", b"\xff"), notification(7, b"c", b"?")),
            same(message(b'Z', b"I")),
            (
                notification(8, b"c", b"caf\xe9 \xe2\x82"),
                notification(8, b"c", b"caf? ??"),
            ),
            same(message(b'D', &[0xfe; 70_000])),
            same(notification(9, "ünï".as_bytes(), "€".as_bytes())),
            (
                notification(9, b"ch\xe9", b"ok"),
                notification(9, b"ch?", b"ok"),
            ),
        ];
        let input = parts.iter().flat_map(|(i, _)| i.clone()).collect();
        let output = parts.iter().flat_map(|(_, o)| o.clone()).collect();
        let exact = vec![
            Exact {
                ordinal: 1,
                channel: None,
                payload: Some(b"\xff".to_vec()),
            },
            Exact {
                ordinal: 2,
                channel: None,
                payload: Some(b"caf\xe9 \xe2\x82".to_vec()),
            },
            Exact {
                ordinal: 4,
                channel: Some(b"ch\xe9".to_vec()),
                payload: None,
            },
        ];
        (input, output, exact)
    }

    fn same(m: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        (m.clone(), m)
    }

    /// Feeds `input` to a framer in the pieces `cuts` makes, the way the stream does: what is
    /// held is scanned again with the next piece.
    fn feed(input: &[u8], cuts: &[usize], inspect: bool) -> (Vec<u8>, Vec<Exact>) {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        let mut found = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            held.extend_from_slice(&input[at..cut]);
            at = cut;
            let go = framer.scan(&mut held, inspect, &mut |e| found.push(e));
            out.extend(held.drain(..go));
        }
        out.extend(held);
        (out, found)
    }

    #[test]
    fn notifications_are_made_valid_and_their_bytes_kept_in_one_read() {
        let (input, output, exact) = stream();
        let (out, found) = feed(&input, &[], true);
        assert_eq!(out, output);
        assert_eq!(found, exact);
    }

    #[test]
    fn without_inspection_every_byte_passes_as_it_is() {
        let (input, _, _) = stream();
        let (out, found) = feed(&input, &[], false);
        assert_eq!(out, input);
        assert!(found.is_empty());
    }

    #[test]
    fn a_stream_cut_at_every_byte_boundary_gives_the_same() {
        let (input, output, exact) = stream();
        // The large DataRow is cut at a few places only: every cut of the rest is tried.
        for cut in (1..input.len()).filter(|c| *c < 200 || *c % 997 == 0 || input.len() - c < 200) {
            let (out, found) = feed(&input, &[cut], true);
            assert_eq!(out, output, "cut at {cut}");
            assert_eq!(found, exact, "cut at {cut}");
        }
        let ones: Vec<usize> = (1..input.len()).collect();
        let (out, found) = feed(&input, &ones, true);
        assert_eq!((out, found), (output, exact), "one byte at a time");
    }

    #[test]
    fn what_is_handed_on_never_includes_an_incomplete_notification() {
        let m = notification(1, b"c", b"\xff\xfe");
        let mut framer = Framer::default();
        let mut first = m[..m.len() - 1].to_vec();
        assert_eq!(framer.scan(&mut first, true, &mut |_| {}), 0);
        let mut header = m[..3].to_vec();
        assert_eq!(framer.scan(&mut header, true, &mut |_| {}), 0);
    }

    #[test]
    fn a_length_below_four_gives_up_framing() {
        let mut bytes = message(b'Z', b"I");
        bytes.extend_from_slice(&[b'A', 0, 0, 0, 1]);
        bytes.extend(notification(1, b"c", b"\xff"));
        let copy = bytes.clone();
        let mut found = Vec::new();
        let mut framer = Framer::default();
        assert_eq!(
            framer.scan(&mut bytes, true, &mut |e| found.push(e)),
            copy.len()
        );
        assert_eq!((bytes, found), (copy, Vec::new()));
    }

    #[test]
    fn invalid_sequences_become_question_marks_of_the_same_length() {
        let mut b = b"a\xffb\xe2\x82c\xf0\x9f\x98\x80\xc3".to_vec();
        replace_invalid(&mut b);
        assert_eq!(b, "a?b??c😀?".as_bytes());
    }

    /// A reader that hands out its bytes in the given sizes.
    struct Pieces(Vec<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.0.is_empty() {
                let piece = self.0.remove(0);
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.insert(0, piece[n..].to_vec());
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn read_all(stream: &mut Filtered<Pieces>, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let mut space = vec![0; size];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut *stream).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return out,
                Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_stream_hands_on_the_same_in_any_pieces_and_buffer_sizes() {
        let (input, output, exact) = stream();
        for (piece, size) in [(1, 8192), (7, 3), (4096, 8192), (100_000, 16), (3, 100_000)] {
            let wire = Arc::new(Wire::default());
            wire.inspect();
            let pieces = input.chunks(piece).map(<[u8]>::to_vec).collect();
            let mut stream = Filtered::new(Pieces(pieces), Arc::clone(&wire));
            assert_eq!(read_all(&mut stream, size), output, "{piece} {size}");
            let found: Vec<Exact> = (0..6).filter_map(|o| wire.take(o)).collect();
            assert_eq!(found, exact, "{piece} {size}");
        }
    }

    #[test]
    fn the_answer_to_an_ssl_request_is_not_a_message() {
        let wire = Arc::new(Wire::default());
        wire.inspect();
        let mut input = vec![b'N'];
        input.extend(notification(1, b"c", b"\xff"));
        let mut stream = Filtered::new(Pieces(vec![input]), Arc::clone(&wire));
        stream.answer_next = true;
        let mut expected = vec![b'N'];
        expected.extend(notification(1, b"c", b"?"));
        assert_eq!(read_all(&mut stream, 1), expected);
        assert_eq!(wire.take(0).and_then(|e| e.payload), Some(b"\xff".to_vec()));
    }

    #[test]
    fn a_stream_cut_inside_a_held_notification_hands_on_what_came() {
        let wire = Arc::new(Wire::default());
        wire.inspect();
        let m = notification(1, b"c", b"\xff");
        let cut = m[..m.len() - 2].to_vec();
        let mut stream = Filtered::new(Pieces(vec![cut.clone()]), wire);
        assert_eq!(read_all(&mut stream, 64), cut);
    }

    /// Random streams of messages of every kind and size, cut at random places and read
    /// through buffers of random sizes: always the same bytes out as in one read, the same
    /// exact bytes found, and every notification valid UTF-8 after.
    #[test]
    fn random_streams_cut_anywhere_give_what_one_read_gives() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for case in 0..300 {
            let mut input = Vec::new();
            for _ in 0..1 + next(12) {
                let bytes = |n: usize, next: &mut dyn FnMut(usize) -> usize| -> Vec<u8> {
                    (0..n).map(|_| 1 + next(255) as u8).collect()
                };
                match next(4) {
                    0 => {
                        let channel = bytes(next(10), &mut next);
                        let payload = bytes(next(9000), &mut next);
                        input.extend(notification(next(1000) as i32, &channel, &payload));
                    }
                    1 => input.extend(notification(1, b"c", "é ok".as_bytes())),
                    _ => {
                        let kind = [b'D', b'Z', b'N', b'S', b'C'][next(5)];
                        input.extend(message(kind, &bytes(next(20_000), &mut next)));
                    }
                }
            }
            let (whole, exact) = feed(&input, &[], true);
            let mut cuts: Vec<usize> = (0..next(8)).map(|_| next(input.len())).collect();
            cuts.sort_unstable();
            assert_eq!(
                feed(&input, &cuts, true),
                (whole.clone(), exact.clone()),
                "{case}"
            );

            let wire = Arc::new(Wire::default());
            wire.inspect();
            let mut pieces = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().copied().chain(std::iter::once(input.len())) {
                // A read of nothing is the end: a socket never returns an empty piece before.
                if cut > at {
                    pieces.push(input[at..cut].to_vec());
                }
                at = cut;
            }
            let mut stream = Filtered::new(Pieces(pieces), Arc::clone(&wire));
            assert_eq!(read_all(&mut stream, 1 + next(20_000)), whole, "{case}");
            let found: Vec<Exact> = (0..200).filter_map(|o| wire.take(o)).collect();
            assert_eq!(found, exact, "{case}");

            let mut framer = Framer::default();
            let mut copy = whole.clone();
            let mut again = Vec::new();
            framer.scan(&mut copy, true, &mut |e| again.push(e));
            assert!(again.is_empty(), "made valid once and for all: {case}");
        }
    }
}
