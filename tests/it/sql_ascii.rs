//! A SQL_ASCII database sends payloads that are not UTF-8: every one arrives, exact, in order,
//! flagged, on the same connection (no gap, no reconnect), in every output and through every
//! transport: the unix socket, TCP, TCP with TLS, and TCP where `prefer` finds no TLS. A UTF-8
//! database is unaffected.

use crate::support::{Cmd, Record, Server};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use std::path::Path;

/// The payloads sent, in order: bytes that are not UTF-8 mixed with UTF-8 and ASCII, a
/// control character beside them, and one close to PostgreSQL's 8000-byte limit (longer than
/// many reads).
fn payloads() -> Vec<Vec<u8>> {
    vec![
        b"\xff".to_vec(),
        b"plain ascii".to_vec(),
        b"caf\xe9".to_vec(),
        "ünïcødé €".as_bytes().to_vec(),
        (0x80..=0xffu8).collect(),
        b"\x1b[31mred\xa0 \xc3\xa9 \xe2\x82 tab\there".to_vec(),
        (0..7990).map(|i| [b'a', 0xe9, 0xc3, 0xa9][i % 4]).collect(),
        b"{\"k\": \"\xfc\"}".to_vec(),
        b"".to_vec(),
        b"last".to_vec(),
    ]
}

/// A database whose encoding is SQL_ASCII, on `server`.
fn ascii_database(server: &Server) {
    server.psql(
        "CREATE DATABASE ascii ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'",
    );
}

/// How pgnotify reaches the database.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// The unix socket.
    Socket,
    /// TCP to 127.0.0.1, `sslmode=disable`.
    Tcp,
    /// TCP to localhost, `sslmode=require`.
    Tls,
    /// TCP to 127.0.0.1, `sslmode=prefer` (the default): TLS when the server has it, else
    /// the server's "no" to the SSLRequest and plain text.
    Prefer,
}

fn conninfo(server: &Server, db: &str, via: Via) -> String {
    let port = server.cluster.port();
    let user = pgnotify::tempdb::SUPERUSER;
    match via {
        Via::Socket => format!(
            "host={} port={port} user={user} dbname={db}",
            server.cluster.socket_dir().display()
        ),
        Via::Tcp => {
            format!("host=127.0.0.1 port={port} user={user} dbname={db} sslmode=disable")
        }
        Via::Tls => format!("host=localhost port={port} user={user} dbname={db} sslmode=require"),
        Via::Prefer => format!("host=127.0.0.1 port={port} user={user} dbname={db}"),
    }
}

/// Sends each payload as its exact bytes (`convert_from(bytea, 'SQL_ASCII')` stores them
/// unchecked), then `end`.
fn send_all(server: &Server, db: &str, channel: &str) {
    let mut client =
        postgres::Client::connect(&conninfo(server, db, Via::Socket), postgres::NoTls).unwrap();
    for payload in payloads() {
        client
            .execute(
                "SELECT pg_notify($1, convert_from($2, 'SQL_ASCII'))",
                &[&channel, &payload],
            )
            .unwrap();
    }
    client
        .execute("SELECT pg_notify($1, 'end')", &[&channel])
        .unwrap();
}

/// Asserts that NDJSON records are the payloads, in order: the text (U+FFFD for what is not
/// UTF-8), and the exact bytes in `payload_base64`, there only when they are not UTF-8.
fn assert_records(records: &[Record], why: &str) {
    let expected = payloads();
    assert_eq!(records.len(), expected.len() + 1, "{why}");
    for (record, sent) in records.iter().zip(&expected) {
        match std::str::from_utf8(sent) {
            Ok(text) => {
                assert_eq!(record.payload, text, "{why}");
                assert_eq!(record.payload_base64, None, "UTF-8 is not flagged: {why}");
            }
            Err(_) => {
                assert_eq!(record.payload, String::from_utf8_lossy(sent), "{why}");
                let exact = BASE64_STANDARD
                    .decode(record.payload_base64.as_deref().expect("flagged"))
                    .unwrap();
                assert_eq!(&exact, sent, "{why}");
            }
        }
        assert_eq!(
            record.data, None,
            "--data does not parse a payload that is not UTF-8"
        );
    }
    assert_eq!(records[expected.len()].payload, "end");
}

/// Asserts that the connection was never lost.
fn assert_one_connection(stderr: &str, why: &str) {
    assert_eq!(
        stderr.matches("connected to").count(),
        1,
        "one connection: {why}\n{stderr}"
    );
    for word in ["reconnect", "lost", "panicked", "invalid byte"] {
        assert!(!stderr.contains(word), "{word}: {why}\n{stderr}");
    }
}

