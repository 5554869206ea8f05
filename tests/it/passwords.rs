//! Passwords across TLS retries and host lists, secrets, service files over TLS, and every
//! command over verify-full TLS with SCRAM against a TLS-only server (from a third
//! adversarial review; psql is the oracle).

use crate::support::Server;
use crate::tls::{PASSWORD, ca, tcp, tls_only, write_private};
use pgnotify::tempdb;

fn verify(server: &Server) -> String {
    format!(
        "{} sslmode=verify-full sslrootcert={}",
        tcp(server),
        ca(server).display()
    )
}

/// Plain TCP only, SCRAM; TLS is refused by pg_hba (hostssl reject) though the server serves it.
fn plain_only(password: &str) -> Server {
    let server = Server::start_with(&tempdb::Options {
        tls: true,
        hba: vec![
            "hostssl all all 127.0.0.1/32 reject".into(),
            "hostnossl all all 127.0.0.1/32 scram-sha-256".into(),
        ],
        ..Default::default()
    });
    server.psql(&format!(
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '{password}'"
    ));
    server
}

/// A: with prefer (TLS refused by hba, plain wants a password) and allow (plain refused, TLS
/// wants one), the prompt comes once and the typed password is reused on the retry.
#[test]
fn one_prompt_across_prefer_and_allow_retries() {
    let plain = plain_only(PASSWORD);
    let tls = tls_only(&[]);
    for (server, mode) in [(&plain, "prefer"), (&tls, "allow"), (&tls, "prefer")] {
        let conninfo = format!("{} sslmode={mode}", tcp(server));
        let out = server
            .typing_password("postgres", PASSWORD)
            .arg(env!("CARGO_BIN_EXE_pgnotify"))
            .args(["-v", "-d", &conninfo, "notify", "probe", "x"])
            .run();
        assert!(out.stdout.starts_with("exit 0"), "{mode}: {}", out.report());
        assert_eq!(
            out.stdout.matches("Password for user").count(),
            0,
            "the helper consumed the one prompt; another was shown: {}",
            out.report()
        );
    }
}

/// A: host=a,b, pgpass for a only (wrong), prompt for b: exactly one prompt, for b; and PGPASSWORD
/// beats the password file as in libpq.
#[test]
fn host_list_pgpass_for_one_prompt_for_the_other() {
    let a = tls_only(&[]);
    let b = tls_only(&[]);
    b.psql("ALTER ROLE postgres PASSWORD 'other'");
    let pgpass = a.home.path().join(".pgpass");
    // The python helper runs with HOME=/nonexistent: use PGPASSFILE through the conninfo.
    write_private(
        &pgpass,
        format!("localhost:{}:*:postgres:{PASSWORD}\n", a.cluster.port()).as_bytes(),
    );
    let conninfo = format!(
        "host=localhost,localhost port={},{} user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert={} passfile={}",
        a.cluster.port(),
        b.cluster.port(),
        ca(&b).display(),
        pgpass.display()
    );
    // a is down: b's password is asked for, once, and a's pgpass entry is not used for b.
    a.pg_ctl(&["stop", "-m", "fast"]);
    let out = b
        .typing_password("postgres", "other")
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .args(["-v", "-d", &conninfo, "notify", "probe", "x"])
        .run();
    assert!(out.stdout.starts_with("exit 0"), "{}", out.report());
}

/// A: libpq treats an empty `password=` like none: the password file is read (psql agrees).
#[test]
fn an_empty_password_key_falls_back_to_the_password_file() {
    let server = tls_only(&[]);
    let pgpass = server.home.path().join(".pgpass");
    write_private(
        &pgpass,
        format!(
            "localhost:{}:*:postgres:{PASSWORD}\n",
            server.cluster.port()
        )
        .as_bytes(),
    );
    let conninfo = format!("{} password=''", verify(&server));
    let theirs = server.psql_as_client(&conninfo, "SELECT 1");
    let ours = server
        .bare()
        .args(["-w", "-d", &conninfo, "notify", "probe", "x"])
        .run();
    assert_eq!(
        ours.status.success(),
        theirs.status.success(),
        "psql:{}\npgnotify:{}",
        theirs.report(),
        ours.report()
    );
}

/// A: the service file's TLS settings, with libpq's precedence: command line > service > env.
#[test]
fn service_file_tls_settings_follow_libpq_precedence() {
    let server = tls_only(&[]);
    let svc = server.home.path().join("svc.conf");
    std::fs::write(
        &svc,
        format!(
            "[s]\nhost=localhost\nport={}\nuser=postgres\ndbname=postgres\nsslmode=verify-full\n\
             sslrootcert={}\n",
            server.cluster.port(),
            ca(&server).display()
        ),
    )
    .unwrap();
    let run = |conninfo: &str, env_mode: &str| {
        server
            .bare()
            .env("PGSERVICEFILE", &svc)
            .env("PGPASSWORD", PASSWORD)
            .env("PGSSLMODE", env_mode)
            .env("PGSSLROOTCERT", "/nonexistent/ca.crt")
            .args(["-v", "-d", conninfo, "notify", "probe", "x"])
            .run()
    };
    // The service beats the environment.
    run("service=s", "disable")
        .success()
        .stderr_has("SSL connection");
    // The command line beats the service.
    let out = run("service=s sslmode=disable", "verify-full");
    out.code(3);
    let psql = server.psql_as_client(
        &format!("service=s sslmode=disable password={PASSWORD}"),
        "SELECT 1",
    );
    assert!(!psql.status.success());
    // PGSERVICE with the URI form, query parameters for TLS.
    let uri = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.cluster.port(),
        ca(&server).display()
    );
    server
        .bare()
        .env("PGPASSWORD", PASSWORD)
        .args(["-v", "-d", &uri, "notify", "probe", "x"])
        .run()
        .success()
        .stderr_has("SSL connection");
}

