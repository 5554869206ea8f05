//! `watch-table`: install, remove or list the trigger that turns a table's changes into JSON
//! notifications. The SQL and the catalog lookups are in `watch`; this module decides what to
//! run and reports it.
//!
//! Every change is one transaction (`BEGIN` ... `COMMIT` in one script): an error or a signal
//! half-way leaves nothing behind. Installing what is already installed changes nothing and
//! takes no lock.

use super::print;
use crate::config::{WatchAction, WatchTableSettings};
use crate::durable;
use crate::exit::{Exit, StdoutError, UsageError};
use crate::msg;
use crate::pg::{self, ConnSettings, check_channel, describe_pg_error, quote_ident};
use crate::sanitize::escape_controls;
use crate::signals;
use crate::watch::{self, Kind, Marker, Script, Table};
use anyhow::{Result, anyhow, bail};
use std::io::{IsTerminal, Write};

pub(crate) fn run(settings: WatchTableSettings, conn: &ConnSettings) -> Result<Exit> {
    if let WatchAction::Install {
        channel: Some(channel),
        ..
    } = &settings.action
    {
        check_channel(channel).map_err(|e| UsageError(format!("--channel: {e}")))?;
    }
    let pg::Connection { mut client, .. } = pg::connect(conn)?;
    let client = &mut client;
    let table = match &settings.table {
        Some(name) => Some(watch::resolve(client, name)?),
        None => None,
    };
    match (settings.action, table) {
        (WatchAction::List { json }, table) => list(client, table.as_ref(), json),
        (WatchAction::Drop, Some(table)) => drop(client, &table, settings.print_sql),
        (
            WatchAction::Install {
                channel,
                events,
                rows,
                columns,
                statement_triggers,
                durable,
            },
            Some(table),
        ) => {
            let key = watch::key_columns(client, &table)?;
            if key.is_empty() && !rows {
                bail!(
                    "table {} has no primary key, so its events could not say which row \
                     changed; add a primary key (or a REPLICA IDENTITY USING INDEX), or use \
                     --rows to send row images with \"key\": null",
                    table.display()
                );
            }
            if let Some(columns) = &columns {
                let existing = watch::columns(client, &table)?;
                watch::check_columns(&table, columns, &existing)?;
            }
            let mut events = events;
            events.sort();
            events.dedup();
            if table.partitioned && events.contains(&watch::Op::Truncate) {
                bail!(
                    "table {} is partitioned, and a TRUNCATE of one of its partitions fires no \
                     trigger of the parent's, so pgnotify cannot promise TRUNCATE events for it; \
                     watch it with --events insert,update,delete (row events come from every \
                     partition, attached later too)",
                    table.display()
                );
            }
            // With --triggers auto, statement triggers where they send the same events
            // (`row_triggers_needed`). Not the default: a single-row statement costs more
            // with them (README, "Row or statement triggers").
            let row_ops = events.iter().any(|op| *op != watch::Op::Truncate);
            // Durable events are stored by row triggers (the statement function's fast path
            // relies on pg_notify's refusals, which an INSERT does not make).
            let triggers = match statement_triggers
                && !durable
                && row_ops
                && table.row_triggers_needed(&key).is_none()
            {
                true => Kind::Statement,
                false => Kind::Row,
            };
            let marker = Marker {
                version: 1,
                channel: channel.unwrap_or_else(|| table.name.clone()),
                events,
                rows,
                columns,
                key,
                triggers,
                durable,
            };
            install(
                client,
                &table,
                &marker,
                statement_triggers,
                settings.print_sql,
            )
        }
        (_, None) => Err(UsageError("TABLE is required".into()).into()),
    }
}

