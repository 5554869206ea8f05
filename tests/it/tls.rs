//! TLS with libpq's meanings, against real TLS-only servers, with psql (libpq) as the oracle:
//! every case runs pgnotify and psql with the same settings, and they must agree.

use crate::support::{Outcome, Server};
use pgnotify::tempdb::{
    self,
    tls::{CertAuthority, Issued},
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub(super) const PASSWORD: &str = "s3cret";

/// A server that takes TCP connections only over TLS, with SCRAM passwords (`extra` hba lines
/// first, e.g. a `clientcert=verify-full` variant).
pub(super) fn tls_only(first: &[&str]) -> Server {
    let mut hba: Vec<String> = first.iter().map(|l| l.to_string()).collect();
    hba.push("hostssl all all 127.0.0.1/32 scram-sha-256".into());
    hba.push("hostnossl all all 127.0.0.1/32 reject".into());
    let server = Server::start_with(&tempdb::Options {
        tls: true,
        hba,
        ..Default::default()
    });
    server.psql(&format!(
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '{PASSWORD}'"
    ));
    server
}

pub(super) fn ca(server: &Server) -> PathBuf {
    server
        .cluster
        .ca()
        .expect("a TLS server")
        .cert_path()
        .to_owned()
}

/// TCP to `localhost`, the name the server's certificate has.
pub(super) fn tcp(server: &Server) -> String {
    format!(
        "host=localhost port={} user=postgres dbname=postgres",
        server.cluster.port()
    )
}

/// `pgnotify -v -d CONNINFO notify probe x`, the password from PGPASSWORD.
pub(super) fn pgnotify(server: &Server, conninfo: &str) -> Outcome {
    server
        .bare()
        .env("PGPASSWORD", PASSWORD)
        .args(["-v", "-d", conninfo, "notify", "probe", "x"])
        .run()
}

/// psql's answer with the same settings: whether its session is encrypted (`t`/`f`), or
/// its error.
pub(super) fn psql(server: &Server, conninfo: &str) -> Outcome {
    server.psql_as_client(
        &format!("{conninfo} password={PASSWORD}"),
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
}

/// Runs pgnotify and psql with the same settings; asserts that they agree, that a failure is
/// one line with status 3, and that no password, OpenSSL code or Rust debug text is shown.
/// Returns pgnotify's outcome.
pub(super) fn compare(server: &Server, conninfo: &str) -> Outcome {
    let ours = pgnotify(server, conninfo);
    let theirs = psql(server, conninfo);
    assert_eq!(
        ours.status.success(),
        theirs.status.success(),
        "pgnotify and psql disagree on {conninfo:?}\n--- pgnotify:{}\n--- psql:{}",
        ours.report(),
        theirs.report()
    );
    if !ours.status.success() {
        ours.code(3).one_line_error();
    }
    for bad in [
        PASSWORD,
        "error:0",
        "SSL routines",
        "ErrorStack",
        "Error {",
        "panicked",
    ] {
        assert!(
            !ours.stderr.contains(bad),
            "{bad:?} in stderr{}",
            ours.report()
        );
    }
    ours
}

/// [`compare`], and a success must be encrypted.
fn agree(server: &Server, conninfo: &str) -> Outcome {
    let ours = compare(server, conninfo);
    if ours.status.success() {
        ours.stderr_has("SSL connection (protocol: TLSv1.");
    }
    ours
}

/// A client certificate for `postgres` from the server's own CA, written in `dir`.
pub(super) fn client_cert(server: &Server, dir: &Path) -> Issued {
    server
        .cluster
        .ca()
        .expect("a TLS server")
        .issue_client(dir, "client", "postgres")
        .unwrap()
}

pub(super) fn write_private(path: &Path, text: &[u8]) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn every_sslmode_succeeds_or_fails_as_psql_does_against_a_tls_only_server() {
    let server = tls_only(&[]);
    let ca = ca(&server);
    let base = tcp(&server);
    for mode in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        let out = agree(
            &server,
            &format!("{base} sslmode={mode} sslrootcert={}", ca.display()),
        );
        if mode == "disable" {
            out.stderr_has("pg_hba.conf rejects connection")
                .stderr_has("no encryption");
        }
    }
    // No root certificate file at all: require encrypts without verifying, verify-* refuse.
    agree(&server, &format!("{base} sslmode=require")).success();
    let out = agree(&server, &format!("{base} sslmode=verify-ca"));
    out.stderr_has("root certificate file")
        .stderr_has(".postgresql/root.crt\" does not exist");
    // The default root file, ~/.postgresql/root.crt, holding another CA: require then checks
    // the chain (libpq's rule), and prefer falls back to plain text, which this server refuses.
    let dir = server.home.path().join(".postgresql");
    let wrong = CertAuthority::new(&dir.join("wrong"), "wrong").unwrap();
    std::fs::copy(wrong.cert_path(), dir.join("root.crt")).unwrap();
    agree(&server, &format!("{base} sslmode=require")).stderr_has("not trusted");
    agree(&server, &format!("{base} sslmode=prefer"))
        .stderr_has("retried without SSL")
        .stderr_has("no encryption");
    // The right CA there: verify-full with no sslrootcert at all, as the "Done when" runs it.
    std::fs::copy(&ca, dir.join("root.crt")).unwrap();
    agree(&server, &format!("{base} sslmode=verify-full"));
    // The environment instead of a connection string: PGSSLMODE and PGSSLROOTCERT.
    std::fs::remove_file(dir.join("root.crt")).unwrap();
    server
        .bare()
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .env("PGUSER", "postgres")
        .env("PGPORT", server.cluster.port().to_string())
        .args(["-v", "-h", "localhost", "notify", "probe", "x"])
        .run()
        .success()
        .stderr_has("SSL connection");
    // sslrootcert=system: the system's store (libpq 16's meaning; psql 15 here reads it as a
    // file name, so pgnotify alone). It implies verify-full; SSL_CERT_FILE points OpenSSL's
    // default store at the test CA, and without it the test CA is not trusted.
    let system = format!("{base} sslrootcert=system");
    pgnotify(&server, &system)
        .code(3)
        .one_line_error()
        .stderr_has("not trusted")
        .stderr_has("the system's root certificates");
    server
        .bare()
        .env("PGPASSWORD", PASSWORD)
        .env("SSL_CERT_FILE", &ca)
        .args(["-v", "-d", &system, "notify", "probe", "x"])
        .run()
        .success()
        .stderr_has("SSL connection");
    pgnotify(&server, &format!("{system} sslmode=require"))
        .code(2)
        .one_line_error()
        .stderr_has("weak sslmode \"require\" may not be used with sslrootcert=system");
    // A unix socket never uses TLS, whatever sslmode says (as in libpq).
    server
        .pgnotify()
        .args(["-d", "dbname=postgres sslmode=verify-full"])
        .args(["notify", "probe", "x"])
        .run()
        .success();
}

#[test]
fn an_untrusted_certificate_and_a_host_name_mismatch_are_told_as_psql_tells_them() {
    let server = tls_only(&[]);
    let port = server.cluster.port();
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = CertAuthority::new(elsewhere.path(), "wrong").unwrap();
    let out = agree(
        &server,
        &format!(
            "{} sslmode=verify-ca sslrootcert={}",
            tcp(&server),
            wrong.cert_path().display()
        ),
    );
    out.stderr_has("server certificate for \"localhost\" not trusted")
        .stderr_has("wrong.crt");
    // The address is right, the name is not one the certificate has: verify-full names both.
    let named = format!(
        "host=db.pgnotify.localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres \
         sslrootcert={}",
        ca(&server).display()
    );
    agree(&server, &format!("{named} sslmode=verify-full")).stderr_has(
        "server certificate for \"localhost\", \"127.0.0.1\" does not match host name \"db.pgnotify.localhost\"",
    );
    // verify-ca checks the chain only.
    agree(&server, &format!("{named} sslmode=verify-ca")).success();
    // An IP address as the host is checked against the certificate's IP addresses.
    agree(
        &server,
        &format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full \
             sslrootcert={}",
            ca(&server).display()
        ),
    )
    .success();
    // A revocation list that revokes the server's certificate, then one that revokes none.
    let crl = elsewhere.path().join("root.crl");
    let authority = server.cluster.ca().unwrap();
    let server_cert = server.cluster.tls_dir().unwrap().join("server.crt");
    for revoked in [&[server_cert.as_path()][..], &[]] {
        authority.write_crl(revoked, &crl).unwrap();
        let out = agree(
            &server,
            &format!(
                "{} sslmode=verify-full sslrootcert={} sslcrl={}",
                tcp(&server),
                ca(&server).display(),
                crl.display()
            ),
        );
        match revoked.is_empty() {
            true => drop(out.success()),
            false => drop(out.stderr_has("certificate revoked")),
        }
    }
}

