//! A small TCP proxy on loopback for network faults: it forwards connections to a target and
//! can black-hole (keep the sockets open, forward nothing) or reset (RST) the connections it
//! has, while new connections pass through normally.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

struct Link {
    client: TcpStream,
    server: TcpStream,
    black_hole: Arc<AtomicBool>,
}

pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Link>>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let links = Arc::new(Mutex::new(Vec::new()));
        let registry = Arc::clone(&links);
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let black_hole = Arc::new(AtomicBool::new(false));
                forward(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Arc::clone(&black_hole),
                );
                forward(
                    server.try_clone().unwrap(),
                    client.try_clone().unwrap(),
                    Arc::clone(&black_hole),
                );
                registry.lock().unwrap().push(Link {
                    client,
                    server,
                    black_hole,
                });
            }
        });
        Proxy { port, links }
    }

    /// The connections there are stop carrying anything, in both directions, but stay open.
    pub fn black_hole(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.black_hole.store(true, Ordering::SeqCst);
            std::mem::forget(link); // keep the sockets open: nothing is ever closed
        }
    }

    /// The client's side of the connections there is closed, while the server's stays open
    /// and silent: the server goes on thinking its session's client is there.
    pub fn cut_client_side(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.black_hole.store(true, Ordering::SeqCst);
            let _ = link.client.shutdown(Shutdown::Both);
            std::mem::forget(link.server);
        }
    }

    /// The connections there are reset (RST to both ends).
    pub fn reset(&self) {
        use nix::sys::socket::{setsockopt, sockopt};
        for link in self.links.lock().unwrap().drain(..) {
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let _ = setsockopt(&link.client, sockopt::Linger, &linger);
            let _ = setsockopt(&link.server, sockopt::Linger, &linger);
            let _ = link.client.shutdown(Shutdown::Read);
            let _ = link.server.shutdown(Shutdown::Read);
        }
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, black_hole: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if black_hole.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
}
