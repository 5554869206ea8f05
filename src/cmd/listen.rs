//! `listen`: print notifications as they arrive (the stream, in the chosen format).

use crate::config::ListenSettings;
use crate::exit::Exit;
use crate::pg::ConnSettings;
use crate::stream;
use anyhow::Result;

pub(crate) fn run(settings: ListenSettings, conn: &ConnSettings) -> Result<Exit> {
    stream::run(conn, settings.stream)
}
