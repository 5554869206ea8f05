//! The edges of TLS, from an adversarial review: every case runs pgnotify and psql 15 (libpq)
//! with the same settings, psql being the oracle. The first five were defects the review
//! found (the comment says what libpq does); the rest are attacks that found nothing, kept.

use super::tls::{ca, client_cert, compare as agree, pgnotify, psql, tcp, tls_only};
use crate::support::{FakeServer, Server};
use pgnotify::tempdb::{self, tls::CertAuthority};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A TLS server that takes TCP connections with and without TLS (the default trust lines),
/// or with `hba` lines first.
fn server_with(hba: &[&str]) -> Server {
    Server::start_with(&tempdb::Options {
        tls: true,
        hba: hba.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    })
}

pub(super) fn write_mode(path: &Path, text: &[u8], mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Issues a server certificate from the server's own CA: `cn` as the subject's common name,
/// `san` (e.g. "DNS:*.pgnotify.localhost,IP:127.0.0.1", or "" for none) as the
/// subjectAltName. Returns (cert, key), the key owned by the server's owner.
pub(super) fn issue(
    server: &Server,
    dir: &Path,
    name: &str,
    cn: &str,
    san: &str,
) -> (PathBuf, PathBuf) {
    let sans: Vec<&str> = san.split(',').filter(|s| !s.is_empty()).collect();
    let issued = server
        .cluster
        .ca()
        .expect("a TLS server")
        .issue_server_named(dir, name, cn, &sans)
        .unwrap();
    if nix::unistd::geteuid().is_root()
        && let Ok(Some(pg)) = nix::unistd::User::from_name("postgres")
    {
        nix::unistd::chown(dir, Some(pg.uid), Some(pg.gid)).unwrap();
        nix::unistd::chown(&issued.key, Some(pg.uid), Some(pg.gid)).unwrap();
    }
    (issued.cert, issued.key)
}

/// Makes the server present this certificate from now on.
pub(super) fn present(server: &Server, (crt, key): &(PathBuf, PathBuf)) {
    server.psql(&format!(
        "ALTER SYSTEM SET ssl_cert_file = '{}'",
        crt.display()
    ));
    server.psql(&format!(
        "ALTER SYSTEM SET ssl_key_file = '{}'",
        key.display()
    ));
    server.psql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
}

/// A directory the server's owner can read (the test's temporary directories are 0700).
pub(super) fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// Defects: these fail on dd58188.
// ---------------------------------------------------------------------------------------

/// sslmode=prefer (the default) and a TLS file that cannot be used: libpq reads the
/// TLS files only once the server said yes to TLS, and a failure there is a failed TLS attempt,
/// so prefer retries without TLS (fe-connect.c, CONNECTION_SSL_STARTUP). pgnotify builds the
/// connector before connecting and gives up with exit 3.
#[test]
fn prefer_falls_back_to_plain_when_a_tls_file_cannot_be_used() {
    let server = server_with(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mine = client_cert(&server, dir.path());
    let open_key = dir.path().join("open.key");
    write_mode(&open_key, &std::fs::read(&mine.key).unwrap(), 0o644);
    let garbage = dir.path().join("garbage.pem");
    write_mode(&garbage, b"garbage\n", 0o600);
    let base = format!("{} sslmode=prefer", tcp(&server));
    let mut failed = Vec::new();
    for case in [
        format!(
            "sslcert={} sslkey={}",
            mine.cert.display(),
            open_key.display()
        ),
        format!(
            "sslcert={} sslkey={}",
            mine.cert.display(),
            dir.path().join("none.key").display()
        ),
        format!(
            "sslcert={} sslkey={}",
            mine.cert.display(),
            dir.path().display()
        ),
        format!(
            "sslcert={} sslkey={}",
            garbage.display(),
            mine.key.display()
        ),
        format!("sslrootcert={}", garbage.display()),
        format!("sslrootcert={}", dir.path().display()),
    ] {
        let conninfo = format!("{base} {case}");
        let theirs = psql(&server, &conninfo);
        assert!(
            theirs.status.success(),
            "psql falls back to plain{}",
            theirs.report()
        );
        assert_eq!(
            theirs.stdout.trim(),
            "f",
            "psql's session is plain{}",
            theirs.report()
        );
        let ours = pgnotify(&server, &conninfo);
        if !ours.status.success() {
            failed.push(format!("{case}\n    {}", ours.stderr.trim()));
        }
    }
    assert!(
        failed.is_empty(),
        "psql connects without TLS in each case; pgnotify fails:\n{}",
        failed.join("\n")
    );
}

/// a server that declines TLS ('N'). libpq never even opens the TLS
/// files then; pgnotify refuses to connect because of a key it would never use. Anyone with
/// a ~/.postgresql/postgresql.key for one server, readable by group, cannot reach any other.
#[test]
fn prefer_against_a_server_without_tls_ignores_the_tls_files() {
    let server = Server::start();
    let home = server.home.path().join(".postgresql");
    std::fs::create_dir_all(&home).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = CertAuthority::new(dir.path(), "other").unwrap();
    let mine = other
        .issue_client(dir.path(), "client", "postgres")
        .unwrap();
    std::fs::copy(&mine.cert, home.join("postgresql.crt")).unwrap();
    write_mode(
        &home.join("postgresql.key"),
        &std::fs::read(&mine.key).unwrap(),
        0o640,
    );
    // The group may read it, and it is not root's (as root, 0640 is allowed): make it 0644.
    std::fs::set_permissions(
        home.join("postgresql.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        server.cluster.port()
    );
    let theirs = psql(&server, &conninfo);
    assert!(theirs.status.success(), "{}", theirs.report());
    let ours = pgnotify(&server, &conninfo);
    assert!(
        ours.status.success(),
        "psql connects (the server declines TLS; libpq never reads the key); pgnotify does not{}",
        ours.report()
    );
}

/// sslcrldir naming something that is not a directory (a typo, a
/// missing mount): libpq still turns on CRL checking (X509_STORE_load_locations only records
/// the directory), finds no CRL and refuses the server: "certificate verify failed".
/// pgnotify drops the setting (`.filter(|d| d.is_dir())` in tls::connector) and connects
/// WITHOUT any revocation check.
#[test]
fn sslcrldir_that_is_not_a_directory_fails_closed_as_in_libpq() {
    let server = server_with(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    write_mode(&file, b"x\n", 0o644);
    for crldir in [dir.path().join("missing"), file] {
        let conninfo = format!(
            "{} sslmode=verify-full sslrootcert={} sslcrldir={}",
            tcp(&server),
            ca(&server).display(),
            crldir.display()
        );
        let theirs = psql(&server, &conninfo);
        assert!(!theirs.status.success(), "libpq refuses{}", theirs.report());
        let ours = pgnotify(&server, &conninfo);
        assert!(
            !ours.status.success(),
            "psql: certificate verify failed (no CRL found); pgnotify connects without checking \
             revocation{}",
            ours.report()
        );
    }
}

/// connect_timeout under sslmode=prefer (the default): a server that says yes to
/// TLS and then never speaks. libpq gives up after connect_timeout (no prefer retry on a
/// timeout: it moves to the next host). pgnotify retries without TLS and waits the timeout
/// again: 2 x connect_timeout (and 2 x per host with a host list).
#[test]
fn connect_timeout_bounds_a_prefer_attempt_as_in_libpq() {
    let fake = FakeServer::start("tls-hang");
    let server = Server::start();
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
        fake.port
    );
    let started = Instant::now();
    let theirs = server.psql_as_client(&conninfo, "SELECT 1");
    let psql_took = started.elapsed();
    assert!(!theirs.status.success());
    let started = Instant::now();
    let ours = server
        .bare()
        .args(["-d", &conninfo, "notify", "probe", "x"])
        .run();
    let took = started.elapsed();
    ours.code(3).one_line_error().stderr_has("timeout expired");
    assert!(
        took < Duration::from_millis(3500),
        "psql gave up after {psql_took:?}; pgnotify after {took:?}{}",
        ours.report()
    );
    // listen --timeout 1s is documented to fail the connection after 2 s (status 3).
    let started = Instant::now();
    let ours = server
        .bare()
        .args([
            "-d",
            &conninfo.replace(" connect_timeout=2", ""),
            "listen",
            "--timeout",
            "1s",
            "x",
        ])
        .run();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "README: listen --timeout 1s fails a server that does not answer after 2 s; it took \
         {took:?}{}",
        ours.report()
    );
}

/// verify-full with an IP address as the host and a certificate whose common name
/// is that address: libpq accepts it (the CN is checked when there is no SAN of the host's
/// type; and for an IP host even beside DNS SANs, a documented exception). pgnotify uses
/// X509_check_ip, which never looks at the CN, and says, self-contradictorily, `server
/// certificate for "127.0.0.1" does not match host name "127.0.0.1"`. README: "the common
/// name when it has none".
#[test]
fn verify_full_reads_an_ip_address_in_the_common_name_as_libpq_does() {
    let server = server_with(&[]);
    let dir = shared_dir();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        server.cluster.port(),
        ca(&server).display()
    );
    for (name, san) in [("cn-only", ""), ("cn-and-dns", "DNS:db.pgnotify.localhost")] {
        present(&server, &issue(&server, dir.path(), name, "127.0.0.1", san));
        let out = agree(&server, &conninfo);
        assert!(out.status.success(), "{name}{}", out.report());
    }
}

/// A revocation list that cannot be read (garbage, empty), or an sslcrl named that is not
/// there: libpq silently ignores it and connects without checking revocation; pgnotify
/// refuses, on purpose (README, TLS): a typo must not turn the check off. psql connects, so
/// this is the one place where the two differ by design.
#[test]
fn an_unreadable_or_missing_sslcrl_is_refused_not_ignored() {
    let server = server_with(&[]);
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.crl");
    write_mode(&garbage, b"garbage\n", 0o644);
    let empty = dir.path().join("empty.crl");
    write_mode(&empty, b"", 0o644);
    let missing = dir.path().join("missing.crl");
    for (crl, says) in [
        (&garbage, "could not read SSL CRL file"),
        (&empty, "could not read SSL CRL file"),
        (&missing, "does not exist"),
    ] {
        let conninfo = format!(
            "{} sslmode=verify-full sslrootcert={} sslcrl={}",
            tcp(&server),
            ca(&server).display(),
            crl.display()
        );
        psql(&server, &conninfo).success();
        pgnotify(&server, &conninfo)
            .code(3)
            .one_line_error()
            .stderr_has(says);
    }
}

// ---------------------------------------------------------------------------------------
// Attacks that found nothing when the review ran.
// ---------------------------------------------------------------------------------------

#[test]
fn verify_full_names_wildcards_case_and_trailing_dots_as_libpq() {
    let server = server_with(&[]);
    let dir = shared_dir();
    let port = server.cluster.port();
    let ca = ca(&server);
    let named = |host: &str| {
        format!(
            "host={host} hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres \
             sslmode=verify-full sslrootcert={}",
            ca.display()
        )
    };
    present(
        &server,
        &issue(
            &server,
            dir.path(),
            "wild",
            "wild",
            "DNS:*.pgnotify.localhost",
        ),
    );
    for (host, ok) in [
        ("db.pgnotify.localhost", true),
        ("DB.Pgnotify.LOCALHOST", true),
        ("a.b.pgnotify.localhost", false),
        ("pgnotify.localhost", false),
        ("db.pgnotify.localhost.", false),
    ] {
        let out = agree(&server, &named(host));
        assert_eq!(out.status.success(), ok, "{host}{}", out.report());
    }
    // CN only, no SAN: the CN is the name.
    present(&server, &issue(&server, dir.path(), "cn", "localhost", ""));
    for (host, ok) in [
        ("localhost", true),
        ("LOCALHOST", true),
        ("127.0.0.1", false),
    ] {
        let out = agree(&server, &named(host));
        assert_eq!(out.status.success(), ok, "{host}{}", out.report());
    }
    // Only an IP SAN, and a DNS host: the CN is checked (no SAN of the host's type).
    present(
        &server,
        &issue(&server, dir.path(), "ip", "localhost", "IP:127.0.0.1"),
    );
    agree(&server, &named("localhost")).success();
    // A DNS SAN: the CN is never checked for a DNS host.
    present(
        &server,
        &issue(
            &server,
            dir.path(),
            "dns",
            "localhost",
            "DNS:db.pgnotify.localhost",
        ),
    );
    agree(&server, &named("localhost")).stderr_has(
        "server certificate for \"db.pgnotify.localhost\" does not match host name \"localhost\"",
    );
}

/// prefer against a server whose hostssl line wants a client certificate and whose hostnossl
/// line trusts: the TLS attempt is refused by the server, and prefer retries plain.
#[test]
fn prefer_retries_plain_when_the_server_refuses_over_tls() {
    let server = tls_only(&[
        "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full",
        "hostnossl all all 127.0.0.1/32 trust",
    ]);
    agree(&server, &format!("{} sslmode=prefer", tcp(&server))).success();
    // allow: plain first, accepted.
    agree(&server, &format!("{} sslmode=allow", tcp(&server))).success();
    // require: refused, one line.
    agree(&server, &format!("{} sslmode=require", tcp(&server)))
        .stderr_has("requires a valid client certificate");
}

/// allow against a server that refuses plain: TLS the second time; a wrong password over
/// both is reported for both.
#[test]
fn allow_and_prefer_report_both_attempts() {
    let server = tls_only(&[]);
    agree(&server, &format!("{} sslmode=allow", tcp(&server)))
        .success()
        .stderr_has("SSL connection");
    let wrong = server
        .bare()
        .env("PGPASSWORD", "wrong")
        .args([
            "-d",
            &format!("{} sslmode=prefer", tcp(&server)),
            "notify",
            "p",
            "x",
        ])
        .run();
    wrong
        .code(3)
        .one_line_error()
        .stderr_has("password authentication failed")
        .stderr_has("retried without SSL");
    assert!(!wrong.stderr.contains("wrong"), "{}", wrong.report());
}

/// Secrets never appear on stdout or stderr, with -v, in errors of malformed settings.
#[test]
fn passwords_and_sslpasswords_are_never_shown() {
    let server = Server::start();
    for conninfo in [
        "postgres://u:TOPSECRET@h/d?sslpassword=KEYSECRET&bogus=1",
        "postgres://u:TOPSECRET@h/d?sslpassword=KEYSECRET&sslmode=bogus",
        "postgres://u:TOPSECRET@h:99999/d?sslpassword=KEYSECRET",
        "postgres://u:TOPSECRET@h/d?sslpassword=KEY%ZZSECRET",
        "postgres://u:TOP%ZZSECRET@h/d?sslpassword=KEYSECRET",
        "postgres://u:TOPSECRET@[::1/d?sslpassword=KEYSECRET",
        "postgres://u:TOPSECRET@h/d?=KEYSECRET",
        "host=h password=TOPSECRET sslpassword='KEYSECRET",
        "host=h password=TOPSECRET sslpassword=KEYSECRET hots=x",
        "host=127.0.0.1 port=1 sslpassword=KEYSECRET password=TOPSECRET",
        "host=127.0.0.1 port=1 sslpassword=KEYSECRET password=TOPSECRET sslmode=verify-full",
    ] {
        let out = server
            .bare()
            .args(["-v", "-d", conninfo, "notify", "p", "x"])
            .run();
        assert!(!out.status.success());
        out.one_line_error();
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains("SECRET"), "{}", out.report());
    }
}

