//! `doctor`: why notifications would not arrive, on one screen, each problem with its fix.
//!
//! It connects as every command does, then runs checks in order, each `ok`, `warning` or
//! `problem`: where each connection setting came from (never a password), the server and the
//! role, TLS and the certificate's verification, whether this connection can LISTEN (a hot
//! standby cannot), whether a notification comes back through it (a transaction-pooling proxy
//! breaks that, and is told apart by two statements that land on different backends), the
//! notification queue, sessions idle in a transaction, the timeouts that cut an idle listener,
//! the watched tables, and with CHANNEL who listens there and a test notification.
//!
//! Owns: the checks. `delivery` holds the two that send notifications (the round trip and its
//! pooler probe, and the channels), `report` the `Check` and how the report is written (text
//! or one JSON document). Does not own: resolving the settings or connecting (`pg`), what a
//! watch is (`watch`).
//!
//! Exit status: 0 when no check found a problem (warnings allowed), 1 when one did, 3 when the
//! server cannot be reached at all or the connection is lost during the checks (the settings
//! are reported on stdout first, and the one-line error goes to stderr as for every command),
//! 2 for a bad CHANNEL.

mod delivery;
mod report;

use crate::config::DoctorSettings;
use crate::exit::{self, Exit};
use crate::pg::{
    self, ConnSettings, PasswordUsed, Source, TlsUsed, Verify, check_channel, describe_pg_error,
};
use crate::sanitize::escape_controls;
use crate::watch;
use anyhow::Result;
use delivery::{channels, round_trip};
use postgres::Client;
use report::{Check, Status, write_report};
use serde_json::{Value, json};
use std::time::Duration;

/// Queue usage from which a warning is given (the server warns senders from 50% too).
const QUEUE_WARN: f64 = 0.5;
/// Queue usage from which it is a problem: senders are close to failing at commit.
const QUEUE_PROBLEM: f64 = 0.9;

/// pgnotify's default `--heartbeat`, as `cli` declares it.
const HEARTBEAT: Duration = Duration::from_secs(10);

pub(crate) fn run(settings: DoctorSettings, conn: &ConnSettings) -> Result<Exit> {
    for channel in &settings.channels {
        // With --json a bad CHANNEL is a report too (one document for every outcome), before
        // anything connects; the one-line error goes to stderr as for every command.
        if let Err(e) = check_channel(channel) {
            if settings.json {
                let check = Check::new("channel", Status::Problem, format!("{e:#}"))
                    .subject(channel)
                    .fix("Give a channel name of 1 to 63 bytes without a NUL");
                write_report(&[check], &settings, exit::for_error(&e))?;
            }
            return Err(e);
        }
    }
    let mut checks = vec![connection_settings(conn)];
    let connection = match pg::connect(conn) {
        Ok(connection) => connection,
        Err(e) => {
            let fix = "Check the settings above: the host and port, that the server runs and \
                       accepts TCP or socket connections, pg_hba.conf and the password";
            checks.push(Check::new("connection", Status::Problem, format!("{e:#}")).fix(fix));
            write_report(&checks, &settings, exit::for_error(&e))?;
            return Err(e);
        }
    };
    checks.push(password(conn, connection.password));
    let mut client = connection.client;
    let server = server(&mut client, &connection.target, conn);
    let standby = server.data["in_recovery"] == Value::Bool(true);
    checks.push(server);
    checks.push(tls(connection.tls.as_ref(), &connection.target, conn));
    checks.push(listen(standby));
    // Each further check only while the connection lasts: one lost on the way is said once,
    // as the connection's problem (status 3), not as every later check's failure.
    let mut pooled = false;
    let mut gone = lost(&mut client, &checks);
    if !standby && !gone {
        let round = round_trip(&mut client, &connection.target, conn);
        pooled = round.data["pooled"] == Value::Bool(true);
        checks.push(round);
    }
    gone = gone || lost(&mut client, &checks);
    if !gone {
        checks.push(queue(&mut client));
    }
    gone = gone || lost(&mut client, &checks);
    if !gone {
        checks.push(idle_in_transaction(&mut client));
    }
    gone = gone || lost(&mut client, &checks);
    if !gone {
        checks.push(idle_timeouts(&mut client, &connection.target, conn));
    }
    gone = gone || lost(&mut client, &checks);
    if !gone {
        checks.extend(watched_tables(&mut client));
    }
    gone = gone || lost(&mut client, &checks);
    if !gone {
        checks.extend(channels(&mut client, &settings.channels, standby, pooled));
    }
    if gone || lost(&mut client, &checks) {
        return connection_lost(checks, &settings, &connection.target);
    }
    let exit = match checks.iter().any(|c| c.status == Status::Problem) {
        true => Exit::Failure,
        false => Exit::Success,
    };
    write_report(&checks, &settings, exit)?;
    Ok(exit)
}

