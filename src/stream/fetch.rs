//! `--fetch`: for a `watch-table` event that carries a key but no row, read the row as it is
//! now, with the receiver's own privileges, on a second connection of its own.
//!
//! Batched: for the events of one batch (what one read of the source brought, up to 1024), one
//! query per table reads every row at once: the keys go as one array parameter, numbered, and
//! each row comes back with its number, so rows are matched to events whatever order the
//! server returns them in. Events are still written in the order received.
//!
//! Owns: which events are fetched, the per-table prepared statements, and what a failure does
//! (a stderr line, the events written without `new`; never the end of the run).
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

/// A (channel, schema, table): a watch as `--fetch` knows it.
type TableOf = (String, String, String);

/// What is known about one (channel, schema, table).
enum Entry {
    /// Watched on this channel: the statement reading the rows of many keys by that watch's
    /// key.
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
    tables: HashMap<TableOf, Entry>,
    /// Messages already shown, so a stream of events gives one line per problem.
    said: HashSet<String>,
}

/// What an event asks for: the row of `schema.table` with this key.
struct Wanted {
    schema: String,
    table: String,
    /// The key's column names.
    columns: Vec<String>,
    /// The key, as the event wrote it (JSON): sent to the server as it is.
    key: String,
}

/// The parts of a `watch-table` event that `--fetch` reads; the rest is skipped unparsed.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    schema: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    table: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    key: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    truncated: Option<Value>,
    #[serde(default)]
    new: Option<serde::de::IgnoredAny>,
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

    /// Sets `fetched` on every event of `batch` whose row can and may be read: one query per
    /// (channel, table) for the whole batch.
    pub(super) fn fetch_batch(&mut self, batch: &mut [Notification]) {
        // The events of each (channel, schema, table), in the order received; a group is
        // named by its first event, so nothing is copied per event.
        let mut groups: Vec<Vec<(usize, Wanted)>> = Vec::new();
        for (i, n) in batch.iter().enumerate() {
            let Some(wanted) = wanted(&n.payload) else {
                continue;
            };
            let same = |(first, w): &(usize, Wanted)| {
                batch[*first].channel == n.channel
                    && w.schema == wanted.schema
                    && w.table == wanted.table
            };
            match groups.iter_mut().find(|g| same(&g[0])) {
                Some(events) => events.push((i, wanted)),
                None => groups.push(vec![(i, wanted)]),
            }
        }
        for events in groups {
            let channel = batch[events[0].0].channel.clone();
            let (at, keys): (Vec<usize>, Vec<Wanted>) = events.into_iter().unzip();
            match self.read(&channel, keys) {
                Ok(Some(rows)) => {
                    for (i, row) in at.into_iter().zip(rows) {
                        batch[i].fetched = row;
                    }
                }
                Ok(None) => {}
                Err(message) => self.say(message),
            }
        }
    }

    fn say(&mut self, message: String) {
        if self.said.insert(message.clone()) {
            msg::warn(&message);
        }
    }

    /// The rows of the events of one table, in their order (`Some(Null)` for a row that is
    /// gone, `None` for an event whose key is not the watch's), None when nothing is fetched
    /// here now, or the problem to report.
    fn read(
        &mut self,
        channel: &str,
        wanted: Vec<Wanted>,
    ) -> Result<Option<Vec<Option<Value>>>, String> {
        let Some(first) = wanted.first() else {
            return Ok(Some(Vec::new()));
        };
        let (schema, table) = (first.schema.clone(), first.table.clone());
        let name = display_name(&schema, &table);
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
        let id = (channel.to_owned(), schema.clone(), table.clone());
        let stale = match self.tables.get(&id) {
            None => true,
            Some(Entry::Refused(at)) => at.elapsed() > RECHECK,
            Some(Entry::Ready { .. }) => false,
        };
        if stale {
            let entry = prepare(client, channel, &schema, &table)
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
        // Only events with exactly the watch's key are read; the others are said once.
        let mut keys: Vec<String> = Vec::with_capacity(wanted.len());
        let mut asked: Vec<Option<usize>> = Vec::with_capacity(wanted.len());
        let mut odd = false;
        for w in wanted {
            if w.columns.len() == key.len() && key.iter().all(|k| w.columns.contains(k)) {
                asked.push(Some(keys.len()));
                keys.push(w.key);
            } else {
                asked.push(None);
                odd = true;
            }
        }
        let key_names = key.join(", ");
        let mut rows: Vec<Value> = vec![Value::Null; keys.len()];
        if !keys.is_empty() {
            match client.query(statement, &[&keys]) {
                Ok(found) => {
                    for row in found {
                        let number: i64 = row.get(0);
                        let text: String = row.get(1);
                        let slot = usize::try_from(number - 1)
                            .ok()
                            .and_then(|i| rows.get_mut(i));
                        if let Some(slot) = slot {
                            *slot = serde_json::from_str(&text).unwrap_or(Value::Null);
                        }
                    }
                }
                Err(e) => {
                    if e.as_db_error().is_none() {
                        self.client = None;
                    } else {
                        // Prepared again next time: the table may have changed (a dropped or
                        // renamed column invalidates the statement).
                        self.tables.remove(&id);
                    }
                    return Err(format!(
                        "--fetch could not read rows of {name}: {}",
                        describe_pg_error(&e)
                    ));
                }
            }
        }
        if odd {
            self.say(format!(
                "--fetch skipped an event for {name} whose key is not the watch's key \
                 ({key_names})"
            ));
        }
        Ok(Some(
            asked
                .into_iter()
                .map(|slot| slot.map(|i| std::mem::take(&mut rows[i])))
                .collect(),
        ))
    }
}

