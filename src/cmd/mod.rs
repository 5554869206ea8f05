//! One module per command; each has `run(settings) -> Result<Exit>` and sees no clap types.

pub mod demo;
pub mod listen;
pub mod notify;
pub mod pipe;

use crate::exit::Exit;
use anyhow::{Result, bail};

/// The answer of a command that a later version will have.
pub fn not_implemented(command: &str) -> Result<Exit> {
    bail!("`pgnotify {command}` is not implemented yet in this version")
}
