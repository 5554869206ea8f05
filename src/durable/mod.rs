//! Durable delivery: the outbox that `--durable` writers fill and `--consumer` readers drain,
//! kept in the `pgnotify` schema of the database itself.
//!
//! - `pgnotify.events`: one row per event, stored in the writer's own transaction, with that
//!   transaction's id (`xid`). A NOTIFY on [`WAKE_CHANNEL`] only wakes consumers up.
//! - `pgnotify.consumers`: each consumer's channels and checkpoint, the [`Position`] of the last
//!   event it acknowledged.
//! - `pgnotify.schema_version`: one row, the version of this DDL ([`VERSION`]).
//!
//! **Order and completeness.** Ids are given at insert, but transactions commit in another
//! order, so "everything after the last id" would skip an event whose transaction commits late.
//! A consumer reads only events of transactions older than its snapshot's `xmin`: every such
//! transaction has ended, so the set of those events can no longer change, and reading them in
//! (`xid`, `id`) order from the checkpoint misses none. Consumers see whole transactions
//! together, in the order of their ids, and each transaction's events in the order it stored
//! them: the same order for every consumer. A transaction left open holds delivery back until
//! it ends.
//!
//! Owns: the DDL and its versions, every statement on these tables, grants. Does not own: the
//! reading loop (`stream::replay`), the commands.

pub(crate) mod statements;

use crate::exit::UsageError;
use crate::pg::{describe_pg_error, quote_ident};
use anyhow::{Result, anyhow, bail};
use postgres::error::SqlState;

pub(crate) use crate::notification::Position;

/// The version of the schema this pgnotify writes and reads.
pub(crate) const VERSION: i32 = 1;

/// The channel whose notifications wake consumers; the payload is the event's channel.
pub(crate) const WAKE_CHANNEL: &str = "pgnotify.durable";

/// How large one durable payload may be (PostgreSQL's own limit for a value is 1 GB).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// A lock key of our own, so that two first uses do not create the schema at once.
const INSTALL_LOCK: i64 = 0x7067_6e6f_7469_6679; // "pgnotify"

/// The DDL of version 1, statement by statement, as `--print-sql` shows it.
pub(crate) fn install_sql() -> Vec<String> {
    vec![
        format!("SELECT pg_catalog.pg_advisory_xact_lock({INSTALL_LOCK});"),
        "CREATE SCHEMA IF NOT EXISTS pgnotify;".into(),
        "REVOKE ALL ON SCHEMA pgnotify FROM PUBLIC;".into(),
        "COMMENT ON SCHEMA pgnotify IS 'pgnotify durable delivery: see pgnotify consumers --help';"
            .into(),
        "CREATE TABLE pgnotify.schema_version (\n  \
           version integer NOT NULL,\n  \
           installed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),\n  \
           one boolean PRIMARY KEY DEFAULT true CHECK (one)\n);"
            .into(),
        format!("INSERT INTO pgnotify.schema_version (version) VALUES ({VERSION});"),
        "CREATE TABLE pgnotify.events (\n  \
           xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),\n  \
           id bigint GENERATED ALWAYS AS IDENTITY,\n  \
           channel text NOT NULL,\n  \
           payload text NOT NULL,\n  \
           pid integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),\n  \
           created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),\n  \
           PRIMARY KEY (xid, id)\n);"
            .into(),
        "CREATE TABLE pgnotify.consumers (\n  \
           name text PRIMARY KEY,\n  \
           channels text[] NOT NULL,\n  \
           xid xid8 NOT NULL DEFAULT '0',\n  \
           id bigint NOT NULL DEFAULT 0,\n  \
           created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),\n  \
           acked_at timestamptz,\n  \
           seen_at timestamptz NOT NULL DEFAULT pg_catalog.now()\n);"
            .into(),
    ]
}

