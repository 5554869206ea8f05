//! The counters of a running `listen`/`pipe`: `--stats INTERVAL` lines on stderr (text and
//! JSON), SIGUSR1, `--metrics` scraped over raw HTTP; and the stderr log format: a time on
//! the lines of long-running commands, none under journald (`JOURNAL_STREAM`), none on the
//! error at the exit.

use crate::support::{Line, PATIENCE, Running, Server};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The counters of a text stats line (`pgnotify: stats: k=v ...`), after its label.
fn counters(line: &str, label: &str) -> HashMap<String, String> {
    let marker = format!("pgnotify: {label}: ");
    let rest = line
        .split_once(&marker)
        .unwrap_or_else(|| panic!("not a {label} line: {line}"))
        .1;
    rest.split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {kv:?} in {line}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn number(counters: &HashMap<String, String>, key: &str) -> u64 {
    counters
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {counters:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} in {counters:?}"))
}

/// The time a text line begins with, and the rest; panics when it has none.
fn stamped(line: &str) -> (jiff::Timestamp, &str) {
    let (time, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("no time on {line:?}"));
    assert!(
        time.len() == 24 && time.ends_with('Z'),
        "not RFC 3339 UTC with milliseconds: {line:?}"
    );
    let at = time
        .parse()
        .unwrap_or_else(|e| panic!("{e}: not a time: {line:?}"));
    (at, rest)
}

/// The last stats line on stderr whose counters pass `wanted`, waiting for it.
fn wait_counters(
    run: &mut Running,
    what: &str,
    wanted: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let line = run.wait_stderr("pgnotify: stats: ");
        let now = counters(&line, "stats");
        if wanted(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no stats line with {what}: {now:?}{}",
            run.report()
        );
    }
}

/// A scrape: the status line, the headers and the body of `METHOD PATH`.
fn http(address: &str, method: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: test\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {answer:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// The samples of a Prometheus text exposition, by name and labels; every family must have
/// its HELP and TYPE before its samples, and every sample a family.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut help = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap();
            assert!(!help.iter().any(|h| h == name), "HELP twice: {name}");
            // The exposition format escapes only these in HELP: \\ and \n.
            assert!(!text.contains('\\') && !text.contains('\r'), "{line}");
            help.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(help.iter().any(|h| h == name), "TYPE before HELP: {name}");
            assert!(!types.contains_key(name), "TYPE twice: {name}");
            current = Some(name.to_owned());
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter without _total: {name}");
            }
            types.insert(name.to_owned(), kind.to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            assert!(name.starts_with("pgnotify_"), "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            assert!(types.contains_key(name), "a sample of no family: {line}");
            assert_eq!(
                current.as_deref(),
                Some(name),
                "a sample away from its family: {line}"
            );
            if !labels.is_empty() {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split(',') {
                    let (key, quoted) = pair.split_once('=').expect("label=\"value\"");
                    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("a quoted label value");
                    assert!(!value.contains(['"', '\\', '\n']), "{line}");
                }
            }
            let parsed = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(parsed.is_finite() && parsed >= 0.0, "{line}");
            assert!(
                samples.insert(series.to_owned(), parsed).is_none(),
                "the series twice: {line}"
            );
        }
    }
    assert_eq!(
        help.len(),
        types.len(),
        "every family has HELP and TYPE\n{text}"
    );
    samples
}

