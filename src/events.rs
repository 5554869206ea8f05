//! The events a running command waits on, and the threads that turn signals and a closed
//! stdout into such events, so that the main loop has one channel to block on (STYLE.md:
//! source -> channel -> sink).

use crate::notification::Notification;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::mpsc::Sender;

/// Something the main loop of `listen` (and later `pipe`) must act on.
#[derive(Debug)]
pub enum Event {
    /// Notifications read from the server, in arrival order.
    Notifications(Vec<Notification>),
    /// The connection to the server is gone; the text says why.
    Lost(String),
    /// SIGINT or SIGTERM arrived: write what was received, then exit 128+n.
    Signal(i32),
    /// The reader of stdout went away (`| head -1`): exit 0.
    OutputClosed,
}

/// Where the signal thread delivers the first SIGINT/SIGTERM; `None` until a main loop runs.
static SIGNAL_SINK: Mutex<Option<Sender<Event>>> = Mutex::new(None);

/// Installs the SIGINT/SIGTERM handling for the whole run.
///
/// Until a main loop asks for signals with [`deliver_signals_to`], a signal ends the program at
/// once with 128+n: nothing has been received yet that would need writing. After that, the
/// first signal becomes an [`Event::Signal`] and a second one ends the program at once.
pub fn install_signal_handling() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut delivered = false;
            for signal in signals.forever() {
                let sink = SIGNAL_SINK.lock().ok().and_then(|s| s.clone());
                match sink {
                    Some(tx) if !delivered && tx.send(Event::Signal(signal)).is_ok() => {
                        delivered = true;
                    }
                    _ => std::process::exit(128 + signal),
                }
            }
        })?;
    Ok(())
}

/// From now on the first SIGINT/SIGTERM arrives as an event on `tx`.
pub fn deliver_signals_to(tx: Sender<Event>) {
    if let Ok(mut sink) = SIGNAL_SINK.lock() {
        *sink = Some(tx);
    }
}

/// When stdout is a pipe or socket, watches for its reader going away and sends
/// [`Event::OutputClosed`], so `listen ch | head -1` ends as soon as `head` does, even while
/// no notification arrives (failure-modes F8).
pub fn watch_output_closed(tx: Sender<Event>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::stat::{SFlag, fstat};
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return;
    }
    let Ok(stat) = fstat(&stdout) else { return };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            loop {
                // No events requested: poll reports only POLLERR/POLLHUP, which a pipe's write
                // end gets when its last reader closes.
                let mut fds = [PollFd::new(
                    std::os::fd::AsFd::as_fd(&stdout),
                    PollFlags::empty(),
                )];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(n) if n > 0 => {
                        let _ = tx.send(Event::OutputClosed);
                        return;
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
        });
    if spawned.is_err() {
        crate::msg::warn("could not watch stdout for its reader closing");
    }
}
