//! `pipe` (and the source `listen` shares) under real faults: killed backends, server restarts,
//! a server down at start, a hung backend, and a reader that stalls during a flood.

use crate::support::{FakeServer, Line, PATIENCE, Server};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

#[test]
fn pipe_writes_ndjson_with_data_and_stops_at_count() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "--data", "jobs", "--count", "2"])
        .spawn();
    pipe.wait_ready();
    server.notify("jobs", "{\"id\": 7, \"tags\": [\"a\"]}");
    server.notify("jobs", "plain text");
    server.notify("jobs", "not printed");
    let first = pipe.read_record();
    assert_eq!(
        first.data,
        Some(serde_json::json!({"id": 7, "tags": ["a"]}))
    );
    let second = pipe.read_record();
    assert_eq!((second.payload.as_str(), second.data), ("plain text", None));
    assert_eq!(pipe.expect_exit(0), "");
}

#[test]
fn a_terminated_backend_is_replaced_and_the_gap_reported() {
    let server = Server::start();
    let mut pipe = server.pgnotify().args(["-v", "pipe", "jobs"]).spawn();
    pipe.wait_ready();
    server.notify("jobs", "before");
    assert_eq!(pipe.read_record().payload, "before");
    server.client().batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgnotify'").unwrap();
    let (before, gap) = pipe.read_until_gap();
    assert!(before.is_empty());
    assert_eq!(gap.gap, "reconnect");
    assert!(
        gap.reason
            .contains("terminating connection due to administrator command"),
        "{gap:?}"
    );
    assert!(
        gap.down_ms >= 0 && gap.until.as_ref().is_some_and(|until| gap.from <= *until),
        "{gap:?}"
    );
    server.notify("jobs", "after");
    assert_eq!(pipe.read_record().payload, "after");
    let stderr = pipe.stderr();
    assert!(
        stderr.contains("lost the connection to server on socket"),
        "{stderr}"
    );
    assert!(stderr.contains("reconnected after"), "{stderr}");
}

#[test]
fn server_restarts_fast_and_immediate_are_survived() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "r", "--no-gap-records"])
        .spawn();
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "--json", "r"])
        .spawn();
    pipe.wait_ready();
    listen.wait_ready();
    for (round, stop) in [
        ("fast", &["stop", "-m", "fast"][..]),
        ("immediate", &["stop", "-m", "immediate"][..]),
    ] {
        server.pg_ctl(stop);
        server.pg_ctl(&["start"]);
        assert!(
            matches!(listen.read_any(), Line::Gap(_)),
            "listen --json gets gap records too"
        );
        // pipe has no gap records: wait until both are listening again, then send. (A session
        // shows in pg_stat_activity before its LISTEN commits: "reconnected" comes after.)
        pipe.wait_stderr("reconnected after");
        listen.wait_stderr("reconnected after");
        server.notify("r", round);
        assert_eq!(pipe.read_record().payload, round);
        assert_eq!(listen.read_record().payload, round);
    }
    assert_eq!(
        pipe.stderr().matches("reconnected after").count(),
        2,
        "{}",
        pipe.stderr()
    );
}

#[test]
fn a_server_down_at_start_fails_fast_unless_wait() {
    let server = Server::start();
    server.pg_ctl(&["stop", "-m", "fast"]);
    let started = Instant::now();
    server
        .pgnotify()
        .args(["pipe", "w"])
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("No such file or directory");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "w", "--wait"])
        .spawn();
    pipe.wait_stderr("could not connect yet");
    server.pg_ctl(&["start"]);
    pipe.wait_ready();
    server.notify("w", "finally");
    let Line::Notification(record) = pipe.read_any() else {
        panic!("no gap record for the first connection")
    };
    assert_eq!(record.payload, "finally");
}

#[test]
fn max_downtime_gives_up_with_status_3() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "m", "--max-downtime", "1s"])
        .spawn();
    pipe.wait_ready();
    server.notify("m", "one");
    assert_eq!(pipe.read_record().payload, "one");
    server.pg_ctl(&["stop", "-m", "fast"]);
    let stopped = Instant::now();
    let rest = pipe.expect_exit(3);
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    // The stream says it ends incomplete: a last gap record with no end.
    let last: crate::support::GapRecord = serde_json::from_str(rest.trim_end())
        .unwrap_or_else(|e| panic!("not one gap record: {rest:?}: {e}"));
    assert_eq!(last.until, None, "{last:?}");
    assert!(last.reason.contains("gave up reconnecting"), "{last:?}");
    assert!(
        pipe.stderr()
            .contains("pgnotify: error: gave up reconnecting after"),
        "{}",
        pipe.stderr()
    );
}

