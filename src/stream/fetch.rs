//! `--fetch`: for a `watch-table` event that carries a key but no row, read the row as it is
//! now, with the receiver's own privileges, on a second connection of its own.
//!
//! Batched: for the events of one batch (what one read of the source brought, up to 1024), one
//! query per table reads every row at once: the keys go as array parameters, one text array
//! per key column that the server casts to the column's type (for array and composite types,
//! which `json_populate_record` reads in its own way, the keys' JSON as one array instead).
//! They are numbered, each key is looked up by the index on its own, and each row comes back
//! with its number, so rows are matched to events whatever order the server returns them in.
//! Events are still written in the order received.
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
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
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
        by: By,
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

/// How a statement takes the keys.
enum By {
    /// One text array per key column, in the watch's key order, each element cast in SQL to
    /// its column's type: for each column, whether it takes the key's JSON text as written
    /// (a `json` or `jsonb` column) rather than a JSON string's content.
    Columns(Vec<bool>),
    /// One array of the keys' JSON, which `json_populate_record` turns into the columns'
    /// types: for key columns of an array or composite type, where that differs from the
    /// type's input function.
    Json,
}

/// What an event asks for: the row of `schema.table` with this key.
struct Wanted {
    schema: String,
    table: String,
    /// The key's columns: each name, and its value as the event wrote it (JSON).
    columns: Vec<(String, String)>,
    /// The key, as the event wrote it (JSON).
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
        // A second try only when the first found its statement outdated by DDL: prepared
        // again at once, the batch is read if it can be, else one line says why.
        let mut retried = false;
        loop {
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
            let Some(Entry::Ready { statement, key, by }) = self.tables.get(&id) else {
                return Err(format!(
                    "--fetch does not read rows of {name} for events on channel {}: pgnotify \
                     does not watch that table on that channel (a forged or stale event?)",
                    escape_controls(&quote_ident(channel))
                ));
            };
            match read_rows(client, statement, key, by, &wanted) {
                Ok(rows) => {
                    if rows.iter().any(Option::is_none) {
                        let key_names = key.join(", ");
                        self.say(format!(
                            "--fetch skipped an event for {name} whose key is not the watch's \
                             key ({key_names})"
                        ));
                    }
                    return Ok(Some(rows));
                }
                Err(e) => {
                    if e.as_db_error().is_none() {
                        self.client = None;
                    } else {
                        // Prepared again: the table may have changed (a dropped or renamed
                        // column invalidates the statement).
                        self.tables.remove(&id);
                        if !retried && outdated_by_ddl(&e) {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(format!(
                        "--fetch could not read rows of {name}: {}",
                        describe_pg_error(&e)
                    ));
                }
            }
        }
    }
}

/// Whether an error running a prepared statement says that DDL has outdated it: a column it
/// names is gone, a type it was written for changed (which also changes the type of its
/// result: it returns the key columns for this very reason). Prepared again, it either works
/// or fails to prepare, with the server's words for what changed.
fn outdated_by_ddl(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|code| {
        code.code().starts_with("42") && *code != SqlState::INSUFFICIENT_PRIVILEGE
            || *code == SqlState::FEATURE_NOT_SUPPORTED
    })
}

