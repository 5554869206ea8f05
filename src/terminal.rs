//! The terminal's settings, saved before the console's line editor puts it in raw mode and
//! put back on every way out: the end of the run, a signal, a second signal, a panic. The
//! editor restores them itself when it returns; these are for the exits that never reach it.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::AsFd;
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
/// editor was on. Does nothing when nothing was saved; safe to call more than once, from any
/// thread, and it never blocks: a terminal that does not read (Ctrl-S, a stalled ssh) must not
/// hold the exit, so the escape is written only if the terminal takes it at once.
pub(crate) fn restore() {
    let saved = match SAVED.lock() {
        Ok(mut saved) => saved.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    let Some(settings) = saved else { return };
    let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &settings);
    let stdout = std::io::stdout();
    let mut ready = [PollFd::new(stdout.as_fd(), PollFlags::POLLOUT)];
    if poll(&mut ready, PollTimeout::from(100u8)).is_ok_and(|n| n > 0) {
        // Past std's lock: a thread stuck writing to this terminal may hold it.
        let _ = nix::unistd::write(stdout.as_fd(), b"\x1b[?2004l\r\n");
    }
}