/// Whether the connection is gone: closed, or, after a check that failed, no longer answering
/// (a session ended by the server fails its statement first, and is closed only after).
fn lost(client: &mut Client, checks: &[Check]) -> bool {
    client.is_closed()
        || (checks.last().is_some_and(|c| c.status != Status::Ok)
            && client.is_valid(Duration::from_secs(5)).is_err())
}

/// The connection was lost during the checks: the check that met it (if it failed) is
/// replaced by a `connection` problem that says so, the report is written, and the run ends
/// with status 3 and the one-line error.
fn connection_lost(
    mut checks: Vec<Check>,
    settings: &DoctorSettings,
    target: &pg::Target,
) -> Result<Exit> {
    let met = match checks.last() {
        Some(last) if last.status != Status::Ok => checks.pop(),
        _ => None,
    };
    let mut check = Check::new(
        "connection",
        Status::Problem,
        format!(
            "the connection to {} was lost during the checks; the checks after it did not run",
            escape_controls(&target.describe())
        ),
    )
    .fix(
        "Run doctor again; if the connection is lost again, look in the server's log for why \
         (pg_terminate_backend, idle_session_timeout, a restart) and at what is in between \
         (a proxy or firewall that cuts connections)",
    );
    if let Some(met) = met {
        check = check.note(format!("{}: {}", met.name, met.detail));
    }
    checks.push(check);
    write_report(&checks, settings, Exit::Connection)?;
    Err(exit::ConnectionError(format!(
        "the connection to {} was lost during doctor's checks",
        target.describe()
    ))
    .into())
}

/// The connection settings that matter, each with where it came from. Never a password:
/// only whether one was given, and where.
fn connection_settings(conn: &ConnSettings) -> Check {
    const KEYS: &[&str] = &[
        "service",
        "host",
        "hostaddr",
        "port",
        "user",
        "dbname",
        "application_name",
        "sslmode",
        "sslrootcert",
        "target_session_attrs",
        "connect_timeout",
        "options",
        "passfile",
        "password",
    ];
    let mut rows = Vec::new();
    let mut data = Vec::new();
    for key in KEYS {
        let source = conn.source(key);
        let value = match (*key, conn.get(key)) {
            ("password", Some(_)) => "(given, not shown)".to_owned(),
            ("port", None) => "5432".to_owned(),
            ("host", None) => conn.targets()[0].host.clone(),
            ("sslmode", None) => "prefer".to_owned(),
            (_, Some(value)) => value.to_owned(),
            ("service", None) if source.is_some() => "(from PGSERVICE)".to_owned(),
            (_, None) => continue,
        };
        let from = source.map_or_else(|| "default".to_owned(), describe_source);
        rows.push((key, escape_controls(&value).to_string(), from.clone()));
        let shown = match *key {
            "password" => Value::Null,
            _ => Value::String(value),
        };
        data.push(json!({"key": key, "value": shown, "source": from}));
    }
    let mut check = Check::new(
        "settings",
        Status::Ok,
        "where each connection setting came from (flag, -d, service file, environment, default)",
    )
    .data(Value::Array(data));
    // Columns as wide as what they hold (a value at most 30), so that a row fits the report's
    // width and is not wrapped out of line.
    let key_width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, v, _)| v.chars().count())
        .max()
        .unwrap_or(0)
        .min(30);
    check.notes = rows
        .iter()
        .map(|(key, value, from)| format!("{key:<key_width$}  {value:<value_width$}  {from}"))
        .collect();
    check
}

