//! The harness's own servers do what the TLS and failover tests rely on: TLS that psql
//! verifies in full against the server's CA and not against another, client certificates and
//! revocation lists from the same CA, SCRAM passwords behind `hostssl`, and a streaming
//! standby that replays the primary and can be promoted.

use crate::support::{PATIENCE, Server};
use pgnotify::tempdb::{self, tls::CertAuthority};
use std::time::{Duration, Instant};

const IS_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// The server's TLS conninfo; panics when it serves none.
fn tls_conninfo(server: &Server) -> String {
    server.cluster.tls_conninfo().expect("a TLS server")
}

#[test]
fn a_tls_server_passes_verify_full_against_its_ca() {
    let server = Server::start_tls();
    let out = server.psql_as_client(&tls_conninfo(&server), IS_SSL);
    out.success();
    assert_eq!(out.stdout.trim(), "t", "{}", out.report());
    let dir = server.cluster.tls_dir().unwrap();
    for file in ["ca.crt", "ca.key", "server.crt", "server.key"] {
        assert!(dir.join(file).is_file(), "no {file}");
    }
    assert_eq!(
        server.cluster.ca().unwrap().cert_path(),
        dir.join("ca.crt"),
        "the CA is the one in tls/"
    );
    // Both SANs: 127.0.0.1 verifies as well as localhost.
    let by_ip = tls_conninfo(&server).replace("host=localhost", "host=127.0.0.1");
    server.psql_as_client(&by_ip, IS_SSL).success();
}

#[test]
fn a_tls_server_fails_verification_against_another_ca() {
    let server = Server::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let wrong = CertAuthority::new(dir.path(), "wrong").unwrap();
    let conninfo = format!(
        "host=localhost port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
        server.cluster.port(),
        tempdb::SUPERUSER,
        wrong.cert_path().display()
    );
    let out = server.psql_as_client(&conninfo, "SELECT 1");
    assert!(!out.status.success(), "{}", out.report());
    out.stderr_has("certificate verify failed");
}

#[test]
fn a_revoked_server_certificate_fails_sslcrl() {
    let server = Server::start_tls();
    let ca = server.cluster.ca().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let revoked = dir.path().join("revoked.crl");
    let server_cert = server.cluster.tls_dir().unwrap().join("server.crt");
    ca.write_crl(&[&server_cert], &revoked).unwrap();
    let empty = dir.path().join("empty.crl");
    ca.write_crl(&[], &empty).unwrap();
    let with_crl = |crl: &std::path::Path| {
        let conninfo = format!("{} sslcrl={}", tls_conninfo(&server), crl.display());
        server.psql_as_client(&conninfo, IS_SSL)
    };
    with_crl(&empty).success();
    let out = with_crl(&revoked);
    assert!(!out.status.success(), "{}", out.report());
    // libpq says only that verification failed; the alert it sent names the reason.
    out.stderr_has("certificate verify failed");
    let log = std::fs::read_to_string(server.cluster.log_path()).unwrap();
    assert!(log.contains("certificate revoked"), "{}", out.report());
}

