//! `listen`: round trips, formats, --count, --timeout, a closed pipe, signals, lost connections.

use crate::support::{Record, Server};
use nix::sys::signal::Signal;
use std::time::Duration;

/// Channel names that trip up naive tools: case, spaces, quotes, SQL, unicode, a newline.
const AWKWARD_CHANNELS: &[&str] = &[
    "Orders",
    "with space",
    "quo\"te",
    "a\"b; drop table canary; --",
    "ünï©ødé 🎉",
    "new\nline",
    "x23456789012345678901234567890123456789012345678901234567890123",
];

#[test]
fn awkward_channels_and_payloads_round_trip_exactly() {
    let server = Server::start();
    server
        .client()
        .batch_execute("CREATE TABLE canary (x int)")
        .unwrap();
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "--json"])
        .args(AWKWARD_CHANNELS)
        .spawn();
    listener.wait_ready();
    let big = "€".repeat(2666) + "x"; // 7999 bytes
    let payloads = [
        "",
        "plain",
        "it's \"quoted\"",
        "line1\nline2\r\n",
        "'); DROP TABLE canary; --",
        "日本語 ✓",
        "\u{1b}[31mred",
        &big,
    ];
    let mut expected = Vec::new();
    for (i, channel) in AWKWARD_CHANNELS.iter().enumerate() {
        let payload = payloads[i % payloads.len()];
        server
            .pgnotify()
            .args(["notify", channel, payload])
            .run()
            .success();
        expected.push((channel.to_string(), payload.to_string()));
    }
    server.notify("Orders", &big);
    expected.push(("Orders".into(), big.clone()));
    for (channel, payload) in &expected {
        let record = listener.read_record();
        assert_eq!((&record.channel, &record.payload), (channel, payload));
        assert!(record.pid > 0);
        assert!(
            record.received_at.ends_with('Z') && record.received_at.len() == 27,
            "{}",
            record.received_at
        );
    }
    let exists: bool = server
        .client()
        .query_one("SELECT to_regclass('canary') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(
        exists,
        "the canary table must survive the injection attempts"
    );
}

#[test]
fn channel_names_are_case_exact() {
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "Orders", "--count", "1"])
        .spawn();
    listener.wait_ready();
    server.notify("orders", "lower case: another channel");
    server.notify("ORDERS", "upper case: another channel");
    server.notify("Orders", "exact");
    let record = listener.read_record();
    assert_eq!(
        (record.channel.as_str(), record.payload.as_str()),
        ("Orders", "exact")
    );
    listener.expect_exit(0);
}

#[test]
fn many_channels_share_one_connection() {
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args([
            "-v",
            "-d",
            "dbname=postgres application_name=many",
            "listen",
            "a",
            "b",
            "c",
            "--count",
            "3",
        ])
        .spawn();
    listener.wait_ready();
    assert_eq!(server.sessions("many"), 1);
    for channel in ["c", "a", "b"] {
        server.notify(channel, channel);
    }
    let got: Vec<String> = (0..3).map(|_| listener.read_record().channel).collect();
    assert_eq!(got, ["c", "a", "b"]);
    listener.expect_exit(0);
}

#[test]
fn notifications_from_one_transaction_arrive_in_order_and_count_stops_exactly() {
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "jobs", "--count", "500"])
        .spawn();
    listener.wait_ready();
    server
        .client()
        .batch_execute("SELECT pg_notify('jobs', i::text) FROM generate_series(1, 800) i")
        .unwrap();
    let rest = listener.expect_exit(0);
    let records: Vec<Record> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let payloads: Vec<String> = records.into_iter().map(|r| r.payload).collect();
    let expected: Vec<String> = (1..=500).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
}

#[test]
fn timeout_exits_124_when_nothing_arrives() {
    let server = Server::start();
    let out = server
        .pgnotify()
        .args(["listen", "quiet", "--timeout", "300ms"])
        .run();
    out.code(124);
    assert_eq!(out.stdout, "", "{}", out.report());
}

#[test]
fn timeout_with_count_keeps_what_arrived() {
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "c", "--count", "2", "--timeout", "1500ms"])
        .spawn();
    listener.wait_ready();
    server.notify("c", "only one");
    let rest = listener.expect_exit(124);
    let records: Vec<Record> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, "only one");
}

