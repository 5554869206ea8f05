//! Everything that speaks PostgreSQL or follows libpq's conventions: connection settings with
//! libpq's sources and precedence, connecting, identifier rules and quoting, and telling a
//! server error to a person; TLS with libpq's meanings (`tls`).
//!
//! The `postgres` crate reads no PG* variables, no password file and no service file
//! (rust-postgres#654, #729), so this wing does what libpq does (libpq's "Connection Strings",
//! "Environment Variables", "The Password File", "The Connection Service File").
//!
//! Owns: `ConnSettings` and `connect`. Does not own: what is done on a connection (`stream`,
//! `watch`, `cmd`).

mod connect;
mod conninfo;
mod error;
mod ident;
mod listener;
mod pgpass;
mod service;
mod settings;
mod tls;
mod wire;

pub(crate) use connect::{
    Connection, PasswordUsed, TlsUsed, ask_password_first, connect, connect_as, connect_timeout_of,
    forget_password,
};
pub(crate) use error::{connection_lost, describe_on, describe_pg_error};
pub(crate) use ident::{
    MAX_CHANNEL_BYTES, MAX_PAYLOAD_BYTES, check_channel, check_payload, quote_ident, quote_literal,
};
pub(crate) use listener::{Answer, Listener, NOTIFY_LOCK_WAIT, Received, Wake, waited_for_lock};
pub(crate) use settings::{
    ConnOptions, ConnSettings, Env, PasswordPrompt, Source, Target, resolve,
};
pub(crate) use tls::Verify;

/// The file parsers, for the property tests (`crate::properties`).
#[cfg(test)]
pub(crate) mod parsers {
    pub(crate) use super::conninfo::parse as conninfo;
    pub(crate) use super::pgpass::{Key as PgpassKey, Lookup, find as pgpass_find};
    pub(crate) use super::service::section as service_section;
}
