//! Opens a connection for resolved settings: one server at a time, with the password from the
//! settings, the password file or a prompt, TCP keepalives on, and messages that name the server
//! the way psql does. The connection is a synchronous `postgres::Client`, or the source's
//! [`Listener`](super::Listener): both are opened the same way ([`Open`]).

use super::settings::DEFAULT_SOCKET_DIR;
use super::tls::{self, SslMode, Tls, Verify};
use super::{ConnSettings, PasswordPrompt, Target, describe_pg_error, pgpass};
use crate::exit::{ConnectionError, Rejected};
use crate::keepalive;
use crate::msg;
use anyhow::Result;
use postgres::config::{ChannelBinding, TargetSessionAttrs};
use postgres::error::DbError;
use postgres::{Client, SimpleQueryMessage};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// An open connection and the server it reached.
pub(crate) struct Connection<C = Client> {
    pub(crate) client: C,
    pub(crate) target: Target,
    /// Where `target` is in the settings' list (a host may be listed twice).
    pub(crate) index: usize,
    /// Its TLS, when it uses TLS (for `doctor`).
    pub(crate) tls: Option<TlsUsed>,
    /// Where the password it was opened with came from (for `doctor`; never the password).
    pub(crate) password: PasswordUsed,
}

/// The TLS of an open connection.
#[derive(Clone, Debug)]
pub(crate) struct TlsUsed {
    /// psql's "SSL connection (protocol: ..., cipher: ...)".
    pub(crate) description: String,
    /// How much of the server's certificate was checked.
    pub(crate) verified: Verify,
}

/// Where the password a connection was opened with came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PasswordUsed {
    /// None was sent (the server asked for none, or none was found).
    None,
    /// The settings' `password` (`PGPASSWORD`, the conninfo, the service file).
    Given,
    /// The password file.
    Passfile,
    /// Typed at the prompt (`-W`, or when the server asked).
    Prompt,
}

/// A kind of connection [`connect_as`] opens.
pub(crate) trait Open: Sized + Send + 'static {
    /// Whether this connection is for LISTEN: then a hot standby, where LISTEN cannot run,
    /// is passed over like a server that does not match `target_session_attrs`.
    const LISTENS: bool;

    /// Opens one; the outer error says the client could not even be set up.
    fn open(
        config: tokio_postgres::Config,
        tls: Tls,
    ) -> Result<Result<Self, postgres::Error>, String>;

    /// What the session is, for `target_session_attrs`.
    fn session(&mut self) -> Result<Session, String>;

    /// Readies a new session for its work (the listener's encoding on a SQL_ASCII database).
    fn prepare(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// What `target_session_attrs` asks of a session.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Session {
    /// The server is a hot standby (in recovery).
    pub(crate) hot_standby: bool,
    /// The session is read-only by default (`default_transaction_read_only`, or a standby).
    pub(crate) read_only: bool,
}

/// The query that tells a [`Session`] on a server that does not report it at start-up
/// (before PostgreSQL 14): two booleans, `t` or `f`.
pub(super) const SESSION_QUERY: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     pg_catalog.current_setting('transaction_read_only')::pg_catalog.bool";

/// Reads [`SESSION_QUERY`]'s answer.
pub(super) fn session_of(answer: &[SimpleQueryMessage]) -> Session {
    let row = answer.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let on = |i: usize| row.and_then(|r| r.get(i)) == Some("t");
    Session {
        hot_standby: on(0),
        read_only: on(0) || on(1),
    }
}

impl Open for Client {
    const LISTENS: bool = false;

    fn open(
        config: tokio_postgres::Config,
        tls: Tls,
    ) -> Result<Result<Client, postgres::Error>, String> {
        let mut config = postgres::Config::from(config);
        config.notice_callback(|notice| warn_notice(&notice));
        Ok(config.connect(tls))
    }

    fn session(&mut self) -> Result<Session, String> {
        self.simple_query(SESSION_QUERY)
            .map(|answer| session_of(&answer))
            .map_err(|e| describe_pg_error(&e))
    }
}

