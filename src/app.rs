//! Runs a parsed command line: dispatches to the command with its resolved settings, and is
//! the one way out for an error (`exit::report`: one line on stderr and the status).

use crate::cli::{Cli, Command};
use crate::exit::{self, Exit};
use crate::{cmd, config, msg, pg, signals};

/// Runs a parsed command line to its end and returns the exit status; errors are printed here,
/// as one line on stderr.
pub fn run(cli: Cli) -> Exit {
    msg::set_level(match (cli.quiet, cli.verbose) {
        (true, _) => msg::Level::Quiet,
        (_, true) => msg::Level::Verbose,
        _ => msg::Level::Normal,
    });
    let exit = match dispatch(cli) {
        Ok(exit) => exit,
        Err(err) => exit::report(&err),
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
        Command::Demo(args) => cmd::demo::run(config::demo(args)),
    }
}
