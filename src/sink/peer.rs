//! `pipe --connect HOST:PORT`: NDJSON to one peer that pgnotify connects to.
//!
//! The peer is connected, and reconnected, with backoff and TCP keepalive. While it is away,
//! lines wait in its backlog (4 MiB); past that they are dropped and counted, and a gap record
//! with the count goes out first once there is room. A line cut by a lost connection is sent
//! again whole on the next one, so every connection's stream starts at a line boundary.

use super::FINISH_WAIT;
use super::backlog::{Backlog, Chunked, Deliver};
use super::socket::{hung_up, keepalive, line_start, write_from};
use crate::backoff::backoff;
use crate::deadline;
use crate::format::Encoder;
use crate::msg;
use anyhow::{Context, Result, bail};
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
        if address
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            bail!("--connect needs HOST:PORT, not \"{address}\"");
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
                        std::thread::sleep(backoff(attempt + 1));
                        attempt += 1;
                    }
                }
                continue;
            };
            if current.is_none() {
                match self.backlog.pop() {
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
                    self.backlog.done();
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
