//! A peer for `bench/fetch.sh`: "send the id, fetch the row" one round trip per event, on the
//! same `postgres` crate as pgnotify. It LISTENs on CHANNEL, and for each `watch-table` event
//! reads the row of TABLE by `id` with one prepared query, then writes pgnotify's NDJSON with
//! the row under `data.new`; it exits after COUNT events.
//!
//!   bench_fetch_peer CONNINFO CHANNEL TABLE COUNT

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, conninfo, channel, table, count] = &args[..] else {
        return Err("usage: bench_fetch_peer CONNINFO CHANNEL TABLE COUNT".into());
    };
    let count: u64 = count.parse()?;
    let mut listening = Client::connect(conninfo, NoTls)?;
    let mut reading = Client::connect(conninfo, NoTls)?;
    let row = reading.prepare(&format!(
        "SELECT pg_catalog.to_json(t)::pg_catalog.text FROM \"{table}\" AS t WHERE t.id = $1"
    ))?;
    listening.batch_execute(&format!("LISTEN \"{channel}\""))?;
    eprintln!("ready");
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut seen = 0;
    let mut notifications = listening.notifications();
    let mut iter = notifications.blocking_iter();
    while seen < count {
        let Some(n) = iter.next()? else { break };
        let event: serde_json::Value = serde_json::from_str(n.payload())?;
        let id = event["key"]["id"].as_i64().unwrap_or_default() as i32;
        let new: serde_json::Value = match reading.query_opt(&row, &[&id])? {
            Some(r) => serde_json::from_str(r.get::<_, &str>(0))?,
            None => serde_json::Value::Null,
        };
        let record = serde_json::json!({
            "channel": n.channel(),
            "payload": n.payload(),
            "pid": n.process_id(),
            "received_at": "",
            "data": {"new": new},
        });
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
        seen += 1;
    }
    out.flush()?;
    Ok(())
}