/// libpq's `target_session_attrs`: what a session must be to be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    Any,
    ReadWrite,
    ReadOnly,
    Primary,
    Standby,
}

/// The passes over the host list: `prefer-standby` looks for a standby first, then takes any.
fn passes(settings: &ConnSettings) -> Vec<Wanted> {
    match settings.get("target_session_attrs") {
        Some("read-write") => vec![Wanted::ReadWrite],
        Some("read-only") => vec![Wanted::ReadOnly],
        Some("primary") => vec![Wanted::Primary],
        Some("standby") => vec![Wanted::Standby],
        Some("prefer-standby") => vec![Wanted::Standby, Wanted::Any],
        _ => vec![Wanted::Any],
    }
}

/// Why a session is passed over (libpq's words), or `None` when it is kept.
fn mismatch(wanted: Wanted, session: Session, listens: bool) -> Option<String> {
    if listens && session.hot_standby && wanted != Wanted::Standby {
        return Some(
            "server is in hot standby mode, where LISTEN cannot run; connect to the primary \
             (with a list of hosts, target_session_attrs=primary chooses it)"
                .into(),
        );
    }
    let why = match wanted {
        Wanted::Any => return None,
        Wanted::ReadWrite if session.read_only => "session is read-only",
        Wanted::ReadOnly if !session.read_only => "session is not read-only",
        Wanted::Primary if session.hot_standby => "server is in hot standby mode",
        Wanted::Standby if !session.hot_standby => "server is not in hot standby mode",
        Wanted::Standby if listens => {
            "server is in hot standby mode, where LISTEN cannot run; \
             target_session_attrs=standby cannot be used to listen"
        }
        _ => return None,
    };
    Some(why.into())
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

/// Connects to the first target that accepts and matches `target_session_attrs`; the error
/// names every target that failed.
pub(crate) fn connect_as<C: Open>(settings: &ConnSettings) -> Result<Connection<C>> {
    // A password typed earlier in this run comes first: reconnects never ask again. One typed
    // for -W is for every host (as psql's); one typed when a server asked is for that server.
    let given = match typed_password(None) {
        Some(typed) => Some((typed, PasswordUsed::Prompt)),
        None if settings.prompt == PasswordPrompt::Always => Some((
            prompt_password(settings.user(), None)?,
            PasswordUsed::Prompt,
        )),
        // An empty password is none, as in libpq: the password file and the prompt still apply.
        None => settings
            .get("password")
            .filter(|p| !p.is_empty())
            .map(|p| (Zeroizing::new(p.to_owned()), PasswordUsed::Given)),
    };
    let mut failures = Vec::new();
    // Whether every target refused for a reason that retrying cannot fix.
    let mut rejected = true;
    'passes: for wanted in passes(settings) {
        for (index, target) in settings.targets().iter().enumerate() {
            if settings.deadline.is_some_and(|d| Instant::now() >= d) {
                rejected = false;
                failures.push(format!(
                    "connection to {} failed: timeout expired (--timeout)",
                    target.describe()
                ));
                break 'passes;
            }
            let mut tried_prompt = false;
            let mut typed = typed_password(Some(target));
            loop {
                let pw = typed
                    .clone()
                    .map(|t| (t, PasswordUsed::Prompt))
                    .or_else(|| given.clone())
                    .or_else(|| {
                        passfile_password(settings, target)
                            .map(|p| (Zeroizing::new(p), PasswordUsed::Passfile))
                    });
                let used = pw.as_ref().map_or(PasswordUsed::None, |(_, used)| *used);
                let pw = pw.map(|(pw, _)| pw);
                match open(settings, target, pw.as_ref().map(|p| p.as_str()), wanted) {
                    Ok((client, tls_used)) => {
                        let tls = tls_used
                            .as_ref()
                            .map(|t| format!(", {}", t.description))
                            .unwrap_or_default();
                        msg::info(&format!(
                            "connected to {} as user \"{}\", database \"{}\"{tls}",
                            target.describe(),
                            settings.user(),
                            settings.dbname()
                        ));
                        return Ok(Connection {
                            client,
                            target: target.clone(),
                            index,
                            tls: tls_used,
                            password: used,
                        });
                    }
                    Err(e)
                        if e.wants_password()
                            && pw.is_none()
                            && may_prompt(settings, tried_prompt) =>
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
const PERMANENT_28000: [&str; 5] = [
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "does not exist",
    "is not permitted to log in",
    "requires a valid client certificate",
];

/// Whether a failed attempt can never succeed as it is: a permanent SQLSTATE, or a server
/// that wants a password pgnotify does not have and may not ask for.
fn is_permanent(failure: &Failure) -> bool {
    let e = match failure {
        Failure::Pg(e) => e,
        Failure::Config(_) | Failure::Untrusted(_) => return true,
        Failure::Twice(first, then, _) => return is_permanent(first) && is_permanent(then),
        Failure::TimedOut(..) | Failure::Setup(_) | Failure::Mismatch(_) | Failure::Closed(_) => {
            return false;
        }
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

/// One server, with libpq's `sslmode`: `allow` tries without TLS first and with it when the
/// server refuses; `prefer` the other way round, when TLS failed or the server refused over
/// it. A unix socket never uses TLS. Returns the connection and its TLS.
fn open<C: Open>(
    settings: &ConnSettings,
    target: &Target,
    password: Option<&str>,
    wanted: Wanted,
) -> Result<(C, Option<TlsUsed>), Failure> {
    let try_mode = |mode| attempt::<C>(settings, target, password, wanted, mode);
    let mode = match target.is_socket() {
        true => SslMode::Disable,
        false => settings.tls.mode,
    };
    match mode {
        SslMode::Allow => match try_mode(SslMode::Disable) {
            Err((first, _)) if first.refused_by_server() => try_mode(SslMode::Require)
                .map_err(|(then, _)| Failure::Twice(first.into(), then.into(), "with SSL")),
            other => other.map_err(|(e, _)| e),
        },
        SslMode::Prefer => match try_mode(SslMode::Prefer) {
            Err((first, true)) => try_mode(SslMode::Disable)
                .map_err(|(then, _)| Failure::Twice(first.into(), then.into(), "without SSL")),
            other => other.map_err(|(e, _)| e),
        },
        mode => try_mode(mode).map_err(|(e, _)| e),
    }
}

/// One connection attempt in `mode`. The error says whether libpq's `prefer` would retry
/// without TLS: TLS could not be set up, the handshake failed, or the server refused over TLS.
fn attempt<C: Open>(
    settings: &ConnSettings,
    target: &Target,
    password: Option<&str>,
    wanted: Wanted,
    mode: SslMode,
) -> Result<(C, Option<TlsUsed>), (Failure, bool)> {
    let tls = match mode {
        SslMode::Disable => tls::plain(),
        mode => tls::connector(&settings.tls, mode, settings.get("sslpassword")),
    };
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(settings.user())
        .dbname(settings.dbname())
        .port(target.port)
        .ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        })
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
    // connect_timeout, or what is left of --timeout when that is sooner.
    let left = settings
        .deadline
        .map(|d| (d.saturating_duration_since(Instant::now()), "--timeout"));
    let timeout = match (connect_timeout(settings.get("connect_timeout")), left) {
        (Some(c), Some(left)) if left.0 < c => Some(left),
        (Some(c), _) => Some((c, "connect_timeout")),
        (None, left) => left,
    };
    if let Some((timeout, _)) = timeout {
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
    if settings.tls.direct && mode != SslMode::Disable {
        cfg.ssl_negotiation(postgres::config::SslNegotiation::Direct);
    }
    // Checked here, after connecting (`check_session`), for every value libpq knows.
    cfg.target_session_attrs(TargetSessionAttrs::Any);
    let outcome = std::sync::Arc::clone(&tls.outcome);
    let run = move || check_session(open_contained::<C>(cfg, tls), wanted);
    let result = match timeout {
        Some((timeout, by)) => connect_within(run, timeout, by, &target.describe()),
        None => run(),
    };
    let outcome = outcome.lock().unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(client) => {
            let tls = outcome.established.clone().map(|description| TlsUsed {
                description,
                verified: outcome.verified.unwrap_or(Verify::Nothing),
            });
            Ok((client, tls))
        }
        // libpq's connect_timeout is one deadline for the server, not one for each try.
        Err(e @ Failure::TimedOut(..)) => Err((e, false)),
        // As in libpq, TLS is set up once the server agrees to it, and `prefer` retries in
        // plain text when that fails (a key others may read, say).
        Err(Failure::Pg(_)) if outcome.setup.is_some() => Err((
            Failure::Config(outcome.setup.clone().unwrap_or_default()),
            true,
        )),
        Err(Failure::Pg(_)) if outcome.refused.is_some() => Err((
            Failure::Untrusted(outcome.refused.clone().unwrap_or_default()),
            true,
        )),
        // TLS 1.3 ends the client's handshake before the server has checked its certificate:
        // a refusal then comes as an alert, or only as a reset that swallowed the alert.
        Err(Failure::Pg(e))
            if outcome.used
                && e.as_db_error().is_none()
                && tls::tls_reason(&e).is_none()
                && (outcome.established.is_none() || outcome.client_cert.is_some()) =>
        {
            let when = match outcome.established {
                Some(_) => "right after",
                None => "during",
            };
            let cert = match &outcome.client_cert {
                Some(cert) => format!(
                    ": the server may have refused the client certificate \"{}\"",
                    cert.display()
                ),
                None => String::new(),
            };
            Err((
                Failure::Closed(format!(
                    "{} {when} the TLS handshake{cert}",
                    describe_pg_error(&e)
                )),
                outcome.established.is_none(),
            ))
        }
        Err(e) => {
            let handshake_failed = outcome.used && outcome.established.is_none();
            let refused_over_tls = outcome.established.is_some() && e.refused_by_server();
            Err((e, handshake_failed || refused_over_tls))
        }
    }
}

/// Keeps a session that matches `target_session_attrs` (and, to listen, is no standby).
fn check_session<C: Open>(opened: Result<C, Failure>, wanted: Wanted) -> Result<C, Failure> {
    let mut client = opened?;
    client.prepare().map_err(Failure::Mismatch)?;
    if wanted != Wanted::Any || C::LISTENS {
        let session = client.session().map_err(|why| {
            Failure::Mismatch(format!(
                "could not tell whether the server is a standby: {why}"
            ))
        })?;
        if let Some(why) = mismatch(wanted, session, C::LISTENS) {
            return Err(Failure::Mismatch(why));
        }
    }
    Ok(client)
}

/// `postgres::Config::connect` unwraps the creation of its runtime, so running out of file
/// descriptors panics inside the crate; that becomes an ordinary connection failure here.
fn open_contained<C: Open>(cfg: tokio_postgres::Config, tls: Tls) -> Result<C, Failure> {
    match crate::panic::contain(|| C::open(cfg, tls)) {
        Ok(Ok(result)) => result.map_err(Failure::Pg),
        Ok(Err(why)) | Err(why) => Err(Failure::Setup(why)),
    }
}

/// Why opening a connection failed.
enum Failure {
    Pg(postgres::Error),
    /// Not done in time: how long it had, and which setting said so.
    TimedOut(Duration, &'static str),
    /// The client could not even be set up (e.g. no file descriptors left).
    Setup(String),
    /// The TLS settings cannot be used: a root certificate file missing, a key others may read.
    Config(String),
    /// The server's certificate was refused (why, in words).
    Untrusted(String),
    /// The session does not match `target_session_attrs`, or is a standby and cannot LISTEN,
    /// or could not be readied ([`Open::prepare`]).
    Mismatch(String),
    /// The server closed the connection after the TLS handshake (why, in words).
    Closed(String),
    /// `prefer` or `allow` tried twice: the first failure, the second, and how it was retried.
    Twice(Box<Failure>, Box<Failure>, &'static str),
}

impl Failure {
    /// The server answered with an error during start-up (libpq's cue to retry for `allow`
    /// and `prefer`).
    fn refused_by_server(&self) -> bool {
        matches!(self, Failure::Pg(e) if e.as_db_error().is_some())
    }

    /// The server asked for a password that this attempt did not have.
    fn wants_password(&self) -> bool {
        match self {
            Failure::Pg(e) => wants_password(e),
            Failure::Twice(_, then, _) => then.wants_password(),
            _ => false,
        }
    }
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
    run: impl FnOnce() -> Result<C, Failure> + Send + 'static,
    timeout: Duration,
    by: &'static str,
    server: &str,
) -> Result<C, Failure> {
    let deadline = Instant::now() + timeout;
    if let Some(pending) = take_abandoned(server)
        && !ends_by(&pending, deadline)
    {
        abandon(server, pending);
        return Err(Failure::TimedOut(timeout, by));
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let _ = tx.send(run());
        });
    let Ok(thread) = spawned else {
        return Err(Failure::TimedOut(Duration::ZERO, by));
    };
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(result) => {
            // It has sent its result and only has to return: joined, it is gone before the
            // next attempt starts another (else, on a busy machine, two could overlap).
            let _ = thread.join();
            result
        }
        Err(_) => {
            abandon(server, thread);
            Err(Failure::TimedOut(timeout, by))
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
/// libpq reads it as an `int`, so at most `i32::MAX` seconds (68 years): a larger value would
/// overflow the deadline made of it (`Instant::now() + timeout` panics).
fn connect_timeout(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs.clamp(2, i32::MAX as u64)))
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
        Failure::TimedOut(_, "--timeout") => "timeout expired (--timeout)".to_owned(),
        Failure::TimedOut(t, by) => format!("timeout expired after {} s ({by})", t.as_secs()),
        Failure::Setup(why) => format!("could not set up a client: {why}"),
        Failure::Config(why)
        | Failure::Untrusted(why)
        | Failure::Mismatch(why)
        | Failure::Closed(why) => why.clone(),
        Failure::Twice(first, then, how) => format!(
            "{}; retried {how}: {}",
            describe_failure(first, prompt),
            describe_failure(then, prompt)
        ),
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
            PasswordPrompt::Unattended => {
                "or -W to type it first: pgnotify does not ask while it runs unattended, on a \
                 reconnect, for --fetch or under notify --timeout"
            }
            _ => "or run it at a terminal to be asked",
        };
        return format!(
            "the server asked for a password and none was given \
             (set PGPASSWORD, use a password file, {ask})"
        );
    }
    if let Some(db) = e.as_db_error()
        && db.message().contains("requires a valid client certificate")
    {
        return format!(
            "{} (give one with sslcert and sslkey, or as ~/.postgresql/postgresql.crt and \
             postgresql.key)",
            describe_pg_error(e)
        );
    }
    let cause = std::error::Error::source(e).map(|c| c.to_string());
    if cause.as_deref() == Some("server does not support TLS") {
        return "server does not support SSL, but SSL was required".into();
    }
    if let Some(reason) = tls::tls_reason(e) {
        let refused = reason.contains("alert")
            && ["certificate", "unknown ca"]
                .iter()
                .any(|w| reason.contains(w));
        return match refused {
            true => format!("the server refused the client certificate (SSL error: {reason})"),
            false => format!("SSL error: {reason}"),
        };
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
        // A crash found looking for overflows behind the parsers: u64::MAX seconds panicked
        // on the deadline (`-d "connect_timeout=18446744073709551615"`, status 1, internal error).
        let longest = connect_timeout(Some("18446744073709551615")).unwrap();
        assert_eq!(longest, Duration::from_secs(i32::MAX as u64));
        assert!(Instant::now().checked_add(longest).is_some());
    }
}