/// The whole install script, one transaction.
pub(crate) fn install_script() -> String {
    let mut s = String::from("BEGIN;\n");
    for statement in install_sql() {
        s.push_str(&statement);
        s.push('\n');
    }
    s.push_str("COMMIT;\n");
    s
}

/// Who a grant is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grantee {
    /// `--durable` senders: store events.
    Writer,
    /// `--consumer` readers: read events, keep a checkpoint, delete what all have read.
    Consumer,
}

/// The GRANT statements giving ROLE what `grantee` needs (never to PUBLIC).
pub(crate) fn grant_sql(role: &str, grantee: Grantee) -> Vec<String> {
    let role = quote_ident(role);
    let mut s = vec![
        format!("GRANT USAGE ON SCHEMA pgnotify TO {role};"),
        format!("GRANT SELECT ON pgnotify.schema_version TO {role};"),
    ];
    match grantee {
        Grantee::Writer => s.push(format!("GRANT INSERT ON pgnotify.events TO {role};")),
        Grantee::Consumer => {
            s.push(format!(
                "GRANT SELECT, DELETE ON pgnotify.events TO {role};"
            ));
            s.push(format!(
                "GRANT SELECT, INSERT, UPDATE ON pgnotify.consumers TO {role};"
            ));
        }
    }
    s
}

/// What the database holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No `pgnotify` schema yet.
    Missing,
    /// The schema at this version.
    Version(i32),
}

/// Reads the schema's version.
pub(crate) fn found(client: &mut postgres::Client) -> Result<Found> {
    match client.query_one("SELECT version FROM pgnotify.schema_version", &[]) {
        Ok(row) => Ok(Found::Version(row.get(0))),
        Err(e)
            if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
        {
            Ok(Found::Missing)
        }
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => Err(no_access(&e)),
        Err(e) => Err(anyhow!(
            "could not read the pgnotify schema's version: {}",
            describe_pg_error(&e)
        )),
    }
}

/// A permission error on the schema, with the command that fixes it.
pub(crate) fn no_access(e: &postgres::Error) -> anyhow::Error {
    anyhow!(
        "{}: durable mode needs access to the pgnotify schema; its owner can grant it with \
         `pgnotify consumers --grant-writer ROLE` (senders) or `--grant-consumer ROLE` (readers)",
        describe_pg_error(e)
    )
}

/// An SQL error on the outbox: a permission error names the grant that fixes it.
pub(crate) fn sql_error(what: &str, e: &postgres::Error) -> anyhow::Error {
    match e.code() {
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) => anyhow!("{what}: {:#}", no_access(e)),
        _ => anyhow!("{what}: {}", describe_pg_error(e)),
    }
}

/// Makes sure the schema is there at this version: creates it on first use, refuses one newer
/// than this pgnotify knows.
pub(crate) fn ensure(client: &mut postgres::Client) -> Result<()> {
    match found(client)? {
        Found::Missing => install(client),
        Found::Version(v) => usable(v),
    }
}

/// Whether a schema of version `v` is one this pgnotify can use.
pub(crate) fn usable(v: i32) -> Result<()> {
    match v {
        VERSION => Ok(()),
        v if v > VERSION => Err(newer(v)),
        v => bail!(
            "the pgnotify schema in this database is version {v}, which no release of \
             pgnotify wrote; drop it (DROP SCHEMA pgnotify CASCADE) to start over"
        ),
    }
}

fn newer(v: i32) -> anyhow::Error {
    anyhow!(
        "the pgnotify schema in this database is version {v}, newer than this pgnotify \
         (which knows version {VERSION}); upgrade pgnotify"
    )
}

