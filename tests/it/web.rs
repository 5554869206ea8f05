//! `pipe --websocket` and `pipe --sse` against real clients on loopback: tungstenite's
//! WebSocket client, an SSE client that reads as EventSource does, raw HTTP for the
//! hygiene, and (in `browser`) a headless chromium on the page.

use crate::support::web::{self, Sse, get, next_text, refused_status, request, served, websocket};
use crate::support::{Line, PATIENCE, Record, Running, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `pipe CHANNELS --websocket 0 --sse 0 EXTRA...`: both on one port; the address.
fn web_pipe(server: &Server, channels: &[&str], extra: &[&str]) -> (Running, String) {
    let mut args = vec!["-v", "pipe"];
    args.extend_from_slice(channels);
    args.extend_from_slice(&["--websocket", "0", "--sse", "0"]);
    args.extend_from_slice(extra);
    let mut pipe = server.pgnotify().args(args).spawn();
    let address = served(&mut pipe, "http");
    pipe.wait_ready();
    (pipe, address)
}

fn record(text: &str) -> Record {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn gap(text: &str) -> crate::support::GapRecord {
    match serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}")) {
        Line::Gap(gap) => gap,
        Line::Notification(n) => panic!("not a gap record: {n:?}"),
    }
}

/// A WebSocket handshake's request for `path`, of `version`, with `extra` header lines.
fn handshake(address: &str, path: &str, version: u8, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Upgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// A WebSocket handshake by hand, after which the client never reads.
fn stalled_websocket(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "{}", handshake(address, "/", 13, "")).unwrap();
    stream
}

#[test]
fn every_reading_client_gets_20000_events_in_order_next_to_ones_that_never_read() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["w"], &[]);
    let stalled_ws = stalled_websocket(&address);
    let mut stalled_sse = TcpStream::connect(&address).unwrap();
    write!(stalled_sse, "GET / HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut ws = websocket(&address, "/").unwrap();
    let mut sse = Sse::open(&address, "/", &[]);
    for _ in 0..4 {
        pipe.wait_stderr("connected");
    }
    let total = 20_000;
    let reading = std::thread::spawn(move || {
        let from_ws: Vec<String> = (0..total)
            .map(|_| record(&next_text(&mut ws)).payload)
            .collect();
        (from_ws, ws)
    });
    let reading_sse = std::thread::spawn(move || {
        let from_sse: Vec<String> = (0..total).map(|_| sse.payload()).collect();
        (from_sse, sse)
    });
    server
        .client()
        .batch_execute(&format!(
            "SELECT pg_notify('w', i || ':' || repeat('x', 500)) FROM generate_series(1, {total}) i"
        ))
        .unwrap();
    let (from_ws, mut ws) = reading.join().unwrap();
    let (from_sse, mut sse) = reading_sse.join().unwrap();
    for got in [&from_ws, &from_sse] {
        assert_eq!(got.len(), total);
        for (i, p) in got.iter().enumerate() {
            assert!(
                p.starts_with(&format!("{}:", i + 1)),
                "out of order at {i}: {p:.20}"
            );
        }
    }
    // 10 MB went to each: the two that never read were let go, with a line each.
    pipe.wait_stderr("WebSocket client");
    let stderr = pipe.stderr();
    assert_eq!(
        stderr
            .matches("is not reading fast enough: disconnected")
            .count(),
        2,
        "{stderr}"
    );
    server.notify("w", "still here");
    assert_eq!(record(&next_text(&mut ws)).payload, "still here");
    assert_eq!(sse.payload(), "still here");
    drop((stalled_ws, stalled_sse));
}