#[test]
fn a_hung_backend_is_detected_by_the_heartbeat() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "h", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    let backend = Pid::from_raw(server.backend_pid("pgnotify"));
    kill(backend, Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let (_, gap) = pipe.read_until_gap();
    let detected = stopped.elapsed();
    kill(backend, Signal::SIGCONT).unwrap();
    assert!(gap.reason.contains("heartbeat"), "{gap:?}");
    assert!(
        detected < Duration::from_secs(1 + 5 + 3),
        "detected after {detected:?}"
    );
    server.notify("h", "alive again");
    assert_eq!(pipe.read_record().payload, "alive again");
}

#[test]
fn a_black_holed_network_is_detected_and_a_reset_is_survived() {
    let server = Server::start();
    let proxy = crate::support::proxy::Proxy::start(server.cluster.port());
    let port = proxy.port.to_string();
    let mut pipe = server
        .bare()
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-v", "pipe", "net", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    proxy.black_hole();
    let cut = Instant::now();
    let (_, gap) = pipe.read_until_gap();
    assert!(gap.reason.contains("heartbeat"), "{gap:?}");
    assert!(
        cut.elapsed() < Duration::from_secs(1 + 5 + 3),
        "noticed after {:?}",
        cut.elapsed()
    );
    server.notify("net", "through a new connection");
    assert_eq!(pipe.read_record().payload, "through a new connection");
    proxy.reset();
    let (_, gap) = pipe.read_until_gap();
    assert!(
        gap.reason
            .contains("lost the connection to server at \"127.0.0.1\""),
        "{gap:?}"
    );
    server.notify("net", "after the reset");
    assert_eq!(pipe.read_record().payload, "after the reset");
}

/// The server's queue usage, as a fraction.
fn queue_usage(server: &Server) -> f64 {
    server
        .client()
        .query_one("SELECT pg_notification_queue_usage()", &[])
        .unwrap()
        .get(0)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A memory figure of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_stalled_reader_does_not_pin_the_server_queue() {
    let server = Server::start();
    let mut pipe = server.pgnotify().args(["-v", "pipe", "flood"]).spawn();
    pipe.wait_ready();
    // 100,000 notifications of 1 kB, nobody reading pgnotify's stdout meanwhile.
    server
        .client()
        .batch_execute("SELECT pg_notify('flood', i || ':' || repeat('x', 1000)) FROM generate_series(1, 100000) i")
        .unwrap();
    let sent = Instant::now();
    while queue_usage(&server) > 0.0 {
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "the server's queue stayed pinned: {}",
            queue_usage(&server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pipe.wait_stderr("dropping notifications");
    let rss = rss_kib(pipe.child.id());
    assert!(
        rss < 32 * 1024,
        "pgnotify holds {rss} KiB while its reader stalls"
    );
    // The reader comes back: what was kept arrives in order, then a gap record with the count.
    // Everything was read from the server: what was kept and what the gaps count add up to
    // what was sent. Once a gap record is read, the drop is over: a new notification is kept.
    let mut last = 0;
    let mut kept = 0u64;
    let mut gaps = Vec::new();
    loop {
        match pipe.read_any() {
            Line::Notification(n) => {
                let i: u32 = n.payload.split(':').next().unwrap().parse().unwrap();
                assert!(i > last, "out of order: {i} after {last}");
                last = i;
                if i == 100_001 {
                    break;
                }
                kept += 1;
            }
            Line::Gap(gap) => {
                assert_eq!(gap.gap, "overflow");
                if gaps.is_empty() {
                    server.notify("flood", "100001:after");
                }
                gaps.push(gap.dropped);
            }
        }
    }
    let dropped: u64 = gaps.iter().sum();
    assert!(dropped > 0, "no gap record{}", pipe.report());
    assert_eq!(kept + dropped, 100_000, "kept {kept}, gaps {gaps:?}");
    assert!(
        pipe.stderr().contains("notifications were dropped"),
        "{}",
        pipe.stderr()
    );
}

#[test]
fn order_and_count_hold_whether_the_source_or_the_main_loop_writes() {
    // Single notifications, each its own commit, go out by the source thread itself while the
    // main loop is idle (the express lane); bursts into a slow shell reader fill the pipe and
    // go through the queue. Switching between the two, nothing is lost, duplicated or
    // reordered, and --count ends the run at exactly its number.
    let (rounds, singles, burst) = (20u32, 50u32, 500u32);
    let total = rounds * (singles + burst);
    let server = Server::start();
    let mut run = server
        .shell(&format!(
            r#""$PGNOTIFY" "$@" -v pipe seq --count {total} --on-overflow block |
               while IFS= read -r line; do printf '%s\n' "$line"; done"#
        ))
        .spawn();
    run.wait_stderr("listening on");
    let mut client = server.client();
    let one = client.prepare("SELECT pg_notify('seq', $1)").unwrap();
    let mut next = 1u32;
    for _ in 0..rounds {
        for _ in 0..singles {
            client.execute(&one, &[&next.to_string()]).unwrap();
            next += 1;
        }
        client
            .execute(
                "SELECT count(pg_notify('seq', g::text)) FROM generate_series($1::int, $2::int) g",
                &[&(next as i32), &((next + burst - 1) as i32)],
            )
            .unwrap();
        next += burst;
    }
    let (status, out) = run.finish();
    assert_eq!(status.code(), Some(0), "{}", run.report());
    let payloads: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<crate::support::Record>(l)
                .unwrap()
                .payload
        })
        .collect();
    let expected: Vec<String> = (1..=total).map(|i| i.to_string()).collect();
    if payloads != expected {
        let at = payloads.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "{} lines, first difference at {at:?}: {:?}{}",
            payloads.len(),
            at.map(|i| &payloads[i.saturating_sub(2)..(i + 3).min(payloads.len())]),
            run.report()
        );
    }
}

