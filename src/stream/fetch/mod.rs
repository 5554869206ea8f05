//! `--fetch`: for a `watch-table` event that carries a key but no row, read the row as it is
//! now, with the receiver's own privileges, on a second connection of its own.
//!
//! Batched: for the events of one batch (what one read of the source brought, up to 1024), one
//! query per table reads every row at once: the keys go as array parameters, one text array
//! per key column that the server casts to the column's type (for array and composite types,
//! which `json_populate_record` reads in its own way, the keys' JSON as one array instead).
//! They are numbered, each key is looked up by the index on its own, and each row comes back
//! with its number, so rows are matched to events whatever order the server returns them in.
//! Each row comes as `to_json` writes it, or, when every column of the table is an integer, a
//! boolean or text, as its columns, from which the same JSON is written here (cheaper for the
//! server). Events are still written in the order received.
//!
//! The rows are read on the `fetch` thread, which owns the connection (`reader`). The loop
//! hands it the batch it will write next, when it has already taken it from the queue, before
//! waiting for the rows of the one it is about to write: the thread reads the next batch's
//! rows while the loop writes, and goes on to them without waiting for the loop.
//!
//! Owns: which events are fetched, the per-table prepared statements (`statement`), and what a
//! failure does (a stderr line, the events written without `new`; never the end of the run).
//!
//! Anyone who can connect can send a forged event on any channel (NOTIFY needs no privilege),
//! and an event names the table to read. So a row is only fetched from a table that pgnotify
//! watches *on the channel the event came on*, by exactly that watch's key columns: a forged event
//! cannot make the receiver read, and forward, rows of any other table it may read, and cannot
//! make it scan a table by columns without an index.

mod reader;
mod statement;

use super::source::ListeningOn;
use crate::notification::Notification;
use crate::pg::ConnSettings;
use reader::Reader;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};

/// `--fetch` as the loop sees it: the rows of a batch, the next batch's read meanwhile.
pub(super) struct Fetcher {
    how: How,
    /// The batches given to the thread and not yet waited for, in order, and whether each
    /// had any events to read: the one being written's successor, at most two.
    pending: VecDeque<(Identity, bool)>,
}

/// Where the rows are read.
enum How {
    /// On the `fetch` thread, which owns the connection: one job at a time, answered in turn.
    Thread {
        jobs: Sender<Vec<Group>>,
        found: Receiver<Found>,
    },
    /// Here, when that thread could not be started.
    Here(Box<Reader>),
}

/// The events of a batch that ask for a row of one table on one channel: one query.
struct Group {
    channel: String,
    schema: String,
    table: String,
    /// Where each event is in the batch.
    at: Vec<usize>,
    /// Each event's key, as it wrote it (a JSON object).
    keys: Vec<String>,
}

/// The rows read for a batch, as JSON text (`to_json`'s, or the same written from the row's
/// columns), one after the other: for each event whose row was read, its place in the batch
/// and where its row is. They are parsed by the loop's thread, which also drops them, so that
/// the reading thread does only the reading.
#[derive(Default)]
struct Found {
    text: Vec<u8>,
    rows: Vec<(usize, Place)>,
}

/// Where a row is in [`Found::text`]; `None`: there is no such row.
type Place = Option<std::ops::Range<usize>>;

/// Which batch it is: where its events are, how many, and when the first was received. Two
/// batches alive at once are never at the same place, and a batch keeps its place when moved;
/// the rest tells a later batch that happens to be given the same memory.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity(usize, usize, jiff::Timestamp);

fn identity(batch: &[Notification]) -> Option<Identity> {
    let first = batch.first()?;
    Some(Identity(
        batch.as_ptr() as usize,
        batch.len(),
        first.received_at,
    ))
}

