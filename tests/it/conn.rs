//! Connections: URI, conninfo, environment, service file, password file and prompt, and their
//! precedence, against a real server; failures exit 3 naming the server.

use crate::support::{Cmd, Server};
use pgnotify::tempdb;
use std::os::unix::fs::PermissionsExt;

/// `notify` is the cheapest round trip that proves a connection works.
fn probe(cmd: &mut Cmd) -> &mut Cmd {
    cmd.args(["notify", "probe", "x"])
}

fn password_server() -> Server {
    let server = Server::start_with(&tempdb::Options {
        hba: vec![
            "local all +needs_password scram-sha-256".into(),
            "host all +needs_password 127.0.0.1/32 scram-sha-256".into(),
        ],
        ..Default::default()
    });
    server
        .client()
        .batch_execute("CREATE ROLE needs_password; CREATE ROLE alice LOGIN PASSWORD 's3cr:et' IN ROLE needs_password")
        .unwrap();
    server
}

#[test]
fn uri_conninfo_and_environment() {
    let server = Server::start();
    let port = server.cluster.port().to_string();
    let uri = format!("postgresql://postgres@127.0.0.1:{port}/postgres?application_name=via-uri");
    probe(server.bare().args(["-d", &uri])).run().success();
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    probe(server.bare().args(["-d", &conninfo])).run().success();
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    probe(
        server
            .bare()
            .env("PGHOST", &socket)
            .env("PGPORT", &port)
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres"),
    )
    .run()
    .success();
}

#[test]
fn precedence_command_line_over_environment_and_dbname_string_over_flags() {
    let server = Server::start();
    let port = server.cluster.port().to_string();
    let base = |cmd: &mut Cmd| {
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres");
    };
    let mut cmd = server.bare();
    base(&mut cmd);
    probe(cmd.env("PGPORT", "1").args(["-p", &port]))
        .run()
        .success();
    let mut cmd = server.bare();
    base(&mut cmd);
    probe(cmd.args(["-p", "1", "-d", &format!("port={port} dbname=postgres")]))
        .run()
        .success();
    let mut cmd = server.bare();
    base(&mut cmd);
    probe(cmd.env("PGPORT", &port).args(["-p", "1"]))
        .run()
        .code(3)
        .stderr_has("port 1 failed");
}

#[test]
fn service_file_sits_between_flags_and_environment() {
    let server = Server::start();
    let file = server.home.path().join("services.conf");
    std::fs::write(
        &file,
        format!(
            "[shop]\nhost={}\nport={}\nuser=postgres\ndbname=postgres\n",
            server.cluster.socket_dir().display(),
            server.cluster.port()
        ),
    )
    .unwrap();
    probe(
        server
            .bare()
            .env("PGSERVICEFILE", &file)
            .env("PGSERVICE", "shop")
            .env("PGPORT", "1"),
    )
    .run()
    .success();
    probe(
        server
            .bare()
            .env("PGSERVICEFILE", &file)
            .args(["-d", "service=shop"]),
    )
    .run()
    .success();
    probe(
        server
            .bare()
            .env("PGSERVICEFILE", &file)
            .env("PGSERVICE", "shop")
            .args(["-p", "1"]),
    )
    .run()
    .code(3);
    std::fs::write(
        server.home.path().join(".pg_service.conf"),
        std::fs::read(&file).unwrap(),
    )
    .unwrap();
    probe(server.bare().env("PGSERVICE", "shop"))
        .run()
        .success();
    probe(server.bare().env("PGSERVICE", "nope"))
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("definition of service \"nope\" not found");
}

#[test]
fn application_name_defaults_to_pgnotify_and_follows_pgappname() {
    let server = Server::start();
    let mut default = server.pgnotify().args(["-v", "listen", "a"]).spawn();
    default.wait_ready();
    assert_eq!(server.sessions("pgnotify"), 1);
    let mut named = server
        .pgnotify()
        .env("PGAPPNAME", "my-listener")
        .args(["-v", "listen", "a"])
        .spawn();
    named.wait_ready();
    assert_eq!(server.sessions("my-listener"), 1);
}

