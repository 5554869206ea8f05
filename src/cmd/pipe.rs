//! `pipe`: forward notifications as NDJSON (the stream, always in NDJSON, gap records included).

use crate::config::PipeSettings;
use crate::exit::Exit;
use crate::pg::ConnSettings;
use crate::stream;
use anyhow::Result;

pub(crate) fn run(settings: PipeSettings, conn: &ConnSettings) -> Result<Exit> {
    stream::run(conn, settings.stream)
}
