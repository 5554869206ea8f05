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

/// Keys of many types, each read back by its own row: the typed statement (text with quotes,
/// escapes and characters past the BMP, uuid, timestamptz, numeric, a bigint past 2^53, bytea,
/// an enum, char(n), a domain, jsonb, a two-column key) and the statement by JSON for the
/// array and composite types, which `json_populate_record` reads in its own way.
#[test]
fn odd_key_types_each_get_their_row() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TYPE mood AS ENUM ('calm', 'it''s \"odd\"');
         CREATE TYPE pair AS (a int, b text);
         CREATE DOMAIN short_code AS text CHECK (length(VALUE) < 20);
         CREATE TABLE k_text (k text PRIMARY KEY, v text);
         CREATE TABLE k_uuid (k uuid PRIMARY KEY, v text);
         CREATE TABLE k_tstz (k timestamptz PRIMARY KEY, v text);
         CREATE TABLE k_numeric (k numeric PRIMARY KEY, v text);
         CREATE TABLE k_bigint (k bigint PRIMARY KEY, v text);
         CREATE TABLE k_bytea (k bytea PRIMARY KEY, v text);
         CREATE TABLE k_enum (k mood PRIMARY KEY, v text);
         CREATE TABLE k_char (k char(5) PRIMARY KEY, v text);
         CREATE TABLE k_domain (k short_code PRIMARY KEY, v text);
         CREATE TABLE k_jsonb (k jsonb PRIMARY KEY, v text);
         CREATE TABLE k_two (a int, b text, v text, PRIMARY KEY (b, a));
         CREATE TABLE k_array (k int[] PRIMARY KEY, v text);
         CREATE TABLE k_pair (k pair PRIMARY KEY, v text);",
    )
    .unwrap();
    let inserts = [
        ("k_text", r#"E'it''s "q" \\ \\u00e9 \\U0001F600 \\x01 %s'"#),
        ("k_uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
        ("k_tstz", "'2026-01-02 03:04:05.678901+05:30'"),
        ("k_numeric", "1.50000000000000000001"),
        ("k_bigint", "9007199254740993"),
        ("k_bytea", r"'\x00ff5c22'::bytea"),
        ("k_enum", r#"'it''s "odd"'"#),
        ("k_char", "'ab'"),
        ("k_domain", "'Ünïcode'"),
        (
            "k_jsonb",
            r#"'{"a": [1, "x\"y"], "n": 12345678901234567890}'"#,
        ),
        ("k_array", "'{1,NULL,3}'"),
        ("k_pair", r#"ROW(1, 'a "b", c')::pair"#),
    ];
    for (table, _) in &inserts {
        server.watch_table(&[table, "--channel", "odd"]);
    }
    server.watch_table(&["k_two", "--channel", "odd"]);
    let count = inserts.len() + 1;
    let mut pipe = fetching(&server, "odd", count);
    let mut sql = String::from("BEGIN;");
    for (table, key) in &inserts {
        sql.push_str(&format!(
            "INSERT INTO {table} VALUES ({key}, 'row of {table}');"
        ));
    }
    sql.push_str("INSERT INTO k_two VALUES (7, 'seven''s', 'row of k_two'); COMMIT;");
    db.batch_execute(&sql).unwrap();
    let got = events(&mut pipe, count);
    pipe.expect_exit(0);
    for (event, new) in got {
        let table = event["table"].as_str().unwrap().to_owned();
        let row: String = db
            .query_one(&format!("SELECT to_json(t)::text FROM {table} t"), &[])
            .unwrap()
            .get(0);
        let want: Value = serde_json::from_str(&row).unwrap();
        assert_eq!(new, want, "{table}: {event}\n{}", pipe.report());
    }
    assert!(!pipe.stderr().contains("--fetch"), "{}", pipe.report());
}

/// DDL on a key column after the watch: a change of its type is met at once (the statement
/// is prepared again and the batch read), a rename and a dropped table are one line each on
/// stderr, and the stream goes on.
#[test]
fn a_key_column_changed_or_renamed_after_install() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    server.watch_table(&["t", "--channel", "t"]);
    let mut pipe = fetching(&server, "t", 5);
    db.batch_execute("INSERT INTO t VALUES (1, 'int')").unwrap();
    assert_eq!(events(&mut pipe, 1)[0].1["v"], "int");
    db.batch_execute(
        "ALTER TABLE t ALTER COLUMN id TYPE bigint;
         INSERT INTO t VALUES (9007199254740993, 'bigint');",
    )
    .unwrap();
    let (_, new) = events(&mut pipe, 1).remove(0);
    assert_eq!(
        new.to_string(),
        r#"{"id":9007199254740993,"v":"bigint"}"#,
        "{}",
        pipe.report()
    );
    // Renamed: an event sent before (here, sent by hand) names a column that is gone.
    db.batch_execute("ALTER TABLE t RENAME COLUMN id TO ident")
        .unwrap();
    let before = r#"{"op":"INSERT","schema":"public","table":"t","key":{"id":1}}"#;
    server.notify("t", before);
    server.notify("t", before);
    let rest = events(&mut pipe, 2);
    // Dropped: one more line.
    db.batch_execute("DROP TABLE t").unwrap();
    server.notify("t", before);
    let last = events(&mut pipe, 1);
    pipe.expect_exit(0);
    let unread = Value::String("(not fetched)".into());
    assert_eq!([&rest[0].1, &rest[1].1, &last[0].1], [&unread; 3]);
    let stderr = pipe.stderr();
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("--fetch")).collect();
    assert_eq!(said.len(), 2, "{}", pipe.report());
    assert!(
        said[0].contains("column t.id does not exist"),
        "{}",
        pipe.report()
    );
    assert!(
        said[1].contains("does not watch that table"),
        "{}",
        pipe.report()
    );
    assert!(
        !stderr.contains("must not change result type"),
        "{}",
        pipe.report()
    );
}

/// A table whose columns are all integers, booleans and text is read as its columns and
/// written as JSON by pgnotify: the rows must be exactly what `to_json` makes of them, NULLs,
/// limits, padding, escapes and domains included; a column added later (of another type) is
/// in the next rows.
#[test]
fn rows_of_plain_columns_are_what_to_json_makes_of_them() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE DOMAIN small AS int2 CHECK (VALUE > -100);
         CREATE DOMAIN label AS varchar(20);
         CREATE TABLE p (id int8 PRIMARY KEY, a int2, b int4, c bool, d text, e varchar(10),
                         f char(5), g name, h small, i label, \"We\"\"ird name\" text);",
    )
    .unwrap();
    server.watch_table(&["p", "--channel", "p"]);
    let mut pipe = fetching(&server, "p", 4);
    db.batch_execute(
        r#"INSERT INTO p VALUES
             (9223372036854775807, -32768, -2147483648, true,
              E'it''s "q" \\ \u00e9 \U0001F600 \x01\x1f\x7f\n\t end', 'v', 'ab', 'nm', -99, 'lbl', 'w'),
             (-9223372036854775808, 32767, 2147483647, false, '', '', '', '', 0, '', NULL),
             (0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"#,
    )
    .unwrap();
    let check = |db: &mut postgres::Client, got: Vec<(Value, Value)>, report: String| {
        for (event, new) in got {
            let id = event["key"]["id"].to_string();
            let row: String = db
                .query_one(
                    &format!("SELECT to_json(p)::text FROM p WHERE id = {id}"),
                    &[],
                )
                .unwrap()
                .get(0);
            let want: Value = serde_json::from_str(&row).unwrap();
            assert_eq!(new, want, "{event}\n{report}");
        }
    };
    let first = events(&mut pipe, 3);
    check(&mut db, first, pipe.report());
    db.batch_execute(
        "ALTER TABLE p ADD COLUMN at timestamptz DEFAULT '2026-01-02 03:04:05+00';
         UPDATE p SET c = true WHERE id = 0;",
    )
    .unwrap();
    let last = events(&mut pipe, 1);
    assert!(last[0].1.get("at").is_some(), "{}", pipe.report());
    check(&mut db, last, pipe.report());
    pipe.expect_exit(0);
    assert!(!pipe.stderr().contains("--fetch"), "{}", pipe.report());
}

#[test]
fn the_first_event_after_a_server_restart_gets_its_row() {
    // The fetch connection dies with the server; the first batch after the restart finds
    // that out by its query, and is read again on a new connection, not left without rows.
    let server = Server::start();
    server.psql("CREATE TABLE r (id int PRIMARY KEY, note text)");
    server.watch_table(&["r"]);
    let mut pipe = fetching(&server, "r", 2);
    server.psql("INSERT INTO r VALUES (1, 'before')");
    assert_eq!(events(&mut pipe, 1)[0].1["note"], "before");
    server.pg_ctl(&["restart", "-m", "fast"]);
    pipe.wait_stderr("reconnected after");
    server.psql("INSERT INTO r VALUES (2, 'after')");
    let line = pipe.read_line();
    assert!(line.contains("\"gap\":\"reconnect\""), "{line}");
    assert_eq!(
        events(&mut pipe, 1)[0].1["note"],
        "after",
        "{}",
        pipe.report()
    );
    pipe.expect_exit(0);
    assert!(
        !pipe.stderr().contains("could not read rows"),
        "{}",
        pipe.stderr()
    );
}
