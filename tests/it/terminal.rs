//! The terminal harness (`support::terminal`, tmux) proven on today's `pgnotify listen`: what
//! reaches the screen, keys and typing, Ctrl-C, the terminal left as it was found, colour as a
//! terminal decides it, resizing, and cleanup when a test panics.

use crate::support::Server;
use crate::support::terminal::Terminal;
use std::time::Duration;

/// Whether process `pid` runs (a zombie does not: once the wrapper is gone, nobody may reap it).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.chars().next()? != 'Z'))
        .unwrap_or(false)
}

/// The text-format line of the notification on `channel` with `payload`, if one is on screen.
fn notification_line<'a>(screen: &'a str, channel: &str, payload: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(&format!("  {channel}  pid=")) && l.ends_with(&format!("  {payload}")))
}

#[test]
fn listen_in_a_terminal_shows_a_notification_line() {
    let server = Server::start();
    let term = Terminal::start(&server, &["-v", "listen", "orders"], &[]);
    term.wait_for_text("listening on");
    server.notify("orders", "hello");
    let screen = term.wait_for("the notification on screen", |s| {
        notification_line(s, "orders", "hello").is_some()
    });
    let line = notification_line(&screen, "orders", "hello").unwrap();
    // `2026-11-24 12:34:56.789  orders  pid=4242  hello`: a date first, as the text format has.
    assert!(
        line.as_bytes()[..4].iter().all(u8::is_ascii_digit) && line.as_bytes()[4] == b'-',
        "{line:?}{}",
        term.report()
    );
    assert_eq!(
        term.try_exit_status(),
        None,
        "still listening{}",
        term.report()
    );
}

#[test]
fn ctrl_c_ends_listen_with_130_and_leaves_the_terminal_as_it_was() {
    let server = Server::start();
    let term = Terminal::start(&server, &["-v", "listen", "orders"], &[]);
    term.wait_for_text("listening on");
    let pid = term.pid();
    assert!(
        alive(pid),
        "pid {pid} is pgnotify's, running{}",
        term.report()
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "pgnotify", "{}", term.report());
    // In cooked mode the terminal echoes what is typed, at the cursor; BSpace erases.
    term.type_text("abc");
    term.wait_for_screen("the typed text echoed at the cursor", |s| {
        s.cursor_line().ends_with("abc")
    });
    term.keys(&["BSpace"]);
    let screen = term.wait_for_screen("the last letter erased", |s| {
        s.cursor_line().ends_with("ab")
    });
    assert_eq!(
        screen.cursor_x,
        screen.cursor_line().chars().count(),
        "the cursor is after the text{}",
        term.report()
    );
    term.keys(&["C-c"]);
    assert_eq!(term.exit_status(), 130, "{}", term.report());
    assert!(
        term.stty_is_sane(),
        "{}\n{}",
        term.stty_after(),
        term.report()
    );
    assert!(
        term.stty_restored(),
        "before:\n{}\nafter:\n{}{}",
        term.stty_before(),
        term.stty_after(),
        term.report()
    );
    assert!(!alive(pid), "pgnotify is gone{}", term.report());
}

#[test]
fn colour_follows_color_always_no_color_and_term_dumb() {
    let server = Server::start();
    let listen = ["-v", "listen", "orders"];
    let always = ["-v", "--color", "always", "listen", "orders"];
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 4] = [
        ("auto on xterm-256color", &listen, &[], true),
        ("auto with NO_COLOR=1", &listen, &[("NO_COLOR", "1")], false),
        ("auto with TERM=dumb", &listen, &[("TERM", "dumb")], false),
        (
            "--color always with NO_COLOR=1",
            &always,
            &[("NO_COLOR", "1")],
            true,
        ),
    ];
    let terms: Vec<(&str, Terminal, bool)> = cases
        .iter()
        .map(|&(name, args, env, colour)| (name, Terminal::start(&server, args, env), colour))
        .collect();
    for (_, term, _) in &terms {
        term.wait_for_text("listening on");
    }
    server.notify("orders", "paint");
    for (name, term, colour) in &terms {
        term.wait_for("the notification on screen", |s| {
            notification_line(s, "orders", "paint").is_some()
        });
        let escaped = term.screen_with_escapes();
        let line = escaped
            .lines()
            .find(|l| l.ends_with("paint"))
            .unwrap_or_else(|| panic!("{name}: no line in {escaped:?}"));
        assert_eq!(
            line.contains("\x1b["),
            *colour,
            "{name}: {line:?}{}",
            term.report()
        );
    }
}