#[test]
fn timeout_without_count_is_disarmed_by_a_first_notification() {
    let server = Server::start();
    let timeout = Duration::from_millis(500);
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "c", "--timeout", "500ms"])
        .spawn();
    listener.wait_ready();
    server.notify("c", "first");
    assert_eq!(listener.read_record().payload, "first");
    // What is tested is that nothing happens when the timeout would have fired: wait that long
    // (it counts from the start, so longer than that is past it) and a margin, on the child.
    listener.assert_running_for(
        timeout + Duration::from_millis(400),
        "listen must keep running after the first notification",
    );
    listener.signal(Signal::SIGTERM);
    listener.expect_exit(143);
}

#[test]
fn text_and_psql_formats() {
    let server = Server::start();
    let mut text = server
        .pgnotify()
        .args([
            "-v", "listen", "--format", "text", "My Chan", "--count", "1",
        ])
        .spawn();
    let mut psql = server
        .pgnotify()
        .args([
            "-v", "listen", "--format", "psql", "My Chan", "--count", "2",
        ])
        .spawn();
    text.wait_ready();
    psql.wait_ready();
    server.notify("My Chan", "a\nb");
    server.notify("My Chan", "");
    let line = text.read_line();
    let fields: Vec<&str> = line.split("  ").collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert!(
        fields[0].len() == 23 && fields[0].as_bytes()[10] == b' ',
        "time: {line}"
    );
    assert_eq!(fields[1], "My Chan");
    assert!(fields[2].starts_with("pid="), "{line}");
    assert_eq!(fields[3], "a\\nb", "control characters are escaped in text");
    assert!(!line.contains('\u{1b}'), "no colour when not on a terminal");
    text.expect_exit(0);
    // Like psql, the psql format writes payloads raw when not on a terminal.
    assert_eq!(
        psql.read_line(),
        "Asynchronous notification \"My Chan\" with payload \"a"
    );
    assert!(
        psql.read_line()
            .starts_with("b\" received from server process with PID ")
    );
    let second = psql.read_line();
    assert!(
        second.starts_with(
            "Asynchronous notification \"My Chan\" received from server process with PID "
        ),
        "{second}"
    );
    psql.expect_exit(0);
}

#[test]
fn psql_format_matches_psql_itself() {
    let server = Server::start();
    let mut ours = server
        .pgnotify()
        .args(["-v", "listen", "--format", "psql", "Ch", "--count", "1"])
        .spawn();
    ours.wait_ready();
    // psql prints notifications after each command; its \! runs pgnotify notify in between.
    let notify = format!(
        "{} -h {} -p {} -U postgres -d postgres notify Ch 'hello there'",
        env!("CARGO_BIN_EXE_pgnotify"),
        server.cluster.socket_dir().display(),
        server.cluster.port()
    );
    let script = format!("LISTEN \"Ch\";\n\\! {notify}\nSELECT 1;\n");
    let psql = server.cluster.bin_dir().join("psql");
    let out = server
        .shell(r#"exec "$PSQL" -X -q -t -d "$CONNINFO""#)
        .env("PSQL", psql)
        .env("CONNINFO", server.cluster.conninfo())
        .stdin(script)
        .run();
    out.success();
    let psql_out = &out.stdout;
    let psql_line = psql_out
        .lines()
        .find(|l| l.starts_with("Asynchronous"))
        .unwrap_or_else(|| panic!("psql said nothing of it{}", out.report()));
    assert_eq!(ours.read_line(), psql_line);
    ours.expect_exit(0);
}

#[test]
fn a_closed_pipe_ends_listen_quietly_even_without_traffic() {
    let server = Server::start();
    let mut listener = server.pgnotify().args(["-v", "listen", "x"]).spawn();
    listener.wait_ready();
    server.notify("x", "one");
    assert_eq!(listener.read_record().payload, "one");
    listener.close_stdout(); // the reader goes away, like `| head -1`
    let (status, _) = listener.finish();
    assert_eq!(status.code(), Some(0), "{}", listener.stderr());
    assert!(
        !listener.stderr().contains("error"),
        "{}",
        listener.stderr()
    );
}

#[test]
fn a_closed_pipe_during_a_flood_ends_listen_quietly() {
    let server = Server::start();
    let mut out = server
        .shell(r#"set -o pipefail; "$PGNOTIFY" "$@" -v listen flood | head -1"#)
        .spawn();
    server.wait_until("the listener", || server.sessions("pgnotify") == 1);
    server
        .client()
        .batch_execute("SELECT pg_notify('flood', i::text) FROM generate_series(1, 20000) i")
        .unwrap();
    let (status, stdout) = out.finish();
    let stderr = out.stderr();
    assert_eq!(status.code(), Some(0), "pipefail status{}", out.report());
    assert!(
        stdout.starts_with("{\"channel\":\"flood\",\"payload\":\"1\""),
        "{stdout}{}",
        out.report()
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{}",
        out.report()
    );
    server.wait_until("the listener to disconnect", || {
        server.sessions("pgnotify") == 0
    });
}

/// Stdout closed before the start (`Cmd::closed_stdout`): every write would fail with EPIPE,
/// and listen ends quietly with status 0, whether it notices the closed pipe first or the
/// failed write of the notification.
#[test]
fn a_pipe_closed_before_the_start_ends_listen_quietly() {
    let server = Server::start();
    let ended = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Send once it listens (its LISTEN committed), unless it has ended already.
            let listening = || {
                server
                    .client()
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgnotify'
                          AND state = 'idle' AND query LIKE 'LISTEN %'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    == 1
            };
            server.wait_until("the listener or its end", || {
                ended.load(std::sync::atomic::Ordering::SeqCst) || listening()
            });
            if !ended.load(std::sync::atomic::Ordering::SeqCst) {
                server.notify("x", "into a closed pipe");
            }
        });
        let out = server
            .pgnotify()
            .args(["listen", "x", "--count", "1"])
            .closed_stdout()
            .run();
        ended.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    });
    out.success();
    assert_eq!(out.stdout, "", "{}", out.report());
    assert_eq!(out.stderr, "", "{}", out.report());
}

