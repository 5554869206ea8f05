//! Peers for `bench/pipe.sh`, built on the same `postgres` crate as pgnotify:
//!
//! - `listen CONNINFO CHANNEL COUNT`: the minimal listener: LISTEN, read, write the same NDJSON
//!   (channel, payload, pid, received_at), flush when nothing more is pending, exit after COUNT.
//! - `send CONNINFO CHANNEL RATE SECONDS [SUFFIX]`: one notification every 1/RATE s, each payload
//!   the send time in Unix nanoseconds, then SUFFIX (for pg_listen, which writes payloads as they
//!   are on a line-buffered stdout: a newline), for latency measurements. With
//!   `BENCH_COMMITS=FILE`, also writes there, once done, a line per notification: its payload's
//!   send time and the time its commit was acknowledged (both Unix nanoseconds), for
//!   commit-to-line latency.

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct Record<'a> {
    channel: &'a str,
    payload: &'a str,
    pid: i32,
    received_at: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("listen") => listen(&args[2], &args[3], args[4].parse()?),
        Some("send") => send(
            &args[2],
            &args[3],
            args[4].parse()?,
            args[5].parse()?,
            args.get(6).map_or("", String::as_str),
        ),
        _ => Err(
            "usage: bench_peer listen CONNINFO CHANNEL COUNT | send CONNINFO CHANNEL RATE SECONDS [SUFFIX]".into(),
        ),
    }
}

fn listen(conninfo: &str, channel: &str, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = Client::connect(conninfo, NoTls)?;
    client.batch_execute(&format!("LISTEN \"{channel}\""))?;
    eprintln!("ready");
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut seen = 0;
    let mut notifications = client.notifications();
    while seen < count {
        let Some(first) = notifications.blocking_iter().next()? else {
            break;
        };
        let mut batch = vec![first];
        let mut pending = notifications.iter();
        while let Some(n) = pending.next()? {
            batch.push(n);
        }
        for n in &batch {
            let record = Record {
                channel: n.channel(),
                payload: n.payload(),
                pid: n.process_id(),
                received_at: format!("{:.6}", jiff::Timestamp::now()),
            };
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
            seen += 1;
            if seen == count {
                break;
            }
        }
        out.flush()?;
    }
    Ok(())
}

fn send(
    conninfo: &str,
    channel: &str,
    rate: u64,
    seconds: u64,
    suffix: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = Client::connect(conninfo, NoTls)?;
    let statement = client.prepare("SELECT pg_notify($1, $2)")?;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let unix_ns = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
    };
    let mut commits = Vec::new();
    for i in 0..rate * seconds {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = unix_ns()?;
        let payload = format!("{sent}{suffix}");
        client.execute(&statement, &[&channel, &payload])?;
        commits.push((sent, unix_ns()?));
    }
    if let Ok(path) = std::env::var("BENCH_COMMITS") {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (sent, acknowledged) in commits {
            writeln!(out, "{sent} {acknowledged}")?;
        }
        out.flush()?;
    }
    Ok(())
}
