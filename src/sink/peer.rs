//! `pipe --connect HOST:PORT`: NDJSON to one peer that pgnotify connects to.
//!
//! The peer is connected, and reconnected, with backoff and TCP keepalive. While it is away,
//! lines wait in its backlog (4 MiB); past that they are dropped and counted, and a gap record
//! with the count goes out first once there is room. A line cut by a lost connection is sent
//! again whole on the next one, so every connection's stream starts at a line boundary.
//!
//! A write that succeeded only put the line in the kernel's socket buffer: when the connection
//! is lost, what sat there and in the peer's receive buffer, unread, is gone. pgnotify cannot
//! know how much that was, so it counts the lines written within the last bytes those buffers
//! could hold (this socket's send buffer plus the largest receive buffer the kernel allows,
//! `net.ipv4.tcp_rmem`), and sends that upper bound first on the next connection as a `peer`
//! gap record.

use super::FINISH_WAIT;
use super::backlog::{Backlog, Chunked, Deliver};
use super::socket::{host_port, hung_up, keepalive, line_start, write_from};
use crate::backoff::backoff;
use crate::deadline;
use crate::exit::UsageError;
use crate::format::{Encoder, write_gap_record};
use crate::msg;
use crate::notification::{Gap, GapKind};
use crate::stats;
use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// What may wait for the peer while it is away.
const PEER_BYTES: usize = 4 << 20;

/// `--connect`: what the loop hands the peer's lines to (its backlog; a thread writes it).
pub(crate) struct Peer {
    backlog: Arc<Backlog>,
    address: String,
}

impl Peer {
    /// Starts the thread that connects to `address` (HOST:PORT) and writes to it.
    pub(crate) fn connect(address: &str, encoder: Encoder) -> Result<Chunked<Peer>> {
        if !host_port(address) {
            return Err(UsageError(format!("--connect needs HOST:PORT, not \"{address}\"")).into());
        }
        let backlog = Backlog::new(
            PEER_BYTES,
            format!("the TCP peer {address}"),
            encoder
                .gap_records()
                .then_some("the TCP peer was away or too slow"),
        );
        let writer = PeerWriter {
            address: address.to_owned(),
            backlog: Arc::clone(&backlog),
            gaps: encoder.gap_records(),
        };
        std::thread::Builder::new()
            .name("peer".into())
            .spawn(move || writer.run())
            .context("could not start the TCP peer thread")?;
        let peer = Peer {
            backlog,
            address: address.to_owned(),
        };
        Ok(Chunked::new(encoder, peer))
    }
}

impl Deliver for Peer {
    fn deliver(&mut self, chunk: Arc<[u8]>, lines: u64) {
        self.backlog.push_counted(chunk, lines);
    }

    /// Everything the peer was sent must have reached it: a run that ends with lines still
    /// waiting for it failed, whatever `--count` says.
    fn finish(&mut self) -> Result<()> {
        if !self.backlog.wait_empty(deadline::after(FINISH_WAIT)) {
            bail!(
                "the TCP peer {} did not take everything within {} s; what it did not take is lost",
                self.address,
                FINISH_WAIT.as_secs()
            );
        }
        Ok(())
    }
}

/// The thread that owns the connection to the peer.
struct PeerWriter {
    address: String,
    backlog: Arc<Backlog>,
    /// Whether the stream has gap records.
    gaps: bool,
}

impl PeerWriter {
    fn run(self) {
        let mut stream: Option<TcpStream> = None;
        let mut current: Option<(Arc<[u8]>, usize, jiff::Timestamp)> = None;
        let mut sent = Sent::default();
        // What a lost connection may have lost, to be said first on the next one.
        let mut at_risk: Option<Gap> = None;
        let mut attempt = 0;
        loop {
            let Some(connected) = stream.as_mut() else {
                match open_peer(&self.address) {
                    Ok(mut s) => {
                        msg::info(&format!("connected to the TCP peer {}", self.address));
                        if let Some(gap) = at_risk.take()
                            && let Err(gap) = self.report(&mut s, gap, &mut sent)
                        {
                            at_risk = Some(gap);
                            std::thread::sleep(backoff(attempt + 1));
                            attempt += 1;
                            continue;
                        }
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
                        std::thread::sleep(backoff(attempt + 1));
                        attempt += 1;
                    }
                }
                continue;
            };
            if current.is_none() {
                match self.backlog.pop() {
                    Some((chunk, at)) => current = Some((chunk, 0, at)),
                    None => return,
                }
            }
            let Some((chunk, offset, at)) = current.as_mut() else {
                continue;
            };
            // A peer that hung up still accepts a first write, into the void: look first.
            let lost = match hung_up(connected) {
                true => Some("closed the connection".to_owned()),
                false => match write_from(connected, chunk, offset) {
                    Ok(()) => {
                        sent.record(chunk, *at);
                        current = None;
                        self.backlog.done();
                        None
                    }
                    Err(e) => {
                        // The lines before the cut one went out: they may be lost too. The
                        // cut one is sent again whole.
                        let start = line_start(chunk, *offset);
                        sent.record(&chunk[..start], *at);
                        *offset = start;
                        Some(e.to_string())
                    }
                },
            };
            if let Some(why) = lost {
                let gap = sent.at_risk(risk_window(connected), &self.address, &why);
                sent = Sent::default();
                stream = None;
                let said = match self.gaps {
                    true => " (said first on the next connection)",
                    false => "",
                };
                let warning = match &gap {
                    Some(gap) => format!(
                        "lost the TCP peer {}: {why}; up to {} notifications written to it may \
                         not have been read{said}; reconnecting",
                        self.address, gap.dropped
                    ),
                    None => format!("lost the TCP peer {}: {why}; reconnecting", self.address),
                };
                msg::warn(&warning);
                if self.gaps {
                    at_risk = merge(at_risk, gap);
                }
            }
        }
    }