fn describe_source(source: &Source) -> String {
    match source {
        Source::Flag(flag) => format!("flag {flag}"),
        Source::Conninfo => "-d connection string".to_owned(),
        Source::Service(name) => format!("service \"{}\"", escape_controls(name)),
        Source::Env(var) => format!("environment {var}"),
        Source::Default => "default".to_owned(),
    }
}

/// Where the password came from: never the password itself.
fn password(conn: &ConnSettings, used: PasswordUsed) -> Check {
    let given = conn
        .source("password")
        .map_or_else(|| "the settings".to_owned(), describe_source);
    let (detail, source) = match used {
        PasswordUsed::None => (
            "no password was sent: the server asked for none".to_owned(),
            "none".to_owned(),
        ),
        PasswordUsed::Given => (format!("the password came from {given}"), given),
        PasswordUsed::Passfile => (
            format!(
                "the password came from the password file {}",
                conn.get("passfile").unwrap_or("~/.pgpass")
            ),
            "password file".to_owned(),
        ),
        PasswordUsed::Prompt => (
            "the password was typed at the prompt".to_owned(),
            "prompt".to_owned(),
        ),
    };
    let check = Check::new("password", Status::Ok, escape_controls(&detail))
        .data(json!({"source": source}));
    match (used, conn.source("password")) {
        (PasswordUsed::Given, Some(Source::Conninfo)) => Check {
            status: Status::Warning,
            ..check
        }
        .fix(
            "Put the password in PGPASSWORD or the password file instead of -d: a command \
             line can be read by other users of the machine (ps)",
        ),
        _ => check,
    }
}

/// The server, the role and the database reached.
fn server(client: &mut Client, target: &pg::Target, conn: &ConnSettings) -> Check {
    let sql = "SELECT pg_catalog.current_setting('server_version'), \
                      CURRENT_USER::pg_catalog.text, \
                      (SELECT r.rolsuper FROM pg_catalog.pg_roles r \
                        WHERE r.rolname = CURRENT_USER), \
                      pg_catalog.current_database()::pg_catalog.text, \
                      pg_catalog.pg_is_in_recovery(), pg_catalog.pg_backend_pid()";
    let row = match client.query_typed(sql, &[]) {
        Ok(rows) if !rows.is_empty() => rows.into_iter().next(),
        Ok(_) => None,
        Err(e) => {
            return Check::new(
                "server",
                Status::Problem,
                format!(
                    "could not ask the server about itself: {}",
                    describe_pg_error(&e)
                ),
            )
            .fix("Connect to a PostgreSQL server, not to another service on that port");
        }
    };
    let Some(row) = row else {
        return Check::new("server", Status::Problem, "the server answered no row");
    };
    let version: String = row.get(0);
    let user: String = row.get(1);
    let superuser: Option<bool> = row.get(2);
    let database: String = row.get(3);
    let recovery: bool = row.get(4);
    let pid: i32 = row.get(5);
    let count = conn.targets().len();
    let which = match count {
        1 => String::new(),
        n => {
            let index = conn.targets().iter().position(|t| t == target).unwrap_or(0);
            format!(" (host {} of {n})", index + 1)
        }
    };
    let role = match superuser {
        Some(true) => "a superuser",
        _ => "not a superuser",
    };
    let kind = match recovery {
        true => "a hot standby",
        false => "a primary",
    };
    let detail = format!(
        "PostgreSQL {}, {kind}; connected as \"{}\" ({role}) to database \"{}\" on {}{which}",
        escape_controls(&version),
        escape_controls(&user),
        escape_controls(&database),
        escape_controls(&target.describe())
    );
    Check::new("server", Status::Ok, detail).data(json!({
        "version": version,
        "user": user,
        "superuser": superuser,
        "database": database,
        "in_recovery": recovery,
        "backend_pid": pid,
        "server": target.describe(),
        "host_index": conn.targets().iter().position(|t| t == target).unwrap_or(0) + 1,
        "hosts": count,
    }))
}

