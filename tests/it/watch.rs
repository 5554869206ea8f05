//! `watch-table` and `--fetch` against a real server: the events of every op, what a rollback
//! sends, the install's idempotence and removal, privileges, hostile names and search paths.

use crate::support::{Running, Server};
use serde_json::{Value, json};

/// Every test of a watch runs twice: as it is, with row triggers (the default), and in
/// `auto_triggers` with `--triggers auto` added to every install, where pgnotify chooses
/// statement triggers with transition tables on a plain table with a key: both kinds must
/// send the same events.
macro_rules! also_with_auto_triggers {
    ($($name:ident),* $(,)?) => {
        mod auto_triggers {
            $(
                #[test]
                fn $name() {
                    crate::support::use_auto_triggers();
                    super::$name();
                }
            )*
        }
    };
}

/// Whether this run's watches on plain tables with a key have row triggers.
fn row_triggers_forced() -> bool {
    !crate::support::auto_triggers()
}

also_with_auto_triggers!(
    every_committed_change_sends_one_event_and_a_rollback_sends_nothing,
    installing_twice_is_installing_once_and_drop_leaves_the_database_as_it_was,
    list_shows_every_watch_and_print_sql_changes_nothing,
    awkward_and_hostile_names_are_quoted_never_spliced,
    a_20_kb_row_is_sent_as_its_key_and_the_write_succeeds,
    privileges_missing_give_the_servers_message_and_a_hint,
    a_writer_with_a_hostile_search_path_cannot_hijack_the_trigger,
    fetch_reads_rows_with_the_receivers_own_privileges,
    columns_and_keys_shape_the_row_images,
    an_interrupted_install_leaves_nothing,
    a_closed_stdout_ends_list_and_print_sql_quietly,
    fetch_and_data_carry_key_values_exactly,
    a_watch_a_non_owner_installed_says_exactly_who_can_remove_it,
    list_marks_a_watch_that_ddl_left_behind_as_stale_until_it_is_installed_again,
    no_ddl_on_a_watched_table_makes_a_write_fail,
    ddl_the_events_follow_sends_no_stale_events,
    a_renamed_or_moved_table_names_itself_in_every_kind_of_event,
    bulk_statements_send_every_row_in_order,
    an_update_that_changes_keys_pairs_old_and_new_rows,
    a_bulk_of_oversized_rows_sends_each_as_its_key,
    an_oversized_row_amid_a_statement_leaves_its_neighbours_whole_once_and_in_order,
    ddl_after_the_install_leaves_bulk_writes_working,
    partitions_and_inheritance_get_row_triggers_and_say_why,
    an_upsert_sends_the_same_events_grouped_by_operation_with_statement_triggers,
    a_partitioned_table_sends_row_events_from_every_partition_and_refuses_truncate,
    a_bulk_update_after_single_row_ones_in_one_session_stays_linear,
    a_truncate_only_watch_is_its_statement_trigger_alone,
);

/// Everything a watch could leave behind, as sorted text: triggers, functions outside the
/// system schemas, tables, and pgnotify's comments.
fn catalog(server: &Server) -> String {
    server
        .client()
        .query_one(
            "SELECT coalesce(string_agg(x, E'\\n' ORDER BY x), '') FROM (
               SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger
                WHERE NOT tgisinternal
               UNION ALL
               SELECT 'function ' || p.oid::regprocedure FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
               UNION ALL
               SELECT 'relation ' || c.oid::regclass FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%'
               UNION ALL
               SELECT 'comment ' || description FROM pg_description
                WHERE description LIKE 'pgnotify%') s(x)",
            &[],
        )
        .unwrap()
        .get(0)
}

/// A `pipe` on `channel` (with `extra` options), ready to receive `count` events: if they do
/// not all come within 20 s it exits, so a missing event fails the test instead of hanging it.
fn pipe(server: &Server, channel: &str, count: u32, extra: &[&str]) -> Running {
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", channel, "--timeout", "20s", "--count"])
        .arg(count.to_string())
        .args(extra)
        .spawn();
    pipe.wait_ready();
    pipe
}

/// The next record's payload, parsed.
fn event(pipe: &mut Running) -> Value {
    let record = pipe.read_record();
    serde_json::from_str(&record.payload)
        .unwrap_or_else(|e| panic!("payload {:?} is not JSON: {e}", record.payload))
}

#[test]
fn every_committed_change_sends_one_event_and_a_rollback_sends_nothing() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        .unwrap();
    server
        .pgnotify()
        .args(["watch-table", "orders"])
        .run()
        .success()
        .stderr_has("watching public.orders on channel \"orders\"");
    let mut pipe = pipe(&server, "orders", 6, &[]);
    // One call each: statements sent together would share one implicit transaction.
    for statement in [
        "INSERT INTO orders VALUES (1, 'new')",
        "UPDATE orders SET status = 'paid' WHERE id = 1",
        "UPDATE orders SET id = 2 WHERE id = 1",
        "BEGIN",
        "INSERT INTO orders VALUES (9, 'never')",
        "ROLLBACK",
        "DELETE FROM orders WHERE id = 2",
        "TRUNCATE orders",
    ] {
        db.batch_execute(statement).unwrap();
    }
    let head = |op: &str| json!({"op": op, "schema": "public", "table": "orders"});
    let with = |op: &str, extra: Value| {
        let mut v = head(op);
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(event(&mut pipe), with("INSERT", json!({"key": {"id": 1}})));
    assert_eq!(event(&mut pipe), with("UPDATE", json!({"key": {"id": 1}})));
    assert_eq!(
        event(&mut pipe),
        with("UPDATE", json!({"key": {"id": 2}, "old_key": {"id": 1}}))
    );
    // The rolled-back INSERT of 9 sent nothing: the DELETE comes next.
    assert_eq!(event(&mut pipe), with("DELETE", json!({"key": {"id": 2}})));
    assert_eq!(event(&mut pipe), with("TRUNCATE", json!({"key": null})));
    // The payload is compact JSON in a fixed member order, as documented.
    server
        .client()
        .execute("INSERT INTO orders VALUES (3, 'x')", &[])
        .unwrap();
    assert_eq!(
        pipe.read_record().payload,
        r#"{"op":"INSERT","schema":"public","table":"orders","key":{"id":3}}"#
    );
}

