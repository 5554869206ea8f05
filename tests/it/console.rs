//! The console, `listen -i`, driven through a real terminal (tmux: what the screen shows, as
//! rendered) against a real server: events while idle, every command, a half-typed line
//! through bursts, history across runs, completion, every way out with the terminal put back,
//! reconnects, colour.

use crate::support::terminal::{Screen, Terminal};
use crate::support::{Running, Server};
use std::time::Duration;

const PROMPT: &str = "pgnotify>";

/// `listen -i ARGS` in a terminal, once its banner is on screen (the first LISTEN committed).
fn console(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Terminal {
    let mut all = vec!["listen", "-i"];
    all.extend_from_slice(args);
    let term = Terminal::start(server, &all, env);
    term.wait_for_text("Type help for commands");
    term
}

/// Types `line` and presses Enter.
fn enter(term: &Terminal, line: &str) {
    term.type_text(line);
    term.keys(&["Enter"]);
}

/// Waits until the prompt line reads `PROMPT typed`, the cursor at its end.
fn prompt_reads(term: &Terminal, typed: &str) -> Screen {
    let want = format!("{PROMPT} {typed}").trim_end().to_owned();
    term.wait_for_screen(&format!("the prompt line {want:?}"), |s| {
        s.cursor_line() == want && s.cursor_x == PROMPT.len() + 1 + typed.chars().count()
    })
}

/// The text-format line of an event, if it is on screen.
fn event_line<'a>(screen: &'a str, channel: &str, payload: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(&format!("  {channel}  pid=")) && l.ends_with(&format!("  {payload}")))
}

fn wait_event(term: &Terminal, channel: &str, payload: &str) -> String {
    term.wait_for(&format!("the event {payload:?} on {channel:?}"), |s| {
        event_line(s, channel, payload).is_some()
    })
}

/// The console's backend, stopped (SIGSTOP) until this is dropped, also when a test fails: a
/// stopped backend would hold the server's shutdown.
struct Paused(nix::unistd::Pid);