#[test]
fn a_resize_reaches_the_terminal() {
    let server = Server::start();
    let term = Terminal::start_sized(&server, &["-v", "listen", "orders"], &[], (100, 30));
    term.wait_for_text("listening on");
    assert!(
        term.stty_before().contains("rows 30; columns 100;"),
        "{}",
        term.stty_before()
    );
    term.resize(80, 20);
    term.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(term.exit_status(), 143, "{}", term.report());
    assert!(
        term.stty_after().contains("rows 20; columns 80;"),
        "{}",
        term.stty_after()
    );
}

#[test]
fn a_panicking_test_leaves_no_terminal_behind() {
    let server = Server::start();
    let mut seen = None;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let term = Terminal::start(&server, &["-v", "listen", "orders"], &[]);
        term.wait_for_text("listening on");
        seen = Some((term.pid(), term.dir().to_owned()));
        term.wait_for_within(Duration::from_millis(200), "something never shown", |s| {
            s.contains("never shown")
        });
    }));
    let message = caught.expect_err("wait_for panicked");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    // The panic tells what was waited for and shows the screen.
    assert!(message.contains("something never shown"), "{message}");
    assert!(message.contains("listening on"), "{message}");
    let (pid, dir) = seen.unwrap();
    server.wait_until("pgnotify to be gone", || !alive(pid));
    assert!(!dir.exists(), "{} removed", dir.display());
    server.wait_until("the session to close", || server.sessions("pgnotify") == 0);
}

#[test]
fn history_keeps_what_scrolled_off_the_screen() {
    let server = Server::start();
    let term = Terminal::start_sized(&server, &["-v", "listen", "orders"], &[], (80, 10));
    term.wait_for_text("listening on");
    server.psql("SELECT pg_notify('orders', 'n' || g) FROM generate_series(1, 30) g");
    let screen = term.wait_for_screen("the last notification", |s| {
        s.above_cursor()
            .last()
            .is_some_and(|l| l.ends_with("  n30"))
    });
    assert_eq!(
        screen.cursor_line(),
        "",
        "a new line is begun{}",
        term.report()
    );
    assert_eq!(screen.cursor_x, 0, "{}", term.report());
    assert_eq!(term.cursor_line(), "", "{}", term.report());
    let on_screen = term.screen();
    assert!(on_screen.lines().count() <= 10, "{on_screen}");
    assert!(
        !on_screen.contains("  n1\n"),
        "n1 scrolled off: {on_screen}"
    );
    let history = term.history();
    let payloads: Vec<&str> = history
        .lines()
        .filter(|l| l.contains("  orders  pid="))
        .map(|l| l.rsplit("  ").next().unwrap())
        .collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("n{i}")).collect();
    assert_eq!(payloads, expected, "{history}");
    // `[exit N]` scrolls off a small pane under the stty lines; it is found all the same.
    term.keys(&["C-c"]);
    assert_eq!(term.exit_status(), 130, "{}", term.report());
    assert!(term.stty_is_sane(), "{}", term.report());
}

#[test]
fn a_bare_terminal_connects_with_the_environment_it_is_given() {
    let server = Server::start();
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    let port = server.cluster.port().to_string();
    let env = [
        ("PGHOST", socket.as_str()),
        ("PGPORT", port.as_str()),
        ("PGUSER", pgnotify::tempdb::SUPERUSER),
        ("PGDATABASE", "postgres"),
        ("PGAPPNAME", "from-env"),
    ];
    let term = Terminal::start_bare(&server, &["-v", "listen", "orders"], &env);
    term.wait_for_text("listening on");
    assert_eq!(server.sessions("from-env"), 1, "{}", term.report());
    term.keys(&["C-c"]);
    assert_eq!(term.exit_status(), 130, "{}", term.report());
}
