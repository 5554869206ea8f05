//! Connection settings with libpq's sources, precedence and defaults.
//!
//! The `postgres` crate reads no PG* variables, no password file and no service file
//! (rust-postgres#654, #729), so this module does what libpq does (§34.1, §34.15-34.17):
//!
//! 1. the command line, in psql's order: `-h`, `-p`, `-U`, then `-d` (a connection string in
//!    `-d` overrides the three before it);
//! 2. the service named by `service=` or `PGSERVICE`, for keys still unset;
//! 3. the `PG*` environment variables, for keys still unset;
//! 4. defaults: the unix socket in /var/run/postgresql or /tmp, port 5432, user = the OS user,
//!    database = the user, application_name = `pgnotify`;
//! 5. a password from `PGPASSWORD`/`password=`, else the password file, else a prompt (`-W`
//!    always, never with `-w`, otherwise when the server asks and a terminal is there).
//!
//! Owns: resolving. Does not own: connecting (`connect`), the syntax of connection strings
//! (`conninfo`), the password and service files (`pgpass`, `service`).

use super::tls::{Invalid, TlsSettings};
use super::{conninfo, service};
use crate::exit::{ConnectionError, UsageError};
use crate::msg;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// When to ask for a password on the terminal (psql's `-w` / `-W`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum PasswordPrompt {
    /// Ask when the server wants a password and none was found, if there is a terminal.
    #[default]
    Auto,
    /// `-w`: never ask.
    Never,
    /// `-W`: ask before connecting.
    Always,
    /// Never ask, because nobody is waiting at the prompt: a listener's reconnects and its
    /// `--fetch` connection, `notify --timeout`.
    Unattended,
}

/// The connection options given on the command line.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnOptions {
    pub(crate) dbname: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) prompt: PasswordPrompt,
}

/// What libpq reads from the process: the environment, the home directory, the OS user.
#[derive(Clone, Debug, Default)]
pub(crate) struct Env {
    pub(crate) vars: HashMap<String, String>,
    /// The variables whose values are not UTF-8 (never read as if unset).
    pub(crate) not_utf8: Vec<String>,
    pub(crate) home: Option<PathBuf>,
    pub(crate) os_user: Option<String>,
}

impl Env {
    /// The real process environment.
    pub(crate) fn from_process() -> Env {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten();
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| user.as_ref().map(|u| u.dir.clone()));
        // vars_os: a variable that is not UTF-8 (any variable, not only PG*) must not panic.
        let mut vars = HashMap::new();
        let mut not_utf8 = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Ok(key) = key.into_string() else { continue };
            match value.into_string() {
                Ok(value) => drop(vars.insert(key, value)),
                Err(_) => not_utf8.push(key),
            }
        }
        Env {
            vars,
            not_utf8,
            home,
            os_user: user.map(|u| u.name),
        }
    }

    /// Refuses a variable that is read but not UTF-8. Skipping it would fall back to a default:
    /// another server, perhaps, or another user.
    fn check_utf8(&self, name: &str) -> Result<()> {
        if self.not_utf8.iter().any(|n| n == name) {
            return Err(UsageError(format!(
                "the environment variable {name} is not valid UTF-8, so pgnotify cannot use it; \
                 fix or unset it"
            ))
            .into());
        }
        Ok(())
    }

    /// A variable's value; libpq treats an empty one like an unset one for these settings.
    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The environment variables libpq reads, by the key they set.
const ENV_VARS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslsni", "PGSSLSNI"),
    ("sslcertmode", "PGSSLCERTMODE"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("require_auth", "PGREQUIREAUTH"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
];

/// Where libpq looks for the server's socket when no host is given (Debian's build, then the
/// upstream default).
const SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];

/// Debian's compiled-in socket directory: the one socket host the password file's `localhost`
/// stands for (libpq's passwordFromFile).
pub(super) const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// One server to try: a host name or socket directory, optionally an address, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) hostaddr: Option<IpAddr>,
    pub(crate) port: u16,
    /// No host was given: the default socket directory was chosen.
    pub(crate) defaulted: bool,
}

impl Target {
    /// True for a unix-socket directory.
    pub(crate) fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// psql's way of naming a server in messages.
    pub(crate) fn describe(&self) -> String {
        if self.is_socket() {
            let socket = Path::new(&self.host).join(format!(".s.PGSQL.{}", self.port));
            return format!("server on socket \"{}\"", socket.display());
        }
        match self.hostaddr {
            Some(addr) if addr.to_string() != self.host => {
                format!("server at \"{}\" ({addr}), port {}", self.host, self.port)
            }
            _ => format!("server at \"{}\", port {}", self.host, self.port),
        }
    }
}