/// The event in a payload, if it is a row event with a key and without the row. Only what is
/// needed is parsed: this runs for every event of a `--fetch` stream.
fn wanted(payload: &str) -> Option<Wanted> {
    if !payload.starts_with('{') {
        return None;
    }
    let event: Event<'_> = serde_json::from_str(payload).ok()?;
    if !matches!(event.op.as_ref(), "INSERT" | "UPDATE" | "DELETE") {
        return None;
    }
    let truncated = event.truncated == Some(Value::Bool(true));
    if event.new.is_some() && !truncated {
        return None;
    }
    let key = event.key?.get();
    let columns: std::collections::BTreeMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny> =
        serde_json::from_str(key).ok()?;
    if columns.is_empty() {
        return None;
    }
    Some(Wanted {
        schema: event.schema.into_owned(),
        table: event.table.into_owned(),
        columns: columns.into_keys().map(|c| c.into_owned()).collect(),
        key: key.to_owned(),
    })
}

/// Checks that the table is watched on `channel` and prepares the statement that reads the
/// rows of many keys by that watch's key: `$1` is an array of the keys' JSON, numbered by
/// `WITH ORDINALITY`; `json_populate_record` turns each into the columns' types, and each row
/// found comes back with its key's number.
fn prepare(client: &mut Client, channel: &str, schema: &str, table: &str) -> Result<Entry, String> {
    let watch = watch::watch_of(client, schema, table).map_err(|e| format!("{e:#}"))?;
    let Some(marker) = watch.filter(|m| m.channel == channel && !m.key.is_empty()) else {
        return Ok(Entry::Refused(Instant::now()));
    };
    let table = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let matches: Vec<String> = marker
        .key
        .iter()
        .map(|c| format!("t.{0} = k.{0}", quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT u.n, pg_catalog.to_json(t)::pg_catalog.text \
           FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(j, n) \
                CROSS JOIN LATERAL \
                pg_catalog.json_populate_record(NULL::{table}, u.j::pg_catalog.json) AS k \
                JOIN {table} AS t ON {}",
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
        assert_eq!(w.columns, ["id"]);
        assert_eq!(w.key, r#"{"id":1}"#);
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
