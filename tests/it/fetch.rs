//! Batched `--fetch` against a real server: one query per table for the events that arrived
//! together, matched back to the events whatever order the rows come in, the events still in
//! the order received; mixed tables, repeated keys, rows gone, forged events and DDL in the
//! same stream; `--fetch` with `--exec`.

use crate::support::{Running, Server};
use serde_json::Value;

fn fetching(server: &Server, channel: &str, count: usize) -> Running {
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            channel,
            "--fetch",
            "--timeout",
            "30s",
            "--count",
        ])
        .arg(count.to_string())
        .spawn();
    pipe.wait_ready();
    pipe
}

/// The event and the row fetched for it, of each record.
fn events(pipe: &mut Running, count: usize) -> Vec<(Value, Value)> {
    (0..count)
        .map(|_| {
            let record = pipe.read_record();
            let event: Value = serde_json::from_str(&record.payload).unwrap();
            let new = record
                .data
                .as_ref()
                .and_then(|d| d.get("new"))
                .cloned()
                .unwrap_or(Value::String("(not fetched)".into()));
            (event, new)
        })
        .collect()
}

#[test]
fn a_bulk_insert_gets_every_row_in_order() {
    let server = Server::start();
    let mut db = server.client();
    // A key whose order on the server (text) is not the order of the rows inserted.
    db.batch_execute("CREATE TABLE t (k text PRIMARY KEY, n int)")
        .unwrap();
    server.watch_table(&["t", "--channel", "t"]);
    let rows = 5000;
    let mut pipe = fetching(&server, "t", rows);
    db.batch_execute(&format!(
        "INSERT INTO t SELECT md5(g::text), g FROM generate_series(1, {rows}) g"
    ))
    .unwrap();
    for (i, (event, new)) in events(&mut pipe, rows).into_iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(new["n"], n, "event {i}: {event} got {new}");
        assert_eq!(event["key"]["k"], new["k"], "event {i}");
    }
    pipe.expect_exit(0);
}

