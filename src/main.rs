//! The pgnotify binary: parse the arguments, run, exit with the status of the run.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    pgnotify::install_panic_hook();
    let cli = pgnotify::Cli::parse();
    ExitCode::from(pgnotify::run(cli).code())
}
