//! Messages for the person at the terminal: warnings and `-v` details, on stderr.
//!
//! stdout carries data only. The level is set once by `main` from `-q` / `-v`; a global keeps
//! every module from threading it through (ripgrep does the same for its messages).
//!
//! How a line reads is set once too ([`set_style`], decided by `config`): `--log-format json`
//! makes each line one JSON object (`time`, `level`, `message`, and the counters for a stats
//! line); text lines of `listen` and `pipe` begin with the time (RFC 3339, UTC, milliseconds),
//! except the error at the exit, which is the one sentence a person reads; under journald
//! (its own stream on stderr) no line has a time, journald adds its own, and each begins with
//! its syslog priority (`<3>` error, `<4>` warning, `<6>` the rest), as sd-daemon(3) has it.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

static LEVEL: AtomicU8 = AtomicU8::new(1);
static JSON: AtomicBool = AtomicBool::new(false);
static TIMESTAMPS: AtomicBool = AtomicBool::new(false);
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// How stderr lines read (see the module's documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Style {
    /// `--log-format json`: one JSON object per line.
    pub(crate) json: bool,
    /// Text lines begin with the time (the long-running commands, `listen` and `pipe`).
    pub(crate) timestamps: bool,
    /// stderr is journald's stream: no time in text lines, a `<N>` priority on every line.
    pub(crate) journal: bool,
}

/// Sets the style for the rest of the run.
pub(crate) fn set_style(style: Style) {
    JSON.store(style.json, Ordering::Relaxed);
    TIMESTAMPS.store(style.timestamps, Ordering::Relaxed);
    JOURNAL.store(style.journal, Ordering::Relaxed);
}

/// A line's severity: its `level` in JSON, its priority for journald.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// syslog's priority (sd-daemon(3)'s `SD_ERR`, `SD_WARNING`, `SD_INFO`).
    fn priority(self) -> u8 {
        match self {
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Info => 6,
        }
    }
}

/// The line as it goes to stderr: `plain` is the text line without time or priority
/// (`pgnotify: warning: ...`), `message` what JSON's `message` holds, `fields` more of its
/// fields. `stamped`: a text line of a long-running command gets the time.
fn styled(
    severity: Severity,
    plain: &str,
    message: &str,
    fields: Option<&serde_json::Map<String, serde_json::Value>>,
    stamped: bool,
) -> String {
    let now = jiff::Timestamp::now();
    let mut line = String::new();
    if JOURNAL.load(Ordering::Relaxed) {
        line.push_str(&format!("<{}>", severity.priority()));
    }
    if JSON.load(Ordering::Relaxed) {
        let mut object = serde_json::Map::new();
        object.insert("time".into(), format!("{now:.3}").into());
        object.insert("level".into(), severity.name().into());
        object.insert("message".into(), message.into());
        if let Some(fields) = fields {
            object.extend(fields.clone());
        }
        line.push_str(&serde_json::Value::Object(object).to_string());
        return line;
    }
    if stamped && TIMESTAMPS.load(Ordering::Relaxed) && !JOURNAL.load(Ordering::Relaxed) {
        line.push_str(&format!("{now:.3} "));
    }
    line.push_str(plain);
    line
}

/// Writes one line as the style has it: to the console while it runs (as plain text: the
/// console's look is its own), else to stderr.
fn emit(
    severity: Severity,
    plain: &str,
    message: &str,
    fields: Option<&serde_json::Map<String, serde_json::Value>>,
) {
    emit_within(severity, plain, message, fields, None);
}

/// [`emit`], waiting at most `wait` (`None`: as long as it takes) for stderr to take the line.
fn emit_within(
    severity: Severity,
    plain: &str,
    message: &str,
    fields: Option<&serde_json::Map<String, serde_json::Value>>,
    wait: Option<Duration>,
) {
    if let Ok(route) = ROUTE.lock()
        && let Some(route) = route.as_ref()
    {
        route(plain);
        return;
    }
    write_line_within(styled(severity, plain, message, fields, true), wait);
}

/// One write of the line and its newline: a line is never split between writes, whoever else
/// writes to the same file (journald's stream, a log opened for appending).
fn write_line(line: String) {
    write_line_within(line, None);
}

/// [`write_line`], unless stderr takes nothing for `wait`: then the line is left out. A line
/// is far shorter than the page a pipe that polls writable has free, so the write that
/// follows does not block either.
fn write_line_within(mut line: String, wait: Option<Duration>) {
    line.push('\n');
    let mut stderr = std::io::stderr().lock();
    if wait.is_some_and(|wait| !writable_within(&stderr, wait)) {
        return;
    }
    let _ = stderr.write_all(line.as_bytes());
}

