//! The edges of target_session_attrs and failover (listen/pipe), from an adversarial review,
//! with psql (libpq 15) as the oracle where it has one: the defects it found, fixed, and the
//! behaviour that held up under attack.

use super::failover::assert_on;
use crate::support::{Cmd, FakeServer, Line, PATIENCE, Running, Server};
use std::collections::HashSet;
use std::io::BufRead;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// helpers

/// `host=127.0.0.1,... port=A,B,...` for these ports, in this order.
fn conninfo_ports(ports: &[u16], attrs: &str) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    format!(
        "host={hosts} port={} user=postgres dbname=postgres target_session_attrs={attrs}",
        ports.join(",")
    )
}

pub(super) fn hosts(servers: &[&Server], attrs: &str) -> String {
    let ports: Vec<u16> = servers.iter().map(|s| s.cluster.port()).collect();
    conninfo_ports(&ports, attrs)
}

pub(super) fn connected_to(server: &Server) -> String {
    connected_to_port(server.cluster.port())
}

fn connected_to_port(port: u16) -> String {
    format!("connected to server at \"127.0.0.1\", port {port} as user")
}

/// The port of the last `connected to server at "127.0.0.1", port N` line, if any.
fn chosen_port(stderr: &str) -> Option<u16> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l
                .split("connected to server at \"127.0.0.1\", port ")
                .nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .next_back()
}

/// With -v, stderr has info lines; an error is still exactly one line, the last, and no
/// panic.
fn last_line_is_the_only_error(out: &crate::support::Outcome) {
    let errors = out.stderr.lines().filter(|l| l.contains("error")).count();
    assert!(errors <= 1, "more than one error line{}", out.report());
    if errors == 1 {
        assert!(
            out.stderr
                .lines()
                .last()
                .unwrap()
                .starts_with("pgnotify: error: "),
            "{}",
            out.report()
        );
    }
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("not a timestamp: {text:?}: {e}"))
}

/// The number of entries in /proc/PID/DIR (task: threads, fd: descriptors).
fn count(pid: u32, dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{dir}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What psql (libpq) chooses for this conninfo: the port it reached, or None when it failed.
fn psql_choice(via: &Server, conninfo: &str) -> Option<u16> {
    let out = via.psql_as_client(
        &format!("{conninfo} sslmode=disable"),
        "select inet_server_port()",
    );
    match out.status.success() {
        true => out.stdout.trim().parse().ok(),
        false => None,
    }
}

fn fake_conninfo(ports: &[u16], attrs: &str, extra: &str) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    format!(
        "host={hosts} port={} user=u dbname=d target_session_attrs={attrs} {extra}",
        ports.join(",")
    )
}