#[test]
fn installing_twice_is_installing_once_and_drop_leaves_the_database_as_it_was() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    let before = catalog(&server);
    server.watch_table(&["t"]);
    let installed = catalog(&server);
    server
        .pgnotify()
        .args(["watch-table", "t"])
        .run()
        .success()
        .stderr_has("nothing changed");
    assert_eq!(
        catalog(&server),
        installed,
        "the second install changed the catalog"
    );
    let triggers: &[&str] = match row_triggers_forced() {
        true => &["pgnotify_watch\n"],
        false => &[
            "pgnotify_watch_insert",
            "pgnotify_watch_update",
            "pgnotify_watch_delete",
        ],
    };
    for trigger in triggers {
        assert!(
            installed.contains(&format!("trigger t {trigger}")),
            "{installed}"
        );
    }
    assert!(
        installed.contains("trigger t pgnotify_watch_truncate"),
        "{installed}"
    );
    assert!(
        installed.contains("function pgnotify_watch_t()"),
        "{installed}"
    );

    // One event per change, not two.
    let mut listen = server
        .pgnotify()
        .args([
            "-v",
            "listen",
            "--json",
            "t",
            "--count",
            "2",
            "--timeout",
            "2s",
        ])
        .spawn();
    listen.wait_ready();
    db.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
    let rest = listen.expect_exit(124);
    assert_eq!(rest.lines().count(), 1, "{rest}");

    // Other options replace the watch: a TRUNCATE trigger is no longer wanted.
    server
        .pgnotify()
        .args([
            "watch-table",
            "t",
            "--events",
            "insert,delete",
            "--channel",
            "other",
        ])
        .run()
        .success();
    let replaced = catalog(&server);
    assert!(!replaced.contains("pgnotify_watch_truncate"), "{replaced}");
    assert!(replaced.contains(r#""channel":"other""#), "{replaced}");

    server.watch_table(&["t", "--drop"]);
    assert_eq!(catalog(&server), before);
    server
        .pgnotify()
        .args(["watch-table", "t", "--drop"])
        .run()
        .success()
        .stderr_has("not watched");
}

#[test]
fn list_shows_every_watch_and_print_sql_changes_nothing() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        r#"CREATE SCHEMA shop;
           CREATE TABLE shop.orders (id int PRIMARY KEY, status text, secret text);
           CREATE TABLE "Items" (a int, b text, PRIMARY KEY (b, a));
           CREATE TABLE later (id int PRIMARY KEY);"#,
    )
    .unwrap();
    server
        .pgnotify()
        .args([
            "watch-table",
            "shop.orders",
            "--rows",
            "--columns",
            "id,status",
        ])
        .run()
        .success()
        .stderr_has("any role that can connect");
    server
        .pgnotify()
        .args([
            "watch-table",
            "\"Items\"",
            "--events",
            "insert",
            "--channel",
            "items",
        ])
        .run()
        .success();
    let list = server.pgnotify().args(["watch-table", "--list"]).run();
    let rows: Vec<Value> = list
        .success()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert_eq!(rows[0]["schema"], "public");
    assert_eq!(rows[0]["table"], "Items");
    assert_eq!(rows[0]["channel"], "items");
    assert_eq!(rows[0]["events"], json!(["insert"]));
    assert_eq!(rows[0]["rows"], false);
    assert_eq!(rows[0]["key"], json!(["b", "a"]));
    assert_eq!(rows[1]["table"], "orders");
    assert_eq!(rows[1]["channel"], "orders");
    assert_eq!(rows[1]["rows"], true);
    assert_eq!(rows[1]["columns"], json!(["id", "status"]));
    let one = server
        .pgnotify()
        .args(["watch-table", "--list", "shop.orders"])
        .run();
    assert_eq!(one.success().stdout.lines().count(), 1, "{}", one.stdout);

    let before = catalog(&server);
    let printed = server
        .pgnotify()
        .args(["watch-table", "later", "--print-sql"])
        .run();
    printed.success();
    assert_eq!(catalog(&server), before, "--print-sql changed the database");
    assert!(printed.stdout.starts_with("BEGIN;") && printed.stdout.ends_with("COMMIT;\n"));
    // What was printed is what an install runs: applied by hand, it is a watch pgnotify knows.
    db.batch_execute(&printed.stdout).unwrap();
    server
        .pgnotify()
        .args(["watch-table", "later"])
        .run()
        .success()
        .stderr_has("nothing changed");
    let drop_sql = server
        .pgnotify()
        .args(["watch-table", "later", "--drop", "--print-sql"])
        .run();
    assert!(drop_sql.success().stdout.contains("DROP TRIGGER"));
    assert!(catalog(&server).contains("pgnotify_watch_later"));
}

