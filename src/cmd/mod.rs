//! One module per command; each has `run(settings, &ConnSettings) -> Result<Exit>` (`demo`
//! makes its own server) and sees no clap types.

mod console;
pub(crate) mod demo;
pub(crate) mod listen;
pub(crate) mod notify;
pub(crate) mod pipe;
pub(crate) mod watch_table;