#[test]
fn a_slow_websocket_client_is_sent_a_close_frame_it_can_read() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["c"], &[]);
    // A receive buffer of 4 KiB from the start: pgnotify's writes to the client get stuck
    // in the middle of frames.
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, setsockopt, sockopt};
    let fd = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    let to: std::net::SocketAddrV4 = address.parse().unwrap();
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("ws://{address}/"), stream).unwrap();
    pipe.wait_stderr("connected");
    // More than 1 MiB while the client does not read, in bursts a while apart, so that
    // pgnotify gives up on it while a write is stuck. Then the client reads everything:
    // whole frames, then the close frame.
    let mut db = server.client();
    for burst in 0..100 {
        db.batch_execute(&format!(
            "SELECT pg_notify('c', i || repeat('y', 3000)) FROM generate_series({}, {}) i",
            burst * 100 + 1,
            burst * 100 + 100
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if pipe
            .stderr()
            .contains("is not reading fast enough: disconnected")
        {
            break;
        }
    }
    pipe.wait_stderr("is not reading fast enough: disconnected");
    // Its writer, stuck, looks every second whether it was let go.
    std::thread::sleep(Duration::from_secs(3));
    let mut texts = 0;
    let close = loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(_)) => texts += 1,
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(e) => panic!("no close frame after {texts} frames: {e}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("too slow"), "{close:?}");
    assert!(texts > 0 && texts < 10_000, "{texts}");
}

#[test]
fn a_client_that_leaves_mid_stream_disturbs_nobody() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["m"], &[]);
    let mut leaving = websocket(&address, "/").unwrap();
    let mut leaving_sse = Sse::open(&address, "/", &[]);
    let mut staying = websocket(&address, "/").unwrap();
    for _ in 0..3 {
        pipe.wait_stderr("connected");
    }
    let mut client = server.client();
    client
        .batch_execute("SELECT pg_notify('m', i::text) FROM generate_series(1, 50) i")
        .unwrap();
    for i in 1..=10 {
        assert_eq!(record(&next_text(&mut leaving)).payload, i.to_string());
        assert_eq!(leaving_sse.payload(), i.to_string());
    }
    drop(leaving);
    drop(leaving_sse);
    client
        .batch_execute("SELECT pg_notify('m', i::text) FROM generate_series(51, 3000) i")
        .unwrap();
    for i in 1..=3000 {
        assert_eq!(record(&next_text(&mut staying)).payload, i.to_string());
    }
    pipe.wait_stderr("left");
    let stderr = pipe.stderr();
    assert!(!stderr.contains("not reading"), "{stderr}");
}

#[test]
fn clients_choose_channels_within_the_allow_list() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(
        &server,
        &["alpha", "apple", "beta"],
        &["--allow-channel", "a*"],
    );
    let mut alpha = Sse::open(&address, "/?channel=alpha", &[]);
    let mut allowed = Sse::open(&address, "/", &[]);
    let mut apple = websocket(&address, "/?channel=apple").unwrap();
    for _ in 0..3 {
        pipe.wait_stderr("connected");
    }
    for (channel, payload) in [
        ("beta", "b1"),
        ("alpha", "a1"),
        ("apple", "p1"),
        ("beta", "b2"),
        ("apple", "p2"),
    ] {
        server.notify(channel, payload);
    }
    server.notify("alpha", "a2");
    assert_eq!(
        (alpha.payload(), alpha.payload()),
        ("a1".into(), "a2".into())
    );
    let names: Vec<(Option<String>, String)> = (0..4)
        .map(|_| {
            let e = allowed.next().unwrap();
            (e.event, record(&e.data).payload)
        })
        .collect();
    assert_eq!(
        names,
        [
            (Some("alpha".into()), "a1".into()),
            (Some("apple".into()), "p1".into()),
            (Some("apple".into()), "p2".into()),
            (Some("alpha".into()), "a2".into()),
        ],
        "beta is piped but not allowed: nobody gets it"
    );
    assert_eq!(record(&next_text(&mut apple)).payload, "p1");
    assert_eq!(record(&next_text(&mut apple)).payload, "p2");
    let forbidden = get(&address, "/?channel=beta", &[]);
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    assert!(forbidden.body.contains("not allowed"), "{forbidden:?}");
    assert_eq!(get(&address, "/?channel=gamma", &[]).status, 404);
    assert_eq!(refused_status(websocket(&address, "/?channel=beta")), 403);
    // A channel whose name needs escaping in a URL.
    drop(pipe);
    let (odd_pipe, address) = web_pipe(&server, &["a b&c=d/é"], &[]);
    let mut odd = Sse::open(&address, "/?channel=a%20b%26c%3Dd%2F%C3%A9", &[]);
    server.notify("a b&c=d/é", "odd");
    assert_eq!(odd.payload(), "odd");
    // A channel named like one of EventSource's own events comes unnamed.
    drop(odd_pipe);
    let (_pipe, address) = web_pipe(&server, &["error"], &[]);
    let mut error = Sse::open(&address, "/", &[]);
    server.notify("error", "not an error");
    let event = error.next().unwrap();
    assert_eq!(event.event, None, "{event:?}");
    assert_eq!(record(&event.data).payload, "not an error");
}