#[test]
fn awkward_and_hostile_names_are_quoted_never_spliced() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        r#"CREATE TABLE x (id int);
           CREATE SCHEMA "My Schema";
           CREATE TABLE "My Schema"."Order ""Items""; DROP TABLE x; --" (
               "Id %s" int PRIMARY KEY, "we'ird\col" text);
           CREATE VIEW v AS SELECT 1 AS id;"#,
    )
    .unwrap();
    let table = r#""My Schema"."Order ""Items""; DROP TABLE x; --""#;
    let channel = "ch'); DROP TABLE x; -- \\ \"";
    server.watch_table(&[table, "--channel", channel, "--rows"]);
    let mut pipe = pipe(&server, channel, 1, &[]);
    db.execute(
        r#"INSERT INTO "My Schema"."Order ""Items""; DROP TABLE x; --" VALUES (7, 'a\b')"#,
        &[],
    )
    .unwrap();
    let record = pipe.read_record();
    assert_eq!(record.channel, channel);
    let event: Value = serde_json::from_str(&record.payload).unwrap();
    assert_eq!(event["schema"], "My Schema");
    assert_eq!(event["table"], "Order \"Items\"; DROP TABLE x; --");
    assert_eq!(
        event["key"],
        json!({"Id %s": 7}),
        "a format directive in a name"
    );
    assert_eq!(event["new"], json!({"Id %s": 7, "we'ird\\col": "a\\b"}));
    let exists: bool = db
        .query_one("SELECT to_regclass('x') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(exists, "table x was dropped");

    server
        .pgnotify()
        .args(["watch-table", "t; drop table x"])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("not a valid table name");
    server
        .pgnotify()
        .args(["watch-table", "nosuch.orders"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("\"nosuch.orders\" does not exist");
    server
        .pgnotify()
        .args(["watch-table", "v"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("is a view");
    server
        .pgnotify()
        .args(["watch-table", "x", "--channel", &"c".repeat(64)])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("64 bytes");
    server
        .pgnotify()
        .args(["watch-table", "x"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("has no primary key");
}

#[test]
fn a_20_kb_row_is_sent_as_its_key_and_the_write_succeeds() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE docs (id text PRIMARY KEY, body text)")
        .unwrap();
    server.watch_table(&["docs", "--rows"]);
    let mut pipe = pipe(&server, "docs", 2, &["--fetch"]);
    let body = "é".repeat(10_000);
    db.execute("INSERT INTO docs VALUES ('big', $1)", &[&body])
        .expect("the write must succeed");
    let record = pipe.read_record();
    let event: Value = serde_json::from_str(&record.payload).unwrap();
    assert_eq!(
        event,
        json!({"op": "INSERT", "schema": "public", "table": "docs",
               "key": {"id": "big"}, "truncated": true})
    );
    // --fetch reads what the payload could not carry.
    let data = record.data.expect("data");
    assert_eq!(data["new"]["body"].as_str().map(str::len), Some(20_000));

    // A key too long to send (control characters escape to six bytes each): the event still
    // goes out, without its key.
    let key = "\u{1}".repeat(2000);
    db.execute("INSERT INTO docs VALUES ($1, 'x')", &[&key])
        .expect("the write must succeed");
    assert_eq!(
        event_of(&pipe.read_record().payload),
        json!({"op": "INSERT", "schema": "public", "table": "docs", "key": null,
               "truncated": true})
    );
}

fn event_of(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap()
}

#[test]
fn privileges_missing_give_the_servers_message_and_a_hint() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY);
         CREATE ROLE clerk LOGIN;",
    )
    .unwrap();
    let before = catalog(&server);
    server
        .pgnotify()
        .args(["-U", "clerk", "watch-table", "orders"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("permission denied")
        .stderr_has("TRIGGER privilege");
    assert_eq!(catalog(&server), before, "a failed install left something");

    // Granted TRIGGER and CREATE, clerk installs; only the table's owner can remove it.
    db.batch_execute(
        "GRANT TRIGGER ON orders TO clerk;
         GRANT CREATE ON SCHEMA public TO clerk;",
    )
    .unwrap();
    server
        .pgnotify()
        .args(["-U", "clerk", "watch-table", "orders"])
        .run()
        .success();
    server
        .pgnotify()
        .args(["-U", "clerk", "watch-table", "orders", "--drop"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("needs ownership of table public.orders")
        .stderr_has("role \"clerk\" lacks the table's");
    server.watch_table(&["orders", "--drop"]);
}

#[test]
fn a_writer_with_a_hostile_search_path_cannot_hijack_the_trigger() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        r#"CREATE TABLE orders (id int PRIMARY KEY, note text);
           CREATE TABLE hijacked (what text);
           CREATE SCHEMA evil;
           CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE sql
             AS $$ INSERT INTO public.hijacked VALUES ('pg_notify') $$;
           CREATE FUNCTION evil.to_json(anyelement) RETURNS json LANGUAGE sql
             AS $$ INSERT INTO public.hijacked VALUES ('to_json') RETURNING '"evil"'::json $$;
           CREATE FUNCTION evil.concat(VARIADIC text[]) RETURNS text LANGUAGE sql
             AS $$ INSERT INTO public.hijacked VALUES ('concat') RETURNING 'evil' $$;
           CREATE FUNCTION evil.octet_length(text) RETURNS int LANGUAGE sql
             AS $$ INSERT INTO public.hijacked VALUES ('octet_length') RETURNING 1 $$;
           CREATE FUNCTION evil.texteq(text, text) RETURNS bool LANGUAGE sql
             AS $$ INSERT INTO public.hijacked VALUES ('=') RETURNING true $$;
           CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq);
           CREATE FUNCTION evil.intge(int, int) RETURNS bool LANGUAGE sql
             AS $$ INSERT INTO public.hijacked VALUES ('>=') RETURNING true $$;
           CREATE OPERATOR evil.>= (LEFTARG = int, RIGHTARG = int, FUNCTION = evil.intge);
           GRANT USAGE ON SCHEMA evil TO PUBLIC;"#,
    )
    .unwrap();
    server.watch_table(&["orders", "--rows"]);
    let mut pipe = pipe(&server, "orders", 3, &[]);
    db.batch_execute(
        "SET search_path = evil, pg_catalog, public;
         INSERT INTO public.orders VALUES (1, 'n');
         UPDATE public.orders SET note = 'm';
         UPDATE public.orders SET id = 2;",
    )
    .unwrap();
    assert_eq!(event(&mut pipe)["new"], json!({"id": 1, "note": "n"}));
    assert_eq!(event(&mut pipe)["old"], json!({"id": 1, "note": "n"}));
    let e = event(&mut pipe);
    assert_eq!(
        (&e["key"], &e["old_key"]),
        (&json!({"id": 2}), &json!({"id": 1}))
    );
    let hijacked: i64 = db
        .query_one("SELECT count(*) FROM public.hijacked", &[])
        .unwrap()
        .get(0);
    assert_eq!(hijacked, 0, "an evil function ran inside the trigger");
    let config: Vec<String> = db
        .query_one(
            "SELECT proconfig FROM pg_proc WHERE proname = 'pgnotify_watch_orders' AND NOT prosecdef",
            &[],
        )
        .unwrap()
        .get(0);
    let mut expected = vec!["search_path=pg_catalog, pg_temp"];
    if !row_triggers_forced() {
        // The statement function's join cannot be estimated: no JIT for it.
        expected.push("jit=off");
    }
    assert_eq!(config, expected);
}

#[test]
fn fetch_reads_rows_with_the_receivers_own_privileges() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text);
         CREATE TABLE secret (id int PRIMARY KEY, ssn text);
         CREATE ROLE reader LOGIN;
         GRANT SELECT ON orders TO reader;
         INSERT INTO secret VALUES (1, '111-22-3333');",
    )
    .unwrap();
    for table in ["orders", "secret"] {
        server.watch_table(&[table]);
    }
    let mut owner = pipe(&server, "orders", 6, &["--fetch"]);
    let mut reader = server
        .pgnotify()
        .args(["-U", "reader", "-v", "pipe", "orders", "secret", "--fetch"])
        .args(["--count", "7", "--timeout", "20s"])
        .spawn();
    reader.wait_ready();
    // One transaction: its events arrive once both are committed, so that neither can be
    // read before the UPDATE (as two commits, a fast receiver read the INSERT's row as 'new').
    db.batch_execute(
        "BEGIN; INSERT INTO orders VALUES (1, 'new'); UPDATE orders SET status = 'paid'; COMMIT;",
    )
    .unwrap();
    db.batch_execute(
        "BEGIN; INSERT INTO orders VALUES (2, 'gone'); DELETE FROM orders WHERE id = 2; COMMIT;",
    )
    .unwrap();
    // A forged event naming a table that is not watched on this channel is not fetched.
    server.notify(
        "orders",
        r#"{"op":"INSERT","schema":"public","table":"secret","key":{"id":1}}"#,
    );
    db.execute("UPDATE secret SET ssn = '999'", &[]).unwrap();
    db.execute("INSERT INTO orders VALUES (3, 'last')", &[])
        .unwrap();

    for pipe in [&mut owner, &mut reader] {
        let new = |r: crate::support::Record| r.data.and_then(|d| d.get("new").cloned());
        // The row as it is when read: both events of row 1 see it paid.
        let paid = json!({"id": 1, "status": "paid"});
        assert_eq!(new(pipe.read_record()), Some(paid.clone()));
        assert_eq!(new(pipe.read_record()), Some(paid));
        // Row 2 was deleted before anyone could read it.
        assert_eq!(new(pipe.read_record()), Some(Value::Null));
        assert_eq!(new(pipe.read_record()), Some(Value::Null));
        let forged = pipe.read_record();
        assert_eq!(forged.channel, "orders");
        assert_eq!(new(forged), None);
    }
    // The reader may not read secret: an error line, and the stream goes on.
    let secret = reader.read_record();
    assert_eq!(secret.channel, "secret");
    assert!(secret.data.unwrap().get("new").is_none());
    reader.wait_stderr("permission denied for table secret");
    let last = reader.read_record();
    assert_eq!(
        last.data.unwrap()["new"],
        json!({"id": 3, "status": "last"})
    );
    owner.wait_stderr("does not watch that table on that channel");
    assert_eq!(
        owner.read_record().data.unwrap()["new"],
        json!({"id": 3, "status": "last"})
    );
}

