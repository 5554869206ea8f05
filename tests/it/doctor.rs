//! `pgnotify doctor`: each check against a real server in the state it diagnoses (a
//! transaction pooler, a standby, a held transaction, TLS), and its promises attacked: a
//! password from every source never printed, server text with escapes, odd channel names.

use crate::support::pgbouncer::PgBouncer;
use crate::support::{PATIENCE, Server};
use pgnotify::tempdb;
use serde_json::Value;

/// doctor's JSON document, checked for its shape.
fn report(stdout: &str) -> Value {
    let doc: Value = serde_json::from_str(stdout.trim_end())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"));
    assert_eq!(doc["doctor"], 1, "{doc}");
    assert!(doc["checks"].is_array(), "{doc}");
    for check in doc["checks"].as_array().unwrap() {
        for field in ["name", "status", "detail", "notes", "fix"] {
            assert!(check.get(field).is_some(), "{field} missing in {check}");
        }
        let status = check["status"].as_str().unwrap();
        assert!(["ok", "warning", "problem"].contains(&status), "{check}");
        if status != "ok" {
            assert!(
                check["fix"].is_string() || check["name"] == "settings",
                "no fix: {check}"
            );
        }
    }
    doc
}

/// The text report with its wrapping undone: every run of whitespace one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {doc}"))
}

#[test]
fn a_healthy_server_exits_0_and_every_check_is_there() {
    let server = Server::start();
    let out = server.pgnotify().args(["doctor", "--json"]).run();
    out.success();
    let doc = report(&out.stdout);
    assert_eq!(doc["exit"], 0);
    for name in [
        "settings",
        "password",
        "server",
        "tls",
        "listen",
        "notify_round_trip",
        "queue",
        "idle_in_transaction",
        "idle_timeouts",
        "watched_tables",
    ] {
        assert_eq!(check(&doc, name)["status"], "ok", "{name}: {doc}");
    }
    let round = check(&doc, "notify_round_trip");
    assert_eq!(round["data"]["came_back"], true);
    assert_eq!(round["data"]["second_connection_held_a_transaction"], true);
    let settings = check(&doc, "settings")["data"].as_array().unwrap().clone();
    let source = |key: &str| {
        settings
            .iter()
            .find(|s| s["key"] == key)
            .map(|s| s["source"].as_str().unwrap().to_owned())
    };
    assert_eq!(source("host").as_deref(), Some("flag -h"), "{doc}");
    assert_eq!(source("port").as_deref(), Some("flag -p"));
    assert_eq!(source("user").as_deref(), Some("flag -U"));
    assert_eq!(source("application_name").as_deref(), Some("default"));
    assert_eq!(check(&doc, "password")["data"]["source"], "none");
    // The text report says the same, aligned, with no colour into a pipe.
    let text = server.pgnotify().arg("doctor").run();
    text.success();
    assert!(!flat(&text.stdout).contains('\x1b'), "{}", text.report());
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{:30}host{:14}", "", ""))),
        "{}",
        text.report()
    );
    assert!(
        text.stdout.ends_with("healthy: no problem found\n"),
        "{}",
        text.report()
    );
}