/// B: secrets in a malformed service file are not shown.
#[test]
fn a_malformed_service_file_does_not_show_its_password() {
    let server = Server::start();
    let svc = server.home.path().join("svc.conf");
    for body in [
        "[s]\npassword=TOPSECRET\nsslpassword=KEYSECRET\nbogus line\n",
        "[s]\npassword=TOPSECRET\nsslpassword=KEYSECRET\nhots=x\n",
        "[s]\npassword=TOPSECRET\nsslpassword=KEYSECRET\nsslmode=bogus\n",
        "[s]\npassword TOPSECRET\n",
        "[s]\nTOPSECRET\n",
    ] {
        std::fs::write(&svc, body).unwrap();
        let out = server
            .bare()
            .env("PGSERVICEFILE", &svc)
            .args(["-v", "-d", "service=s", "notify", "probe", "x"])
            .run();
        assert!(!out.status.success(), "{}", out.report());
        assert!(
            !out.stderr.contains("SECRET") && !out.stdout.contains("SECRET"),
            "{body:?}{}",
            out.report()
        );
    }
}

/// B: pgnotify adds no password to an --exec child's environment.
#[test]
fn exec_children_get_no_password_from_pgnotify() {
    let server = tls_only(&[]);
    let dump = server.home.path().join("env.txt");
    let conninfo = format!("{} password={PASSWORD}", verify(&server));
    let mut pipe = server
        .bare()
        .args([
            "-v", "-d", &conninfo, "pipe", "jobs", "--count", "1", "--exec",
        ])
        .arg(format!("env > {}", dump.display()))
        .spawn();
    pipe.wait_ready();
    server.notify("jobs", "x");
    let (status, _) = pipe.finish();
    assert!(status.success(), "{}", pipe.report());
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(!env.contains(PASSWORD), "{env}");
    assert!(!env.contains("PGPASSWORD"), "{env}");
}

/// D: notify, notify --lines, watch-table (install, --list, --drop) and pipe --fetch over
/// verify-full TLS with SCRAM against a TLS-only server.
#[test]
fn every_command_over_verify_full_scram() {
    let server = tls_only(&[]);
    server.psql("CREATE TABLE orders (id int PRIMARY KEY, item text)");
    let conninfo = verify(&server);
    let cmd = || {
        let mut c = server.bare();
        c.env("PGPASSWORD", PASSWORD).args(["-d", &conninfo]);
        c
    };
    let mut listen = cmd().args(["-v", "listen", "jobs", "--count", "3"]).spawn();
    listen.wait_ready();
    cmd().args(["notify", "jobs", "one"]).run().success();
    cmd()
        .args(["notify", "jobs", "--lines"])
        .stdin("two\nthree\n")
        .run()
        .success();
    let payloads: Vec<String> = (0..3).map(|_| listen.read_record().payload).collect();
    assert_eq!(payloads, ["one", "two", "three"], "{}", listen.report());
    cmd().args(["watch-table", "orders"]).run().success();
    let list = cmd().args(["watch-table", "--list"]).run();
    list.success();
    assert!(list.stdout.contains("orders"), "{}", list.report());
    let mut pipe = cmd()
        .args(["-v", "pipe", "orders", "--fetch", "--count", "1"])
        .spawn();
    pipe.wait_ready();
    server.psql("INSERT INTO orders VALUES (1, 'tea')");
    let line = pipe.read_line();
    assert!(line.contains("\"item\":\"tea\""), "{line}{}", pipe.report());
    cmd()
        .args(["watch-table", "orders", "--drop"])
        .run()
        .success();
    let list = cmd().args(["watch-table", "--list"]).run();
    assert!(!list.stdout.contains("orders"), "{}", list.report());
}

/// A/README: "reconnects ... never ask again (a listener left running must not stop at a
/// prompt)". A listener that typed a's password and fails over to b, which wants one too.
#[test]
fn a_listener_failing_over_to_another_host_does_not_stop_at_a_prompt() {
    let a = tls_only(&[]);
    let b = tls_only(&[]);
    let conninfo = format!(
        "host=localhost,localhost port={},{} user=postgres dbname=postgres sslmode=require",
        a.cluster.port(),
        b.cluster.port(),
    );
    let script = r#"
import pexpect, sys
child = pexpect.spawn(sys.argv[1], sys.argv[2:], env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, timeout=20)
child.expect("Password for user postgres: ")
child.sendline("PASSWORD")
child.expect("listening on")
sys.stderr.write("READY\n"); sys.stderr.flush()
i = child.expect(["Password for user postgres: ", "reconnected after", pexpect.EOF, pexpect.TIMEOUT], timeout=10)
print("outcome", ["prompted", "reconnected", "eof", "timeout"][i])
sys.stdout.write(child.before.decode())
child.terminate(force=True)
"#
    .replace("PASSWORD", PASSWORD);
    let mut run = a
        .python(&script)
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .args(["-v", "-d", &conninfo, "pipe", "jobs"])
        .spawn();
    run.wait_stderr("READY");
    a.pg_ctl(&["stop", "-m", "fast"]);
    let (_, rest) = run.finish();
    assert!(
        !rest.contains("outcome prompted"),
        "the listener stopped at a password prompt on failover: {rest}{}",
        run.report()
    );
    // It says why b is not taken, and keeps trying.
    assert!(
        rest.contains("does not ask while it runs unattended"),
        "{rest}{}",
        run.report()
    );
}
