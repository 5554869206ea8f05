//! Opens a connection for resolved settings: one server at a time, with the password from the
//! settings, the password file or a prompt, TCP keepalives on, and messages that name the server
//! the way psql does. The connection is a synchronous `postgres::Client`, or the source's
//! [`Listener`](super::Listener): both are opened the same way ([`Open`]).

use super::settings::DEFAULT_SOCKET_DIR;
use super::{ConnSettings, PasswordPrompt, Target, describe_pg_error, pgpass};
use crate::exit::{ConnectionError, Rejected};
use crate::keepalive;
use crate::msg;
use anyhow::Result;
use postgres::config::{ChannelBinding, SslMode, TargetSessionAttrs};
use postgres::error::DbError;
use postgres::{Client, NoTls};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// An open connection and the server it reached.
pub(crate) struct Connection<C = Client> {
    pub(crate) client: C,
    pub(crate) target: Target,
}

/// A kind of connection [`connect_as`] opens.
pub(crate) trait Open: Sized + Send + 'static {
    /// Opens one; the outer error says the client could not even be set up.
    fn open(config: tokio_postgres::Config) -> Result<Result<Self, postgres::Error>, String>;
}

impl Open for Client {
    fn open(config: tokio_postgres::Config) -> Result<Result<Client, postgres::Error>, String> {
        let mut config = postgres::Config::from(config);
        config.notice_callback(|notice| warn_notice(&notice));
        Ok(config.connect(NoTls))
    }
}

/// A server's notice (a WARNING, say) on stderr.
pub(super) fn warn_notice(notice: &DbError) {
    msg::warn(&format!(
        "server {}: {}",
        notice.severity().to_lowercase(),
        notice.message()
    ))
}

/// Connects a synchronous client to the first target that accepts.
pub(crate) fn connect(settings: &ConnSettings) -> Result<Connection> {
    connect_as(settings)
}

/// Connects to the first target that accepts; the error names every target that failed.
pub(crate) fn connect_as<C: Open>(settings: &ConnSettings) -> Result<Connection<C>> {
    // A password typed earlier in this run comes first: reconnects never ask again. One typed
    // for -W is for every host (as psql's); one typed when a server asked is for that server.
    let given = match typed_password(None) {
        Some(typed) => Some(typed),
        None if settings.prompt == PasswordPrompt::Always => {
            Some(prompt_password(settings.user(), None)?)
        }
        None => settings
            .get("password")
            .map(|p| Zeroizing::new(p.to_owned())),
    };
    let mut failures = Vec::new();
    // Whether every target refused for a reason that retrying cannot fix.
    let mut rejected = true;
    for target in settings.targets() {
        let mut tried_prompt = false;
        let mut typed = typed_password(Some(target));
        loop {
            let pw = typed
                .clone()
                .or_else(|| given.clone())
                .or_else(|| passfile_password(settings, target).map(Zeroizing::new));
            match open(settings, target, pw.as_ref().map(|p| p.as_str())) {
                Ok(client) => {
                    msg::info(&format!(
                        "connected to {} as user \"{}\", database \"{}\"",
                        target.describe(),
                        settings.user(),
                        settings.dbname()
                    ));
                    return Ok(Connection {
                        client,
                        target: target.clone(),
                    });
                }
                Err(Failure::Pg(e))
                    if wants_password(&e) && pw.is_none() && may_prompt(settings, tried_prompt) =>
                {
                    typed = Some(prompt_password(settings.user(), Some(target))?);
                    tried_prompt = true;
                }
                Err(e) => {
                    rejected &= is_permanent(&e);
                    failures.push(format!(
                        "connection to {} failed: {}",
                        target.describe(),
                        describe_failure(&e, settings.prompt)
                    ));
                    break;
                }
            }
        }
    }
    let message = failures.join("; ");
    match rejected && !failures.is_empty() {
        true => Err(Rejected(message).into()),
        false => Err(ConnectionError(message).into()),
    }
}

/// The SQLSTATEs of a refusal that the same attempt would meet again: retrying cannot help.
/// 28P01 wrong password, 3D000 no such database, 42501 no CONNECT privilege. Everything else
/// (refused, timed out, 57P03 starting up or shutting down, 53300 too many connections, 57P01
/// terminated, and 08P01, which PgBouncer sends for its own passing troubles) may pass.
const PERMANENT: [&str; 3] = ["28P01", "3D000", "42501"];

/// 28000 is permanent only for these: PostgreSQL also reports an LDAP, RADIUS, PAM or ident
/// server that did not answer as 28000, and that passes.
const PERMANENT_28000: [&str; 3] = [
    "no pg_hba.conf entry",
    "does not exist",
    "is not permitted to log in",
];

/// Whether a failed attempt can never succeed as it is: a permanent SQLSTATE, or a server
/// that wants a password pgnotify does not have and may not ask for.
fn is_permanent(failure: &Failure) -> bool {
    let Failure::Pg(e) = failure else {
        return false;
    };
    if wants_password(e) {
        return true;
    }
    match e.as_db_error() {
        Some(db) if db.code().code() == "28000" => {
            PERMANENT_28000.iter().any(|m| db.message().contains(m))
        }
        Some(db) => PERMANENT.contains(&db.code().code()),
        None => false,
    }
}