/// A GET of /metrics that must succeed, parsed.
fn scrape(address: &str) -> HashMap<String, f64> {
    let (status, headers, body) = http(address, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    parse_metrics(&body)
}

/// The address `--metrics 0` serves on, from its `-v` line.
fn metrics_address(run: &mut Running) -> String {
    let line = run.wait_stderr("serving metrics on http://");
    line.split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_owned()
}

fn wait_scrape(
    address: &str,
    run: &Running,
    what: &str,
    wanted: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = scrape(address);
        if wanted(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}: {now:?}{}",
            run.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_lines_count_a_known_workload_at_intervals_and_once_at_the_end() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--stats", "200ms"])
        .spawn();
    pipe.wait_ready();
    server
        .client()
        .batch_execute("SELECT pg_notify('jobs', 'n' || i) FROM generate_series(1, 50) i")
        .unwrap();
    for i in 1..=50 {
        assert_eq!(pipe.read_record().payload, format!("n{i}"));
    }
    let now = wait_counters(&mut pipe, "the 50 written", |c| number(c, "written") == 50);
    assert_eq!(number(&now, "received"), 50, "{now:?}");
    assert_eq!(number(&now, "dropped"), 0, "{now:?}");
    assert_eq!(number(&now, "gaps"), 0, "{now:?}");
    assert_eq!(number(&now, "reconnects"), 0, "{now:?}");
    assert_eq!(number(&now, "queue_bytes"), 0, "{now:?}");
    let age: f64 = now["last_event_age_s"].parse().unwrap();
    assert!((0.0..30.0).contains(&age), "{now:?}");
    // Two more intervals, then the end.
    pipe.wait_stderr("pgnotify: stats: ");
    pipe.wait_stderr("pgnotify: stats: ");
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
    let stderr = pipe.stderr();
    let periodic: Vec<jiff::Timestamp> = stderr
        .lines()
        .filter(|l| l.contains("pgnotify: stats: "))
        .map(|l| stamped(l).0)
        .collect();
    assert!(periodic.len() >= 3, "{stderr}");
    for pair in periodic.windows(2) {
        let apart = pair[1].duration_since(pair[0]);
        assert!(
            apart >= jiff::SignedDuration::from_millis(190),
            "stats lines {apart:?} apart with --stats 200ms\n{stderr}"
        );
    }
    let finals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pgnotify: final stats: "))
        .collect();
    assert_eq!(finals.len(), 1, "one final line{}", pipe.report());
    let last = stderr.lines().last().unwrap();
    assert_eq!(last, finals[0], "the final line is the last");
    let end = counters(last, "final stats");
    assert_eq!(
        (number(&end, "received"), number(&end, "written")),
        (50, 50),
        "{end:?}"
    );
}

#[test]
fn json_log_lines_parse_and_stats_carry_the_counters() {
    let server = Server::start();
    let mut listen = server
        .pgnotify()
        .args([
            "--log-format",
            "json",
            "-v",
            "listen",
            "--json",
            "jobs",
            "--stats",
            "200ms",
            "--count",
            "3",
        ])
        .spawn();
    listen.wait_stderr("\"listening on");
    for i in 0..3 {
        server.notify("jobs", &format!("p{i}"));
    }
    for i in 0..3 {
        assert_eq!(listen.read_record().payload, format!("p{i}"));
    }
    listen.expect_exit(0);
    let stderr = listen.stderr();
    let mut stats = Vec::new();
    for line in stderr.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object: {line:?}: {e}{}", listen.report()));
        let time = value["time"].as_str().expect("time");
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert!(
            ["info", "warning", "error"].contains(&value["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(value["message"].is_string(), "{line}");
        if value["message"] == "stats" || value["message"] == "final stats" {
            stats.push(value);
        }
    }
    assert!(stderr.contains("\"message\":\"listening on"), "{stderr}");
    let last = stats.last().expect("a final stats object");
    assert_eq!(last["message"], "final stats", "{stderr}");
    assert_eq!(last["received"], 3, "{last}");
    assert_eq!(last["written"], 3, "{last}");
    assert_eq!(last["dropped_queue"], 0, "{last}");
    assert_eq!(last["gaps_reconnect"], 0, "{last}");
    assert!(last["last_event_age_s"].is_number(), "{last}");
    for key in [
        "reconnects",
        "clients",
        "queue_bytes",
        "dropped_backlog",
        "gaps",
    ] {
        assert!(last[key].is_u64(), "{key}: {last}");
    }
}

#[test]
fn sigusr1_prints_the_counters_once_and_the_run_goes_on() {
    let server = Server::start();
    let mut pipe = server.pgnotify().args(["-v", "pipe", "jobs"]).spawn();
    pipe.wait_ready();
    server.notify("jobs", "one");
    assert_eq!(pipe.read_record().payload, "one");
    pipe.signal(Signal::SIGUSR1);
    let line = pipe.wait_stderr("pgnotify: stats: ");
    let (_, rest) = stamped(&line);
    let now = counters(rest, "stats");
    assert_eq!(
        (number(&now, "received"), number(&now, "written")),
        (1, 1),
        "{line}"
    );
    pipe.assert_running_for(Duration::from_millis(500), "SIGUSR1 must not end the run");
    server.notify("jobs", "two");
    assert_eq!(pipe.read_record().payload, "two");
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
    let stderr = pipe.stderr();
    assert_eq!(
        stderr.matches("stats: ").count(),
        1,
        "one line for one SIGUSR1, and none at the end without --stats\n{stderr}"
    );
}

#[test]
fn sigusr1_before_the_first_connection_does_not_kill() {
    // --wait on a port where nothing listens: the run is still connecting.
    let nothing = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nothing.local_addr().unwrap().port().to_string();
    drop(nothing);
    let server = Server::start();
    let mut listen = server
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
        .args(["listen", "--wait", "jobs"])
        .spawn();
    listen.wait_stderr("could not connect yet");
    listen.signal(Signal::SIGUSR1);
    let line = listen.wait_stderr("pgnotify: stats: ");
    assert_eq!(number(&counters(&line, "stats"), "received"), 0);
    listen.assert_running_for(Duration::from_millis(300), "SIGUSR1 must not end the run");
    listen.signal(Signal::SIGTERM);
    listen.expect_exit(143);
}

#[test]
fn an_overflow_is_counted_and_stats_and_metrics_answer_while_stdout_is_stalled() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            "flood",
            "--metrics",
            "0",
            "--on-overflow",
            "drop",
        ])
        .spawn();
    let address = metrics_address(&mut pipe);
    pipe.wait_ready();
    // 5,000 notifications of 1 kB, nobody reading pgnotify's stdout: the pipe fills, then the
    // 1 MiB queue, then (after a second's grace) the queue drops.
    server
        .client()
        .batch_execute(
            "SELECT pg_notify('flood', i || ':' || repeat('x', 1000)) FROM generate_series(1, 5000) i",
        )
        .unwrap();
    pipe.wait_stderr("dropping notifications");
    let stalled = wait_scrape(&address, &pipe, "all 5000 received", |m| {
        m["pgnotify_received_total"] == 5000.0
    });
    assert!(
        stalled["pgnotify_dropped_total{stage=\"queue\"}"] > 0.0,
        "{stalled:?}"
    );
    assert!(stalled["pgnotify_queue_bytes"] > 0.0, "{stalled:?}");
    assert!(
        stalled["pgnotify_written_total"] < 5000.0,
        "stdout is stalled: {stalled:?}"
    );
    assert_eq!(stalled["pgnotify_dropped_total{stage=\"backlog\"}"], 0.0);
    // SIGUSR1 answers too, main being stuck writing.
    pipe.signal(Signal::SIGUSR1);
    let line = pipe.wait_stderr("pgnotify: stats: ");
    let during = counters(&line, "stats");
    assert_eq!(number(&during, "received"), 5000, "{line}");
    assert!(number(&during, "dropped_queue") > 0, "{line}");
    // The reader comes back: what was kept, and gap records with the counts, until every
    // notification is accounted for (a batch the source held waiting for room when the first
    // drop ended may make a second one).
    let mut kept = 0u64;
    let mut gap_dropped = 0u64;
    let mut gaps = 0;
    while kept + gap_dropped < 5000 {
        match pipe.read_any() {
            Line::Notification(_) => kept += 1,
            Line::Gap(gap) => {
                assert_eq!(gap.gap, "overflow");
                gap_dropped += gap.dropped;
                gaps += 1;
            }
        }
    }
    assert!(gaps >= 1, "{}", pipe.report());
    let after = wait_scrape(&address, &pipe, "everything kept written", |m| {
        m["pgnotify_written_total"] == kept as f64
    });
    assert_eq!(
        after["pgnotify_dropped_total{stage=\"queue\"}"], gap_dropped as f64,
        "the gap record and the counter agree"
    );
    assert_eq!(kept + gap_dropped, 5000, "received = written + dropped");
    assert_eq!(
        after["pgnotify_gaps_total{kind=\"overflow\"}"],
        f64::from(gaps),
        "{after:?}"
    );
    assert_eq!(after["pgnotify_queue_bytes"], 0.0, "{after:?}");
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

#[test]
fn a_server_restart_counts_one_reconnect_and_one_gap() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--metrics", "0", "--stats", "200ms"])
        .spawn();
    let address = metrics_address(&mut pipe);
    pipe.wait_ready();
    server.pg_ctl(&["restart", "-m", "fast"]);
    pipe.resumes_after_gap(&server, "jobs", "after");
    let now = wait_counters(&mut pipe, "the reconnect", |c| {
        number(c, "written") == 1 && number(c, "reconnects") == 1
    });
    assert_eq!(number(&now, "gaps_reconnect"), 1, "{now:?}");
    assert_eq!(number(&now, "gaps"), 1, "{now:?}");
    let metrics = scrape(&address);
    assert_eq!(metrics["pgnotify_reconnects_total"], 1.0, "{metrics:?}");
    assert_eq!(metrics["pgnotify_gaps_total{kind=\"reconnect\"}"], 1.0);
    assert_eq!(
        metrics["pgnotify_received_total"], 1.0,
        "heartbeats are not counted"
    );
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

#[test]
fn serve_clients_are_counted_as_they_come_and_go() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--serve", "0", "--metrics", "0"])
        .spawn();
    let address = metrics_address(&mut pipe);
    let line = pipe.wait_stderr("serving NDJSON on ");
    let serve = line.rsplit(' ').next().unwrap().to_owned();
    pipe.wait_ready();
    let clients = |n: f64| move |m: &HashMap<String, f64>| m["pgnotify_clients"] == n;
    assert_eq!(scrape(&address)["pgnotify_clients"], 0.0);
    let first = TcpStream::connect(&serve).unwrap();
    let second = TcpStream::connect(&serve).unwrap();
    wait_scrape(&address, &pipe, "2 clients", clients(2.0));
    server.notify("jobs", "to both");
    let written = wait_scrape(&address, &pipe, "one written", |m| {
        m["pgnotify_written_total"] == 1.0
    });
    assert_eq!(written["pgnotify_clients"], 2.0, "written once for both");
    drop(first);
    wait_scrape(&address, &pipe, "1 client", clients(1.0));
    drop(second);
    wait_scrape(&address, &pipe, "no client", clients(0.0));
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

#[test]
fn metrics_answers_404_405_and_head_and_bad_requests() {
    let server = Server::start();
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "jobs", "--metrics", "0"])
        .spawn();
    let address = metrics_address(&mut listen);
    assert!(
        address.starts_with("127.0.0.1:"),
        "loopback by default: {address}"
    );
    listen.wait_ready();
    let (status, _, body) = http(&address, "GET", "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.contains("# TYPE pgnotify_received_total counter"),
        "{body}"
    );
    let (status, _, _) = http(&address, "GET", "/metrics?x=1");
    assert_eq!(status, "HTTP/1.1 200 OK", "a query is no other path");
    let (status, _, _) = http(&address, "GET", "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = http(&address, "POST", "/metrics");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET, HEAD"), "{headers}");
    let (status, headers, body) = http(&address, "HEAD", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty(), "HEAD has no body: {body:?}");
    assert!(!headers.contains("Content-Length: 0"), "{headers}");
    let mut garbage = TcpStream::connect(&address).unwrap();
    garbage.set_read_timeout(Some(PATIENCE)).unwrap();
    garbage.write_all(b"\x01\x02 not http\r\n\r\n").unwrap();
    let mut answer = String::new();
    garbage.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    listen.signal(Signal::SIGTERM);
    listen.expect_exit(143);
}

