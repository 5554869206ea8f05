//! Watched tables whose trigger no longer matches them (`watch-table --list`'s `problems`,
//! which `doctor` shows too): every kind of drift flagged with a fix that works when run as
//! written, a reinstall clearing it, and no false alarm on healthy tables with odd names.

use crate::support::Server;
use crate::support::terminal::Terminal;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `watch-table --list --json`, by table name: (kinds of problem, fixes, stale).
fn problems(server: &Server) -> BTreeMap<String, (Vec<String>, Vec<String>, bool)> {
    let out = server
        .pgnotify()
        .args(["watch-table", "--list", "--json"])
        .run();
    out.success()
        .stdout
        .lines()
        .map(|l| {
            let w: Value = serde_json::from_str(l).unwrap();
            let list = w["problems"].as_array().unwrap_or_else(|| panic!("{w}"));
            let field = |f: &str| -> Vec<String> {
                list.iter()
                    .map(|p| p[f].as_str().unwrap().to_owned())
                    .collect()
            };
            for p in list {
                let problem = p["problem"].as_str().unwrap();
                assert!(
                    !problem.is_empty() && !problem.contains('\n'),
                    "one sentence: {p}"
                );
            }
            (
                w["table"].as_str().unwrap().to_owned(),
                (field("kind"), field("fix"), w["stale"] == json!(true)),
            )
        })
        .collect()
}

/// The last `pgnotify ...` command a fix names between backticks (for a key gone for good:
/// the one without a key), run as written (through sh, with this server's connection options).
fn run_fix(server: &Server, fix: &str) {
    let command = fix
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| c.starts_with("pgnotify "))
        .last()
        .unwrap_or_else(|| panic!("no pgnotify command in {fix:?}"));
    let script = format!(
        "\"$PGNOTIFY\" \"$@\" {}",
        command.strip_prefix("pgnotify ").unwrap()
    );
    server.shell(&script).run().success();
}

