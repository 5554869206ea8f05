//! Running as a service: sd_notify readiness on a real datagram socket that the test holds as
//! systemd would, SIGHUP, and the example unit file in `examples/`.

use crate::support::terminal::Terminal;
use crate::support::{Line, PATIENCE, Server};
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The test's end of `NOTIFY_SOCKET`: what a service manager receives.
struct Manager {
    socket: UnixDatagram,
    /// The value to put in NOTIFY_SOCKET.
    address: String,
    _dir: Option<tempfile::TempDir>,
}

impl Manager {
    /// A socket at a path, as systemd gives (`/run/systemd/notify`).
    fn at_path() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            address: path.to_string_lossy().into_owned(),
            _dir: Some(dir),
        }
    }

    /// A socket in the abstract namespace (`@name`).
    fn abstract_socket() -> Manager {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pgnotify-test-{}-{:?}", std::process::id(), Instant::now());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        Manager {
            socket,
            address: format!("@{name}"),
            _dir: None,
        }
    }

    /// The next datagram within `wait`.
    fn next_within(&self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }

    fn next(&self, run: &crate::support::Running) -> String {
        self.next_within(PATIENCE)
            .unwrap_or_else(|| panic!("no datagram within {PATIENCE:?}{}", run.report()))
    }
}

#[test]
fn ready_is_sent_once_every_listen_has_committed_and_only_once() {
    let server = Server::start();
    let manager = Manager::at_path();
    let mut pipe = server
        .pgnotify()
        .env("NOTIFY_SOCKET", &manager.address)
        .args(["pipe", "jobs", "Other Channel"])
        .spawn();
    assert_eq!(
        manager.next(&pipe),
        "READY=1\nSTATUS=listening on 2 channels\n"
    );
    // Sent the moment READY=1 arrives, on the last channel: received.
    server.notify("Other Channel", "right after ready");
    assert_eq!(pipe.read_record().payload, "right after ready");
    // A reconnect says so in STATUS= lines, and never sends READY=1 again.
    server
        .client()
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgnotify'",
        )
        .unwrap();
    let lost = manager.next(&pipe);
    assert!(
        lost.starts_with("STATUS=lost the connection") && lost.ends_with("; reconnecting\n"),
        "{lost:?}"
    );
    assert_eq!(manager.next(&pipe), "STATUS=listening on 2 channels\n");
    pipe.resumes_after_gap(&server, "jobs", "after the reconnect");
    pipe.signal(Signal::SIGTERM);
    assert_eq!(manager.next(&pipe), "STOPPING=1\nSTATUS=stopping\n");
    pipe.expect_exit(143);
    assert_eq!(manager.next_within(Duration::from_millis(200)), None);
}

#[test]
fn with_wait_ready_comes_only_once_connected() {
    let server = Server::start();
    server.pg_ctl(&["stop", "-m", "fast"]);
    let manager = Manager::at_path();
    let mut pipe = server
        .pgnotify()
        .env("NOTIFY_SOCKET", &manager.address)
        .args(["pipe", "--wait", "w"])
        .spawn();
    pipe.wait_stderr("could not connect yet");
    // Down: several attempts fail, and the manager hears nothing meanwhile.
    assert_eq!(manager.next_within(Duration::from_millis(1500)), None);
    server.pg_ctl(&["start"]);
    assert_eq!(
        manager.next(&pipe),
        "READY=1\nSTATUS=listening on 1 channel\n"
    );
    server.notify("w", "first");
    let Line::Notification(record) = pipe.read_any() else {
        panic!("a gap record for the first connection{}", pipe.report())
    };
    assert_eq!(record.payload, "first");
}

#[test]
fn an_abstract_notify_socket_works() {
    let server = Server::start();
    let manager = Manager::abstract_socket();
    let mut listen = server
        .pgnotify()
        .env("NOTIFY_SOCKET", &manager.address)
        .args(["listen", "--json", "a"])
        .spawn();
    assert_eq!(
        manager.next(&listen),
        "READY=1\nSTATUS=listening on 1 channel\n"
    );
    server.notify("a", "x");
    assert_eq!(listen.read_record().payload, "x");
}

#[test]
fn a_bad_notify_socket_is_a_warning_not_a_failure() {
    let server = Server::start();
    for bad in ["/nonexistent/dir/notify", "relative/notify", "@"] {
        let mut pipe = server
            .pgnotify()
            .env("NOTIFY_SOCKET", bad)
            .args(["-v", "pipe", "b"])
            .spawn();
        // Said once LISTEN has committed, which is when READY=1 would have been sent.
        pipe.wait_ready();
        let warning = pipe.wait_stderr("could not notify the service manager");
        assert!(warning.contains(bad), "{warning}");
        server.notify("b", bad);
        assert_eq!(pipe.read_record().payload, bad);
        pipe.signal(Signal::SIGTERM);
        pipe.expect_exit(143);
    }
}

#[test]
fn a_consumer_is_ready_once_it_reads() {
    let server = Server::start();
    let manager = Manager::at_path();
    let mut consumer = server
        .pgnotify()
        .env("NOTIFY_SOCKET", &manager.address)
        .args(["pipe", "--consumer", "svc", "orders"])
        .spawn();
    assert_eq!(
        manager.next(&consumer),
        "READY=1\nSTATUS=consumer svc reading orders\n"
    );
    server
        .pgnotify()
        .args(["notify", "--durable", "orders", "stored after ready"])
        .run()
        .success();
    let line = consumer.read_line();
    assert!(line.contains("stored after ready"), "{line}");
}

#[test]
fn exec_commands_do_not_inherit_notify_socket() {
    let server = Server::start();
    let manager = Manager::at_path();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seen");
    let mut listen = server
        .pgnotify()
        .env("NOTIFY_SOCKET", &manager.address)
        .args(["listen", "e", "--count", "1", "--exec"])
        .arg(format!(
            "printf '%s' \"${{NOTIFY_SOCKET-unset}}\" > '{}'",
            out.display()
        ))
        .spawn();
    manager.next(&listen);
    server.notify("e", "go");
    listen.expect_exit(0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "unset");
}

#[test]
fn sighup_without_a_terminal_is_ignored_and_said() {
    let server = Server::start();
    let mut pipe = server.pgnotify().args(["-v", "pipe", "h"]).spawn();
    pipe.wait_ready();
    pipe.signal(Signal::SIGHUP);
    pipe.wait_stderr("SIGHUP ignored");
    server.notify("h", "still here");
    assert_eq!(pipe.read_record().payload, "still here");
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

#[test]
fn sighup_on_a_terminal_is_its_hangup_and_ends_the_run() {
    let server = Server::start();
    // A real terminal (tmux's pane): SIGHUP is what its hanging up sends.
    let term = Terminal::start(&server, &["-v", "listen", "hup"], &[]);
    term.wait_for_text("listening on");
    term.signal(Signal::SIGHUP);
    assert_eq!(term.exit_status(), 129, "{}", term.report());
    // It did not linger, holding its connection.
    server.wait_until("the listener's session gone", || {
        server.sessions("pgnotify") == 0
    });
}