#[test]
fn passwords_from_environment_and_password_file() {
    let server = password_server();
    let port = server.cluster.port().to_string();
    let tcp = |cmd: &mut Cmd| {
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "alice",
            "-d",
            "postgres",
        ]);
    };
    let mut cmd = server.bare();
    tcp(&mut cmd);
    probe(cmd.arg("-w"))
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("asked for a password")
        .stderr_has("leave out -w to be asked");
    // Without -w and without a terminal to ask on, the hint does not mention -w.
    let out = server
        .shell(r#"exec setsid "$PGNOTIFY" "$@" notify probe x"#)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "alice",
            "-d",
            "postgres",
        ])
        .run();
    out.code(3)
        .one_line_error()
        .stderr_has("run it at a terminal to be asked");
    assert!(!out.stderr.contains("-w"), "{}", out.stderr);
    let mut cmd = server.bare();
    tcp(&mut cmd);
    let out = probe(cmd.env("PGPASSWORD", "wrong")).run();
    out.code(3)
        .one_line_error()
        .stderr_has("password authentication failed for user \"alice\"")
        .stderr_has(&format!("port {port}"));
    assert!(!out.stderr.contains("wrong"), "{}", out.report());
    let mut cmd = server.bare();
    tcp(&mut cmd);
    probe(cmd.env("PGPASSWORD", "s3cr:et")).run().success();
    // The password file, default location, with an escaped colon.
    let pgpass = server.home.path().join(".pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{port}:*:alice:s3cr\\:et\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = server.bare();
    tcp(&mut cmd);
    probe(cmd.arg("-w"))
        .run()
        .code(3)
        .stderr_has("has group or world access; permissions should be u=rw (0600) or less");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = server.bare();
    tcp(&mut cmd);
    let out = probe(cmd.arg("-w")).run();
    out.success();
    assert_eq!(out.stderr, "");
    // PGPASSFILE points elsewhere; PGPASSWORD wins over the file.
    let other = server.home.path().join("other-pgpass");
    std::fs::rename(&pgpass, &other).unwrap();
    let mut cmd = server.bare();
    tcp(&mut cmd);
    probe(cmd.arg("-w").env("PGPASSFILE", &other))
        .run()
        .success();
    let mut cmd = server.bare();
    tcp(&mut cmd);
    probe(
        cmd.arg("-w")
            .env("PGPASSFILE", &other)
            .env("PGPASSWORD", "wrong"),
    )
    .run()
    .code(3);
}

#[test]
fn password_prompt_on_a_terminal() {
    let server = password_server();
    let port = server.cluster.port().to_string();
    for extra in [&[][..], &["-W"][..]] {
        let out = server
            .typing_password("alice", "s3cr:et")
            .arg(env!("CARGO_BIN_EXE_pgnotify"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "-d",
                "postgres",
            ])
            .args(extra)
            .args(["notify", "probe", "x"])
            .run();
        let text = &out.stdout;
        assert!(text.starts_with("exit 0"), "{}", out.report());
        assert!(
            !text.contains("s3cr:et"),
            "the password must not be echoed{}",
            out.report()
        );
    }
}

#[test]
fn connection_failures_exit_3_naming_the_server() {
    let server = Server::start();
    let out = probe(
        server
            .bare()
            .args(["-h", "127.0.0.1", "-p", "1", "-U", "postgres"]),
    )
    .run();
    out.code(3)
        .one_line_error()
        .stderr_has("connection to server at \"127.0.0.1\", port 1 failed: Connection refused");
    let out = probe(server.bare().args(["-h", "/nonexistent", "-U", "postgres"])).run();
    out.code(3)
        .one_line_error()
        .stderr_has("server on socket \"/nonexistent/.s.PGSQL.5432\"");
    // TCP to a server without TLS: libpq's words.
    let out = probe(server.bare().args([
        "-d",
        &format!(
            "host=127.0.0.1 port={} user=postgres sslmode=require",
            server.cluster.port()
        ),
    ]))
    .run();
    out.code(3)
        .one_line_error()
        .stderr_has("server does not support SSL, but SSL was required");
    // Malformed on its face: a usage error, before connecting.
    let out = probe(server.pgnotify().args(["-d", "postgres://x/y?bogus=1"])).run();
    out.code(2)
        .one_line_error()
        .stderr_has("invalid URI query parameter: \"bogus\"");
    let out = probe(server.pgnotify().args(["-d", "no_such_db"])).run();
    out.code(3)
        .one_line_error()
        .stderr_has("database \"no_such_db\" does not exist");
}