/// Bytes not yet read in the receive queues of a process's Unix sockets, as `ss` reports them.
fn unread_socket_bytes(pid: u32) -> u64 {
    let text = crate::support::ss(&["-Hxpn"]);
    let owned = format!("pid={pid},");
    let queues: Vec<u64> = text
        .lines()
        .filter(|l| l.contains(&owned))
        .map(|l| {
            let recv_q = l.split_whitespace().nth(2);
            recv_q
                .and_then(|q| q.parse().ok())
                .unwrap_or_else(|| panic!("no Recv-Q in {l:?}"))
        })
        .collect();
    assert!(
        !queues.is_empty(),
        "ss shows no Unix socket of process {pid}:\n{text}"
    );
    queues.iter().sum()
}

#[test]
fn sigint_and_sigterm_flush_everything_received_and_exit_130_and_143() {
    let server = Server::start();
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let mut listener = server.pgnotify().args(["-v", "listen", "s"]).spawn();
        listener.wait_ready();
        // Nobody reads stdout yet: most of these wait inside pgnotify when the signal comes
        // (about 700 kB as the queue counts them: within its 1 MiB, so none is dropped).
        server
            .client()
            .batch_execute(
                "SELECT pg_notify('s', i || repeat('.', 200)) FROM generate_series(1, 2000) i",
            )
            .unwrap();
        server.wait_until("the server to hand everything over", || {
            server
                .client()
                .query_one("SELECT pg_notification_queue_usage()", &[])
                .unwrap()
                .get::<_, f64>(0)
                == 0.0
        });
        // Received: its backend has sent everything (idle, waiting for the client again) and
        // nothing is left unread on pgnotify's end of the socket.
        server.wait_until("pgnotify to take everything off its socket", || {
            let backend_idle: i64 = server
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgnotify'
                      AND state = 'idle' AND wait_event = 'ClientRead'",
                    &[],
                )
                .unwrap()
                .get(0);
            backend_idle == 1 && unread_socket_bytes(listener.child.id()) == 0
        });
        listener.signal(signal);
        let rest = listener.expect_exit(code);
        let payloads: Vec<String> = rest
            .lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().payload)
            .collect();
        assert_eq!(
            payloads.len(),
            2000,
            "every notification received is written before the exit"
        );
        for (i, payload) in payloads.iter().enumerate() {
            assert!(payload.starts_with(&format!("{}.", i + 1)), "{payload}");
        }
    }
}

#[test]
fn bad_channel_names_fail_before_connecting() {
    let server = Server::start();
    let long = "x".repeat(64);
    for command in ["listen", "pipe"] {
        for (channel, needle) in [
            ("", "empty"),
            (
                long.as_str(),
                "64 bytes long; PostgreSQL's limit is 63 bytes",
            ),
        ] {
            // An unreachable server proves the check comes before connecting; a name
            // malformed on its face is a usage error, as in `watch-table --channel`.
            server
                .bare()
                .args(["-h", "127.0.0.1", "-p", "1", command, "ok", channel])
                .run()
                .code(2)
                .one_line_error()
                .stderr_has(needle);
        }
    }
}