#[test]
fn overflow_block_policy_keeps_everything_and_says_so() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            "flood",
            "--on-overflow",
            "block",
            "--heartbeat",
            "1s",
        ])
        .spawn();
    pipe.wait_ready();
    server
        .client()
        .batch_execute("SELECT pg_notify('flood', i || ':' || repeat('x', 1000)) FROM generate_series(1, 20000) i")
        .unwrap();
    pipe.wait_stderr("stopped reading from the server");
    // Blocked longer than a heartbeat (1 s) and its 5 s deadline could take, and a margin:
    // waiting on a slow output must not be taken for a dead connection. The time is the point
    // of the test, so it is waited out, on the child.
    let (interval, deadline) = (Duration::from_secs(1), Duration::from_secs(5));
    pipe.assert_running_for(
        interval + deadline + Duration::from_secs(1),
        "blocked on its output, pgnotify keeps running",
    );
    // The reader comes back: nothing was dropped, no gap, all in order.
    for i in 1..=20000 {
        let record = pipe.read_record();
        assert!(
            record.payload.starts_with(&format!("{i}:")),
            "{i}: {}",
            &record.payload[..10]
        );
    }
    server.notify("flood", "last");
    assert_eq!(
        pipe.read_record().payload,
        "last",
        "no gap record before it"
    );
    let stderr = pipe.stderr();
    assert!(
        !stderr.contains("dropped") && !stderr.contains("reconnect"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("stopped reading").count(),
        1,
        "said once: {stderr}"
    );
}

#[test]
fn overflow_exit_policy_ends_the_run() {
    let server = Server::start();
    let mut pipe = flooded_with_overflow_exit(&server);
    // Nobody reads stdout: the buffer fills and the run must end by itself.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = pipe.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running: {}",
            pipe.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{}", pipe.stderr());
    pipe.wait_stderr("the output could not keep up");
    // The main thread ended the run, between two lines: what the pipe holds ends whole.
    assert_whole_lines(&pipe.finish().1);
}

/// Every line of `rest` is a whole NDJSON record, and it ends with a newline.
fn assert_whole_lines(rest: &str) {
    assert!(
        rest.ends_with('\n'),
        "the stream ends mid-line: {:?}",
        &rest[rest.len().saturating_sub(80)..]
    );
    for line in rest.lines() {
        serde_json::from_str::<Line>(line).unwrap_or_else(|e| panic!("{e}: {line:.80}"));
    }
}