#[test]
fn every_kind_of_drift_is_flagged_with_a_fix_that_clears_it() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE dropped_key (id int PRIMARY KEY, v text);
         CREATE TABLE renamed_key (id int PRIMARY KEY, v text);
         CREATE TABLE images (id int PRIMARY KEY, a text, b text);
         CREATE TABLE gained_key (id int NOT NULL, v text);
         CREATE TABLE lost_key (id int PRIMARY KEY, v text);
         CREATE TABLE other_key (id int PRIMARY KEY, code text NOT NULL);
         CREATE TABLE renamed (id int PRIMARY KEY);
         CREATE TABLE moved (id int PRIMARY KEY);
         CREATE TABLE disabled (id int PRIMARY KEY);
         CREATE TABLE missing (id int PRIMARY KEY);
         CREATE TABLE healthy (id int PRIMARY KEY);
         CREATE SCHEMA elsewhere;",
    )
    .unwrap();
    for args in [
        &["dropped_key"][..],
        &["renamed_key", "--events", "insert,update"],
        &["images", "--rows", "--columns", "a,b"],
        &["gained_key", "--rows"],
        &["lost_key"],
        &["other_key", "--channel", "keyed"],
        &["renamed"],
        &["moved"],
        &["disabled"],
        &["missing"],
        &["healthy"],
    ] {
        server.watch_table(args);
    }
    assert!(
        problems(&server)
            .values()
            .all(|(kinds, _, _)| kinds.is_empty()),
        "{:?}",
        problems(&server)
    );
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "--json", "dropped_key"])
        .spawn();
    listen.wait_ready();
    db.batch_execute(
        "ALTER TABLE dropped_key DROP COLUMN id;
         ALTER TABLE renamed_key RENAME COLUMN id TO ident;
         ALTER TABLE images DROP COLUMN a;
         ALTER TABLE gained_key ADD PRIMARY KEY (id);
         ALTER TABLE lost_key DROP CONSTRAINT lost_key_pkey;
         ALTER TABLE other_key DROP CONSTRAINT other_key_pkey;
         ALTER TABLE other_key ADD PRIMARY KEY (code);
         ALTER TABLE renamed RENAME TO renamed_now;
         ALTER TABLE moved SET SCHEMA elsewhere;
         ALTER TABLE disabled DISABLE TRIGGER USER;
         DROP TRIGGER pgnotify_watch_truncate ON missing;",
    )
    .unwrap();
    // A dropped key column does not make writes fail: the event says it is stale.
    db.batch_execute("INSERT INTO dropped_key VALUES ('still written')")
        .unwrap();
    let event: Value = serde_json::from_str(&listen.read_record().payload).unwrap();
    assert_eq!(
        (&event["op"], &event["key"], &event["stale"]),
        (&json!("INSERT"), &json!(null), &json!(true)),
        "{event}"
    );
    let found = problems(&server);
    let expect: [(&str, &str, bool, &str); 11] = [
        ("dropped_key", "key_column_gone", true, "add a primary key"),
        (
            "renamed_key",
            "key_column_gone",
            true,
            "watch-table public.renamed_key --events insert,update`",
        ),
        ("images", "image_column_gone", true, "--rows --columns b`"),
        (
            "gained_key",
            "key_changed",
            true,
            "watch-table public.gained_key --rows`",
        ),
        (
            "lost_key",
            "key_changed",
            true,
            "--rows` for events without a key",
        ),
        (
            "other_key",
            "key_changed",
            true,
            "watch-table public.other_key --channel keyed`",
        ),
        (
            "renamed_now",
            "renamed",
            false,
            "watch-table public.renamed_now --channel renamed`",
        ),
        ("moved", "moved", false, "watch-table elsewhere.moved`"),
        ("disabled", "trigger_disabled", false, "ENABLE TRIGGER"),
        (
            "missing",
            "trigger_missing",
            false,
            "watch-table public.missing`",
        ),
        ("healthy", "", false, ""),
    ];
    for (table, kind, stale, fix) in expect {
        let (kinds, fixes, is_stale) = &found[table];
        match kind {
            "" => assert!(kinds.is_empty(), "{table}: {kinds:?}"),
            // A disabled watch has both of its triggers disabled.
            _ => assert!(
                !kinds.is_empty() && kinds.iter().all(|k| k == kind),
                "{table}: {kinds:?}"
            ),
        }
        assert_eq!(*is_stale, stale, "{table}");
        assert!(fixes.iter().all(|f| f.contains(fix)), "{table}: {fixes:?}");
    }
    // Each fix, run as written, clears its drift (for a key gone for good: without a key).
    for (_, fixes, _) in found.values() {
        if let Some(fix) = fixes.first() {
            run_fix(&server, fix);
        }
    }
    let after = problems(&server);
    assert!(
        after
            .values()
            .all(|(kinds, _, stale)| kinds.is_empty() && !stale),
        "{after:?}"
    );
    // Reinstalled, the disabled triggers fire again and the renamed table keeps its channel.
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "--json", "disabled", "renamed"])
        .spawn();
    listen.wait_ready();
    db.batch_execute("INSERT INTO disabled VALUES (1); INSERT INTO renamed_now VALUES (2)")
        .unwrap();
    let channels = [listen.read_record().channel, listen.read_record().channel];
    assert_eq!(channels, ["disabled", "renamed"]);
}

#[test]
fn the_text_list_shows_each_problem_and_its_fix() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE \"Odd Table\" (id int PRIMARY KEY, v text)")
        .unwrap();
    server.watch_table(&["\"Odd Table\""]);
    db.batch_execute("ALTER TABLE \"Odd Table\" RENAME COLUMN id TO \"New Id\"")
        .unwrap();
    let term = Terminal::start(&server, &["watch-table", "--list"], &[]);
    assert_eq!(term.exit_status(), 0, "{}", term.report());
    let screen = term.screen();
    assert!(screen.contains("key (stale: see below)"), "{screen}");
    assert!(
        screen.contains("public.\"Odd Table\": key column \"id\" of public.\"Odd Table\" is gone"),
        "{screen}"
    );
    assert!(
        screen.contains("fix: run `pgnotify watch-table 'public.\"Odd Table\"'` to reinstall"),
        "{screen}"
    );
    // The fix, quoted for the shell, works as written.
    let found = problems(&server);
    run_fix(&server, &found["Odd Table"].1[0]);
    assert!(problems(&server)["Odd Table"].0.is_empty());
}

