//! `pipe --connect` and `pipe --serve` against real TCP peers and clients on loopback.

use crate::support::{Cmd, Record, Server};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Accepts one connection, failing the test after a while instead of hanging.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(crate::support::PATIENCE))
                    .unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < crate::support::PATIENCE,
                    "pgnotify never connected"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// `pipe CHANNEL --serve 0`, and the address it serves on.
fn serve(server: &Server, channel: &str) -> (crate::support::Running, String) {
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", channel, "--serve", "0"])
        .spawn();
    let line = pipe.wait_stderr("serving NDJSON on ");
    let address = line.rsplit(' ').next().unwrap().to_owned();
    (pipe, address)
}

/// An address on loopback where nothing listens (yet).
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Whether a connection to `address` is in CLOSE-WAIT (its peer hung up) on this host, per `ss`.
fn close_wait_towards(address: &str) -> bool {
    !crate::support::ss(&["-Htn", "state", "close-wait", "dst", address]).is_empty()
}

fn payload(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line from pgnotify");
    let record: Record = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    record.payload
}

#[test]
fn connect_waits_for_a_peer_that_is_down_and_resumes_after_it_leaves() {
    let server = Server::start();
    let address = free_address();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "p", "--connect", &address])
        .spawn();
    pipe.wait_ready();
    server.notify("p", "a");
    server.notify("p", "b");
    let peer = TcpListener::bind(&address).unwrap();
    let mut first = BufReader::new(accept(&peer));
    assert_eq!(
        (payload(&mut first), payload(&mut first)),
        ("a".into(), "b".into())
    );
    drop(first); // the peer goes away
    // pgnotify looks for the hang-up before its next write: wait until its end has the FIN.
    server.wait_until(
        "pgnotify's end of the connection to see the hang-up",
        || close_wait_towards(&address),
    );
    server.notify("p", "c");
    let mut second = BufReader::new(accept(&peer));
    // TCP never says what the peer read: the new connection starts with the upper bound of
    // what the last one may have taken with it (both lines, here), then goes on.
    let mut line = String::new();
    second.read_line(&mut line).unwrap();
    match serde_json::from_str(&line).unwrap() {
        crate::support::Line::Gap(gap) => {
            assert_eq!((gap.gap.as_str(), gap.dropped), ("peer", 2), "{line}")
        }
        other => panic!("not a gap record first: {other:?}"),
    }
    assert_eq!(payload(&mut second), "c");
    server.notify("p", "d");
    assert_eq!(payload(&mut second), "d");
    let stderr = pipe.stderr();
    assert!(
        stderr.contains("could not connect to the TCP peer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("closed the connection; up to 2 notifications"),
        "{stderr}"
    );
}

#[test]
fn connect_reports_what_a_long_absent_peer_missed_first() {
    let server = Server::start();
    let address = free_address();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "o", "--connect", &address])
        .spawn();
    pipe.wait_ready();
    // 8 MB while the peer is away: more than the 4 MiB that may wait for it.
    server
        .client()
        .batch_execute(
            "SELECT pg_notify('o', i || ':' || repeat('x', 1000)) FROM generate_series(1, 8000) i",
        )
        .unwrap();
    pipe.wait_stderr("dropping notifications until it catches up");
    let peer = TcpListener::bind(&address).unwrap();
    let mut reader = BufReader::new(accept(&peer));
    server.notify("o", "after"); // sent once the peer is back: never dropped
    // Lines 1..=k, one gap record counting exactly the missing ones, then m..=8000, "after".
    let (mut before, mut gaps, mut after) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        match serde_json::from_str::<crate::support::Line>(&line).unwrap() {
            crate::support::Line::Notification(n) if n.payload == "after" => break,
            crate::support::Line::Notification(n) => {
                let i: u64 = n.payload.split(':').next().unwrap().parse().unwrap();
                if gaps.is_empty() {
                    before.push(i)
                } else {
                    after.push(i)
                }
            }
            crate::support::Line::Gap(gap) => gaps.push(gap),
        }
    }
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].gap, "overflow");
    let k = before.len() as u64;
    assert_eq!(before, (1..=k).collect::<Vec<_>>());
    let m = after.first().copied().unwrap_or(8001);
    assert_eq!(after, (m..=8000).collect::<Vec<_>>());
    assert_eq!(
        gaps[0].dropped,
        m - k - 1,
        "the count is exactly what is missing"
    );
}

