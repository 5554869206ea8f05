//! The terminal's settings, saved before the console's line editor puts it in raw mode and
//! put back on every way out: the end of the run, a signal, a second signal, a panic. The
//! editor restores them itself when it returns; these are for the exits that never reach it.

use nix::sys::termios::{self, SetArg, Termios};
use std::io::Write;
use std::sync::Mutex;

static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Saves standard input's terminal settings (nothing when it is not a terminal).
pub(crate) fn save() {
    if let Ok(settings) = termios::tcgetattr(std::io::stdin())
        && let Ok(mut saved) = SAVED.lock()
    {
        *saved = Some(settings);
    }
}

/// Drops what [`save`] saved: the editor has put the terminal back itself.
pub(crate) fn forget() {
    if let Ok(mut saved) = SAVED.lock() {
        *saved = None;
    }
}

/// Puts back what [`save`] saved, turns bracketed paste off again, and ends the line the
/// editor was on. Does nothing when nothing was saved; safe to call more than once.
pub(crate) fn restore() {
    let Ok(mut saved) = SAVED.lock() else { return };
    if let Some(settings) = saved.take() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &settings);
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?2004l\r\n");
        let _ = out.flush();
    }
}