#[test]
fn settings_from_the_environment_a_uri_and_a_service_file_are_told_apart() {
    let server = Server::start();
    let service = server.home.path().join("services.conf");
    std::fs::write(
        &service,
        format!(
            "[shop]\nhost={}\nport={}\n",
            server.cluster.socket_dir().display(),
            server.cluster.port()
        ),
    )
    .unwrap();
    let out = server
        .bare()
        .env("PGSERVICEFILE", &service)
        .env("PGAPPNAME", "from-env")
        .args([
            "-d",
            "postgres://postgres@/postgres?service=shop",
            "doctor",
            "--json",
        ])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let data = check(&doc, "settings")["data"].clone();
    let source = |key: &str| {
        data.as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .map(|s| s["source"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(source("host"), "service \"shop\"", "{doc}");
    assert_eq!(source("port"), "service \"shop\"");
    assert_eq!(source("user"), "-d connection string");
    assert_eq!(source("service"), "-d connection string");
    assert_eq!(source("application_name"), "environment PGAPPNAME");
}

/// A server that wants a password over TCP (SCRAM), for the password tests.
fn password_server(password: &str) -> Server {
    let server = Server::start_with(&tempdb::Options {
        hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    server.psql(&format!(
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '{password}'"
    ));
    server
}

#[test]
fn a_password_from_any_source_is_named_and_never_printed() {
    let secret = "S3cr3t-doctor-pw";
    let server = password_server(secret);
    let port = server.cluster.port().to_string();
    let tcp = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let service = server.home.path().join("services.conf");
    std::fs::write(&service, format!("[pw]\npassword={secret}\n")).unwrap();
    let pgpass = server.home.path().join(".pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{port}:*:postgres:{secret}\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let with_password = format!("{tcp} password={secret}");
    let with_service = format!("{tcp} service=pw");
    // What, the environment, the -d argument, and the source doctor must name.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, &'a str);
    let cases: Vec<Case> = vec![
        (
            "PGPASSWORD",
            vec![("PGPASSWORD", secret.to_owned())],
            tcp.clone(),
            "environment PGPASSWORD",
        ),
        ("conninfo", vec![], with_password, "-d connection string"),
        (
            "URI",
            vec![],
            format!("postgresql://postgres:{secret}@127.0.0.1:{port}/postgres"),
            "-d connection string",
        ),
        (
            "service",
            vec![("PGSERVICEFILE", service.display().to_string())],
            with_service,
            "service \"pw\"",
        ),
        (
            "pgpass",
            vec![("PGPASSFILE", pgpass.display().to_string())],
            tcp.clone(),
            "password file",
        ),
    ];
    for (what, env, conninfo, source) in cases {
        for json in [false, true] {
            let mut cmd = server.bare();
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd.args(["-d", &conninfo, "doctor"]);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.run();
            assert!(out.status.code() == Some(0), "{what}: {}", out.report());
            assert!(
                !flat(&out.stdout).contains(secret),
                "{what}: the password was printed{}",
                out.report()
            );
            assert!(
                !out.stderr.contains(secret),
                "{what}: the password was printed{}",
                out.report()
            );
            let named = match json {
                true => source.replace('"', "\\\""),
                false => source.to_owned(),
            };
            assert!(
                flat(&out.stdout).contains(&named),
                "{what}: {source} not named{}",
                out.report()
            );
        }
    }
    // Typed at the prompt (a real terminal): named, never echoed or printed.
    let out = server
        .typing_password("postgres", secret)
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .args(["-W", "-d", &tcp, "doctor"])
        .run();
    assert!(out.stdout.starts_with("exit 0"), "{}", out.report());
    assert!(
        flat(&out.stdout).contains("typed at the prompt"),
        "{}",
        out.report()
    );
    assert!(
        !flat(&out.stdout).contains(secret),
        "the typed password was printed{}",
        out.report()
    );
}

#[test]
fn a_password_on_the_command_line_is_a_warning_with_its_fix() {
    let secret = "on-the-cmdline";
    let server = password_server(secret);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres password={secret}",
        server.cluster.port()
    );
    let out = server
        .bare()
        .args(["-d", &conninfo, "doctor", "--json"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let pw = check(&doc, "password");
    assert_eq!(pw["status"], "warning", "{doc}");
    assert!(pw["fix"].as_str().unwrap().contains("PGPASSWORD"), "{doc}");
    assert!(!flat(&out.stdout).contains(secret));
}

#[test]
fn through_pgbouncer_in_transaction_mode_doctor_names_the_pooler_and_its_fix() {
    let server = Server::start();
    let bouncer = PgBouncer::start(&server, "transaction");
    let out = server
        .through(&bouncer.port.to_string())
        .arg("doctor")
        .run();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        out.report(),
        bouncer.log_tail()
    );
    assert!(
        flat(&out.stdout).contains("problem notify_round_trip"),
        "{}",
        out.report()
    );
    assert!(
        flat(&out.stdout).contains("transaction-pooling proxy"),
        "{}",
        out.report()
    );
    assert!(
        flat(&out.stdout).contains("fix: Listen through session pooling"),
        "{}",
        out.report()
    );
    let json = server
        .through(&bouncer.port.to_string())
        .args(["doctor", "--json", "jobs"])
        .run();
    let doc = report(&json.stdout);
    let round = check(&doc, "notify_round_trip");
    assert_eq!(round["status"], "problem", "{doc}");
    assert_eq!(round["data"]["pooled"], true, "{doc}");
    // The channel's test notification may come back by luck (one client, one server
    // connection): never an ok through a transaction pooler.
    assert_ne!(check(&doc, "channel")["status"], "ok", "{doc}");
    assert_ne!(
        round["data"]["backend_pid_before"], round["data"]["backend_pid_after"],
        "{doc}"
    );
    assert_eq!(doc["exit"], 1);
}

#[test]
fn through_pgbouncer_in_session_mode_doctor_is_healthy() {
    let server = Server::start();
    let bouncer = PgBouncer::start(&server, "session");
    let out = server
        .through(&bouncer.port.to_string())
        .args(["doctor", "--json", "jobs"])
        .run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        out.report(),
        bouncer.log_tail()
    );
    let doc = report(&out.stdout);
    assert_eq!(check(&doc, "notify_round_trip")["status"], "ok", "{doc}");
    assert_eq!(check(&doc, "channel")["status"], "ok", "{doc}");
}

/// The heartbeat through a transaction pooler: once another client holds a transaction (and
/// with it the server connection that ran LISTEN), the heartbeat's notification does not come
/// back, and stderr says so, naming the pooler and `pgnotify doctor`.
#[test]
fn listen_through_pgbouncer_in_transaction_mode_says_notifications_do_not_come_back() {
    let server = Server::start();
    let bouncer = PgBouncer::start(&server, "transaction");
    let port = bouncer.port.to_string();
    let mut listen = server
        .through(&port)
        .args(["-v", "listen", "--heartbeat", "1s", "jobs"])
        .spawn();
    listen.wait_ready();
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let mut holder = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
    holder.batch_execute("BEGIN; SELECT 1").unwrap();
    let line = listen.wait_stderr("did not come back");
    assert!(
        line.contains("transaction pooler"),
        "{line}\n{}",
        listen.report()
    );
    assert!(
        line.contains("pgnotify doctor"),
        "{line}\n{}",
        listen.report()
    );
    holder.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn a_standby_is_a_problem_with_the_fix_to_reach_the_primary() {
    let primary = Server::start();
    let standby = primary.standby();
    let out = standby.pgnotify().args(["doctor", "jobs"]).run();
    assert_eq!(out.status.code(), Some(1), "{}", out.report());
    assert!(
        flat(&out.stdout).contains("problem listen"),
        "{}",
        out.report()
    );
    assert!(
        flat(&out.stdout).contains("hot standby"),
        "{}",
        out.report()
    );
    assert!(
        flat(&out.stdout).contains("target_session_attrs=read-write"),
        "{}",
        out.report()
    );
    assert!(
        !flat(&out.stdout).contains("notify_round_trip"),
        "{}",
        out.report()
    );
    assert!(
        flat(&out.stdout).contains("problem channel jobs"),
        "{}",
        out.report()
    );
}

/// A session held in `BEGIN; SELECT 1`, by a role whose name holds escapes (the server itself
/// turns them into `?` in an application name): named by its pid, application and (escaped)
/// role in the text, exact in the JSON, and the queue's real figure.
#[test]
fn a_session_idle_in_a_transaction_is_named_with_its_pid_and_application() {
    let server = Server::start();
    let app = "held-by-the-test";
    let role = "evil\x1b[31mrole\nline2";
    server.psql(&format!("CREATE ROLE \"{role}\" LOGIN SUPERUSER",));
    let mut holder = postgres::Config::new()
        .host_path(server.cluster.socket_dir())
        .port(server.cluster.port())
        .user(role)
        .dbname("postgres")
        .application_name(app)
        .connect(postgres::NoTls)
        .unwrap();
    holder.batch_execute("LISTEN held").unwrap();
    holder.batch_execute("BEGIN; SELECT 1").unwrap();
    let pid: i32 = server
        .psql("SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction'")
        .trim()
        .parse()
        .unwrap();
    // Notifications the held listener cannot read keep the queue from emptying.
    let mut sender = server.client();
    for i in 0..200 {
        sender
            .execute("SELECT pg_notify('held', $1)", &[&format!("{i:0>4000}")])
            .unwrap();
    }
    let out = server.pgnotify().arg("doctor").run();
    out.success();
    assert!(
        flat(&out.stdout).contains("warning idle_in_transaction"),
        "{}",
        out.report()
    );
    let named = format!("pid {pid}, application \"{app}\", user \"evil\\x1b[31mrole\\nline2\"");
    assert!(flat(&out.stdout).contains(&named), "{}", out.report());
    assert!(
        !flat(&out.stdout).contains('\x1b'),
        "a raw escape reached the report{}",
        out.report()
    );
    assert!(
        flat(&out.stdout).contains("idle_in_transaction_session_timeout"),
        "{}",
        out.report()
    );
    let json = server.pgnotify().args(["doctor", "--json"]).run();
    let doc = report(&json.stdout);
    let idle = check(&doc, "idle_in_transaction");
    assert_eq!(idle["data"][0]["pid"], pid, "{doc}");
    assert_eq!(idle["data"][0]["application_name"], app, "{doc}");
    assert_eq!(idle["data"][0]["user"], role, "{doc}");
    let usage = check(&doc, "queue")["data"]["usage"].as_f64().unwrap();
    let real: f64 = server
        .psql("SELECT pg_notification_queue_usage()")
        .trim()
        .parse()
        .unwrap();
    assert!(
        usage > 0.0,
        "the held listener keeps the queue from emptying: {doc}"
    );
    assert_eq!(usage, real, "{doc}");
    assert_eq!(check(&doc, "queue")["status"], "ok", "far below 50%");
    holder.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn odd_channels_come_back_and_their_listeners_are_seen() {
    let server = Server::start();
    let odd = "Odd \"ch\" ünï\u{7}";
    let mut listener = server.client();
    listener
        .batch_execute(&format!("LISTEN \"{}\"", odd.replace('"', "\"\"")))
        .unwrap();
    let listener_pid: i32 = listener
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // The LISTEN must be its last statement to be seen: ask again without a statement.
    listener
        .batch_execute(&format!("LISTEN \"{}\"", odd.replace('"', "\"\"")))
        .unwrap();
    let out = server
        .pgnotify()
        .args(["doctor", "--json", odd, "plain"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let channels: Vec<&Value> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "channel")
        .collect();
    assert_eq!(channels.len(), 2, "{doc}");
    assert_eq!(channels[0]["subject"], odd);
    assert_eq!(channels[0]["data"]["came_back"], true, "{doc}");
    assert_eq!(
        channels[0]["data"]["listeners"][0]["pid"], listener_pid,
        "{doc}"
    );
    // The real listener got the documented test notification.
    let mut notifications = listener.notifications();
    let mut got = notifications.timeout_iter(PATIENCE);
    let n = postgres::fallible_iterator::FallibleIterator::next(&mut got)
        .unwrap()
        .expect("the test notification");
    let payload: Value = serde_json::from_str(n.payload()).unwrap();
    assert_eq!(payload["pgnotify"], "doctor");
    assert!(payload["at"].is_string());
    drop(got);
    drop(notifications);
    let text = server.pgnotify().args(["doctor", odd]).run();
    text.success();
    assert!(!flat(&text.stdout).contains('\u{7}'), "{}", text.report());
    assert!(flat(&text.stdout).contains("\\x07"), "{}", text.report());
    // Malformed on its face: a usage error before connecting.
    let long = "x".repeat(64);
    server
        .pgnotify()
        .args(["doctor", &long])
        .run()
        .code(2)
        .one_line_error();
    // With --json, that too is one JSON document (exit 2), and 63 bytes of UTF-8 are fine.
    let out = server.pgnotify().args(["doctor", "--json", &long]).run();
    out.code(2).one_line_error();
    let doc = report(&out.stdout);
    assert_eq!(doc["exit"], 2, "{doc}");
    assert_eq!(check(&doc, "channel")["status"], "problem", "{doc}");
    let max = format!("{}x", "é".repeat(31));
    assert_eq!(max.len(), 63);
    let out = server.pgnotify().args(["doctor", "--json", &max]).run();
    out.success();
    assert_eq!(check(&report(&out.stdout), "channel")["status"], "ok");
}

#[test]
fn a_closed_port_exits_3_with_one_line_and_still_reports_the_settings() {
    let server = Server::start();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = server
        .bare()
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "doctor"])
        .run();
    out.code(3).one_line_error();
    assert!(flat(&out.stdout).contains("flag -p"), "{}", out.report());
    assert!(
        flat(&out.stdout).contains("problem connection"),
        "{}",
        out.report()
    );
    let json = server
        .bare()
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "doctor",
            "--json",
        ])
        .run();
    json.code(3).one_line_error();
    let doc = report(&json.stdout);
    assert_eq!(doc["exit"], 3);
    assert_eq!(check(&doc, "connection")["status"], "problem");
}

#[test]
fn tls_verified_is_ok_and_unverified_is_a_warning() {
    let server = Server::start_tls();
    let verified = server.cluster.tls_conninfo().unwrap();
    let out = server
        .bare()
        .args(["-d", &verified, "doctor", "--json"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let tls = check(&doc, "tls");
    assert_eq!(tls["status"], "ok", "{doc}");
    assert_eq!(tls["data"]["verified"], "full", "{doc}");
    assert!(
        tls["detail"].as_str().unwrap().contains("protocol: TLSv1."),
        "{doc}"
    );
    let require = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=require",
        server.cluster.port()
    );
    let out = server
        .bare()
        .args(["-d", &require, "doctor", "--json"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let tls = check(&doc, "tls");
    assert_eq!(tls["status"], "warning", "{doc}");
    assert_eq!(tls["data"]["verified"], "none", "{doc}");
    assert!(
        tls["fix"].as_str().unwrap().contains("verify-full"),
        "{doc}"
    );
}

#[test]
fn an_idle_session_timeout_is_a_warning_that_says_what_the_heartbeat_does() {
    let server = Server::start();
    let conninfo = format!(
        "{} options='-c idle_session_timeout=5000'",
        server.cluster.conninfo()
    );
    let out = server
        .bare()
        .args(["-d", &conninfo, "doctor", "--json"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let idle = check(&doc, "idle_timeouts");
    assert_eq!(idle["status"], "warning", "{doc}");
    assert!(
        idle["detail"]
            .as_str()
            .unwrap()
            .contains("idle_session_timeout is 5 s"),
        "{doc}"
    );
    assert!(
        idle["detail"].as_str().unwrap().contains("heartbeat"),
        "{doc}"
    );
    assert!(
        idle["fix"].as_str().unwrap().contains("--heartbeat"),
        "{doc}"
    );
}

#[test]
fn each_watched_table_is_listed_with_its_mode() {
    let server = Server::start();
    server.psql("CREATE TABLE orders (id int PRIMARY KEY, note text)");
    server.watch_table(&["orders"]);
    let out = server.pgnotify().args(["doctor", "--json"]).run();
    out.success();
    let doc = report(&out.stdout);
    let table = check(&doc, "watched_table");
    assert_eq!(table["subject"], "public.orders", "{doc}");
    assert_eq!(table["status"], "ok", "{doc}");
    assert!(
        table["detail"]
            .as_str()
            .unwrap()
            .starts_with("public.orders is watched: key"),
        "{doc}"
    );
}

/// A pgnotify listener is seen by its heartbeat (its last statement), and said to be one that
/// may listen, never claimed for the channel.
#[test]
fn a_pgnotify_listener_is_seen_by_its_heartbeat() {
    let server = Server::start();
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "--heartbeat", "200ms", "jobs"])
        .spawn();
    listen.wait_ready();
    let pid = server.backend_pid("pgnotify");
    server.wait_until("the heartbeat is the listener's last statement", || {
        server
            .psql(&format!(
                "SELECT query FROM pg_stat_activity WHERE pid = {pid}"
            ))
            .contains("lock_timeout")
    });
    let out = server.pgnotify().args(["doctor", "--json", "jobs"]).run();
    out.success();
    let doc = report(&out.stdout);
    let listeners = &check(&doc, "channel")["data"]["listeners"];
    let seen = listeners
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["pid"] == pid)
        .unwrap_or_else(|| panic!("listener {pid} not seen: {doc}"));
    assert!(
        seen["seen_by"].as_str().unwrap().contains("heartbeat"),
        "{doc}"
    );
    assert_eq!(
        listeners.as_array().unwrap().len(),
        1,
        "doctor saw itself: {doc}"
    );
}

#[test]
fn a_table_changed_since_its_install_is_a_problem_with_the_fix() {
    let server = Server::start();
    server.psql("CREATE TABLE orders (id int PRIMARY KEY, note text)");
    server.watch_table(&["orders"]);
    server.psql("ALTER TABLE orders RENAME COLUMN id TO order_id");
    let out = server.pgnotify().args(["doctor", "--json"]).run();
    out.code(1);
    let doc = report(&out.stdout);
    let table = check(&doc, "watched_table");
    assert_eq!(table["status"], "problem", "{doc}");
    assert!(
        table["fix"]
            .as_str()
            .unwrap()
            .contains("pgnotify watch-table public.orders"),
        "{doc}"
    );
    let notes = table["notes"].to_string();
    assert!(notes.contains("key column"), "{doc}");
    // watch-table --list's drift checks are doctor's: a disabled trigger (whose events simply
    // stop) and a renamed table (whose default channel was the old name) are problems too,
    // one note each; the reinstall clears all of them and doctor is healthy again.
    server.psql("ALTER TABLE orders DISABLE TRIGGER USER");
    server.psql("ALTER TABLE orders RENAME TO purchases");
    let out = server.pgnotify().args(["doctor", "--json"]).run();
    out.code(1);
    let doc = report(&out.stdout);
    let table = check(&doc, "watched_table");
    assert_eq!(table["status"], "problem", "{doc}");
    let notes = table["notes"].as_array().unwrap();
    assert!(notes.len() >= 3, "key, disabled, renamed: {doc}");
    let all = table["notes"].to_string();
    assert!(all.contains("disabled"), "{doc}");
    assert!(all.contains("renamed"), "{doc}");
    let text = server.pgnotify().arg("doctor").run();
    text.code(1);
    assert!(text.stdout.contains("disabled"), "{}", text.report());
    // doctor's fix, run as written (each `pgnotify ...` command it names, through sh).
    let fix = table["fix"].as_str().unwrap();
    let commands: Vec<&str> = fix
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|c| c.strip_prefix("pgnotify "))
        .collect();
    assert!(!commands.is_empty(), "{fix}");
    for command in commands {
        server
            .shell(&format!("\"$PGNOTIFY\" \"$@\" {command}"))
            .run()
            .success();
    }
    let out = server.pgnotify().args(["doctor", "--json"]).run();
    let doc = report(&out.stdout);
    for table in doc["checks"].as_array().unwrap() {
        if table["name"] == "watched_table" {
            assert_eq!(table["status"], "ok", "{doc}");
        }
    }
}

#[test]
fn with_a_host_list_the_server_reached_is_named_and_colour_comes_only_when_asked() {
    let server = Server::start();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ports = format!("{closed},{}", server.cluster.port());
    let out = server
        .bare()
        .args([
            "-h",
            "127.0.0.1,127.0.0.1",
            "-p",
            &ports,
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["doctor", "--json"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let reached = check(&doc, "server");
    assert_eq!(reached["data"]["host_index"], 2, "{doc}");
    assert!(
        reached["detail"]
            .as_str()
            .unwrap()
            .contains("(host 2 of 2)"),
        "{doc}"
    );
    let coloured = server
        .pgnotify()
        .args(["--color", "always", "doctor"])
        .run();
    coloured.success();
    assert!(
        coloured.stdout.contains("\x1b[32mok"),
        "{}",
        coloured.report()
    );
    let plain = server
        .pgnotify()
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .arg("doctor")
        .run();
    assert!(!plain.stdout.contains('\x1b'), "{}", plain.report());
}

#[test]
fn through_pgbouncer_with_one_server_connection_doctor_ends_in_bounded_time_and_names_the_pooler() {
    // default_pool_size = 1: the second connection's open transaction holds the only server
    // connection, so the first session's next statement waits for it (PgBouncer's
    // query_wait_timeout is 120 s). doctor must neither wait that long nor call this healthy.
    let server = Server::start();
    let bouncer = PgBouncer::start_pool(&server, "transaction", 1);
    let started = std::time::Instant::now();
    let out = server
        .through(&bouncer.port.to_string())
        .args(["doctor", "--json"])
        .run();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "doctor took {took:?}\n{}\n{}",
        out.report(),
        bouncer.log_tail()
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.report());
    let doc = report(&out.stdout);
    let round = check(&doc, "notify_round_trip");
    assert_eq!(round["status"], "problem", "{doc}");
    assert_eq!(round["data"]["pooled"], true, "{doc}");
}

#[test]
fn a_password_is_never_printed_when_the_connection_fails() {
    let server = password_server("the-right-one");
    let port = server.cluster.port().to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    // (-d, the secrets that must never show, whatever their encoding)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("postgresql://postgres:Wr0ng-pw-1@127.0.0.1:{port}/postgres"),
            vec!["Wr0ng-pw-1"],
        ),
        (
            format!("postgresql://postgres:p%40ss%2Fw%3Ard@127.0.0.1:{port}/postgres"),
            vec!["p@ss/w:rd", "p%40ss%2Fw%3Ard"],
        ),
        (
            format!("postgresql://postgres:Wr0ng-pw-2@127.0.0.1:{closed}/postgres"),
            vec!["Wr0ng-pw-2"],
        ),
        (
            format!("postgresql://127.0.0.1:{port}/postgres?user=postgres&password=Wr0ng-pw-3"),
            vec!["Wr0ng-pw-3"],
        ),
        (
            format!(
                "host=127.0.0.1 port={port} user=postgres password='Wr0ng pw 4' dbname=postgres"
            ),
            vec!["Wr0ng pw 4", "Wr0ng"],
        ),
        (
            format!("host=127.0.0.1 port={closed} password=Wr0ng-pw-5 user=postgres"),
            vec!["Wr0ng-pw-5"],
        ),
    ];
    for (conninfo, secrets) in cases {
        for json in [false, true] {
            let mut cmd = server.bare();
            cmd.args(["-d", &conninfo, "doctor"]);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.run();
            out.code(3).one_line_error();
            if json {
                let doc = report(&out.stdout);
                assert_eq!(doc["exit"], 3, "{doc}");
            }
            for secret in &secrets {
                assert!(
                    !out.stdout.contains(secret) && !out.stderr.contains(secret),
                    "{conninfo}: {secret:?} printed{}",
                    out.report()
                );
            }
        }
    }
}

#[test]
fn a_role_without_privileges_gets_a_report_not_an_sql_error() {
    let server = Server::start();
    server.psql(
        "CREATE ROLE plain LOGIN; \
         CREATE SCHEMA \"Hidden\"; CREATE TABLE \"Hidden\".\"Orders\" (id int PRIMARY KEY); \
         CREATE TABLE public.visible (id int PRIMARY KEY); \
         REVOKE ALL ON SCHEMA \"Hidden\" FROM PUBLIC; \
         REVOKE ALL ON public.visible FROM PUBLIC",
    );
    server.watch_table(&["\"Hidden\".\"Orders\""]);
    server.watch_table(&["visible"]);
    // Another role's session idle in a transaction: not visible to plain, and said so.
    let mut holder = server.client();
    holder.batch_execute("BEGIN; SELECT 1").unwrap();
    let mut cmd = server.bare();
    cmd.args([
        "-h",
        &server.cluster.socket_dir().display().to_string(),
        "-p",
        &server.cluster.port().to_string(),
        "-U",
        "plain",
        "-d",
        "postgres",
        "doctor",
        "--json",
        "select",
        "Ünïcödé-ch\"an'nel",
    ]);
    let out = cmd.run();
    let doc = report(&out.stdout);
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
    assert_eq!(out.status.code(), Some(0), "{}", out.report());
    assert_eq!(check(&doc, "server")["data"]["superuser"], false, "{doc}");
    let idle = check(&doc, "idle_in_transaction");
    assert!(
        idle.to_string().contains("pg_read_all_stats"),
        "what a plain role cannot see is said: {doc}"
    );
    // The superuser's session idle in a transaction is not seen: never claimed absent.
    assert!(
        idle["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be seen by it"),
        "{doc}"
    );
    for c in doc["checks"].as_array().unwrap() {
        if c["name"] == "channel" {
            assert_eq!(c["status"], "ok", "{c}");
        }
    }
    holder.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn names_with_control_characters_never_reach_the_text_report_raw() {
    let server = Server::start();
    let db = "evil\x1b]0;title\x07db\nnext";
    let mut client = server.client();
    client
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .unwrap();
    let socket = server.cluster.socket_dir().display().to_string();
    let port = server.cluster.port().to_string();
    let app = "app\x1b[2J\r";
    for json in [false, true] {
        let mut cmd = server.bare();
        cmd.env("PGAPPNAME", app)
            .env("PGOPTIONS", "-c search_path=\x1b[31m")
            .args([
                "-h", &socket, "-p", &port, "-U", "postgres", "-d", db, "doctor",
            ])
            .arg("chan\x1b[1mnel\n");
        if json {
            cmd.arg("--json");
        }
        let out = cmd.run();
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "{}",
            out.report()
        );
        match json {
            true => {
                let doc = report(&out.stdout);
                assert_eq!(check(&doc, "server")["data"]["database"], db, "{doc}");
            }
            false => {
                let raw = out.stdout.chars().find(|c| c.is_control() && *c != '\n');
                assert_eq!(raw, None, "a raw control character{}", out.report());
                assert!(out.stdout.contains("evil\\x1b"), "{}", out.report());
                assert!(
                    out.stdout.lines().all(|l| !l.starts_with("next")),
                    "{}",
                    out.report()
                );
            }
        }
    }
    // A socket directory that does not exist, with escapes and a newline in it: the report
    // escapes them, the error is one line (escaped only on a terminal, as every error).
    let out = server
        .bare()
        .args(["-h", "/nonexistent\x1b[31m\ndir", "-p", &port, "doctor"])
        .run();
    out.code(3).one_line_error();
    assert!(!out.stdout.contains('\x1b'), "{}", out.report());
    assert!(
        out.stdout.contains("/nonexistent\\x1b[31m\\ndir"),
        "{}",
        out.report()
    );
}

#[test]
fn a_held_notification_lock_makes_the_round_trip_a_problem_in_bounded_time() {
    // A commit with a notification waits for a synchronous standby that does not exist, holding
    // the lock every notifying commit takes: doctor's own test notifications must not wait for
    // it without end.
    let server = Server::start();
    let held = server.hold_notification_lock("jobs", "held");
    let started = std::time::Instant::now();
    let out = server.pgnotify().args(["doctor", "--json", "jobs"]).run();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(15),
        "{took:?}{}",
        out.report()
    );
    out.code(1);
    let doc = report(&out.stdout);
    assert_eq!(
        check(&doc, "notify_round_trip")["status"],
        "problem",
        "{doc}"
    );
    assert_eq!(check(&doc, "channel")["status"], "problem", "{doc}");
    held.release();
    server.pgnotify().args(["doctor", "jobs"]).run().success();
}

#[test]
fn through_pgbouncer_in_session_mode_with_one_server_connection_doctor_is_healthy_in_bounded_time()
{
    // The one server connection is doctor's own session's: the second connection waits for
    // one that never comes free. doctor says what it could not check, and no false problem.
    let server = Server::start();
    let bouncer = PgBouncer::start_pool(&server, "session", 1);
    let started = std::time::Instant::now();
    let out = server
        .through(&bouncer.port.to_string())
        .args(["doctor", "--json", "jobs"])
        .run();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}{}",
        started.elapsed(),
        out.report()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        out.report(),
        bouncer.log_tail()
    );
    let doc = report(&out.stdout);
    let round = check(&doc, "notify_round_trip");
    assert_eq!(round["status"], "ok", "{doc}");
    assert_eq!(
        round["data"]["second_connection_held_a_transaction"], false,
        "{doc}"
    );
    assert_eq!(check(&doc, "channel")["status"], "ok", "{doc}");
}

#[test]
fn a_channel_is_listened_on_only_by_a_listen_naming_it_whole() {
    let server = Server::start();
    let mut listener = server.client();
    listener.batch_execute("LISTEN jobs").unwrap();
    let pid: i32 = listener
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    listener.batch_execute("LISTEN Jobs").unwrap();
    let out = server
        .pgnotify()
        .args(["doctor", "--json", "jobs", "o", "Jobs", "job"])
        .run();
    out.success();
    let doc = report(&out.stdout);
    let seen: Vec<(String, usize)> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "channel")
        .map(|c| {
            let listeners = c["data"]["listeners"].as_array().unwrap();
            assert!(listeners.iter().all(|l| l["pid"] == pid), "{c}");
            (c["subject"].as_str().unwrap().to_owned(), listeners.len())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("jobs".to_owned(), 1),
            ("o".to_owned(), 0),
            ("Jobs".to_owned(), 0),
            ("job".to_owned(), 0)
        ],
        "{doc}"
    );
}

#[test]
fn a_connection_lost_during_the_checks_is_said_once_with_exit_3() {
    let server = Server::start();
    let held = server.hold_notification_lock("jobs", "held");
    let mut doctor = server.pgnotify().args(["doctor", "--json"]).spawn();
    // doctor's round trip waits for the held lock: end its session there.
    server.wait_until("doctor waits for the notification lock", || {
        server
            .psql(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE application_name = 'pgnotify' AND wait_event_type = 'Lock'",
            )
            .trim()
            == "1"
    });
    server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE application_name = 'pgnotify' AND wait_event_type = 'Lock'",
    );
    let (status, stdout) = doctor.finish();
    assert_eq!(status.code(), Some(3), "{stdout}{}", doctor.report());
    let doc = report(&stdout);
    assert_eq!(doc["exit"], 3, "{doc}");
    let checks = doc["checks"].as_array().unwrap();
    // Said once, as the connection's problem: no later check fails for it, nor is a fix given
    // that would send the reader the wrong way.
    let last = checks.last().unwrap();
    assert_eq!(last["name"], "connection", "{doc}");
    assert!(
        last["detail"].as_str().unwrap().contains("was lost"),
        "{doc}"
    );
    assert_eq!(
        checks.iter().filter(|c| c["status"] != "ok").count(),
        1,
        "{doc}"
    );
    assert!(!stdout.contains("Run doctor as a role"), "{doc}");
    let stderr = doctor.wait_stderr("pgnotify: error:");
    assert!(stderr.contains("was lost"), "{stderr}");
    held.release();
}
