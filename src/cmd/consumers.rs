//! `consumers`: the durable outbox's consumers with their lag, and its upkeep: dropping a
//! consumer, deleting what every consumer has read, creating the schema, granting access.
//! The SQL is in `durable`.

use super::print;
use crate::config::{ConsumersAction, ConsumersSettings};
use crate::durable::{self, Grantee, statements};
use crate::exit::{Exit, StdoutError};
use crate::msg;
use crate::pg::{self, ConnSettings, describe_pg_error};
use crate::sanitize::escape_controls;
use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

pub(crate) fn run(settings: ConsumersSettings, conn: &ConnSettings) -> Result<Exit> {
    let pg::Connection { mut client, .. } = pg::connect(conn)?;
    let client = &mut client;
    match settings.action {
        ConsumersAction::Install => match settings.print_sql {
            true => print(&durable::install_script()),
            false => {
                match durable::found(client)? {
                    durable::Found::Missing => durable::install(client)?,
                    durable::Found::Version(v) => {
                        durable::usable(v)?;
                        msg::note(&format!(
                            "the pgnotify schema is already there (version {})",
                            durable::VERSION
                        ));
                    }
                }
                Ok(Exit::Success)
            }
        },
        ConsumersAction::Grant(role, grantee) => {
            let sql = durable::grant_sql(&role, grantee);
            if settings.print_sql {
                return print(&format!("BEGIN;\n{}\nCOMMIT;\n", sql.join("\n")));
            }
            durable::ensure(client)?;
            let mut tx = client.transaction()?;
            for statement in &sql {
                tx.batch_execute(statement).map_err(|e| {
                    anyhow!(
                        "could not grant access to {role:?}: {}",
                        describe_pg_error(&e)
                    )
                })?;
            }
            tx.commit()?;
            let what = match grantee {
                Grantee::Writer => "store durable events",
                Grantee::Consumer => "read durable events as a consumer",
            };
            msg::note(&format!("{} may now {what}", escape_controls(&role)));
            Ok(Exit::Success)
        }
        ConsumersAction::Drop(name) => {
            require_schema(client)?;
            let gone = client
                .query_opt(statements::DROP, &[&name])
                .map_err(|e| durable::sql_error("could not drop the consumer", &e))?;
            match gone {
                Some(_) => {
                    msg::note(&format!(
                        "dropped consumer {:?}: its events no longer hold back retention",
                        name
                    ));
                    Ok(Exit::Success)
                }
                None => bail!("there is no consumer named {name:?}"),
            }
        }
        ConsumersAction::Prune => {
            require_schema(client)?;
            let deleted = durable::prune(client, None)
                .map_err(|e| durable::sql_error("could not delete acknowledged events", &e))?;
            msg::note(&format!(
                "deleted {deleted} events that every consumer of their channel has acknowledged"
            ));
            Ok(Exit::Success)
        }
        ConsumersAction::List => {
            require_schema(client)?;
            list(client, settings.max_lag, settings.json)
        }
    }
}

fn require_schema(client: &mut postgres::Client) -> Result<()> {
    match durable::found(client)? {
        durable::Found::Missing => bail!(
            "this database has no pgnotify schema: nothing has used durable delivery here yet \
             (it is created by the first --durable or --consumer, or by `pgnotify consumers \
             --install`)"
        ),
        durable::Found::Version(v) => durable::usable(v),
    }
}

/// One consumer, as `--json` writes it.
#[derive(Serialize)]
struct Consumer {
    name: String,
    channels: Vec<String>,
    /// The checkpoint: the last event acknowledged, and its transaction.
    id: i64,
    xid: u64,
    /// When the checkpoint last moved, and when the consumer was last running.
    acked_at: Option<String>,
    seen_at: Option<String>,
    /// Events stored after the checkpoint, and the age of the oldest of them.
    pending: i64,
    lag_seconds: Option<f64>,
    /// Behind by more than `--max-lag`.
    stale: bool,
}

fn list(client: &mut postgres::Client, max_lag: Duration, json: bool) -> Result<Exit> {
    let rows = client
        .query(statements::LIST, &[])
        .map_err(|e| durable::sql_error("could not list the consumers", &e))?;
    let mut consumers = Vec::with_capacity(rows.len());
    for row in rows {
        let xid: String = row.get(2);
        let lag: Option<f64> = row.get(7);
        consumers.push(Consumer {
            name: row.get(0),
            channels: row.get(1),
            xid: xid.parse().unwrap_or_default(),
            id: row.get(3),
            acked_at: row.get(4),
            seen_at: row.get(5),
            pending: row.get(6),
            lag_seconds: lag,
            stale: lag.is_some_and(|l| l > max_lag.as_secs_f64()),
        });
    }
    let stdout = std::io::stdout();
    let json = json || !stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match json {
        true => consumers.iter().try_for_each(|c| {
            serde_json::to_writer(&mut out, c)?;
            out.write_all(b"\n")
        }),
        false => write_table(&mut out, &consumers),
    };
    written.and_then(|()| out.flush()).map_err(StdoutError)?;
    let stale: Vec<&Consumer> = consumers.iter().filter(|c| c.stale).collect();
    for c in &stale {
        msg::warn(&format!(
            "consumer {:?} is behind by {} ({} events), more than --max-lag {}: its events are \
             kept until it reads them; if it is gone for good, drop it with `pgnotify consumers \
             --drop {}`",
            c.name,
            age(c.lag_seconds.unwrap_or_default()),
            c.pending,
            age(max_lag.as_secs_f64()),
            shell_word(&c.name)
        ));
    }
    Ok(match stale.is_empty() {
        true => Exit::Success,
        false => Exit::Failure,
    })
}

/// `2h 5m`, `3m 10s`, `42s`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// A name as a shell word: bare when it is safe, else in single quotes.
fn shell_word(name: &str) -> String {
    let safe = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
    match safe {
        true => name.to_owned(),
        false => format!("'{}'", name.replace('\'', "'\\''")),
    }
}

fn write_table(out: &mut impl Write, consumers: &[Consumer]) -> std::io::Result<()> {
    let header = ["CONSUMER", "CHANNELS", "PENDING", "LAG", "LAST SEEN"];
    let rows: Vec<[String; 5]> = consumers
        .iter()
        .map(|c| {
            [
                escape_controls(&c.name).into_owned(),
                escape_controls(&c.channels.join(", ")).into_owned(),
                c.pending.to_string(),
                match (c.lag_seconds, c.stale) {
                    (None, _) => "-".to_owned(),
                    (Some(l), false) => age(l),
                    (Some(l), true) => format!("{} (stale)", age(l)),
                },
                c.seen_at.clone().unwrap_or_default(),
            ]
        })
        .collect();
    super::write_aligned(out, header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_shell_words() {
        assert_eq!(age(42.4), "42s");
        assert_eq!(age(190.0), "3m 10s");
        assert_eq!(age(7500.0), "2h 5m");
        assert_eq!(shell_word("billing-1"), "billing-1");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