/// A server that says 'S' and closes, or never speaks TLS: one line, exit 3, no OpenSSL code;
/// notify --timeout 1s exits 124 after 1 s.
#[test]
fn broken_tls_servers_fail_in_one_line_and_notify_timeout_is_124() {
    let server = Server::start();
    let close = FakeServer::start("tls-close");
    let hang = FakeServer::start("tls-hang");
    for mode in ["prefer", "require"] {
        let out = server
            .bare()
            .args([
                "-d",
                &format!(
                    "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode}",
                    close.port
                ),
                "notify",
                "p",
                "x",
            ])
            .run();
        out.code(3).one_line_error();
        assert!(!out.stderr.contains("SSL routines"), "{}", out.report());
    }
    for mode in ["prefer", "require"] {
        let started = Instant::now();
        let out = server
            .bare()
            .args([
                "-d",
                &format!(
                    "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode}",
                    hang.port
                ),
                "notify",
                "--timeout",
                "1s",
                "p",
                "x",
            ])
            .run();
        out.code(124).one_line_error();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}",
            out.report()
        );
    }
}

/// A listener over verify-full TLS whose server restarts: it reconnects over TLS and reports
/// a gap.
#[test]
fn a_tls_listener_reconnects_over_tls_after_a_restart() {
    let server = server_with(&[
        "hostssl all all 127.0.0.1/32 trust",
        "hostssl all all ::1/128 trust",
        "hostnossl all all 127.0.0.1/32 reject",
        "hostnossl all all ::1/128 reject",
    ]);
    let mut pipe = server
        .bare()
        .args(["-v", "-d", &server.cluster.tls_conninfo().unwrap()])
        .args(["pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    server.notify("jobs", "before");
    assert_eq!(pipe.read_record().payload, "before");
    server.pg_ctl(&["restart", "-m", "fast"]);
    let (records, gap) = pipe.read_until_gap();
    assert!(records.is_empty(), "{}", pipe.report());
    assert_eq!(gap.gap, "reconnect");
    assert!(gap.until.is_some());
    let connected = pipe
        .stderr()
        .lines()
        .filter(|l| l.contains("connected to server") && l.contains("SSL connection"))
        .count();
    assert!(connected >= 2, "reconnected over TLS{}", pipe.report());
    server.notify("jobs", "after");
    assert_eq!(pipe.read_record().payload, "after");
}

/// listen --wait against a server that fails every TLS handshake: threads and descriptors
/// stay flat over many attempts.
#[test]
fn retrying_a_failing_tls_server_keeps_threads_and_fds_flat() {
    let server = Server::start();
    let close = FakeServer::start("tls-close");
    let mut listen = server
        .bare()
        .args([
            "-v",
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
                close.port
            ),
            "listen",
            "--wait",
            "x",
        ])
        .spawn();
    let pid = listen.pid();
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap()
            .count()
    };
    std::thread::sleep(Duration::from_secs(3));
    let (threads, fds) = (count("task"), count("fd"));
    std::thread::sleep(Duration::from_secs(12));
    let attempts = listen.stderr().matches("failed").count();
    assert!(attempts >= 10, "{}", listen.report());
    assert!(count("task") <= threads, "threads grew{}", listen.report());
    assert!(count("fd") <= fds + 1, "fds grew{}", listen.report());
    listen.signal(nix::sys::signal::Signal::SIGTERM);
    listen.wait();
}