/// Where a resolved setting came from (`doctor` says it; resolving never depends on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag (`-h`, `-p`, `-U`, or `-d` with a plain database name).
    Flag(&'static str),
    /// The conninfo string or URI given with `-d`.
    Conninfo,
    /// The service of that name in a service file (`service=` or `PGSERVICE`).
    Service(String),
    /// A PG* environment variable.
    Env(&'static str),
    /// libpq's default.
    Default,
}

/// Resolved connection settings: every key libpq would use, and the servers to try.
#[derive(Clone, Debug)]
pub(crate) struct ConnSettings {
    params: BTreeMap<String, String>,
    /// Where each key of `params` (and `service`, when `PGSERVICE` named it) came from.
    sources: BTreeMap<String, Source>,
    targets: Vec<Target>,
    pub(super) prompt: PasswordPrompt,
    pub(super) passfile: Option<PathBuf>,
    pub(super) tls: TlsSettings,
    /// When connecting must have ended, whatever the host list (`--timeout`).
    pub(super) deadline: Option<Instant>,
}

impl ConnSettings {
    /// A resolved value, e.g. `user`, `dbname`, `application_name`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Where a key's value came from, if it is set (`password` included: never its value).
    pub(crate) fn source(&self, key: &str) -> Option<&Source> {
        self.sources.get(key)
    }

    /// The servers to try, in order.
    pub(crate) fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The user name to connect as.
    pub(crate) fn user(&self) -> &str {
        self.get("user").unwrap_or_default()
    }

    /// The database to connect to.
    pub(crate) fn dbname(&self) -> &str {
        self.get("dbname").unwrap_or_default()
    }

    /// A copy whose every connection attempt ends within `timeout`, unless `connect_timeout`
    /// is set already: whole seconds, rounded up, so that a timeout under a second never
    /// becomes 0 ("no limit"). For `notify --timeout`, whose own clock ends the run: its
    /// attempts must only not outlive it.
    pub(crate) fn attempts_within(&self, timeout: Duration) -> ConnSettings {
        let secs = timeout.as_nanos().div_ceil(1_000_000_000).max(1);
        self.with_default("connect_timeout", &secs.to_string())
    }

    /// A copy whose connecting cannot outlast `timeout` (`--timeout`) from now, however many
    /// hosts it tries: each attempt gets what is left, or `connect_timeout` when that is
    /// shorter.
    pub(crate) fn bounded_by(&self, timeout: Duration) -> ConnSettings {
        let mut settings = self.clone();
        settings.deadline = crate::deadline::after(timeout);
        settings
    }

    /// When connecting must have ended (`--timeout`), if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A copy without the deadline of [`bounded_by`](Self::bounded_by) (a listener's
    /// reconnects, which outlive `--timeout`).
    pub(crate) fn without_deadline(&self) -> ConnSettings {
        let mut settings = self.clone();
        settings.deadline = None;
        settings
    }

    /// A copy for the servers of the list after the first `n`, if any are left.
    pub(crate) fn after(&self, n: usize) -> Option<ConnSettings> {
        let rest = self.targets.get(n..).filter(|rest| !rest.is_empty())?;
        let mut settings = self.clone();
        settings.targets = rest.to_vec();
        Some(settings)
    }

    /// A copy for one server of the list, and no other.
    pub(crate) fn only(&self, target: &Target) -> ConnSettings {
        let mut settings = self.clone();
        settings.targets = vec![target.clone()];
        settings
    }

    /// A copy that never asks for a password, for a connection nobody waits at a terminal
    /// for (passwords typed earlier are still used, and `-W`'s).
    pub(crate) fn without_prompt(&self) -> ConnSettings {
        let mut settings = self.clone();
        settings.prompt = PasswordPrompt::Unattended;
        settings
    }

    /// A copy with `key` set to `value` unless it is set already.
    pub(crate) fn with_default(&self, key: &str, value: &str) -> ConnSettings {
        let mut settings = self.clone();
        settings
            .params
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned());
        settings
    }
}

/// Resolves the command-line options against the service file, the environment and libpq's
/// defaults, in libpq's order of precedence (see the module documentation).
pub(crate) fn resolve(opts: &ConnOptions, env: &Env) -> Result<ConnSettings> {
    resolve_params(opts, env).map_err(|e| match e.is::<UsageError>() {
        true => e,
        false => ConnectionError(format!("{e:#}")).into(),
    })
}