#[test]
fn the_token_is_required_wrong_or_right() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (mut pipe, address) = web_pipe(
        &server,
        &["t"],
        &["--token-file", file.to_str().unwrap(), "--page"],
    );
    let missing = get(&address, "/", &[]);
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(
        missing.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"pgnotify\"")
    );
    assert_eq!(
        get(&address, "/", &["Authorization: Bearer wrong"]).status,
        401
    );
    assert_eq!(get(&address, "/?token=s3cret-tokenX", &[]).status, 401);
    assert_eq!(get(&address, "/?token=s3cret-toke", &[]).status, 401);
    assert_eq!(refused_status(websocket(&address, "/")), 401);
    assert_eq!(refused_status(websocket(&address, "/?token=nope")), 401);
    // The page too is behind the token.
    assert_eq!(get(&address, "/", &["Accept: text/html"]).status, 401);
    assert_eq!(
        get(&address, "/?token=s3cret-token", &["Accept: text/html"]).status,
        200
    );
    let mut by_header = Sse::open(&address, "/", &["Authorization: Bearer s3cret-token"]);
    let mut by_query = Sse::open(&address, "/?token=s3cret-token", &[]);
    let mut ws = websocket(&address, "/?token=s3cret-token").unwrap();
    for _ in 0..3 {
        pipe.wait_stderr("connected");
    }
    server.notify("t", "let in");
    assert_eq!(by_header.payload(), "let in");
    assert_eq!(by_query.payload(), "let in");
    assert_eq!(record(&next_text(&mut ws)).payload, "let in");
}

#[test]
fn listening_beyond_loopback_needs_a_token_and_bad_options_are_usage_errors() {
    let server = Server::start();
    server
        .pgnotify()
        .args(["pipe", "x", "--sse", "0.0.0.0:0"])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("give --token-file FILE, or listen on 127.0.0.1");
    for args in [
        &["pipe", "x", "--path", "/ws"][..],
        &["pipe", "x", "--stdout"],
        &["pipe", "x", "--sse", "0", "--consumer", "c"],
        &["pipe", "x", "--websocket", "0", "--exec", "true"],
        &["pipe", "x", "--sse", "0", "--path", "ws"],
        &["pipe", "x", "--sse", "0", "--keepalive", "1ms"],
        &["pipe", "x", "--sse", "nonsense"],
    ] {
        server.pgnotify().args(args).run().code(2);
    }
    server
        .pgnotify()
        .args(["pipe", "x", "--sse", "0", "--allow-channel", "y*"])
        .run()
        .code(2)
        .stderr_has("allows none of the piped channels");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").unwrap();
    server
        .pgnotify()
        .args(["pipe", "x", "--sse", "0.0.0.0:0", "--timeout", "1s"])
        .arg("--token-file")
        .arg(&token)
        .run()
        .code(124)
        .stderr_has("cross the network unencrypted")
        .stderr_has("can be read by others than its owner");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    server
        .pgnotify()
        .args([
            "pipe",
            "x",
            "--sse",
            "0",
            "--token-file",
            empty.to_str().unwrap(),
        ])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("is empty");
}

