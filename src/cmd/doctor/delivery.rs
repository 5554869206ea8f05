//! `doctor`'s delivery checks: whether a notification comes back through this connection (and
//! whether a transaction pooler is in between), and for each CHANNEL, who is seen listening and
//! a test notification.

use super::report::{Check, Status};
use crate::pg::{self, ConnSettings, describe_pg_error, quote_ident};
use crate::sanitize::escape_controls;
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use serde_json::{Value, json};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a notification may take to come back before it counts as lost.
pub(super) const ROUND_TRIP: Duration = Duration::from_secs(3);
/// How long the second connection of the round trip holds its transaction at most.
const HOLD: Duration = Duration::from_secs(2);
/// A random name for a private channel or a session setting.
fn token() -> String {
    let mut bytes = [0u8; 8];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `pg_notify` in a transaction that waits at most [`pg::NOTIFY_LOCK_WAIT`] for the lock every
/// commit with notifications takes (held by a commit that waits for a synchronous standby, say),
/// and commits without waiting for a standby itself: doctor must say so, not hang on it. The
/// notification comes first, so that `listeners` never takes this for a pgnotify heartbeat.
fn notify_bounded(
    client: &mut Client,
    channel: &str,
    payload: &str,
) -> Result<(), postgres::Error> {
    let wait = pg::NOTIFY_LOCK_WAIT.as_millis().to_string();
    client.query_typed(
        "SELECT pg_catalog.pg_notify($1, $2), \
                pg_catalog.set_config('lock_timeout', $3, true), \
                pg_catalog.set_config('synchronous_commit', 'local', true)",
        &[
            (&channel, Type::TEXT),
            (&payload, Type::TEXT),
            (&wait, Type::TEXT),
        ],
    )?;
    Ok(())
}

/// Why a test notification could not be sent, and its fix: the notification lock held by
/// another transaction (its pid, when this role can see it), or anything else.
fn not_sent(client: &mut Client, e: &postgres::Error) -> (String, &'static str) {
    if !pg::waited_for_lock(e) {
        return (
            format!(
                "the test notification could not be sent: {}",
                describe_pg_error(e)
            ),
            "Run doctor as a role that may LISTEN and NOTIFY here (any role that can connect may)",
        );
    }
    // The lock is an AccessExclusiveLock on database object 0 (PreCommit_Notify).
    let holders: Vec<i32> = client
        .query_typed(
            "SELECT l.pid FROM pg_catalog.pg_locks l \
              WHERE l.locktype = 'object' AND l.granted \
                AND l.classid = 'pg_catalog.pg_database'::pg_catalog.regclass \
                AND l.objid = 0 AND l.mode = 'AccessExclusiveLock' \
              ORDER BY l.pid",
            &[],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    let by = match holders.as_slice() {
        [] => String::new(),
        pids => format!(
            " (held by pid {})",
            pids.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    (
        format!(
            "the test notification waited {} s for the lock that every commit with \
             notifications takes, and another transaction holds it{by}: a commit that waits \
             for a synchronous standby, or one sending very many notifications; until it ends, \
             no notification is committed and nothing arrives",
            pg::NOTIFY_LOCK_WAIT.as_secs()
        ),
        "Find that session (pg_stat_activity: wait_event SyncRep is a commit waiting for a \
         standby) and bring its standby back, or change synchronous_standby_names, or end it \
         with pg_cancel_backend(pid)",
    )
}

/// What a session's statement saw: its backend, and the probe setting.
fn probe(client: &mut Client) -> Result<(i32, Option<String>), postgres::Error> {
    let rows = client.query_typed(
        "SELECT pg_catalog.pg_backend_pid(), \
                pg_catalog.current_setting('pgnotify.doctor_probe', true)",
        &[],
    )?;
    Ok(rows
        .first()
        .map_or((0, None), |row| (row.get(0), row.get(1))))
}

/// Whether a notification sent on a private channel comes back through this connection.
///
/// A transaction-pooling proxy (PgBouncer's `pool_mode = transaction`) hands each transaction
/// whichever server connection is free, so a LISTEN stays on a server connection that this
/// session no longer has. With one client the proxy may hand the same one back every time, and
/// a plain round trip would pass: so a second connection, through the same settings, holds a
/// transaction open while this one asks again. Through such a proxy the second connection
/// takes the server connection that ran the LISTEN, and this session's next statements land
/// on another backend: `pg_backend_pid()` changes and a session setting (`set_config(...,
/// false)`) is gone. Without one, the second connection is a session of its own and nothing
/// changes.
pub(super) fn round_trip(client: &mut Client, target: &pg::Target, conn: &ConnSettings) -> Check {
    let channel = format!("pgnotify.doctor.{}", token());
    let mark = token();
    let outcome = (|| -> Result<Check, postgres::Error> {
        client.query_typed(
            "SELECT pg_catalog.set_config('pgnotify.doctor_probe', $1, false)",
            &[(&mark, Type::TEXT)],
        )?;
        let (before, _) = probe(client)?;
        client.batch_execute(&format!("LISTEN {}", quote_ident(&channel)))?;
        // The second session holds a transaction while this one asks again; in a thread, for
        // at most HOLD: with one server connection in the pool (default_pool_size = 1) this
        // session's next statement waits for the very connection the second one holds.
        let second = pg::connect(&conn.only(target).without_prompt())
            .ok()
            .map(|c| c.client);
        let (release, released) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel::<Option<i32>>();
        let (ended_tx, ended) = mpsc::channel::<()>();
        if let Some(mut second) = second {
            std::thread::spawn(move || {
                let pid = second
                    .batch_execute("BEGIN")
                    .and_then(|()| second.query_typed("SELECT pg_catalog.pg_backend_pid()", &[]))
                    .ok()
                    .and_then(|rows| rows.first().map(|row| row.get::<_, i32>(0)));
                let _ = held_tx.send(pid);
                let _ = released.recv_timeout(HOLD);
                let _ = second.batch_execute("ROLLBACK");
                drop(second);
                let _ = ended_tx.send(());
            });
        }
        let second_pid = held_rx.recv_timeout(ROUND_TRIP).ok().flatten();
        let held = second_pid.is_some();
        let probed = probe(client);
        let _ = release.send(());
        // Its transaction ended and it is gone before the next checks look at the sessions
        // (else it is one idle in a transaction); bounded, should it wait for a pooler.
        let _ = ended.recv_timeout(ROUND_TRIP);
        let (after, setting) = probed?;
        let sent = Instant::now();
        notify_bounded(client, &channel, &mark)?;
        let came_back = wait_for(client, &[(channel.clone(), mark.clone())], ROUND_TRIP);
        let elapsed = sent.elapsed();
        let _ = client.batch_execute(&format!("UNLISTEN {}", quote_ident(&channel)));
        Ok(judge(Probe {
            before,
            after,
            setting_kept: setting.as_deref() == Some(mark.as_str()),
            came_back: came_back.first().copied().unwrap_or(false),
            elapsed,
            second_held: held,
            second_pid,
        }))
    })();
    outcome.unwrap_or_else(|e| {
        let (detail, fix) = not_sent(client, &e);
        Check::new("notify_round_trip", Status::Problem, detail).fix(fix)
    })
}

/// What [`round_trip`] saw.
#[derive(Debug)]
struct Probe {
    before: i32,
    after: i32,
    setting_kept: bool,
    came_back: bool,
    elapsed: Duration,
    second_held: bool,
    /// The backend of the second connection's transaction.
    second_pid: Option<i32>,
}

const PRIMARY_FIX: &str = "Run doctor where NOTIFY can run: against the primary";

const POOLER_FIX: &str = "Listen through session pooling (PgBouncer pool_mode = session, e.g. a \
                          database entry of its own for listeners) or connect listeners to \
                          PostgreSQL directly; senders may stay on transaction pooling";

/// The verdict on a round trip.
fn judge(p: Probe) -> Check {
    // A second connection's transaction on this session's own backend: only a pooler hands
    // out a server connection that another client's session lives on (with one server
    // connection in its pool, the only way it shows: this session gets it back after).
    let shared = p.second_pid == Some(p.before);
    let pooled = p.before != p.after || !p.setting_kept || shared;
    let data = json!({
        "pooled": pooled,
        "came_back": p.came_back,
        "elapsed_ms": p.elapsed.as_millis() as u64,
        "backend_pid_before": p.before,
        "backend_pid_after": p.after,
        "session_setting_kept": p.setting_kept,
        "second_connection_held_a_transaction": p.second_held,
        "second_connection_backend_pid": p.second_pid,
    });
    let check = if shared && p.before == p.after && p.setting_kept {
        Check::new(
            "notify_round_trip",
            Status::Problem,
            format!(
                "a second connection's transaction ran on this session's own server backend \
                 (pid {}): a transaction-pooling proxy such as PgBouncer in pool_mode = \
                 transaction is in between, handing each transaction whichever server \
                 connection is free, so a LISTEN stays behind on a server connection this \
                 session does not keep, and notifications {}",
                p.before,
                match p.came_back {
                    true => "reach it only by luck",
                    false => "did not come back",
                }
            ),
        )
        .fix(POOLER_FIX)
    } else if pooled {
        Check::new(
            "notify_round_trip",
            Status::Problem,
            format!(
                "this session's statements ran on different server backends (pid {} then {}{}): \
                 a transaction-pooling proxy such as PgBouncer in pool_mode = transaction is in \
                 between, and a LISTEN stays behind on a server connection this session no \
                 longer has, so notifications {}",
                p.before,
                p.after,
                match p.setting_kept {
                    true => "",
                    false => ", and a session setting was lost",
                },
                match p.came_back {
                    true => "reach it only by luck",
                    false => "did not come back",
                }
            ),
        )
        .fix(POOLER_FIX)
    } else if !p.came_back {
        Check::new(
            "notify_round_trip",
            Status::Problem,
            format!(
                "a notification sent on a private channel did not come back within {} s \
                 (likely a pooler in transaction mode, or a commit holding the notification \
                 lock)",
                ROUND_TRIP.as_secs()
            ),
        )
        .fix(POOLER_FIX)
    } else {
        Check::new(
            "notify_round_trip",
            Status::Ok,
            format!(
                "a notification on a private channel came back in {} ms; statements stayed on \
                 one backend (pid {})",
                p.elapsed.as_millis(),
                p.after
            ),
        )
    };
    match p.second_held {
        true => check.data(data),
        false => check
            .note(
                "a second connection could not hold a transaction, so a pooler that hands this \
                 session the same server connection each time could go unnoticed",
            )
            .data(data),
    }
}

/// Waits until each (channel, payload) came back to `client`, up to `within`; says which did.
fn wait_for(client: &mut Client, wanted: &[(String, String)], within: Duration) -> Vec<bool> {
    let mut seen = vec![false; wanted.len()];
    let deadline = Instant::now() + within;
    while seen.iter().any(|s| !s) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut notifications = client.notifications();
        let next = notifications.timeout_iter(left).next();
        match next {
            Ok(Some(n)) => {
                for (i, (channel, payload)) in wanted.iter().enumerate() {
                    if n.channel() == channel && n.payload() == payload {
                        seen[i] = true;
                    }
                }
            }
            Err(_) | Ok(None) => break,
        }
    }
    seen
}

/// The payload of the test notification sent on each CHANNEL (real listeners get it).
fn test_payload(pid: u32) -> String {
    json!({"pgnotify": "doctor", "at": jiff::Timestamp::now().to_string(), "pid": pid}).to_string()
}

/// For each CHANNEL: the sessions seen listening, and a test notification sent and received.
///
/// Through a transaction pooler (`pooled`, as the round trip found) a notification that came
/// back did so only because the pooler handed this session the same server connection again:
/// that is a warning, not an ok.
pub(super) fn channels(
    client: &mut Client,
    channels: &[String],
    standby: bool,
    pooled: bool,
) -> Vec<Check> {
    if channels.is_empty() {
        return Vec::new();
    }
    let payload = test_payload(std::process::id());
    let mut came_back = vec![false; channels.len()];
    let mut failure = None;
    if standby {
        failure = Some((
            "not sent: a hot standby cannot LISTEN or NOTIFY".to_owned(),
            PRIMARY_FIX,
        ));
    } else {
        let sent = (|| -> Result<(), postgres::Error> {
            for channel in channels {
                client.batch_execute(&format!("LISTEN {}", quote_ident(channel)))?;
            }
            for channel in channels {
                notify_bounded(client, channel, &payload)?;
            }
            Ok(())
        })();
        match sent {
            Ok(()) => {
                let wanted: Vec<_> = channels
                    .iter()
                    .map(|c| (c.clone(), payload.clone()))
                    .collect();
                came_back = wait_for(client, &wanted, ROUND_TRIP);
            }
            Err(e) if pg::waited_for_lock(&e) => failure = Some(not_sent(client, &e)),
            Err(e) => {
                failure = Some((format!("not sent: {}", describe_pg_error(&e)), PRIMARY_FIX));
            }
        }
        let _ = client.batch_execute("UNLISTEN *");
    }
    channels
        .iter()
        .zip(came_back)
        .map(|(channel, back)| {
            let check = channel_check(client, channel, &payload, back, failure.as_ref());
            match (pooled, check.status) {
                (true, Status::Ok) => Check {
                    status: Status::Warning,
                    ..check
                }
                .note(
                    "it came back only because the transaction pooler handed this session the \
                     same server connection again; a listener through it loses notifications",
                )
                .fix(POOLER_FIX),
                _ => check,
            }
        })
        .collect()
}

/// What PostgreSQL lets one see of a channel's listeners: it keeps no list of them, and
/// `pg_stat_activity` shows each session's last statement only.
fn channel_check(
    client: &mut Client,
    channel: &str,
    payload: &str,
    came_back: bool,
    failure: Option<&(String, &'static str)>,
) -> Check {
    let listeners = listeners(client, channel);
    let mut notes: Vec<String> = Vec::new();
    let data_listeners = match &listeners {
        Ok(found) => {
            for (pid, app, user, how) in found {
                notes.push(format!(
                    "pid {pid}, application \"{}\", user \"{}\": {how}",
                    escape_controls(app),
                    escape_controls(user)
                ));
            }
            if found.is_empty() {
                notes.push(
                    "no session is seen listening (see below for what cannot be seen)".into(),
                );
            }
            Value::Array(
                found
                    .iter()
                    .map(|(pid, app, user, how)| {
                        json!({"pid": pid, "application_name": app, "user": user, "seen_by": how})
                    })
                    .collect(),
            )
        }
        Err(why) => {
            notes.push(format!("could not read pg_stat_activity: {why}"));
            Value::Null
        }
    };
    notes.push(
        "PostgreSQL keeps no list of the listeners of a channel: a session is seen here only \
         while its last statement was a LISTEN naming it (or pgnotify's heartbeat, whose \
         channels are not shown), and sessions of other roles only for a superuser or a \
         member of pg_read_all_stats"
            .into(),
    );
    let shown = escape_controls(channel).into_owned();
    let (status, detail, fix) = match (failure, came_back) {
        (Some((why, fix)), _) => (Status::Problem, why.clone(), Some((*fix).to_owned())),
        (None, true) => (
            Status::Ok,
            format!("a test notification on \"{shown}\" came back to doctor's own LISTEN"),
            None,
        ),
        (None, false) => (
            Status::Problem,
            format!(
                "a test notification on \"{shown}\" did not come back within {} s",
                ROUND_TRIP.as_secs()
            ),
            Some(POOLER_FIX.to_owned()),
        ),
    };
    if failure.is_none() {
        notes.insert(
            0,
            format!("every listener of the channel received it too, with the payload {payload}"),
        );
    }
    let mut check = Check::new("channel", status, detail)
        .subject(channel)
        .data(json!({"came_back": came_back, "payload": payload, "listeners": data_listeners}));
    check.notes = notes;
    check.fix = fix;
    check
}

/// Sessions whose last statement was a LISTEN naming `channel`, or pgnotify's heartbeat.
///
/// A LISTEN names the channel when its identifier is the channel: quoted and exactly it, or
/// unquoted and it once folded to lower case, as PostgreSQL reads it (`listened`); a channel
/// that is only a piece of another's name (`o` in `LISTEN jobs`) is not it.
fn listeners(
    client: &mut Client,
    channel: &str,
) -> Result<Vec<(i32, String, String, &'static str)>, String> {
    let rows = client
        .query_typed(
            "SELECT a.pid, COALESCE(a.application_name, ''), \
                    COALESCE(a.usename::pg_catalog.text, ''), \
                    a.query ~* '\\mLISTEN\\M', a.query \
               FROM pg_catalog.pg_stat_activity a \
              WHERE a.pid <> pg_catalog.pg_backend_pid() \
                AND (  a.query ~* '\\mLISTEN\\M' \
                    OR (a.query LIKE '%set_config(''lock_timeout'', $3, true)%pg_notify($1, $2)%' \
                        AND a.application_name = 'pgnotify')) \
              ORDER BY a.pid",
            &[],
        )
        .map_err(|e| describe_pg_error(&e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let how = match r.get::<_, Option<bool>>(3) {
                Some(true) => {
                    let query: Option<String> = r.get(4);
                    if !listened(query.as_deref().unwrap_or(""))
                        .iter()
                        .any(|c| c == channel)
                    {
                        return None;
                    }
                    "its last statement was a LISTEN naming this channel"
                }
                _ => {
                    "a pgnotify session whose last statement was its heartbeat (it may listen here)"
                }
            };
            Some((r.get(0), r.get(1), r.get(2), how))
        })
        .collect())
}

/// The channels the LISTEN statements of `query` name (one statement or several, `;` between
/// them), as PostgreSQL reads their identifiers: `"..."` exactly (`""` a quote), else folded
/// to lower case (ASCII letters only, as for a UTF-8 database).
fn listened(query: &str) -> Vec<String> {
    let chars: Vec<char> = query.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < chars.len() {
        skip_space(&mut i);
        let word: String = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        if word.eq_ignore_ascii_case("listen") {
            let mut j = i + word.len();
            let spaced = j < chars.len() && (chars[j].is_whitespace() || chars[j] == '"');
            skip_space(&mut j);
            if spaced && j < chars.len() {
                if chars[j] == '"' {
                    let mut name = String::new();
                    j += 1;
                    while j < chars.len() {
                        match (chars[j], chars.get(j + 1)) {
                            ('"', Some('"')) => {
                                name.push('"');
                                j += 2;
                            }
                            ('"', _) => {
                                j += 1;
                                found.push(std::mem::take(&mut name));
                                break;
                            }
                            (c, _) => {
                                name.push(c);
                                j += 1;
                            }
                        }
                    }
                } else {
                    let name: String = chars[j..]
                        .iter()
                        .take_while(|c| c.is_alphanumeric() || **c == '_' || **c == '$')
                        .collect();
                    if !name.is_empty() {
                        j += name.chars().count();
                        found.push(name.to_ascii_lowercase());
                    }
                }
            }
            i = j;
        }
        // On to the next statement: past the next `;` outside quotes.
        let mut quote = None;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match (quote, c) {
                (None, ';') => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(before: i32, after: i32, kept: bool, back: bool) -> Probe {
        Probe {
            before,
            after,
            setting_kept: kept,
            came_back: back,
            elapsed: Duration::from_millis(3),
            second_held: true,
            second_pid: Some(20),
        }
    }

    #[test]
    fn a_listen_names_a_channel_as_postgresql_reads_it() {
        assert_eq!(listened("LISTEN jobs"), ["jobs"]);
        assert_eq!(listened("listen Jobs;LISTEN \"Jobs\""), ["jobs", "Jobs"]);
        assert_eq!(
            listened("SELECT ';'; LISTEN \"a;\"\"b\" ; listen\t\"ünï\"  "),
            ["a;\"b", "ünï"]
        );
        assert_eq!(
            listened("LISTENER x; UNLISTEN y; SELECT 'LISTEN z'"),
            Vec::<String>::new()
        );
        assert!(!listened("LISTEN jobs").contains(&"o".to_owned()));
    }

    #[test]
    fn a_backend_that_changes_is_a_pooler_even_when_the_notification_came_back() {
        let check = judge(probe(10, 11, true, true));
        assert_eq!(check.status, Status::Problem);
        assert!(
            check.detail.contains("transaction-pooling"),
            "{}",
            check.detail
        );
        assert!(check.fix.as_deref().unwrap_or("").contains("session"));
        assert_eq!(judge(probe(10, 10, false, true)).status, Status::Problem);
        assert_eq!(judge(probe(10, 10, true, false)).status, Status::Problem);
        assert_eq!(judge(probe(10, 10, true, true)).status, Status::Ok);
        let shared = judge(Probe {
            second_pid: Some(10),
            ..probe(10, 10, true, true)
        });
        assert_eq!(shared.status, Status::Problem, "{}", shared.detail);
        assert!(
            shared.detail.contains("own server backend"),
            "{}",
            shared.detail
        );
    }
}