#[test]
fn healthy_tables_with_odd_names_and_keys_have_no_problems() {
    let server = Server::start();
    let long = "t".repeat(60);
    server
        .client()
        .batch_execute(&format!(
            "CREATE SCHEMA \"My Schema\";
             CREATE TABLE \"My Schema\".\"Order Items\" (
                 \"Order\" text, \"Line No\" uuid, \"It's\" numeric, PRIMARY KEY (\"Order\", \"Line No\"));
             CREATE TABLE \"MixedCase\" (\"Key\" numeric(10, 2) PRIMARY KEY, \"a b\" text);
             CREATE TABLE \"we\"\"ird\" (k text NOT NULL, v int);
             CREATE UNIQUE INDEX weird_k ON \"we\"\"ird\" (k);
             ALTER TABLE \"we\"\"ird\" REPLICA IDENTITY USING INDEX weird_k;
             CREATE TABLE {long} (id bigint PRIMARY KEY);
             CREATE TABLE nokey (v text);"
        ))
        .unwrap();
    for args in [
        &["\"My Schema\".\"Order Items\""][..],
        &[
            "\"MixedCase\"",
            "--rows",
            "--columns",
            "a b",
            "--channel",
            "Mixed Channel",
        ],
        &[
            "\"we\"\"ird\"",
            "--events",
            "insert,delete",
            "--triggers",
            "auto",
        ],
        &[&long],
        &["nokey", "--rows"],
    ] {
        server.watch_table(args);
    }
    let found = problems(&server);
    assert_eq!(found.len(), 5, "{found:?}");
    for (table, (kinds, _, stale)) in &found {
        assert!(kinds.is_empty() && !stale, "{table}: {kinds:?}");
    }
}

#[test]
fn a_fix_for_hostile_names_runs_only_pgnotify_and_clears_the_drift() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let pwn = |n: u32| dir.path().join(format!("pwn{n}")).display().to_string();
    let tables = [
        format!("a'; touch {}; '", pwn(1)),
        format!("$(touch {})", pwn(2)),
        format!("`touch {}`", pwn(3)),
        "dashed".to_owned(),
        "Mixed \"Case\" Ünï".to_owned(),
    ];
    let mut db = server.client();
    for table in &tables {
        let quoted = table.replace('"', "\"\"");
        db.batch_execute(&format!(
            "CREATE TABLE \"{quoted}\" (id int, k2 text, PRIMARY KEY (id, k2))"
        ))
        .unwrap();
        let name = format!("\"{quoted}\"");
        match table.as_str() {
            // A channel that looks like an option.
            "dashed" => server.watch_table(&[&name, "--channel=-dash"]),
            _ => server.watch_table(&[&name, "--channel", table]),
        }
        // One column of the composite key renamed.
        db.batch_execute(&format!(
            "ALTER TABLE \"{quoted}\" RENAME COLUMN k2 TO \"K 2\""
        ))
        .unwrap();
    }
    let found = problems(&server);
    for table in &tables {
        let (kinds, fixes, _) = &found[table.as_str()];
        assert_eq!(kinds, &["key_column_gone"], "{table}: {kinds:?}");
        // Taken whole (a name may hold a backtick): "run `COMMAND` to reinstall".
        let command = fixes[0]
            .strip_prefix("run `pgnotify ")
            .and_then(|f| f.strip_suffix("` to reinstall"))
            .unwrap_or_else(|| panic!("{table}: {fixes:?}"));
        server
            .shell(&format!("\"$PGNOTIFY\" \"$@\" {command}"))
            .run()
            .success();
    }
    for n in 1..=3 {
        assert!(
            !std::path::Path::new(&pwn(n)).exists(),
            "the fix ran something else than pgnotify"
        );
    }
    let after = problems(&server);
    for table in &tables {
        assert!(after[table.as_str()].0.is_empty(), "{table}: {after:?}");
    }
    // The channel that looks like an option is kept.
    let out = server
        .pgnotify()
        .args(["watch-table", "--list", "--json", "dashed"])
        .run();
    assert!(
        out.success().stdout.contains("\"-dash\""),
        "{}",
        out.report()
    );
}