/// TLS, and how much of the server's certificate was checked.
fn tls(used: Option<&TlsUsed>, target: &pg::Target, conn: &ConnSettings) -> Check {
    let mode = conn.get("sslmode").unwrap_or("prefer");
    let Some(used) = used else {
        if target.is_socket() {
            return Check::new(
                "tls",
                Status::Ok,
                "not used: a unix socket, which never takes TLS (and needs none)",
            )
            .data(json!({"used": false}));
        }
        let loopback = ["localhost", "127.0.0.1", "::1"].contains(&target.host.as_str());
        let check = Check::new(
            "tls",
            match loopback {
                true => Status::Ok,
                false => Status::Warning,
            },
            format!("not used (sslmode={mode}): the connection is not encrypted"),
        )
        .data(json!({"used": false, "sslmode": mode}));
        return match loopback {
            true => check.note("the server is on this machine (loopback)"),
            false => check.fix(
                "Turn TLS on in the server (ssl = on) and connect with sslmode=verify-full and \
                 sslrootcert naming the CA's certificate",
            ),
        };
    };
    let (status, verified) = match used.verified {
        Verify::Full => (
            Status::Ok,
            "the certificate and the host name were verified",
        ),
        Verify::Chain => (
            Status::Ok,
            "the certificate was verified up to a trusted root, not the host name",
        ),
        Verify::Nothing => (
            Status::Warning,
            "the certificate was not verified: anyone on the path could pose as the server",
        ),
    };
    let detail = format!("{} (sslmode={mode}); {verified}", used.description);
    let check = Check::new("tls", status, detail).data(json!({
        "used": true,
        "sslmode": mode,
        "description": used.description,
        "verified": match used.verified {
            Verify::Full => "full",
            Verify::Chain => "chain",
            Verify::Nothing => "none",
        },
    }));
    match used.verified {
        Verify::Nothing => check.fix(
            "Connect with sslmode=verify-full and sslrootcert naming the CA that signed the \
             server's certificate",
        ),
        _ => check,
    }
}

/// A hot standby cannot LISTEN (nor NOTIFY).
fn listen(standby: bool) -> Check {
    match standby {
        false => Check::new(
            "listen",
            Status::Ok,
            "this server is a primary: LISTEN can run",
        ),
        true => Check::new(
            "listen",
            Status::Problem,
            "this server is a hot standby, where LISTEN and NOTIFY cannot run: nothing sent on \
             the primary reaches a listener here",
        )
        .fix(
            "Point pgnotify at the primary; with a list of hosts, add \
             target_session_attrs=read-write (or primary) to choose it",
        ),
    }
}

