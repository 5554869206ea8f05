//! `pipe --serve [ADDR:]PORT`: NDJSON to every TCP client that connects to pgnotify.
//!
//! A client gets every line from the moment it connected. One that does not read fast enough
//! to keep its backlog (1 MiB) from filling is disconnected, with a stderr line; nobody else
//! waits for it.

use super::FINISH_WAIT;
use super::backlog::{Backlog, Chunked, Deliver, Popped, WRITER_WAIT};
use super::socket::{host_port, hung_up, keepalive, takes_data};
use crate::deadline;
use crate::exit::UsageError;
use crate::format::Encoder;
use crate::msg;
use crate::stats;
use anyhow::{Context, Result, anyhow, bail};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many `--serve` clients may be connected at once; more are refused.
const MAX_CLIENTS: usize = 256;
/// What may wait for one `--serve` client before it is disconnected.
const CLIENT_BYTES: usize = 1 << 20;

/// `--serve`: what the loop hands the lines to (every connected client's backlog).
pub(crate) struct Server {
    clients: Arc<Mutex<Vec<Client>>>,
}

struct Client {
    address: SocketAddr,
    backlog: Arc<Backlog>,
    stream: TcpStream,
}

impl Server {
    /// Listens on `spec` (PORT, or ADDR:PORT) and starts accepting clients.
    pub(crate) fn serve(spec: &str, encoder: Encoder) -> Result<Chunked<Server>> {
        let address = listen_address("--serve", spec)?;
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
        Ok(Chunked::new(encoder, Server { clients }))
    }
}

/// `8080` means 127.0.0.1:8080: another address only when the user names it. `option` names
/// the option in errors.
pub(super) fn listen_address(option: &str, spec: &str) -> Result<SocketAddr> {
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let malformed = || {
        UsageError(format!(
            "{option} needs PORT or ADDRESS:PORT, not \"{spec}\""
        ))
    };
    // Port 0 is allowed here: it asks for a free one.
    let zero_port = spec.strip_suffix(":0").map(|h| format!("{h}:1"));
    if !host_port(zero_port.as_deref().unwrap_or(spec)) {
        return Err(malformed().into());
    }
    match spec.to_socket_addrs() {
        Ok(mut addresses) => addresses
            .next()
            .ok_or_else(|| anyhow!("{option} {spec}: the name has no address")),
        Err(e) => bail!("{option} {spec}: could not resolve the address: {e}"),
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
                list.retain(|c| !c.backlog.is_closed());
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
        let backlog = Backlog::new(CLIENT_BYTES, format!("client {address}"), None);
        let thread_backlog = Arc::clone(&backlog);
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || write_client(writer, address, &thread_backlog));
        if spawned.is_ok()
            && let Ok(mut list) = clients.lock()
        {
            list.push(Client {
                address,
                backlog,
                stream,
            });
            drop(list);
            msg::info(&format!("client {address} connected"));
        }
    }
}

fn write_client(mut stream: TcpStream, address: SocketAddr, backlog: &Backlog) {
    let _counted = stats::Client::connected();
    loop {
        // While idle, look every second whether the client hung up, so that it does not keep
        // its socket and thread until the next notification.
        let chunk = match backlog.pop_within(Duration::from_secs(1)) {
            Popped::Chunk(chunk, _) => chunk,
            Popped::Closed => return,
            Popped::Idle if hung_up(&stream) => {
                msg::info(&format!("client {address} left"));
                backlog.close();
                return;
            }
            Popped::Idle => continue,
        };
        if stream.write_all(&chunk).is_err() {
            if !backlog.is_closed() {
                msg::info(&format!("client {address} left"));
            }
            backlog.close();
            return;
        }
        backlog.done();
    }
}

impl Deliver for Server {
    /// Every client gets the chunk; one whose backlog has no room is disconnected.
    fn deliver(&mut self, chunk: Arc<[u8]>, _lines: u64) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        let deadline = Instant::now() + WRITER_WAIT;
        clients.retain(|client| {
            if client
                .backlog
                .push_or_wait(std::slice::from_ref(&chunk), || takes_data(&client.stream), deadline)
            {
                return true;
            }
            if !client.backlog.is_closed() {
                msg::warn(&format!(
                    "client {} is not reading fast enough: disconnected (over {} KiB waited for it)",
                    client.address,
                    CLIENT_BYTES >> 10
                ));
                client.backlog.close();
                let _ = client.stream.shutdown(Shutdown::Both);
            }
            false
        });
    }

    /// Clients come and go: what a client that left did not take was never promised to anyone.
    fn finish(&mut self) -> Result<()> {
        let clients: Vec<Arc<Backlog>> = self
            .clients
            .lock()
            .map(|c| c.iter().map(|c| Arc::clone(&c.backlog)).collect())
            .unwrap_or_default();
        let deadline = deadline::after(FINISH_WAIT);
        for backlog in clients {
            backlog.wait_empty(deadline);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(
            listen_address("--serve", "8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            listen_address("--serve", "0.0.0.0:9").unwrap(),
            "0.0.0.0:9".parse().unwrap()
        );
        assert!(listen_address("--serve", "nonsense").is_err());
    }
}
