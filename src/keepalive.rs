//! The TCP liveness settings of every long-lived connection pgnotify holds: to the server (where
//! libpq's `keepalives_*` and `tcp_user_timeout` settings may override them), to a `--connect`
//! peer, and from each `--serve` client.
//!
//! A connection may sit idle for hours: with keepalive a dead peer is noticed within about a
//! minute instead of the kernel's two hours, during which a listener on a half-open connection
//! would wait silently. TCP_USER_TIMEOUT gives up a peer that stops acknowledging what was
//! sent, instead of blocking a write for the kernel's 15 minutes or more.

use std::time::Duration;

/// Idle time before the first probe.
pub(crate) const IDLE: Duration = Duration::from_secs(30);
/// Time between probes.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the connection is given up.
pub(crate) const PROBES: u32 = 3;
/// How long sent data may stay unacknowledged.
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(60);
