//! `listen`: print notifications as they arrive (the stream, in the chosen format), or, with
//! `-i`, the interactive console (`console`).

use super::console;
use crate::config::ListenSettings;
use crate::exit::Exit;
use crate::pg::ConnSettings;
use crate::stream;
use anyhow::Result;

pub(crate) fn run(settings: ListenSettings, conn: &ConnSettings) -> Result<Exit> {
    match settings {
        ListenSettings::Stream(settings) => stream::run(conn, settings),
        ListenSettings::Console(settings) => console::run(settings, conn),
    }
}