fn resolve_params(opts: &ConnOptions, env: &Env) -> Result<ConnSettings> {
    let mut params = BTreeMap::new();
    let mut sources = BTreeMap::new();
    let flags = [
        ("host", &opts.host, "-h"),
        ("port", &opts.port, "-p"),
        ("user", &opts.user, "-U"),
    ];
    // libpq ignores empty values: `-U ""` leaves the user to PGUSER and the defaults.
    for (key, value, flag) in flags {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            params.insert(key.to_owned(), value.clone());
            sources.insert(key.to_owned(), Source::Flag(flag));
        }
    }
    if let Some(db) = opts.dbname.as_ref().filter(|v| !v.is_empty()) {
        if conninfo::is_connection_string(db) {
            let given = conninfo::parse(db).map_err(malformed)?;
            for (key, _) in &given {
                sources.insert(key.clone(), Source::Conninfo);
            }
            params.extend(given);
        } else {
            params.insert("dbname".to_owned(), db.clone());
            sources.insert("dbname".to_owned(), Source::Flag("-d"));
        }
    }
    let service = params.get("service").cloned();
    if service.is_none() {
        env.check_utf8("PGSERVICE")?;
    }
    if let Some(name) = service.as_deref().or(env.var("PGSERVICE")) {
        env.check_utf8("PGSERVICEFILE")?;
        env.check_utf8("PGSYSCONFDIR")?;
        let files = service_files(env);
        let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        for (key, value) in service::find(name, &files)? {
            if let std::collections::btree_map::Entry::Vacant(entry) = params.entry(key) {
                sources.insert(entry.key().clone(), Source::Service(name.to_owned()));
                entry.insert(value);
            }
        }
        sources
            .entry("service".to_owned())
            .or_insert(Source::Env("PGSERVICE"));
    }
    for (key, var) in ENV_VARS {
        if params.contains_key(*key) {
            continue;
        }
        env.check_utf8(var)?;
        if let Some(value) = env.var(var) {
            params.insert((*key).to_owned(), value.to_owned());
            sources.insert((*key).to_owned(), Source::Env(var));
        }
    }
    apply_defaults(&mut params, env)?;
    for key in params.keys() {
        sources.entry(key.clone()).or_insert(Source::Default);
    }
    check_supported(&mut params).map_err(malformed)?;
    let tls = TlsSettings::from_params(&params, env.home.as_deref()).map_err(|e| match e {
        Invalid::Malformed(why) => UsageError(why).into(),
        Invalid::Unsupported(why) => unsupported(why),
    })?;
    let targets = targets(&params).map_err(malformed)?;
    let passfile = params
        .get("passfile")
        .map(PathBuf::from)
        .or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")));
    Ok(ConnSettings {
        params,
        sources,
        targets,
        prompt: opts.prompt,
        passfile,
        tls,
        deadline: None,
    })
}

/// A setting malformed on its face (a conninfo syntax error, an unknown key, a bad value):
/// a usage error, status 2, as DESIGN.md's table says; psql would say 2 as well.
/// A setting that is well formed but asks for what pgnotify cannot do (TLS, say) is a
/// [`ConnectionError`] already, and stays one.
fn malformed(e: anyhow::Error) -> anyhow::Error {
    match e.is::<UsageError>() || e.is::<ConnectionError>() {
        true => e,
        false => UsageError(format!("{e:#}")).into(),
    }
}

/// Well formed, but not something pgnotify can connect with: status 3, as a failed connection.
fn unsupported(why: String) -> anyhow::Error {
    ConnectionError(why).into()
}

fn service_files(env: &Env) -> Vec<PathBuf> {
    let user_file = match env.var("PGSERVICEFILE") {
        Some(file) => Some(PathBuf::from(file)),
        None => env.home.as_ref().map(|h| h.join(".pg_service.conf")),
    };
    let sysconf = env.var("PGSYSCONFDIR").unwrap_or("/etc/postgresql-common");
    user_file
        .into_iter()
        .chain([Path::new(sysconf).join("pg_service.conf")])
        .collect()
}

fn apply_defaults(params: &mut BTreeMap<String, String>, env: &Env) -> Result<()> {
    if !params.contains_key("user") {
        let Some(user) = env.os_user.clone() else {
            bail!("could not determine the user name to connect as; use -U or PGUSER");
        };
        params.insert("user".to_owned(), user);
    }
    if !params.contains_key("dbname") {
        let user = params["user"].clone();
        params.insert("dbname".to_owned(), user);
    }
    if !params.contains_key("application_name") {
        let fallback = params
            .get("fallback_application_name")
            .cloned()
            .unwrap_or_else(|| "pgnotify".to_owned());
        params.insert("application_name".to_owned(), fallback);
    }
    Ok(())
}