impl Fetcher {
    pub(super) fn new(settings: &ConnSettings, listening_on: ListeningOn) -> Fetcher {
        let (jobs, take) = channel::<Vec<Group>>();
        let (give, found) = channel();
        let mut reader = Reader::new(settings, listening_on.clone());
        let started = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                reader.connect_early();
                for job in take {
                    if give.send(reader.read_job(job)).is_err() {
                        return;
                    }
                }
            });
        let how = match started {
            Ok(_) => How::Thread { jobs, found },
            Err(_) => How::Here(Box::new(Reader::new(settings, listening_on))),
        };
        Fetcher {
            how,
            pending: VecDeque::new(),
        }
    }

    /// Sets `fetched` on every event of `batch` whose row can and may be read: one query per
    /// (channel, table) for the whole batch. `next` is the batch the loop will write after
    /// this one, if it has it already: its rows are read while this one is written (the thread
    /// goes on to it as soon as it is done with this one).
    pub(super) fn fetch_batch(
        &mut self,
        batch: &mut [Notification],
        next: Option<&[Notification]>,
    ) {
        if batch.is_empty() {
            return;
        }
        let found = match &mut self.how {
            How::Here(reader) => reader.read_job(groups(batch)),
            How::Thread { .. } => {
                let this = identity(batch);
                if self.pending.front().map(|(id, _)| *id) != this {
                    // Read ahead for a batch that did not come (not expected): dropped.
                    while let Some((_, sent)) = self.pending.pop_front() {
                        self.wait(sent);
                    }
                    self.send(batch);
                }
                if let Some(next) = next
                    && self.pending.len() < 2
                {
                    self.send(next);
                }
                match self.pending.pop_front() {
                    Some((_, sent)) => self.wait(sent),
                    None => Found::default(),
                }
            }
        };
        for (i, place) in found.rows {
            let row = place
                .and_then(|at| found.text.get(at))
                .and_then(|json| serde_json::from_slice(json).ok());
            if let Some(n) = batch.get_mut(i) {
                n.fetched = Some(row.unwrap_or(Value::Null));
            }
        }
    }

    /// Gives the thread the batch's job if it has events to read, and notes it as pending.
    fn send(&mut self, batch: &[Notification]) {
        let How::Thread { jobs, .. } = &self.how else {
            return;
        };
        let Some(id) = identity(batch) else {
            return;
        };
        let job = groups(batch);
        let sent = !job.is_empty() && jobs.send(job).is_ok();
        self.pending.push_back((id, sent));
    }

    /// The thread's answer to the job sent, if one was (nothing if the thread is gone).
    fn wait(&self, sent: bool) -> Found {
        match &self.how {
            How::Thread { found, .. } if sent => found.recv().unwrap_or_default(),
            _ => Found::default(),
        }
    }
}

/// The events of a batch that ask for a row, by (channel, schema, table), each group in the
/// order received. Only what is needed is parsed: this runs for every event of a `--fetch`
/// stream; the keys are read on the `fetch` thread.
fn groups(batch: &[Notification]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, n) in batch.iter().enumerate() {
        let Some(event) = wanted(&n.payload) else {
            continue;
        };
        let same = |g: &&mut Group| {
            g.channel == n.channel && g.schema == event.schema && g.table == event.table
        };
        let key = event.key.to_owned();
        match groups.iter_mut().find(same) {
            Some(group) => {
                group.at.push(i);
                group.keys.push(key);
            }
            None => groups.push(Group {
                channel: n.channel.clone(),
                schema: event.schema.into_owned(),
                table: event.table.into_owned(),
                at: vec![i],
                keys: vec![key],
            }),
        }
    }
    groups
}

/// What an event asks for: the row of `schema.table` with this key.
struct Wanted<'a> {
    schema: Cow<'a, str>,
    table: Cow<'a, str>,
    /// The key, as the event wrote it: a JSON object with at least one member.
    key: &'a str,
}

/// The parts of a `watch-table` event that `--fetch` reads; the rest is skipped unparsed.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    schema: Cow<'a, str>,
    #[serde(borrow)]
    table: Cow<'a, str>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(default)]
    truncated: Option<Value>,
    #[serde(default)]
    new: Option<serde::de::IgnoredAny>,
}

/// The event in a payload, if it is a row event with a key and without the row.
fn wanted(payload: &str) -> Option<Wanted<'_>> {
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
    // Valid JSON: an object, and not an empty one, when a member's name follows the brace.
    let members = key.strip_prefix('{')?.trim_start().starts_with('"');
    members.then_some(Wanted {
        schema: event.schema,
        table: event.table,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_row_events_without_the_row_are_fetched() {
        let w = wanted(r#"{"op":"UPDATE","schema":"s","table":"t","key":{"id":1}}"#).unwrap();
        assert_eq!((w.schema.as_ref(), w.table.as_ref()), ("s", "t"));
        assert_eq!(w.key, r#"{"id":1}"#);
        let truncated =
            r#"{"op":"INSERT","schema":"s","table":"t","key":{"id":1},"truncated":true}"#;
        assert!(wanted(truncated).is_some());
        for no in [
            r#"{"op":"INSERT","schema":"s","table":"t","key":{"id":1},"new":{"id":1}}"#,
            r#"{"op":"TRUNCATE","schema":"s","table":"t","key":null}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":null,"truncated":true}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":{}}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":{ }}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":[1]}"#,
            r#"{"op":"INSERT","schema":"s","table":"t","key":"id"}"#,
            r#"{"op":"INSERT","table":"t","key":{"id":1}}"#,
            "[1]",
            "hello",
        ] {
            assert!(wanted(no).is_none(), "{no}");
        }
    }
}
