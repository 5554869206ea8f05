//! `notify`: payload sources, size and name checks before any round trip, --lines batching.

use crate::support::{Record, Running, Server};

/// A listener on `channel` that is ready.
fn listen(server: &Server, channel: &str) -> Running {
    let mut listener = server.pgnotify().args(["-v", "listen", channel]).spawn();
    listener.wait_ready();
    listener
}

/// Sends a marker and returns every payload received before it: proves what was (not) sent.
fn received_before_marker(server: &Server, listener: &mut Running, channel: &str) -> Vec<String> {
    server.notify(channel, "--marker--");
    let mut payloads = Vec::new();
    loop {
        let Record { payload, .. } = listener.read_record();
        if payload == "--marker--" {
            return payloads;
        }
        payloads.push(payload);
    }
}

#[test]
fn payload_from_argument_stdin_and_nothing() {
    let server = Server::start();
    let mut listener = listen(&server, "p");
    server
        .pgnotify()
        .args(["notify", "p", "from argument"])
        .run()
        .success();
    // Without PAYLOAD, stdin is not read: the payload is empty.
    server
        .pgnotify()
        .args(["notify", "p"])
        .stdin("not read\n")
        .run()
        .success();
    server
        .pgnotify()
        .args(["notify", "p", "-"])
        .stdin("from stdin\n")
        .run()
        .success();
    server
        .pgnotify()
        .args(["notify", "p", "-"])
        .stdin("two newlines\n\n")
        .run()
        .success();
    server
        .pgnotify()
        .args(["notify", "p", "-"])
        .stdin("no newline")
        .run()
        .success();
    let got = received_before_marker(&server, &mut listener, "p");
    assert_eq!(
        got,
        [
            "from argument",
            "",
            "from stdin",
            "two newlines\n",
            "no newline",
        ]
    );
}

/// The environment the README's examples assume: pgnotify on PATH, the server in PG*.
fn readme_shell(server: &Server, script: &str) -> crate::support::Cmd {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_pgnotify"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = crate::support::Cmd::shell(script);
    cmd.env("PATH", path)
        .env("PGHOST", server.cluster.socket_dir())
        .env("PGPORT", server.cluster.port().to_string())
        .env("PGUSER", pgnotify::tempdb::SUPERUSER)
        .env("PGDATABASE", "postgres");
    cmd
}

#[test]
fn the_readme_shell_loop_keeps_its_input() {
    // `notify` without PAYLOAD inside `while read` must not swallow the loop's input.
    let server = Server::start();
    let mut listener = listen(&server, "handled");
    let script = crate::support::readme_example("notify::the_readme_shell_loop_keeps_its_input");
    assert!(script.contains("while read"), "{script}");
    let out = readme_shell(&server, &script).run();
    assert_eq!(
        out.success().stdout,
        "handled one\nhandled two\nhandled three\n"
    );
    let got = received_before_marker(&server, &mut listener, "handled");
    assert_eq!(got, ["", "", ""]);
}