fn install(
    client: &mut postgres::Client,
    table: &Table,
    marker: &Marker,
    statement_triggers: bool,
    print_sql: bool,
) -> Result<Exit> {
    let installed = watch::installed(client, table)?;
    refuse_inherited(table, &installed)?;
    watch::check_names_free(client, table, &installed)?;
    let needed = table.row_triggers_needed(&marker.key);
    let triggers = match (marker.triggers, needed) {
        (Kind::Statement, _) => "statement triggers".to_owned(),
        (Kind::Row, _) if statement_triggers && marker.durable => {
            "row triggers: --durable stores events with row triggers".to_owned()
        }
        (Kind::Row, Some(why)) if statement_triggers => format!("row triggers: {why}"),
        (Kind::Row, _) => "row triggers".to_owned(),
    };
    let what = format!(
        "{} on channel {} ({}; {}; {triggers})",
        table.display(),
        escape_controls(&quote_ident(&marker.channel)),
        marker.events_text(),
        match marker.mode().as_str() {
            "key" => "key only".to_owned(),
            mode => mode.to_owned(),
        }
    );
    let sql = watch::install_sql(table, marker, &installed);
    if print_sql {
        let mut text = String::new();
        if marker.durable && durable::found(client)? == durable::Found::Missing {
            text.push_str(
                "-- First, in a transaction of its own: the pgnotify schema for durable delivery.\n",
            );
            text.push_str(&durable::install_script());
            text.push('\n');
        }
        text.push_str(&sql.text());
        return print(&text);
    }
    if marker.durable {
        durable::ensure(client)?;
    }
    // A disabled trigger is not what an install leaves: reinstalling enables it again.
    let same = installed.marker.as_ref() == Some(marker)
        && installed.disabled.is_empty()
        && installed.triggers == marker.trigger_names()
        && installed.function.as_ref().is_some_and(|f| {
            f.sql() == table.function_sql() && f.body == watch::stored_body(table, marker)
        });
    if same {
        msg::note(&format!("already watching {what}; nothing changed"));
        return Ok(Exit::Success);
    }
    let replacing = !installed.triggers.is_empty() || installed.function.is_some();
    if replacing && let Some(why) = watch::ownership_missing(client, table, &installed)? {
        bail!("cannot replace the watch on {}: {why}", table.display());
    }
    if marker.rows && marker.durable {
        msg::note(&format!(
            "--rows --durable stores row data in pgnotify.events: the roles that may read it \
             (consumers) see it, whatever their privileges on {}",
            table.display()
        ));
    } else if marker.rows {
        msg::warn(&format!(
            "--rows puts row data in every notification: any role that can connect to this \
             database can LISTEN on {} and read it, whatever its privileges on {}",
            escape_controls(&quote_ident(&marker.channel)),
            table.display()
        ));
    }
    run_script(client, &sql).map_err(|e| {
        change_error(
            client,
            e,
            &format!("could not install the trigger on {}", table.display()),
            table,
        )
    })?;
    msg::note(&format!("watching {what}"));
    Ok(Exit::Success)
}

fn drop(client: &mut postgres::Client, table: &Table, print_sql: bool) -> Result<Exit> {
    let installed = watch::installed(client, table)?;
    refuse_inherited(table, &installed)?;
    if installed.triggers.is_empty() && installed.function.is_none() {
        if print_sql {
            return print(&format!(
                "-- {} is not watched by pgnotify: nothing to drop\n",
                table.display()
            ));
        }
        msg::note(&format!(
            "{} is not watched by pgnotify; nothing to drop",
            table.display()
        ));
        return Ok(Exit::Success);
    }
    let sql = watch::drop_sql(table, &installed);
    if print_sql {
        return print(&sql.text());
    }
    if let Some(why) = watch::ownership_missing(client, table, &installed)? {
        bail!("cannot remove the watch on {}: {why}", table.display());
    }
    run_script(client, &sql).map_err(|e| {
        change_error(
            client,
            e,
            &format!("could not remove the trigger from {}", table.display()),
            table,
        )
    })?;
    msg::note(&format!(
        "stopped watching {}: its trigger and function are dropped",
        table.display()
    ));
    Ok(Exit::Success)
}

