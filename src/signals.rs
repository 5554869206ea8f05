//! SIGINT and SIGTERM for the whole run: a thread that hands the first one to whoever asked
//! for it (the listen/pipe loop drains and flushes; `watch-table` cancels its statement; the
//! demo stops its children), and ends the program at once on a second one, or on a first one
//! that nobody asked for. `signal-hook`, because `ctrlc` cannot tell SIGINT from SIGTERM.
//!
//! SIGUSR1 has a thread of its own: it calls what [`on_usr1`] registered (listen and pipe print
//! their counters), and is ignored until then, so that it never ends a run (its default action
//! would). It is installed with the rest, before any command runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first SIGINT/SIGTERM that arrived (0: none yet): work that would hold the run (a
/// command retried until it succeeds) gives up.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Whether a SIGINT or SIGTERM has asked the run to end.
pub(crate) fn stopping() -> bool {
    received().is_some()
}

/// The first SIGINT or SIGTERM received, if one was.
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal),
    }
}

type SignalSink = Box<dyn Fn(i32) -> bool + Send>;

/// Where the signal thread delivers the first SIGINT/SIGTERM; `None` until someone asks.
static SIGNAL_SINK: Mutex<Option<SignalSink>> = Mutex::new(None);

/// Installs the SIGINT/SIGTERM handling for the whole run.
///
/// Until a command asks for signals with [`deliver_to`], a signal ends the program at once
/// with 128+n: nothing has been received yet that would need writing. After that, the first
/// signal goes to that command and a second one ends the program at once.
///
/// SIGHUP: with a terminal on stdin, stdout or stderr at the start, it is that terminal hanging
/// up, and it ends the run as SIGINT/SIGTERM do (status 129): a listener left behind by a
/// closed terminal would hold its connection forever, writing nowhere. Without one (a
/// service, cron, `nohup`, a pipe), there is nothing to reload or reopen: it is ignored, with
/// a line on stderr.
pub(crate) fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    // One iterator (its pipe is the only descriptor signals take): SIGUSR1 is handed on to a
    // thread of its own at once, so that its work never holds up a SIGINT or SIGTERM.
    let usr1 = start_usr1()?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])?;
    let hangup_ends = on_a_terminal();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut delivered = false;
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    // Full: a print is already asked for, and it will show the counters as
                    // they are then; a backlog would print them again and again, late.
                    let _ = usr1.try_send(());
                    continue;
                }
                if signal == SIGHUP && !hangup_ends {
                    crate::msg::warn(
                        "SIGHUP ignored: there is nothing to reload (SIGINT or SIGTERM ends the run)",
                    );
                    continue;
                }
                let _ = RECEIVED.compare_exchange(0, signal, Ordering::Relaxed, Ordering::Relaxed);
                let taken = !delivered
                    && SIGNAL_SINK
                        .lock()
                        .ok()
                        .is_some_and(|sink| sink.as_ref().is_some_and(|deliver| deliver(signal)));
                if !taken {
                    crate::terminal::restore();
                    std::process::exit(128 + signal);
                }
                delivered = true;
            }
        })?;
    Ok(())
}

/// Whether stdin, stdout or stderr is a terminal, which a SIGHUP would be the hangup of.
fn on_a_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
        || std::io::stdout().is_terminal()
        || std::io::stderr().is_terminal()
}

/// From now on the first SIGINT/SIGTERM is handed to `deliver`, which returns false if it
/// could not take it (then the program exits at once).
pub(crate) fn deliver_to(deliver: impl Fn(i32) -> bool + Send + 'static) {
    if let Ok(mut sink) = SIGNAL_SINK.lock() {
        *sink = Some(Box::new(deliver));
    }
}

type Usr1 = Box<dyn Fn() + Send>;

/// What SIGUSR1 does; `None`: nothing.
static ON_USR1: Mutex<Option<Usr1>> = Mutex::new(None);

/// The thread that carries out SIGUSR1; what it is sent is one signal each, and at most one
/// waits while it is busy (those that come meanwhile are that one).
fn start_usr1() -> std::io::Result<std::sync::mpsc::SyncSender<()>> {
    let (send, received) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("signals-usr1".into())
        .spawn(move || {
            for () in received {
                if let Ok(hook) = ON_USR1.lock()
                    && let Some(hook) = hook.as_ref()
                {
                    hook();
                }
            }
        })?;
    Ok(send)
}

/// From now on each SIGUSR1 calls `hook` (on the signal's own thread).
pub(crate) fn on_usr1(hook: impl Fn() + Send + 'static) {
    if let Ok(mut current) = ON_USR1.lock() {
        *current = Some(Box::new(hook));
    }
}
