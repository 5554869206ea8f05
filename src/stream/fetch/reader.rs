//! The reading side of `--fetch`, on a thread of its own: the connection (always to the
//! server the source listens on, reopened at most once a second), what is known of each
//! (channel, table), and the warnings, one line per problem.

use super::statement::{Entry, outdated_by_ddl, prepare, read_rows, warm_up};
use super::{Found, Group, Place};
use crate::msg;
use crate::pg::{self, ConnSettings, Target, describe_pg_error, quote_ident};
use crate::sanitize::escape_controls;
use crate::stream::source::ListeningOn;
use crate::watch::display_name;
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a "this table is not watched on that channel" answer is trusted.
const RECHECK: Duration = Duration::from_secs(10);
/// How long to wait after a failed connect before trying again.
const RECONNECT: Duration = Duration::from_secs(1);

/// A (channel, schema, table): a watch as `--fetch` knows it.
type TableOf = (String, String, String);

/// The connection and what is known of each watch: the `fetch` thread owns it.
pub(super) struct Reader {
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

impl Reader {
    pub(super) fn new(settings: &ConnSettings, listening_on: ListeningOn) -> Reader {
        Reader {
            settings: settings.clone(),
            listening_on,
            connected_to: None,
            client: None,
            next_connect: Instant::now(),
            tables: HashMap::new(),
            said: HashSet::new(),
        }
    }

    /// The rows of one batch's groups, one query per group, for the events whose row was
    /// read.
    pub(super) fn read_job(&mut self, job: Vec<Group>) -> Found {
        let mut found = Found::default();
        for group in job {
            match self.read(&group, &mut found.text) {
                Ok(Some(rows)) => found.rows.extend(
                    group
                        .at
                        .into_iter()
                        .zip(rows)
                        .filter_map(|(i, row)| Some((i, row?))),
                ),
                Ok(None) => {}
                Err(message) => self.say(message),
            }
        }
        found
    }

    /// The server the source listens on now (none while it connects).
    fn listening_on(&self) -> MutexGuard<'_, Option<Target>> {
        self.listening_on
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn say(&mut self, message: String) {
        if self.said.insert(message.clone()) {
            msg::warn(&message);
        }
    }

    /// Connects at the start, when the source already listens, and warms the new session up,
    /// so that the first events do not wait for either; a failure is said, and connecting is
    /// tried again for the first events (at most once a second, as after any failure).
    pub(super) fn connect_early(&mut self) {
        if self.listening_on().is_none() {
            return;
        }
        match self.connect() {
            Ok(_) => {
                if let Some(client) = self.client.as_mut() {
                    warm_up(client);
                }
            }
            Err(message) => self.say(message),
        }
    }

    /// Makes sure of a connection to the server the source listens on: whether there is one,
    /// none while waiting to try again, or why connecting failed.
    fn connect(&mut self) -> Result<bool, String> {
        // Compared in place: this runs for every event, a clone only when connecting.
        let moved = {
            let on = self.listening_on();
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
                return Ok(false);
            }
            self.next_connect = Instant::now() + RECONNECT;
            let listening_on = self.listening_on().clone();
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
        Ok(true)
    }

    /// The rows of the events of one table, appended to `text`: where each event's row is,
    /// in their order (`Some(None)` for a row that is gone, `None` for an event whose key is
    /// not the watch's), None when nothing is fetched here now, or the problem to report.
    fn read(
        &mut self,
        group: &Group,
        text: &mut Vec<u8>,
    ) -> Result<Option<Vec<Option<Place>>>, String> {
        let Group {
            channel,
            schema,
            table,
            keys,
            ..
        } = group;
        let name = display_name(schema, table);
        let id = (channel.clone(), schema.clone(), table.clone());
        // A second try only when the first found its statement outdated by DDL (prepared
        // again at once), or its connection lost (a server restart: connected again at
        // once); the batch is read if it can be, else one line says why.
        let mut retried = false;
        loop {
            if !self.connect()? {
                return Ok(None);
            }
            let Some(client) = self.client.as_mut() else {
                return Ok(None);
            };
            let stale = match self.tables.get(&id) {
                None => true,
                Some(Entry::Refused(at)) => at.elapsed() > RECHECK,
                Some(Entry::Ready { .. }) => false,
            };
            if stale {
                let entry = prepare(client, channel, schema, table)
                    .map_err(|e| format!("--fetch cannot read rows of {name}: {e}"))?;
                self.tables.insert(id.clone(), entry);
            }
            let Some(Entry::Ready {
                statement,
                key,
                by,
                row,
            }) = self.tables.get(&id)
            else {
                return Err(format!(
                    "--fetch does not read rows of {name} for events on channel {}: pgnotify \
                     does not watch that table on that channel (a forged or stale event?)",
                    escape_controls(&quote_ident(channel))
                ));
            };
            match read_rows(client, statement, key, by, row, keys, text) {
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
                    if pg::connection_lost(&e) {
                        self.client = None;
                        if !retried {
                            retried = true;
                            self.next_connect = Instant::now();
                            continue;
                        }
                    } else if e.as_db_error().is_none() {
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