#[test]
fn a_heartbeat_too_long_to_schedule_is_never_due() {
    // The parser's maximum: adding it to now overflows an Instant, which once panicked the
    // source thread (an "internal error", status 1) as soon as it started reading.
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "hb", "--count", "1"])
        .args(["--heartbeat", "9223372036854775807s"])
        .spawn();
    listener.wait_ready();
    server.notify("hb", "still alive");
    assert_eq!(listener.read_record().payload, "still alive");
    listener.expect_exit(0);
    assert!(
        !listener.stderr().contains("internal error"),
        "{}",
        listener.stderr()
    );
}

#[test]
fn a_gap_window_covers_every_notification_a_hung_backend_lost() {
    // A steady writer while the listener's backend is stopped: every notification missing
    // from the stream must have been committed inside the gap's [from, until], so a consumer
    // that re-reads that window from its own tables misses nothing.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "w", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::clone(&done);
    let conninfo = server.cluster.conninfo();
    let writer = std::thread::spawn(move || {
        let mut db = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
        let mut sent = Vec::new();
        let mut i = 0u32;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let before = jiff::Timestamp::now();
            db.execute("SELECT pg_notify('w', $1)", &[&i.to_string()])
                .unwrap();
            sent.push((i, before, jiff::Timestamp::now()));
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    // Let some arrive, then stop the backend until the heartbeat gives it up.
    let first = pipe.read_record();
    let backend = Pid::from_raw(server.backend_pid("pgnotify"));
    kill(backend, Signal::SIGSTOP).unwrap();
    let mut received = vec![first.payload];
    let gap = loop {
        match pipe.read_any() {
            Line::Notification(n) => received.push(n.payload),
            Line::Gap(gap) => break gap,
        }
    };
    kill(backend, Signal::SIGCONT).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = writer.join().unwrap();
    server.notify("w", "end");
    loop {
        let n = pipe.read_record();
        if n.payload == "end" {
            break;
        }
        received.push(n.payload);
    }
    let from: jiff::Timestamp = gap.from.parse().unwrap();
    let until: jiff::Timestamp = gap.until.as_deref().unwrap().parse().unwrap();
    let lost: Vec<_> = sent
        .iter()
        .filter(|(i, _, _)| !received.contains(&i.to_string()))
        .collect();
    assert!(
        lost.len() > 50,
        "the backend was stopped, yet only {} were lost",
        lost.len()
    );
    for (i, before, committed) in &lost {
        assert!(
            *committed >= from && *before <= until,
            "{i} was lost, committed by {committed}, outside the gap [{from}, {until}]"
        );
    }
}

#[test]
fn overflow_exit_ends_the_stream_with_a_whole_line() {
    // The reader stalls until the output overflows, then reads on: the stream must end with a
    // complete line, not half a JSON object cut off by the exit.
    let server = Server::start();
    let mut pipe = flooded_with_overflow_exit(&server);
    pipe.wait_stderr("the output could not keep up");
    let (status, rest) = pipe.finish();
    assert_eq!(status.code(), Some(1), "{}", pipe.stderr());
    assert_whole_lines(&rest);
    let errors = pipe.stderr().matches("pgnotify: error: ").count();
    assert_eq!(errors, 1, "{}", pipe.stderr());
}

/// `pipe flood --on-overflow exit`, ready, then 30 MB of notifications that nobody reads yet.
fn flooded_with_overflow_exit(server: &Server) -> crate::support::Running {
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "flood", "--on-overflow", "exit"])
        .spawn();
    pipe.wait_ready();
    server
        .client()
        .batch_execute("SELECT pg_notify('flood', i || ':' || repeat('x', 1000)) FROM generate_series(1, 30000) i")
        .unwrap();
    pipe
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Waits until pgnotify has read everything the server held for it.
fn wait_backlog_read(server: &Server) {
    let sent = Instant::now();
    while queue_usage(server) > 0.0 {
        assert!(sent.elapsed() < 3 * PATIENCE, "the backlog was not read");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `count` notifications of 7 kB in one transaction, on channel `bigs`, numbered from 1.
fn send_a_backlog(server: &Server, count: u32) {
    server
        .client()
        .execute(
            "SELECT pg_notify('bigs', i || ':' || repeat('x', 7000)) \
             FROM generate_series(1, $1) i",
            &[&(count as i32)],
        )
        .unwrap();
}

#[test]
fn memory_stays_bounded_through_a_large_backlog_with_a_fast_heartbeat() {
    // A stalled reader and a heartbeat every second: each heartbeat is a query, and its answer
    // comes after everything the server holds for pgnotify. Nothing may read that all at once.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "bigs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    // 560 MB: before the listening connection was driven by pgnotify itself, the first
    // heartbeat behind it held all of it (VmHWM 566 MB).
    send_a_backlog(&server, 80_000);
    wait_backlog_read(&server);
    // Three more heartbeats with the reader still stalled.
    std::thread::sleep(Duration::from_secs(3));
    let peak = peak_kib(pipe.child.id());
    assert!(
        peak < 18 * 1024,
        "pgnotify peaked at {peak} KiB through a 560 MB backlog{}",
        pipe.report()
    );
    assert!(
        !pipe.stderr().contains("reconnecting"),
        "a live connection was taken for dead{}",
        pipe.report()
    );
    // The stream goes on: what was kept, the drops' gap records, then new notifications.
    let (_, gap) = pipe.read_until_gap();
    assert_eq!(gap.gap, "overflow");
    server.notify("bigs", "after");
    loop {
        match pipe.read_any() {
            Line::Notification(n) if n.payload == "after" => break,
            Line::Notification(_) => {}
            Line::Gap(gap) => assert_eq!(gap.gap, "overflow", "{}", pipe.report()),
        }
    }
}

#[test]
fn a_commit_that_holds_the_notification_lock_is_not_taken_for_a_dead_connection() {
    // Every commit with notifications takes one lock, and holds it while it waits for a
    // synchronous standby. With the standby gone, the heartbeat's own notification cannot
    // commit: the backend is alive, and must not be taken for dead (reconnecting loses what
    // is committed meanwhile). The heartbeat waits 2 s for the lock and is tried again.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--heartbeat", "1s"])
        .spawn();
    pipe.wait_ready();
    let held = server.hold_notification_lock("jobs", "held");
    // Old behaviour: the first heartbeat is stuck behind the lock, and 5 s later the
    // connection is replaced.
    pipe.wait_stderr("waited 2 s for the lock");
    std::thread::sleep(Duration::from_secs(7));
    let stderr = pipe.stderr();
    assert!(
        !stderr.contains("reconnecting") && !stderr.contains("lost the connection"),
        "a live connection was taken for dead{}",
        pipe.report()
    );
    assert!(
        stderr.contains("heartbeats in a row"),
        "the heartbeat should have been tried again{}",
        pipe.report()
    );
    // The standby is no longer required: the held commit completes and is delivered, with no
    // gap, and heartbeats go through again.
    held.release();
    match pipe.read_any() {
        Line::Notification(n) => assert_eq!(n.payload, "held", "{}", pipe.report()),
        Line::Gap(gap) => panic!("a gap with no outage: {gap:?}{}", pipe.report()),
    }
    server.notify("jobs", "after");
    match pipe.read_any() {
        Line::Notification(n) => assert_eq!(n.payload, "after", "{}", pipe.report()),
        Line::Gap(gap) => panic!("a gap with no outage: {gap:?}{}", pipe.report()),
    }
    assert!(!pipe.stderr().contains("reconnecting"), "{}", pipe.report());
}

#[test]
fn a_blocked_source_behind_a_large_backlog_keeps_memory_and_connection() {
    // --on-overflow block: pgnotify stops reading, so the backlog stays on the server while the
    // heartbeat comes due again and again; then the reader returns and takes every one, in order.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            "bigs",
            "--heartbeat",
            "1s",
            "--on-overflow",
            "block",
        ])
        .spawn();
    pipe.wait_ready();
    send_a_backlog(&server, 20_000);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        queue_usage(&server) > 0.0,
        "the backlog should wait on the server"
    );
    let peak = peak_kib(pipe.child.id());
    assert!(
        peak < 18 * 1024,
        "pgnotify peaked at {peak} KiB with a 140 MB backlog waiting{}",
        pipe.report()
    );
    for i in 1..=20_000u32 {
        let n = pipe.read_record();
        let (seq, _) = n.payload.split_once(':').unwrap();
        assert_eq!(seq, i.to_string(), "{}", pipe.report());
    }
    assert!(
        !pipe.stderr().contains("reconnecting"),
        "a live connection was taken for dead{}",
        pipe.report()
    );
    let peak = peak_kib(pipe.child.id());
    assert!(
        peak < 18 * 1024,
        "pgnotify peaked at {peak} KiB draining the backlog"
    );
}

