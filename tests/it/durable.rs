//! Durable delivery against a real server: events stored by `notify --durable` and
//! `watch-table --durable`, read by `pipe --consumer` after being down, killed, cut off by a
//! server restart, with transactions committing out of order, rolled back, held open; two
//! consumers, retention, privileges, the schema's version.

use crate::support::{PATIENCE, Running, Server};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A consumer's NDJSON line: the contract's fields, and the event's place in the outbox.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    channel: String,
    payload: String,
    pid: i32,
    #[allow(dead_code)]
    received_at: String,
    id: i64,
    xid: u64,
    #[serde(default)]
    #[allow(dead_code)]
    data: Option<Value>,
}

impl Event {
    fn at(&self) -> (u64, i64) {
        (self.xid, self.id)
    }
}

fn parse(line: &str, run: &Running) -> Event {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}{}", run.report()))
}

/// `pipe --consumer NAME CHANNELS... -v`, running.
fn consumer(server: &Server, name: &str, channels: &[&str]) -> Running {
    let mut cmd = server.pgnotify();
    cmd.args(["-v", "pipe", "--consumer", name]).args(channels);
    cmd.spawn()
}

fn read_events(run: &mut Running, n: usize) -> Vec<Event> {
    (0..n)
        .map(|_| {
            let line = run.read_line();
            parse(&line, run)
        })
        .collect()
}

/// Reads until nothing comes for `quiet`, then stops the consumer cleanly (SIGTERM, 143).
fn drain(run: &mut Running, quiet: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(line) = run.try_read_line_within(quiet) {
        events.push(parse(&line, run));
    }
    run.signal(Signal::SIGTERM);
    let (status, rest) = run.finish();
    assert_eq!(status.code(), Some(143), "{}", run.report());
    for line in rest.lines() {
        events.push(parse(line, run));
    }
    events
}

/// Stores each payload as a durable event on `channel` (`notify --durable --lines`).
fn store(server: &Server, channel: &str, payloads: &[String]) {
    let mut input = payloads.join("\n");
    input.push('\n');
    server
        .pgnotify()
        .args(["notify", "--durable", "--lines", channel])
        .stdin(input)
        .run()
        .success();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn payloads(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.payload.clone()).collect()
}

fn assert_in_outbox_order(events: &[Event], run: &Running) {
    for pair in events.windows(2) {
        assert!(
            pair[0].at() < pair[1].at(),
            "out of order: {:?} then {:?}{}",
            pair[0],
            pair[1],
            run.report()
        );
    }
}

/// The payloads of the events, each event once (by id), in the order first seen.
fn unique_payloads(events: &[Event]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.id))
        .map(|e| e.payload.clone())
        .collect()
}

fn outbox_rows(server: &Server) -> i64 {
    server
        .psql("SELECT count(*) FROM pgnotify.events")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn events_stored_while_no_consumer_runs_are_delivered_once_in_order() {
    let server = Server::start();
    // No consumer exists yet: the argument, stdin and --lines all store.
    server
        .pgnotify()
        .args(["notify", "--durable", "jobs", "first"])
        .run()
        .success()
        .stderr_has("created the pgnotify schema");
    server
        .pgnotify()
        .args(["notify", "--durable", "jobs", "-"])
        .stdin("from stdin\n")
        .run()
        .success();
    // Repeated lines are events each (the NOTIFY would fold them; the outbox does not).
    store(
        &server,
        "jobs",
        &["same".into(), "same".into(), "last".into()],
    );
    store(&server, "other", &["not for this consumer".into()]);
    let mut run = consumer(&server, "worker", &["jobs"]);
    let events = read_events(&mut run, 5);
    assert_eq!(
        payloads(&events),
        ["first", "from stdin", "same", "same", "last"],
        "{}",
        run.report()
    );
    assert_in_outbox_order(&events, &run);
    assert!(events.iter().all(|e| e.channel == "jobs" && e.pid > 0));
    // Events of one transaction share its xid.
    assert_eq!(events[2].xid, events[4].xid);
    assert_ne!(events[0].xid, events[1].xid);
    let rest = drain(&mut run, Duration::from_millis(700));
    assert!(rest.is_empty(), "nothing more: {rest:?}");
    // Stopped cleanly: exactly once. A new event is all the next run gets.
    store(&server, "jobs", &["after".into()]);
    let mut again = consumer(&server, "worker", &["jobs"]);
    let events = drain(&mut again, Duration::from_millis(1500));
    assert_eq!(payloads(&events), ["after"], "{}", again.report());
}

#[test]
fn a_live_consumer_gets_new_events_and_a_rolled_back_write_leaves_none() {
    let server = Server::start();
    server.psql("CREATE TABLE orders (id int PRIMARY KEY, note text)");
    server.watch_table(&["orders", "--durable"]);
    let mut run = consumer(&server, "c", &["orders"]);
    run.wait_stderr("is new");
    let mut client = server.client();
    client
        .batch_execute("BEGIN; INSERT INTO orders VALUES (1, 'gone'); ROLLBACK")
        .unwrap();
    client
        .batch_execute("INSERT INTO orders VALUES (2, 'kept')")
        .unwrap();
    let started = Instant::now();
    let event = read_events(&mut run, 1).remove(0);
    let payload: Value = serde_json::from_str(&event.payload).unwrap();
    assert_eq!(payload["op"], "INSERT");
    assert_eq!(payload["key"]["id"], 2, "{}", run.report());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken by the NOTIFY, not found by a late poll"
    );
    client
        .batch_execute("UPDATE orders SET note = 'x' WHERE id = 2; DELETE FROM orders")
        .unwrap();
    let ops: Vec<String> = read_events(&mut run, 2)
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["op"].to_string())
        .collect();
    assert_eq!(ops, ["\"UPDATE\"", "\"DELETE\""]);
    assert!(drain(&mut run, Duration::from_millis(500)).is_empty());
    assert_eq!(
        server.psql("SELECT count(*) FROM pgnotify.events WHERE payload LIKE '%gone%'"),
        "0"
    );
}