impl Paused {
    fn backend_of(server: &Server) -> Paused {
        let pid = nix::unistd::Pid::from_raw(server.backend_pid("pgnotify"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// A `listen --json` elsewhere, once it listens: what really reached the server.
fn witness(server: &Server, channel: &str, count: usize) -> Running {
    let mut running = server
        .pgnotify()
        .args(["-v", "listen", channel, "--json", "--count"])
        .arg(count.to_string())
        .spawn();
    running.wait_stderr("listening on");
    running
}

#[test]
fn events_appear_while_idle_and_a_half_typed_line_survives_a_burst() {
    let server = Server::start();
    let term = console(&server, &["orders"], &[]);
    prompt_reads(&term, "");
    server.notify("orders", "first");
    wait_event(&term, "orders", "first");
    // Above the prompt, which is still the last line and empty.
    let screen = prompt_reads(&term, "");
    assert!(
        screen
            .above_cursor()
            .iter()
            .any(|l| event_line(l, "orders", "first").is_some()),
        "{}",
        term.report()
    );

    let typed = "notify orders half-typed";
    term.type_text(typed);
    prompt_reads(&term, typed);
    for i in 0..20 {
        server.notify("orders", &format!("single-{i}"));
    }
    wait_event(&term, "orders", "single-19");
    prompt_reads(&term, typed);

    // 10,000 in one transaction while more is typed, key by key.
    std::thread::scope(|s| {
        s.spawn(|| {
            server
                .psql("SELECT count(pg_notify('orders', g::text)) FROM generate_series(1, 10000) g")
        });
        for c in " more".chars() {
            term.type_text(&c.to_string());
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let typed = format!("{typed} more");
    // The window's first 40 are shown (the single ones among them), the rest summarised.
    term.wait_for_text("more on orders, the last: 10000");
    let screen = prompt_reads(&term, &typed);
    // Nothing garbled: above the prompt, only whole event lines, summaries and the banner.
    for line in screen.above_cursor() {
        let event = line.contains("  orders  pid=");
        let ours = line.starts_with("listening on")
            || line.starts_with("Type help")
            || line.starts_with("… ");
        assert!(
            (event || ours || line.is_empty()) && !line.contains("half-typed"),
            "garbled line {line:?}{}",
            term.report()
        );
    }
    term.keys(&["Enter"]);
    term.wait_for_text("sent to \"orders\"");
    wait_event(&term, "orders", "half-typed more");
    prompt_reads(&term, "");
}

#[test]
fn listen_unlisten_notify_and_sql_take_effect_on_the_connection() {
    let server = Server::start();
    let term = console(&server, &[], &[]);
    term.wait_for_text("listening on no channel yet");
    enter(&term, r#"listen Orders "order events""#);
    term.wait_for_text(r#"listening on "Orders", "order events""#);
    server.notify("Orders", "o1");
    server.notify("order events", "e1");
    wait_event(&term, "Orders", "o1");
    wait_event(&term, "order events", "e1");

    // notify goes out on the console's connection, quoted as the README says.
    let mut seen = witness(&server, "Orders", 3);
    enter(&term, r#"notify Orders 'it''s "quoted"'"#);
    enter(&term, r#"notify Orders "say \"hi\" \\ there""#);
    enter(&term, r#"notify Orders {"id": 1}"#);
    let payloads: Vec<String> = (0..3).map(|_| seen.read_record().payload).collect();
    assert_eq!(
        payloads,
        [r#"it's "quoted""#, r#"say "hi" \ there"#, r#"{"id": 1}"#]
    );
    assert_eq!(seen.wait().code(), Some(0));
    wait_event(&term, "Orders", r#"{"id":1}"#);

    enter(&term, "unlisten Orders");
    term.wait_for_text(r#"stopped listening on "Orders""#);
    server.notify("Orders", "gone-1");
    server.notify("order events", "still-1");
    let screen = wait_event(&term, "order events", "still-1");
    assert!(!screen.contains("gone-1"), "{}", term.report());

    // psql's habits: SQL with SQL's folding, and the hint that says so.
    enter(&term, "LISTEN Big;");
    term.wait_for_text("note: SQL folds unquoted names: Big is the channel \"big\"");
    term.wait_for_text(r#"listening on "big""#);
    enter(&term, "NOTIFY big, 'sql''s; payload';");
    wait_event(&term, "big", "sql's; payload");
    enter(&term, "SELECT pg_notify('order events', 'via select');");
    wait_event(&term, "order events", "via select");
    enter(&term, "SELECT 1;");
    term.wait_for_text("error: only LISTEN, UNLISTEN, NOTIFY and SELECT pg_notify(...) are run");
    enter(&term, "notify x 'open");
    term.wait_for_text("error: unterminated '...'");
    enter(&term, &format!("listen {}", "c".repeat(64)));
    term.wait_for_text("\" is 64 bytes long");

    enter(&term, "channels");
    let screen = term.wait_for_text("no longer listening on:");
    let row = |name: &str| {
        screen
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        row("\"order events\"").as_deref(),
        Some("\"order events\" 3 events")
    );
    assert_eq!(row("\"big\"").as_deref(), Some("\"big\" 1 event"));
    assert_eq!(row("\"Orders\"").as_deref(), Some("\"Orders\" 4 events"));

    enter(&term, "unlisten *");
    term.wait_for_text(r#"stopped listening on "order events", "big""#);
    enter(&term, "channels");
    term.wait_for_text("not listening on any channel");
    // Really UNLISTENed on the server: nothing of these arrives.
    enter(&term, "listen probe");
    term.wait_for_text(r#"listening on "probe""#);
    server.notify("big", "after-unlisten-all");
    server.notify("probe", "probe-1");
    let screen = wait_event(&term, "probe", "probe-1");
    assert!(!screen.contains("after-unlisten-all"), "{}", term.report());
}

#[test]
fn the_prompt_comes_back_at_once_while_the_server_takes_its_time() {
    let server = Server::start();
    let term = console(&server, &["orders"], &[]);
    // The console's backend stops answering (as a busy or hung server would).
    let paused = Paused::backend_of(&server);
    enter(&term, "listen zz");
    // Typed while LISTEN waits for its answer: raw mode, the prompt's own line, unbroken.
    term.type_text("typed while waiting");
    let screen = prompt_reads(&term, "typed while waiting");
    assert!(
        !screen.text().contains("listening on \"zz\""),
        "{}",
        term.report()
    );
    drop(paused);
    term.wait_for_text(r#"listening on "zz""#);
    prompt_reads(&term, "typed while waiting");
    term.keys(&["C-u"]);

    // Typed ahead, faster than the editor reads (a paste without bracketed paste, ssh):
    // every line runs.
    term.type_text("notify orders ahead-1\rnotify orders ahead-2\rnotify orders ahead-3\r");
    wait_event(&term, "orders", "ahead-3");
    wait_event(&term, "orders", "ahead-1");
    wait_event(&term, "orders", "ahead-2");

    // A paste of several lines is several commands.
    term.type_text("\u{1b}[200~notify orders one\nnotify orders two\u{1b}[201~");
    term.keys(&["Enter"]);
    wait_event(&term, "orders", "one");
    wait_event(&term, "orders", "two");
    enter(&term, "unlisten zz nothere");
    term.wait_for_text(r#"stopped listening on "zz" (was not listening on "nothere")"#);
}

#[test]
fn quitting_with_answers_still_to_come_says_so_and_exits_at_once() {
    let server = Server::start();
    // psql's NOTIFY Orders would never reach "Orders": the console says so, as listen does.
    let term = console(&server, &["Orders"], &[]);
    term.wait_for_text("names are exact: psql's unquoted NOTIFY Orders goes to \"orders\"");
    enter(&term, "listen Jobs");
    term.wait_for_text("listening on \"Jobs\"; names are exact");
    let paused = Paused::backend_of(&server);
    enter(&term, "notify Orders maybe");
    enter(&term, "quit");
    let status = term.exit_status();
    drop(paused);
    assert_eq!(status, 0, "{}", term.report());
    term.wait_for_text("leaving with 1 command(s) unanswered: a notify among them may or may");
}

#[test]
fn with_wait_the_console_opens_first_and_says_when_the_server_comes() {
    let server = Server::start();
    server.pg_ctl(&["stop", "-m", "fast"]);
    let term = Terminal::start(&server, &["listen", "-i", "--wait", "orders"], &[]);
    term.wait_for_text("connecting (--wait), to listen on \"orders\"");
    enter(&term, "listen later");
    term.wait_for_text(r#"not connected yet: listening on "later" once connected"#);
    enter(&term, "notify orders early");
    term.wait_for_text("error: not connected yet: nothing was sent");
    server.pg_ctl(&["start", "-w"]);
    term.wait_for_text("pgnotify: connected: listening on \"orders\", \"later\"");
    server.notify("later", "arrived");
    wait_event(&term, "later", "arrived");
}

#[test]
fn format_filter_clear_and_help_change_what_is_shown() {
    let server = Server::start();
    let term = console(&server, &["jobs"], &[]);
    enter(&term, "format json");
    term.wait_for_text("format: json");
    server.notify("jobs", "j1");
    term.wait_for_text(r#"{"channel":"jobs","payload":"j1","pid":"#);
    enter(&term, "format psql");
    server.notify("jobs", "p1");
    term.wait_for_text(r#"Asynchronous notification "jobs" with payload "p1" received from server process with PID"#);
    enter(&term, "format raw");
    term.wait_for_text("format: raw");
    server.notify("jobs", "raw payload\nsecond line");
    term.wait_for(r"the raw line", |s| {
        s.lines().any(|l| l == r"raw payload\nsecond line")
    });
    // What acts on a terminal is escaped in NDJSON there too (the same JSON once parsed).
    enter(&term, "format json");
    server.notify("jobs", "A\u{9b}2J\u{202e}B");
    term.wait_for_text(r#""payload":"A\u009b2J\u202eB""#);
    enter(&term, "format yaml");
    term.wait_for_text("error: unknown format \"yaml\" (one of: text, json, psql, raw)");
    enter(&term, "format text");

    enter(&term, "filter keep");
    term.wait_for_text("filter: only payloads containing \"keep\"");
    server.notify("jobs", "drop-1");
    server.notify("jobs", "keep-1");
    let screen = wait_event(&term, "jobs", "keep-1");
    assert!(!screen.contains("drop-1"), "{}", term.report());
    enter(&term, "filter");
    term.wait_for_text("filter: payloads containing \"keep\" (1 hidden so far)");
    enter(&term, "filter off");
    server.notify("jobs", "drop-2");
    wait_event(&term, "jobs", "drop-2");

    enter(&term, "help");
    term.wait_for_text("notify CHANNEL [PAYLOAD]");
    enter(&term, "clear");
    term.wait_for_screen("a cleared screen", |s| {
        s.lines.len() == 1 && s.cursor_line() == PROMPT
    });
    enter(&term, "bogus");
    term.wait_for_text("error: unknown command \"bogus\"; type help");
    enter(&term, "quit");
    assert_eq!(term.exit_status(), 0, "{}", term.report());
    assert!(term.stty_restored(), "{}", term.report());
}

#[test]
fn history_is_kept_across_runs_and_tab_completes() {
    let server = Server::start();
    let term = console(&server, &["orders", "order events"], &[]);
    term.type_text("lis");
    term.keys(&["Tab"]);
    prompt_reads(&term, "listen ");
    term.keys(&["C-u"]);
    term.type_text("notify orders-x");
    term.keys(&["C-u"]);
    term.type_text("notify ord");
    term.keys(&["Tab", "Tab"]);
    // Two candidates: both are listed, the common part is filled in.
    term.wait_for_text("\"order events\"");
    term.keys(&["C-u"]);
    term.type_text("format j");
    term.keys(&["Tab"]);
    prompt_reads(&term, "format json ");
    term.keys(&["C-u"]);
    enter(&term, "notify orders remembered");
    term.wait_for_text("sent to \"orders\"");
    enter(&term, " notify orders secret");
    term.wait_for_text("sent to \"orders\"");
    enter(&term, "quit");
    assert_eq!(term.exit_status(), 0, "{}", term.report());

    let file = server.home.path().join(".local/share/pgnotify/history");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("notify orders remembered"), "{saved}");
    assert!(
        !saved.contains("secret"),
        "a line starting with a space is not kept: {saved}"
    );

    let again = console(&server, &["orders"], &[]);
    again.keys(&["Up"]);
    prompt_reads(&again, "quit");
    again.keys(&["Up"]);
    prompt_reads(&again, "notify orders remembered");

    // XDG_DATA_HOME decides where it lives.
    let data = tempfile::tempdir().unwrap();
    let data_home = data.path().to_str().unwrap();
    let xdg = console(&server, &["orders"], &[("XDG_DATA_HOME", data_home)]);
    enter(&xdg, "channels");
    xdg.wait_for_text("listening on:");
    enter(&xdg, "quit");
    assert_eq!(xdg.exit_status(), 0, "{}", xdg.report());
    let saved = std::fs::read_to_string(data.path().join("pgnotify/history")).unwrap();
    assert!(saved.contains("channels"), "{saved}");

    // A history that cannot be written is said once, then the console goes on without it.
    let broken = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(broken.path().join("pgnotify/history")).unwrap();
    let broken_home = broken.path().to_str().unwrap();
    let term = console(&server, &["orders"], &[("XDG_DATA_HOME", broken_home)]);
    for line in ["channels", "format", "notify orders after-broken"] {
        enter(&term, line);
    }
    wait_event(&term, "orders", "after-broken");
    let said = term.history();
    assert_eq!(
        said.matches("could not save the console's history").count(),
        1,
        "{}",
        term.report()
    );
}

#[test]
fn ctrl_d_quit_and_a_second_ctrl_c_exit_0_and_put_the_terminal_back() {
    let server = Server::start();
    for (name, leave) in [
        ("Ctrl-D", &["C-d"][..]),
        ("quit", &["q", "u", "i", "t", "Enter"][..]),
        ("\\q", &["\\", "q", "Enter"][..]),
    ] {
        let term = console(&server, &["orders"], &[]);
        term.keys(leave);
        assert_eq!(term.exit_status(), 0, "{name}{}", term.report());
        assert!(term.stty_restored(), "{name}{}", term.report());
        // The shell's prompt starts on a line of its own.
        assert!(
            term.screen().lines().any(|l| l.starts_with("[exit 0]")),
            "{name}{}",
            term.report()
        );
    }

    let term = console(&server, &["orders"], &[]);
    term.type_text("something typed");
    prompt_reads(&term, "something typed");
    term.keys(&["C-c"]);
    // The line is cleared; the console stays.
    prompt_reads(&term, "");
    term.keys(&["C-c"]);
    term.wait_for_text("(Ctrl-C again, Ctrl-D or quit to leave)");
    assert_eq!(term.try_exit_status(), None, "{}", term.report());
    // Still working between the two.
    server.notify("orders", "between");
    wait_event(&term, "orders", "between");
    term.keys(&["C-c"]);
    assert_eq!(term.exit_status(), 0, "{}", term.report());
    assert!(term.stty_restored(), "{}", term.report());
}

#[test]
fn signals_from_outside_end_it_with_128_plus_n_and_put_the_terminal_back() {
    use nix::sys::signal::Signal;
    let server = Server::start();
    for (signal, status) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let term = console(&server, &["orders"], &[]);
        // In raw mode, with a line half typed and a burst being summarised.
        term.type_text("half");
        prompt_reads(&term, "half");
        server.psql("SELECT count(pg_notify('orders', g::text)) FROM generate_series(1, 5000) g");
        term.wait_for_text("more on orders");
        term.signal(signal);
        assert_eq!(term.exit_status(), status, "{signal}{}", term.report());
        assert!(term.stty_restored(), "{signal}{}", term.report());
        assert!(term.stty_is_sane(), "{signal}{}", term.report());
    }
}

#[test]
fn sigterm_ends_a_console_whose_terminal_takes_nothing() {
    let server = Server::start();
    // A terminal whose output nobody reads: the pty's buffer fills, and every write to it
    // blocks, the editor's and the printer's.
    let script = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execv(os.environ["PGNOTIFY"], [os.environ["PGNOTIFY"]] + sys.argv[1:])
print("pid", pid, flush=True)
_, status = os.waitpid(pid, 0)
print("exit", os.waitstatus_to_exitcode(status), flush=True)
"#;
    let mut running = server
        .python(script)
        .args(server.connection_args())
        .args(["listen", "-i", "stall"])
        .spawn();
    let pid: i32 = running
        .read_line()
        .strip_prefix("pid ")
        .unwrap()
        .parse()
        .unwrap();
    // Should it hang, it must not outlive the test.
    struct Reaper(i32);
    impl Drop for Reaper {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _reaper = Reaper(pid);
    server.wait_until("the console listens", || {
        server
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgnotify' \
                 AND state = 'idle' AND query LIKE 'LISTEN%'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    for _ in 0..8 {
        server.psql(
            "SELECT count(pg_notify('stall', repeat('x', 7000) || g)) \
             FROM generate_series(1, 1000) g",
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        .unwrap();
    let kib: u64 = hwm.trim_end_matches(" kB").parse().unwrap();
    // 8 MB of payloads sent, nothing drawn: the screen holds at most 256 KiB of text.
    assert!(kib < 40 * 1024, "VmHWM {hwm}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let ended = running.try_read_line_within(Duration::from_secs(10));
    assert_eq!(ended.as_deref(), Some("exit 143"), "{}", running.report());
}

#[test]
fn a_run_that_ends_by_itself_shows_its_last_lines_and_puts_the_terminal_back() {
    let server = Server::start();
    // Several times: the last lines must win the race with the exit every time.
    for i in 0..3 {
        let db = format!("gone{i}");
        server.psql(&format!("CREATE DATABASE {db}"));
        let term = Terminal::start(&server, &["-d", &db, "listen", "-i", "orders"], &[]);
        term.wait_for_text("Type help for commands");
        term.type_text("half");
        prompt_reads(&term, "half");
        server.psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
        assert_eq!(term.exit_status(), 3, "{}", term.report());
        let seen = term.history();
        assert!(
            seen.contains("-- gave up: notifications since"),
            "run {i}{}",
            term.report()
        );
        assert!(term.stty_restored(), "{}", term.report());
    }
}

#[test]
fn a_panic_while_the_editor_is_in_raw_mode_puts_the_terminal_back() {
    let server = Server::start();
    let term = console(&server, &["orders"], &[]);
    term.type_text("half");
    prompt_reads(&term, "half");
    // The debug build's screen panics on this payload (a release build has no such thing).
    server.notify("orders", "pgnotify:test:panic");
    assert_eq!(term.exit_status(), 1, "{}", term.report());
    assert!(term.stty_restored(), "{}", term.report());
    term.wait_for_text("pgnotify: internal error:");
}

#[test]
fn a_server_restart_shows_a_reconnect_line_and_the_console_keeps_every_channel() {
    let server = Server::start();
    let term = console(&server, &["orders"], &[]);
    enter(&term, "listen added");
    term.wait_for_text(r#"listening on "added""#);
    server.pg_ctl(&["restart", "-m", "fast"]);
    term.wait_for_text("-- reconnected: notifications sent between");
    server.notify("added", "after-restart");
    server.notify("orders", "orders-after");
    wait_event(&term, "added", "after-restart");
    wait_event(&term, "orders", "orders-after");

    // Down for a while: the set changes at once, notify says nothing was sent.
    server.pg_ctl(&["stop", "-m", "fast"]);
    term.wait_for_text("lost the connection");
    enter(&term, "listen during");
    term.wait_for_text(r#"not connected (reconnecting): listening on "during" once reconnected"#);
    enter(&term, "unlisten added");
    term.wait_for_text(r#"stopped listening on "added" once reconnected"#);
    enter(&term, "notify orders lost");
    term.wait_for_text("error: not connected (reconnecting): nothing was sent");
    server.pg_ctl(&["start", "-w"]);
    term.wait_for("a second reconnect line", |s| {
        s.matches("-- reconnected: notifications sent between")
            .count()
            >= 2
            || term.history().matches("-- reconnected").count() >= 2
    });
    server.notify("added", "not-any-more");
    server.notify("during", "during-1");
    let screen = wait_event(&term, "during", "during-1");
    assert!(!screen.contains("not-any-more"), "{}", term.report());
    enter(&term, "notify orders typed-after");
    wait_event(&term, "orders", "typed-after");
    assert_eq!(term.try_exit_status(), None, "{}", term.report());
}

#[test]
fn hundreds_of_commands_and_restarts_leave_threads_and_descriptors_flat() {
    let server = Server::start();
    let term = console(&server, &["orders"], &[]);
    let pid = term.pid();
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .map(|d| d.count())
            .unwrap()
    };
    // Every thread the console has is running once it has answered one command.
    enter(&term, "notify orders warm");
    wait_event(&term, "orders", "warm");
    let (threads, fds) = (count("task"), count("fd"));
    for round in 0..3 {
        // 100 commands in one paste: LISTEN, UNLISTEN, NOTIFY, channels.
        let mut paste = String::from("\u{1b}[200~");
        for i in 0..25 {
            paste.push_str(&format!(
                "listen c{i}\nnotify c{i} r{round}-{i}\nunlisten c{i}\nchannels\n"
            ));
        }
        paste.push_str(&format!("notify orders done-{round}\u{1b}[201~"));
        term.type_text(&paste);
        term.keys(&["Enter"]);
        // Its answer, far above by now (the events themselves may be summarised): all 101
        // answered, the warm-up's and each round's last `sent to "orders"` among them.
        term.wait_for(&format!("round {round} answered"), |_| {
            term.history().matches("sent to \"orders\"").count() == round + 2
        });
        server.pg_ctl(&["restart", "-m", "fast"]);
        term.wait_for(&format!("reconnect {}", round + 1), |_| {
            term.history().matches("-- reconnected:").count() > round
        });
    }
    // Every LISTEN was undone: only "orders" is listened on, on the server too.
    let listings = |t: &Terminal| t.history().matches("\nlistening on:\n").count();
    let before = listings(&term);
    enter(&term, "channels");
    term.wait_for("the last listing", |_| listings(&term) > before);
    let history = term.history();
    let last = history.rsplit("\nlistening on:\n").next().unwrap();
    let listened = last.split("no longer listening on:").next().unwrap();
    assert_eq!(
        listened.split_whitespace().next(),
        Some("\"orders\""),
        "{listened}"
    );
    assert_eq!(listened.matches("events").count(), 1, "{listened}");
    // Nothing arrives on c0 any more: its count stays at the three rounds'.
    server.notify("c0", "not-listened");
    enter(&term, "notify orders after-all");
    term.wait_for("the last answer", |_| {
        term.history().matches("sent to \"orders\"").count() == 5
    });
    let before = listings(&term);
    enter(&term, "channels");
    term.wait_for("the listing after", |_| listings(&term) > before);
    let history = term.history();
    let last = history.rsplit("\nlistening on:\n").next().unwrap();
    let c0 = last.lines().find(|l| l.trim_start().starts_with("\"c0\""));
    assert_eq!(
        c0.map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
        Some("\"c0\" 3 events".to_owned()),
        "{last}"
    );
    assert_eq!(count("task"), threads, "threads{}", term.report());
    assert!(
        count("fd") <= fds,
        "descriptors: {} then {}",
        fds,
        count("fd")
    );
    let hwm: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    assert!(hwm < 40 * 1024, "VmHWM {hwm} kB");
}

/// Whether the line of `payload`'s event carries colour escapes.
fn coloured_event(term: &Terminal, payload: &str) -> bool {
    let screen = term.wait_for(&format!("the event {payload:?}"), |s| s.contains(payload));
    let _ = screen;
    let escaped = term.screen_with_escapes();
    let line = escaped
        .lines()
        .find(|l| l.contains(payload))
        .unwrap_or_default()
        .to_owned();
    line.contains('\u{1b}')
}

/// A name, flags, environment, and whether events are coloured.
type ColourCase<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], bool);

#[test]
fn colour_follows_the_rules_in_the_console_too() {
    let server = Server::start();
    let cases: [ColourCase; 8] = [
        ("auto on a terminal", &[], &[], true),
        ("NO_COLOR", &[], &[("NO_COLOR", "1")], false),
        (
            "NO_COLOR beats CLICOLOR_FORCE",
            &[],
            &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")],
            false,
        ),
        ("--color never", &["--color", "never"], &[], false),
        (
            "--color always beats NO_COLOR",
            &["--color", "always"],
            &[("NO_COLOR", "1")],
            true,
        ),
        ("TERM=dumb", &[], &[("TERM", "dumb")], false),
        ("CLICOLOR=0", &[], &[("CLICOLOR", "0")], false),
        (
            "CLICOLOR_FORCE beats CLICOLOR=0",
            &[],
            &[("CLICOLOR", "0"), ("CLICOLOR_FORCE", "1")],
            true,
        ),
    ];
    for (i, (name, flags, env, coloured)) in cases.into_iter().enumerate() {
        let mut args = flags.to_vec();
        args.push("orders");
        let term = console(&server, &args, env);
        let payload = format!("colour-case-{i}");
        server.notify("orders", &payload);
        assert_eq!(
            coloured_event(&term, &payload),
            coloured,
            "{name}{}",
            term.report()
        );
        // On a terminal that cannot move the cursor, commands still work.
        enter(&term, &format!("notify orders typed-{i}"));
        term.wait_for_text(&format!("typed-{i}"));
        term.wait_for_text("sent to \"orders\"");
        enter(&term, "quit");
        assert_eq!(term.exit_status(), 0, "{name}{}", term.report());
    }
}

#[test]
fn the_console_needs_a_terminal_and_refuses_what_does_not_apply() {
    let server = Server::start();
    server
        .pgnotify()
        .args(["listen", "-i", "orders"])
        .run()
        .code(2)
        .one_line_error()
        .stderr_has("standard input and output must be a terminal");
    for conflict in [
        &["--count", "1"][..],
        &["--timeout", "1s"],
        &["--exec", "true"],
    ] {
        server
            .pgnotify()
            .args(["listen", "-i", "orders"])
            .args(conflict)
            .run()
            .code(2);
    }
    // Without -i, channels are still required.
    server.pgnotify().args(["listen"]).run().code(2);
}

#[test]
fn notify_behind_a_held_notification_lock_is_refused_and_the_console_stays_connected() {
    // Another commit holds the lock every notifying commit takes (it waits for a synchronous
    // standby): the console's notify waits 2 s for it, then says it was not sent; the
    // connection is not taken for dead, and once the lock is free notify works again.
    let server = Server::start();
    let term = console(&server, &["-v", "jobs"], &[]);
    let held = server.hold_notification_lock("jobs", "held");
    enter(&term, "notify jobs first");
    term.wait_for_text("not sent: another transaction held the lock");
    held.release();
    wait_event(&term, "jobs", "held");
    enter(&term, "notify jobs second");
    term.wait_for_text("sent to \"jobs\"");
    wait_event(&term, "jobs", "second");
    let history = term.history();
    assert!(!history.contains("reconnecting"), "{}", term.report());
    assert!(
        event_line(&history, "jobs", "first").is_none(),
        "{}",
        term.report()
    );
}
