//! `--exec` and `--jobs`: a command per notification, with the payload on stdin and in the
//! environment; failures reported, not fatal; jobs really concurrent.

use crate::support::Server;

#[test]
fn exec_runs_a_command_per_notification_in_order() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let command = format!(
        "{{ cat; printf ' | %s | %s | %s\\n' \"$PGNOTIFY_CHANNEL\" \"$PGNOTIFY_PAYLOAD\" \"$PGNOTIFY_PID\"; }} >> {}",
        log.display()
    );
    let mut listen = server
        .pgnotify()
        .args([
            "-v", "listen", "Ex Chan", "--count", "3", "--exec", &command,
        ])
        .spawn();
    listen.wait_ready();
    for payload in ["one", "two words", "it's $HOME; `x`"] {
        server.notify("Ex Chan", payload);
    }
    assert_eq!(listen.expect_exit(0), "", "--exec replaces the output");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, payload) in lines.iter().zip(["one", "two words", "it's $HOME; `x`"]) {
        let fields: Vec<&str> = line.split(" | ").collect();
        assert_eq!(
            &fields[..3],
            [payload, "Ex Chan", payload],
            "stdin, channel, payload: {line}"
        );
        assert!(fields[3].parse::<i32>().unwrap() > 0);
    }
}

#[test]
fn a_failing_command_is_reported_and_the_run_goes_on() {
    let server = Server::start();
    let mut pipe = server
        .pgnotify()
        .args(["-v", "pipe", "f", "--count", "2", "--exec", "exit 7"])
        .spawn();
    pipe.wait_ready();
    server.notify("f", "a");
    server.notify("f", "b");
    pipe.expect_exit(0);
    let stderr = pipe.stderr();
    assert_eq!(
        stderr
            .matches("the --exec command failed (exit status: 7)")
            .count(),
        2,
        "{stderr}"
    );
}

#[test]
fn jobs_run_at_the_same_time() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Each job registers, then waits until all four have: only concurrent jobs can finish.
    let command = format!(
        "touch {dir}/$PGNOTIFY_PAYLOAD; i=0; while [ $(ls {dir} | wc -l) -lt 4 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; [ $i -lt 200 ]",
        dir = dir.path().display()
    );
    let mut listen = server
        .pgnotify()
        .args([
            "-v", "listen", "j", "--count", "4", "--jobs", "4", "--exec", &command,
        ])
        .spawn();
    listen.wait_ready();
    for i in 1..=4 {
        server.notify("j", &i.to_string());
    }
    listen.expect_exit(0);
    assert!(
        !listen.stderr().contains("failed"),
        "a job timed out waiting for the others: {}",
        listen.stderr()
    );
}

#[test]
fn exec_runs_for_gaps_with_pgnotify_gap_set() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let command = format!(
        "{{ echo \"gap=${{PGNOTIFY_GAP:-}}\"; cat; echo; }} >> {}",
        log.display()
    );
    let mut listen = server
        .pgnotify()
        .args(["-v", "listen", "g", "--count", "1", "--exec", &command])
        .spawn();
    listen.wait_ready();
    server.client().batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgnotify'").unwrap();
    listen.wait_stderr("reconnected after");
    server.notify("g", "after");
    listen.expect_exit(0);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "gap=reconnect", "{text}");
    assert!(lines[1].starts_with("{\"gap\":\"reconnect\""), "{text}");
    assert_eq!(&lines[2..], ["", "gap=", "after"], "{text}");
}

#[test]
fn exec_options_are_checked() {
    let server = Server::start();
    server
        .pgnotify()
        .args(["listen", "a", "--jobs", "2"])
        .run()
        .code(2);
    server
        .pgnotify()
        .args(["pipe", "a", "--exec", "true", "--serve", "0"])
        .run()
        .code(2);
}
