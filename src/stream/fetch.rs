//! `--fetch`: for a `watch-table` event that carries a key but no row, read the row as it is
//! now, with the receiver's own privileges, on a second connection of its own.
//!
//! Owns: which events are fetched, the per-table prepared statements, and what a failure does
//! (a stderr line, the event written without `new`; never the end of the run).
//!
//! Anyone who can connect can send a forged event on any channel (NOTIFY needs no privilege),
//! and an event names the table to read. So a row is only fetched from a table that pgnotify
//! watches *on the channel the event came on*, by exactly that watch's key columns: a forged event
//! cannot make the receiver read, and forward, rows of any other table it may read, and cannot
//! make it scan a table by columns without an index.

use super::source::ListeningOn;
use crate::msg;
use crate::notification::Notification;
use crate::pg::{self, ConnSettings, Target, describe_pg_error, quote_ident};
use crate::sanitize::escape_controls;
use crate::watch::{self, display_name};
use postgres::{Client, Statement};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// How long a "this table is not watched on that channel" answer is trusted.
const RECHECK: Duration = Duration::from_secs(10);
/// How long to wait after a failed connect before trying again.
const RECONNECT: Duration = Duration::from_secs(1);

/// What is known about one (channel, schema, table).
enum Entry {
    /// Watched on this channel: the statement reading a row by that watch's key.
    Ready {
        statement: Statement,
        key: Vec<String>,
    },
    /// Not watched on this channel (as of then).
    Refused(Instant),
}

pub(super) struct Fetcher {
    settings: ConnSettings,
    /// Where the source listens: rows are read on that server, not on another of the list
    /// (a standby the listener passed over would answer from behind the primary).
    listening_on: ListeningOn,
    /// The server `client` is connected to.
    connected_to: Option<Target>,
    client: Option<Client>,
    next_connect: Instant,
    tables: HashMap<(String, String, String), Entry>,
    /// Messages already shown, so a stream of events gives one line per problem.
    said: HashSet<String>,
}

/// What an event asks for: the row of `schema.table` with this key.
struct Wanted {
    schema: String,
    table: String,
    key: serde_json::Map<String, Value>,
}

impl Fetcher {
    pub(super) fn new(settings: &ConnSettings, listening_on: ListeningOn) -> Fetcher {
        Fetcher {
            settings: settings.clone(),
            listening_on,
            connected_to: None,
            client: None,
            next_connect: Instant::now(),
            tables: HashMap::new(),
            said: HashSet::new(),
        }
    }

    /// Sets `n.fetched` when `n` is an event whose row can and may be read.
    pub(super) fn fetch(&mut self, n: &mut Notification) {
        let Some(wanted) = wanted(&n.payload) else {
            return;
        };
        match self.read(&n.channel, wanted) {
            Ok(Some(row)) => n.fetched = Some(row),
            Ok(None) => {}
            Err(message) => self.say(message),
        }
    }

    fn say(&mut self, message: String) {
        if self.said.insert(message.clone()) {
            msg::warn(&message);
        }
    }

    /// The row (`Null` when there is none), None when the event is not fetched here, or the
    /// problem to report.
    fn read(&mut self, channel: &str, wanted: Wanted) -> Result<Option<Value>, String> {
        let name = display_name(&wanted.schema, &wanted.table);
        // Compared in place: this runs for every event, a clone only when connecting.
        let moved = {
            let on = self
                .listening_on
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            on.is_some() && *on != self.connected_to
        };
        if moved {
            self.client = None;
            self.next_connect = Instant::now();
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.tables.clear();
            if Instant::now() < self.next_connect {
                return Ok(None);
            }
            self.next_connect = Instant::now() + RECONNECT;
            let listening_on = self
                .listening_on
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let settings = match &listening_on {
                Some(target) => self.settings.only(target),
                None => self.settings.clone(),
            };
            let connection =
                pg::connect(&settings).map_err(|e| format!("--fetch could not connect: {e:#}"))?;
            self.connected_to = Some(connection.target);
            let mut client = connection.client;
            client
                .batch_execute("SET statement_timeout = '10s'")
                .map_err(|e| format!("--fetch: {}", describe_pg_error(&e)))?;
            self.said.clear();
            self.client = Some(client);
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(None);
        };
        let id = (
            channel.to_owned(),
            wanted.schema.clone(),
            wanted.table.clone(),
        );
        let stale = match self.tables.get(&id) {
            None => true,
            Some(Entry::Refused(at)) => at.elapsed() > RECHECK,
            Some(Entry::Ready { .. }) => false,
        };
        if stale {
            let entry = prepare(client, channel, &wanted)
                .map_err(|e| format!("--fetch cannot read rows of {name}: {e}"))?;
            self.tables.insert(id.clone(), entry);
        }
        let Some(Entry::Ready { statement, key }) = self.tables.get(&id) else {
            return Err(format!(
                "--fetch does not read rows of {name} for events on channel {}: pgnotify does \
                 not watch that table on that channel (a forged or stale event?)",
                escape_controls(&quote_ident(channel))
            ));
        };
        if key.len() != wanted.key.len() || !key.iter().all(|k| wanted.key.contains_key(k)) {
            return Err(format!(
                "--fetch skipped an event for {name} whose key is not the watch's key ({})",
                key.join(", ")
            ));
        }
        let key_json = Value::Object(wanted.key).to_string();
        match client.query_opt(statement, &[&key_json]) {
            Ok(Some(row)) => {
                let text: String = row.get(0);
                Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
            }
            Ok(None) => Ok(Some(Value::Null)),
            Err(e) => {
                if e.as_db_error().is_none() {
                    self.client = None;
                }
                Err(format!(
                    "--fetch could not read a row of {name}: {}",
                    describe_pg_error(&e)
                ))
            }
        }
    }
}