/// `listen --json --data` and `pipe` through `via`: every record exact, no gap.
fn json_through(server: &Server, via: Via, tls: bool) {
    for command in ["listen", "pipe"] {
        let why = format!("{command} via {via:?}");
        let mut run = server
            .bare()
            .args(["-v", "-d", &conninfo(server, "ascii", via)])
            .args([command, "bytes", "--count", "11"])
            .args(match command {
                "listen" => &["--json", "--data"][..],
                _ => &[][..],
            })
            .spawn();
        run.wait_ready();
        send_all(server, "ascii", "bytes");
        let records: Vec<Record> = (0..11).map(|_| run.read_record()).collect();
        run.expect_exit(0);
        assert_records(&records, &why);
        let stderr = run.stderr();
        assert_one_connection(&stderr, &why);
        assert_eq!(stderr.contains("SSL connection"), tls, "{why}\n{stderr}");
    }
}

#[test]
fn every_payload_arrives_exact_and_flagged_over_the_socket_tcp_and_tls() {
    let server = Server::start_tls();
    ascii_database(&server);
    json_through(&server, Via::Socket, false);
    json_through(&server, Via::Tcp, false);
    json_through(&server, Via::Tls, true);
    json_through(&server, Via::Prefer, true);
}

#[test]
fn prefer_on_a_server_without_tls_reads_the_refusal_then_every_payload() {
    let server = Server::start();
    ascii_database(&server);
    json_through(&server, Via::Prefer, false);
}

/// Runs `pgnotify -v -d CONNINFO ARGS > OUT` until it has written `count` notifications, with
/// the payloads sent; returns stdout's bytes.
fn bytes_of(server: &Server, via: Via, args: &[&str], out: &Path) -> Vec<u8> {
    let script = format!(r#"exec "$PGNOTIFY" "$@" > '{}'"#, out.display());
    let mut cmd = Cmd::shell(&script);
    cmd.env("HOME", server.home.path())
        .args(["-v", "-d", &conninfo(server, "ascii", via)])
        .args(args);
    let mut run = cmd.spawn();
    run.wait_ready();
    send_all(server, "ascii", "bytes");
    run.expect_exit(0);
    assert_one_connection(&run.stderr(), &format!("{args:?}"));
    std::fs::read(out).unwrap()
}

#[test]
fn raw_writes_the_exact_bytes_and_text_escapes_them() {
    let server = Server::start_tls();
    ascii_database(&server);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let expected = payloads();
    for via in [Via::Socket, Via::Tls] {
        // A `while read` loop gets what was sent: each payload's bytes, one line each.
        let raw = bytes_of(
            &server,
            via,
            &["listen", "--format", "raw", "bytes", "--count", "11"],
            &out,
        );
        let mut wanted: Vec<u8> = expected
            .iter()
            .flat_map(|p| [&p[..], b"\n"].concat())
            .collect();
        wanted.extend_from_slice(b"end\n");
        assert_eq!(raw, wanted, "raw via {via:?}");

        let text = bytes_of(
            &server,
            via,
            &["listen", "--format", "text", "bytes", "--count", "11"],
            &out,
        );
        let text = String::from_utf8(text).expect("the text format is UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "no raw control character: {text:?}"
        );
        assert!(
            !text.contains('\u{FFFD}'),
            "escaped, not replaced: {text:?}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert!(lines[0].ends_with("  \\xff"), "{}", lines[0]);
        assert!(lines[1].ends_with("  plain ascii"), "{}", lines[1]);
        assert!(lines[2].ends_with("  caf\\xe9"), "{}", lines[2]);
        assert!(lines[3].ends_with("  ünïcødé €"), "{}", lines[3]);
        let high: String = (0x80..=0xffu32).map(|b| format!("\\x{b:02x}")).collect();
        assert!(lines[4].ends_with(&high), "{}", lines[4]);
        assert!(
            lines[5].ends_with("  \\x1b[31mred\\xa0 é \\xe2\\x82 tab\\there"),
            "{}",
            lines[5]
        );
        assert!(lines[10].ends_with("  end"), "{}", lines[10]);

        let psql = bytes_of(
            &server,
            via,
            &["listen", "--format", "psql", "bytes", "--count", "11"],
            &out,
        );
        let psql = String::from_utf8(psql).expect("the psql format is UTF-8");
        assert!(
            psql.starts_with(
                "Asynchronous notification \"bytes\" with payload \"\\xff\" received from"
            ),
            "{psql}"
        );
        assert!(psql.contains("with payload \"caf\\xe9\""), "{psql}");
        assert!(!psql.contains('\u{FFFD}'), "{psql}");
    }
}

#[test]
fn exec_gets_the_exact_bytes_on_stdin_and_in_the_environment() {
    let server = Server::start();
    ascii_database(&server);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // No payload holds a NUL: it separates stdin from the variable, and one run from the next.
    let command = format!(
        r#"{{ cat; printf '\0%s\0' "$PGNOTIFY_PAYLOAD"; }} >> '{}'"#,
        log.display()
    );
    for via in [Via::Socket, Via::Tcp] {
        let _ = std::fs::remove_file(&log);
        let mut run = server
            .bare()
            .args(["-v", "-d", &conninfo(&server, "ascii", via)])
            .args(["pipe", "bytes", "--count", "11", "--exec", &command])
            .spawn();
        run.wait_ready();
        send_all(&server, "ascii", "bytes");
        run.expect_exit(0);
        assert_one_connection(&run.stderr(), &format!("exec via {via:?}"));
        let written = std::fs::read(&log).unwrap();
        let fields: Vec<&[u8]> = written.split(|&b| b == 0).collect();
        let mut expected = payloads();
        expected.push(b"end".to_vec());
        assert_eq!(fields.len(), 2 * expected.len() + 1, "{written:?}");
        for (i, sent) in expected.iter().enumerate() {
            assert_eq!(fields[2 * i], &sent[..], "stdin of run {i} via {via:?}");
            assert_eq!(fields[2 * i + 1], &sent[..], "PGNOTIFY_PAYLOAD of run {i}");
        }
    }
}

#[test]
fn a_utf8_database_is_unaffected() {
    let server = Server::start();
    let mut run = server
        .pgnotify()
        .args(["-v", "listen", "--json", "u", "--count", "3"])
        .spawn();
    run.wait_ready();
    for payload in ["ünï", "plain", "€ \u{1b}"] {
        server.notify("u", payload);
    }
    let records: Vec<Record> = (0..3).map(|_| run.read_record()).collect();
    run.expect_exit(0);
    let got: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r.payload.as_str(), r.payload_base64.as_deref()))
        .collect();
    assert_eq!(got, [("ünï", None), ("plain", None), ("€ \u{1b}", None)]);
    // The server refuses what is not UTF-8 there: the sender fails, the listener never sees it.
    let refused = server.client().execute(
        "SELECT pg_notify('u', convert_from('\\xff'::bytea, 'UTF8'))",
        &[],
    );
    assert!(refused.is_err());
}