fn open<C: Open>(
    settings: &ConnSettings,
    target: &Target,
    password: Option<&str>,
) -> Result<C, Failure> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(settings.user())
        .dbname(settings.dbname())
        .port(target.port)
        .ssl_mode(SslMode::Disable)
        .keepalives(settings.get("keepalives") != Some("0"))
        .keepalives_idle(seconds(settings.get("keepalives_idle")).unwrap_or(keepalive::IDLE))
        .keepalives_interval(
            seconds(settings.get("keepalives_interval")).unwrap_or(keepalive::INTERVAL),
        )
        .keepalives_retries(
            settings
                .get("keepalives_count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(keepalive::PROBES),
        );
    if let Some(app) = settings.get("application_name") {
        cfg.application_name(app);
    }
    if target.is_socket() {
        cfg.host_path(&target.host);
    } else {
        cfg.host(&target.host);
    }
    if let Some(addr) = target.hostaddr {
        cfg.hostaddr(addr);
    }
    if let Some(pw) = password {
        cfg.password(pw);
    }
    if let Some(options) = settings.get("options") {
        cfg.options(options);
    }
    let timeout = connect_timeout(settings.get("connect_timeout"));
    if let Some(timeout) = timeout {
        cfg.connect_timeout(timeout);
    }
    match settings
        .get("tcp_user_timeout")
        .and_then(|t| t.trim().parse().ok())
    {
        Some(0) => {}
        Some(ms) => {
            cfg.tcp_user_timeout(Duration::from_millis(ms));
        }
        None => {
            cfg.tcp_user_timeout(keepalive::USER_TIMEOUT);
        }
    }
    cfg.channel_binding(match settings.get("channel_binding") {
        Some("disable") => ChannelBinding::Disable,
        Some("require") => ChannelBinding::Require,
        _ => ChannelBinding::Prefer,
    });
    cfg.target_session_attrs(match settings.get("target_session_attrs") {
        Some("read-write") => TargetSessionAttrs::ReadWrite,
        Some("read-only") => TargetSessionAttrs::ReadOnly,
        _ => TargetSessionAttrs::Any,
    });
    match timeout {
        Some(timeout) => connect_within(cfg, timeout, &target.describe()),
        None => open_contained(cfg),
    }
}

/// `postgres::Config::connect` unwraps the creation of its runtime, so running out of file
/// descriptors panics inside the crate; that becomes an ordinary connection failure here.
fn open_contained<C: Open>(cfg: tokio_postgres::Config) -> Result<C, Failure> {
    match crate::panic::contain(|| C::open(cfg)) {
        Ok(Ok(result)) => result.map_err(Failure::Pg),
        Ok(Err(why)) | Err(why) => Err(Failure::Setup(why)),
    }
}

/// Why opening a connection failed.
enum Failure {
    Pg(postgres::Error),
    TimedOut(Duration),
    /// The client could not even be set up (e.g. no file descriptors left).
    Setup(String),
}

/// libpq's `connect_timeout` bounds the whole start-up, but the `postgres` crate's only bounds
/// the TCP connect: a server that accepts and then never answers would hang us. So the attempt
/// runs on a thread of its own and is abandoned at the deadline: a late answer finds nobody to
/// take it and is closed at once.
///
/// The thread of an abandoned attempt is remembered with its server: the next attempt to that
/// server first waits for it to end, instead of starting another, so retrying (`--wait`,
/// reconnects) a server that never answers holds one thread and one socket, however many
/// attempts are made.
fn connect_within<C: Open>(
    cfg: tokio_postgres::Config,
    timeout: Duration,
    server: &str,
) -> Result<C, Failure> {
    let deadline = Instant::now() + timeout;
    if let Some(pending) = take_abandoned(server)
        && !ends_by(&pending, deadline)
    {
        abandon(server, pending);
        return Err(Failure::TimedOut(timeout));
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = tx.send(open_contained::<C>(cfg));
        });
    let Ok(thread) = spawned else {
        return Err(Failure::TimedOut(Duration::ZERO));
    };
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(result) => result,
        Err(_) => {
            abandon(server, thread);
            Err(Failure::TimedOut(timeout))
        }
    }
}