#[test]
fn a_watched_table_locked_by_another_transaction_does_not_hang_the_list_or_doctor() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE locked (id int PRIMARY KEY)")
        .unwrap();
    server.watch_table(&["locked"]);
    let mut holder = server.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = std::time::Instant::now();
    let list = server
        .pgnotify()
        .args(["watch-table", "--list", "--json"])
        .run();
    list.success();
    assert!(list.stdout.contains("\"locked\""), "{}", list.report());
    let doctor = server.pgnotify().args(["doctor", "--json"]).run();
    assert!(
        doctor.stdout.contains("public.locked"),
        "{}",
        doctor.report()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    holder.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn replica_triggers_and_mixed_case_renames_and_moves_are_flagged_and_fixed() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute(
        "CREATE TABLE \"Replica\" (id int PRIMARY KEY);
         CREATE TABLE \"Old Name\" (id int PRIMARY KEY);
         CREATE TABLE \"Mover\" (id int PRIMARY KEY);
         CREATE SCHEMA \"New Home\";
         CREATE TABLE parted (id int, region text, PRIMARY KEY (id, region))
             PARTITION BY LIST (region);
         CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
         CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');",
    )
    .unwrap();
    for t in ["\"Replica\"", "\"Old Name\"", "\"Mover\""] {
        server.watch_table(&[t]);
    }
    server.watch_table(&["parted", "--events", "insert,update,delete"]);
    db.batch_execute(
        "ALTER TABLE \"Replica\" ENABLE REPLICA TRIGGER pgnotify_watch;
         ALTER TABLE \"Old Name\" RENAME TO \"New Name\";
         ALTER TABLE \"Mover\" SET SCHEMA \"New Home\";
         ALTER TABLE parted DETACH PARTITION parted_us;",
    )
    .unwrap();
    let found = problems(&server);
    assert_eq!(found["Replica"].0, ["trigger_disabled"], "{found:?}");
    assert_eq!(found["New Name"].0, ["renamed"], "{found:?}");
    assert_eq!(found["Mover"].0, ["moved"], "{found:?}");
    assert!(found["parted"].0.is_empty(), "{found:?}");
    for table in ["Replica", "New Name", "Mover"] {
        run_fix(&server, &found[table].1[0]);
    }
    let after = problems(&server);
    assert!(
        after.values().all(|(kinds, _, _)| kinds.is_empty()),
        "{after:?}"
    );
    // The renamed table keeps its channel, the moved one its own.
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "--json", "Old Name", "Mover", "Replica"])
        .spawn();
    listen.wait_ready();
    db.batch_execute(
        "INSERT INTO \"New Name\" VALUES (1); INSERT INTO \"New Home\".\"Mover\" VALUES (2); \
         INSERT INTO \"Replica\" VALUES (3)",
    )
    .unwrap();
    let channels = [
        listen.read_record().channel,
        listen.read_record().channel,
        listen.read_record().channel,
    ];
    assert_eq!(channels, ["Old Name", "Mover", "Replica"]);
}

#[test]
fn the_text_list_on_a_terminal_escapes_hostile_names_and_their_drift() {
    let server = Server::start();
    let mut db = server.client();
    db.batch_execute("CREATE TABLE \"red\x1b[31mtable\" (\"k\x1b[2Jey\" int PRIMARY KEY, v text)")
        .unwrap();
    server.watch_table(&["\"red\x1b[31mtable\"", "--channel", "ch\x1b[32man"]);
    db.batch_execute("ALTER TABLE \"red\x1b[31mtable\" RENAME COLUMN \"k\x1b[2Jey\" TO k2")
        .unwrap();
    let term = Terminal::start(&server, &["watch-table", "--list"], &[]);
    assert_eq!(term.exit_status(), 0, "{}", term.report());
    let screen = term.screen_with_escapes();
    // Only tmux's own SGR reset may appear: nothing the names held.
    assert!(
        !screen.contains("\x1b[31m") && !screen.contains("\x1b[32m"),
        "{screen}"
    );
    let plain = term.screen();
    assert!(plain.contains("red\\x1b[31mtable"), "{plain}");
    assert!(plain.contains("k\\x1b[2Jey"), "{plain}");
}

#[test]
fn a_fix_for_a_name_with_control_characters_shows_none_and_names_the_table_when_run() {
    let server = Server::start();
    let mut db = server.client();
    let table = "line\nbreak\x1b[31m% \\ 'q'";
    let quoted = format!("\"{table}\"");
    db.batch_execute(&format!(
        "CREATE TABLE {quoted} (id int PRIMARY KEY, v text)"
    ))
    .unwrap();
    server.watch_table(&[&quoted, "--channel", "ctl\x07chan"]);
    db.batch_execute(&format!("ALTER TABLE {quoted} RENAME COLUMN id TO ident"))
        .unwrap();
    let found = problems(&server);
    let fix = &found[table].1[0];
    assert!(!fix.chars().any(char::is_control), "{fix:?}");
    let command = fix
        .strip_prefix("run `pgnotify ")
        .and_then(|f| f.strip_suffix("` to reinstall"))
        .unwrap_or_else(|| panic!("{fix:?}"));
    server
        .shell(&format!("\"$PGNOTIFY\" \"$@\" {command}"))
        .run()
        .success();
    let after = problems(&server);
    assert!(after[table].0.is_empty(), "{after:?}");
    let out = server
        .pgnotify()
        .args(["watch-table", "--list", "--json"])
        .run();
    assert!(
        out.success().stdout.contains("ctl\\u0007chan"),
        "{}",
        out.report()
    );
}