#[test]
fn http_hygiene_paths_methods_origins_and_hosts() {
    let server = Server::start();
    let (_pipe, address) = web_pipe(
        &server,
        &["h"],
        &["--path", "/events", "--allow-origin", "https://app.example"],
    );
    let not_found = get(&address, "/", &[]);
    assert_eq!(not_found.status, 404, "{not_found:?}");
    assert!(
        not_found.body.contains("the stream is at /events"),
        "{not_found:?}"
    );
    let post = request(
        &address,
        &format!("POST /events HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD, OPTIONS".into()))
    );
    // HEAD: the stream's head, and no body.
    let head = request(
        &address,
        &format!("HEAD /events HTTP/1.1\r\nHost: {address}\r\n\r\n"),
    );
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("content-type").as_deref(),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(head.body, "");
    let head_404 = request(
        &address,
        &format!("HEAD /x HTTP/1.1\r\nHost: {address}\r\n\r\n"),
    );
    assert_eq!((head_404.status, head_404.body.as_str()), (404, ""));
    // A preflight from an allowed origin, and from another.
    let preflight = request(
        &address,
        &format!(
            "OPTIONS /events HTTP/1.1\r\nHost: {address}\r\nOrigin: https://app.example\r\n\
             Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n"
        ),
    );
    assert_eq!(preflight.status, 204, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let foreign = get(&address, "/events", &["Origin: https://evil.example"]);
    assert_eq!(foreign.status, 403, "{foreign:?}");
    let allowed = Sse::open(&address, "/events", &["Origin: https://app.example"]);
    assert!(
        allowed
            .head
            .contains("Access-Control-Allow-Origin: https://app.example"),
        "{}",
        allowed.head
    );
    // A WebSocket from another site's page (cross-site WebSocket hijacking) is refused.
    let origin = "Origin: https://evil.example\r\n";
    let hijack = request(&address, &handshake(&address, "/events", 13, origin));
    assert_eq!(hijack.status, 403, "{hijack:?}");
    // A name that could be rebound to 127.0.0.1 by a stranger's DNS is refused.
    let rebound = request(
        &address,
        "GET /events HTTP/1.1\r\nHost: evil.example:80\r\n\r\n",
    );
    assert_eq!(rebound.status, 403, "{rebound:?}");
    let localhost = request(&address, "HEAD /events HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(localhost.status, 200, "{localhost:?}");
    // Not HTTP at all, and an old WebSocket version.
    assert_eq!(request(&address, "\x16\x03\x01 hello\r\n\r\n").status, 400);
    let old = request(&address, &handshake(&address, "/events", 8, ""));
    assert_eq!(
        (old.status, old.header("sec-websocket-version")),
        (426, Some("13".into()))
    );
    // Two Host headers, a page of https:// (pgnotify serves http only), 65 headers.
    let two_hosts = request(
        &address,
        &format!("GET /events HTTP/1.1\r\nHost: {address}\r\nHost: evil.example\r\n\r\n"),
    );
    assert_eq!(two_hosts.status, 400, "{two_hosts:?}");
    let https = get(
        &address,
        "/events",
        &[&format!("Origin: https://{address}")],
    );
    assert_eq!(https.status, 403, "{https:?}");
    let many: Vec<String> = (0..65).map(|i| format!("X-{i}: y")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let too_many = get(&address, "/events", &many);
    assert_eq!(too_many.status, 400);
    assert!(too_many.body.contains("over 64 headers"), "{too_many:?}");
    assert_eq!(
        too_many.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

#[test]
fn refused_requests_by_the_hundred_keep_threads_bounded() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["b"], &[]);
    let pid = pipe.pid();
    let mut ws = websocket(&address, "/").unwrap();
    pipe.wait_stderr("connected");
    let before = threads(pid);
    // 400 requests for nothing, sent at once: each answered 404 (or 503 when 128 threads
    // are answering already), then lingered on.
    let mut streams: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            write!(s, "GET /nope HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
            s
        })
        .collect();
    let most = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(25));
            threads(pid)
        })
        .max()
        .unwrap();
    assert!(most <= before + 128, "{most} threads (from {before})");
    let mut statuses = std::collections::BTreeMap::new();
    for s in &mut streams {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer.split(' ').nth(1).unwrap_or("none").to_string();
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses.values().sum::<i32>(), 400);
    assert!(
        !statuses.contains_key("none"),
        "every one answered: {statuses:?}"
    );
    server.notify("b", "after");
    assert_eq!(record(&next_text(&mut ws)).payload, "after");
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn slowloris_gets_408_and_bounded_threads_while_streaming_clients_carry_on() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["s"], &[]);
    let mut ws = websocket(&address, "/").unwrap();
    pipe.wait_stderr("connected");
    let pid = pipe.pid();
    let before = threads(pid);
    // An oversized head is answered 400 at once.
    let big = request(
        &address,
        &format!(
            "GET / HTTP/1.1\r\nHost: {address}\r\nX-Big: {}\r\n\r\n",
            "b".repeat(9000)
        ),
    );
    assert_eq!(big.status, 400, "{big:?}");
    // 200 connections that send a head a byte at a time, never finishing it.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = threads(pid);
    assert!(
        during <= before + 128,
        "{during} threads with 200 half-sent requests (from {before})"
    );
    // A new client is served meanwhile: it takes the place of the oldest half-sent request.
    let mut newcomer = Sse::open(&address, "/", &[]);
    // The streaming client is not held up by them.
    for i in 0..3 {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"z");
        }
        server.notify("s", &format!("during {i}"));
        assert_eq!(record(&next_text(&mut ws)).payload, format!("during {i}"));
        assert_eq!(newcomer.payload(), format!("during {i}"));
    }
    // Each is answered 408: when newer connections needed its place, or after 10 s (the 64
    // newest half-sent ones).
    let mut statuses = std::collections::BTreeMap::new();
    for mut s in slow {
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer.split(' ').nth(1).unwrap_or("none").to_string();
        *statuses.entry(status).or_insert(0) += 1;
    }
    let waited = started.elapsed();
    // (Or 503 at once, while 128 threads were still answering.)
    let (timeouts, busy) = (statuses.get("408"), statuses.get("503").unwrap_or(&0));
    assert!(timeouts.is_some_and(|n| *n >= 64), "{statuses:?}");
    assert_eq!(
        timeouts.unwrap() + busy,
        200,
        "every one answered: {statuses:?}"
    );
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    drop(newcomer);
    // Everything is given back, and a new client is served.
    server.wait_until("the slow connections' threads to end", || {
        threads(pid) <= before
    });
    let mut sse = Sse::open(&address, "/", &[]);
    pipe.wait_stderr("SSE client");
    server.notify("s", "after");
    assert_eq!(sse.payload(), "after");
    assert_eq!(record(&next_text(&mut ws)).payload, "after");
}