#[test]
fn client_certificates_are_sent_checked_and_refused_as_libpq_does() {
    let server = tls_only(&["hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full"]);
    let dir = tempfile::tempdir().unwrap();
    let verify = format!(
        "{} sslmode=verify-full sslrootcert={}",
        tcp(&server),
        ca(&server).display()
    );
    agree(&server, &verify).stderr_has("requires a valid client certificate");
    let mine = client_cert(&server, dir.path());
    let with_cert = format!(
        "{verify} sslcert={} sslkey={}",
        mine.cert.display(),
        mine.key.display()
    );
    agree(&server, &with_cert).success();
    // The default place, ~/.postgresql/postgresql.crt and .key.
    let home = server.home.path().join(".postgresql");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(&mine.cert, home.join("postgresql.crt")).unwrap();
    write_private(
        &home.join("postgresql.key"),
        &std::fs::read(&mine.key).unwrap(),
    );
    agree(&server, &verify).success();
    // A key that others may read is refused before connecting, in libpq's words.
    std::fs::set_permissions(&mine.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    agree(&server, &with_cert).stderr_has(&format!(
        "private key file \"{}\" has group or world access",
        mine.key.display()
    ));
    // With prefer, libpq then tries plain text, which this server refuses: both are told.
    agree(
        &server,
        &with_cert.replace("sslmode=verify-full", "sslmode=prefer"),
    )
    .stderr_has("has group or world access")
    .stderr_has("retried without SSL")
    .stderr_has("no encryption");
    // A certificate from another CA: the server refuses it.
    let other = CertAuthority::new(&dir.path().join("other"), "other").unwrap();
    let theirs = other
        .issue_client(dir.path(), "theirs", "postgres")
        .unwrap();
    agree(
        &server,
        &format!(
            "{verify} sslcert={} sslkey={}",
            theirs.cert.display(),
            theirs.key.display()
        ),
    )
    .stderr_has("refused the client certificate");
    // An encrypted key opens with sslpassword, and not without it.
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(home.join("postgresql.key")).unwrap(),
    )
    .unwrap();
    let encrypted = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"k3y pass")
        .unwrap();
    let locked = dir.path().join("locked.key");
    write_private(&locked, &encrypted);
    let with_locked = format!(
        "{verify} sslcert={} sslkey={}",
        mine.cert.display(),
        locked.display()
    );
    agree(&server, &format!("{with_locked} sslpassword='k3y pass'")).success();
    agree(&server, &with_locked).stderr_has("could not load private key file");
    let out = agree(&server, &format!("{with_locked} sslpassword=wrong"));
    assert!(!out.stderr.contains("k3y pass"), "{}", out.report());
}