/// The verdict on `pg_notification_queue_usage()`.
fn queue_status(usage: f64) -> Status {
    if usage >= QUEUE_PROBLEM {
        Status::Problem
    } else if usage >= QUEUE_WARN {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// How full the cluster's notification queue is.
fn queue(client: &mut Client) -> Check {
    let usage = client
        .query_typed("SELECT pg_catalog.pg_notification_queue_usage()", &[])
        .map(|rows| rows.first().map_or(0.0, |r| r.get::<_, f64>(0)));
    let usage = match usage {
        Ok(usage) => usage,
        Err(e) => {
            return Check::new(
                "queue",
                Status::Warning,
                format!(
                    "could not read the queue's usage: {}",
                    describe_pg_error(&e)
                ),
            );
        }
    };
    let status = queue_status(usage);
    let detail = format!(
        "the notification queue is {:.4}% full (pg_notification_queue_usage() = {usage})",
        usage * 100.0
    );
    let check = Check::new("queue", status, detail).data(json!({
        "usage": usage,
        "warn_at": QUEUE_WARN,
        "problem_at": QUEUE_PROBLEM,
    }));
    match status {
        Status::Ok => check,
        _ => check.fix(
            "End the sessions idle in a transaction below (a listener in a transaction reads \
             nothing, and the queue cannot be emptied past it); when it is full, every commit \
             that notifies fails",
        ),
    }
}

/// Sessions idle in a transaction: a listener among them receives nothing until it ends it,
/// and the queue cannot be emptied past what it has not read.
fn idle_in_transaction(client: &mut Client) -> Check {
    let sql = "SELECT a.pid, a.application_name, a.usename::pg_catalog.text, \
                      a.datname::pg_catalog.text, \
                      EXTRACT(epoch FROM pg_catalog.now() - a.xact_start)::float8, \
                      a.state, \
                      pg_catalog.current_setting('idle_in_transaction_session_timeout') \
                 FROM pg_catalog.pg_stat_activity a \
                WHERE a.state LIKE 'idle in transaction%' \
                  AND a.pid <> pg_catalog.pg_backend_pid() \
                ORDER BY a.xact_start";
    let rows = match client.query_typed(sql, &[]) {
        Ok(rows) => rows,
        Err(e) => {
            return Check::new(
                "idle_in_transaction",
                Status::Warning,
                format!("could not read pg_stat_activity: {}", describe_pg_error(&e)),
            );
        }
    };
    // Whether this role sees every session's state (else other roles' sessions show none):
    // asked apart from the sessions, so that it is known when none is found too.
    let all_visible = client
        .query_typed(
            "SELECT pg_catalog.pg_has_role('pg_read_all_stats', 'MEMBER')",
            &[],
        )
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get::<_, bool>(0)));
    let mut notes = Vec::new();
    let mut data = Vec::new();
    for row in &rows {
        let pid: i32 = row.get(0);
        let app: Option<String> = row.get(1);
        let user: Option<String> = row.get(2);
        let db: Option<String> = row.get(3);
        let age: Option<f64> = row.get(4);
        let state: Option<String> = row.get(5);
        notes.push(format!(
            "pid {pid}, application \"{}\", user \"{}\", database \"{}\", in its transaction for \
             {:.0} s ({})",
            escape_controls(app.as_deref().unwrap_or("")),
            escape_controls(user.as_deref().unwrap_or("")),
            escape_controls(db.as_deref().unwrap_or("")),
            age.unwrap_or(0.0),
            escape_controls(state.as_deref().unwrap_or(""))
        ));
        data.push(json!({
            "pid": pid, "application_name": app, "user": user, "database": db,
            "transaction_age_seconds": age, "state": state,
        }));
    }
    let visibility = "sessions of other roles show here only for a superuser or a member of \
                      pg_read_all_stats";
    if rows.is_empty() {
        let detail = match all_visible {
            Some(false) => {
                "no session of this role is idle in a transaction; those of other \
                            roles cannot be seen by it"
            }
            _ => "no session is idle in a transaction",
        };
        return Check::new("idle_in_transaction", Status::Ok, detail)
            .note(visibility)
            .data(json!([]));
    }
    let timeout = rows
        .first()
        .map(|r| r.get::<_, String>(6))
        .unwrap_or_default();
    let mut check = Check::new(
        "idle_in_transaction",
        Status::Warning,
        format!(
            "{} idle in a transaction: one that is a listener receives nothing until its \
             transaction ends, and the notification queue cannot be emptied past what it has \
             not read, so it fills until every commit that notifies fails",
            match rows.len() {
                1 => "1 session".to_owned(),
                n => format!("{n} sessions"),
            }
        ),
    )
    .fix(format!(
        "End them (COMMIT or ROLLBACK in the application, or pg_terminate_backend(pid)), and \
         set idle_in_transaction_session_timeout (now {}) so the server ends such sessions",
        escape_controls(&timeout)
    ))
    .data(Value::Array(data));
    check.notes = notes;
    match all_visible {
        Some(false) => check.note(visibility),
        _ => check,
    }
}

