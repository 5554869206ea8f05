//! Integration tests: the real `pgnotify` binary against real, throwaway PostgreSQL servers
//! that the harness in `support` starts and always removes.

#![allow(clippy::unwrap_used)]

mod cli;
mod conn;
mod demo;
mod exec;
mod faults;
mod listen;
mod notify;
mod support;
mod tcp;
mod watch;