/// On a real terminal (a pty), `listen` writes coloured text by default; NO_COLOR and
/// `--color never` turn colour off; `--color always` forces it into a pipe.
#[test]
fn terminal_output_is_coloured_text_unless_no_color() {
    let server = Server::start();
    let script = r#"
import os, pexpect, sys
env = {"PATH": "/usr/bin:/bin", "TERM": "xterm"}
if sys.argv[1]: env["NO_COLOR"] = sys.argv[1]
child = pexpect.spawn(sys.argv[2], sys.argv[3:], env=env, timeout=20)
child.expect("listening on")
os.system(sys.argv[2] + " " + " ".join(sys.argv[3:9]) + " notify Ter 'on a tty'")
child.expect(pexpect.EOF)
sys.stdout.write(child.before.decode())
"#;
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    let port = server.cluster.port().to_string();
    let run = |no_color: &str, extra: &[&str]| {
        let out = server
            .python(script)
            .arg(no_color)
            .arg(env!("CARGO_BIN_EXE_pgnotify"))
            .args([
                "-h", &socket, "-p", &port, "-U", "postgres", "-d", "postgres",
            ])
            .args(["-v", "listen", "Ter", "--count", "1"])
            .args(extra)
            .run();
        out.stdout
            .lines()
            .find(|l| l.contains("on a tty"))
            .unwrap_or_else(|| panic!("no notification on the terminal{}", out.report()))
            .to_owned()
    };
    let coloured = run("", &[]);
    assert!(
        coloured.contains("\u{1b}[") && coloured.contains("Ter") && !coloured.starts_with('{'),
        "{coloured:?}"
    );
    let plain = run("1", &[]);
    assert!(
        !plain.contains('\u{1b}') && plain.contains("  Ter  pid="),
        "{plain:?}"
    );
    assert!(!run("", &["--color", "never"]).contains('\u{1b}'));
    let mut forced = server
        .pgnotify()
        .args([
            "-v", "--color", "always", "listen", "--format", "text", "F", "--count", "1",
        ])
        .spawn();
    forced.wait_ready();
    server.notify("F", "x");
    assert!(forced.read_line().contains("\u{1b}["));
    forced.expect_exit(0);
}

#[test]
fn a_stdout_that_cannot_take_a_write_is_an_error_not_a_quiet_end() {
    // Only a reader that went away (a broken pipe) ends a run quietly: a full disk is status 1
    // with the reason. /dev/full is no pipe, so no watcher sees it before the write fails.
    let server = Server::start();
    let mut listener = server
        .shell(r#""$PGNOTIFY" "$@" -v listen full --count 1 > /dev/full"#)
        .spawn();
    listener.wait_ready();
    server.notify("full", "no room for this");
    listener.expect_exit(1);
    let stderr = listener.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pgnotify: error: "))
        .collect();
    assert_eq!(
        errors,
        ["pgnotify: error: could not write to standard output: No space left on device"],
        "{stderr}"
    );
}

/// At a terminal, `listen` says once that it is listening, before any event, and warns that
/// psql's unquoted NOTIFY folds a capitalised name.
#[test]
fn at_a_terminal_listen_says_it_is_listening_and_how_names_fold() {
    let server = Server::start();
    let script = r#"
import os, pexpect, sys
env = {"PATH": "/usr/bin:/bin", "TERM": "xterm", "NO_COLOR": "1"}
child = pexpect.spawn(sys.argv[1], sys.argv[2:], env=env, timeout=20)
child.expect("Ctrl-C to stop[^\n]*\n")
sys.stdout.write(child.before.decode() + child.after.decode())
os.system(sys.argv[1] + " " + " ".join(sys.argv[2:10]) + " notify Orders 'hi'")
child.expect(pexpect.EOF)
sys.stdout.write(child.before.decode())
"#;
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    let port = server.cluster.port().to_string();
    let out = server
        .python(script)
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .args([
            "-h", &socket, "-p", &port, "-U", "postgres", "-d", "postgres",
        ])
        .args(["listen", "Orders", "--count", "1"])
        .run();
    let stdout = &out.success().stdout;
    let line = stdout
        .lines()
        .find(|l| l.contains("Ctrl-C to stop"))
        .unwrap_or_else(|| panic!("no listening line{}", out.report()));
    // A long-running command's line: the time first (RFC 3339, UTC, milliseconds).
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(
        time.len() == 24 && time.parse::<jiff::Timestamp>().is_ok(),
        "{line}"
    );
    assert!(
        rest.starts_with("pgnotify: listening on \"Orders\""),
        "{line}"
    );
    assert!(line.contains("NOTIFY Orders goes to \"orders\""), "{line}");
    assert_eq!(stdout.matches("Ctrl-C to stop").count(), 1, "{stdout}");
    assert!(stdout.contains("hi"), "{stdout}");
}