#[test]
fn serve_disconnects_a_client_that_never_reads_and_keeps_the_others_going() {
    let server = Server::start();
    let (mut pipe, address) = serve(&server, "s");
    assert!(
        address.starts_with("127.0.0.1:"),
        "a port alone listens on loopback: {address}"
    );
    pipe.wait_ready();
    let stalled = TcpStream::connect(&address).unwrap();
    let reader = TcpStream::connect(&address).unwrap();
    reader
        .set_read_timeout(Some(crate::support::PATIENCE))
        .unwrap();
    pipe.wait_stderr("connected");
    pipe.wait_stderr("connected");
    let total = 20_000;
    let mut fast = BufReader::new(reader);
    let consumer = std::thread::spawn(move || {
        let got: Vec<String> = (0..total).map(|_| payload(&mut fast)).collect();
        (got, fast)
    });
    server
        .client()
        .batch_execute(&format!("SELECT pg_notify('s', i || ':' || repeat('x', 1000)) FROM generate_series(1, {total}) i"))
        .unwrap();
    let (got, mut fast) = consumer.join().unwrap();
    for (i, p) in got.iter().enumerate() {
        assert!(p.starts_with(&format!("{}:", i + 1)), "out of order at {i}");
    }
    pipe.wait_stderr("is not reading fast enough: disconnected");
    // A client that hangs up while nothing is sent is noticed too (its socket is freed).
    drop(TcpStream::connect(&address).unwrap());
    pipe.wait_stderr("left");
    server.notify("s", "still here");
    assert_eq!(payload(&mut fast), "still here");
    drop(stalled);
}

#[test]
fn a_count_reached_with_no_peer_to_take_it_is_a_failure() {
    // The count is reached, but nothing was delivered: that is no success.
    let server = Server::start();
    let address = free_address();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "p", "--count", "2", "--connect", &address])
        .spawn();
    pipe.wait_ready();
    server.notify("p", "a");
    server.notify("p", "b");
    pipe.expect_exit(1);
    let stderr = pipe.stderr();
    assert!(
        stderr.contains(&format!(
            "pgnotify: error: the TCP peer {address} did not take everything within 5 s"
        )),
        "{stderr}"
    );
}

