//! One module per command; each has `run(settings) -> Result<Exit>` and sees no clap types.

pub mod demo;
pub mod listen;
pub mod notify;
pub mod pipe;
pub mod watch_table;