#[test]
fn a_metrics_port_in_use_is_one_line_and_status_1_as_for_serve() {
    let server = Server::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = server
        .pgnotify()
        .args(["pipe", "jobs", "--metrics", &port])
        .run();
    out.code(1)
        .one_line_error()
        .stderr_has("--metrics: could not listen on 127.0.0.1:");
    let serve = server
        .pgnotify()
        .args(["pipe", "jobs", "--serve", &port])
        .run();
    serve.code(1).one_line_error();
    let bad = server
        .pgnotify()
        .args(["pipe", "jobs", "--metrics", "nonsense"])
        .run();
    bad.code(2)
        .one_line_error()
        .stderr_has("--metrics needs PORT or ADDRESS:PORT");
}

#[test]
fn metrics_on_another_address_warns_that_anyone_may_read() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["pipe", "jobs", "--metrics", "0.0.0.0:0"])
        .spawn();
    let line = pipe.wait_stderr("--metrics 0.0.0.0:0");
    assert!(line.contains("without authentication"), "{line}");
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

/// Threads and open descriptors of a process.
fn threads_and_fds(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (
        count(format!("/proc/{pid}/task")),
        count(format!("/proc/{pid}/fd")),
    )
}

#[test]
fn threads_and_descriptors_stay_flat_over_100_scrapes() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--metrics", "0"])
        .spawn();
    let address = metrics_address(&mut pipe);
    pipe.wait_ready();
    for _ in 0..5 {
        scrape(&address);
    }
    let settled = |limit: (usize, usize)| {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = threads_and_fds(pipe.pid());
            if now.0 <= limit.0 && now.1 <= limit.1 {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "threads and descriptors {now:?} stayed above {limit:?}{}",
                pipe.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // What the process has when no scrape is being answered (the answering threads end a
    // moment after their answer).
    std::thread::sleep(Duration::from_millis(300));
    let before = threads_and_fds(pipe.pid());
    for i in 0..100 {
        let metrics = scrape(&address);
        assert!(
            metrics.contains_key("pgnotify_received_total"),
            "scrape {i}"
        );
    }
    settled(before);
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

/// `pgnotify ARGS` with stderr to a file, and `JOURNAL_STREAM` set (to that file's device and
/// inode when `journal`, else to another file's); the file's lines.
fn stderr_to_file(server: &Server, journal: Option<bool>, args: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let variable = match journal {
        Some(true) => r#"export JOURNAL_STREAM="$(stat -c %d:%i "$LOG")""#,
        Some(false) => r#"export JOURNAL_STREAM="$(stat -c %d:%i /)""#,
        None => "unset JOURNAL_STREAM",
    };
    let script = format!(r#": > "$LOG"; {variable}; "$PGNOTIFY" "$@" {args} 2>>"$LOG""#);
    let out = server.shell(&script).env("LOG", &log).run();
    assert!(out.status.code().is_some(), "{}", out.report());
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn long_running_lines_are_stamped_unless_stderr_is_the_journal() {
    let server = Server::start();
    // listen -v logs "listening on", then times out (124) with an info line.
    let run = "-v listen jobs --timeout 300ms";
    for journal in [None, Some(false)] {
        let lines = stderr_to_file(&server, journal, run);
        assert!(lines.len() >= 2, "{lines:?}");
        for line in &lines {
            let (_, rest) = stamped(line);
            assert!(rest.starts_with("pgnotify: "), "{line}");
        }
        assert!(
            lines.iter().any(|l| l.contains("pgnotify: listening on")),
            "{lines:?}"
        );
    }
    let lines = stderr_to_file(&server, Some(true), run);
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        assert!(
            line.starts_with("<6>pgnotify: "),
            "journald: a priority, no time: {line}"
        );
    }
    // A one-shot command's error is a sentence for a person: no time, anywhere.
    let bad = "notify jobs --timeout 5s -d 'host=127.0.0.1 port=1 dbname=x'";
    let lines = stderr_to_file(&server, None, bad);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("pgnotify: error: "), "{lines:?}");
    let lines = stderr_to_file(&server, Some(true), bad);
    assert!(lines[0].starts_with("<3>pgnotify: error: "), "{lines:?}");
    // Nor the error that ends a long-running one; its warnings before it have one.
    let lines = stderr_to_file(
        &server,
        None,
        "pipe jobs --wait --max-downtime 300ms -d 'host=127.0.0.1 port=1 dbname=x'",
    );
    let (last, warnings) = lines.split_last().expect("lines");
    assert!(last.starts_with("pgnotify: error: "), "{lines:?}");
    assert!(!warnings.is_empty(), "{lines:?}");
    for line in warnings {
        assert!(stamped(line).1.starts_with("pgnotify: warning: "), "{line}");
    }
    // Under journald, a warning is <4>.
    let lines = stderr_to_file(
        &server,
        Some(true),
        "pipe jobs --wait --max-downtime 300ms -d 'host=127.0.0.1 port=1 dbname=x'",
    );
    assert!(lines[0].starts_with("<4>pgnotify: warning: "), "{lines:?}");
    assert!(
        lines.last().unwrap().starts_with("<3>pgnotify: error: "),
        "{lines:?}"
    );
}

#[test]
fn json_errors_are_objects_too() {
    let server = Server::start();
    let out = server
        .pgnotify()
        .args([
            "--log-format",
            "json",
            "notify",
            "jobs",
            "x",
            "-d",
            "host=127.0.0.1 port=1 dbname=x",
        ])
        .run();
    out.code(3);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.report());
    let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(value["level"], "error", "{value}");
    assert!(
        value["message"].as_str().unwrap().contains("127.0.0.1"),
        "{value}"
    );
}

#[test]
fn the_console_shows_the_counters_above_its_prompt_without_times() {
    use crate::support::terminal::Terminal;
    let server = Server::start();
    let term = Terminal::start(&server, &["listen", "-i", "jobs", "--stats", "300ms"], &[]);
    term.wait_for_text("Type help for commands");
    term.type_text("notify jo");
    server.notify("jobs", "counted");
    let screen = term.wait_for_screen("a stats line counting the event", |s| {
        s.above_cursor()
            .iter()
            .any(|l| l.starts_with("pgnotify: stats: received=1 written=1 "))
    });
    // The half-typed line is intact, the cursor at its end.
    assert_eq!(
        screen.cursor_line(),
        "pgnotify> notify jo",
        "{}",
        term.report()
    );
    assert_eq!(
        screen.cursor_x,
        "pgnotify> notify jo".len(),
        "{}",
        term.report()
    );
    term.signal(Signal::SIGUSR1);
    term.wait_for_screen("the prompt still there after SIGUSR1", |s| {
        s.cursor_line() == "pgnotify> notify jo"
    });
    term.keys(&["C-u"]);
    term.type_text("quit");
    term.keys(&["Enter"]);
    assert_eq!(term.exit_status(), 0, "{}", term.report());
}

/// A python script that runs `pgnotify CONNECTION... ARGS` (ARGS after a `--` in argv) with
/// its stderr a pipe that the script holds open and never reads, so that stderr fills and
/// stays full; it prints `exit CODE`, or `hung` when the run has not ended within 10 s.
const STALLED_STDERR: &str = r#"
import os, subprocess, sys
r, w = os.pipe()
p = subprocess.Popen([os.environ["PGNOTIFY"], *sys.argv[1:]], stdout=subprocess.DEVNULL, stderr=w)
os.close(w)
try:
    print("exit", p.wait(timeout=10))
except subprocess.TimeoutExpired:
    p.kill()
    print("hung")
"#;

#[test]
fn a_stalled_stderr_does_not_hold_the_end_of_a_run_with_stats() {
    // --stats 1ms fills stderr's pipe in a moment; the run then ends at its --timeout as it
    // would with stderr read (status 124), its final stats line left out if stderr takes
    // nothing: a counters line is never worth a hung service.
    let server = Server::start();
    let mut args = server.connection_args();
    args.extend(["pipe", "jobs", "--timeout", "2s", "--stats", "1ms"].map(String::from));
    let out = server.python(STALLED_STDERR).args(args).run();
    assert_eq!(out.stdout.trim(), "exit 124", "{}", out.report());
}

#[test]
fn a_sigusr1_storm_with_stderr_stalled_loses_nothing_and_the_run_ends_normally() {
    // pgnotify's stderr is a pipe nobody reads (full within a moment at --stats 1ms); 1,000
    // SIGUSR1 come while 500 notifications stream. Each is written, the threads stay few, and
    // SIGTERM ends the run as usual.
    const SCRIPT: &str = r#"
import os, signal, subprocess, sys, threading, time
r, w = os.pipe()
p = subprocess.Popen([os.environ["PGNOTIFY"], *sys.argv[1:]], stdout=subprocess.PIPE, stderr=w)
os.close(w)
def storm():
    for _ in range(1000):
        os.kill(p.pid, signal.SIGUSR1)
        time.sleep(0.001)
    print("threads", len(os.listdir(f"/proc/{p.pid}/task")), flush=True)
started = False
for line in p.stdout:
    if not started:
        started = True
        threading.Thread(target=storm).start()
    sys.stdout.write(line.decode())
    sys.stdout.flush()
    if b'"stop"' in line:
        p.send_signal(signal.SIGTERM)
try:
    print("exit", p.wait(timeout=10))
except subprocess.TimeoutExpired:
    p.kill()
    print("hung")
"#;
    let server = Server::start();
    let mut args = server.connection_args();
    args.extend(["pipe", "jobs", "--stats", "1ms"].map(String::from));
    let mut run = server.python(SCRIPT).args(args).spawn();
    // Until the listener is there, the warm-up notifications may go unheard.
    let deadline = Instant::now() + PATIENCE;
    loop {
        server.notify("jobs", "warm");
        if run
            .try_read_line_within(Duration::from_millis(200))
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no warm-up came{}", run.report());
    }
    let mut client = server.client();
    for i in 1..=500 {
        client
            .execute("SELECT pg_notify('jobs', $1)", &[&format!("n{i}")])
            .unwrap();
    }
    let mut payloads = Vec::new();
    let mut threads = None;
    let exit = loop {
        let line = run.read_line();
        if let Some(n) = line.strip_prefix("threads ") {
            threads = Some(n.trim().parse::<usize>().unwrap());
            server.notify("jobs", "stop");
        } else if line.starts_with("exit ") || line.starts_with("hung") {
            break line;
        } else {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            payloads.push(value["payload"].as_str().unwrap().to_owned());
        }
    };
    assert_eq!(exit.trim(), "exit 143", "{}", run.report());
    let wanted: Vec<String> = (1..=500).map(|i| format!("n{i}")).collect();
    let got: Vec<String> = payloads
        .into_iter()
        .filter(|p| p != "warm" && p != "stop")
        .collect();
    assert_eq!(got, wanted, "every notification, in order");
    let threads = threads.expect("the storm ends before the stop");
    assert!(threads <= 8, "{threads} threads after the storm");
}

#[test]
fn the_final_stats_of_a_run_that_reached_its_count_hold_nothing_queued() {
    // The batch that reaches --count is written by the loop (never by the express lane): the
    // queue lets go of it, and the last line says the queue is empty.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--count", "50", "--stats", "1h"])
        .spawn();
    pipe.wait_ready();
    server
        .client()
        .batch_execute("SELECT pg_notify('jobs', 'n' || i) FROM generate_series(1, 50) i")
        .unwrap();
    pipe.expect_exit(0);
    let stderr = pipe.stderr();
    let last = stderr
        .lines()
        .find(|l| l.contains("pgnotify: final stats: "))
        .unwrap_or_else(|| panic!("no final stats:\n{stderr}"));
    let last = counters(last, "final stats");
    assert_eq!(number(&last, "received"), 50, "{last:?}");
    assert_eq!(number(&last, "written"), 50, "{last:?}");
    assert_eq!(number(&last, "queue_bytes"), 0, "{last:?}");
}

#[test]
fn the_final_stats_after_a_signal_hold_nothing_queued() {
    // SIGTERM while the output is stalled: what is queued is written on the way out (the
    // reader reads again), and the last line says the queue is empty.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--stats", "1h"])
        .spawn();
    pipe.wait_ready();
    let payload = "x".repeat(4000);
    server
        .client()
        .execute(
            "SELECT pg_notify('jobs', $1 || i) FROM generate_series(1, 100) i",
            &[&payload],
        )
        .unwrap();
    // The pipe to the test holds about 64 KiB: most of the 400 KB wait in the queue.
    let queued = wait_counters_on_signal(&mut pipe, |c| number(c, "received") == 100);
    assert!(number(&queued, "queue_bytes") > 0, "{queued:?}");
    pipe.signal(Signal::SIGTERM);
    let mut read = 0;
    while read < 100 {
        pipe.read_record();
        read += 1;
    }
    pipe.expect_exit(143);
    let stderr = pipe.stderr();
    let last = stderr
        .lines()
        .find(|l| l.contains("pgnotify: final stats: "))
        .unwrap_or_else(|| panic!("no final stats:\n{stderr}"));
    let last = counters(last, "final stats");
    assert_eq!(number(&last, "written"), 100, "{last:?}");
    assert_eq!(number(&last, "queue_bytes"), 0, "{last:?}");
}

/// The counters by SIGUSR1, asked again until they pass `wanted`.
fn wait_counters_on_signal(
    run: &mut Running,
    wanted: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        run.signal(Signal::SIGUSR1);
        let now = counters(&run.wait_stderr("pgnotify: stats: "), "stats");
        if wanted(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the counters never passed: {now:?}{}",
            run.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigusr1_while_stderr_is_stalled_prints_no_backlog_when_it_drains() {
    // 1,000 SIGUSR1 while stderr is a pipe nobody reads (the first few hundred lines fill
    // it): the signals that came while a line could not be written ask for the counters
    // once, not once each, so when stderr is read again a few lines come, not a backlog of
    // hundreds printed long after they were asked for.
    const SCRIPT: &str = r#"
import os, signal, subprocess, sys, time
r, w = os.pipe()
p = subprocess.Popen([os.environ["PGNOTIFY"], *sys.argv[1:]], stdout=subprocess.DEVNULL, stderr=w)
os.close(w)
time.sleep(1)
for _ in range(1000):
    os.kill(p.pid, signal.SIGUSR1)
    time.sleep(0.001)
os.set_blocking(r, False)
data, quiet = b"", 0
while quiet < 30:
    time.sleep(0.1)
    try:
        chunk = os.read(r, 1 << 16)
    except BlockingIOError:
        chunk = b""
    data += chunk
    quiet = 0 if chunk else quiet + 1
print("lines", data.count(b"pgnotify: stats: "))
p.terminate()
print("exit", p.wait(timeout=10))
"#;
    let server = Server::start();
    let mut args = server.connection_args();
    args.extend(["pipe", "jobs"].map(String::from));
    let out = server.python(SCRIPT).args(args).run();
    let lines: usize = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("lines "))
        .unwrap_or_else(|| panic!("{}", out.report()))
        .parse()
        .unwrap();
    assert!(out.stdout.contains("exit 143"), "{}", out.report());
    // What fits in the pipe (64 KiB, about 250 lines), and a line or two more.
    assert!(
        lines < 400,
        "{lines} lines for 1,000 signals{}",
        out.report()
    );
}

#[test]
fn a_thousand_scrapes_at_once_get_200_or_503_and_the_threads_stay_bounded() {
    // 1,000 scrapes at once: each gets a whole answer, 200 or 503 (none a reset or
    // nothing), the process never has more than its threads and the 8 answering, and its
    // descriptors come back to where they were. Then 8 connections that send nothing hold
    // every answering thread: a scrape is 503 until they go, then 200 again.
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "jobs", "--metrics", "0"])
        .spawn();
    let address = metrics_address(&mut pipe);
    pipe.wait_ready();
    scrape(&address);
    std::thread::sleep(Duration::from_millis(300));
    let before = threads_and_fds(pipe.pid());
    let pid = pipe.pid();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let most = std::sync::Arc::clone(&most);
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                most.fetch_max(threads_and_fds(pid).0, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let statuses: Vec<String> = (0..1000)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                let answer = answer_of(&address);
                let status = answer.lines().next().unwrap_or("").to_owned();
                let whole = answer.contains("\r\n\r\n")
                    && (!status.contains("200") || answer.ends_with("\n"));
                if whole {
                    status
                } else {
                    format!("partial: {answer:?}")
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    watcher.join().unwrap();
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for status in &statuses {
        *by_status.entry(status.as_str()).or_default() += 1;
    }
    for status in by_status.keys() {
        assert!(
            *status == "HTTP/1.1 200 OK" || *status == "HTTP/1.1 503 Service Unavailable",
            "{by_status:?}"
        );
    }
    assert!(by_status.contains_key("HTTP/1.1 200 OK"), "{by_status:?}");
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(most <= before.0 + 8, "{most} threads, {before:?} before");
    let deadline = Instant::now() + PATIENCE;
    while threads_and_fds(pipe.pid()).1 > before.1 {
        assert!(
            Instant::now() < deadline,
            "descriptors {:?}, {before:?} before",
            threads_and_fds(pipe.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = status_of(&address);
        if status == "HTTP/1.1 503 Service Unavailable" {
            break;
        }
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(Instant::now() < deadline, "never busy{}", pipe.report());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = status_of(&address);
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}{}", pipe.report());
        std::thread::sleep(Duration::from_millis(100));
    }
    pipe.signal(Signal::SIGTERM);
    pipe.expect_exit(143);
}

/// What a GET of /metrics gets back, whole; a 503 may come before the request is written
/// (so a failed write is no failure).
fn answer_of(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line of [`answer_of`].
fn status_of(address: &str) -> String {
    answer_of(address).lines().next().unwrap_or("").to_owned()
}

#[test]
fn a_json_error_quoting_control_characters_from_the_server_is_one_valid_line() {
    // The server's error quotes the role name as given: a newline, a C0 and a C1 control
    // character and an escape sequence in it still make one line of valid JSON.
    let server = Server::start();
    let mut args = server.connection_args();
    let user = args.iter().position(|a| a == "-U").unwrap() + 1;
    args[user] = "u\n\u{1}\u{9b}[2J\u{1b}[31m".to_owned();
    let out = server
        .bare()
        .args(["--log-format", "json"])
        .args(args)
        .args(["listen", "x"])
        .run();
    out.code(3);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.report());
    let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(value["level"], "error", "{value}");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{value}"
    );
    assert!(!lines[0].contains('\u{1b}'), "a raw escape: {:?}", lines[0]);
}

#[test]
fn a_journal_stream_of_garbage_keeps_the_times() {
    // Not DEV:INODE, or numbers past u64, or this file's numbers with junk around them: not
    // journald, so the lines are stamped and have no priority.
    let server = Server::start();
    for value in [
        "",
        ":",
        "abc",
        "1:2:3",
        "-1:-1",
        "18446744073709551616:1",
        "$(stat -c %d:%i \"$LOG\"):0",
        " $(stat -c %d:%i \"$LOG\")",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr");
        let script = format!(
            r#": > "$LOG"; export JOURNAL_STREAM="{value}"; "$PGNOTIFY" "$@" -v listen jobs --timeout 300ms 2>>"$LOG""#
        );
        let out = server.shell(&script).env("LOG", &log).run();
        out.code(124);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.lines().count() >= 2, "{value:?}: {text}");
        for line in text.lines() {
            let (_, rest) = stamped(line);
            assert!(rest.starts_with("pgnotify: "), "{value:?}: {line}");
        }
    }
}
