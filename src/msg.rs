//! Messages for the person at the terminal: warnings and `-v` details, on stderr.
//!
//! stdout carries data only. The level is set once by `main` from `-q` / `-v`; a global keeps
//! every module from threading it through (ripgrep does the same for its messages).

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(1);

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

/// Writes one message line: to the console while it runs, else to stderr.
fn say(line: &str) {
    if let Ok(route) = ROUTE.lock()
        && let Some(route) = route.as_ref()
    {
        route(line);
        return;
    }
    let _ = writeln!(std::io::stderr(), "{line}");
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
        say(&format!("pgnotify: warning: {text}"));
    }
}

/// A detail of what pgnotify is doing: shown with `-v`.
pub(crate) fn info(text: &str) {
    if level() >= Level::Verbose as u8 {
        say(&format!("pgnotify: {text}"));
    }
}

/// A short report of what was done (`watch-table`): shown unless `-q`.
pub(crate) fn note(text: &str) {
    if level() >= Level::Normal as u8 {
        say(&format!("pgnotify: {text}"));
    }
}

/// Whether `-v` is on.
pub(crate) fn verbose() -> bool {
    level() >= Level::Verbose as u8
}