#[test]
fn connect_timeout_bounds_a_server_that_never_answers() {
    let server = Server::start();
    // The kernel completes the TCP handshake for the backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let started = std::time::Instant::now();
    let out = probe(server.bare().env("PGCONNECT_TIMEOUT", "2").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "x",
    ]))
    .run();
    out.code(3)
        .one_line_error()
        .stderr_has("timeout expired after 2 s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn tcp_keepalives_are_on() {
    let server = Server::start();
    let port = server.cluster.port().to_string();
    let mut listener = server
        .pgnotify()
        .args(["-h", "127.0.0.1", "-v", "listen", "k"])
        .spawn();
    listener.wait_ready();
    let port = format!(":{port}");
    let text = crate::support::ss(&["-tno", "state", "established", "dport", "=", &port]);
    assert!(
        text.contains("timer:(keepalive"),
        "no keepalive timer on pgnotify's socket:\n{text}"
    );
}

#[test]
fn the_password_file_matches_socket_directories_like_libpq() {
    let server = password_server();
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    let port = server.cluster.port().to_string();
    let pgpass = server.home.path().join(".pgpass");
    let run = |line: String| {
        std::fs::write(&pgpass, line).unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        probe(server.bare().args([
            "-h", &socket, "-p", &port, "-U", "alice", "-d", "postgres", "-w",
        ]))
        .run()
    };
    // A socket directory other than the default is matched by its path, not by localhost.
    run(format!("{socket}:{port}:*:alice:s3cr\\:et\n")).success();
    run(format!("localhost:{port}:*:alice:s3cr\\:et\n"))
        .code(3)
        .stderr_has("asked for a password");
}

#[test]
fn environment_variables_that_are_not_utf8_are_harmless() {
    use std::os::unix::ffi::OsStringExt;
    let server = Server::start();
    probe(
        server
            .pgnotify()
            .env("LESSOPEN", std::ffi::OsString::from_vec(vec![0xff, 0xfe])),
    )
    .run()
    .success();
}

#[test]
fn running_out_of_file_descriptors_is_an_error_not_a_panic() {
    let server = Server::start();
    let out = server
        .shell(r#"ulimit -n 6; exec "$PGNOTIFY" "$@" notify x y"#)
        .run();
    out.code(3);
    assert!(
        out.stderr.contains("Too many open files") && !out.stderr.contains("internal error"),
        "{}",
        out.report()
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.report());
}

#[test]
fn a_timeout_under_a_millisecond_still_bounds_connecting() {
    // --timeout also bounds connecting; 500 µs once became connect_timeout=0, which is none.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let out = Cmd::new()
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "x", "-d", "x"])
        .args(["listen", "c", "--timeout", "500us"])
        .run();
    out.code(3)
        .one_line_error()
        .stderr_has("timeout expired (--timeout)");
}

#[test]
fn a_pg_variable_that_is_not_utf8_is_refused_before_connecting() {
    use std::os::unix::ffi::OsStringExt;
    let server = Server::start();
    // Ignoring it would fall back to the default host: another server, perhaps.
    let bad = std::ffi::OsString::from_vec(b"db\xff1".to_vec());
    server
        .bare()
        .env("PGHOST", bad)
        .args(["notify", "c", "x"])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("PGHOST is not valid UTF-8");
}