#[test]
fn a_hundred_clients_come_and_go_and_leave_threads_and_descriptors_flat() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["f"], &[]);
    let pid = pipe.pid();
    let mut keeper = websocket(&address, "/").unwrap();
    pipe.wait_stderr("connected");
    server.notify("f", "warm");
    assert_eq!(record(&next_text(&mut keeper)).payload, "warm");
    let (threads_before, fds_before) = (threads(pid), descriptors(pid));
    for round in 0..100 {
        let mut ws = websocket(&address, "/").unwrap();
        let mut sse = Sse::open(&address, "/", &[]);
        // Both are attached once an event sent after them arrives.
        server.notify("f", &format!("r{round}"));
        assert_eq!(record(&next_text(&mut ws)).payload, format!("r{round}"));
        assert_eq!(sse.payload(), format!("r{round}"));
        assert_eq!(record(&next_text(&mut keeper)).payload, format!("r{round}"));
        if round % 2 == 0 {
            ws.close(None).unwrap();
            let _ = ws.flush();
        }
    }
    server.wait_until("every client's thread and socket to be given back", || {
        threads(pid) <= threads_before && descriptors(pid) <= fds_before
    });
    let stderr = pipe.stderr();
    assert!(stderr.contains("closed the WebSocket"), "{stderr}");
}

