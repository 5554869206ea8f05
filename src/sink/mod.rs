//! Destinations: where encoded notifications and gap records go. Each sink implements
//! [`Sink`]; the loop in `stream` calls it and never knows which one it has.
//!
//! - `stdout`: buffered, flushed per batch (per line on a terminal);
//! - `exec`: a command per notification (`--exec`, `--jobs`);
//! - `peer` (`--connect`) and `server` (`--serve`): NDJSON over TCP, each destination with a
//!   bounded `backlog` of its own written by its own thread; `socket` holds their TCP helpers;
//! - `acked_peer`: `--connect` for a durable consumer, which acknowledges a line only once
//!   the peer must have read it;
//! - `web`: `--websocket` and `--sse`, for browsers, with their HTTP;
//! - `tee`: several of these at once.
//!
//! Owns: writing, flushing, per-destination buffering and its drop accounting. Does not own:
//! encodings (`format`), PostgreSQL or the engine: nothing here imports `pg` or `stream`.

mod acked_peer;
mod backlog;
mod exec;
mod peer;
mod server;
mod socket;
mod stdout;
mod tee;
mod web;

pub(crate) use acked_peer::AckedPeer;
pub(crate) use exec::Exec;
pub(crate) use peer::Peer;
pub(crate) use server::Server;
pub(crate) use stdout::{Express, Stdout};
pub(crate) use tee::Tee;
pub(crate) use web::{Web, WebSettings, serve_metrics};

use crate::notification::{Gap, Notification, Watermark};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;

/// How long the end of a run waits for network destinations to take what is buffered.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// Where the listen/pipe loop writes.
pub(crate) trait Sink {
    /// Writes one notification (buffered).
    fn write(&mut self, n: &Notification) -> Result<()>;
    /// Writes a gap record where the format has them.
    fn write_gap(&mut self, gap: &Gap) -> Result<()>;
    /// Hands everything written so far on.
    fn flush(&mut self) -> Result<()>;
    /// At the end of a run: hands everything on and waits (boundedly) until it is delivered.
    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
    /// With `--consumer`: a sink that knows when an event is delivered (a command exited 0)
    /// advances `mark` itself and returns true. Otherwise an event is delivered once written
    /// and flushed, and the loop advances it.
    fn acknowledges(&mut self, mark: &Arc<Watermark>) -> bool {
        let _ = mark;
        false
    }
    /// The run is ending (a signal, a fatal error): stop anything that would hold it (a
    /// command retried until it succeeds).
    fn ending(&mut self) {}
}