/// Runs the statement for the events that have exactly the watch's key: the row of each
/// event, in their order (`Some(Null)` for a row that is gone), `None` for an event whose key
/// is another.
fn read_rows(
    client: &mut Client,
    statement: &Statement,
    key: &[String],
    by: &By,
    wanted: &[Wanted],
) -> Result<Vec<Option<Value>>, postgres::Error> {
    let mut asked: Vec<Option<usize>> = Vec::with_capacity(wanted.len());
    let mut count = 0;
    for w in wanted {
        let exact = w.columns.len() == key.len()
            && key.iter().all(|k| w.columns.iter().any(|(c, _)| c == k));
        asked.push(exact.then(|| {
            count += 1;
            count - 1
        }));
    }
    let mut rows: Vec<Value> = vec![Value::Null; count];
    if count > 0 {
        let exact = || wanted.iter().zip(&asked).filter(|(_, a)| a.is_some());
        // Each row is parsed as it arrives, while the server still looks up the next keys.
        let mut found = match by {
            By::Json => {
                let keys: Vec<&str> = exact().map(|(w, _)| w.key.as_str()).collect();
                client.query_raw(statement, [&keys as &(dyn ToSql + Sync)])?
            }
            By::Columns(raw) => {
                let arrays: Vec<Vec<Option<String>>> = key
                    .iter()
                    .zip(raw)
                    .map(|(k, raw)| exact().map(|(w, _)| key_text(w, k, *raw)).collect())
                    .collect();
                client.query_raw(statement, arrays.iter().map(|a| a as &(dyn ToSql + Sync)))?
            }
        };
        while let Some(row) = found.next()? {
            let number: i64 = row.get(0);
            let text: &str = row.get(1);
            let slot = usize::try_from(number - 1)
                .ok()
                .and_then(|i| rows.get_mut(i));
            if let Some(slot) = slot {
                *slot = serde_json::from_str(text).unwrap_or(Value::Null);
            }
        }
    }
    Ok(asked
        .into_iter()
        .map(|slot| slot.map(|i| std::mem::take(&mut rows[i])))
        .collect())
}

/// The value of key column `column` in an event, as the text the server casts to the column's
/// type, as `json_populate_record` would read it: a JSON string's content, other JSON as
/// written (a number digit for digit), `null` as NULL; for a `json` or `jsonb` column (`raw`),
/// the JSON as written.
fn key_text(w: &Wanted, column: &str, raw: bool) -> Option<String> {
    let (_, json) = w.columns.iter().find(|(c, _)| c == column)?;
    if json == "null" {
        return None;
    }
    if !raw && json.starts_with('"') {
        return serde_json::from_str(json).ok();
    }
    Some(json.clone())
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
    let columns: std::collections::BTreeMap<
        std::borrow::Cow<'_, str>,
        &serde_json::value::RawValue,
    > = serde_json::from_str(key).ok()?;
    if columns.is_empty() {
        return None;
    }
    Some(Wanted {
        schema: event.schema.into_owned(),
        table: event.table.into_owned(),
        columns: columns
            .into_iter()
            .map(|(c, v)| (c.into_owned(), v.get().to_owned()))
            .collect(),
        key: key.to_owned(),
    })
}

/// Checks that the table is watched on `channel` and prepares the statement that reads the
/// rows of many keys by that watch's key. The keys are numbered by `WITH ORDINALITY` and each
/// row found comes back with its key's number; each key is looked up on its own (`OFFSET 0`
/// keeps the planner from hashing the whole table instead). See [`By`] for how keys go.
fn prepare(client: &mut Client, channel: &str, schema: &str, table: &str) -> Result<Entry, String> {
    let watch = watch::watch_of(client, schema, table).map_err(|e| format!("{e:#}"))?;
    let Some(marker) = watch.filter(|m| m.channel == channel && !m.key.is_empty()) else {
        return Ok(Entry::Refused(Instant::now()));
    };
    let types = key_types(client, schema, table, &marker.key).map_err(|e| describe_pg_error(&e))?;
    let table = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let (sql, by) = match types {
        Some(types) => (
            by_columns(&table, &marker.key, &types),
            By::Columns(types.into_iter().map(|t| t.raw).collect()),
        ),
        None => (by_json(&table, &marker.key), By::Json),
    };
    let statement = client.prepare(&sql).map_err(|e| describe_pg_error(&e))?;
    Ok(Entry::Ready {
        statement,
        key: marker.key,
        by,
    })
}

/// A key column's type, as the catalog says in this session.
struct KeyType {
    /// `format_type`'s name for it, valid in this session. Without a typmod, but given as -1
    /// rather than NULL: NULL names `bpchar` `character`, which a cast reads as `character(1)`
    /// (and `bit` as `bit(1)`).
    name: String,
    /// A `json` or `jsonb` column (or a domain over one): it takes the key's JSON as written.
    raw: bool,
}