#[test]
fn gap_records_after_a_postgresql_restart_reach_every_client() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["r", "q"], &["--stdout"]);
    let mut ws = websocket(&address, "/").unwrap();
    let mut ws_q = websocket(&address, "/?channel=q").unwrap();
    let mut sse = Sse::open(&address, "/", &[]);
    let mut sse_q = Sse::open(&address, "/?channel=q", &[]);
    for _ in 0..4 {
        pipe.wait_stderr("connected");
    }
    server.notify("r", "before");
    assert_eq!(record(&next_text(&mut ws)).payload, "before");
    assert_eq!(sse.payload(), "before");
    server.pg_ctl(&["restart", "-m", "fast"]);
    pipe.wait_stderr("reconnected");
    for text in [next_text(&mut ws), next_text(&mut ws_q)] {
        let gap = gap(&text);
        assert_eq!(gap.gap, "reconnect", "{text}");
    }
    for stream in [&mut sse, &mut sse_q] {
        let event = stream.next().unwrap();
        assert_eq!(event.event.as_deref(), Some("gap"), "{event:?}");
        assert_eq!(gap(&event.data).gap, "reconnect");
    }
    server.notify("q", "after");
    assert_eq!(record(&next_text(&mut ws_q)).payload, "after");
    assert_eq!(sse_q.payload(), "after");
    // stdout had the same, in the same order.
    assert_eq!(pipe.read_record().payload, "before");
    assert!(matches!(pipe.read_any(), Line::Gap(g) if g.gap == "reconnect"));
    assert_eq!(pipe.read_record().payload, "after");
}

#[test]
fn sse_clients_coming_back_with_last_event_id_learn_what_they_missed() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["e", "o"], &[]);
    let mut first = Sse::open(&address, "/", &[]);
    let mut only_e = Sse::open(&address, "/?channel=e", &[]);
    pipe.wait_stderr("connected");
    pipe.wait_stderr("connected");
    server.notify("e", "1");
    let seen = first.next().unwrap();
    assert_eq!(only_e.payload(), "1");
    let id = seen.id.clone().expect("events have ids");
    drop(first);
    drop(only_e);
    for (channel, payload) in [("e", "2"), ("o", "x"), ("e", "3"), ("o", "y"), ("o", "z")] {
        server.notify(channel, payload);
    }
    // Sent after the five: a marker that they have all been handed on.
    let mut marker = Sse::open(&address, "/?channel=o", &[]);
    pipe.wait_stderr("connected");
    server.notify("o", "marker");
    // (It may get some of the five first: they may still be on their way to pgnotify.)
    while marker.payload() != "marker" {}
    let mut back = Sse::open(&address, "/", &[&format!("Last-Event-ID: {id}")]);
    let missed = back.next().unwrap();
    assert_eq!(missed.event.as_deref(), Some("gap"));
    assert_eq!(missed.id, None, "a resume gap keeps the client's last id");
    let record = gap(&missed.data);
    assert_eq!(
        (record.gap.as_str(), record.dropped),
        ("client", 6),
        "{record:?}"
    );
    let mut back_e = Sse::open(&address, "/?channel=e", &[&format!("Last-Event-ID: {id}")]);
    assert_eq!(
        gap(&back_e.next().unwrap().data).dropped,
        2,
        "only its channel counts"
    );
    server.notify("e", "4");
    assert_eq!(back.payload(), "4");
    assert_eq!(back_e.payload(), "4");
    // Up to date: no gap.
    let last = {
        let mut again = Sse::open(&address, "/?channel=e", &[&format!("Last-Event-ID: {id}")]);
        again.next().unwrap();
        server.notify("e", "5");
        again.next().unwrap().id.unwrap()
    };
    let mut current = Sse::open(&address, "/", &[&format!("Last-Event-ID: {last}")]);
    back.payload();
    server.notify("e", "6");
    assert_eq!(current.payload(), "6", "nothing missed: no gap first");
    // An id from an earlier run of pgnotify: what it missed is unknown, and said so.
    let mut stranger = Sse::open(&address, "/", &["Last-Event-ID: 1-5"]);
    let unknown = gap(&stranger.next().unwrap().data);
    // At least what this run sent: 1, 2, x, 3, y, z, marker, 4, 5, 6.
    assert_eq!((unknown.gap.as_str(), unknown.dropped), ("client", 10));
    assert!(unknown.reason.contains("not from this run"), "{unknown:?}");
}

