//! `pipe`: forward notifications as NDJSON (the relay, always in NDJSON, gap records included).

use crate::config::PipeSettings;
use crate::conn;
use crate::exit::Exit;
use crate::relay;
use anyhow::Result;

pub fn run(settings: PipeSettings, conn: &conn::Settings) -> Result<Exit> {
    relay::run(conn, settings.relay)
}