#[test]
fn an_open_idle_stdin_never_makes_notify_wait() {
    // stdin is a pipe that stays open (as under ssh or a CI step) and never sends anything.
    let server = Server::start();
    let mut listener = listen(&server, "idle");
    let started = std::time::Instant::now();
    server
        .shell(r#"exec "$PGNOTIFY" "$@" notify idle < <(exec sleep 30 2>/dev/null)"#)
        .run()
        .success();
    let got = received_before_marker(&server, &mut listener, "idle");
    assert_eq!(got, [""]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn payload_size_is_checked_before_sending() {
    let server = Server::start();
    let mut listener = listen(&server, "size");
    let ok = "x".repeat(7999);
    server
        .pgnotify()
        .args(["notify", "size", &ok])
        .run()
        .success();
    let too_big = "x".repeat(8000);
    server
        .pgnotify()
        .args(["notify", "size", &too_big])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("payload is 8000 bytes long; PostgreSQL's limit is 7999 bytes");
    let wide = "é".repeat(4000); // 4000 characters, 8000 bytes
    server
        .pgnotify()
        .args(["notify", "size", "-"])
        .stdin(wide)
        .run()
        .code(1)
        .stderr_has("8000 bytes");
    server
        .pgnotify()
        .args(["notify", "size", "-"])
        .stdin(b"\xff\xfe".to_vec())
        .run()
        .code(1)
        .stderr_has("not valid UTF-8");
    assert_eq!(received_before_marker(&server, &mut listener, "size"), [ok]);
}

#[test]
fn bad_channel_names_are_refused_before_any_round_trip() {
    let server = Server::start();
    let long = "é".repeat(32); // 64 bytes
    // An unreachable port proves no connection is attempted: the name check comes first.
    for (channel, needle) in [
        ("", "channel name is empty"),
        (
            long.as_str(),
            "is 64 bytes long; PostgreSQL's limit is 63 bytes",
        ),
    ] {
        server
            .bare()
            .args(["-h", "127.0.0.1", "-p", "1", "notify", channel, "x"])
            .run()
            .code(2)
            .one_line_error()
            .stderr_has(needle);
    }
    let mut listener = listen(&server, "c");
    server
        .pgnotify()
        .args(["notify", &"c".repeat(63), "63 bytes is fine"])
        .run()
        .success();
    assert!(received_before_marker(&server, &mut listener, "c").is_empty());
}

#[test]
fn injection_attempts_are_just_data() {
    let server = Server::start();
    server
        .client()
        .batch_execute("CREATE TABLE canary (x int)")
        .unwrap();
    let channel = "x\"); DROP TABLE canary; --";
    let payload = "'); DROP TABLE canary; --";
    let mut listener = listen(&server, channel);
    server
        .pgnotify()
        .args(["notify", channel, payload])
        .run()
        .success();
    let record = listener.read_record();
    assert_eq!(
        (record.channel.as_str(), record.payload.as_str()),
        (channel, payload)
    );
    let exists: bool = server
        .client()
        .query_one("SELECT to_regclass('canary') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(exists);
}

#[test]
fn lines_are_sent_in_order_in_batches() {
    let server = Server::start();
    let mut listener = listen(&server, "lines");
    let input: String = (1..=2500).map(|i| format!("job {i}\n")).collect();
    server
        .pgnotify()
        .args(["notify", "--lines", "--batch", "1000", "lines"])
        .stdin(input)
        .run()
        .success();
    let got = received_before_marker(&server, &mut listener, "lines");
    let expected: Vec<String> = (1..=2500).map(|i| format!("job {i}")).collect();
    assert_eq!(got, expected);
}

#[test]
fn repeated_lines_fold_within_a_batch_with_a_warning() {
    let server = Server::start();
    let mut listener = listen(&server, "dup");
    let out = server
        .pgnotify()
        .args(["notify", "--lines", "dup"])
        .stdin("same\nsame\nother\nsame\n")
        .run();
    out.success()
        .stderr_has("2 lines repeated a payload")
        .stderr_has("--batch 1");
    assert_eq!(
        received_before_marker(&server, &mut listener, "dup"),
        ["same", "other"]
    );
    let out = server
        .pgnotify()
        .args(["notify", "--lines", "--batch", "1", "dup"])
        .stdin("same\nsame\n")
        .run();
    out.success();
    assert_eq!(out.stderr, "");
    assert_eq!(
        received_before_marker(&server, &mut listener, "dup"),
        ["same", "same"]
    );
}

#[test]
fn a_bad_line_stops_before_its_batch_and_says_what_was_sent() {
    let server = Server::start();
    let mut listener = listen(&server, "bad");
    let input = format!("1\n2\n3\n4\n{}\n6\n", "y".repeat(8000));
    let out = server
        .pgnotify()
        .args(["notify", "--lines", "--batch", "3", "bad"])
        .stdin(input)
        .run();
    out.code(1)
        .one_line_error()
        .stderr_has("the first 3 lines were sent and committed")
        .stderr_has("line 5: payload is 8000 bytes long");
    assert_eq!(
        received_before_marker(&server, &mut listener, "bad"),
        ["1", "2", "3"]
    );
    let out = server
        .pgnotify()
        .args(["notify", "--lines", "bad"])
        .stdin(b"ok\n\xff\n".to_vec())
        .run();
    out.code(1)
        .stderr_has("nothing was sent")
        .stderr_has("line 2 is not valid UTF-8");
    assert!(received_before_marker(&server, &mut listener, "bad").is_empty());
}

#[test]
fn an_sql_error_exits_1_with_the_server_message() {
    let server = Server::start();
    // A LATIN1 database cannot hold Japanese text: the server refuses the payload.
    server
        .client()
        .batch_execute("CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        .unwrap();
    let out = server
        .pgnotify()
        .args(["-d", "latin", "notify", "c", "日本"])
        .run();
    out.code(1)
        .one_line_error()
        .stderr_has("could not send the notification")
        .stderr_has("SQLSTATE 22P05");
}

/// A shell pipeline feeding `pgnotify notify` with this server's options.
fn pipeline(server: &Server, input: &str, args: &str) -> Running {
    server
        .shell(&format!("{input} | \"$PGNOTIFY\" \"$@\" {args}"))
        .env("PGAPPNAME", "notifier")
        .spawn()
}

#[test]
fn lines_go_out_as_they_come_not_when_a_batch_is_full() {
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "slow", "--count", "1", "--timeout", "2s"])
        .spawn();
    listener.wait_ready();
    let mut feeder = pipeline(
        &server,
        "(echo first; sleep 3; echo second)",
        "notify --lines slow",
    );
    assert_eq!(listener.read_record().payload, "first");
    listener.expect_exit(0);
    feeder.expect_exit(0);
}

#[test]
fn a_connection_lost_while_sending_exits_3() {
    let server = Server::start();
    let mut listener = listen(&server, "lost");
    let mut feeder = pipeline(
        &server,
        "(echo a; sleep 2; echo b)",
        "notify --lines --batch 1 lost",
    );
    assert_eq!(listener.read_record().payload, "a");
    server.client().batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'notifier'").unwrap();
    feeder.expect_exit(3);
    let stderr = feeder.stderr();
    assert!(
        stderr.contains("lost the connection to server on socket"),
        "{}",
        feeder.report()
    );
    assert!(
        stderr.contains("the first 1 lines were sent and committed"),
        "{}",
        feeder.report()
    );
}

#[test]
fn an_endless_stdin_payload_fails_fast() {
    let server = Server::start();
    let out = server
        .pgnotify()
        .args(["notify", "z", "-"])
        .stdin(vec![b'z'; 1_000_000])
        .run();
    out.code(1)
        .one_line_error()
        .stderr_has("more than 65535 bytes long; PostgreSQL's limit is 7999 bytes");
}

#[test]
fn a_line_without_end_is_refused_without_reading_it_whole() {
    // 50 MB with no newline: refused as soon as it passes the limit, with the limit in the
    // message, not read into memory first and reported with its full size.
    let server = Server::start();
    let out = server
        .shell(
            r#"head -c 50000000 /dev/zero | tr '\0' x | "$PGNOTIFY" "$@" notify --lines c
               exit "${PIPESTATUS[2]}""#,
        )
        .run();
    out.code(1)
        .one_line_error()
        .stderr_has("line 1: payload is more than 8000 bytes long");
}

#[test]
fn the_readme_cron_line_runs_and_never_hangs() {
    // The crontab line, verbatim, without its five schedule fields.
    let server = Server::start();
    let mut listener = listen(&server, "nightly");
    let block = crate::support::readme_example("notify::the_readme_cron_line_runs_and_never_hangs");
    let line = block
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    let command = line.splitn(6, ' ').nth(5).unwrap();
    assert!(command.contains("--timeout"), "{command}");
    let out = readme_shell(&server, command).run();
    out.success();
    assert_eq!(
        received_before_marker(&server, &mut listener, "nightly"),
        ["done"]
    );
    // Against a port where a server accepts and never answers, it ends by itself.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let started = std::time::Instant::now();
    let out = readme_shell(&server, command)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port)
        .run();
    assert!(
        out.stderr.contains("failed with status 124"),
        "{}",
        out.report()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    drop(held);
}
