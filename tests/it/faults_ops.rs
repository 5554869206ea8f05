//! The rest of the fault matrix, for operations: an `idle_session_timeout` cutting an idle
//! listener, a thousand channels back after a restart, and the readiness race. (A SQL_ASCII
//! database sending bytes that are not UTF-8 is `sql_ascii.rs`.)

use crate::support::{Cmd, Line, PATIENCE, Server};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// `pgnotify` connected to database `db` of `server`.
fn on_database(server: &Server, db: &str) -> Cmd {
    let mut args = server.connection_args();
    let at = args.iter().position(|a| a == "-d").unwrap();
    args[at + 1] = db.to_owned();
    let mut cmd = server.bare();
    cmd.args(args);
    cmd
}

/// A superuser client of database `db`.
fn client_of(server: &Server, db: &str) -> postgres::Client {
    let args = server.connection_args();
    postgres::Client::connect(
        &format!(
            "host={} port={} user={} dbname={db}",
            args[1], args[3], args[5]
        ),
        postgres::NoTls,
    )
    .unwrap()
}

#[test]
fn idle_session_timeout_cuts_a_listener_whose_heartbeat_is_slower_and_not_one_that_beats_faster() {
    let server = Server::start();
    server.psql("CREATE DATABASE idle");
    server.psql("ALTER DATABASE idle SET idle_session_timeout = '2s'");
    // The default heartbeat (10 s) is slower than the timeout: the server ends the session,
    // and pgnotify reconnects with a gap record saying why.
    let mut slow = on_database(&server, "idle")
        .args(["-v", "pipe", "i"])
        .spawn();
    slow.wait_ready();
    let (before, gap) = slow.read_until_gap();
    assert!(before.is_empty());
    assert!(gap.reason.contains("idle-session timeout"), "{gap:?}");
    assert!(gap.until.is_some(), "{gap:?}");
    client_of(&server, "idle")
        .batch_execute("NOTIFY i, 'back'")
        .unwrap();
    assert_eq!(slow.read_record().payload, "back");
    // A heartbeat faster than the timeout keeps the session busy enough: no gap.
    let mut fast = on_database(&server, "idle")
        .args(["-v", "pipe", "--heartbeat", "1s", "i"])
        .spawn();
    fast.wait_ready();
    assert_eq!(fast.try_read_line_within(Duration::from_secs(6)), None);
    client_of(&server, "idle")
        .batch_execute("NOTIFY i, 'still the same session'")
        .unwrap();
    assert_eq!(fast.read_record().payload, "still the same session");
    assert!(
        !fast.stderr().contains("lost the connection"),
        "{}",
        fast.report()
    );
}

#[test]
fn a_thousand_channels_are_all_listened_on_again_after_a_restart() {
    let server = Server::start();
    let channels: Vec<String> = (0..1000).map(|i| format!("ch{i}")).collect();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe"])
        .args(&channels)
        .spawn();
    pipe.wait_ready();
    server.notify("ch999", "before");
    assert_eq!(pipe.read_record().payload, "before");
    let restarted = Instant::now();
    server.pg_ctl(&["restart", "-m", "fast"]);
    let (_, gap) = pipe.read_until_gap();
    // Reported once every LISTEN is back, within a sane time of the server's return.
    assert!(gap.until.is_some(), "{gap:?}");
    assert!(
        restarted.elapsed() < Duration::from_secs(15),
        "{:?}{}",
        restarted.elapsed(),
        pipe.report()
    );
    let mut db = server.client();
    let listening: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgnotify'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(listening, 1);
    for channel in ["ch999", "ch0", "ch500"] {
        server.notify(channel, channel);
        let record = pipe.read_record();
        assert_eq!(
            (record.channel.as_str(), record.payload.as_str()),
            (channel, channel)
        );
    }
}

/// An event sent the moment pgnotify says it listens (the `-v` line, or READY=1 to a service
/// manager) is never lost: each says so only once every LISTEN has committed.
#[test]
fn an_event_sent_right_after_listening_is_said_is_never_lost() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut db = server.client();
    for i in 0..50 {
        let channel = format!("race{i}");
        let payload = format!("sent at once {i}");
        let mut run = match i % 2 {
            0 => {
                let mut run = server
                    .pgnotify()
                    .args(["-v", "pipe", "--count", "1", &channel])
                    .spawn();
                run.wait_ready();
                run
            }
            _ => {
                let run = server
                    .pgnotify()
                    .env("NOTIFY_SOCKET", &path)
                    .args(["pipe", "--count", "1", "other", &channel])
                    .spawn();
                let mut buf = [0u8; 256];
                let n = manager
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("no READY=1: {e}{}", run.report()));
                assert!(buf[..n].starts_with(b"READY=1\n"));
                run
            }
        };
        db.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .unwrap();
        let Line::Notification(record) = run.read_any() else {
            panic!("a gap{}", run.report())
        };
        assert_eq!(record.payload, payload, "iteration {i}");
        assert_eq!(run.expect_exit(0), "", "iteration {i}");
    }
}
