//! The pgnotify binary: parse the arguments, run, exit with the status of the run.

use std::process::ExitCode;

fn main() -> ExitCode {
    pgnotify::install_panic_hook();
    let exit = match pgnotify::parse() {
        Ok(cli) => pgnotify::run(cli),
        Err(exit) => exit,
    };
    ExitCode::from(exit.code())
}