/// Creates the schema, unless another session just did.
pub(crate) fn install(client: &mut postgres::Client) -> Result<()> {
    // Transaction ids as `xid8` and `pg_current_xact_id()` came with PostgreSQL 13.
    let version: i32 = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::pg_catalog.int4",
            &[],
        )?
        .get(0);
    if version < 130_000 {
        bail!(
            "durable delivery needs PostgreSQL 13 or later (this server is {}.{})",
            version / 10_000,
            version % 10_000
        );
    }
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({INSTALL_LOCK})"
    ))?;
    let exists: bool = tx
        .query_one(
            "SELECT pg_catalog.to_regclass('pgnotify.schema_version') IS NOT NULL",
            &[],
        )?
        .get(0);
    if exists {
        tx.rollback()?;
        return match found(client)? {
            Found::Version(v) if v > VERSION => Err(newer(v)),
            _ => Ok(()),
        };
    }
    for statement in install_sql().iter().skip(1) {
        tx.batch_execute(statement).map_err(|e| match e.code() {
            Some(&SqlState::INSUFFICIENT_PRIVILEGE) => anyhow!(
                "could not create the pgnotify schema for durable mode: {}; a role with CREATE \
                 on the database creates it once (`pgnotify consumers --install`), then grants \
                 access (`--grant-writer`, `--grant-consumer`)",
                describe_pg_error(&e)
            ),
            _ => anyhow!(
                "could not create the pgnotify schema: {}",
                describe_pg_error(&e)
            ),
        })?;
    }
    tx.commit()?;
    crate::msg::note(&format!(
        "created the pgnotify schema (version {VERSION}) for durable delivery"
    ));
    Ok(())
}

/// How many events one prune statement deletes.
pub(crate) const PRUNE_BATCH: i64 = 10_000;

/// Deletes, in statements of [`PRUNE_BATCH`], the events every consumer of their channel has
/// acknowledged: at most `rounds` statements (`None`: until none are left). Each runs with the
/// consumers' table locked against new consumers, whose registration then waits for it: one
/// registered meanwhile would otherwise see a hole cut into the events it is replaying.
/// Returns how many were deleted.
pub(crate) fn prune(
    client: &mut postgres::Client,
    rounds: Option<u32>,
) -> Result<u64, postgres::Error> {
    let mut deleted = 0;
    let mut round = 0;
    while rounds.is_none_or(|r| round < r) {
        round += 1;
        let mut tx = client.transaction()?;
        // It gives way rather than queue everyone's checkpoints behind it for long.
        tx.batch_execute(
            "SET LOCAL lock_timeout = '1s'; LOCK TABLE pgnotify.consumers IN SHARE MODE",
        )?;
        let n = tx.execute(statements::PRUNE, &[&PRUNE_BATCH])?;
        tx.commit()?;
        deleted += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
    }
    Ok(deleted)
}

/// A consumer name: 1 to 63 bytes of UTF-8 without control characters.
pub(crate) fn check_consumer_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 63 || name.chars().any(char::is_control) {
        return Err(UsageError(format!(
            "{name:?} is not a consumer name: use 1 to 63 bytes without control characters"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_quote_the_role_and_never_name_public() {
        let sql = grant_sql("Ops \"team\"", Grantee::Consumer).join("\n");
        assert!(sql.contains("TO \"Ops \"\"team\"\"\";"), "{sql}");
        assert!(!sql.to_lowercase().contains("public"), "{sql}");
        let sql = grant_sql("w", Grantee::Writer).join("\n");
        assert!(
            sql.contains("GRANT INSERT ON pgnotify.events TO \"w\";"),
            "{sql}"
        );
        assert!(!sql.contains("DELETE"), "{sql}");
    }

    #[test]
    fn the_install_script_is_one_transaction_that_records_its_version() {
        let s = install_script();
        assert!(s.starts_with("BEGIN;\n") && s.ends_with("COMMIT;\n"), "{s}");
        assert!(s.contains(&format!("VALUES ({VERSION})")), "{s}");
    }

    #[test]
    fn consumer_names() {
        assert!(check_consumer_name("billing-1").is_ok());
        assert!(check_consumer_name("").is_err());
        assert!(check_consumer_name(&"x".repeat(64)).is_err());
        assert!(check_consumer_name("a\nb").is_err());
    }
}
