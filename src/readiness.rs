//! Telling a service manager how the run is going, by sd_notify(3)'s protocol: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for a
//! socket in the abstract namespace). `config` reads the variable; this sends.
//!
//! Owns: the socket, `READY=1` once per process, `STATUS=` and `STOPPING=1`. Does not own:
//! when the run is ready (the sources say so: every LISTEN committed, or the consumer reading).
//!
//! - A socket that cannot be reached is a warning, once, never a failure: the run is the
//!   service, the notification only its courtesy to the manager.
//! - The variable stays in pgnotify's environment (Rust cannot unset it safely once threads
//!   run), but it is taken out of every child's (`--exec` commands, `demo`'s server), which is
//!   what sd_notify's `unset_environment` is for: a child must not speak for the service.

use crate::msg;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The variable that names the socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The service manager's socket, if there is one; cheap to clone, and every clone shares
/// whether `READY=1` was sent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// The variable's value, as given.
    socket: String,
    ready: AtomicBool,
    /// Whether a failure to send was said.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`'s value; none when it is unset or empty.
    pub(crate) fn new(socket: Option<String>) -> Notifier {
        Notifier {
            inner: socket.filter(|s| !s.is_empty()).map(|socket| {
                Arc::new(Inner {
                    socket,
                    ready: AtomicBool::new(false),
                    warned: AtomicBool::new(false),
                })
            }),
        }
    }

    /// The run is doing its job: `READY=1` the first time, only `STATUS=` afterwards (after a
    /// reconnect, say).
    pub(crate) fn ready(&self, status: &str) {
        let Some(inner) = &self.inner else { return };
        let status = one_line(status);
        match inner.ready.swap(true, Ordering::SeqCst) {
            false => self.send(&format!("READY=1\nSTATUS={status}\n")),
            true => self.send(&format!("STATUS={status}\n")),
        }
    }

    /// What the run is doing now (reconnecting, say), without changing readiness.
    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={}\n", one_line(status)));
    }

    /// The run is ending on a signal.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping\n");
    }

    fn send(&self, message: &str) {
        let Some(inner) = &self.inner else { return };
        if let Err(e) = send_to(&inner.socket, message.as_bytes())
            && !inner.warned.swap(true, Ordering::Relaxed)
        {
            msg::warn(&format!(
                "could not notify the service manager at NOTIFY_SOCKET={:?}: {e}",
                inner.socket
            ));
        }
    }
}

/// A status is one line of the datagram.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

fn send_to(socket: &str, message: &[u8]) -> std::io::Result<()> {
    let address = address(socket)?;
    let datagram = UnixDatagram::unbound()?;
    // Never wait for the manager: a socket nobody reads holds only a few datagrams
    // (net.unix.max_dgram_qlen, 10 by default), and a blocking send after that would stop the
    // run at its next reconnect. A full socket is a failure to send, said once.
    datagram.set_nonblocking(true)?;
    let sent = datagram.send_to_addr(message, &address)?;
    match sent == message.len() {
        true => Ok(()),
        false => Err(std::io::Error::other("the datagram was cut short")),
    }
}

/// `/path` or `@abstract` (sd_notify(3)); anything else (a relative path, `vsock:`) is refused.
fn address(socket: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = socket.strip_prefix('@') {
        return abstract_name(name.as_bytes());
    }
    match socket.starts_with('/') {
        true => SocketAddr::from_pathname(socket),
        false => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an absolute path or an @abstract name",
        )),
    }
}

#[cfg(target_os = "linux")]
fn abstract_name(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_name(_: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_sent_once_then_only_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(Some(path.to_string_lossy().into_owned()));
        let twin = notifier.clone();
        notifier.ready("listening on 2 channels");
        twin.ready("listening\non 2 channels again");
        notifier.stopping();
        let mut buf = [0u8; 256];
        let mut next = || {
            let n = socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        };
        assert_eq!(next(), "READY=1\nSTATUS=listening on 2 channels\n");
        assert_eq!(next(), "STATUS=listening on 2 channels again\n");
        assert_eq!(next(), "STOPPING=1\nSTATUS=stopping\n");
    }

    #[test]
    fn a_socket_nobody_reads_never_blocks_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(Some(path.to_string_lossy().into_owned()));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            notifier.ready("listening");
            for _ in 0..100 {
                notifier.status("connection lost; reconnecting");
            }
            notifier.stopping();
            let _ = done.send(());
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok(),
            "sending to a socket nobody reads blocked"
        );
    }

    #[test]
    fn no_socket_sends_nothing_and_bad_ones_are_refused() {
        Notifier::new(None).ready("x");
        Notifier::new(Some(String::new())).ready("x");
        assert!(address("relative/path").is_err());
        assert!(address("vsock:2:1234").is_err());
        assert!(send_to("/nonexistent/dir/notify", b"READY=1\n").is_err());
    }
}