/// Waits until `running` has written a stderr line with `needle`, polling what it collected
/// (unlike `wait_stderr`, lines already consumed count too).
pub(super) fn wait_stderr_has(running: &Running, needle: &str, within: Duration) {
    let start = Instant::now();
    while !running.stderr().contains(needle) {
        assert!(
            start.elapsed() < within,
            "no stderr line with {needle:?} within {within:?}{}",
            running.report()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. promotion under load, with a heartbeat: nothing lost outside the gap

/// A notification a writer sent: payload, just before it was sent, and just after its commit
/// returned (`None` when the commit's outcome is unknown: the connection failed).
struct Sent {
    payload: String,
    before: jiff::Timestamp,
    after: Option<jiff::Timestamp>,
}

fn promotion_under_load_loses_nothing_outside_the_gap(attrs: &str) {
    let primary = Server::start();
    let standby = primary.standby();
    let conninfo = hosts(&[&primary, &standby], attrs);
    let mut pipe = primary
        .bare()
        .args(["-v", "-d", &conninfo, "pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    assert_on(&pipe, &primary);
    // Let a heartbeat or two be answered, so that `from` is a heartbeat's, not LISTEN's.
    std::thread::sleep(Duration::from_millis(2500));
    // A writer that sends as fast as it can until its connection dies with the server.
    let writer_conninfo = primary.cluster.conninfo();
    let writer = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&writer_conninfo, postgres::NoTls).unwrap();
        let mut sent = Vec::new();
        for i in 0.. {
            let payload = format!("pre-{i:06}");
            let before = jiff::Timestamp::now();
            let ok = client
                .execute("SELECT pg_notify('jobs', $1)", &[&payload])
                .is_ok();
            let after = ok.then(jiff::Timestamp::now);
            sent.push(Sent {
                payload,
                before,
                after,
            });
            if !ok {
                break;
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let stop_started = jiff::Timestamp::now();
    primary.pg_ctl(&["stop", "-m", "fast"]);
    let sent = writer.join().unwrap();
    assert!(
        sent.len() > 10,
        "the writer sent too little: {}",
        sent.len()
    );
    pipe.assert_running_for(
        Duration::from_secs(2),
        "the standby is passed over, not the end",
    );
    let promote_started = jiff::Timestamp::now();
    standby.cluster.promote().expect("promote");
    let promoted = Instant::now();
    let (records, gap) = pipe.read_until_gap();
    // Attempts that are answered at once are at most 1 s apart (README).
    assert!(
        promoted.elapsed() < Duration::from_millis(2500),
        "listening again {:?} after the promotion{}",
        promoted.elapsed(),
        pipe.report()
    );
    let gap_seen = jiff::Timestamp::now();
    assert_eq!(gap.gap, "reconnect", "{}", pipe.report());
    let from = ts(&gap.from);
    let until = ts(gap.until.as_deref().expect("until"));
    // What was received is a prefix of what was sent, in order, nothing else.
    let received: Vec<&str> = records.iter().map(|r| r.payload.as_str()).collect();
    for (i, payload) in received.iter().enumerate() {
        assert_eq!(
            *payload,
            sent[i].payload,
            "received out of order or unknown{}",
            pipe.report()
        );
    }
    let got: HashSet<&str> = received.iter().copied().collect();
    // Every committed notification not received must have been committable inside the gap.
    for s in &sent {
        if got.contains(s.payload.as_str()) {
            continue;
        }
        if let Some(after) = s.after {
            assert!(
                after >= from,
                "{} was committed by {after}, before the gap's from {from}, and never \
                 arrived ({} of {} received){}",
                s.payload,
                received.len(),
                sent.len(),
                pipe.report()
            );
        }
        assert!(s.before <= until, "{}", pipe.report());
    }
    eprintln!(
        "sent {}, received {} before the gap, from {from}, stop {stop_started}, until {until}",
        sent.len(),
        received.len()
    );
    assert!(from <= stop_started, "from {from} is after the stop began");
    assert!(
        until >= promote_started && until <= gap_seen,
        "until {until} is not after the promotion began ({promote_started}) and before the \
         record was read ({gap_seen}){}",
        pipe.report()
    );
    assert_eq!(
        gap.down_ms,
        until.duration_since(from).as_millis() as i64,
        "down_ms is until - from{}",
        pipe.report()
    );
    assert_on(&pipe, &standby);
    standby.notify("jobs", "after");
    assert_eq!(pipe.read_record().payload, "after", "{}", pipe.report());
    // And the writes the promoted server takes arrive too, in order.
    for i in 0..50 {
        standby.notify("jobs", &format!("post-{i}"));
    }
    for i in 0..50 {
        assert_eq!(pipe.read_record().payload, format!("post-{i}"));
    }
}

#[test]
fn promotion_under_load_with_a_heartbeat_primary() {
    promotion_under_load_loses_nothing_outside_the_gap("primary");
}

#[test]
fn promotion_under_load_with_a_heartbeat_read_write() {
    promotion_under_load_loses_nothing_outside_the_gap("read-write");
}

#[test]
fn promotion_under_load_with_a_heartbeat_any() {
    // The default: the standby is passed over because LISTEN cannot run there.
    promotion_under_load_loses_nothing_outside_the_gap("any");
}

// ---------------------------------------------------------------------------------------------
// 2. split brain: the old primary comes back as a primary too

#[test]
fn split_brain_the_reconnect_takes_the_first_primary_in_list_order_as_libpq_does() {
    let primary = Server::start();
    let standby = primary.standby();
    let conninfo = hosts(&[&primary, &standby], "primary");
    let mut pipe = primary
        .bare()
        .args(["-v", "-d", &conninfo, "pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    primary.pg_ctl(&["stop", "-m", "fast"]);
    standby.cluster.promote().expect("promote");
    let (_, gap) = pipe.read_until_gap();
    assert!(gap.until.is_some());
    assert_on(&pipe, &standby);
    // The old primary comes back, a primary too: two primaries.
    primary.pg_ctl(&["start"]);
    standby.notify("jobs", "on the promoted one");
    assert_eq!(pipe.read_record().payload, "on the promoted one");
    // Nothing makes it switch while its connection holds (libpq does not either).
    pipe.assert_running_for(Duration::from_secs(1), "stays");
    let sessions_on_old = primary.sessions("pgnotify");
    assert_eq!(sessions_on_old, 0, "{}", pipe.report());
    // Its connection lost, it takes the first primary in the list, as libpq would.
    let oracle = psql_choice(&primary, &conninfo);
    assert_eq!(oracle, Some(primary.cluster.port()));
    let pid = standby.backend_pid("pgnotify");
    standby.psql(&format!("SELECT pg_terminate_backend({pid})"));
    let (_, gap) = pipe.read_until_gap();
    assert!(gap.until.is_some(), "{}", pipe.report());
    assert_eq!(
        chosen_port(&pipe.stderr()),
        oracle,
        "chose as psql does{}",
        pipe.report()
    );
    primary.notify("jobs", "on the old one");
    assert_eq!(pipe.read_record().payload, "on the old one");
    // Every other attribute chooses as psql does between the two primaries, both orders.
    for attrs in ["any", "read-write", "primary", "prefer-standby"] {
        for order in [[&primary, &standby], [&standby, &primary]] {
            let conninfo = hosts(&order, attrs);
            let oracle = psql_choice(&primary, &conninfo);
            let out = primary
                .bare()
                .args([
                    "-v",
                    "-d",
                    &conninfo,
                    "listen",
                    "jobs",
                    "--timeout",
                    "200ms",
                ])
                .run();
            out.code(124);
            assert_eq!(chosen_port(&out.stderr), oracle, "{attrs}{}", out.report());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. every value and order, next to psql

#[test]
fn every_value_and_order_chooses_as_psql_does() {
    let primary = Server::start();
    let standby = primary.standby();
    let (p, s) = (primary.cluster.port(), standby.cluster.port());
    for attrs in [
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ] {
        for order in [[p, s], [s, p], [p, p], [s, s]] {
            let conninfo = conninfo_ports(&order, attrs);
            let oracle = psql_choice(&primary, &conninfo);
            // notify: a plain client chooses exactly as libpq does.
            let out = primary
                .bare()
                .args(["-v", "-d", &conninfo, "notify", "probe", "x"])
                .run();
            assert_eq!(
                chosen_port(&out.stderr),
                oracle,
                "notify, {attrs} {order:?}{}",
                out.report()
            );
            match oracle {
                Some(port) if port == p => out.success(),
                Some(_) => out.code(1).stderr_has("hot standby"),
                None => out.code(3),
            };
            last_line_is_the_only_error(&out);
            // listen: as libpq, except that a standby is passed over (README).
            let out = primary
                .bare()
                .args([
                    "-v",
                    "-d",
                    &conninfo,
                    "listen",
                    "probe",
                    "--timeout",
                    "200ms",
                ])
                .run();
            let expected = match attrs {
                "read-only" | "standby" => None,
                _ if order.contains(&p) => Some(p),
                _ => None,
            };
            assert_eq!(
                chosen_port(&out.stderr),
                expected,
                "listen, {attrs} {order:?}{}",
                out.report()
            );
            // standby can never listen: a usage error, before connecting.
            match (expected, attrs) {
                (Some(_), _) => out.code(124),
                (None, "standby") => out.code(2),
                (None, _) => out.code(3),
            };
            last_line_is_the_only_error(&out);
        }
    }
}

#[test]
fn pgtargetsessionattrs_and_uri_spellings_choose_as_psql_does() {
    let primary = Server::start();
    let standby = primary.standby();
    let (p, s) = (primary.cluster.port(), standby.cluster.port());
    // The environment variable.
    let base = format!("host=127.0.0.1,127.0.0.1 port={s},{p} user=postgres dbname=postgres");
    let out = primary
        .bare()
        .env("PGTARGETSESSIONATTRS", "read-write")
        .args(["-v", "-d", &base, "notify", "probe", "x"])
        .run();
    out.success().stderr_has(&connected_to(&primary));
    // The URI form.
    let uri = format!(
        "postgresql://postgres@127.0.0.1:{s},127.0.0.1:{p}/postgres?target_session_attrs=primary"
    );
    let out = primary
        .bare()
        .args(["-v", "-d", &uri, "notify", "probe", "x"])
        .run();
    out.success().stderr_has(&connected_to(&primary));
    // libpq compares the value exactly: `Primary` is refused by psql (status 1 from psql with
    // a bad conninfo value... psql says `invalid target_session_attrs value`).
    let bad = format!("{base} target_session_attrs=Primary");
    let psql = primary.psql_as_client(&bad, "select 1");
    assert!(!psql.status.success(), "{}", psql.report());
    assert!(
        psql.stderr.contains("invalid target_session_attrs value"),
        "{}",
        psql.report()
    );
    primary
        .bare()
        .args(["-d", &bad, "notify", "probe", "x"])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("invalid target_session_attrs value");
}

// ---------------------------------------------------------------------------------------------
// 4. --wait on a lone standby; a lone host that becomes a standby in the reconnect loop

#[test]
fn wait_on_a_lone_standby_keeps_waiting_and_starts_once_it_is_promoted() {
    let primary = Server::start();
    let standby = primary.standby();
    let mut pipe = primary
        .bare()
        .args([
            "-v",
            "-d",
            &hosts(&[&standby], "any"),
            "pipe",
            "jobs",
            "--wait",
        ])
        .spawn();
    pipe.assert_running_for(
        Duration::from_secs(3),
        "a standby may be promoted: --wait waits",
    );
    assert!(
        pipe.stderr().contains("hot standby mode"),
        "says why it waits{}",
        pipe.report()
    );
    primary.pg_ctl(&["stop", "-m", "fast"]);
    standby.cluster.promote().expect("promote");
    pipe.wait_ready();
    standby.notify("jobs", "first");
    // No gap: the stream had not begun.
    match pipe.read_any() {
        Line::Notification(n) => assert_eq!(n.payload, "first"),
        Line::Gap(g) => panic!("a gap before the stream began: {g:?}{}", pipe.report()),
    }
}

#[test]
fn a_lone_host_that_comes_back_as_a_standby_is_waited_for_not_the_end() {
    let primary = Server::start();
    let standby = primary.standby();
    // The old primary will follow the new one: its primary_conninfo, set ahead.
    primary.psql(&format!(
        "ALTER SYSTEM SET primary_conninfo = 'host={} port={} user=postgres'",
        standby.cluster.socket_dir().display(),
        standby.cluster.port()
    ));
    let mut pipe = primary
        .bare()
        .args([
            "-v",
            "-d",
            &hosts(&[&primary], "any"),
            "pipe",
            "jobs",
            "--heartbeat",
            "1s",
        ])
        .spawn();
    pipe.wait_ready();
    primary.pg_ctl(&["stop", "-m", "fast"]);
    standby.cluster.promote().expect("promote");
    // The switchover: the old primary starts again as a standby of the new one.
    let signal = primary.cluster.data_dir().join("standby.signal");
    std::fs::write(&signal, "").unwrap();
    if let Ok(Some(pg)) = nix::unistd::User::from_name("postgres")
        && nix::unistd::geteuid().is_root()
    {
        nix::unistd::chown(&signal, Some(pg.uid), Some(pg.gid)).unwrap();
    }
    primary.pg_ctl(&["start"]);
    assert!(primary.cluster.is_in_recovery().unwrap());
    // Every attempt now meets a hot standby: passed over, never the end.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if pipe.stderr().contains("hot standby mode") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pipe.assert_running_for(Duration::from_secs(3), "a standby is no end");
    assert!(
        pipe.stderr().contains("hot standby mode"),
        "{}",
        pipe.report()
    );
    primary.cluster.promote().expect("promote the old primary");
    pipe.resumes_after_gap(&primary, "jobs", "back");
}

// ---------------------------------------------------------------------------------------------
// 5. servers before PostgreSQL 14: the session query (fake servers)

#[test]
fn before_14_the_session_query_chooses_as_psql_does() {
    let old_standby = FakeServer::start("old-standby");
    let old_primary = FakeServer::start("old-primary");
    let (s, p) = (old_standby.port, old_primary.port);
    let via = Server::start();
    for attrs in [
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ] {
        for order in [[s, p], [p, s]] {
            let conninfo = fake_conninfo(&order, attrs, "");
            let psql = via.psql_as_client(
                &format!("{conninfo} sslmode=disable"),
                "select inet_server_port()",
            );
            let oracle: Option<u16> = psql.stdout.trim().parse().ok();
            assert!(oracle.is_some(), "psql chose{}", psql.report());
            let out = Cmd::new()
                .args(["-v", "-d", &conninfo, "listen", "fk", "--timeout", "300ms"])
                .run();
            // As libpq, except that a standby is passed over by a listener.
            let expected = match attrs {
                "read-only" | "standby" => None,
                _ => Some(p),
            };
            assert_eq!(
                chosen_port(&out.stderr),
                expected,
                "{attrs} {order:?} (psql: {oracle:?}){}",
                out.report()
            );
            match (expected, attrs) {
                (Some(_), _) => out.code(124),
                (None, "standby") => out
                    .code(2)
                    .one_line_error()
                    .stderr_has("target_session_attrs=standby cannot be used to listen"),
                (None, _) => out
                    .code(3)
                    .one_line_error()
                    .stderr_has("server is in hot standby mode"),
            };
        }
    }
}

#[test]
fn before_14_a_server_that_never_answers_the_session_query_is_bounded() {
    let hung = FakeServer::start("old-hang-session");
    let old_primary = FakeServer::start("old-primary");
    // connect_timeout bounds it, and the next host is taken.
    let started = Instant::now();
    let out = Cmd::new()
        .args([
            "-v",
            "-d",
            &fake_conninfo(&[hung.port, old_primary.port], "any", "connect_timeout=2"),
            "listen",
            "fk",
            "--timeout",
            "4s",
        ])
        .run();
    out.code(124)
        .stderr_has(&connected_to_port(old_primary.port));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{}",
        out.report()
    );
    // Alone, with connect_timeout: one line, status 3, after that long.
    let started = Instant::now();
    let out = Cmd::new()
        .args([
            "-d",
            &fake_conninfo(&[hung.port], "any", "connect_timeout=2"),
            "listen",
            "fk",
        ])
        .run();
    out.code(3).one_line_error().stderr_has("timeout expired");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{}",
        out.report()
    );
}

/// A server that does not answer the session query, or answers it with an error, is named
/// with what failed: the query that tells a standby (once worded as a client that could not
/// be set up, the words for running out of file descriptors).
#[test]
fn a_failed_session_query_says_what_failed() {
    let broken = FakeServer::start("old-session-error");
    let out = Cmd::new()
        .args([
            "-d",
            &fake_conninfo(&[broken.port], "any", ""),
            "listen",
            "fk",
        ])
        .run();
    out.code(3)
        .one_line_error()
        .stderr_has("pg_is_in_recovery() does not exist");
    assert!(
        !out.stderr.contains("could not set up a client"),
        "a server's answer is not a client that could not be set up{}",
        out.report()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. watch-table and notify on a standby

/// README: "`notify` and `watch-table` on a standby get the server's refusal with what to do:
/// ... the server is a hot standby, which is read-only: connect to the primary". The refusal of
/// DDL reads like a read-only session's, so watch-table asks the server which it is (it once
/// blamed default_transaction_read_only, off there: the wrong cause and the wrong fix).
#[test]
fn watch_table_on_a_standby_says_it_is_a_standby() {
    let primary = Server::start();
    primary.psql("CREATE TABLE orders (id int PRIMARY KEY)");
    let standby = primary.standby();
    standby.wait_until("the table replicated", || {
        standby.psql("SELECT to_regclass('orders') IS NOT NULL") == "t"
    });
    let out = standby
        .bare()
        .args(["-d", &hosts(&[&standby], "any"), "watch-table", "orders"])
        .run();
    out.code(1)
        .one_line_error()
        .stderr_has("read-only transaction (SQLSTATE 25006)");
    assert!(
        !out.stderr.contains("default_transaction_read_only"),
        "the standby's default_transaction_read_only is off: wrong cause{}",
        out.report()
    );
    out.stderr_has("hot standby")
        .stderr_has("target_session_attrs=primary");
}

#[test]
fn watch_table_drop_on_a_standby_says_it_is_a_standby() {
    let primary = Server::start();
    primary.psql("CREATE TABLE orders (id int PRIMARY KEY)");
    primary.watch_table(&["orders"]);
    let standby = primary.standby();
    let out = standby
        .bare()
        .args([
            "-d",
            &hosts(&[&standby], "any"),
            "watch-table",
            "orders",
            "--drop",
        ])
        .run();
    out.code(1).one_line_error();
    assert!(
        !out.stderr.contains("default_transaction_read_only"),
        "wrong cause{}",
        out.report()
    );
    out.stderr_has("hot standby");
    // --list only reads: it works on a standby.
    standby
        .bare()
        .args(["-d", &hosts(&[&standby], "any"), "watch-table", "--list"])
        .run()
        .success();
}

#[test]
fn notify_lines_on_a_standby_is_one_line_with_the_hint() {
    let primary = Server::start();
    let standby = primary.standby();
    standby
        .bare()
        .args([
            "-d",
            &hosts(&[&standby], "any"),
            "notify",
            "--lines",
            "jobs",
        ])
        .stdin("a\nb\n")
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("during recovery")
        .stderr_has("target_session_attrs=primary");
}

// ---------------------------------------------------------------------------------------------
// 7. listening with target_session_attrs=standby can never work

/// A listener with `target_session_attrs=standby` can never connect (a standby cannot LISTEN,
/// and only a standby matches), whatever the servers do. That is a mistake in what was given:
/// DESIGN.md's status 2, found before connecting (it once failed with status 3, and with
/// --wait retried forever).
#[test]
fn listen_with_target_session_attrs_standby_is_a_usage_error() {
    let primary = Server::start();
    let standby = primary.standby();
    let out = primary
        .bare()
        .args([
            "-d",
            &hosts(&[&primary, &standby], "standby"),
            "listen",
            "jobs",
        ])
        .run();
    out.one_line_error()
        .stderr_has("target_session_attrs=standby");
    out.code(2);
}

#[test]
fn pipe_wait_with_target_session_attrs_standby_does_not_wait_forever() {
    let primary = Server::start();
    let standby = primary.standby();
    let mut pipe = primary
        .bare()
        .args([
            "-d",
            &hosts(&[&standby], "standby"),
            "pipe",
            "jobs",
            "--wait",
        ])
        .spawn();
    let start = Instant::now();
    while pipe.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still retrying a setting that can never work{}",
            pipe.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// 8. permanent vs transient across hosts

#[test]
fn a_wrong_password_on_one_host_and_a_standby_on_the_other_keeps_trying() {
    let primary = Server::start_with(&pgnotify::tempdb::Options {
        hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    primary.psql("ALTER ROLE postgres PASSWORD 'right'");
    let standby = primary.standby();
    // The standby trusts loopback: only the primary refuses the password.
    let hba = standby.cluster.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{text}")).unwrap();
    standby.pg_ctl(&["reload"]);
    std::thread::sleep(Duration::from_millis(300));
    let conninfo = hosts(&[&primary, &standby], "any");
    // Without --wait: status 3, one line, both reasons.
    primary
        .bare()
        .env("PGPASSWORD", "wrong")
        .args(["-w", "-d", &conninfo, "listen", "jobs"])
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("28P01")
        .stderr_has("hot standby mode");
    // --wait: the standby may be promoted, so it is not "refused for good" everywhere.
    let mut pipe = primary
        .bare()
        .env("PGPASSWORD", "wrong")
        .args(["-w", "-v", "-d", &conninfo, "pipe", "jobs", "--wait"])
        .spawn();
    pipe.assert_running_for(Duration::from_secs(3), "not every host refused for good");
    primary.pg_ctl(&["stop", "-m", "fast"]);
    standby.cluster.promote().expect("promote");
    pipe.wait_ready();
    assert_on(&pipe, &standby);
    standby.notify("jobs", "in");
    assert_eq!(pipe.read_record().payload, "in");
}

#[test]
fn a_wrong_password_on_every_host_ends_the_reconnect_loop_even_with_a_standby() {
    let primary = Server::start_with(&pgnotify::tempdb::Options {
        hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    primary.psql("ALTER ROLE postgres PASSWORD 'right'");
    let standby = primary.standby();
    let conninfo = hosts(&[&primary, &standby], "primary");
    let mut pipe = primary
        .bare()
        .env("PGPASSWORD", "right")
        .args([
            "-w",
            "-v",
            "-d",
            &conninfo,
            "pipe",
            "jobs",
            "--heartbeat",
            "1s",
        ])
        .spawn();
    pipe.wait_ready();
    // The password changes (and replicates); the session is cut.
    primary.psql("ALTER ROLE postgres PASSWORD 'changed'");
    standby.wait_until("the new password replicated", || {
        standby.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
            == primary.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
    });
    let pid = primary.backend_pid("pgnotify");
    primary.psql(&format!("SELECT pg_terminate_backend({pid})"));
    let (_, gap) = pipe.read_until_gap();
    assert!(gap.until.is_none(), "a last gap record{gap:?}");
    let rest = pipe.expect_exit(3);
    assert!(rest.is_empty(), "{rest}");
    assert!(pipe.stderr().contains("28P01"), "{}", pipe.report());
}

// ---------------------------------------------------------------------------------------------
// 9. resources while passing over a standby hundreds of times

#[test]
fn passing_over_a_standby_hundreds_of_times_keeps_threads_fds_and_sessions_flat() {
    let primary = Server::start();
    let standby = primary.standby();
    // The standby ten times: every attempt passes over it ten times.
    let mut list = vec![&primary];
    list.extend(std::iter::repeat_n(&standby, 10));
    let conninfo = hosts(&list, "primary");
    let mut pipe = primary
        .bare()
        .args(["-v", "-d", &conninfo, "pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    let pid = pipe.child.id();
    primary.pg_ctl(&["stop", "-m", "fast"]);
    wait_stderr_has(&pipe, "reconnection attempt 3 failed", PATIENCE);
    // Flat: between the fewest and the most seen, at most one attempt's thread and sockets.
    let (threads0, fds0) = (count(pid, "task"), count(pid, "fd"));
    let mut max_sessions = 0;
    let (mut max_threads, mut max_fds) = (threads0, fds0);
    let (mut min_threads, mut min_fds) = (threads0, fds0);
    // Until the standby has been passed over 100 times (10 attempts), however slow the
    // machine: a count, not a duration, so that load cannot make it fail.
    let attempts = || {
        pipe.stderr()
            .lines()
            .filter(|l| l.contains("reconnection attempt"))
            .count()
    };
    let start = Instant::now();
    while attempts() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "only {} attempts in 90 s{}",
            attempts(),
            pipe.report()
        );
        max_sessions = max_sessions.max(standby.sessions("pgnotify"));
        let (threads, fds) = (count(pid, "task"), count(pid, "fd"));
        (max_threads, min_threads) = (max_threads.max(threads), min_threads.min(threads));
        (max_fds, min_fds) = (max_fds.max(fds), min_fds.min(fds));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        max_threads <= min_threads + 1,
        "threads grew: between {min_threads} and {max_threads}"
    );
    assert!(
        max_fds <= min_fds + 6,
        "descriptors grew: between {min_fds} and {max_fds}"
    );
    assert!(
        max_sessions <= 1,
        "{max_sessions} sessions on the standby at once"
    );
    let log = std::fs::read_to_string(standby.cluster.log_path()).unwrap();
    let noisy = log
        .lines()
        .filter(|l| l.contains("could not receive data") || l.contains("unexpected EOF"))
        .count();
    assert!(noisy < 10, "{noisy} lines of noise in the standby's log");
    standby.cluster.promote().expect("promote");
    pipe.resumes_after_gap(&standby, "jobs", "after");
    assert_eq!(standby.sessions("pgnotify"), 1);
}

// ---------------------------------------------------------------------------------------------
// 10. a host that accepts but cannot LISTEN

/// Host 1 completes the start-up (it reports in_hot_standby=off) and then never answers
/// LISTEN (a hung backend: `fake_pg.py hang-on-query`); host 2 is a healthy primary. LISTEN's
/// failure is that host's: the next host of the list is tried, at start and in the reconnect
/// loop (README: "keeps trying both"; it once began with host 1 again every time, and never
/// reached host 2).
#[test]
fn a_host_that_never_answers_listen_is_passed_over_for_the_next() {
    let hung = FakeServer::start("hang-on-query");
    let primary = Server::start();
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres connect_timeout=2",
        hung.port,
        primary.cluster.port()
    );
    // At the start: host 2 taken, no notification, 124 (it was status 3, "could not listen").
    primary
        .bare()
        .args(["-v", "-d", &conninfo, "listen", "jobs", "--timeout", "6s"])
        .run()
        .code(124)
        .stderr_has(&connected_to(&primary));
    // The same through --wait, the reconnect loop's way in.
    let pipe = primary
        .bare()
        .args(["-v", "-d", &conninfo, "pipe", "jobs", "--wait"])
        .spawn();
    wait_stderr_has(&pipe, "listening on", Duration::from_secs(12));
    assert_on(&pipe, &primary);
}

// ---------------------------------------------------------------------------------------------
// 11. bounds while only a standby is left

#[test]
fn max_downtime_with_only_a_standby_left_gives_up_with_a_last_gap() {
    let primary = Server::start();
    let standby = primary.standby();
    let mut pipe = primary
        .bare()
        .args([
            "-v",
            "-d",
            &hosts(&[&primary, &standby], "primary"),
            "pipe",
            "jobs",
            "--max-downtime",
            "3s",
        ])
        .spawn();
    pipe.wait_ready();
    let stopped = Instant::now();
    primary.pg_ctl(&["stop", "-m", "fast"]);
    let (_, gap) = pipe.read_until_gap();
    assert!(gap.until.is_none(), "{gap:?}");
    assert!(gap.reason.contains("max-downtime"), "{gap:?}");
    pipe.expect_exit(3);
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}{}",
        pipe.report()
    );
    let last = pipe.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("pgnotify: error: "), "{}", pipe.report());
    assert!(last.contains("hot standby mode"), "{}", pipe.report());
}

#[test]
fn listen_wait_timeout_on_a_lone_standby_is_124() {
    let primary = Server::start();
    let standby = primary.standby();
    let started = Instant::now();
    let out = primary
        .bare()
        .args([
            "-d",
            &hosts(&[&standby], "any"),
            "listen",
            "jobs",
            "--wait",
            "--timeout",
            "2s",
        ])
        .run();
    out.code(124);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{}",
        out.report()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
}

#[test]
fn read_only_listener_takes_a_read_only_primary_and_receives() {
    let read_only = Server::start_with(&pgnotify::tempdb::Options {
        conf: vec!["default_transaction_read_only = on".into()],
        ..Default::default()
    });
    let standby = read_only.standby();
    let conninfo = hosts(&[&standby, &read_only], "read-only");
    // psql takes the standby; a listener passes over it and takes the read-only primary.
    assert_eq!(
        psql_choice(&read_only, &conninfo),
        Some(standby.cluster.port())
    );
    let mut pipe = read_only
        .bare()
        .args(["-v", "-d", &conninfo, "pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    assert_on(&pipe, &read_only);
    // The heartbeat (pg_notify on the listening connection) works in a read-only session.
    pipe.assert_running_for(Duration::from_secs(3), "heartbeats");
    assert!(!pipe.stderr().contains("reconnect"), "{}", pipe.report());
    read_only.notify("jobs", "ro");
    assert_eq!(pipe.read_record().payload, "ro");
    // read-write passes over both, each with libpq's reason.
    read_only
        .bare()
        .args([
            "-d",
            &hosts(&[&standby, &read_only], "read-write"),
            "listen",
            "jobs",
        ])
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("hot standby mode")
        .stderr_has("session is read-only");
}

// ---------------------------------------------------------------------------------------------
// 12. --fetch's second connection and the host list

/// With the default `any` and a host list [standby, primary], the listener passes over the
/// standby (README), and `--fetch` must read on the listener's server too: a plain client
/// would keep the standby, which may lag the server the event came from, and report a row
/// inserted on the primary as gone (`new: null`) while it exists. Here replay on the standby
/// is paused to make the lag certain.
#[test]
fn fetch_reads_rows_on_the_server_the_listener_is_on() {
    let primary = Server::start();
    primary.psql("CREATE TABLE orders (id int PRIMARY KEY, status text)");
    primary.watch_table(&["orders"]);
    let standby = primary.standby();
    standby.wait_until("the watch replicated", || {
        standby.psql("SELECT to_regclass('orders') IS NOT NULL") == "t"
    });
    standby.psql("SELECT pg_wal_replay_pause()");
    let mut pipe = primary
        .bare()
        .args([
            "-v",
            "-d",
            &hosts(&[&standby, &primary], "any"),
            "pipe",
            "orders",
            "--fetch",
        ])
        .spawn();
    pipe.wait_ready();
    assert_on(&pipe, &primary);
    primary.psql("INSERT INTO orders VALUES (1, 'new')");
    let record = pipe.read_record();
    let new = record.data.and_then(|d| d.get("new").cloned());
    assert_eq!(
        new,
        Some(serde_json::json!({"id": 1, "status": "new"})),
        "the row exists on the server the event came from{}",
        pipe.report()
    );
}

// ---------------------------------------------------------------------------------------------
// 13. a warm standby (hot_standby = off) refuses connections: transient, waited for

#[test]
fn a_warm_standby_that_refuses_connections_is_waited_for_and_taken_once_promoted() {
    let primary = Server::start();
    let standby = primary.standby();
    let conf = standby.cluster.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nhot_standby = off\n");
    std::fs::write(&conf, text).unwrap();
    standby.pg_ctl(&["restart", "-m", "fast"]);
    let conninfo = hosts(&[&primary, &standby], "primary");
    let mut pipe = primary
        .bare()
        .args(["-v", "-d", &conninfo, "pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    primary.pg_ctl(&["stop", "-m", "fast"]);
    wait_stderr_has(&pipe, "not accepting connections", PATIENCE);
    pipe.assert_running_for(Duration::from_secs(2), "57P03 is transient");
    standby.cluster.promote().expect("promote");
    pipe.resumes_after_gap(&standby, "jobs", "warm");
}

// ---------------------------------------------------------------------------------------------
// 14. --timeout over a host list of servers that never answer

/// Listening sockets that never accept: TCP connects, the start-up is never answered.
struct BlackHoles {
    child: std::process::Child,
    ports: Vec<u16>,
}

impl BlackHoles {
    fn start(n: usize) -> BlackHoles {
        let script = format!(
            "import socket, time\n\
             ss = []\n\
             for i in range({n}):\n\
             \x20   s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64); ss.append(s)\n\
             print(','.join(str(s.getsockname()[1]) for s in ss), flush=True)\n\
             time.sleep(3600)\n"
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports = line.trim().split(',').map(|p| p.parse().unwrap()).collect();
        BlackHoles { child, ports }
    }
}

impl Drop for BlackHoles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// README, listen: "--timeout ... counts from the start, connecting included, to every server
/// of a host list". With three servers that never answer, `listen --timeout 2s` ends at 2 s
/// (it once gave each host the whole timeout, 6 s); `notify --timeout 2s` too (124).
#[test]
fn listen_timeout_bounds_the_whole_host_list() {
    let holes = BlackHoles::start(3);
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={} user=postgres dbname=postgres",
        holes
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let started = Instant::now();
    let out = Cmd::new()
        .args(["-d", &conninfo, "notify", "x", "--timeout", "2s"])
        .run();
    out.code(124).one_line_error();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{}",
        out.report()
    );
    let started = Instant::now();
    let out = Cmd::new()
        .args(["-d", &conninfo, "listen", "x", "--timeout", "2s"])
        .run();
    out.one_line_error();
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "listen --timeout 2s took {:?}{}",
        started.elapsed(),
        out.report()
    );
}