/// Whether an abandoned attempt's thread ends by `deadline` (polled: it has no other signal).
fn ends_by(thread: &JoinHandle<()>, deadline: Instant) -> bool {
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The threads of attempts given up at their deadline and still waiting for their server.
static ABANDONED: Mutex<Vec<(String, JoinHandle<()>)>> = Mutex::new(Vec::new());

fn take_abandoned(server: &str) -> Option<JoinHandle<()>> {
    let mut abandoned = ABANDONED.lock().unwrap_or_else(PoisonError::into_inner);
    let at = abandoned.iter().position(|(s, _)| s == server)?;
    Some(abandoned.swap_remove(at).1)
}

fn abandon(server: &str, thread: JoinHandle<()>) {
    let mut abandoned = ABANDONED.lock().unwrap_or_else(PoisonError::into_inner);
    abandoned.push((server.to_owned(), thread));
}

fn seconds(value: Option<&str>) -> Option<Duration> {
    value?.parse().ok().map(Duration::from_secs)
}

/// How long connecting may take by `connect_timeout`, as libpq reads it; `None`: no bound.
pub(crate) fn connect_timeout_of(settings: &ConnSettings) -> Option<Duration> {
    connect_timeout(settings.get("connect_timeout"))
}

/// libpq: `connect_timeout` in seconds, 0 or unset = wait forever, values below 2 mean 2.
fn connect_timeout(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs.max(2)))
}

fn passfile_password(settings: &ConnSettings, target: &Target) -> Option<String> {
    let path = settings.passfile.as_ref()?;
    let port = target.port.to_string();
    // libpq: `localhost` in the file matches no host, or the default socket directory; any
    // other socket directory must be written out as a path.
    let host = match target.defaulted || target.host == DEFAULT_SOCKET_DIR {
        true => "",
        false => target.host.as_str(),
    };
    let key = pgpass::Key {
        host,
        port: &port,
        dbname: settings.dbname(),
        user: settings.user(),
    };
    match pgpass::lookup(path, &key) {
        pgpass::Lookup::Found(pw) => Some(pw),
        pgpass::Lookup::NotFound => None,
        pgpass::Lookup::Ignored(warning) => {
            msg::warn(&warning);
            None
        }
    }
}

fn describe_failure(failure: &Failure, prompt: PasswordPrompt) -> String {
    match failure {
        Failure::Pg(e) => describe_connect_error(e, prompt),
        Failure::TimedOut(t) => {
            format!("timeout expired after {} s (connect_timeout)", t.as_secs())
        }
        Failure::Setup(why) => format!("could not set up a client: {why}"),
    }
}

/// The `postgres` crate's answer when the server asks for a password and it has none.
fn wants_password(e: &postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.to_string() == "password missing")
}

fn may_prompt(settings: &ConnSettings, tried: bool) -> bool {
    !tried && settings.prompt == PasswordPrompt::Auto && terminal_available()
}

fn terminal_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Passwords typed at the prompt, kept for the life of the process so that a reconnect
/// does not ask again (libpq's `PQreset` reuses the one given at start): only in memory,
/// never written anywhere, zeroed when it is dropped ([`forget_password`], at exit).
/// Each is for one server (the one that asked), or for every one (`-W`, the `None` key): a
/// password typed for one server is never sent to another.
static TYPED: Mutex<Vec<(Option<String>, Zeroizing<String>)>> = Mutex::new(Vec::new());

/// The password typed for `target` (`None`: the one typed for every server).
fn typed_password(target: Option<&Target>) -> Option<Zeroizing<String>> {
    let key = target.map(Target::describe);
    TYPED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, pw)| pw.clone())
}

/// `-W`: asks now, before anything else runs (before `notify --timeout` starts its clock).
pub(crate) fn ask_password_first(settings: &ConnSettings) -> Result<()> {
    if settings.prompt == PasswordPrompt::Always && typed_password(None).is_none() {
        prompt_password(settings.user(), None)?;
    }
    Ok(())
}

/// Zeroes and drops the typed passwords (the end of the run).
pub(crate) fn forget_password() {
    TYPED.lock().unwrap_or_else(PoisonError::into_inner).clear();
}

/// Asks on the terminal, without echo, as psql does, and keeps the answer for reconnects to
/// `target` (`None`: every server).
fn prompt_password(user: &str, target: Option<&Target>) -> Result<Zeroizing<String>> {
    let typed = rpassword::prompt_password(format!("Password for user {user}: "))
        .map(Zeroizing::new)
        .map_err(|e| {
            anyhow::Error::from(ConnectionError(format!(
                "could not read a password from the terminal: {e}"
            )))
        })?;
    let key = target.map(Target::describe);
    let mut all = TYPED.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|(k, _)| *k != key);
    all.push((key, typed.clone()));
    Ok(typed)
}

fn describe_connect_error(e: &postgres::Error, prompt: PasswordPrompt) -> String {
    if wants_password(e) {
        let ask = match prompt {
            PasswordPrompt::Never => "or leave out -w to be asked",
            _ => "or run it at a terminal to be asked",
        };
        return format!(
            "the server asked for a password and none was given \
             (set PGPASSWORD, use a password file, {ask})"
        );
    }
    describe_pg_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeout_follows_libpq() {
        assert_eq!(connect_timeout(None), None);
        assert_eq!(connect_timeout(Some("0")), None);
        assert_eq!(connect_timeout(Some("1")), Some(Duration::from_secs(2)));
        assert_eq!(connect_timeout(Some(" 10 ")), Some(Duration::from_secs(10)));
        assert_eq!(connect_timeout(Some("soon")), None);
    }
}