#[test]
fn columns_and_keys_shape_the_row_images() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text, c text);
         CREATE TABLE nokey (a int, b text);
         CREATE TABLE ident (code text NOT NULL, v int);
         CREATE UNIQUE INDEX ident_code ON ident (code);
         ALTER TABLE ident REPLICA IDENTITY USING INDEX ident_code;
         CREATE EXTENSION citext;
         CREATE TABLE ci (region citext, n int, v int, PRIMARY KEY (region, n));",
    )
    .unwrap();
    server.watch_table(&["t", "--rows", "--columns", "b,a"]);
    server.watch_table(&["nokey", "--rows", "--channel", "t"]);
    server.watch_table(&["ident", "--channel", "t"]);
    server.watch_table(&["ci", "--channel", "t"]);
    let mut pipe = pipe(&server, "t", 8, &[]);
    db.batch_execute(
        "INSERT INTO t VALUES (1, 'a1', NULL, 'c1');
         UPDATE t SET b = 'b2';
         DELETE FROM t;
         INSERT INTO nokey VALUES (5, 'five');
         INSERT INTO ident VALUES ('k', 1);
         INSERT INTO ci VALUES ('EU', 1, 0);
         UPDATE ci SET region = 'eu';
         UPDATE ci SET v = 1;",
    )
    .unwrap();
    let e = event(&mut pipe);
    assert_eq!(e["new"], json!({"b": null, "a": "a1"}));
    assert_eq!(
        serde_json::to_string(&e["new"]).unwrap(),
        r#"{"b":null,"a":"a1"}"#,
        "--columns order"
    );
    let e = event(&mut pipe);
    assert_eq!(e["old"], json!({"b": null, "a": "a1"}));
    assert_eq!(e["new"], json!({"b": "b2", "a": "a1"}));
    let e = event(&mut pipe);
    assert_eq!(e["old"], json!({"b": "b2", "a": "a1"}));
    assert!(e.get("new").is_none());
    let e = event(&mut pipe);
    assert_eq!((&e["table"], &e["key"]), (&json!("nokey"), &Value::Null));
    assert_eq!(e["new"], json!({"a": 5, "b": "five"}));
    let e = event(&mut pipe);
    assert_eq!(e["key"], json!({"code": "k"}));
    // citext's own `=` lives outside the trigger's search_path, and calls 'EU' and 'eu' equal:
    // the key is compared as text, so the change shows, and the write never fails.
    let e = event(&mut pipe);
    assert_eq!(e["key"], json!({"region": "EU", "n": 1}));
    let e = event(&mut pipe);
    assert_eq!(e["key"], json!({"region": "eu", "n": 1}));
    assert_eq!(e["old_key"], json!({"region": "EU", "n": 1}));
    let e = event(&mut pipe);
    assert_eq!(e["key"], json!({"region": "eu", "n": 1}));
    assert!(e.get("old_key").is_none(), "{e}");

    server
        .pgnotify()
        .args(["watch-table", "t", "--rows", "--columns", "id,nope"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("column \"nope\" does not exist");
    server
        .pgnotify()
        .args(["watch-table", "t", "--columns", "a"])
        .run()
        .code(2);
}

#[test]
fn an_interrupted_install_leaves_nothing() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    let before = catalog(&server);
    let mut locker = server.client();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut install = server
        .pgnotify()
        .args(["watch-table", "t"])
        .env("PGAPPNAME", "installer")
        .spawn();
    // The install has created its function and now waits for the table's lock.
    server.wait_until("the install to wait for the lock", || {
        server
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = 'installer' AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    install.signal(nix::sys::signal::Signal::SIGINT);
    install.expect_exit(130);
    lock.rollback().unwrap();
    server.wait_until("the installer's session to end", || {
        server.sessions("installer") == 0
    });
    assert_eq!(catalog(&server), before);
}

#[test]
fn a_closed_stdout_ends_list_and_print_sql_quietly() {
    let server = Server::start();
    let mut db = server.client();
    // Enough watches that --list writes well past its 8 KiB buffer before the last flush: the
    // first failed write is mid-list, not the final flush.
    let channel = "c".repeat(63);
    for i in 0..40 {
        let table = format!("a_rather_long_table_name_for_a_long_listing_{i:02}");
        db.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
            .unwrap();
        server
            .pgnotify()
            .args(["-q", "watch-table", &table, "--channel", &channel])
            .run()
            .success();
    }
    let listed = server.pgnotify().args(["watch-table", "--list"]).run();
    assert!(listed.success().stdout.len() > 9000, "{}", listed.report());
    // Not a terminal, so --list writes NDJSON (the table form is for terminals only).
    for args in [
        &["watch-table", "--list"][..],
        &[
            "watch-table",
            "a_rather_long_table_name_for_a_long_listing_00",
            "--print-sql",
        ],
    ] {
        let out = server.pgnotify().args(args).closed_stdout().run();
        out.success();
        assert_eq!(out.stderr, "", "{}", out.report());
    }
}

#[test]
fn fetch_and_data_carry_key_values_exactly() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE n (id numeric PRIMARY KEY, v text);
         INSERT INTO n VALUES (1, 'one'), (1.00000000000000001, 'almost one'),
                              (123456789012345678901234567890, 'thirty digits');
         CREATE TABLE b (id bigint PRIMARY KEY, v text);
         INSERT INTO b VALUES (9223372036854775807, 'max'), (-9223372036854775808, 'min');
         CREATE TABLE c (name text, at timestamptz, u uuid, v text, PRIMARY KEY (name, at, u));
         INSERT INTO c VALUES ('it''s \"quoted\"', '2026-01-02 03:04:05.678901+00',
                               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'composite');",
    )
    .unwrap();
    for table in ["n", "b", "c"] {
        server.watch_table(&[table, "--channel", "k"]);
    }
    let mut pipe = pipe(&server, "k", 6, &["--fetch"]);
    db.batch_execute(
        "UPDATE n SET v = v || '!' WHERE id = 1.00000000000000001;
         UPDATE n SET v = v || '!' WHERE id = 123456789012345678901234567890;
         UPDATE b SET v = v || '!';
         UPDATE c SET v = v || '!';",
    )
    .unwrap();
    // The lines as written: a number must keep every digit, in `key` and in the fetched row.
    let lines: Vec<String> = (0..5).map(|_| pipe.read_line()).collect();
    let expect = [
        r#""key":{"id":1.00000000000000001},"new":{"id":1.00000000000000001,"v":"almost one!"}"#,
        r#""new":{"id":123456789012345678901234567890,"v":"thirty digits!"}"#,
        r#""new":{"id":9223372036854775807,"v":"max!"}"#,
        r#""new":{"id":-9223372036854775808,"v":"min!"}"#,
        r#""v":"composite!"}"#,
    ];
    for (line, want) in lines.iter().zip(expect) {
        assert!(line.contains(want), "{want} not in {line}");
    }
    // --data keeps a number that no f64 holds exactly.
    server.notify("k", r#"{"big":18446744073709551616,"small":1e-400}"#);
    let line = pipe.read_line();
    assert!(
        line.contains(r#""data":{"big":18446744073709551616,"small":1e-400}"#),
        "{line}"
    );
    pipe.expect_exit(0);
}

#[test]
fn a_watch_a_non_owner_installed_says_exactly_who_can_remove_it() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE ROLE alice LOGIN; CREATE ROLE clerk LOGIN;
         GRANT CREATE ON SCHEMA public TO alice, clerk;
         SET ROLE alice; CREATE TABLE orders (id int PRIMARY KEY); RESET ROLE;
         GRANT TRIGGER ON orders TO clerk;",
    )
    .unwrap();
    let before = catalog(&server);
    // TRIGGER on the table and CREATE on the schema suffice to install, as the README says.
    let as_role = |role: &str, args: &[&str]| {
        server
            .pgnotify()
            .args(["-U", role, "watch-table", "orders"])
            .args(args)
            .run()
    };
    as_role("clerk", &[]).success();
    let installed = catalog(&server);
    // Neither the installer (it owns the function) nor the table's owner can remove it alone,
    // and each is told whom it needs, before anything is changed.
    for (role, args, lacks) in [
        ("clerk", &["--drop"][..], "lacks the table's"),
        ("alice", &["--drop"], "lacks the function's"),
        ("alice", &["--rows"], "lacks the function's"),
    ] {
        as_role(role, args)
            .code(1)
            .one_line_error()
            .stderr_has("owned by \"alice\"")
            .stderr_has("owned by \"clerk\"")
            .stderr_has(lacks);
        assert_eq!(
            catalog(&server),
            installed,
            "{role} {args:?} changed something"
        );
    }
    // A role that can act as both owners removes it, leaving nothing.
    as_role("postgres", &["--drop"]).success();
    assert_eq!(catalog(&server), before);
}