#[test]
fn serve_keeps_a_reading_client_whose_writer_thread_gets_no_cpu() {
    // A client that reads, but whose writer thread inside pgnotify does not run while a burst
    // comes (SCHED_IDLE with every core busy: CPU contention made certain). Its socket takes
    // data all along, so it must not be taken for a client that stopped reading.
    let server = Server::start();
    let (mut pipe, address) = serve(&server, "b");
    pipe.wait_ready();
    let reader = TcpStream::connect(&address).unwrap();
    reader
        .set_read_timeout(Some(crate::support::PATIENCE))
        .unwrap();
    pipe.wait_stderr("connected");
    let pid = pipe.child.id();
    // A new thread names itself once it runs: wait for that.
    let find = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "client")
            })
    };
    let start = std::time::Instant::now();
    let writer = loop {
        if let Some(found) = find() {
            break found.file_name();
        }
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "no writer thread"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let tid = writer.to_string_lossy().into_owned();
    let chrt = Cmd::shell(&format!("chrt --idle -p 0 {tid}")).run();
    assert!(chrt.status.success(), "{}", chrt.report());
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loops: Vec<_> = (0..2 * cores)
        .map(|_| {
            let busy = std::sync::Arc::clone(&busy);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    // About 2.6 MB: over the 1 MiB a stalled client may have waiting, under the 4 MiB cap.
    let total = 10_000;
    let mut db = server.client();
    db.batch_execute(&format!(
        "SELECT pg_notify('b', i || ':' || repeat('x', 200)) FROM generate_series(1, {total}) i"
    ))
    .unwrap();
    let drained = || {
        db.query_one("SELECT pg_notification_queue_usage() = 0", &[])
            .unwrap()
            .get::<_, bool>(0)
    };
    let mut drained = drained;
    let start = std::time::Instant::now();
    while !drained() {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "the server queue stayed full"
        );
    }
    // The burst is in pgnotify now; give its main thread time to hand it to the backlog.
    pipe.assert_running_for(Duration::from_millis(1500), "the burst is handed on");
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    loops.into_iter().for_each(|l| l.join().unwrap());
    let mut lines = BufReader::new(reader);
    let got = (0..total)
        .filter(|_| !payload(&mut lines).is_empty())
        .count();
    assert_eq!(got, total);
    assert!(
        !pipe.stderr().contains("is not reading"),
        "{}",
        pipe.stderr()
    );
}

#[test]
fn connect_reports_an_upper_bound_of_what_a_peer_that_left_did_not_read() {
    // The peer reads 2 MB of a 200,000-notification burst, closes with data unread and comes
    // back. What the kernels' buffers held is gone: whatever is missing must be counted by the
    // gap records, a `peer` one first on the new connection.
    use crate::support::Line;
    let server = Server::start();
    let address = free_address();
    let peer = TcpListener::bind(&address).unwrap();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "burst", "--connect", &address])
        .spawn();
    pipe.wait_ready();
    let first = accept(&peer);
    let burst = {
        let conninfo = server.cluster.conninfo();
        std::thread::spawn(move || {
            let mut db = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
            db.batch_execute(
                "SELECT pg_notify('burst', i::text) FROM generate_series(1, 200000) i",
            )
            .unwrap();
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut reader = BufReader::new(first);
    let mut read = 0;
    while read < 2_000_000 {
        let mut line = String::new();
        read += reader.read_line(&mut line).unwrap();
        if let Line::Notification(n) = serde_json::from_str(&line).unwrap() {
            seen.insert(n.payload.parse::<u32>().unwrap());
        }
    }
    drop(reader); // closes with unread data: the kernel resets the connection
    let second = accept(&peer);
    let collector = std::thread::spawn(move || {
        let mut reader = BufReader::new(second);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let parsed: Line = serde_json::from_str(&line).unwrap();
            let done = matches!(&parsed, Line::Notification(n) if n.payload == "after");
            lines.push(parsed);
            if done {
                return lines;
            }
        }
    });
    burst.join().unwrap();
    server.notify("burst", "after");
    let lines = collector.join().unwrap();
    let mut gaps = Vec::new();
    for line in &lines {
        match line {
            Line::Notification(n) if n.payload == "after" => {}
            Line::Notification(n) => {
                seen.insert(n.payload.parse::<u32>().unwrap());
            }
            Line::Gap(gap) => gaps.push(gap),
        }
    }
    let missing = 200_000 - seen.len() as u64;
    let counted: u64 = gaps.iter().map(|g| g.dropped).sum();
    assert!(
        counted >= missing,
        "{missing} notifications missing, gap records count {counted}: {gaps:?}{}",
        pipe.report()
    );
    if missing > 0 {
        match &lines[0] {
            Line::Gap(gap) => assert_eq!(gap.gap, "peer", "{gap:?}"),
            other => panic!("the new connection starts with {other:?}, not a gap record"),
        }
    }
    pipe.wait_stderr("may not have been read");
}

#[test]
fn connect_reports_again_what_a_connection_lost_before_its_gap_record_was_read() {
    // The peer leaves with lines unread; the next connection closes at once, before its gap
    // record can have been read; the third reads on. What is missing must still be counted.
    use crate::support::Line;
    let server = Server::start();
    let address = free_address();
    let peer = TcpListener::bind(&address).unwrap();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "again", "--connect", &address])
        .spawn();
    pipe.wait_ready();
    let mut first = BufReader::new(accept(&peer));
    for i in 1..=5 {
        server.notify("again", &format!("a{i}"));
    }
    let mut seen = vec![payload(&mut first)];
    std::thread::sleep(Duration::from_millis(300));
    drop(first); // four lines unread: the kernel resets the connection
    server.notify("again", "b1");
    let second = accept(&peer);
    std::thread::sleep(Duration::from_millis(300));
    drop(second); // whatever it was sent, unread
    std::thread::sleep(Duration::from_millis(300));
    for i in 2..=4 {
        server.notify("again", &format!("b{i}"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut third = BufReader::new(accept(&peer));
    server.notify("again", "end");
    let mut counted = 0;
    loop {
        let mut line = String::new();
        third.read_line(&mut line).unwrap();
        match serde_json::from_str(&line).unwrap() {
            Line::Notification(n) if n.payload == "end" => break,
            Line::Notification(n) => seen.push(n.payload),
            Line::Gap(gap) => counted += gap.dropped,
        }
    }
    let missing = ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "b4"]
        .iter()
        .filter(|p| !seen.iter().any(|s| s == *p))
        .count() as u64;
    assert!(
        counted >= missing,
        "{missing} missing, {counted} counted; seen {seen:?}{}",
        pipe.report()
    );
}
