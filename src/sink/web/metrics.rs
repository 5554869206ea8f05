//! `--metrics [ADDR:]PORT`: the run's counters (`stats`) for Prometheus, on the same request
//! parser and short answers as the web clients (`http`): GET or HEAD of `/metrics` (or `/`)
//! is answered with the text exposition format, another path 404, another method 405, and
//! the connection is closed.
//!
//! It is a thread that accepts and at most [`MAX_ANSWERING`] threads that answer, each within
//! `http`'s bounds (the head in 10 s and 8 KiB, the answer in 1 s); more connections at once
//! are answered 503 at once. Nothing here waits for the loop or the output: a run whose output
//! is stalled still answers, which is when its counters are wanted.

use super::http::{self, Answer, Method, Unread};
use crate::msg;
use crate::sink::server::listen_address;
use crate::stats;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// How many scrapes may be answered at once.
const MAX_ANSWERING: usize = 8;

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Listens on `spec` and starts answering scrapes; the address it listens on.
pub(crate) fn serve(spec: &str) -> Result<std::net::SocketAddr> {
    let address = listen_address("--metrics", spec)?;
    let listener = TcpListener::bind(address)
        .with_context(|| format!("--metrics: could not listen on {address}"))?;
    let local = listener.local_addr()?;
    if !address.ip().is_loopback() {
        msg::warn(&format!(
            "--metrics {spec}: anyone who can reach {local} can read the counters, without \
             authentication"
        ));
    }
    msg::info(&format!("serving metrics on http://{local}/metrics"));
    std::thread::Builder::new()
        .name("metrics-accept".into())
        .spawn(move || accept(&listener))
        .context("could not start the metrics thread")?;
    Ok(local)
}

/// Answers each connection on a thread of its own, at most [`MAX_ANSWERING`] at once, and 503
/// beyond that. A thread counts until it has ended and been joined (not merely once its
/// answer is sent), so the process never has more than [`MAX_ANSWERING`] of them, even while
/// one is still ending as the next connection comes.
fn accept(listener: &TcpListener) {
    let mut answering: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                msg::warn(&format!("--metrics: could not accept a connection: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut answering)
            .into_iter()
            .partition(JoinHandle::is_finished);
        for thread in ended {
            // At once: its answer is sent; this waits only for the thread to be gone.
            let _ = thread.join();
        }
        answering = running;
        if answering.len() >= MAX_ANSWERING {
            busy(&mut stream);
            continue;
        }
        // A thread that cannot start drops its connection (closed, unanswered).
        if let Ok(thread) = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || answer(stream))
        {
            answering.push(thread);
        }
    }
}

/// A 503 written without waiting, from the accepting thread.
fn busy(stream: &mut TcpStream) {
    let _ = stream.set_nonblocking(true);
    let answer = Answer::text(503, "too many scrapes at once: try again").with("Retry-After", "1");
    let _ = stream.write_all(&answer.bytes(false));
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream) {
    let request = match http::read_request(&mut stream) {
        Ok(request) => request,
        Err(Unread::Gone) => return,
        Err(Unread::TooSlow) => {
            Answer::text(408, "the request head took over 10 s").send(&mut stream, false);
            return;
        }
        Err(_) => {
            Answer::text(400, "not an HTTP request this server reads").send(&mut stream, false);
            return;
        }
    };
    let head_only = request.method == Method::Head;
    let answer = match (request.method, request.path.as_str()) {
        (Method::Get | Method::Head, "/metrics" | "/") => Answer {
            status: 200,
            headers: vec![("Content-Type", CONTENT_TYPE.into())],
            body: stats::snapshot().prometheus(),
        },
        (Method::Get | Method::Head, _) => Answer::text(404, "the metrics are at /metrics"),
        _ => Answer::text(405, "only GET and HEAD are served").with("Allow", "GET, HEAD"),
    };
    answer.send(&mut stream, head_only);
}
