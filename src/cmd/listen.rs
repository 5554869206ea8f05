//! `listen`: print notifications as they arrive (the relay, in the chosen format).

use crate::config::ListenSettings;
use crate::conn;
use crate::exit::Exit;
use crate::relay;
use anyhow::Result;

pub fn run(settings: ListenSettings, conn: &conn::Settings) -> Result<Exit> {
    relay::run(conn, settings.relay)
}