#[test]
fn websocket_clients_are_pinged_and_a_silent_one_is_let_go() {
    let server = Server::start();
    let (mut pipe, address) = web_pipe(&server, &["k"], &["--keepalive", "300ms"]);
    // Reads (so it answers pings, as tungstenite does while reading) but sends nothing.
    let mut alive = websocket(&address, "/").unwrap();
    // Completes the handshake, reads nothing, answers nothing.
    let silent = stalled_websocket(&address);
    pipe.wait_stderr("connected");
    pipe.wait_stderr("connected");
    let started = Instant::now();
    let mut pings = 0;
    alive
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while started.elapsed() < Duration::from_secs(2) {
        match alive.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("{other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = alive.flush();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pings >= 4, "{pings} pings in 2 s at --keepalive 300ms");
    pipe.wait_stderr("answered no ping");
    alive
        .get_mut()
        .set_read_timeout(Some(crate::support::PATIENCE))
        .unwrap();
    server.notify("k", "alive");
    assert_eq!(record(&next_text(&mut alive)).payload, "alive");
    // Data sent by a client is ignored; a close is answered with one.
    alive
        .send(tungstenite::Message::text("NOTIFY k, 'injected'"))
        .unwrap();
    alive
        .send(tungstenite::Message::binary(vec![0u8; 100_000]))
        .unwrap();
    server.notify("k", "after");
    assert_eq!(record(&next_text(&mut alive)).payload, "after");
    alive.close(None).unwrap();
    loop {
        match alive.read() {
            Ok(tungstenite::Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    drop(silent);
    let stderr = pipe.stderr();
    assert!(!stderr.contains("injected"), "{stderr}");
}

#[test]
fn serve_websocket_sse_and_stdout_together_on_one_connection() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            "all",
            "--serve",
            "0",
            "--websocket",
            "0",
            "--sse",
            "0",
            "--stdout",
        ])
        .spawn();
    let tcp = pipe.wait_stderr("serving NDJSON on ");
    let tcp = tcp.rsplit(' ').next().unwrap().to_owned();
    let address = served(&mut pipe, "http");
    pipe.wait_ready();
    let mut tcp = std::io::BufReader::new(TcpStream::connect(&tcp).unwrap());
    let mut ws = websocket(&address, "/").unwrap();
    let mut sse = Sse::open(&address, "/", &[]);
    for _ in 0..3 {
        pipe.wait_stderr("connected");
    }
    assert_eq!(
        server.sessions("pgnotify"),
        1,
        "one PostgreSQL connection for all"
    );
    for i in 0..100 {
        server.notify("all", &i.to_string());
    }
    for i in 0..100 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut tcp, &mut line).unwrap();
        let expected = i.to_string();
        assert_eq!(record(&line).payload, expected);
        assert_eq!(record(&next_text(&mut ws)).payload, expected);
        assert_eq!(sse.payload(), expected);
        assert_eq!(pipe.read_record().payload, expected);
    }
    web::get(&address, "/nope", &[]);
}