#[test]
fn a_partitioned_table_sends_row_events_from_every_partition_and_refuses_truncate() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE m (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);",
    )
    .unwrap();
    // A TRUNCATE of one partition would send nothing: not promised, so refused by default.
    server
        .pgnotify()
        .args(["watch-table", "m"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("is partitioned")
        .stderr_has("--events insert,update,delete");
    // Installed twice: the second changes nothing (the partitions' cloned triggers are not
    // another table's use of the function).
    for _ in 0..2 {
        server.watch_table(&["m", "--events", "insert,update,delete"]);
    }
    server
        .pgnotify()
        .args(["watch-table", "m1", "--drop"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("table public.m1 is a partition of m, which pgnotify watches");
    // A partition attached later gets the row trigger too; a detached one loses it.
    db.batch_execute(
        "CREATE TABLE m2 (id int PRIMARY KEY, v text);
         ALTER TABLE m ATTACH PARTITION m2 FOR VALUES FROM (100) TO (200);",
    )
    .unwrap();
    let mut pipe = pipe(&server, "m", 3, &[]);
    db.batch_execute(
        "INSERT INTO m VALUES (1, 'one'), (101, 'one hundred and one');
         ALTER TABLE m DETACH PARTITION m2;
         INSERT INTO m2 VALUES (102, 'detached');
         INSERT INTO m VALUES (2, 'two');",
    )
    .unwrap();
    // Events name the partition the row is in.
    let tables: Vec<(Value, Value)> = (0..3)
        .map(|_| {
            let e = event(&mut pipe);
            (e["table"].clone(), e["key"]["id"].clone())
        })
        .collect();
    assert_eq!(
        tables,
        [
            (json!("m1"), json!(1)),
            (json!("m2"), json!(101)),
            (json!("m1"), json!(2)),
        ]
    );
    pipe.expect_exit(0);
    // --list shows the table that was watched, not the partitions it reaches.
    let listed = server.pgnotify().args(["watch-table", "--list"]).run();
    let tables: Vec<Value> = listed
        .success()
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["table"].clone())
        .collect();
    assert_eq!(tables, [json!("m")], "{}", listed.report());
    let before_drop = catalog(&server);
    assert!(
        before_drop.contains("trigger m1 pgnotify_watch"),
        "{before_drop}"
    );
    server.watch_table(&["m", "--drop"]);
    let after = catalog(&server);
    assert!(!after.contains("pgnotify"), "{after}");
}

#[test]
fn list_marks_a_watch_that_ddl_left_behind_as_stale_until_it_is_installed_again() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, code text UNIQUE NOT NULL, v text);
         CREATE TABLE r (id int PRIMARY KEY, a text, b text);",
    )
    .unwrap();
    for args in [&["t"][..], &["r", "--rows", "--columns", "a"]] {
        server
            .pgnotify()
            .arg("watch-table")
            .args(args)
            .run()
            .success();
    }
    let stale = |server: &Server| -> Vec<(String, bool)> {
        let out = server.pgnotify().args(["watch-table", "--list"]).run();
        out.success()
            .stdout
            .lines()
            .map(|l| {
                let w: Value = serde_json::from_str(l).unwrap();
                (
                    w["table"].as_str().unwrap().to_owned(),
                    w["stale"] == json!(true),
                )
            })
            .collect()
    };
    assert_eq!(stale(&server), [("r".into(), false), ("t".into(), false)]);
    // Followed as they are: a new column, a new type, a new name.
    db.batch_execute(
        "ALTER TABLE t ADD COLUMN extra int; ALTER TABLE t ALTER COLUMN id TYPE bigint;
         ALTER TABLE t RENAME TO t2;",
    )
    .unwrap();
    assert_eq!(stale(&server), [("r".into(), false), ("t2".into(), false)]);
    // Left behind: a dropped image column, another primary key.
    db.batch_execute(
        "ALTER TABLE r DROP COLUMN a;
         ALTER TABLE t2 DROP CONSTRAINT t_pkey; ALTER TABLE t2 ADD PRIMARY KEY (code);",
    )
    .unwrap();
    assert_eq!(stale(&server), [("r".into(), true), ("t2".into(), true)]);
    // Installing again fits the watch to the table.
    server.watch_table(&["t2"]);
    server.watch_table(&["r", "--rows", "--columns", "b"]);
    assert_eq!(stale(&server), [("r".into(), false), ("t2".into(), false)]);
    let mut after = pipe(&server, "t2", 1, &[]);
    db.batch_execute("INSERT INTO t2 VALUES (1, 'a', 'x')")
        .unwrap();
    assert_eq!(event(&mut after)["key"], json!({"code": "a"}));
}

#[test]
fn no_ddl_on_a_watched_table_makes_a_write_fail() {
    // Every column the events name renamed or dropped, one after another: each write still
    // succeeds, and its event says "stale", with the key only while its columns are there.
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE ren (id int PRIMARY KEY, v text);
         CREATE TABLE img (id int PRIMARY KEY, a text, b text);
         INSERT INTO ren VALUES (1, 'one'); INSERT INTO img VALUES (1, 'a', 'b');",
    )
    .unwrap();
    for args in [&["ren"][..], &["img", "--rows", "--columns", "a"]] {
        server
            .pgnotify()
            .arg("watch-table")
            .args(args)
            .run()
            .success();
    }
    let mut ren = pipe(&server, "ren", 5, &[]);
    let mut img = pipe(&server, "img", 2, &[]);
    // A renamed key column: INSERT, UPDATE, DELETE all go through.
    db.batch_execute("ALTER TABLE ren RENAME COLUMN id TO ren_id")
        .unwrap();
    db.batch_execute(
        "INSERT INTO ren VALUES (2, 'two'); UPDATE ren SET v = 'uno' WHERE ren_id = 1;
         DELETE FROM ren WHERE ren_id = 2;",
    )
    .unwrap();
    for op in ["INSERT", "UPDATE", "DELETE"] {
        let e = event(&mut ren);
        assert_eq!(e["op"], op, "{e}");
        assert_eq!(e["key"], json!(null), "{e}");
        assert_eq!(e["stale"], json!(true), "{e}");
    }
    // A renamed table, on top: still followed.
    db.batch_execute("ALTER TABLE ren RENAME TO ren2; INSERT INTO ren2 VALUES (3, 'three')")
        .unwrap();
    let e = event(&mut ren);
    assert_eq!(e["table"], json!("ren2"), "{e}");
    // The key column dropped and another primary key: the events never carry a column the
    // watch was not installed to send (here the new key, v).
    db.batch_execute(
        "ALTER TABLE ren2 DROP COLUMN ren_id; ALTER TABLE ren2 ADD PRIMARY KEY (v);
         INSERT INTO ren2 VALUES ('four')",
    )
    .unwrap();
    let e = event(&mut ren);
    assert_eq!(
        (&e["key"], &e["stale"]),
        (&json!(null), &json!(true)),
        "{e}"
    );
    assert!(!e.to_string().contains("four"), "{e}");
    // A renamed --columns column, then a dropped one: images are left out, never guessed.
    db.batch_execute("ALTER TABLE img RENAME COLUMN a TO a2; UPDATE img SET b = 'c'")
        .unwrap();
    db.batch_execute("ALTER TABLE img DROP COLUMN a2; INSERT INTO img VALUES (2, 'x')")
        .unwrap();
    for (op, id) in [("UPDATE", 1), ("INSERT", 2)] {
        let e = event(&mut img);
        assert_eq!(e["op"], op, "{e}");
        assert_eq!(e["key"], json!({"id": id}), "{e}");
        assert_eq!(e["stale"], json!(true), "{e}");
        assert!(e.get("new").is_none() && e.get("old").is_none(), "{e}");
    }
    assert!(ren.wait().success() && img.wait().success());
    let list = server.pgnotify().args(["watch-table", "--list"]).run();
    for line in list.success().stdout.lines() {
        let w: Value = serde_json::from_str(line).unwrap();
        assert_eq!(w["stale"], json!(true), "{w}");
    }
    // Installed again, the watch fits the table: events are whole and not stale.
    server.watch_table(&["img", "--rows", "--columns", "b"]);
    let mut img = pipe(&server, "img", 1, &[]);
    db.batch_execute("UPDATE img SET b = 'd' WHERE id = 2")
        .unwrap();
    let e = event(&mut img);
    assert_eq!(e["new"], json!({"b": "d"}), "{e}");
    assert!(e.get("stale").is_none(), "{e}");
}