/// The settings that cut an idle listener: `idle_session_timeout` (PostgreSQL 14 and later),
/// and the TCP liveness of the session.
fn idle_timeouts(client: &mut Client, target: &pg::Target, conn: &ConnSettings) -> Check {
    let rows = client.query_typed(
        "SELECT s.name::pg_catalog.text, s.setting FROM pg_catalog.pg_settings s \
          WHERE s.name IN ('idle_session_timeout', 'tcp_keepalives_idle', \
                           'tcp_keepalives_interval', 'tcp_keepalives_count', 'tcp_user_timeout')",
        &[],
    );
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            return Check::new(
                "idle_timeouts",
                Status::Warning,
                format!(
                    "could not read the server's settings: {}",
                    describe_pg_error(&e)
                ),
            );
        }
    };
    let setting = |name: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == name)
            .and_then(|r| r.get::<_, Option<String>>(1))
    };
    let idle_ms: Option<u64> = setting("idle_session_timeout").and_then(|v| v.parse().ok());
    let mut data = serde_json::Map::new();
    for name in [
        "idle_session_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "tcp_user_timeout",
    ] {
        data.insert(
            name.into(),
            setting(name).map_or(Value::Null, Value::String),
        );
    }
    let tcp_note = match target.is_socket() {
        true => "a unix socket: TCP keepalives do not apply".to_owned(),
        false => format!(
            "pgnotify's own TCP keepalives on this connection: {}, tcp_user_timeout {}; the \
             server's: idle {} s, interval {} s, count {} (0: the system's default)",
            match conn.get("keepalives") {
                Some("0") => "off (keepalives=0)".to_owned(),
                _ => format!(
                    "idle {} s",
                    conn.get("keepalives_idle")
                        .unwrap_or(&crate::keepalive::IDLE.as_secs().to_string())
                ),
            },
            conn.get("tcp_user_timeout").map_or_else(
                || format!("{} ms", crate::keepalive::USER_TIMEOUT.as_millis()),
                |t| format!("{t} ms")
            ),
            setting("tcp_keepalives_idle").unwrap_or_default(),
            setting("tcp_keepalives_interval").unwrap_or_default(),
            setting("tcp_keepalives_count").unwrap_or_default(),
        ),
    };
    let check = match idle_ms {
        None => Check::new(
            "idle_timeouts",
            Status::Ok,
            "idle_session_timeout does not exist on this server (before PostgreSQL 14)",
        ),
        Some(0) => Check::new(
            "idle_timeouts",
            Status::Ok,
            "idle_session_timeout is off: the server does not cut an idle session",
        ),
        Some(ms) => timeout_verdict(Duration::from_millis(ms)),
    };
    check.note(tcp_note).data(Value::Object(data))
}

