//! pgnotify: PostgreSQL LISTEN/NOTIFY from the shell.
//!
//! How the parts fit, in the order data flows:
//!
//! - `cli` declares the command line (clap derive); `config` turns it, with the environment,
//!   into plain settings; `conn` resolves connection settings as libpq does (conninfo, URI,
//!   PG* variables, password file, service file) and connects.
//! - `source` is the notification source: one connection that LISTENs, read by its own
//!   thread, which sends batches of `notification::Notification` into a channel of
//!   `events::Event`s. Signals and a closed stdout arrive on the same channel (`events`).
//!   The queue (`events::Queue`) is bounded; the source reconnects and reports gaps.
//! - `relay` is the main loop of `cmd::listen` and `cmd::pipe`: it takes events and writes
//!   notifications through an `output` format (text, NDJSON, psql) to stdout, flushing
//!   whenever nothing more waits.
//! - `cmd::notify` sends notifications with bind parameters, batched for `--lines`.
//! - `tempdb` starts throwaway PostgreSQL servers for `cmd::demo` and the tests.
//! - `exit` maps every outcome to the status in DESIGN.md; `msg` writes warnings and `-v`
//!   details to stderr; `generate` writes completions and man pages.
//!
//! `main.rs` only parses the arguments and calls [`run`].

pub mod cli;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod events;
pub mod exit;
pub mod fetch;
pub mod generate;
pub mod msg;
pub mod notification;
pub mod output;
pub mod relay;
pub mod source;
pub mod tempdb;
pub mod watch;

use cli::{Cli, Command};
use exit::Exit;
use std::io::{IsTerminal, Write};

/// Runs a parsed command line to its end and returns the exit status; errors are printed here,
/// as one line on stderr.
pub fn run(cli: Cli) -> Exit {
    msg::set_level(match (cli.quiet, cli.verbose) {
        (true, _) => msg::Level::Quiet,
        (_, true) => msg::Level::Verbose,
        _ => msg::Level::Normal,
    });
    match dispatch(cli) {
        Ok(exit) => exit,
        Err(err) => {
            let line = exit::render(&err, std::io::stderr().is_terminal());
            let _ = writeln!(std::io::stderr(), "pgnotify: error: {line}");
            exit::for_error(&err)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    events::install_signal_handling()?;
    let connection = || conn::resolve(&config::conn_options(&cli.conn), &conn::Env::from_process());
    match &cli.command {
        Command::Listen(args) => cmd::listen::run(config::listen(args, cli.color), &connection()?),
        Command::Notify(args) => cmd::notify::run(config::notify(args), &connection()?),
        Command::WatchTable(args) => {
            cmd::watch_table::run(config::watch_table(args), &connection()?)
        }
        Command::Pipe(args) => cmd::pipe::run(config::pipe(args), &connection()?),
        Command::Demo(args) => cmd::demo::run(config::demo(args)),
        Command::Generate(args) => generate::write_all(&args.dir).map(|()| Exit::Success),
    }
}

thread_local! {
    /// Set while `contain_panic` runs: the panic hook then lets the panic unwind quietly.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it (a dependency's `unwrap` on a resource failure) into an
/// error message instead of ending the program.
pub fn contain_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    CONTAINED.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(false));
    result.map_err(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        // "called `Result::unwrap()` on an `Err` value: Os { ... message: \"Too many open files\" }"
        match text.split("message: \"").nth(1) {
            Some(rest) => rest.split('"').next().unwrap_or(rest).to_owned(),
            None => text.to_owned(),
        }
    })
}

/// Replaces Rust's panic message with one line, so a bug never shows a user a debug dump,
/// and ends the program with status 1: a panic on a helper thread (the source, say) must not
/// leave a listener that looks alive but never receives anything.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if CONTAINED.with(|c| c.get()) {
            return;
        }
        let _ = writeln!(
            std::io::stderr(),
            "pgnotify: internal error: {info} (please report this)"
        );
        std::process::exit(i32::from(Exit::Failure.code()));
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn contained_panics_become_messages() {
        assert_eq!(super::contain_panic(|| 7), Ok(7));
        let err = super::contain_panic(|| -> u8 { panic!("boom") }).unwrap_err();
        assert_eq!(err, "boom");
        // The shape of the `postgres` crate's panic when its runtime cannot be built.
        let fails = || {
            std::fs::File::open("/nonexistent/x").map_err(|_| std::io::Error::from_raw_os_error(24))
        };
        let err = super::contain_panic(|| fails().unwrap()).unwrap_err();
        assert_eq!(err, "Too many open files");
    }
}
