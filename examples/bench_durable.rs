//! For `bench/durable.sh`: live latency of a pgnotify consumer. Starts `pgnotify pipe` (with
//! `--consumer` for durable events, without for plain NOTIFY), then sends one event per
//! transaction at a steady rate on its own connection and reads pgnotify's lines, each event
//! numbered in its payload. Prints the p50, p90 and p99 latency from the moment each commit
//! was confirmed to this process (and, as an upper bound, from the moment it was sent) to the
//! moment its line arrived.
//!   bench_durable PGNOTIFY durable|notify RATE SECONDS   (connection from the PG* variables)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, pgnotify, mode, rate, seconds] = args.as_slice() else {
        eprintln!("usage: bench_durable PGNOTIFY durable|notify RATE SECONDS");
        std::process::exit(2);
    };
    let durable = mode == "durable";
    let rate: u64 = rate.parse().expect("RATE");
    let total = rate * seconds.parse::<u64>().expect("SECONDS");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let conninfo = format!(
        "host={} port={} user={} dbname={}",
        env("PGHOST"),
        env("PGPORT"),
        env("PGUSER"),
        env("PGDATABASE")
    );
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).expect("connect");
    let mut cmd = Command::new(pgnotify);
    cmd.args(["-v", "pipe", "lat"]);
    if durable {
        // A consumer of its own each run, and the schema in place before the clock starts.
        let name = format!("lat-{}", std::process::id());
        cmd.args(["--consumer", &name]);
        let _ = Command::new(pgnotify)
            .args(["-q", "consumers", "--install"])
            .status();
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgnotify");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let ready = if durable { "consumer" } else { "listening on" };
    for line in stderr.lines() {
        if line.expect("stderr").contains(ready) {
            break;
        }
    }
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut arrived = vec![Duration::ZERO; total as usize];
        for (n, line) in stdout.lines().enumerate() {
            let at = started.elapsed();
            let line = line.expect("line");
            let v: serde_json::Value = serde_json::from_str(&line).expect("NDJSON");
            let seq: usize = v["payload"]
                .as_str()
                .expect("payload")
                .parse()
                .expect("seq");
            arrived[seq] = at;
            if n + 1 == total as usize {
                break;
            }
        }
        arrived
    });
    let sql = match durable {
        true => {
            "WITH e AS (INSERT INTO pgnotify.events (channel, payload) VALUES ('lat', $1) \
             RETURNING 1) SELECT pg_notify('pgnotify.durable', 'lat') FROM e"
        }
        false => "SELECT pg_notify('lat', $1)",
    };
    let statement = client.prepare(sql).expect("prepare");
    let mut sent = Vec::with_capacity(total as usize);
    let mut committed = Vec::with_capacity(total as usize);
    let every = Duration::from_nanos(1_000_000_000 / rate);
    for seq in 0..total {
        let due = every * seq as u32;
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        sent.push(started.elapsed());
        client
            .execute(&statement, &[&seq.to_string()])
            .expect("send");
        committed.push(started.elapsed());
    }
    let arrived = reader.join().expect("reader");
    let _ = child.kill();
    let _ = child.wait();
    let micros = |from: &[Duration]| -> Vec<f64> {
        let mut v: Vec<f64> = arrived
            .iter()
            .zip(from)
            .map(|(a, f)| a.as_secs_f64() * 1e6 - f.as_secs_f64() * 1e6)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p) as usize];
    let (c, s) = (micros(&committed), micros(&sent));
    println!(
        "{mode} {rate}/s: commit->line p50 {:.0} us p90 {:.0} us p99 {:.0} us; \
         send->line p50 {:.0} us p99 {:.0} us",
        pct(&c, 0.5),
        pct(&c, 0.9),
        pct(&c, 0.99),
        pct(&s, 0.5),
        pct(&s, 0.99)
    );
}