#[test]
fn a_megabyte_event_is_stored_and_delivered_whole() {
    let server = Server::start();
    let big = "x".repeat(1 << 20);
    server
        .pgnotify()
        .args(["notify", "--durable", "big", "-"])
        .stdin(big.clone())
        .run()
        .success();
    server.psql("CREATE TABLE docs (id int PRIMARY KEY, body text)");
    server.watch_table(&["docs", "--durable", "--rows"]);
    server.psql("INSERT INTO docs VALUES (1, repeat('y', 1048576))");
    let mut run = consumer(&server, "c", &["big", "docs"]);
    let events = read_events(&mut run, 2);
    assert_eq!(events[0].payload, big);
    let row: Value = serde_json::from_str(&events[1].payload).unwrap();
    assert_eq!(row["new"]["body"].as_str().unwrap().len(), 1 << 20);
    assert!(row.get("truncated").is_none(), "never truncated");
    drain(&mut run, Duration::from_millis(300));
}

#[test]
fn a_transaction_that_commits_late_is_delivered_before_later_ones_and_never_skipped() {
    let server = Server::start();
    server.psql("CREATE TABLE t (id int PRIMARY KEY)");
    server.watch_table(&["t", "--durable", "--events", "insert"]);
    let mut run = consumer(&server, "c", &["t"]);
    run.wait_stderr("is new");
    // A takes its transaction id first and stays open; B commits after it.
    let mut a = server.client();
    a.batch_execute("SET application_name = 'late-writer'; BEGIN; INSERT INTO t VALUES (1)")
        .unwrap();
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    server.psql("INSERT INTO t VALUES (2)");
    server.psql("INSERT INTO t VALUES (3)");
    assert!(
        run.try_read_line_within(Duration::from_millis(1500))
            .is_none(),
        "B and C wait for A: delivering them first would let A's event fall behind the \
         checkpoint{}",
        run.report()
    );
    let said = run.wait_stderr("committed events wait for");
    assert!(
        said.contains(&format!("pid {a_pid}")) && said.contains("late-writer"),
        "names the open transaction: {said}"
    );
    a.batch_execute("COMMIT").unwrap();
    let keys: Vec<i64> = read_events(&mut run, 3)
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.payload).unwrap()["key"]["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(keys, [1, 2, 3], "transaction order{}", run.report());
    assert!(drain(&mut run, Duration::from_millis(500)).is_empty());
}

#[test]
fn replay_runs_into_live_without_a_seam() {
    let server = Server::start();
    store(&server, "jobs", &numbered("old-", 0..3000));
    let writer = {
        let conninfo = server.cluster.conninfo();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
            for i in 0..300 {
                let batch: Vec<String> = (0..10).map(|j| format!("new-{}", i * 10 + j)).collect();
                client
                    .execute(
                        "WITH e AS (INSERT INTO pgnotify.events (channel, payload) \
                         SELECT 'jobs', p FROM unnest($1::text[]) WITH ORDINALITY u(p, n) \
                         ORDER BY n RETURNING 1) SELECT pg_notify('pgnotify.durable', 'jobs')",
                        &[&batch],
                    )
                    .unwrap();
            }
        })
    };
    let mut run = consumer(&server, "c", &["jobs"]);
    let events = read_events(&mut run, 6000);
    writer.join().unwrap();
    assert_in_outbox_order(&events, &run);
    let mut expected = numbered("old-", 0..3000);
    expected.extend(numbered("new-", 0..3000));
    assert_eq!(payloads(&events), expected);
    assert!(drain(&mut run, Duration::from_millis(700)).is_empty());
}

/// Lines of a killed consumer's stdout: whole lines only (a kill may cut the last one, whose
/// event was then not acknowledged).
fn whole_lines(rest: &str) -> Vec<&str> {
    match rest.rfind('\n') {
        Some(end) => rest[..end].lines().collect(),
        None => Vec::new(),
    }
}

#[test]
fn a_consumer_killed_mid_stream_repeats_at_most_its_unacknowledged_tail() {
    let server = Server::start();
    let all = numbered("e", 0..20_000);
    store(&server, "jobs", &all);
    let mut seen: Vec<Event> = Vec::new();
    let mut checkpoints = Vec::new();
    let mut repeated = 0;
    for round in 0..4 {
        let mut run = consumer(&server, "c", &["jobs"]);
        // A pause mid-round: the checkpoint is stored meanwhile. It covers at least every
        // batch the consumer wrote whole before the one being read (batches are at most 2000
        // events), so the next round may repeat at most that batch and what followed it.
        let mut got = read_events(&mut run, 2500 + round * 300);
        let before_pause = got[got.len() - 2001].at();
        std::thread::sleep(Duration::from_millis(600));
        got.extend(read_events(&mut run, 1000));
        run.signal(Signal::SIGKILL);
        let (_, rest) = run.finish();
        got.extend(whole_lines(&rest).into_iter().map(|l| parse(l, &run)));
        assert_in_outbox_order(&got, &run);
        // A restart begins at or before where the last one stopped, never after it.
        if let Some(last) = seen.last() {
            assert!(
                got[0].at() <= (last.xid, last.id + 1),
                "round {round} skipped: began at {:?} after {:?}",
                got[0],
                last
            );
            repeated += got.iter().filter(|e| e.at() <= last.at()).count();
            let paused = checkpoints.last().unwrap();
            assert!(
                got[0].at() > *paused,
                "round {round} began at {:?}, before {paused:?}, which was written before a \
                 pause: checkpoints are stored while a consumer runs",
                got[0]
            );
        }
        let last = seen.last().map(Event::at);
        seen.extend(got.into_iter().filter(|e| last.is_none_or(|l| e.at() > l)));
        checkpoints.push(before_pause);
    }
    let mut run = consumer(&server, "c", &["jobs"]);
    let rest = drain(&mut run, Duration::from_millis(1500));
    if let Some(last) = seen.last() {
        repeated += rest.iter().filter(|e| e.at() <= last.at()).count();
    }
    let last = seen.last().map(Event::at);
    seen.extend(rest.into_iter().filter(|e| last.is_none_or(|l| e.at() > l)));
    assert_eq!(payloads(&seen), all, "every event, in order, none lost");
    eprintln!("after 4 kills -9: {repeated} events delivered twice");
}