/// Whether `file` takes data within `wait` (or fails at once: its reader is gone, say).
fn writable_within(file: &impl AsFd, wait: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => return true,
            // A signal (SIGUSR1 storms happen): wait for what is left.
            Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
            Err(_) => return true,
        }
    }
}

/// How long a counters line waits for stderr to take it: a stderr nobody reads (a stuck
/// logger) must not hold the thread that prints them, nor the end of the run.
const STATS_WAIT: Duration = Duration::from_secs(1);

/// The one-line error at the exit (`exit::report`), `text` already rendered for stderr: on
/// stderr even while the console runs, and never with a time in text (a person reads it, and
/// scripts match it).
pub(crate) fn error(text: &str) {
    let plain = format!("pgnotify: error: {text}");
    write_line(styled(Severity::Error, &plain, text, None, false));
}

/// A counters line (`--stats`, SIGUSR1): `label` says which ("stats", "final stats"), `line`
/// is the counters as text, `fields` as JSON. Shown even with `-q`: it was asked for. Left
/// out when stderr takes nothing for [`STATS_WAIT`].
pub(crate) fn stats(label: &str, line: &str, fields: &serde_json::Map<String, serde_json::Value>) {
    emit_within(
        Severity::Info,
        &format!("pgnotify: {label}: {line}"),
        label,
        Some(fields),
        Some(STATS_WAIT),
    );
}

type Route = Box<dyn Fn(&str) + Send>;

/// Where messages go instead of stderr while the console owns the terminal.
static ROUTE: Mutex<Option<Route>> = Mutex::new(None);

/// From now on messages are handed to `route` (the console prints them above its prompt);
/// `None` sends them to stderr again.
pub(crate) fn route_to(route: Option<Route>) {
    if let Ok(mut current) = ROUTE.lock() {
        *current = route;
    }
}

/// How much goes to stderr besides errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// `-q`: errors only.
    Quiet = 0,
    /// Errors and warnings.
    Normal = 1,
    /// `-v`: also what pgnotify is doing (connections, readiness).
    Verbose = 2,
}

/// Sets the level for the rest of the run.
pub(crate) fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

fn level() -> u8 {
    // Unit tests exercise code that warns: its lines on the test run's stderr would look like
    // failures. The binary, and so every integration test, prints them.
    if cfg!(test) {
        return Level::Quiet as u8;
    }
    LEVEL.load(Ordering::Relaxed)
}

/// A warning: shown unless `-q`.
pub(crate) fn warn(text: &str) {
    if level() >= Level::Normal as u8 {
        emit(
            Severity::Warning,
            &format!("pgnotify: warning: {text}"),
            text,
            None,
        );
    }
}

/// A detail of what pgnotify is doing: shown with `-v`.
pub(crate) fn info(text: &str) {
    if level() >= Level::Verbose as u8 {
        emit(Severity::Info, &format!("pgnotify: {text}"), text, None);
    }
}

/// A short report of what was done (`watch-table`): shown unless `-q`.
pub(crate) fn note(text: &str) {
    if level() >= Level::Normal as u8 {
        emit(Severity::Info, &format!("pgnotify: {text}"), text, None);
    }
}

/// Whether `-v` is on.
pub(crate) fn verbose() -> bool {
    level() >= Level::Verbose as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_style() {
        // One test sets the globals, so that no other test sees them change.
        let line = |style: Style, stamped: bool| {
            set_style(style);
            styled(
                Severity::Warning,
                "pgnotify: warning: w",
                "w",
                None,
                stamped,
            )
        };
        let text = line(
            Style {
                timestamps: true,
                ..Style::default()
            },
            true,
        );
        let (time, rest) = text.split_once(' ').unwrap();
        assert_eq!(rest, "pgnotify: warning: w");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
        assert_eq!(
            line(
                Style {
                    timestamps: true,
                    ..Style::default()
                },
                false
            ),
            "pgnotify: warning: w",
            "the error at the exit has no time"
        );
        let journal = Style {
            timestamps: true,
            journal: true,
            json: false,
        };
        assert_eq!(line(journal, true), "<4>pgnotify: warning: w");
        let json = line(
            Style {
                json: true,
                ..Style::default()
            },
            true,
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["level"], "warning");
        assert_eq!(value["message"], "w");
        assert!(
            value["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        set_style(Style::default());
    }
}