/// The page in a real browser (headless chromium): rows inserted into a watched table appear
/// in its DOM, per channel, and a PostgreSQL restart's gap record is shown.
#[test]
fn the_page_shows_table_changes_live_in_a_headless_browser() {
    use crate::support::browser::Browser;
    let server = Server::start();
    server.psql("CREATE TABLE orders (id int PRIMARY KEY, item text)");
    server.watch_table(&["orders"]);
    let mut pipe = server
        .pgnotify()
        .args([
            "-v", "pipe", "orders", "other", "--fetch", "--sse", "0", "--page",
        ])
        .spawn();
    let address = served(&mut pipe, "http");
    pipe.wait_ready();
    let mut browser = Browser::open(&format!("http://{address}/")).unwrap();
    browser
        .wait_for(
            "document.getElementById('state').textContent === 'live'",
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("{e}{}", pipe.report()));
    let events = "[...document.querySelectorAll('section[data-channel=\"orders\"] li.event pre')]\
                  .map(e => e.textContent)";
    for i in 1..=3 {
        server.psql(&format!(
            "INSERT INTO orders VALUES ({i}, '<b>item {i}</b>')"
        ));
    }
    server.notify("other", "<img src=x onerror=alert(1)>");
    let shown = browser
        .wait_for(&format!("{events}.length === 3 && {events}"), PATIENCE)
        .unwrap_or_else(|e| panic!("{e}{}", pipe.report()));
    // Newest first, each the payload parsed with its fetched row, as text.
    let shown: Vec<String> = serde_json::from_value(shown).unwrap();
    for (text, id) in shown.iter().zip([3, 2, 1]) {
        assert!(text.contains(&format!("<b>item {id}</b>")), "{text}");
        assert!(text.contains("\"INSERT\""), "{text}");
    }
    // Another channel has its own column; the markup in a payload is text, not HTML.
    let other = browser
        .wait_for(
            "[...document.querySelectorAll('section[data-channel=\"other\"] li.event pre')]\
             .map(e => e.textContent).join()",
            PATIENCE,
        )
        .unwrap();
    assert_eq!(other, "<img src=x onerror=alert(1)>");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('img').length")
            .unwrap(),
        0
    );
    assert_eq!(
        browser
            .eval("document.getElementById('total').textContent")
            .unwrap(),
        "4 events"
    );
    // A restart: the gap record is shown, and events go on.
    server.pg_ctl(&["restart", "-m", "fast"]);
    pipe.wait_stderr("reconnected");
    let gap = browser
        .wait_for(
            "document.querySelector('#gaps li[data-gap=\"reconnect\"]')?.textContent",
            PATIENCE,
        )
        .unwrap();
    assert!(gap.as_str().unwrap().contains("gap (reconnect)"), "{gap}");
    server.psql("INSERT INTO orders VALUES (4, 'after the restart')");
    browser
        .wait_for(
            &format!("{events}.length === 4 && {events}[0].includes('after the restart')"),
            PATIENCE,
        )
        .unwrap_or_else(|e| {
            let dom = browser.eval("document.body.innerText").unwrap_or_default();
            panic!("{e}\n{dom}{}", pipe.report())
        });
}

#[test]
fn the_page_reads_a_websocket_stream_and_a_channel_selection_in_a_browser() {
    use crate::support::browser::Browser;
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args([
            "-v",
            "pipe",
            "a",
            "b",
            "--websocket",
            "0",
            "--page",
            "--path",
            "/live",
        ])
        .spawn();
    let address = served(&mut pipe, "ws");
    pipe.wait_ready();
    let mut browser = Browser::open(&format!("http://{address}/live?channel=b")).unwrap();
    browser
        .wait_for(
            "document.getElementById('state').textContent === 'live'",
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("{e}{}", pipe.report()));
    server.notify("a", "not for this page");
    server.notify("b", "for this page");
    let shown = browser
        .wait_for(
            "[...document.querySelectorAll('li.event pre')].map(e => e.textContent).join()",
            PATIENCE,
        )
        .unwrap();
    assert_eq!(shown, "for this page");
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('section')].map(s => s.dataset.channel).join()")
            .unwrap(),
        "b",
        "only the channel asked for has a column"
    );
}

#[test]
fn many_clients_at_once_each_get_every_event_in_order() {
    let server = Server::start();
    let (pipe, address) = web_pipe(&server, &["many"], &[]);
    let (kinds, total) = (60, 3000);
    let mut readers = Vec::new();
    for i in 0..kinds {
        if i % 2 == 0 {
            let mut ws = websocket(&address, "/").unwrap();
            readers.push(std::thread::spawn(move || {
                (0..total)
                    .map(|_| record(&next_text(&mut ws)).payload)
                    .collect::<Vec<_>>()
            }));
        } else {
            let mut sse = Sse::open(&address, "/", &[]);
            readers.push(std::thread::spawn(move || {
                (0..total).map(|_| sse.payload()).collect::<Vec<_>>()
            }));
        }
    }
    server.wait_until("every client to be attached", || {
        pipe.stderr().matches(" connected").count() == kinds + 1
    });
    let mut db = server.client();
    for from in (1..=total).step_by(500) {
        db.batch_execute(&format!(
            "SELECT pg_notify('many', g::text) FROM generate_series({from}, {}) g",
            from + 499
        ))
        .unwrap();
    }
    let expected: Vec<String> = (1..=total).map(|i| i.to_string()).collect();
    for reader in readers {
        assert!(
            reader.join().unwrap() == expected,
            "a client missed or reordered events"
        );
    }
    let stderr = pipe.stderr();
    assert!(!stderr.contains("not reading"), "{stderr}");
}
