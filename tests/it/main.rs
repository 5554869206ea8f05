//! Integration tests: the real `pgnotify` binary against real, throwaway PostgreSQL servers
//! that the harness in `support` starts and always removes.

#![allow(clippy::unwrap_used)]
// The harness is one crate of its own: `pub` only shares it between the test modules.
#![allow(unreachable_pub)]

mod cli;
mod conn;
mod console;
mod demo;
mod doctor;
mod drift;
mod durable;
mod exec;
mod failover;
mod failover_edges;
mod faults;
mod faults_ops;
mod fetch;
mod harness;
mod layout;
mod listen;
mod notify;
mod output;
mod passwords;
mod regressions;
mod service;
mod sql_ascii;
mod stats;
mod support;
mod tcp;
mod terminal;
mod tls;
mod tls_edges;
mod watch;
mod web;
