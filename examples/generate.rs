//! For maintainers: rewrites `completions/` and `man/` from the clap definition, after any
//! change to the command line. `cargo run --example generate [DIR]` (DIR: the project, `.`).
//! The test `generated_files_are_current` fails while they are stale.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    match pgnotify::generate::write_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