#[test]
fn memory_stays_bounded_with_exec_jobs_that_never_finish() {
    // Four commands that take their line and then hang: every job's input and the shared backlog
    // fill, then the queue, then notifications are dropped; memory stays within the same bound.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "bigs", "--heartbeat", "1s", "--jobs", "4"])
        .args(["--exec", "sleep 30"])
        .spawn();
    pipe.wait_ready();
    send_a_backlog(&server, 20_000);
    wait_backlog_read(&server);
    pipe.wait_stderr("dropping notifications");
    std::thread::sleep(Duration::from_secs(2));
    let peak = peak_kib(pipe.child.id());
    assert!(
        peak < 18 * 1024,
        "pgnotify peaked at {peak} KiB with its commands stalled{}",
        pipe.report()
    );
}

#[test]
fn a_reader_that_leaves_while_the_pipe_is_full_ends_the_run_quietly() {
    // The pipe is full and pgnotify waits for room between lines; then the reader exits
    // without reading: the run must notice (broken pipe) and end with status 0, not wait on.
    let server = Server::start();
    let mut run = server
        .shell(r#"set -o pipefail; "$PGNOTIFY" "$@" -v pipe flood --on-overflow exit | sleep 3"#)
        .spawn();
    run.wait_stderr("listening on");
    server
        .client()
        .batch_execute(
            // 600 kB: the 64 KiB pipe fills, the rest waits within the 1 MiB queue.
            "SELECT pg_notify('flood', i || ':' || repeat('x', 1000)) FROM generate_series(1, 600) i",
        )
        .unwrap();
    let status = run.wait();
    assert_eq!(status.code(), Some(0), "{}", run.stderr());
    assert!(!run.stderr().contains("error"), "{}", run.stderr());
}

/// `pgnotify -v pipe fk --heartbeat 1s EXTRA...` against a fake server.
fn fake_pipe(fake: &FakeServer, extra: &[&str]) -> crate::support::Running {
    fake.pgnotify()
        .args(["-v", "pipe", "fk", "--heartbeat", "1s"])
        .args(extra)
        .spawn()
}

#[test]
fn a_backend_that_hangs_before_answering_listen_is_replaced() {
    // A notification came before LISTEN's answer (so LISTEN committed), then nothing: the
    // answer gets the heartbeat's deadline, the session is replaced, and the thread never
    // spins meanwhile.
    let fake = FakeServer::start("hang-after-early");
    let mut pipe = fake_pipe(&fake, &[]);
    assert_eq!(pipe.read_record().payload, "early");
    let line = pipe.wait_stderr("reconnecting");
    assert!(line.contains("no answer to LISTEN within 5 s"), "{line}");
}

#[test]
fn notifications_that_come_with_a_failed_heartbeat_are_delivered() {
    // The heartbeat's answer is an error, and a notification arrived just before it: the
    // notification is written, then the session is replaced.
    let fake = FakeServer::start("error-with-note");
    let mut pipe = fake_pipe(&fake, &[]);
    pipe.wait_ready();
    assert_eq!(pipe.read_record().payload, "must-not-be-lost");
    pipe.wait_stderr("the heartbeat failed");
}

#[test]
fn overflow_exit_ends_the_run_when_small_writes_filled_the_pipe() {
    // Forty lines written one at a time take a page of the pipe each, so the pipe is full long
    // before its byte count says so: the writer must still never block in the kernel, and the
    // run must end (status 1) with the stream ending in a whole line.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "pages", "--on-overflow", "exit"])
        .spawn();
    pipe.wait_ready();
    let mut db = server.client();
    for i in 0..40 {
        db.execute(
            "SELECT pg_notify('pages', $1 || ':' || repeat('x', 2050))",
            &[&i.to_string()],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    db.batch_execute(
        "SELECT pg_notify('pages', i || ':' || repeat('y', 1000)) FROM generate_series(1, 6000) i",
    )
    .unwrap();
    let status = pipe.wait();
    assert_eq!(status.code(), Some(1), "{}", pipe.stderr());
    assert_whole_lines(&pipe.finish().1);
}

#[test]
fn a_server_back_after_a_long_outage_is_reconnected_to_within_a_second_or_two() {
    // 12 s down: a backoff grown to 10 s would leave pgnotify away for seconds after the
    // server is back, and what was sent meanwhile lost. A server that refuses at once is
    // tried again at least every second.
    let server = Server::start();
    let mut pipe = server.pgnotify().args(["-v", "pipe", "back"]).spawn();
    pipe.wait_ready();
    server.pg_ctl(&["stop", "-m", "fast"]);
    std::thread::sleep(Duration::from_secs(12));
    server.pg_ctl(&["start"]);
    std::thread::sleep(Duration::from_millis(2500));
    server.notify("back", "2.5 s after the start");
    let (_, gap) = pipe.read_until_gap();
    assert_eq!(gap.gap, "reconnect");
    assert_eq!(pipe.read_record().payload, "2.5 s after the start");
    assert!(pipe.stderr().contains("attempt"), "{}", pipe.stderr());
}

#[test]
fn a_refusal_that_retrying_cannot_fix_ends_the_wait_at_once() {
    // --wait retries a server that is not there yet, never a wrong password or a missing
    // database: those end the run at once, status 3, with the server's message.
    let server = Server::start_with(&pgnotify::tempdb::Options {
        hba: vec!["host all alice 127.0.0.1/32 scram-sha-256".into()],
        ..Default::default()
    });
    server
        .client()
        .batch_execute("CREATE ROLE alice LOGIN PASSWORD 'right'")
        .unwrap();
    let port = server.cluster.port().to_string();
    let tcp = ["-h", "127.0.0.1", "-p", &port, "-U", "alice"];
    for (password, db, needle) in [
        ("wrong", "postgres", "SQLSTATE 28P01"),
        ("right", "no_such_db", "SQLSTATE 3D000"),
    ] {
        let started = Instant::now();
        crate::support::Cmd::new()
            .args(tcp)
            .args(["-d", db, "listen", "x", "--wait"])
            .env("PGPASSWORD", password)
            .run()
            .code(3)
            .one_line_error()
            .stderr_has(needle);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{needle}: retried"
        );
    }
    // In the reconnect loop too: the password changes while pgnotify listens.
    let mut pipe = crate::support::Cmd::new()
        .args(tcp)
        .args(["-d", "postgres", "-v", "pipe", "x"])
        .env("PGPASSWORD", "right")
        .spawn();
    pipe.wait_ready();
    // Two round trips: in one, the statements share a transaction, and a reconnect quicker
    // than its commit logs in with the old password.
    let mut admin = server.client();
    admin
        .batch_execute("ALTER ROLE alice PASSWORD 'changed'")
        .unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'alice'",
        )
        .unwrap();
    let (_, gap) = pipe.read_until_gap();
    assert_eq!(gap.until, None, "the stream ends incomplete: {gap:?}");
    pipe.expect_exit(3);
    let stderr = pipe.stderr();
    assert!(stderr.contains("SQLSTATE 28P01"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
}

#[test]
fn notify_timeout_bounds_a_server_that_accepts_and_never_answers() {
    // A cron job must not pile up: --timeout covers connecting and sending, status 124, and
    // the message says what was committed.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let keep = std::thread::spawn(move || {
        let conns: Vec<_> = held.incoming().take(1).flatten().collect();
        std::thread::sleep(Duration::from_secs(8));
        drop(conns);
    });
    let started = Instant::now();
    crate::support::Cmd::new()
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "u", "-d", "d"])
        .args(["notify", "--timeout", "1s", "c", "x"])
        .run()
        .code(124)
        .one_line_error()
        .stderr_has("still connecting: nothing was sent");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Connected, then the backend hangs: the notification may or may not have committed.
    let fake = FakeServer::start("hang-on-query");
    fake.pgnotify()
        .args(["notify", "-t", "500ms", "c", "x"])
        .run()
        .code(124)
        .one_line_error()
        .stderr_has("timed out after 500 ms (--timeout)")
        .stderr_has("may or may not have been committed");
    fake.pgnotify()
        .args(["notify", "-t", "500ms", "--lines", "c"])
        .stdin("a\nb\n")
        .run()
        .code(124)
        .one_line_error()
        .stderr_has("still connecting: nothing was sent");
    // Waiting on standard input is said as such, and lines sent before are counted exactly.
    let server = Server::start();
    server
        .shell(r#"exec "$PGNOTIFY" "$@" notify -t 1s c - < <(exec sleep 30 2>/dev/null)"#)
        .run()
        .code(124)
        .stderr_has("still reading the payload from standard input: nothing was sent");
    server
        .shell(
            r#"exec "$PGNOTIFY" "$@" notify -t 1s --lines c < <(printf 'a\nb\n'; exec sleep 30 2>/dev/null)"#,
        )
        .run()
        .code(124)
        .stderr_has("the first 2 lines were sent and committed; nothing after them was");
    let _ = keep;
}
