//! Exit statuses and the one function that maps an error chain to one.
//!
//! The table is the contract in the README ("Exit status, signals and pipes"). Commands return
//! `Ok(Exit)` for the ways a run can end normally (count reached, timeout, signal) and
//! `Err(anyhow::Error)` for failures; a failure's status is decided here from the typed errors in its chain, so command
//! code only has to wrap a connection problem in [`ConnectionError`] to get status 3.
//!
//! [`report`] is the one way an error leaves the program, from `app::run` or from a thread that
//! must end the run itself: one line on stderr and the status, or nothing and status 0 when
//! the error is a write to stdout whose reader went away ([`StdoutError`], ripgrep's rule).

use crate::sanitize::{escape_controls, strip_os_error};
use std::fmt;
use std::io::{self, IsTerminal};

/// How a run ended, as the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The job is done: the count was reached, the notification committed, the reader left.
    Success,
    /// A runtime error: bad payload, SQL error, I/O error.
    Failure,
    /// Bad flags or arguments (clap reports most of these itself, with the same status).
    Usage,
    /// Could not connect, or the connection was lost.
    Connection,
    /// `--timeout` elapsed before the awaited notifications arrived.
    Timeout,
    /// Stopped by SIGINT after flushing what was received.
    Interrupted,
    /// Stopped by SIGTERM after flushing what was received.
    Terminated,
    /// Stopped by SIGHUP, its terminal gone (`signals::install`).
    HungUp,
}

impl Exit {
    /// The numeric process status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Connection => 3,
            Exit::Timeout => 124,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
            Exit::HungUp => 129,
        }
    }

    /// The status for a fatal signal, 128 + its number, as shells report it.
    pub(crate) fn for_signal(signal: i32) -> Exit {
        match signal {
            signal_hook::consts::SIGTERM => Exit::Terminated,
            signal_hook::consts::SIGHUP => Exit::HungUp,
            _ => Exit::Interrupted,
        }
    }
}

/// Declares an error that is its message: status comes from its type (see [`for_error`]).
macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name(pub(crate) String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::error::Error for $name {}
    };
}

message_error!(
    /// A failure to connect, or the loss of an established connection (status 3).
    ///
    /// The message is complete on its own: it names the host and port and the cause.
    ConnectionError
);

message_error!(
    /// A connection the server refused for a reason retrying cannot fix (a wrong password, a
    /// missing database or role, `pg_hba.conf`): status 3, like [`ConnectionError`], but
    /// `--wait` and the reconnect loop give up at once instead of retrying.
    Rejected
);

message_error!(
    /// A `--timeout` that ran out (status 124); the message says what was done by then.
    TimedOut
);

message_error!(
    /// A bad argument found after parsing (status 2), for checks clap cannot do alone.
    UsageError
);

/// A failed write to standard output. A broken pipe (the reader went away: `| head -1`) ends
/// the run quietly with status 0; any other failure is an I/O error (status 1). A broken pipe
/// anywhere else (a TCP client, the server's socket, an `--exec` child) is not this error.
#[derive(Debug)]
pub(crate) struct StdoutError(pub(crate) io::Error);

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = strip_os_error(&self.0.to_string());
        write!(f, "could not write to standard output: {why}")
    }
}

impl std::error::Error for StdoutError {}

/// True when the run failed only because stdout's reader went away.
fn is_closed_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<StdoutError>()
            .is_some_and(|e| e.0.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The exit status for a failed run.
pub(crate) fn for_error(err: &anyhow::Error) -> Exit {
    if is_closed_stdout(err) {
        return Exit::Success;
    }
    for cause in err.chain() {
        if cause.is::<ConnectionError>() || cause.is::<Rejected>() {
            return Exit::Connection;
        }
        if cause.is::<UsageError>() {
            return Exit::Usage;
        }
        if cause.is::<TimedOut>() {
            return Exit::Timeout;
        }
    }
    Exit::Failure
}

/// Renders an error chain as the one line printed after `pgnotify: error: `.
///
/// Control characters (a channel name or payload is user data) are escaped when the line goes
/// to a terminal, so an error can neither forge lines nor recolour the screen.
fn render(err: &anyhow::Error, to_terminal: bool) -> String {
    let text = format!("{err:#}");
    if to_terminal {
        escape_controls(&text).into_owned()
    } else {
        text.replace('\n', " ")
    }
}

/// Says why the run failed, as one line on stderr (`pgnotify: error: ...`), and returns its
/// status; says nothing when stdout's reader went away.
pub(crate) fn report(err: &anyhow::Error) -> Exit {
    if !is_closed_stdout(err) {
        crate::msg::error(&render(err, io::stderr().is_terminal()));
    }
    for_error(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_contract() {
        let table = [
            (Exit::Success, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::Connection, 3),
            (Exit::Timeout, 124),
            (Exit::Interrupted, 130),
            (Exit::Terminated, 143),
            (Exit::HungUp, 129),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
        assert_eq!(
            Exit::for_signal(signal_hook::consts::SIGINT),
            Exit::Interrupted
        );
        assert_eq!(
            Exit::for_signal(signal_hook::consts::SIGTERM),
            Exit::Terminated
        );
        assert_eq!(Exit::for_signal(signal_hook::consts::SIGHUP), Exit::HungUp);
    }

    #[test]
    fn typed_errors_anywhere_in_the_chain_decide_the_status() {
        let conn = anyhow::Error::new(ConnectionError("refused".into())).context("listening");
        assert_eq!(for_error(&conn), Exit::Connection);
        let usage = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(for_error(&usage), Exit::Usage);
        assert_eq!(for_error(&anyhow::anyhow!("sql")), Exit::Failure);
    }

    #[test]
    fn only_a_broken_pipe_on_stdout_is_a_quiet_success() {
        let closed = StdoutError(io::ErrorKind::BrokenPipe.into());
        let closed = anyhow::Error::new(closed).context("listing");
        assert_eq!(for_error(&closed), Exit::Success);
        let full = anyhow::Error::new(StdoutError(io::Error::from_raw_os_error(28)));
        assert_eq!(for_error(&full), Exit::Failure);
        assert_eq!(
            full.to_string(),
            "could not write to standard output: No space left on device"
        );
        let elsewhere = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(for_error(&elsewhere), Exit::Failure);
    }

    #[test]
    fn rendering_is_one_line() {
        let err = anyhow::anyhow!("payload \"a\nb\x1b[31m\"");
        assert_eq!(render(&err, true), "payload \"a\\nb\\x1b[31m\"");
        assert!(!render(&err, false).contains('\n'));
    }
}