#[test]
fn a_client_certificate_from_the_servers_ca_logs_in_with_cert_authentication() {
    let server = Server::start_with(&tempdb::Options {
        tls: true,
        hba: vec!["hostssl all all 127.0.0.1/32 cert".to_owned()],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = server.cluster.ca().unwrap();
    let client = ca
        .issue_client(dir.path(), "client", tempdb::SUPERUSER)
        .unwrap();
    let with_cert = format!(
        "{} sslcert={} sslkey={}",
        tls_conninfo(&server),
        client.cert.display(),
        client.key.display()
    );
    let out = server.psql_as_client(&with_cert, "SELECT current_user");
    out.success();
    assert_eq!(out.stdout.trim(), tempdb::SUPERUSER, "{}", out.report());
    // Without a certificate, `cert` authentication refuses.
    let out = server.psql_as_client(&tls_conninfo(&server), "SELECT 1");
    assert!(!out.status.success(), "{}", out.report());
    out.stderr_has("requires a valid client certificate");
    // A certificate from another CA is refused in the handshake.
    let other = CertAuthority::new(dir.path(), "other").unwrap();
    let stranger = other
        .issue_client(dir.path(), "stranger", tempdb::SUPERUSER)
        .unwrap();
    let with_stranger = format!(
        "{} sslcert={} sslkey={}",
        tls_conninfo(&server),
        stranger.cert.display(),
        stranger.key.display()
    );
    let out = server.psql_as_client(&with_stranger, "SELECT 1");
    assert!(!out.status.success(), "{}", out.report());
    out.stderr_has("unknown ca");
}

#[test]
fn hostssl_lines_come_first_a_scram_password_over_tls_and_no_plain_tcp() {
    let server = Server::start_with(&tempdb::Options {
        tls: true,
        hba: vec![
            "hostssl all all 127.0.0.1/32 scram-sha-256".to_owned(),
            "hostnossl all all 127.0.0.1/32 reject".to_owned(),
        ],
        ..Default::default()
    });
    server.psql("CREATE ROLE alice LOGIN PASSWORD 'secret'");
    let port = server.cluster.port();
    let ca = server
        .cluster
        .ca()
        .unwrap()
        .cert_path()
        .display()
        .to_string();
    let alice = |extra: &str| {
        let conninfo = format!(
            "host=localhost port={port} user=alice dbname=postgres sslrootcert={ca} {extra}"
        );
        server.psql_as_client(&conninfo, "SELECT current_user")
    };
    let out = alice("sslmode=verify-full password=secret");
    out.success();
    assert_eq!(out.stdout.trim(), "alice", "{}", out.report());
    let out = alice("sslmode=verify-full password=wrong");
    assert!(!out.status.success(), "{}", out.report());
    out.stderr_has("password authentication failed");
    let out = alice("sslmode=disable password=secret");
    assert!(!out.status.success(), "{}", out.report());
    out.stderr_has("no encryption");
}

/// Waits until `cond` holds on a standby (replication is asynchronous).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_standby_replays_the_primary_until_promoted() {
    let primary = Server::start();
    let standby = primary.standby();
    assert_ne!(standby.cluster.port(), primary.cluster.port());
    assert_ne!(standby.cluster.root(), primary.cluster.root());
    assert!(standby.cluster.is_in_recovery().unwrap());
    assert!(!primary.cluster.is_in_recovery().unwrap());
    primary.psql("CREATE TABLE replayed (id int); INSERT INTO replayed VALUES (7)");
    eventually("the table on the standby", || {
        standby
            .cluster
            .psql("SELECT id FROM replayed")
            .is_ok_and(|id| id == "7")
    });
    let refused = standby.cluster.psql("INSERT INTO replayed VALUES (8)");
    assert!(
        format!("{:#}", refused.unwrap_err()).contains("read-only transaction"),
        "a standby refuses writes"
    );
    standby.cluster.promote().unwrap();
    assert!(!standby.cluster.is_in_recovery().unwrap());
    standby.psql("INSERT INTO replayed VALUES (8)");
    // Removed on drop like any cluster.
    let root = standby.cluster.root().to_owned();
    drop(standby);
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn a_standby_of_a_tls_server_serves_tls_with_the_same_ca_after_the_primary_is_gone() {
    let primary = Server::start_tls();
    let standby = primary.standby();
    let ca = primary.cluster.ca().unwrap().cert_path().to_owned();
    let standby_ca = standby.cluster.ca().unwrap().cert_path().to_owned();
    assert_ne!(ca, standby_ca, "the standby has copies of its own");
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(&standby_ca).unwrap()
    );
    for setting in ["ssl_cert_file", "ssl_key_file", "ssl_ca_file"] {
        let file = standby.psql(&format!("SHOW {setting}"));
        assert!(
            file.starts_with(&standby.cluster.root().display().to_string()),
            "{setting} = {file}: not the standby's own"
        );
    }
    drop(primary);
    let out = standby.psql_as_client(&tls_conninfo(&standby), IS_SSL);
    out.success();
    assert_eq!(out.stdout.trim(), "t", "{}", out.report());
    assert!(standby.cluster.is_in_recovery().unwrap());
}
