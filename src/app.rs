//! Runs a parsed command line: dispatches to the command with its resolved settings, and is
//! the one way out for an error (`exit::report`: one line on stderr and the status).

use crate::cli::{self, Cli, Command};
use crate::exit::{self, Exit};
use crate::{cmd, config, msg, pg, signals};
use clap::Parser;
use std::io::{IsTerminal, Write};

/// Parses the process's command line. Help, the version and usage errors are printed here
/// (`Err` holds the status: 0 for help and the version, 2 for a usage error), coloured by the
/// same rules as the output: clap's own choice would read the environment its own way, so it
/// gets the plain text and the escapes only when `--color` and the environment allow them on
/// the stream it goes to.
pub fn parse() -> Result<Cli, Exit> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let err = match Cli::try_parse_from(&args) {
        Ok(cli) => return Ok(cli),
        Err(err) => err,
    };
    let choice = cli::color_in_argv(&args);
    let text = err.render();
    let write = |out: &mut dyn Write, is_terminal: bool| {
        let text = if config::colored(choice, is_terminal) {
            text.ansi().to_string()
        } else {
            text.to_string()
        };
        // As clap does: a reader that went away misses the help, and that is all.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    };
    if err.use_stderr() {
        write(
            &mut std::io::stderr().lock(),
            std::io::stderr().is_terminal(),
        );
    } else {
        write(
            &mut std::io::stdout().lock(),
            std::io::stdout().is_terminal(),
        );
    }
    Err(match err.exit_code() {
        0 => Exit::Success,
        _ => Exit::Usage,
    })
}

/// Runs a parsed command line to its end and returns the exit status; errors are printed here,
/// as one line on stderr.
pub fn run(cli: Cli) -> Exit {
    msg::set_level(match (cli.quiet, cli.verbose) {
        (true, _) => msg::Level::Quiet,
        (_, true) => msg::Level::Verbose,
        _ => msg::Level::Normal,
    });
    msg::set_style(config::log_style(&cli));
    let exit = match dispatch(cli) {
        Ok(exit) => exit,
        Err(err) => {
            let exit = exit::report(&err);
            // A signal that cancelled the work in progress (watch-table's statement waiting for
            // a lock) is why it failed: the status says so, whether this thread or the signal
            // thread, which exits with it too, gets there first.
            signals::received().map_or(exit, Exit::for_signal)
        }
    };
    pg::forget_password();
    exit
}

fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    signals::install()?;
    let connection = || pg::resolve(&config::conn_options(&cli.conn), &pg::Env::from_process());
    match &cli.command {
        Command::Listen(args) => cmd::listen::run(config::listen(args, cli.color), &connection()?),
        Command::Notify(args) => cmd::notify::run(config::notify(args), &connection()?),
        Command::WatchTable(args) => {
            cmd::watch_table::run(config::watch_table(args), &connection()?)
        }
        Command::Pipe(args) => cmd::pipe::run(config::pipe(args), &connection()?),
        Command::Consumers(args) => cmd::consumers::run(config::consumers(args), &connection()?),
        Command::Doctor(args) => cmd::doctor::run(config::doctor(args, cli.color), &connection()?),
        Command::Demo(args) => cmd::demo::run(config::demo(args)),
    }
}