/// The event in a payload, if it is a row event with a key and without the row.
fn wanted(payload: &str) -> Option<Wanted> {
    if !payload.starts_with('{') {
        return None;
    }
    let Value::Object(mut event) = serde_json::from_str(payload).ok()? else {
        return None;
    };
    let op = event.get("op")?.as_str()?;
    if !matches!(op, "INSERT" | "UPDATE" | "DELETE") {
        return None;
    }
    let truncated = event.get("truncated") == Some(&Value::Bool(true));
    if event.contains_key("new") && !truncated {
        return None;
    }
    let schema = event.get("schema")?.as_str()?.to_owned();
    let table = event.get("table")?.as_str()?.to_owned();
    let Value::Object(key) = event.remove("key")? else {
        return None;
    };
    if key.is_empty() {
        return None;
    }
    Some(Wanted { schema, table, key })
}

/// Checks that the table is watched on `channel` and prepares the statement that reads a row
/// by that watch's key: `json_populate_record` turns the key's JSON into the columns' types.
fn prepare(client: &mut Client, channel: &str, wanted: &Wanted) -> Result<Entry, String> {
    let watch =
        watch::watch_of(client, &wanted.schema, &wanted.table).map_err(|e| format!("{e:#}"))?;
    let Some(marker) = watch.filter(|m| m.channel == channel && !m.key.is_empty()) else {
        return Ok(Entry::Refused(Instant::now()));
    };
    let table = format!(
        "{}.{}",
        quote_ident(&wanted.schema),
        quote_ident(&wanted.table)
    );
    let matches: Vec<String> = marker
        .key
        .iter()
        .map(|c| format!("t.{0} = k.{0}", quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT pg_catalog.to_json(t)::pg_catalog.text \
           FROM {table} AS t, \
                pg_catalog.json_populate_record(NULL::{table}, $1::pg_catalog.text::pg_catalog.json) AS k \
          WHERE {}",
        matches.join(" AND ")
    );
    let statement = client.prepare(&sql).map_err(|e| describe_pg_error(&e))?;
    Ok(Entry::Ready {
        statement,
        key: marker.key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_row_events_without_the_row_are_fetched() {
        let w = wanted(r#"{"op":"UPDATE","schema":"s","table":"t","key":{"id":1}}"#).unwrap();
        assert_eq!((w.schema.as_str(), w.table.as_str()), ("s", "t"));
        assert_eq!(w.key.get("id"), Some(&Value::from(1)));
        let truncated =
            r#"{"op":"INSERT","schema":"s","table":"t","key":{"id":1},"truncated":true}"#;
        assert!(wanted(truncated).is_some());
        for no in [
            r#"{"op":"INSERT","schema":"s","table":"t","key":{"id":1},"new":{"id":1}}"#,
            r#"{"op":"TRUNCATE","schema":"s","table":"t","key":null}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":null,"truncated":true}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":{}}"#,
            r#"{"op":"INSERT","table":"t","key":{"id":1}}"#,
            "[1]",
            "hello",
        ] {
            assert!(wanted(no).is_none(), "{no}");
        }
    }
}