#[test]
fn no_error_shows_a_password() {
    for dbname in [
        "postgres://u:MySecret%zz@127.0.0.1:1/d",
        "postgres://127.0.0.1:1/d?password=MySecret%ff",
        "postgres://u:My/Secret@127.0.0.1:1/d",
        "postgres://u:My?Secret@127.0.0.1:1/d?nope=1",
        "host=127.0.0.1 port=1 password=My Secret",
        "host=127.0.0.1 port=1 password=My Secret=x",
        "postgres://127.0.0.1:1/d?password=My&Secret=1",
    ] {
        let out = Cmd::new().args(["-d", dbname, "notify", "c", "x"]).run();
        out.one_line_error();
        assert!(!out.stderr.contains("Secret"), "{}", out.report());
    }
}

#[test]
fn retrying_a_server_that_never_answers_holds_no_more_threads_or_descriptors() {
    // Each attempt gives up at connect_timeout, but its connection cannot be cancelled; once,
    // every attempt left a thread and its sockets behind.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let mut listener = Cmd::new()
        .env("PGCONNECT_TIMEOUT", "2")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "x", "-d", "x"])
        .args(["-v", "listen", "c", "--wait"])
        .spawn();
    let pid = listener.child.id();
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap()
            .count()
    };
    listener.wait_stderr("connection attempt 2 failed");
    let (threads, fds) = (count("task"), count("fd"));
    listener.wait_stderr("connection attempt 5 failed");
    assert!(
        count("task") <= threads && count("fd") <= fds,
        "after 3 more attempts: {} threads (then {threads}), {} descriptors (then {fds})",
        count("task"),
        count("fd")
    );
}

#[test]
fn a_typed_password_is_kept_for_reconnects() {
    // Typed once (at libpq's prompt, or with -W), the password serves every reconnect: no
    // second prompt, and a notification sent after the backend is killed still arrives.
    let server = password_server();
    let script = r#"
import pexpect, subprocess, sys
pgnotify, socket, port = sys.argv[1:4]
psql = ["psql", "-X", "-q", "-h", socket, "-p", port, "-U", "postgres", "-d", "postgres", "-c"]
child = pexpect.spawn(pgnotify, sys.argv[4:], env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, timeout=20)
child.expect("Password for user alice: ")
child.sendline("s3cr:et")
child.expect("listening on")
subprocess.run(psql + ["SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'alice'"], check=True, stdout=subprocess.DEVNULL)
child.expect("reconnected after")
subprocess.run(psql + ["NOTIFY again, 'after the reconnect'"], check=True)
child.expect(pexpect.EOF)
child.close()
print("exit", child.exitstatus)
sys.stdout.write(child.before.decode())
"#;
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    let port = server.cluster.port().to_string();
    for extra in [&[][..], &["-W"][..]] {
        let out = server
            .python(script)
            .arg(env!("CARGO_BIN_EXE_pgnotify"))
            .args([&socket, &port])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "-d",
                "postgres",
            ])
            .args(extra)
            .args(["-v", "listen", "again", "--count", "1"])
            .run();
        let text = &out.stdout;
        assert!(text.starts_with("exit 0"), "{}", out.report());
        assert_eq!(
            text.matches("Password for user").count(),
            0,
            "{}",
            out.report()
        );
        assert!(text.contains("after the reconnect"), "{}", out.report());
    }
}

#[test]
fn a_password_typed_for_one_host_is_never_sent_to_another() {
    // host=A,B: A asks and gets a typo at the prompt; B has its own password-file entry, and
    // must get that, not what was typed for A.
    let a = password_server();
    let b = password_server();
    let passfile = a.home.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{}:*:alice:s3cr:et\n", b.cluster.port()),
    )
    .unwrap();
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let script = r#"
import pexpect, sys
child = pexpect.spawn(sys.argv[1], sys.argv[3:], env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PGPASSFILE": sys.argv[2]}, timeout=20)
child.expect("Password for user alice: ")
child.sendline("typo-for-a")
child.expect(pexpect.EOF)
child.close()
print("exit", child.exitstatus)
sys.stdout.write(child.before.decode())
"#;
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=alice dbname=postgres",
        a.cluster.port(),
        b.cluster.port()
    );
    let out = a
        .python(script)
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .arg(&passfile)
        .args(["-d", &conninfo, "notify", "probe", "x"])
        .run();
    assert!(out.stdout.starts_with("exit 0"), "{}", out.report());
}