/// Keys whose values must be integers, as libpq checks them.
const INTEGER_KEYS: &[&str] = &[
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// Refuses settings this build cannot honour, rather than silently weakening them.
fn check_supported(params: &mut BTreeMap<String, String>) -> Result<()> {
    for key in INTEGER_KEYS {
        if let Some(value) = params.get(*key)
            && value.trim().parse::<u64>().is_err()
        {
            bail!("invalid integer value \"{value}\" for connection option \"{key}\"");
        }
    }
    match params.get("channel_binding").map(String::as_str) {
        None | Some("disable" | "prefer" | "require") => {}
        Some(other) => bail!("invalid channel_binding value: \"{other}\""),
    }
    if params.get("gssencmode").map(String::as_str) == Some("require") {
        return Err(unsupported(
            "gssencmode=require needs GSSAPI encryption, which pgnotify does not support".into(),
        ));
    }
    if params.contains_key("requirepeer") {
        return Err(unsupported(
            "requirepeer is not supported by pgnotify; connect without it".into(),
        ));
    }
    if params.contains_key("require_auth") {
        return Err(unsupported(
            "require_auth is not supported by pgnotify: the postgres crate does not say which \
             method a server asks for; connect without it"
                .into(),
        ));
    }
    if let Some(enc) = params.get("client_encoding")
        && !["utf8", "utf-8", "auto"].contains(&enc.to_ascii_lowercase().as_str())
    {
        msg::warn(&format!(
            "client_encoding \"{enc}\" is ignored: pgnotify always talks UTF-8 to the server"
        ));
        params.remove("client_encoding");
    }
    match params.get("target_session_attrs").map(String::as_str) {
        None
        | Some("any" | "read-write" | "read-only" | "primary" | "standby" | "prefer-standby") => {
            Ok(())
        }
        Some(other) => bail!("invalid target_session_attrs value: \"{other}\""),
    }
}

/// Pairs the comma lists in `host`, `hostaddr` and `port` into targets, as libpq does.
fn targets(params: &BTreeMap<String, String>) -> Result<Vec<Target>> {
    let split = |key: &str| -> Vec<String> {
        params
            .get(key)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    };
    let addrs = split("hostaddr")
        .iter()
        .map(|a| parse_addr(a))
        .collect::<Result<Vec<_>>>()?;
    let mut hosts = split("host");
    if hosts.is_empty() {
        hosts = match addrs.is_empty() {
            true => vec![String::new()],
            false => addrs
                .iter()
                .map(|a| a.map(|a| a.to_string()).unwrap_or_default())
                .collect(),
        };
    }
    if !addrs.is_empty() && addrs.len() != hosts.len() {
        bail!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            addrs.len()
        );
    }
    let ports = split("port")
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    if ports.len() > 1 && ports.len() != hosts.len() {
        bail!(
            "could not match {} port numbers to {} hosts",
            ports.len(),
            hosts.len()
        );
    }
    let targets = hosts.into_iter().enumerate().map(|(i, host)| {
        let port = match ports.len() {
            0 => 5432,
            1 => ports[0],
            _ => ports[i],
        };
        let defaulted = host.is_empty() && addrs.get(i).copied().flatten().is_none();
        Target {
            host: if defaulted {
                default_socket_dir(port)
            } else {
                host
            },
            hostaddr: addrs.get(i).copied().flatten(),
            port,
            defaulted,
        }
    });
    Ok(targets.collect())
}

fn parse_addr(a: &str) -> Result<Option<IpAddr>> {
    if a.is_empty() {
        return Ok(None);
    }
    a.parse()
        .map(Some)
        .with_context(|| format!("could not parse network address \"{a}\""))
}

fn parse_port(p: &str) -> Result<u16> {
    if p.is_empty() {
        return Ok(5432);
    }
    match p.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => bail!("invalid port number: \"{p}\""),
    }
}

fn default_socket_dir(port: u16) -> String {
    let socket = |dir: &str| Path::new(dir).join(format!(".s.PGSQL.{port}"));
    SOCKET_DIRS
        .iter()
        .find(|dir| socket(dir).exists())
        .unwrap_or(&SOCKET_DIRS[0])
        .to_string()
}

#[cfg(test)]
mod tests;