#[test]
fn ddl_the_events_follow_sends_no_stale_events() {
    // A new column, a key column's new type (to one with another text form), a renamed table:
    // the events stay as they were, with no "stale".
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    server.watch_table(&["t", "--rows"]);
    let mut t = pipe(&server, "t", 1, &[]);
    db.batch_execute(
        "ALTER TABLE t ADD COLUMN extra jsonb; ALTER TABLE t ALTER COLUMN id TYPE numeric;
         ALTER TABLE t RENAME TO t2; INSERT INTO t2 VALUES (1.50, 'x', '{\"a\": 1}');",
    )
    .unwrap();
    let e = event(&mut t);
    // The number exactly as the server wrote it: 1.50, not 1.5.
    assert_eq!(e["key"].to_string(), r#"{"id":1.50}"#, "{e}");
    assert_eq!(e["new"]["extra"], json!({"a": 1}), "{e}");
    assert_eq!(e["table"], "t2", "{e}");
    assert!(e.get("stale").is_none(), "{e}");
}

#[test]
fn a_renamed_or_moved_table_names_itself_in_every_kind_of_event() {
    // Statement triggers write the names the table had at the install into their fastest
    // query: after a rename or a move to another schema, every op, in single-row and bulk
    // statements, must name the table as it is now.
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA \"Other\"")
        .unwrap();
    server.watch_table(&["t"]);
    let mut t = pipe(&server, "t", 10, &[]);
    db.batch_execute(
        "ALTER TABLE t RENAME TO \"T 2\";
         INSERT INTO \"T 2\" VALUES (1, 'x');
         UPDATE \"T 2\" SET id = 2;
         ALTER TABLE \"T 2\" SET SCHEMA \"Other\";
         INSERT INTO \"Other\".\"T 2\" SELECT g, 'y' FROM generate_series(3, 5) g;
         UPDATE \"Other\".\"T 2\" SET v = 'z' WHERE id IN (2, 3);
         DELETE FROM \"Other\".\"T 2\" WHERE id IN (4, 5);
         DELETE FROM \"Other\".\"T 2\" WHERE id = 2;",
    )
    .unwrap();
    let expected = [
        ("INSERT", "public", json!({"id": 1}), None),
        ("UPDATE", "public", json!({"id": 2}), Some(json!({"id": 1}))),
        ("INSERT", "Other", json!({"id": 3}), None),
        ("INSERT", "Other", json!({"id": 4}), None),
        ("INSERT", "Other", json!({"id": 5}), None),
    ];
    for (op, schema, key, old_key) in expected {
        let e = event(&mut t);
        assert_eq!(
            (&e["op"], &e["schema"], &e["table"]),
            (&json!(op), &json!(schema), &json!("T 2")),
            "{e}"
        );
        assert_eq!(e["key"], key, "{e}");
        assert_eq!(e.get("old_key"), old_key.as_ref(), "{e}");
        assert!(e.get("stale").is_none(), "{e}");
    }
    // The UPDATE and the DELETEs: in scan order within a statement.
    let mut rest: Vec<(String, Value)> = (0..5)
        .map(|_| event(&mut t))
        .inspect(|e| {
            assert_eq!(
                (&e["schema"], &e["table"]),
                (&json!("Other"), &json!("T 2")),
                "{e}"
            );
            assert!(
                e.get("stale").is_none() && e.get("old_key").is_none(),
                "{e}"
            );
        })
        .map(|e| (e["op"].as_str().unwrap().to_owned(), e["key"].clone()))
        .collect();
    rest[..2].sort_by_key(|(_, k)| k.to_string());
    rest[2..4].sort_by_key(|(_, k)| k.to_string());
    let ops: Vec<(&str, Value)> = rest.iter().map(|(o, k)| (o.as_str(), k.clone())).collect();
    assert_eq!(
        ops,
        [
            ("UPDATE", json!({"id": 2})),
            ("UPDATE", json!({"id": 3})),
            ("DELETE", json!({"id": 4})),
            ("DELETE", json!({"id": 5})),
            ("DELETE", json!({"id": 2})),
        ]
    );
    t.expect_exit(0);
}