/// `idle_session_timeout` set: a listener that sends nothing for that long is cut.
fn timeout_verdict(timeout: Duration) -> Check {
    let secs = timeout.as_secs_f64();
    let keeps = timeout > HEARTBEAT;
    let pgnotify = match keeps {
        true => format!(
            "pgnotify's heartbeat (a query every --heartbeat, {} s by default) keeps its own \
             listeners inside it, unless --heartbeat is 0 or longer",
            HEARTBEAT.as_secs()
        ),
        false => format!(
            "that is not longer than pgnotify's default --heartbeat ({} s), so even pgnotify's \
             listeners are cut, reconnect and lose what is sent in between",
            HEARTBEAT.as_secs()
        ),
    };
    Check::new(
        "idle_timeouts",
        Status::Warning,
        format!(
            "idle_session_timeout is {secs} s: the server ends a session that sends nothing for \
             that long, which is what a listener does; {pgnotify}"
        ),
    )
    .fix(format!(
        "Turn it off for the listening role (ALTER ROLE name SET idle_session_timeout = 0), or \
         run pgnotify with a --heartbeat shorter than {secs} s"
    ))
}

/// One check per watched table, with its mode, built from `watch::list`.
///
/// Every problem found with a table becomes that table's status and fix: today the one thing
/// `watch::list` tells is `stale` (the table changed since the install, so running
/// `watch-table` again brings the watch up to date). Drift that `watch::list` learns to tell
/// per table (a dropped or renamed key column, a renamed table, a disabled trigger, each with
/// a description and a fix) slots in here: push a note per problem and take the worst status.
/// No watched table gives one `watched_tables` check; a catalog that cannot be read, a warning.
fn watched_tables(client: &mut Client) -> Vec<Check> {
    let watched = match watch::list(client, None) {
        Ok(watched) => watched,
        Err(e) => {
            return vec![Check::new(
                "watched_tables",
                Status::Warning,
                format!("could not list the watched tables: {e:#}"),
            )];
        }
    };
    if watched.is_empty() {
        return vec![Check::new(
            "watched_tables",
            Status::Ok,
            "no table of this database is watched (watch-table)",
        )];
    }
    watched
        .iter()
        .map(|w| {
            let name = watch::display_name(&w.schema, &w.table);
            let mode = w.marker.mode();
            let data = serde_json::to_value(w).unwrap_or(Value::Null);
            let check = Check::new(
                "watched_table",
                Status::Ok,
                format!(
                    "{} is watched: {}",
                    escape_controls(&name),
                    escape_controls(&mode)
                ),
            )
            .subject(&name)
            .data(data);
            if w.problems.is_empty() {
                return check;
            }
            // Each way the table drifted from its trigger (`watch::drift`), one note each; the
            // fixes, most often the same reinstall command, once each.
            let mut fixes: Vec<&str> = Vec::new();
            for drift in &w.problems {
                if !fixes.contains(&drift.fix.as_str()) {
                    fixes.push(&drift.fix);
                }
            }
            let check = Check {
                status: Status::Problem,
                detail: format!(
                    "{} is watched: {}, but its trigger no longer matches the table",
                    escape_controls(&name),
                    escape_controls(&mode)
                ),
                ..check
            };
            w.problems
                .iter()
                .fold(check, |check, drift| check.note(&drift.problem))
                .fix(upper_first(&fixes.join("; ")))
        })
        .collect()
}

/// The sentence with its first letter in capitals (a fix from `watch::drift` begins "run").
fn upper_first(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_thresholds() {
        assert_eq!(queue_status(0.0), Status::Ok);
        assert_eq!(queue_status(0.4999), Status::Ok);
        assert_eq!(queue_status(0.5), Status::Warning);
        assert_eq!(queue_status(0.8999), Status::Warning);
        assert_eq!(queue_status(0.9), Status::Problem);
        assert_eq!(queue_status(1.0), Status::Problem);
    }

    #[test]
    fn an_idle_session_timeout_shorter_than_the_heartbeat_is_said_to_cut_pgnotify_too() {
        let short = timeout_verdict(Duration::from_secs(5));
        assert!(short.detail.contains("even pgnotify"), "{}", short.detail);
        let long = timeout_verdict(Duration::from_secs(60));
        assert!(long.detail.contains("keeps its own"), "{}", long.detail);
        assert_eq!(long.status, Status::Warning);
    }
}