#[test]
fn a_server_restart_mid_stream_loses_nothing_and_writes_no_gap_record() {
    let server = Server::start();
    store(&server, "jobs", &numbered("a", 0..200));
    let mut run = consumer(&server, "c", &["jobs"]);
    let mut events = read_events(&mut run, 200);
    server.pg_ctl(&["restart", "-m", "immediate"]);
    run.wait_stderr("reconnecting");
    store(&server, "jobs", &numbered("b", 0..200));
    run.wait_stderr("nothing is lost");
    // The lines parse as events (a gap record would not): no gap record.
    events.extend(read_events(&mut run, 200));
    let mut expected = numbered("a", 0..200);
    expected.extend(numbered("b", 0..200));
    assert_eq!(payloads(&events), expected, "{}", run.report());
    assert!(drain(&mut run, Duration::from_millis(700)).is_empty());
}

#[test]
fn two_consumers_each_get_everything_and_retention_keeps_what_a_slow_one_has_not_read() {
    let server = Server::start();
    let all = numbered("e", 0..5000);
    store(&server, "jobs", &all);
    let fast = server
        .pgnotify()
        .args(["pipe", "--consumer", "fast", "--count", "5000", "jobs"])
        .run();
    fast.success();
    let slow = server
        .pgnotify()
        .args(["pipe", "--consumer", "slow", "--count", "1", "jobs"])
        .run();
    slow.success();
    server
        .pgnotify()
        .args(["consumers", "--prune"])
        .run()
        .success()
        .stderr_has("deleted 1 events");
    assert_eq!(
        outbox_rows(&server),
        4999,
        "the slow consumer's events are kept"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let listed = server
        .pgnotify()
        .args(["consumers", "--max-lag", "1s"])
        .run();
    listed
        .code(1)
        .stderr_has("consumer \"slow\" is behind")
        .stderr_has("pgnotify consumers --drop slow");
    let rows: BTreeMap<String, Value> = listed
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["name"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    assert_eq!(rows["fast"]["pending"], 0);
    assert_eq!(rows["fast"]["stale"], false);
    assert_eq!(rows["slow"]["pending"], 4999);
    assert_eq!(rows["slow"]["stale"], true);
    // The slow one still gets all of its events, its own place kept.
    let mut run = consumer(&server, "slow", &["jobs"]);
    let events = drain(&mut run, Duration::from_millis(1500));
    assert_eq!(payloads(&events), all[1..].to_vec());
    // Once both have read everything, running consumers delete it themselves.
    let mut live = consumer(&server, "fast", &["jobs"]);
    store(&server, "jobs", &numbered("n", 0..3000));
    let mut other = consumer(&server, "slow", &["jobs"]);
    assert_eq!(read_events(&mut live, 3000).len(), 3000);
    assert_eq!(read_events(&mut other, 3000).len(), 3000);
    server.wait_until("the outbox to empty", || outbox_rows(&server) == 0);
    drain(&mut live, Duration::from_millis(200));
    drain(&mut other, Duration::from_millis(200));
    server
        .pgnotify()
        .args(["consumers", "--drop", "slow"])
        .run()
        .success();
    server
        .pgnotify()
        .args(["consumers", "--drop", "slow"])
        .run()
        .code(1)
        .stderr_has("no consumer named \"slow\"");
}

#[test]
fn privileges_are_granted_by_a_command_and_a_writer_without_them_fails_its_write() {
    let server = Server::start();
    server.psql(
        "CREATE ROLE plain LOGIN; CREATE ROLE writer LOGIN; CREATE ROLE reader LOGIN; \
         CREATE TABLE t (id int PRIMARY KEY); GRANT INSERT ON t TO plain, writer",
    );
    server.watch_table(&["t", "--durable"]);
    let as_role = |role: &str| {
        let mut cmd = server.pgnotify();
        cmd.args(["-U", role]);
        cmd
    };
    as_role("plain")
        .args(["notify", "--durable", "jobs", "x"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("permission denied for schema pgnotify")
        .stderr_has("--grant-writer");
    // The trigger cannot store the event: the write fails rather than lose it.
    let denied = server.psql_as_client(
        &format!(
            "host={} port={} user=plain dbname=postgres",
            server.cluster.socket_dir().display(),
            server.cluster.port()
        ),
        "INSERT INTO t VALUES (1)",
    );
    assert!(
        denied
            .stderr
            .contains("permission denied for schema pgnotify"),
        "{}",
        denied.report()
    );
    assert_eq!(server.psql("SELECT count(*) FROM t"), "0");
    for (flag, role) in [("--grant-writer", "writer"), ("--grant-consumer", "reader")] {
        server
            .pgnotify()
            .args(["consumers", flag, role])
            .run()
            .success();
    }
    let grants = server.psql(
        "SELECT grantee || ':' || string_agg(privilege_type, ',' ORDER BY privilege_type) \
         FROM information_schema.role_table_grants WHERE table_schema = 'pgnotify' \
         AND grantee <> 'postgres' GROUP BY grantee, table_name ORDER BY 1",
    );
    assert!(!grants.contains("PUBLIC"), "{grants}");
    as_role("writer")
        .args(["notify", "--durable", "t", "by writer"])
        .run()
        .success();
    server.psql_as_client(
        &format!(
            "host={} port={} user=writer dbname=postgres",
            server.cluster.socket_dir().display(),
            server.cluster.port()
        ),
        "INSERT INTO t VALUES (2)",
    );
    as_role("plain")
        .args(["pipe", "--consumer", "p", "t"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("--grant-consumer");
    let read = as_role("reader")
        .args(["pipe", "--consumer", "r", "--count", "2", "t"])
        .run();
    read.success();
    assert_eq!(read.stdout.lines().count(), 2, "{}", read.report());
    assert!(read.stdout.contains("by writer"));
}

#[test]
fn the_schema_is_versioned_shown_by_print_sql_and_a_newer_one_is_refused() {
    let server = Server::start();
    let sql = server
        .pgnotify()
        .args(["consumers", "--install", "--print-sql"])
        .run();
    sql.success();
    assert!(sql.stdout.contains("CREATE TABLE pgnotify.events"));
    assert!(
        sql.stdout
            .contains("INSERT INTO pgnotify.schema_version (version) VALUES (1)")
    );
    server.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let sql = server
        .pgnotify()
        .args(["watch-table", "t", "--durable", "--print-sql"])
        .run();
    sql.success();
    assert!(sql.stdout.contains("CREATE SCHEMA IF NOT EXISTS pgnotify"));
    assert!(sql.stdout.contains("INSERT INTO pgnotify.events"));
    assert_eq!(
        server.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgnotify'"),
        "0",
        "printing changes nothing"
    );
    server
        .pgnotify()
        .args(["consumers", "--install"])
        .run()
        .success();
    assert_eq!(
        server.psql("SELECT version FROM pgnotify.schema_version"),
        "1"
    );
    server.psql("UPDATE pgnotify.schema_version SET version = 99");
    for args in [
        &["notify", "--durable", "jobs", "x"][..],
        &["pipe", "--consumer", "c", "jobs"],
        &["consumers"],
    ] {
        server
            .pgnotify()
            .args(args)
            .run()
            .code(1)
            .one_line_error()
            .stderr_has("version 99, newer than this pgnotify");
    }
}

#[test]
fn consumer_flags_that_cannot_work_are_usage_errors() {
    let server = Server::start();
    for args in [
        &["pipe", "--consumer", "c", "--serve", "0", "jobs"][..],
        &["listen", "-i", "--consumer", "c", "jobs"],
        &["pipe", "--consumer", "", "jobs"],
        &["consumers", "--drop", "a", "--prune"],
    ] {
        server.pgnotify().args(args).run().code(2);
    }
}

#[test]
fn a_second_process_with_the_same_name_is_refused_while_the_first_runs() {
    let server = Server::start();
    let mut first = consumer(&server, "only", &["jobs"]);
    first.wait_stderr("is new");
    server
        .pgnotify()
        .args(["pipe", "--consumer", "only", "jobs"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("consumer \"only\" is running already");
    first.signal(Signal::SIGTERM);
    first.finish();
    let mut second = consumer(&server, "only", &["jobs"]);
    second.wait_stderr("consumer \"only\"");
    drain(&mut second, Duration::from_millis(100));
}

/// Events far larger than a batch's byte bound are read a few at a time: memory stays near
/// the queue's bound, not the backlog's size.
#[test]
fn a_backlog_of_large_events_is_replayed_in_bounded_memory() {
    let server = Server::start();
    server.psql("CREATE TABLE docs (id int PRIMARY KEY, body text)");
    server.watch_table(&["docs", "--durable", "--rows"]);
    // 120 events of 512 KiB: 60 MiB stored, 60 times the bound of one read.
    server.psql(
        "INSERT INTO docs SELECT i, repeat(md5(i::text), 16384) FROM generate_series(1, 120) i",
    );
    let mut run = consumer(&server, "big", &["docs"]);
    let pid = run.pid();
    let mut peak = 0;
    for i in 0..120 {
        // Checked whole now and then: parsing 512 KiB lines is slow in a debug build.
        let line = run.read_line();
        assert!(line.len() > 512 * 1024, "{}", run.report());
        if i % 40 == 0 {
            let e = parse(&line, &run);
            let row: Value = serde_json::from_str(&e.payload).unwrap();
            assert_eq!(row["key"]["id"], i + 1);
        }
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hwm: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        peak = peak.max(hwm);
    }
    drain(&mut run, Duration::from_millis(300));
    eprintln!("peak RSS replaying 60 MiB of events: {peak} KiB");
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB for a 60 MiB backlog");
}

#[test]
fn listen_reads_as_a_consumer_too() {
    let server = Server::start();
    store(&server, "jobs", &["one".into(), "two".into()]);
    let out = server
        .pgnotify()
        .args([
            "listen",
            "--consumer",
            "l",
            "--json",
            "--count",
            "2",
            "jobs",
        ])
        .run();
    out.success();
    let got: Vec<String> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["payload"].to_string())
        .collect();
    assert_eq!(got, ["\"one\"", "\"two\""]);
    // --count acknowledged exactly what it wrote.
    store(&server, "jobs", &["three".into()]);
    let out = server
        .pgnotify()
        .args([
            "listen",
            "--consumer",
            "l",
            "--format",
            "raw",
            "--count",
            "1",
            "jobs",
        ])
        .run();
    out.success();
    assert_eq!(out.stdout, "three\n");
}

/// A small generator for the randomized test, seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn randomized_writers_and_a_consumer_killed_at_random_lose_nothing_and_deliver_no_rollback() {
    let server = Server::start();
    server.psql("CREATE TABLE r (id bigint PRIMARY KEY)");
    server.watch_table(&["r", "--durable", "--events", "insert"]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let committed = Arc::new(Mutex::new(HashSet::new()));
    let rolled_back = Arc::new(Mutex::new(HashSet::new()));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let conninfo = server.cluster.conninfo();
            let (committed, rolled_back) = (Arc::clone(&committed), Arc::clone(&rolled_back));
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(w + 7) | 1);
                let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
                for t in 0..120u64 {
                    let ids: Vec<i64> = (0..1 + rng.below(5))
                        .map(|k| (w * 1_000_000 + t * 100 + k) as i64)
                        .collect();
                    let mut tx = client.transaction().unwrap();
                    for id in &ids {
                        tx.execute("INSERT INTO r VALUES ($1)", &[id]).unwrap();
                        std::thread::sleep(Duration::from_millis(rng.below(8)));
                    }
                    std::thread::sleep(Duration::from_millis(rng.below(30)));
                    match rng.below(4) {
                        0 => {
                            tx.rollback().unwrap();
                            rolled_back.lock().unwrap().extend(ids);
                        }
                        _ => {
                            tx.commit().unwrap();
                            committed.lock().unwrap().extend(ids);
                        }
                    }
                }
            })
        })
        .collect();
    let key = |e: &Event| -> i64 {
        serde_json::from_str::<Value>(&e.payload).unwrap()["key"]["id"]
            .as_i64()
            .unwrap()
    };
    let mut rng = Rng(seed);
    let mut delivered: Vec<i64> = Vec::new();
    let mut last_clean: Option<(u64, i64)> = None;
    let mut kills = 0;
    let deadline = Instant::now() + PATIENCE * 3;
    while writers.iter().any(|w| !w.is_finished()) {
        assert!(Instant::now() < deadline, "writers did not finish");
        let mut run = consumer(&server, "rnd", &["r"]);
        let mut got = Vec::new();
        let stop_after = Instant::now() + Duration::from_millis(100 + rng.below(900));
        while Instant::now() < stop_after {
            if let Some(line) = run.try_read_line_within(Duration::from_millis(50)) {
                got.push(parse(&line, &run));
            }
        }
        let clean = rng.below(3) == 0;
        let (_, rest) = match clean {
            true => {
                run.signal(Signal::SIGTERM);
                run.finish()
            }
            false => {
                kills += 1;
                run.signal(Signal::SIGKILL);
                run.finish()
            }
        };
        got.extend(whole_lines(&rest).into_iter().map(|l| parse(l, &run)));
        assert_in_outbox_order(&got, &run);
        if let (Some(after), Some(first)) = (last_clean, got.first()) {
            assert!(
                first.at() > after,
                "a clean stop is exactly once: {first:?} again after {after:?}"
            );
        }
        last_clean = match clean {
            true => got.last().map(Event::at).or(last_clean),
            false => None,
        };
        delivered.extend(got.iter().map(key));
    }
    for w in writers {
        w.join().unwrap();
    }
    let mut run = consumer(&server, "rnd", &["r"]);
    delivered.extend(drain(&mut run, Duration::from_millis(1500)).iter().map(key));
    let committed = committed.lock().unwrap();
    let rolled_back = rolled_back.lock().unwrap();
    let got: BTreeSet<i64> = delivered.iter().copied().collect();
    let missing: Vec<_> = committed.iter().filter(|id| !got.contains(id)).collect();
    assert!(missing.is_empty(), "seed {seed}: lost {missing:?}");
    let forged: Vec<_> = got.iter().filter(|id| rolled_back.contains(id)).collect();
    assert!(
        forged.is_empty(),
        "seed {seed}: rolled back yet delivered {forged:?}"
    );
    assert_eq!(got.len(), committed.len(), "seed {seed}: nothing else");
    eprintln!(
        "{} committed, {} rolled back, {} deliveries ({} repeated) over {kills} kills",
        committed.len(),
        rolled_back.len(),
        delivered.len(),
        delivered.len() - got.len()
    );
}

#[test]
fn exec_acknowledges_only_commands_that_succeeded_in_an_unbroken_run() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    store(&server, "jobs", &numbered("e", 1..7));
    // e3 fails until the file "fixed" exists; every run is logged.
    let command = format!(
        "echo \"$PGNOTIFY_PAYLOAD\" >> {log}; [ \"$PGNOTIFY_PAYLOAD\" != e3 ] || [ -e {fixed} ]",
        log = log.display(),
        fixed = dir.path().join("fixed").display()
    );
    let mut cmd = server.pgnotify();
    cmd.args([
        "pipe",
        "--consumer",
        "x",
        "--exec",
        &command,
        "--jobs",
        "3",
        "jobs",
    ]);
    let mut run = cmd.spawn();
    run.wait_stderr("retrying in 1 s");
    run.wait_stderr("retrying in 2 s");
    let ran = std::fs::read_to_string(&log).unwrap();
    for e in ["e1", "e2", "e4", "e5", "e6"] {
        assert!(ran.lines().any(|l| l == e), "{e} ran: {ran}");
    }
    assert!(
        ran.lines().filter(|l| *l == "e3").count() >= 2,
        "e3 retried: {ran}"
    );
    run.signal(Signal::SIGTERM);
    assert_eq!(run.finish().0.code(), Some(143), "{}", run.report());
    // Only e1 and e2 were acknowledged: e3 failed, so e4..e6 come again with it.
    std::fs::write(dir.path().join("fixed"), "").unwrap();
    std::fs::remove_file(&log).unwrap();
    let mut cmd = server.pgnotify();
    cmd.args(["pipe", "--consumer", "x", "--exec", &command, "jobs"]);
    let mut again = cmd.spawn();
    server.wait_until("the commands to run", || {
        std::fs::read_to_string(&log).is_ok_and(|r| r.lines().count() == 4)
    });
    again.assert_running_for(Duration::from_millis(500), "nothing more to run");
    again.signal(Signal::SIGTERM);
    again.finish();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "e3\ne4\ne5\ne6\n");
    // All four succeeded in order: nothing is left.
    let mut last = consumer(&server, "x", &["jobs"]);
    assert!(drain(&mut last, Duration::from_millis(1000)).is_empty());
}