#[test]
fn passwords_over_tls_come_from_pgpass_and_the_prompt_and_bind_the_channel() {
    let server = tls_only(&[]);
    let port = server.cluster.port();
    let verify = format!(
        "{} sslmode=verify-full sslrootcert={}",
        tcp(&server),
        ca(&server).display()
    );
    // SCRAM-SHA-256-PLUS: channel_binding=require succeeds only when the channel is bound.
    agree(&server, &format!("{verify} channel_binding=require")).success();
    // The password file, keyed by the host name.
    let pgpass = server.home.path().join(".pgpass");
    write_private(
        &pgpass,
        format!("localhost:{port}:*:postgres:{PASSWORD}\n").as_bytes(),
    );
    server
        .bare()
        .args(["-v", "-d", &verify, "notify", "probe", "x"])
        .run()
        .success()
        .stderr_has("SSL connection");
    std::fs::remove_file(&pgpass).unwrap();
    // The prompt, at a terminal: asked when the server wants one, or first with -W.
    for extra in [&[][..], &["-W"][..]] {
        let out = server
            .typing_password("postgres", PASSWORD)
            .arg(env!("CARGO_BIN_EXE_pgnotify"))
            .args(["-v", "-d", &verify])
            .args(extra)
            .args(["notify", "probe", "x"])
            .run();
        assert!(out.stdout.starts_with("exit 0"), "{}", out.report());
        assert!(out.stdout.contains("SSL connection"), "{}", out.report());
    }
}

#[test]
fn listen_over_verify_full_receives_what_is_sent() {
    // The issue's "Done when": PGSSLMODE=verify-full PGSSLROOTCERT=ca.crt pgnotify -h HOST listen.
    let server = tls_only(&[]);
    let mut listen = server
        .bare()
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", ca(&server))
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGPORT", server.cluster.port().to_string())
        .args(["-v", "-h", "localhost", "pipe", "jobs"])
        .spawn();
    listen.wait_ready();
    assert!(
        listen.stderr().contains("SSL connection"),
        "{}",
        listen.report()
    );
    server.notify("jobs", "over TLS");
    assert_eq!(listen.read_record().payload, "over TLS");
}