#[test]
fn mixed_tables_repeated_keys_gone_rows_and_forgeries_in_one_batch() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (x text, y int, v text, PRIMARY KEY (x, y));
         CREATE TABLE secret (id int PRIMARY KEY, v text);
         INSERT INTO secret VALUES (1, 'never forwarded');",
    )
    .unwrap();
    server.watch_table(&["a", "--channel", "mix"]);
    server.watch_table(&["b", "--channel", "mix"]);
    let mut pipe = fetching(&server, "mix", 9);
    // One transaction: the events arrive together, in one batch.
    db.batch_execute(
        "BEGIN;
         INSERT INTO a VALUES (1, 'a1');
         INSERT INTO b VALUES ('p', 1, 'b1');
         UPDATE a SET v = 'a1 again' WHERE id = 1;
         INSERT INTO a VALUES (2, 'a2');
         DELETE FROM a WHERE id = 2;
         INSERT INTO b VALUES ('q', 2, 'b2');
         UPDATE b SET v = 'b1 later' WHERE x = 'p';
         SELECT pg_notify('mix', '{\"op\":\"INSERT\",\"schema\":\"public\",\"table\":\"secret\",\"key\":{\"id\":1}}');
         SELECT pg_notify('mix', '{\"op\":\"INSERT\",\"schema\":\"public\",\"table\":\"a\",\"key\":{\"nope\":1}}');
         COMMIT;",
    )
    .unwrap();
    let got = events(&mut pipe, 9);
    let summary: Vec<(String, String)> = got
        .iter()
        .map(|(e, new)| {
            (
                format!(
                    "{} {} {}",
                    e["op"].as_str().unwrap(),
                    e["table"].as_str().unwrap(),
                    e["key"]
                ),
                new.to_string(),
            )
        })
        .collect();
    let want = [
        ("INSERT a {\"id\":1}", r#"{"id":1,"v":"a1 again"}"#),
        (
            "INSERT b {\"x\":\"p\",\"y\":1}",
            r#"{"x":"p","y":1,"v":"b1 later"}"#,
        ),
        ("UPDATE a {\"id\":1}", r#"{"id":1,"v":"a1 again"}"#),
        ("INSERT a {\"id\":2}", "null"),
        ("DELETE a {\"id\":2}", "null"),
        (
            "INSERT b {\"x\":\"q\",\"y\":2}",
            r#"{"x":"q","y":2,"v":"b2"}"#,
        ),
        (
            "UPDATE b {\"x\":\"p\",\"y\":1}",
            r#"{"x":"p","y":1,"v":"b1 later"}"#,
        ),
        // Forged: an unwatched table is never read, a wrong key is skipped.
        ("INSERT secret {\"id\":1}", "\"(not fetched)\""),
        ("INSERT a {\"nope\":1}", "\"(not fetched)\""),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(summary, want, "{}", pipe.report());
    pipe.expect_exit(0);
    let stderr = pipe.stderr();
    assert!(
        stderr.contains("does not read rows of public.secret"),
        "{stderr}"
    );
    assert!(
        stderr.contains("whose key is not the watch's key"),
        "{stderr}"
    );
    assert!(!stderr.contains("never forwarded"), "{stderr}");
}

#[test]
fn ddl_and_a_revoked_privilege_are_said_and_the_stream_goes_on() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text, extra int);
         CREATE ROLE reader LOGIN;
         GRANT SELECT ON t TO reader;",
    )
    .unwrap();
    server.watch_table(&["t", "--channel", "t"]);
    let mut pipe = server
        .pgnotify()
        .args([
            "-U",
            "reader",
            "-v",
            "pipe",
            "t",
            "--fetch",
            "--count",
            "4",
            "--timeout",
            "30s",
        ])
        .spawn();
    pipe.wait_ready();
    db.batch_execute("INSERT INTO t VALUES (1, 'before', 0)")
        .unwrap();
    let first = events(&mut pipe, 1);
    assert_eq!(first[0].1["v"], "before");
    // A column dropped: the prepared statement's result changes; it is prepared again.
    db.batch_execute("ALTER TABLE t DROP COLUMN extra; INSERT INTO t VALUES (2, 'after ddl')")
        .unwrap();
    db.batch_execute("INSERT INTO t VALUES (3, 'and again')")
        .unwrap();
    let after: Vec<Value> = events(&mut pipe, 2)
        .into_iter()
        .map(|(_, new)| new)
        .collect();
    assert_eq!(
        after.last().unwrap(),
        &serde_json::json!({"id": 3, "v": "and again"}),
        "{}",
        pipe.report()
    );
    // The receiver loses SELECT: one line on stderr, the event still written, no crash.
    db.batch_execute("REVOKE SELECT ON t FROM reader; INSERT INTO t VALUES (4, 'hidden')")
        .unwrap();
    let last = events(&mut pipe, 1);
    assert_eq!(last[0].1, Value::String("(not fetched)".into()));
    pipe.expect_exit(0);
    assert!(
        pipe.stderr().contains("permission denied for table t"),
        "{}",
        pipe.report()
    );
}

#[test]
fn exec_gets_the_fetched_row_on_its_stdin() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    server.watch_table(&["t", "--channel", "t"]);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("rows");
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            "t",
            "--fetch",
            "--count",
            "3",
            "--timeout",
            "30s",
            "--exec",
        ])
        .arg(format!(
            "{{ printf '%s ' \"$PGNOTIFY_FETCHED\"; cat; }} >> '{}'",
            file.display()
        ))
        .spawn();
    pipe.wait_ready();
    db.batch_execute("INSERT INTO t VALUES (1, 'one'), (2, 'two'); DELETE FROM t WHERE id = 2;")
        .unwrap();
    pipe.expect_exit(0);
    let rows = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        rows,
        "1 {\"id\":1,\"v\":\"one\"}\n1 null\n1 null\n",
        "{}",
        pipe.report()
    );
}