/// A TCP peer on loopback: each connection's lines, read until the connection ends; `cut`
/// drops the first connection after that many lines, and `close` says whether it closes its
/// end once pgnotify half-closes (else it keeps the socket open).
fn tcp_peer(cut: Option<usize>, close: bool) -> (u16, std::thread::JoinHandle<Vec<Vec<String>>>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let mut connections = Vec::new();
        for (n, stream) in listener.incoming().enumerate() {
            let stream = stream.unwrap();
            let mut lines = Vec::new();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                lines.push(line.trim_end().to_owned());
                if n == 0 && Some(lines.len()) == cut {
                    break;
                }
            }
            let done = n > 0 || cut.is_none();
            connections.push(lines);
            match close {
                true => drop(stream),
                // Never closed while the test runs: its end stays open after pgnotify's.
                false => std::mem::forget(stream),
            }
            if done {
                return connections;
            }
        }
        connections
    });
    (port, thread)
}

/// `pipe --consumer t --connect ADDRESS --count N jobs`, run to its end.
fn to_peer(server: &Server, address: &str, count: usize) -> crate::support::Outcome {
    let count = count.to_string();
    let args = [
        "pipe",
        "--consumer",
        "t",
        "--connect",
        address,
        "--count",
        &count,
        "jobs",
    ];
    server.pgnotify().args(args).run()
}

