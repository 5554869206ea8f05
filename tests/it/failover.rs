//! Host lists with `target_session_attrs`, a streaming standby, and a promotion: the
//! listener follows the new primary without being restarted, and reports the gap.

use super::failover_edges::{connected_to, hosts};
use crate::support::{Outcome, Running, Server};
use pgnotify::tempdb;
use std::time::Duration;

/// `pgnotify -v -d CONNINFO notify probe x`.
fn notify(via: &Server, conninfo: &str) -> Outcome {
    via.bare()
        .args(["-v", "-d", conninfo, "notify", "probe", "x"])
        .run()
}

/// Asserts that `pipe` says it connected to `server`.
pub(super) fn assert_on(pipe: &Running, server: &Server) {
    assert!(
        pipe.stderr().contains(&connected_to(server)),
        "{}",
        pipe.report()
    );
}

/// `pgnotify -v -d CONNINFO pipe jobs ARGS...`, once it listens on `on`.
fn pipe_on(on: &Server, conninfo: &str, args: &[&str]) -> Running {
    let mut pipe = on
        .bare()
        .args(["-v", "-d", conninfo, "pipe", "jobs"])
        .args(args)
        .spawn();
    pipe.wait_ready();
    assert_on(&pipe, on);
    pipe
}

#[test]
fn a_pipe_with_two_hosts_and_target_session_attrs_primary_follows_a_promotion() {
    let primary = Server::start();
    let standby = primary.standby();
    let conninfo = hosts(&[&primary, &standby], "primary");
    let mut pipe = pipe_on(&primary, &conninfo, &["--heartbeat", "1s"]);
    primary.notify("jobs", "before");
    assert_eq!(pipe.read_record().payload, "before");
    primary.pg_ctl(&["stop", "-m", "fast"]);
    // While the standby is still one, every attempt passes over it, and the pipe goes on.
    pipe.assert_running_for(
        Duration::from_secs(2),
        "the standby is passed over, not the end",
    );
    standby.cluster.promote().expect("promote");
    let (records, gap) = pipe.read_until_gap();
    assert!(records.is_empty(), "{}", pipe.report());
    assert_eq!(gap.gap, "reconnect", "{}", pipe.report());
    assert!(
        gap.until.is_some(),
        "the stream is whole again{}",
        pipe.report()
    );
    assert_on(&pipe, &standby);
    // LISTEN is back on the promoted server before the gap record is written.
    standby.notify("jobs", "after");
    assert_eq!(pipe.read_record().payload, "after");
}

#[test]
fn a_listener_passes_over_a_hot_standby_and_a_command_on_one_says_what_to_do() {
    let primary = Server::start();
    let standby = primary.standby();
    // Standby first, the default target_session_attrs=any: LISTEN cannot run there, so the
    // listener takes the next host.
    let mut pipe = pipe_on(&primary, &hosts(&[&standby, &primary], "any"), &[]);
    primary.notify("jobs", "on the primary");
    assert_eq!(pipe.read_record().payload, "on the primary");
    // The standby alone: one line, status 3, the cause and the fix.
    primary
        .bare()
        .args(["-d", &hosts(&[&standby], "any"), "listen", "jobs"])
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("hot standby mode, where LISTEN cannot run")
        .stderr_has("target_session_attrs=primary");
    // notify on a standby: the server's refusal, and what to do about it.
    primary
        .bare()
        .args(["-d", &hosts(&[&standby], "any"), "notify", "probe", "x"])
        .run()
        .code(1)
        .one_line_error()
        .stderr_has("cannot execute NOTIFY during recovery")
        .stderr_has("the server is a hot standby")
        .stderr_has("target_session_attrs=primary");
    // Each of libpq's values chooses as libpq does.
    let both = |attrs| hosts(&[&primary, &standby], attrs);
    notify(&primary, &both("primary"))
        .success()
        .stderr_has(&connected_to(&primary));
    notify(&primary, &hosts(&[&standby, &primary], "read-write"))
        .success()
        .stderr_has(&connected_to(&primary));
    for attrs in ["standby", "prefer-standby", "read-only"] {
        notify(&primary, &both(attrs))
            .stderr_has(&connected_to(&standby))
            .stderr_has("during recovery");
    }
    // prefer-standby takes the primary when no standby is left; standby does not.
    notify(&primary, &hosts(&[&primary], "prefer-standby")).success();
    notify(&primary, &hosts(&[&primary], "standby"))
        .code(3)
        .one_line_error()
        .stderr_has("server is not in hot standby mode");
    primary
        .bare()
        .args(["-d", &hosts(&[&standby], "primary"), "listen", "jobs"])
        .run()
        .code(3)
        .one_line_error()
        .stderr_has("server is in hot standby mode");
}

#[test]
fn read_write_and_read_only_follow_default_transaction_read_only() {
    let read_only = Server::start_with(&tempdb::Options {
        conf: vec!["default_transaction_read_only = on".into()],
        ..Default::default()
    });
    let writable = Server::start();
    let both = |attrs| hosts(&[&read_only, &writable], attrs);
    notify(&writable, &both("read-write"))
        .success()
        .stderr_has(&connected_to(&writable));
    notify(&writable, &both("read-only")).stderr_has(&connected_to(&read_only));
    notify(&writable, &both("any")).stderr_has(&connected_to(&read_only));
    let out = notify(&writable, &hosts(&[&read_only], "read-write"));
    out.code(3)
        .one_line_error()
        .stderr_has("session is read-only");
    // Every server in the list is named, each with its reason.
    notify(&writable, &hosts(&[&writable], "read-only"))
        .code(3)
        .stderr_has("session is not read-only");
}
