//! Messages for the person at the terminal: warnings and `-v` details, on stderr.
//!
//! stdout carries data only. The level is set once by `main` from `-q` / `-v`; a global keeps
//! every module from threading it through (ripgrep does the same for its messages).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(1);

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
        let _ = writeln!(std::io::stderr(), "pgnotify: warning: {text}");
    }
}

/// A detail of what pgnotify is doing: shown with `-v`.
pub(crate) fn info(text: &str) {
    if level() >= Level::Verbose as u8 {
        let _ = writeln!(std::io::stderr(), "pgnotify: {text}");
    }
}

/// A short report of what was done (`watch-table`): shown unless `-q`.
pub(crate) fn note(text: &str) {
    if level() >= Level::Normal as u8 {
        let _ = writeln!(std::io::stderr(), "pgnotify: {text}");
    }
}

/// Whether `-v` is on.
pub(crate) fn verbose() -> bool {
    level() >= Level::Verbose as u8
}