/// Many notifications committed at once arrive in few reads, cut anywhere (a TLS record, a
/// socket buffer): each is still exact, in its place, among valid ones.
#[test]
fn a_burst_of_mixed_payloads_in_one_transaction_keeps_every_byte_in_order() {
    let server = Server::start_tls();
    ascii_database(&server);
    let burst: Vec<Vec<u8>> = (0..1500)
        .map(|i| {
            let mut p = format!("{i} ").into_bytes();
            match i % 3 {
                0 => p.extend_from_slice(b"\xe9\xff"),
                1 => p.extend_from_slice("é".as_bytes()),
                _ => p.extend((0..3000).map(|j| 0x80 + (j % 128) as u8)),
            }
            p
        })
        .collect();
    for via in [Via::Socket, Via::Tls] {
        let mut run = server
            .bare()
            .args(["-v", "-d", &conninfo(&server, "ascii", via)])
            .args(["pipe", "burst", "--count", "1500", "--on-overflow", "block"])
            .spawn();
        run.wait_ready();
        let mut client =
            postgres::Client::connect(&conninfo(&server, "ascii", Via::Socket), postgres::NoTls)
                .unwrap();
        let mut tx = client.transaction().unwrap();
        for payload in &burst {
            tx.execute(
                "SELECT pg_notify('burst', convert_from($1, 'SQL_ASCII'))",
                &[payload],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        for (i, sent) in burst.iter().enumerate() {
            let record = run.read_record();
            let got = match &record.payload_base64 {
                Some(b) => BASE64_STANDARD.decode(b).unwrap(),
                None => record.payload.into_bytes(),
            };
            assert_eq!(&got, sent, "notification {i} via {via:?}");
            assert_eq!(record.payload_base64.is_some(), i % 3 != 1, "flag of {i}");
        }
        run.expect_exit(0);
        assert_one_connection(&run.stderr(), &format!("burst via {via:?}"));
    }
}

/// The heartbeat's own notifications pass through the same connection, between payloads that
/// are not UTF-8: each payload still gets its own bytes, and the session is kept.
#[test]
fn heartbeats_between_payloads_that_are_not_utf8_keep_the_session_and_the_bytes_in_place() {
    let server = Server::start();
    ascii_database(&server);
    let mut run = server
        .bare()
        .args(["-v", "-d"])
        .arg(conninfo(&server, "ascii", Via::Tcp) + " application_name=ascii-beat")
        .args(["pipe", "bytes", "--heartbeat", "200ms", "--count", "22"])
        .spawn();
    run.wait_ready();
    let beats = || {
        server
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'ascii-beat' AND query LIKE '%pg_notify%'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
    };
    server.wait_until("a heartbeat", || beats() > 0);
    send_all(&server, "ascii", "bytes");
    let first: Vec<Record> = (0..11).map(|_| run.read_record()).collect();
    assert_records(&first, "before more heartbeats");
    // A heartbeat or two later (not a proof: what is proved is that nothing changes), again.
    std::thread::sleep(std::time::Duration::from_millis(500));
    send_all(&server, "ascii", "bytes");
    let second: Vec<Record> = (0..11).map(|_| run.read_record()).collect();
    assert_records(&second, "after more heartbeats");
    run.expect_exit(0);
    assert_one_connection(&run.stderr(), "heartbeats");
}