/// The types of the key columns, in key order; None when a column is not there (the statement
/// by JSON then fails with the server's own words) or when one is of an array or composite
/// type (or a domain over one), which `json_populate_record` reads in its own way.
fn key_types(
    client: &mut Client,
    schema: &str,
    table: &str,
    key: &[String],
) -> Result<Option<Vec<KeyType>>, postgres::Error> {
    let rows = client.query(
        "WITH RECURSIVE c(name, typ, base) AS ( \
             SELECT a.attname::pg_catalog.text, a.atttypid, a.atttypid \
               FROM pg_catalog.pg_attribute a \
               JOIN pg_catalog.pg_class r ON r.oid = a.attrelid \
               JOIN pg_catalog.pg_namespace s ON s.oid = r.relnamespace \
              WHERE s.nspname::pg_catalog.text = $1 AND r.relname::pg_catalog.text = $2 \
                AND a.attname::pg_catalog.text = ANY($3) AND a.attnum > 0 \
                AND NOT a.attisdropped \
             UNION ALL \
             SELECT c.name, c.typ, t.typbasetype \
               FROM c JOIN pg_catalog.pg_type t ON t.oid = c.base WHERE t.typtype = 'd') \
         SELECT c.name, pg_catalog.format_type(c.typ, -1), \
                c.base IN ('pg_catalog.json'::pg_catalog.regtype, \
                           'pg_catalog.jsonb'::pg_catalog.regtype), \
                t.typtype IN ('c', 'p') OR t.typelem <> 0 \
           FROM c JOIN pg_catalog.pg_type t ON t.oid = c.base WHERE t.typtype <> 'd'",
        &[&schema, &table, &key],
    )?;
    let mut types = Vec::with_capacity(key.len());
    for column in key {
        let Some(row) = rows.iter().find(|r| r.get::<_, &str>(0) == column) else {
            return Ok(None);
        };
        if row.get::<_, bool>(3) {
            return Ok(None);
        }
        types.push(KeyType {
            name: row.get(1),
            raw: row.get(2),
        });
    }
    Ok(Some(types))
}

/// The statement for [`By::Columns`]: `$1`, `$2`... the text arrays of each key column, each
/// element cast to the column's type. It also returns the key columns, so that a change of
/// their type (which the casts would outlive) makes the server refuse it as changed.
fn by_columns(table: &str, key: &[String], types: &[KeyType]) -> String {
    let arrays: Vec<String> = (1..=key.len())
        .map(|i| format!("pg_catalog.unnest(${i}::pg_catalog.text[])"))
        .collect();
    let names: Vec<String> = (1..=key.len()).map(|i| format!("k{i}")).collect();
    let outputs: Vec<String> = key
        .iter()
        .map(|c| format!(", t.{}", quote_ident(c)))
        .collect();
    let matches: Vec<String> = key
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (c, t))| format!("t.{} = u.k{}::{}", quote_ident(c), i + 1, t.name))
        .collect();
    format!(
        "SELECT u.n, r.* \
           FROM ROWS FROM ({}) WITH ORDINALITY AS u({}, n) \
                CROSS JOIN LATERAL \
                (SELECT pg_catalog.to_json(t)::pg_catalog.text{} FROM {table} AS t \
                  WHERE {} OFFSET 0) AS r",
        arrays.join(", "),
        names.join(", "),
        outputs.concat(),
        matches.join(" AND ")
    )
}

/// The statement for [`By::Json`]: `$1` the array of the keys' JSON.
fn by_json(table: &str, key: &[String]) -> String {
    let matches: Vec<String> = key
        .iter()
        .map(|c| format!("t.{0} = k.{0}", quote_ident(c)))
        .collect();
    format!(
        "SELECT u.n, r.j \
           FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(j, n) \
                CROSS JOIN LATERAL \
                (SELECT pg_catalog.to_json(t)::pg_catalog.text AS j \
                   FROM pg_catalog.json_populate_record(NULL::{table}, u.j::pg_catalog.json) \
                        AS k, {table} AS t \
                  WHERE {} OFFSET 0) AS r",
        matches.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_row_events_without_the_row_are_fetched() {
        let w = wanted(r#"{"op":"UPDATE","schema":"s","table":"t","key":{"id":1}}"#).unwrap();
        assert_eq!((w.schema.as_str(), w.table.as_str()), ("s", "t"));
        assert_eq!(w.columns, [("id".to_owned(), "1".to_owned())]);
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
