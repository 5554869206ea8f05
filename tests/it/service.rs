//! Running as a service: sd_notify readiness on a real datagram socket that the test holds as
//! systemd would, SIGHUP, and the example unit file in `examples/`.

use crate::support::terminal::Terminal;
use crate::support::{Line, PATIENCE, Server};
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
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

/// The `[Service]` settings of the example unit, in order (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = if line == "[Service]" { "service" } else { "" };
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        if section == "service" {
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    settings
}

#[test]
fn the_example_unit_is_valid_and_its_exec_start_runs_as_a_notify_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/pgnotify-pipe.service")).unwrap();
    let bin = env!("CARGO_BIN_EXE_pgnotify");
    let settings = unit_settings(&text);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("KillSignal"), ["SIGTERM"]);
    assert!(
        get("RestartPreventExitStatus")[0]
            .split(' ')
            .any(|s| s == "2")
    );
    assert!(get("SuccessExitStatus")[0].split(' ').any(|s| s == "143"));
    // systemd's own check, where it is installed: no warning about the unit.
    let dir = tempfile::tempdir().unwrap();
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        && out.status.success()
    {
        let unit = dir.path().join("pgnotify-pipe.service");
        std::fs::write(&unit, text.replace("/usr/bin/pgnotify", bin)).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("pgnotify-pipe.service"), "{stderr}");
    }
    // ExecStart as written, against a harness server found through the unit's PGSERVICE (the
    // port is the one thing changed: 0 takes a free one).
    let server = Server::start();
    let exec = get("ExecStart")[0];
    assert!(!exec.contains(['"', '\'', '\\', '$', '%']), "{exec}");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/pgnotify"));
    let args: Vec<String> = words
        .map(|w| w.replace("127.0.0.1:7300", "127.0.0.1:0"))
        .collect();
    assert!(args.contains(&"127.0.0.1:0".to_owned()), "{args:?}");
    let conn = server.connection_args();
    let services = dir.path().join("pg_service.conf");
    let mut cmd = server.bare();
    for env in get("Environment") {
        let (key, value) = env.split_once('=').unwrap();
        match key {
            "PGSERVICEFILE" => cmd.env(key, &services),
            _ => cmd.env(key, value),
        };
        if key == "PGSERVICE" {
            std::fs::write(
                &services,
                format!(
                    "[{value}]\nhost={}\nport={}\nuser={}\ndbname=postgres\n",
                    conn[1], conn[3], conn[5]
                ),
            )
            .unwrap();
        }
    }
    let manager = Manager::at_path();
    let mut pipe = cmd
        .env("NOTIFY_SOCKET", &manager.address)
        .arg("-v")
        .args(&args)
        .spawn();
    let line = pipe.wait_stderr("serving NDJSON on ");
    let address = line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(
        manager.next(&pipe),
        "READY=1\nSTATUS=listening on 1 channel\n"
    );
    let client = std::net::TcpStream::connect(&address).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = std::io::BufReader::new(client);
    server.wait_until("the service's session, named by PGAPPNAME", || {
        server.sessions("pgnotify-pipe") == 1
    });
    // A client accepted before the notification is sent gets it (the server says so once
    // it has taken the connection: retry until it arrives).
    let started = Instant::now();
    let mut got = String::new();
    while got.is_empty() {
        assert!(started.elapsed() < PATIENCE, "{}", pipe.report());
        server.notify("jobs", "from the service");
        reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = std::io::BufRead::read_line(&mut reader, &mut got);
    }
    assert!(got.contains("\"payload\":\"from the service\""), "{got}");
    pipe.signal(Signal::SIGTERM);
    assert_eq!(manager.next(&pipe), "STOPPING=1\nSTATUS=stopping\n");
    pipe.expect_exit(143);
}

#[test]
fn as_pid_1_of_its_own_namespace_sigterm_ends_it_cleanly() {
    // The kernel ignores a signal to a namespace's PID 1 that has no handler for it: only a
    // handler installed from the start makes `docker stop` work without --init.
    let server = Server::start();
    let mut run = server
        .shell("exec unshare --pid --fork --kill-child \"$PGNOTIFY\" \"$@\" -v pipe pid1")
        .spawn();
    run.wait_ready();
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", run.pid())).unwrap();
    let pgnotify: i32 = children.trim().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pgnotify}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "not PID 1 of its namespace: {status}"
    );
    server.notify("pid1", "before the stop");
    assert_eq!(run.read_record().payload, "before the stop");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pgnotify), Signal::SIGTERM).unwrap();
    // unshare exits with its child's status.
    run.expect_exit(143);
}

#[test]
fn a_notify_socket_too_long_a_file_or_one_nobody_reads_never_stops_the_run() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    let long = format!("/{}", "d".repeat(200));
    for bad in [
        long.as_str(),
        &file.display().to_string(),
        &dir.path().display().to_string(),
    ] {
        let mut pipe = server
            .pgnotify()
            .env("NOTIFY_SOCKET", bad)
            .args(["-v", "pipe", "b"])
            .spawn();
        pipe.wait_ready();
        pipe.wait_stderr("could not notify the service manager");
        server.notify("b", "still delivered");
        assert_eq!(pipe.read_record().payload, "still delivered");
        pipe.signal(Signal::SIGTERM);
        pipe.expect_exit(143);
    }
    // A socket that nobody reads holds 10 datagrams (net.unix.max_dgram_qlen): every reconnect
    // sends one more STATUS=, and the run must go on past them.
    let unread = Manager::at_path();
    let mut pipe = server
        .pgnotify()
        .env("NOTIFY_SOCKET", &unread.address)
        .args(["-v", "pipe", "--max-downtime", "1min", "r"])
        .spawn();
    pipe.wait_ready();
    for _ in 0..14 {
        server.wait_until("the pipe listens", || server.sessions("pgnotify") == 1);
        let pid = server.backend_pid("pgnotify");
        server.psql(&format!("SELECT pg_terminate_backend({pid})"));
        // Its new session, LISTEN done (idle), once the old one is gone.
        server.wait_until("the pipe listens again", || {
            server
                .psql(&format!(
                    "SELECT count(*) FILTER (WHERE pid <> {pid} AND state = 'idle') || ' ' || \
                            count(*) FROM pg_stat_activity WHERE application_name = 'pgnotify'"
                ))
                .trim()
                == "1 1"
        });
    }
    let payload = "after many reconnects";
    server.wait_until("a notification gets through", || {
        server.notify("r", payload);
        pipe.try_read_line_within(Duration::from_millis(500))
            .is_some_and(|l| l.contains(payload))
    });
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
    drop(unread);
}
