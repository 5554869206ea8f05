//! pgnotify: PostgreSQL LISTEN/NOTIFY from the shell. `ARCHITECTURE.md` at the top of the
//! project is the longer map; this is the short one, wing by wing, in the order data flows.
//!
//! **The edge** sees clap and reads the environment, and nothing below it does (except `pg`,
//! which reads libpq's PG* variables, and `tempdb`, which finds the server binaries): `main`
//! parses and exits; `cli` declares the command line (clap derive, every `ValueEnum`);
//! `config` turns parsed arguments and the environment into plain settings; `app` dispatches
//! to a command and is the one way out for an error; `generate` writes completions and man
//! pages from `cli`.
//!
//! **`cmd`**: one module per command (`listen`, `notify`, `pipe`, `watch_table`, `consumers`,
//! `doctor`, `demo`), each
//! `run(settings, &ConnSettings) -> Result<Exit>`.
//!
//! **`stream`**: the listen/pipe engine. The source thread connects, LISTENs, reads the
//! server into a bounded queue, proves the connection alive with a heartbeat, reconnects and
//! reports gaps; the loop takes what is queued, adds `--fetch` rows, and hands notifications
//! to a sink until a count, a timeout, a signal or the reader leaving ends the run.
//!
//! **`sink`**: destinations — stdout, `--exec`, a TCP peer (`--connect`), TCP clients
//! (`--serve`), WebSocket and SSE clients (`--websocket`, `--sse`), several at once — each
//! network destination on a bounded backlog of its own. **`format`**:
//! encoders — text, NDJSON, psql's sentences, the bare payload. Neither sees PostgreSQL or the engine.
//!
//! **`watch`**: `watch-table`'s model, the trigger's SQL, and the catalog lookups that
//! `watch-table` and `--fetch` share.
//!
//! **`durable`**: the outbox of durable delivery in the `pgnotify` schema: its versioned DDL,
//! grants, and every statement that stores, reads, acknowledges and prunes events.
//!
//! **`pg`**: everything that speaks PostgreSQL or follows libpq's conventions: connection
//! settings (conninfo, URI, PG* variables, password and service files), connecting,
//! identifier rules and quoting, server errors told in one line.
//!
//! **Leaves**, used by any wing: `notification` (the vocabulary: `Notification`, `Gap`),
//! `exit` (statuses and the error path), `msg` (stderr messages), `stats` (a run's counters:
//! `--stats`, SIGUSR1, `--metrics`), `signals`, `sanitize`,
//! `backoff`, `deadline`, `keepalive`, `panic`, `readiness` (sd_notify), `terminal` (the console's saved settings); `tempdb` starts throwaway servers for `demo`
//! and the tests.
//!
//! **`properties`** (tests only): property tests of the parsers and encoders that read
//! anyone's text.

mod app;
mod backoff;
mod cli;
mod cmd;
mod config;
mod deadline;
mod durable;
mod exit;
mod format;
pub mod generate;
mod keepalive;
mod msg;
mod notification;
mod panic;
mod pg;
#[cfg(test)]
mod properties;
mod readiness;
mod sanitize;
mod signals;
mod sink;
mod stats;
mod stream;
pub mod tempdb;
mod terminal;
mod watch;

pub use app::{parse, run};
pub use cli::Cli;
pub use exit::Exit;
pub use panic::install_hook as install_panic_hook;