    /// Sends the gap record of what the last connection may have lost, first on a new one.
    /// The record is itself only in a socket buffer until the peer reads it: it counts in
    /// `sent` with the notifications it reports, so that losing this connection too reports
    /// them again.
    fn report(&self, stream: &mut TcpStream, mut gap: Gap, sent: &mut Sent) -> Result<(), Gap> {
        if hung_up(stream) {
            return Err(gap);
        }
        gap.until = Some(jiff::Timestamp::now());
        let mut record = Vec::new();
        if write_gap_record(&mut record, &gap).is_err() {
            return Ok(());
        }
        let mut offset = 0;
        match write_from(stream, &record, &mut offset) {
            Ok(()) => {
                stats::gap(gap.kind);
                sent.record_counted(record.len(), gap.dropped, gap.from);
                Ok(())
            }
            Err(_) => Err(gap),
        }
    }
}

/// Two losses before a connection could say so are one gap: the earlier start, both counts.
fn merge(earlier: Option<Gap>, later: Option<Gap>) -> Option<Gap> {
    match (earlier, later) {
        (Some(mut a), Some(b)) => {
            a.dropped += b.dropped;
            a.reason = b.reason;
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// The most bytes a lost connection can have taken with it: what this socket's send buffer
/// holds and what the peer's receive buffer can (the largest this kernel allows: a peer
/// elsewhere is assumed to allow no more).
pub(super) fn risk_window(stream: &TcpStream) -> usize {
    use nix::sys::socket::{getsockopt, sockopt};
    let send = getsockopt(stream, sockopt::SndBuf).unwrap_or(4 << 20);
    send + receive_max()
}

/// The largest TCP receive buffer (`net.ipv4.tcp_rmem`, its maximum; 6 MiB if unreadable).
fn receive_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(6 << 20)
}

/// The most chunks remembered per connection; older ones are merged (which only coarsens the
/// upper bound).
const SENT_CHUNKS: usize = 4096;

/// What the current connection was sent lately: bytes and notification lines per chunk, with
/// when the chunk was handed over, newest last, covering at least the largest risk window.
#[derive(Default)]
struct Sent {
    chunks: VecDeque<(usize, u64, jiff::Timestamp)>,
    bytes: usize,
}

impl Sent {
    fn record(&mut self, bytes: &[u8], at: jiff::Timestamp) {
        if !bytes.is_empty() {
            self.record_counted(bytes.len(), notification_lines(bytes), at);
        }
    }

    /// Records `bytes` bytes sent that stand for `lines` notifications handed over at `at`.
    fn record_counted(&mut self, bytes: usize, lines: u64, at: jiff::Timestamp) {
        self.chunks.push_back((bytes, lines, at));
        self.bytes += bytes;
        let keep = 64 << 20;
        while self.chunks.len() > 1 && self.bytes - self.chunks[0].0 >= keep {
            if let Some((b, _, _)) = self.chunks.pop_front() {
                self.bytes -= b;
            }
        }
        if self.chunks.len() > SENT_CHUNKS
            && let (Some((b1, l1, at)), Some((b2, l2, _))) =
                (self.chunks.pop_front(), self.chunks.pop_front())
        {
            self.chunks.push_front((b1 + b2, l1 + l2, at));
        }
    }

    /// The gap for a connection lost after this was sent: the notifications among the last
    /// `window` bytes (whole chunks, so never fewer), from when the oldest was handed over.
    fn at_risk(&self, window: usize, address: &str, why: &str) -> Option<Gap> {
        let (mut bytes, mut lines, mut from) = (0, 0, None);
        for (b, l, at) in self.chunks.iter().rev() {
            if bytes >= window {
                break;
            }
            bytes += b;
            lines += l;
            from = Some(*at);
        }
        let from = from.filter(|_| lines > 0)?;
        Some(Gap {
            kind: GapKind::Peer,
            reason: format!(
                "lost the TCP peer {address} ({why}): up to {lines} notifications written to it \
                 may not have been read (an upper bound: what the socket buffers could hold)"
            ),
            from,
            until: None,
            dropped: lines,
        })
    }
}

/// The notification lines in whole NDJSON lines (gap records are not counted).
fn notification_lines(bytes: &[u8]) -> u64 {
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    lines.filter(|l| !l.starts_with(b"{\"gap\":")).count() as u64
}

pub(super) fn open_peer(address: &str) -> io::Result<TcpStream> {
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