#[test]
fn an_oversized_row_amid_a_statement_leaves_its_neighbours_whole_once_and_in_order() {
    // Statement triggers send a statement's events from one query and, when one of them is
    // too big to send, take them all back and send them again, each checked: the small rows
    // on either side must arrive whole, once each, in order, for INSERT, UPDATE (a key change
    // among them) and DELETE alike.
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE docs (id text PRIMARY KEY, body text)")
        .unwrap();
    server.watch_table(&["docs", "--rows"]);
    let mut pipe = pipe(&server, "docs", 10, &[]);
    db.batch_execute(
        "INSERT INTO docs VALUES ('a', 'x'), ('big', repeat('é', 10000)), ('b', 'y');
         UPDATE docs SET id = id || '2';
         DELETE FROM docs;
         INSERT INTO docs VALUES ('end', 'x');",
    )
    .expect("the writes must succeed");
    let mut inserted = Vec::new();
    for _ in 0..3 {
        inserted.push(event(&mut pipe));
    }
    assert_eq!(inserted[0]["new"], json!({"id": "a", "body": "x"}));
    assert_eq!(
        inserted[1],
        json!({"op": "INSERT", "schema": "public", "table": "docs", "key": {"id": "big"},
               "truncated": true})
    );
    assert_eq!(inserted[2]["new"], json!({"id": "b", "body": "y"}));
    // An UPDATE and a DELETE meet the rows in scan order, which after the UPDATE is its own.
    let updated: Vec<Value> = (0..3).map(|_| event(&mut pipe)).collect();
    let deleted: Vec<Value> = (0..3).map(|_| event(&mut pipe)).collect();
    for e in &updated {
        let id = e["key"]["id"].as_str().unwrap_or_default().to_owned();
        let old = id.trim_end_matches('2');
        if e.get("truncated").is_some() {
            assert_eq!(
                *e,
                json!({"op": "UPDATE", "schema": "public", "table": "docs",
                       "key": {"id": "big2"}, "truncated": true})
            );
        } else {
            assert_eq!(e["old_key"], json!({"id": old}), "{e}");
            assert_eq!(e["old"]["id"], json!(old), "{e}");
            assert_eq!(e["new"]["id"], json!(id), "{e}");
        }
    }
    let keys = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["key"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut sorted = keys(&updated);
    sorted.sort();
    assert_eq!(sorted, ["a2", "b2", "big2"]);
    assert_eq!(
        keys(&deleted),
        keys(&updated),
        "a DELETE of all meets the rows in the same order"
    );
    for e in &deleted {
        assert_eq!(e["op"], "DELETE");
        assert_eq!(
            e.get("truncated").is_some(),
            e["key"]["id"] == "big2",
            "{e}"
        );
    }
    assert_eq!(event(&mut pipe)["key"], json!({"id": "end"}));
    pipe.expect_exit(0);
}

/// The payloads of the next `n` records.
fn payloads(pipe: &mut Running, n: usize) -> Vec<String> {
    (0..n).map(|_| pipe.read_record().payload).collect()
}

/// The table's keys in the order a sequential scan (and so a whole-table UPDATE or DELETE)
/// meets its rows.
fn scan_order(db: &mut postgres::Client, table: &str) -> Vec<i32> {
    db.query(&format!("SELECT id FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn bulk_statements_send_every_row_in_order() {
    // 10,000 rows a statement: one event per row, in the order the rows were changed, the
    // payloads byte for byte those of a row trigger (which the second run of this test uses).
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE b (id int PRIMARY KEY, v text);
         CREATE TABLE r (id int PRIMARY KEY, v text);",
    )
    .unwrap();
    let watched = server.pgnotify().args(["watch-table", "b"]).run();
    watched.success().stderr_has(match row_triggers_forced() {
        true => "; row triggers)",
        false => "; statement triggers)",
    });
    server.watch_table(&["r", "--rows", "--channel", "b"]);
    const N: i32 = 10_000;
    let mut pipe = pipe(&server, "b", 6 * N as u32 + 3, &["--on-overflow", "block"]);
    let key = |op: &str, table: &str, id: i32| {
        format!(r#"{{"op":"{op}","schema":"public","table":"{table}","key":{{"id":{id}}}"#)
    };
    let rows = "SELECT g, 'v' || g FROM generate_series(1, 10000) g";
    db.batch_execute(&format!("INSERT INTO b {rows}")).unwrap();
    let want: Vec<String> = (1..=N).map(|i| key("INSERT", "b", i) + "}").collect();
    assert_eq!(payloads(&mut pipe, N as usize), want);
    // In reverse order: the events follow the statement's order, not the key's.
    db.batch_execute(&format!("INSERT INTO r {rows} ORDER BY g DESC"))
        .unwrap();
    let want: Vec<String> = (1..=N)
        .rev()
        .map(|i| key("INSERT", "r", i) + &format!(r#","new":{{"id":{i},"v":"v{i}"}}}}"#))
        .collect();
    assert_eq!(payloads(&mut pipe, N as usize), want);

    let order = scan_order(&mut db, "b");
    db.batch_execute("UPDATE b SET v = v || '!'").unwrap();
    let want: Vec<String> = order.iter().map(|&i| key("UPDATE", "b", i) + "}").collect();
    assert_eq!(payloads(&mut pipe, N as usize), want);
    let order = scan_order(&mut db, "r");
    db.batch_execute("UPDATE r SET v = v || '!'").unwrap();
    let want: Vec<String> = order
        .iter()
        .map(|&i| {
            key("UPDATE", "r", i)
                + &format!(r#","old":{{"id":{i},"v":"v{i}"}},"new":{{"id":{i},"v":"v{i}!"}}}}"#)
        })
        .collect();
    assert_eq!(payloads(&mut pipe, N as usize), want);

    let order = scan_order(&mut db, "b");
    db.batch_execute("DELETE FROM b").unwrap();
    let want: Vec<String> = order.iter().map(|&i| key("DELETE", "b", i) + "}").collect();
    assert_eq!(payloads(&mut pipe, N as usize), want);
    let order = scan_order(&mut db, "r");
    db.batch_execute("DELETE FROM r").unwrap();
    let want: Vec<String> = order
        .iter()
        .map(|&i| key("DELETE", "r", i) + &format!(r#","old":{{"id":{i},"v":"v{i}!"}}}}"#))
        .collect();
    assert_eq!(payloads(&mut pipe, N as usize), want);

    // NOTIFY folds identical payloads of one transaction, as with row triggers: two key-only
    // UPDATEs of one row in one transaction arrive once; a statement changing no row sends
    // nothing.
    db.batch_execute(
        "INSERT INTO b VALUES (1, 'x');
         BEGIN; UPDATE b SET v = 'y'; UPDATE b SET v = 'z'; UPDATE b SET v = 'q' WHERE false;
         COMMIT;
         INSERT INTO b VALUES (2, 'last');",
    )
    .unwrap();
    assert_eq!(
        payloads(&mut pipe, 3),
        [
            key("INSERT", "b", 1) + "}",
            key("UPDATE", "b", 1) + "}",
            key("INSERT", "b", 2) + "}"
        ]
    );
    pipe.expect_exit(0);
}

#[test]
fn an_update_that_changes_keys_pairs_old_and_new_rows() {
    // Every row's key changes (and, in a table whose key is checked at commit, keys trade
    // places): each event carries its own row's old_key and images, in the statement's order.
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE k (id int PRIMARY KEY, v text);
         INSERT INTO k SELECT g, 'v' FROM generate_series(1, 10000) g;
         CREATE TABLE sw (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
         INSERT INTO sw SELECT g, 'v' || g FROM generate_series(1, 5) g;",
    )
    .unwrap();
    server.watch_table(&["k"]);
    server.watch_table(&["sw", "--rows", "--channel", "k"]);
    let mut pipe = pipe(&server, "k", 10_000 + 5 + 5, &["--on-overflow", "block"]);
    let order = scan_order(&mut db, "k");
    db.batch_execute("UPDATE k SET id = id + 100000").unwrap();
    let want: Vec<String> = order
        .iter()
        .map(|&i| {
            format!(
                r#"{{"op":"UPDATE","schema":"public","table":"k","key":{{"id":{}}},"old_key":{{"id":{i}}}}}"#,
                i + 100_000
            )
        })
        .collect();
    assert_eq!(payloads(&mut pipe, 10_000), want);

    // Keys trade places: 1 and 2 swap, the others keep theirs; then all shift by one.
    let event = |i: i32, new: i32, v: &str, nv: &str| {
        let old_key = match i == new {
            true => String::new(),
            false => format!(r#","old_key":{{"id":{i}}}"#),
        };
        format!(
            r#"{{"op":"UPDATE","schema":"public","table":"sw","key":{{"id":{new}}}{old_key},"old":{{"id":{i},"v":"{v}"}},"new":{{"id":{new},"v":"{nv}"}}}}"#
        )
    };
    let order = scan_order(&mut db, "sw");
    db.batch_execute(
        "UPDATE sw SET id = CASE id WHEN 1 THEN 2 WHEN 2 THEN 1 ELSE id END, v = v || '!'",
    )
    .unwrap();
    let swapped = |i: i32| match i {
        1 => 2,
        2 => 1,
        i => i,
    };
    let want: Vec<String> = order
        .iter()
        .map(|&i| event(i, swapped(i), &format!("v{i}"), &format!("v{i}!")))
        .collect();
    assert_eq!(payloads(&mut pipe, 5), want);
    let order = scan_order(&mut db, "sw");
    db.batch_execute("UPDATE sw SET id = id % 5 + 1").unwrap();
    let want: Vec<String> = order
        .iter()
        .map(|&i| {
            let v = format!("v{}!", swapped(i));
            event(i, i % 5 + 1, &v, &v)
        })
        .collect();
    assert_eq!(payloads(&mut pipe, 5), want);
}

#[test]
fn a_bulk_of_oversized_rows_sends_each_as_its_key() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE docs (id text PRIMARY KEY, body text)")
        .unwrap();
    server.watch_table(&["docs", "--rows"]);
    let mut pipe = pipe(&server, "docs", 103, &[]);
    // 100 rows of 20 KB, one small row between them, then two keys too long to send.
    db.batch_execute(
        "INSERT INTO docs SELECT 'big' || g, repeat('é', 10000) FROM generate_series(1, 50) g;
         INSERT INTO docs VALUES ('small', 'x');
         INSERT INTO docs SELECT 'big' || g, repeat('é', 10000) FROM generate_series(51, 100) g;",
    )
    .expect("the writes must succeed");
    for i in 1..=50 {
        assert_eq!(
            pipe.read_record().payload,
            format!(
                r#"{{"op":"INSERT","schema":"public","table":"docs","key":{{"id":"big{i}"}},"truncated":true}}"#
            )
        );
    }
    assert_eq!(event(&mut pipe)["new"], json!({"id": "small", "body": "x"}));
    for i in 51..=100 {
        assert_eq!(event(&mut pipe)["key"], json!({"id": format!("big{i}")}));
    }
    db.batch_execute(
        "INSERT INTO docs SELECT repeat(chr(1), 2000) || g, 'x' FROM generate_series(1, 2) g",
    )
    .expect("the write must succeed");
    // Both events are the same text: NOTIFY folds them into one, as with row triggers.
    assert_eq!(
        event(&mut pipe),
        json!({"op": "INSERT", "schema": "public", "table": "docs", "key": null,
               "truncated": true})
    );
    db.batch_execute("INSERT INTO docs VALUES ('end', 'x')")
        .unwrap();
    assert_eq!(event(&mut pipe)["key"], json!({"id": "end"}));
    pipe.expect_exit(0);
}

#[test]
fn ddl_after_the_install_leaves_bulk_writes_working() {
    // A renamed key column, then a renamed image column: bulk writes go through, and each row
    // gets its stale event.
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE ren (id int PRIMARY KEY, v text);
         CREATE TABLE img (id int PRIMARY KEY, a text, b text);",
    )
    .unwrap();
    server.watch_table(&["ren"]);
    server
        .pgnotify()
        .args([
            "watch-table",
            "img",
            "--rows",
            "--columns",
            "a",
            "--channel",
            "ren",
        ])
        .run()
        .success();
    let mut pipe = pipe(&server, "ren", 3 + 6, &[]);
    db.batch_execute(
        "ALTER TABLE ren RENAME COLUMN id TO ren_id;
         ALTER TABLE img RENAME COLUMN a TO a2;",
    )
    .unwrap();
    // The stale events of ren are identical, so each statement's arrive as one.
    for statement in [
        "INSERT INTO ren SELECT g, 'x' FROM generate_series(1, 3) g",
        "UPDATE ren SET v = 'y'",
        "DELETE FROM ren",
        "INSERT INTO img SELECT g, 'a', 'b' FROM generate_series(1, 2) g",
        "UPDATE img SET b = 'c'",
        "DELETE FROM img",
    ] {
        db.batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    for op in ["INSERT", "UPDATE", "DELETE"] {
        assert_eq!(
            event(&mut pipe),
            json!({"op": op, "schema": "public", "table": "ren", "key": null, "stale": true})
        );
    }
    for op in ["INSERT", "UPDATE", "DELETE"] {
        for id in [1, 2] {
            assert_eq!(
                event(&mut pipe),
                json!({"op": op, "schema": "public", "table": "img", "key": {"id": id},
                       "stale": true})
            );
        }
    }
}

#[test]
fn partitions_and_inheritance_get_row_triggers_and_say_why() {
    // Statement triggers would name the partitioned table rather than the partition, and miss
    // or add rows where inheritance is involved: pgnotify chooses row triggers there.
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE m (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100000);
         CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY) INHERITS (parent);
         CREATE TABLE plain (id int PRIMARY KEY);",
    )
    .unwrap();
    server
        .pgnotify()
        .args(["watch-table", "m", "--events", "insert,update,delete"])
        .run()
        .success()
        .stderr_has(match row_triggers_forced() {
            true => "; row triggers)",
            false => "; row triggers: it is partitioned)",
        });
    for table in ["parent", "child"] {
        server
            .pgnotify()
            .args(["watch-table", table, "--channel", "m"])
            .run()
            .success()
            .stderr_has(match row_triggers_forced() {
                true => "; row triggers)",
                false => "; row triggers: it is a partition or has inheritance",
            });
    }
    server.watch_table(&["plain", "--channel", "m"]);
    let mut pipe = pipe(&server, "m", 10_000 + 2, &["--on-overflow", "block"]);
    db.batch_execute("INSERT INTO m SELECT g, 'x' FROM generate_series(1, 10000) g")
        .unwrap();
    for i in 1..=10_000 {
        let e = event(&mut pipe);
        assert_eq!((&e["table"], &e["key"]["id"]), (&json!("m1"), &json!(i)));
    }
    // A statement on the parent: the child's row is the child's event only.
    db.batch_execute("INSERT INTO child VALUES (7); UPDATE parent SET id = 8")
        .unwrap();
    assert_eq!(event(&mut pipe)["table"], "child");
    let e = event(&mut pipe);
    assert_eq!(
        (&e["table"], &e["old_key"]),
        (&json!("child"), &json!({"id": 7}))
    );
    let kinds = |server: &Server| -> Vec<(String, String, bool)> {
        let out = server.pgnotify().args(["watch-table", "--list"]).run();
        out.success()
            .stdout
            .lines()
            .map(|l| {
                let w: Value = serde_json::from_str(l).unwrap();
                (
                    w["table"].as_str().unwrap().to_owned(),
                    w["triggers"].as_str().unwrap().to_owned(),
                    w["stale"] == json!(true),
                )
            })
            .collect()
    };
    let statement = match row_triggers_forced() {
        true => "row",
        false => "statement",
    };
    let kind = |t: &str, k: &str, stale| (t.to_owned(), k.to_owned(), stale);
    assert_eq!(
        kinds(&server),
        [
            kind("child", "row", false),
            kind("m", "row", false),
            kind("parent", "row", false),
            kind("plain", statement, false),
        ]
    );
    // A table watched with statement triggers that becomes a partition is stale: statements
    // on its new parent would not reach them. Installed again, it gets row triggers.
    db.batch_execute(
        "CREATE TABLE p2 (id int PRIMARY KEY) PARTITION BY RANGE (id);
         ALTER TABLE p2 ATTACH PARTITION plain FOR VALUES FROM (0) TO (10);",
    )
    .unwrap();
    assert_eq!(
        kinds(&server)[3],
        kind("plain", statement, statement == "statement")
    );
    server.watch_table(&["plain", "--channel", "m"]);
    assert_eq!(kinds(&server)[3], kind("plain", "row", false));
}

#[test]
fn an_upsert_sends_the_same_events_grouped_by_operation_with_statement_triggers() {
    // (With row triggers, in row order.)
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE u (id int PRIMARY KEY, v text); INSERT INTO u VALUES (1, 'a')")
        .unwrap();
    server.watch_table(&["u"]);
    let mut pipe = pipe(&server, "u", 3, &[]);
    db.batch_execute(
        "INSERT INTO u VALUES (0, 'z'), (1, 'b'), (2, 'c')
           ON CONFLICT (id) DO UPDATE SET v = excluded.v",
    )
    .unwrap();
    let got: Vec<(Value, Value)> = (0..3)
        .map(|_| {
            let e = event(&mut pipe);
            (e["op"].clone(), e["key"]["id"].clone())
        })
        .collect();
    let (insert, update) = (json!("INSERT"), json!("UPDATE"));
    // Row triggers send in row order; statement triggers fire once per operation, UPDATE first.
    let want = match row_triggers_forced() {
        true => [
            (insert.clone(), json!(0)),
            (update, json!(1)),
            (insert, json!(2)),
        ],
        false => [
            (update, json!(1)),
            (insert.clone(), json!(0)),
            (insert, json!(2)),
        ],
    };
    assert_eq!(got, want);
}

#[test]
fn a_bulk_update_after_single_row_ones_in_one_session_stays_linear() {
    // The statement function's queries are planned once per session and the plan kept for
    // statements of every size: one made while the tables held one row must not turn a later
    // 20,000-row UPDATE quadratic (a join on row numbers once did: 96 s).
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    server.watch_table(&["t", "--rows"]);
    for i in 1..=10 {
        db.execute("UPDATE t SET v = 1 WHERE id = $1", &[&i])
            .unwrap();
    }
    let started = std::time::Instant::now();
    db.batch_execute("BEGIN; UPDATE t SET v = 2; ROLLBACK")
        .unwrap();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_truncate_only_watch_is_its_statement_trigger_alone() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    server
        .pgnotify()
        .args(["watch-table", "t", "--events", "truncate"])
        .run()
        .success()
        .stderr_has("(truncate; key only; row triggers)");
    let mut pipe = pipe(&server, "t", 1, &[]);
    db.batch_execute("INSERT INTO t VALUES (1); TRUNCATE t")
        .unwrap();
    assert_eq!(
        event(&mut pipe),
        json!({"op": "TRUNCATE", "schema": "public", "table": "t", "key": null})
    );
    let listed = catalog(&server);
    assert!(
        listed.contains("trigger t pgnotify_watch_truncate"),
        "{listed}"
    );
    assert!(!listed.contains("trigger t pgnotify_watch\n"), "{listed}");
}