fn list(client: &mut postgres::Client, table: Option<&Table>, json: bool) -> Result<Exit> {
    let watched = watch::list(client, table)?;
    let stdout = std::io::stdout();
    let json = json || !stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match json {
        true => write_ndjson(&mut out, &watched),
        false => write_table(&mut out, &watched),
    };
    written.and_then(|()| out.flush()).map_err(StdoutError)?;
    Ok(Exit::Success)
}

fn write_ndjson(out: &mut impl Write, watched: &[watch::Watched]) -> std::io::Result<()> {
    for w in watched {
        serde_json::to_writer(&mut *out, w)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A table with a header, columns padded to their widest cell, as psql aligns them.
fn write_table(out: &mut impl Write, watched: &[watch::Watched]) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = watched
        .iter()
        .map(|w| {
            [
                watch::display_name(&w.schema, &w.table),
                escape_controls(&w.marker.channel).into_owned(),
                w.marker.events_text(),
                w.marker.triggers.text().to_owned(),
                match w.stale {
                    true => format!("{} (stale: see below)", w.marker.mode()),
                    false => w.marker.mode(),
                },
            ]
        })
        .collect();
    super::write_aligned(
        out,
        ["TABLE", "CHANNEL", "EVENTS", "TRIGGERS", "MODE"],
        &rows,
    )?;
    // Each problem with its fix, under the table: the trigger no longer matches the table.
    for w in watched {
        for drift in &w.problems {
            writeln!(
                out,
                "\n{}: {}\n  fix: {}",
                watch::display_name(&w.schema, &w.table),
                drift.problem,
                drift.fix
            )?;
        }
    }
    Ok(())
}

/// A partition reached by its partitioned table's watch (through PostgreSQL's cloned
/// triggers) is changed only through that watch.
fn refuse_inherited(table: &Table, installed: &watch::Installed) -> Result<()> {
    match &installed.inherited_from {
        Some(parent) => bail!(
            "table {} is a partition of {}, which pgnotify watches: its events come from that \
             watch, so change or drop the watch on {} instead",
            table.display(),
            escape_controls(parent),
            escape_controls(parent)
        ),
        None => Ok(()),
    }
}

/// Runs the statements in one transaction, one round trip each: COMMIT is only sent once all
/// have succeeded, so a pgnotify that dies half-way (a signal while the table's lock is awaited)
/// leaves nothing. A signal also cancels the statement in progress, as psql's Ctrl-C does, so
/// the server stops waiting for the lock at once.
fn run_script(client: &mut postgres::Client, script: &Script) -> Result<(), postgres::Error> {
    let token = client.cancel_token();
    signals::deliver_to(move |_| {
        let _ = token.cancel_query(postgres::NoTls);
        false
    });
    let mut transaction = client.transaction()?;
    for statement in script.statements() {
        transaction.batch_execute(statement)?;
    }
    transaction.commit()
}

/// The server's message, with a hint for the errors users meet: missing privileges, a busy
/// table, a read-only server (asked whether it is a standby: the message does not say).
fn change_error(
    client: &mut postgres::Client,
    e: postgres::Error,
    what: &str,
    table: &Table,
) -> anyhow::Error {
    if e.code().map(|c| c.code()) == Some("25006")
        && let Ok(row) = client.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
    {
        return anyhow!("{what}: {}", pg::describe_on(&e, row.get(0)));
    }
    let hint = match e.code().map(|c| c.code()) {
        Some("42501") => format!(
            "; installing needs the TRIGGER privilege on {} and CREATE on schema {} (the \
             table's owner may lack CREATE), removing or replacing needs ownership of the table \
             and of the watch's function",
            table.display(),
            escape_controls(&quote_ident(&table.schema))
        ),
        Some("55P03") => "; another transaction holds a lock on the table: pgnotify waits at \
                          most 10 s so that writers do not queue behind it; try again"
            .to_owned(),
        _ => String::new(),
    };
    anyhow!("{what}: {}{hint}", describe_pg_error(&e))
}
