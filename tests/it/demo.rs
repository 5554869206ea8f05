//! `demo`: it shows the round trip, cleans up after itself, on Ctrl-C too, and can keep the
//! server for the user.

use crate::support::{Cmd, Record};
use nix::sys::signal::Signal;
use std::path::PathBuf;

/// The server directory the demo announced on stderr.
fn announced_dir(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .find(|l| l.contains("the server runs in "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let rest = line.split("the server runs in ").nth(1).unwrap();
    PathBuf::from(rest.split(' ').next().unwrap())
}

/// Whether a process whose command line mentions `dir` runs (`pgrep -f`); without a working
/// pgrep nothing can be said, and the test fails rather than pass unchecked.
fn postgres_running_in(dir: &std::path::Path) -> bool {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot check for a server left running: pgrep: {e}"));
    match out.status.code() {
        Some(0) if !out.stdout.is_empty() => true,
        Some(1) => false,
        _ => panic!(
            "cannot check for a server left running: pgrep -f {}: {:?}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn demo_round_trips_and_removes_everything() {
    let out = Cmd::new().arg("demo").run();
    out.success();
    let records = out.records();
    let payloads: Vec<&str> = records
        .iter()
        .map(|r: &Record| r.payload.as_str())
        .collect();
    assert_eq!(
        payloads[..5],
        [
            "hello from pgnotify",
            "{\"order\": 42, \"status\": \"paid\"}",
            "first line",
            "second line",
            "psql works too"
        ]
    );
    // Then the table part: watch-table's events, as pipe --fetch prints them.
    let events: Vec<(String, String)> = records[5..9]
        .iter()
        .map(|r| {
            let data = r.data.as_ref().expect("--fetch adds data");
            (data["op"].to_string(), data["key"].to_string())
        })
        .collect();
    let expected = [("INSERT", 1), ("INSERT", 2), ("UPDATE", 1), ("DELETE", 2)]
        .map(|(op, id)| (format!("\"{op}\""), format!("{{\"id\":{id}}}")));
    assert_eq!(events, expected, "{}", out.report());
    let first = records[5].data.as_ref().unwrap();
    assert_eq!(first["new"]["item"], "tea", "{}", out.report());
    assert!(records[8].data.as_ref().unwrap()["new"].is_null());
    assert!(out.stderr.contains("stopped watching public.orders"));
    // The same events went to the page's stream, read by the demo as a browser would.
    assert!(
        out.stderr
            .contains("/ had the same 4 events, live over SSE"),
        "{}",
        out.report()
    );
    // Then durable delivery: a consumer reads job 1, stops, and catches up on jobs 2 and 3,
    // which were written while it was down.
    let jobs: Vec<(String, i64)> = records[9..]
        .iter()
        .map(|r| {
            (
                r.payload.clone(),
                r.id.expect("durable events carry their id"),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [
            ("job 1".into(), 1),
            ("job 2".into(), 2),
            ("job 3".into(), 3)
        ],
        "{}",
        out.report()
    );
    assert!(
        out.stderr.contains("the consumer is down now"),
        "{}",
        out.report()
    );
    assert!(
        out.stderr.contains("\"name\":\"worker\""),
        "the consumers list: {}",
        out.report()
    );
    // It ends by pointing at the console, on a server that stays.
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("pgnotify demo --keep") && last.contains("pgnotify listen -i jobs"),
        "{}",
        out.report()
    );
    assert_removed(&out);
}

/// Asserts that the server the demo announced is stopped and its directory gone.
fn assert_removed(out: &crate::support::Outcome) {
    let dir = announced_dir(&out.stderr);
    assert!(
        !dir.exists(),
        "{} was left behind{}",
        dir.display(),
        out.report()
    );
    assert!(
        !postgres_running_in(&dir),
        "a server was left running{}",
        out.report()
    );
}

/// A demo held after its listener is ready (PGNOTIFY_DEMO_PAUSE), and its server directory.
fn paused_demo() -> (crate::support::Running, PathBuf) {
    let mut demo = Cmd::new()
        .env("PGNOTIFY_DEMO_PAUSE", "30s")
        .arg("demo")
        .spawn();
    let line = demo.wait_stderr("the server runs in ");
    demo.wait_stderr("listening on");
    (demo, announced_dir(&line))
}

#[test]
fn demo_on_ctrl_c_exits_130_and_cleans_up() {
    let (mut demo, dir) = paused_demo();
    demo.signal(Signal::SIGINT);
    demo.expect_exit(130);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(!postgres_running_in(&dir));
}

#[test]
fn a_killed_demo_is_cleaned_up_by_its_guardian() {
    let (mut demo, dir) = paused_demo();
    demo.signal(Signal::SIGKILL);
    // Only the exit: the demo's listener, orphaned by the kill, holds its stdout until it ends.
    demo.wait();
    // The listener has the directory in its arguments (pgrep -f sees it). Once the guardian has
    // removed the server, it gives up by the demo's `--max-downtime 5s`: the wait covers that.
    let listener_timeout = std::time::Duration::from_secs(5);
    let start = std::time::Instant::now();
    while dir.exists() || postgres_running_in(&dir) {
        assert!(
            start.elapsed() < listener_timeout + crate::support::PATIENCE,
            "{} survived its demo",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn demo_keep_leaves_a_usable_server() {
    let out = Cmd::new().args(["demo", "--keep"]).run();
    out.success();
    let exports = out.stdout.lines().next().unwrap();
    assert!(exports.starts_with("export PGHOST="), "{}", out.report());
    assert!(
        out.stdout
            .contains("# then try the console: pgnotify listen -i jobs"),
        "{}",
        out.report()
    );
    let stop = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("# stop and remove the server: "))
        .unwrap()
        .to_owned();
    let dir = announced_dir(&out.stderr);
    // The printed settings work for pgnotify itself.
    let answered = Cmd::shell(&format!(
        "{exports}; \"$PGNOTIFY\" notify kept 'still there'"
    ))
    .run();
    let stopped = Cmd::shell(&stop).run();
    assert!(
        answered.status.success(),
        "the kept server did not answer{}",
        answered.report()
    );
    assert!(
        stopped.status.success(),
        "the printed stop command failed: {stop}{}",
        stopped.report()
    );
    assert!(!dir.exists());
}

#[test]
fn demo_keep_tls_prints_settings_that_verify_the_server_in_full() {
    let out = Cmd::new().args(["demo", "--keep", "--tls"]).run();
    out.success();
    let exports = out.stdout.lines().next().unwrap();
    let settings = exported(exports);
    assert_eq!(settings["PGHOST"], "localhost", "{}", out.report());
    assert_eq!(settings["PGSSLMODE"], "verify-full", "{}", out.report());
    let dir = announced_dir(&out.stderr);
    assert_eq!(
        PathBuf::from(&settings["PGSSLROOTCERT"]),
        dir.join("tls/ca.crt"),
        "{}",
        out.report()
    );
    let stop = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("# stop and remove the server: "))
        .unwrap()
        .to_owned();
    // psql, libpq itself, with nothing but the printed settings: over TLS, verified in full.
    let psql = pgnotify::tempdb::find_bin_dir().unwrap().join("psql");
    let answered = Cmd::shell(&format!(
        "{exports}; \"$1\" -X -Atc 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'"
    ))
    .arg(&psql)
    .run();
    let stopped = Cmd::shell(&stop).run();
    answered.success();
    assert_eq!(answered.stdout.trim(), "t", "{}", answered.report());
    assert!(
        stopped.status.success(),
        "the printed stop command failed: {stop}{}",
        stopped.report()
    );
    assert!(!dir.exists());
}

/// The variables of one `export A='x' B='y'` line.
fn exported(line: &str) -> std::collections::HashMap<String, String> {
    let rest = line
        .strip_prefix("export ")
        .unwrap_or_else(|| panic!("{line}"));
    rest.split(' ')
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
            (key.to_owned(), value.trim_matches('\'').to_owned())
        })
        .collect()
}

#[test]
fn demo_without_server_binaries_names_the_package() {
    let empty = tempfile::tempdir().unwrap();
    let out = Cmd::new()
        .env("PGNOTIFY_PG_BINDIR", empty.path())
        .arg("demo")
        .run();
    out.code(1).stderr_has("apt-get install postgresql");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("pgnotify: error: ")),
        "{}",
        out.report()
    );
}

#[test]
fn demo_keep_with_nobody_to_read_the_settings_removes_its_server() {
    // Nobody can learn where a kept server is: it is removed as without --keep, quietly.
    let out = Cmd::new().args(["demo", "--keep"]).closed_stdout().run();
    out.success();
    assert!(!out.stderr.contains("error"), "{}", out.report());
    assert_removed(&out);
}

#[test]
fn demo_with_a_closed_stderr_still_runs_to_its_end() {
    // Its messages and its listener's lines go to stderr; writing them must never fail the demo.
    let out = Cmd::new().arg("demo").closed_stderr().run();
    out.success();
    assert_eq!(out.records().len(), 12, "{}", out.report());
}

#[test]
fn the_server_binaries_print_nothing_from_a_directory_their_user_cannot_enter() {
    // As root the server runs as `postgres`, which cannot enter a private working directory:
    // the server binaries must run elsewhere, and nothing of theirs may reach the terminal
    // (it belongs in the server log).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = crate::support::Cmd::shell(r#"cd "$1" && exec "$PGNOTIFY" demo"#)
        .arg(dir.path())
        .run();
    out.success();
    for line in out.stderr.lines() {
        assert!(
            ["pgnotify", "$", "  pgnotify", "  $"]
                .iter()
                .any(|p| line.starts_with(p))
                || line.trim().is_empty(),
            "a line not from pgnotify: {line:?}{}",
            out.report()
        );
    }
    assert!(
        !out.stderr.contains("could not change directory"),
        "{}",
        out.report()
    );
}
