//! The notification source that `listen` (and `pipe`) read from: one connection that LISTENs
//! on every channel, and a thread that reads it and sends batches into the event channel.
//!
//! Owns: LISTEN, reading, noticing the connection's end. Does not own: output or stopping.
//! The connection stays in autocommit and never opens a transaction, since a listener inside a
//! transaction receives nothing until it ends and pins the server's queue (notify-facts F12).

use crate::conn::{self, Settings, Target, describe_pg_error};
use crate::events::Event;
use crate::msg;
use crate::notification::{Notification, check_channel, quote_ident};
use anyhow::{Context, Result, anyhow};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, SimpleQueryMessage};
use std::sync::mpsc::Sender;

/// The most notifications sent as one event; bounds the latency of the first line of a burst.
const MAX_BATCH: usize = 1024;

/// A running source.
pub struct Listening {
    /// The server process serving the listening session.
    pub backend_pid: i32,
    /// The server it is connected to.
    pub target: Target,
}

/// Connects, LISTENs on every channel, and starts the reading thread.
///
/// Returns once every LISTEN has committed: a notification committed after this returns is
/// received (the readiness rule of `LISTEN`, failure-modes F11).
pub fn start(settings: &Settings, channels: &[String], tx: Sender<Event>) -> Result<Listening> {
    for channel in channels {
        check_channel(channel)?;
    }
    let conn::Connection { mut client, target } = conn::connect(settings)?;
    let backend_pid = listen(&mut client, channels)?;
    let names: Vec<String> = channels.iter().map(|c| quote_ident(c)).collect();
    msg::info(&format!(
        "listening on {} (server process {backend_pid})",
        names.join(", ")
    ));
    let server = target.describe();
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || read(client, &tx, &server))
        .context("could not start the reading thread")?;
    Ok(Listening {
        backend_pid,
        target,
    })
}

/// Sends every LISTEN and asks for the backend PID in one round trip; a simple query of
/// several statements is one implicit transaction, committed when it returns.
fn listen(client: &mut Client, channels: &[String]) -> Result<i32> {
    let mut sql: String = channels
        .iter()
        .map(|c| format!("LISTEN {};", quote_ident(c)))
        .collect();
    sql.push_str("SELECT pg_catalog.pg_backend_pid()");
    let messages = client
        .simple_query(&sql)
        .map_err(|e| anyhow!("could not listen: {}", describe_pg_error(&e)))?;
    let pid = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
        _ => None,
    });
    Ok(pid.unwrap_or_default())
}

/// Reads until the connection ends: blocks for one notification, then takes every one already
/// buffered, and sends them as one batch.
fn read(mut client: Client, tx: &Sender<Event>, server: &str) {
    let lost = |why: String| Event::Lost(format!("lost the connection to {server}: {why}"));
    loop {
        let mut notifications = client.notifications();
        let mut batch = match notifications.blocking_iter().next() {
            Ok(Some(n)) => vec![Notification::from_pg(&n, jiff::Timestamp::now())],
            Ok(None) => {
                let _ = tx.send(lost("the server closed the connection".into()));
                return;
            }
            Err(e) => {
                let _ = tx.send(lost(describe_pg_error(&e)));
                return;
            }
        };
        let mut pending = notifications.iter();
        let mut failure = None;
        while batch.len() < MAX_BATCH {
            match pending.next() {
                Ok(Some(n)) => batch.push(Notification::from_pg(&n, jiff::Timestamp::now())),
                Ok(None) => break,
                Err(e) => {
                    failure = Some(lost(describe_pg_error(&e)));
                    break;
                }
            }
        }
        if tx.send(Event::Notifications(batch)).is_err() {
            return;
        }
        if let Some(event) = failure {
            let _ = tx.send(event);
            return;
        }
    }
}