#[test]
fn a_tcp_peer_gets_every_event_and_a_clean_end_is_acknowledged_once_it_closes() {
    let server = Server::start();
    store(&server, "jobs", &numbered("e", 0..3000));
    let (port, peer) = tcp_peer(None, true);
    let address = format!("127.0.0.1:{port}");
    to_peer(&server, &address, 3000).success();
    let connections = peer.join().unwrap();
    assert_eq!(connections.len(), 1);
    let got: Vec<String> = connections[0]
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got, numbered("e", 0..3000));
    // The peer closed after reading everything: all of it is acknowledged, exactly once.
    store(&server, "jobs", &["next".into()]);
    let mut run = consumer(&server, "t", &["jobs"]);
    assert_eq!(
        payloads(&drain(&mut run, Duration::from_millis(1000))),
        ["next"]
    );
}

#[test]
fn a_lost_tcp_peer_gets_what_it_may_not_have_read_again_and_nothing_is_missed() {
    let server = Server::start();
    store(&server, "jobs", &numbered("e", 0..3000));
    // The peer drops its first connection after 700 lines, unread data and all.
    let (port, peer) = tcp_peer(Some(700), true);
    let address = format!("127.0.0.1:{port}");
    let mut cmd = server.pgnotify();
    cmd.args([
        "-v",
        "pipe",
        "--consumer",
        "t",
        "--connect",
        &address,
        "jobs",
    ]);
    let mut run = cmd.spawn();
    run.wait_stderr("connected to the TCP peer");
    std::thread::sleep(Duration::from_millis(500));
    // The next write finds the connection gone: a new one begins with what the lost one may
    // not have had read.
    store(&server, "jobs", &numbered("f", 0..10));
    run.wait_stderr("lost the TCP peer");
    run.wait_stderr("connected to the TCP peer");
    std::thread::sleep(Duration::from_millis(500));
    run.signal(Signal::SIGTERM);
    assert_eq!(run.finish().0.code(), Some(143), "{}", run.report());
    let connections = peer.join().unwrap();
    assert_eq!(connections.len(), 2, "{}", run.report());
    let payloads_of = |c: &[String]| -> Vec<String> {
        c.iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["payload"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (first, second) = (payloads_of(&connections[0]), payloads_of(&connections[1]));
    assert_eq!(first, numbered("e", 0..700));
    let mut expected = numbered("e", 0..3000);
    expected.extend(numbered("f", 0..10));
    // Everything the first connection carried beyond what the peer read is in the socket
    // buffers' window: all of it comes again, in order, then the new events.
    assert_eq!(second, expected, "{}", run.report());
    // The peer closed after the half-close: all acknowledged.
    let mut again = consumer(&server, "t", &["jobs"]);
    assert!(drain(&mut again, Duration::from_millis(1000)).is_empty());
}

#[test]
fn a_tcp_peer_that_never_closes_leaves_its_tail_unacknowledged() {
    let server = Server::start();
    store(&server, "jobs", &numbered("e", 0..100));
    let (port, _peer) = tcp_peer(None, false);
    let address = format!("127.0.0.1:{port}");
    to_peer(&server, &address, 100)
        .success()
        .stderr_has("did not close its end");
    // Nothing proved the peer read them: they come again.
    let mut run = consumer(&server, "t", &["jobs"]);
    assert_eq!(
        payloads(&drain(&mut run, Duration::from_millis(1000))),
        numbered("e", 0..100)
    );
}

#[test]
fn ddl_after_a_durable_install_still_never_fails_a_write_and_its_events_say_stale() {
    let server = Server::start();
    server.psql("CREATE TABLE t (id int PRIMARY KEY, note text)");
    server.watch_table(&["t", "--durable"]);
    server.psql("ALTER TABLE t RENAME COLUMN id TO ident");
    server.psql("INSERT INTO t VALUES (1, 'after the rename')");
    let mut run = consumer(&server, "c", &["t"]);
    let event = read_events(&mut run, 1).remove(0);
    let payload: Value = serde_json::from_str(&event.payload).unwrap();
    assert_eq!(payload["stale"], true, "{payload}");
    assert_eq!(payload["op"], "INSERT");
    drain(&mut run, Duration::from_millis(300));
}

#[test]
fn odd_consumer_and_channel_names_are_bound_never_spliced() {
    let server = Server::start();
    let (name, channel) = ("it's \"x\" ü; DROP TABLE y", "Or\"ders'; --");
    store(&server, channel, &["one".into()]);
    let out = server
        .pgnotify()
        .args(["pipe", "--consumer", name, "--count", "1", channel])
        .run();
    out.success();
    assert!(
        out.stdout.contains("\"payload\":\"one\""),
        "{}",
        out.report()
    );
    std::thread::sleep(Duration::from_millis(1100));
    store(&server, channel, &["two".into()]);
    std::thread::sleep(Duration::from_millis(1100));
    server
        .pgnotify()
        .args(["consumers", "--max-lag", "1s"])
        .run()
        .code(1)
        .stderr_has("pgnotify consumers --drop 'it'\\''s \"x\" ü; DROP TABLE y'");
    server
        .pgnotify()
        .args(["consumers", "--drop", name])
        .run()
        .success();
    assert_eq!(server.psql("SELECT count(*) FROM pgnotify.consumers"), "0");
}

#[test]
fn a_consumer_waits_for_a_server_that_is_down_and_gives_up_after_max_downtime() {
    let server = Server::start();
    store(&server, "jobs", &["before".into()]);
    server.pg_ctl(&["stop", "-m", "fast"]);
    let mut cmd = server.pgnotify();
    cmd.args(["-v", "pipe", "--consumer", "w", "--wait", "jobs"]);
    let mut waiting = cmd.spawn();
    waiting.wait_stderr("could not connect yet");
    let pid = waiting.pid();
    let census = || {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        (threads, fds)
    };
    std::thread::sleep(Duration::from_millis(1500));
    let early = census();
    // A refused connection is retried within a second: a few more attempts.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        census(),
        early,
        "threads and descriptors stay flat while retrying"
    );
    server.pg_ctl(&["start", "-w"]);
    assert_eq!(payloads(&read_events(&mut waiting, 1)), ["before"]);
    // Down for good: --max-downtime ends the run with status 3.
    let mut cmd = server.pgnotify();
    cmd.args(["pipe", "--consumer", "w2", "--max-downtime", "2s", "jobs"]);
    let mut bounded = cmd.spawn();
    std::thread::sleep(Duration::from_millis(500));
    server.pg_ctl(&["stop", "-m", "immediate"]);
    let started = Instant::now();
    let (status, _) = bounded.finish();
    assert_eq!(status.code(), Some(3), "{}", bounded.report());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    waiting.signal(Signal::SIGKILL);
    waiting.finish();
}

#[test]
fn consumers_without_a_schema_say_so_and_checkpoints_are_written_in_batches() {
    let server = Server::start();
    server
        .pgnotify()
        .args(["consumers"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("no pgnotify schema");
    store(&server, "jobs", &numbered("e", 0..20_000));
    let mut run = consumer(&server, "c", &["jobs"]);
    assert_eq!(read_events(&mut run, 20_000).len(), 20_000);
    drain(&mut run, Duration::from_millis(300));
    let updates: i64 = server
        .psql(
            "SELECT pg_stat_force_next_flush(); \
             SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgnotify.consumers'::regclass",
        )
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("20,000 events acknowledged in {updates} checkpoint writes");
    assert!(
        (1..200).contains(&updates),
        "{updates} checkpoint writes for 20,000 events: batched, never one per event"
    );
}

/// The consumer's session, by what it runs (only it reads the outbox here).
fn consumer_backends(server: &Server) -> Vec<i32> {
    let mut client = server.client();
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgnotify' \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn sessions_lost_while_a_slow_output_holds_a_batch_lose_nothing() {
    let server = Server::start();
    let all = numbered("e", 0..20_000);
    store(&server, "jobs", &all);
    let mut run = consumer(&server, "slow", &["jobs"]);
    let mut got = Vec::new();
    // Read slowly, so that the consumer holds a batch while it waits for room in its queue,
    // storing checkpoints meanwhile; and end its session now and then.
    for round in 0..40 {
        got.extend(read_events(&mut run, 200));
        std::thread::sleep(Duration::from_millis(30));
        if round % 8 == 7 {
            for pid in consumer_backends(&server) {
                server.psql(&format!("SELECT pg_terminate_backend({pid})"));
            }
        }
    }
    got.extend(drain(&mut run, Duration::from_millis(1500)));
    let lost = run.stderr().matches("reconnecting").count();
    assert!(lost >= 3, "sessions were lost: {}", run.report());
    let unique = unique_payloads(&got);
    assert_eq!(
        unique, all,
        "every event, in order, across five lost sessions"
    );
}

#[test]
fn a_consumer_takes_no_new_channel_but_may_drop_one_and_stops_once_dropped() {
    let server = Server::start();
    store(&server, "a", &["a1".into()]);
    store(&server, "b", &["b1".into()]);
    server
        .pgnotify()
        .args(["pipe", "--consumer", "c", "--count", "1", "a"])
        .run()
        .success();
    // Its one checkpoint is past b1: taking b on now would skip it.
    server
        .pgnotify()
        .args(["pipe", "--consumer", "c", "a", "b"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("consumer \"c\" follows a, not b");
    let mut fresh = consumer(&server, "d", &["a", "b"]);
    assert_eq!(payloads(&read_events(&mut fresh, 2)), ["a1", "b1"]);
    drain(&mut fresh, Duration::from_millis(200));
    server
        .pgnotify()
        .args(["pipe", "--consumer", "d", "--timeout", "1s", "a"])
        .run()
        .code(124);
    assert_eq!(
        server.psql("SELECT channels FROM pgnotify.consumers WHERE name = 'd'"),
        "{a}"
    );
    // Dropped while it runs: its next session finds it gone, and it stops.
    let mut run = consumer(&server, "d", &["a"]);
    run.wait_stderr("consumer \"d\"");
    server
        .pgnotify()
        .args(["consumers", "--drop", "d"])
        .run()
        .success();
    for pid in consumer_backends(&server) {
        server.psql(&format!("SELECT pg_terminate_backend({pid})"));
    }
    let (status, _) = run.finish();
    assert_eq!(status.code(), Some(1), "{}", run.report());
    assert!(
        run.stderr().contains("was dropped while it ran"),
        "{}",
        run.report()
    );
    assert_eq!(
        server.psql("SELECT count(*) FROM pgnotify.consumers WHERE name = 'd'"),
        "0",
        "not registered again"
    );
}

#[test]
fn a_signal_stops_a_consumer_whose_command_keeps_failing_and_count_does_not_wait_for_it() {
    let server = Server::start();
    store(&server, "jobs", &numbered("e", 0..30));
    let mut cmd = server.pgnotify();
    cmd.args(["pipe", "--consumer", "x", "--exec", "exit 1", "jobs"]);
    let mut run = cmd.spawn();
    run.wait_stderr("retrying in 1 s");
    let signalled = Instant::now();
    run.signal(Signal::SIGTERM);
    let (status, _) = run.finish();
    assert_eq!(status.code(), Some(143), "{}", run.report());
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the first signal stops it: {:?}",
        signalled.elapsed()
    );
    let started = Instant::now();
    server
        .pgnotify()
        .args([
            "pipe",
            "--consumer",
            "x",
            "--exec",
            "exit 1",
            "--count",
            "1",
            "jobs",
        ])
        .run()
        .success();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Nothing succeeded: all 30 are still there for the next run.
    let mut again = consumer(&server, "x", &["jobs"]);
    assert_eq!(drain(&mut again, Duration::from_millis(1000)).len(), 30);
}

#[test]
fn a_session_the_server_still_keeps_after_a_cut_gives_back_the_consumers_name() {
    let server = Server::start();
    let proxy = crate::support::proxy::Proxy::start(server.cluster.port());
    let port = proxy.port.to_string();
    let mut run = server
        .through(&port)
        .args(["-v", "pipe", "--consumer", "net", "jobs"])
        .spawn();
    run.wait_stderr("is new");
    store(&server, "jobs", &["before".into()]);
    assert_eq!(payloads(&read_events(&mut run, 1)), ["before"]);
    // The consumer's connection is reset; the server's end stays open, so its session lives
    // on, holding the consumer's name.
    proxy.cut_client_side();
    run.wait_stderr("reconnecting");
    run.wait_stderr("running already");
    store(&server, "jobs", &["after".into()]);
    assert_eq!(
        payloads(&read_events(&mut run, 1)),
        ["after"],
        "back, its old session ended: {}",
        run.report()
    );
    drain(&mut run, Duration::from_millis(300));
}

#[test]
fn fetch_reads_the_rows_of_durable_events_too() {
    let server = Server::start();
    server.psql("CREATE TABLE o (id int PRIMARY KEY, v text)");
    server.watch_table(&["o", "--durable"]);
    server.psql("INSERT INTO o VALUES (1, 'one'), (2, 'two'); DELETE FROM o WHERE id = 2");
    let out = server
        .pgnotify()
        .args(["pipe", "--consumer", "f", "--fetch", "--count", "3", "o"])
        .run();
    out.success();
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"]["new"].clone())
        .collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({"id": 1, "v": "one"}),
            Value::Null,
            Value::Null
        ],
        "{}",
        out.report()
    );
}

#[test]
fn a_consumer_role_with_a_lock_timeout_waits_for_a_prune_instead_of_failing() {
    let server = Server::start();
    server
        .pgnotify()
        .args(["consumers", "--install"])
        .run()
        .success();
    server.psql("CREATE ROLE c LOGIN; ALTER ROLE c SET lock_timeout = '100ms'");
    server
        .pgnotify()
        .args(["consumers", "--grant-consumer", "c"])
        .run()
        .success();
    let mut cmd = server.pgnotify();
    cmd.args(["-U", "c", "-v", "pipe", "--consumer", "lt", "jobs"]);
    let mut run = cmd.spawn();
    run.wait_stderr("is new");
    // What another consumer's prune holds, for longer than the role's lock_timeout.
    let mut holder = server.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE pgnotify.consumers IN SHARE MODE")
        .unwrap();
    store(&server, "jobs", &["one".into()]);
    assert_eq!(payloads(&read_events(&mut run, 1)), ["one"]);
    std::thread::sleep(Duration::from_millis(800));
    holder.batch_execute("COMMIT").unwrap();
    store(&server, "jobs", &["two".into()]);
    assert_eq!(
        payloads(&read_events(&mut run, 1)),
        ["two"],
        "{}",
        run.report()
    );
    drain(&mut run, Duration::from_millis(300));
}

#[test]
fn a_signal_stops_a_consumer_whose_reader_or_peer_does_not_read() {
    let server = Server::start();
    let all = numbered(&"x".repeat(200), 0..5000);
    store(&server, "jobs", &all);
    // Its stdout pipe is full and nobody reads it.
    let mut run = consumer(&server, "stalled", &["jobs"]);
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    run.signal(Signal::SIGTERM);
    let (status, rest) = run.finish();
    assert_eq!(status.code(), Some(143), "{}", run.report());
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "{:?}",
        signalled.elapsed()
    );
    // What the pipe held was written (and acknowledged); the rest comes next time: together,
    // everything, none skipped.
    let mut got: Vec<Event> = whole_lines(&rest)
        .into_iter()
        .map(|l| parse(l, &run))
        .collect();
    let mut again = consumer(&server, "stalled", &["jobs"]);
    got.extend(drain(&mut again, Duration::from_millis(1500)));
    let unique = unique_payloads(&got);
    assert_eq!(unique, all);
    // A TCP peer that accepts and never reads.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let _held = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(conns);
    });
    store(&server, "jobs", &numbered(&"y".repeat(500), 0..20_000));
    let mut cmd = server.pgnotify();
    cmd.args(["pipe", "--consumer", "peer", "--connect", &address, "jobs"]);
    let mut to_peer = cmd.spawn();
    std::thread::sleep(Duration::from_millis(2000));
    let signalled = Instant::now();
    to_peer.signal(Signal::SIGTERM);
    let (status, _) = to_peer.finish();
    assert_eq!(status.code(), Some(143), "{}", to_peer.report());
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "{:?}",
        signalled.elapsed()
    );
}

#[test]
fn exec_with_jobs_and_count_runs_and_acknowledges_exactly_count_commands() {
    let server = Server::start();
    store(&server, "jobs", &numbered("e", 0..40));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    let command = format!("echo \"$PGNOTIFY_PAYLOAD\" >> {}", log.display());
    for round in 0..5 {
        server
            .pgnotify()
            .args([
                "pipe",
                "--consumer",
                "n",
                "--exec",
                &command,
                "--jobs",
                "8",
                "--count",
                "8",
                "jobs",
            ])
            .run()
            .success();
        let ran = std::fs::read_to_string(&log).unwrap();
        assert_eq!(ran.lines().count(), 8 * (round + 1), "round {round}: {ran}");
    }
    let mut ran: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    ran.sort_by_key(|p| p[1..].parse::<u32>().unwrap());
    assert_eq!(ran, numbered("e", 0..40), "each once, none skipped");
}
