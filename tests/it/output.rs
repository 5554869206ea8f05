//! Output for people and for shell loops: the text format's colours, JSON and watch-table
//! sentences, `--format raw`, and the colour rules (`--color`, NO_COLOR, CLICOLOR_FORCE,
//! TERM=dumb) for the output and for clap's help, on real terminals (pexpect) and pipes.

use crate::support::{Outcome, Server};

const ESC: char = '\u{1b}';

/// pexpect runs `sys.argv[2:]` on a pseudo-terminal with the environment in `sys.argv[1]`
/// (JSON), then prints `exit N` and what the terminal showed; READY is where it may wait.
const PTY_SCRIPT: &str = r#"
import json, pexpect, sys
child = pexpect.spawn(sys.argv[2], sys.argv[3:], env=json.loads(sys.argv[1]), timeout=20)
READY
child.expect(pexpect.EOF)
child.close()
print("exit", child.exitstatus)
sys.stdout.write(child.before.decode(errors="replace"))
"#;

/// `env` and PATH, as the JSON that `PTY_SCRIPT` takes.
fn exactly(env: &[(&str, &str)]) -> String {
    let mut vars = serde_json::Map::new();
    vars.insert("PATH".into(), "/usr/bin:/bin".into());
    for (k, v) in env {
        vars.insert((*k).into(), (*v).into());
    }
    serde_json::Value::Object(vars).to_string()
}

/// Runs `python3` with pexpect: `pgnotify ARGS` on a pseudo-terminal with exactly the
/// environment given (PATH added). With `ready`, the script prints "ready" once the terminal
/// shows "listening on" and `act` runs then. Returns everything the terminal showed after that.
fn on_terminal(server: &Server, env: &[(&str, &str)], args: &[&str], act: impl FnOnce()) -> String {
    let script = PTY_SCRIPT.replace(
        "READY",
        "child.expect(\"listening on\")\nprint(\"ready\", flush=True)",
    );
    let socket = server.cluster.socket_dir().to_string_lossy().into_owned();
    let port = server.cluster.port().to_string();
    let mut running = server
        .python(&script)
        .arg(exactly(env))
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .args([
            "-h", &socket, "-p", &port, "-U", "postgres", "-d", "postgres",
        ])
        .args(["-v"])
        .args(args)
        .spawn();
    assert_eq!(running.read_line(), "ready", "{}", running.report());
    act();
    let rest = running.expect_exit(0);
    assert!(rest.starts_with("exit 0\n"), "{rest:?}{}", running.report());
    rest
}

/// `on_terminal` for `listen CHANNEL --count 1` and one notification: the line showing it.
fn shown_on_terminal(
    server: &Server,
    env: &[(&str, &str)],
    extra: &[&str],
    payload: &str,
) -> String {
    let mut args = vec!["listen", "Ter", "--count", "1"];
    args.extend(extra);
    let out = on_terminal(server, env, &args, || server.notify("Ter", payload));
    out.lines()
        .find(|l| l.contains("pid="))
        .unwrap_or_else(|| panic!("no notification on the terminal: {out:?}"))
        .to_owned()
}

/// The text line that `listen --format text ARGS` writes into a pipe for one notification.
fn text_line(server: &Server, args: &[&str], channel: &str, payload: &str) -> String {
    let mut listener = server
        .pgnotify()
        .args(["-v"])
        .args(args)
        .args(["listen", "--format", "text", channel, "--count", "1"])
        .spawn();
    listener.wait_ready();
    server.notify(channel, payload);
    let line = listener.read_line();
    listener.expect_exit(0);
    line
}

/// The SGR escape just before `name` on a line (`ESC[1;33m`), or None.
fn escape_before(line: &str, name: &str) -> Option<String> {
    let end = line.find(&format!("m{name}"))? + 1;
    let start = line[..end].rfind(ESC)?;
    Some(line[start..end].to_owned())
}

#[test]
fn raw_payloads_feed_a_while_read_loop_one_line_each() {
    let server = Server::start();
    let payloads = [
        "with  inner  spaces",
        "it's \"quoted\"",
        r"C:\dir\new file \t",
        "line one\nline two\r\nend",
        "{ \"id\": 1 }",
        "\tblanks at both ends  ",
    ];
    let mut loop_ = server
        .shell(
            r#""$PGNOTIFY" "$@" -v listen jobs --format raw --count 6 |
               while IFS= read -r p; do printf '<%s>\n' "$p"; done"#,
        )
        .spawn();
    loop_.wait_ready();
    for payload in payloads {
        server.notify("jobs", payload);
    }
    let out = loop_.expect_exit(0);
    assert_eq!(
        out,
        "<with  inner  spaces>\n\
         <it's \"quoted\">\n\
         <C:\\dir\\new file \\t>\n\
         <line one\\nline two\\r\\nend>\n\
         <{ \"id\": 1 }>\n\
         <\tblanks at both ends  >\n",
        "{}",
        loop_.report()
    );
}

#[test]
fn raw_has_no_colour_even_when_forced() {
    let server = Server::start();
    let mut listener = server
        .pgnotify()
        .args([
            "-v", "--color", "always", "listen", "--format", "raw", "c", "--count", "1",
        ])
        .spawn();
    listener.wait_ready();
    server.notify("c", "{\"k\": \"\u{1b}[31m\"}");
    // Into a pipe the payload is exactly as sent (an ESC in it included): only line breaks
    // are rewritten.
    assert_eq!(listener.read_line(), "{\"k\": \"\u{1b}[31m\"}");
    listener.expect_exit(0);
}

#[test]
fn color_always_into_a_pipe_gives_each_channel_a_stable_colour() {
    let server = Server::start();
    let always = ["--color", "always"];
    let first = text_line(&server, &always, "orders", "x");
    let again = text_line(&server, &always, "orders", "y");
    let other = text_line(&server, &always, "jobs", "x");
    let orders = escape_before(&first, "orders").unwrap_or_else(|| panic!("{first:?}"));
    assert_eq!(
        escape_before(&again, "orders").as_ref(),
        Some(&orders),
        "{again:?}"
    );
    let jobs = escape_before(&other, "jobs").unwrap_or_else(|| panic!("{other:?}"));
    assert_ne!(orders, jobs, "these two names hash to different colours");
    // The same into a pipe without --color: no escapes at all.
    let plain = text_line(&server, &[], "orders", "x");
    assert!(!plain.contains(ESC), "{plain:?}");
    assert!(plain.contains("  orders  pid="), "{plain:?}");
}

#[test]
fn json_payloads_are_compact_and_coloured_by_token() {
    let server = Server::start();
    let payload =
        "{\n  \"id\": 42,\n  \"ok\": true,\n  \"note\": \"a\\u001bb\",\n  \"big\": 1.50\n}";
    let plain = text_line(&server, &[], "c", payload);
    assert!(
        plain.ends_with("  {\"id\":42,\"ok\":true,\"note\":\"a\\u001bb\",\"big\":1.50}"),
        "{plain:?}"
    );
    let coloured = text_line(&server, &["--color", "always"], "c", payload);
    for token in ["\"id\"", "42", "true", "\"a\\u001bb\""] {
        assert!(
            escape_before(&coloured, token).is_some(),
            "{token} coloured: {coloured:?}"
        );
    }
    let key = escape_before(&coloured, "\"id\"");
    assert_ne!(
        key,
        escape_before(&coloured, "42"),
        "keys and numbers differ"
    );
    assert_ne!(
        escape_before(&coloured, "42"),
        escape_before(&coloured, "true")
    );
    assert_ne!(
        key,
        escape_before(&coloured, "\"a\\u001bb\""),
        "keys and strings differ"
    );
    // A bare number stays plain text.
    let number = text_line(&server, &["--color", "always"], "c", "42");
    assert!(number.ends_with("m  42"), "{number:?}");
}

#[test]
fn ndjson_never_has_colour() {
    let server = Server::start();
    for args in [
        &["--color", "always", "listen", "--json"][..],
        &["listen"][..],
    ] {
        let mut listener = server
            .pgnotify()
            .args(["-v"])
            .args(args)
            .args(["c", "--count", "1"])
            .env("CLICOLOR_FORCE", "1")
            .spawn();
        listener.wait_ready();
        server.notify("c", "{\"a\":1}");
        let line = listener.read_line();
        assert!(
            line.starts_with("{\"channel\":\"c\"") && !line.contains(ESC),
            "{line:?}"
        );
        listener.expect_exit(0);
    }
}

#[test]
fn the_environment_decides_colour_under_auto_and_the_flag_wins() {
    let server = Server::start();
    let xterm = ("TERM", "xterm");
    let coloured = |line: &str| escape_before(line, "Ter").is_some();
    let line = shown_on_terminal(&server, &[xterm], &[], "hello");
    assert!(
        coloured(&line) && line.contains("hello"),
        "a terminal: {line:?}"
    );
    let line = shown_on_terminal(&server, &[], &[], "hello");
    assert!(coloured(&line), "TERM unset is not dumb: {line:?}");
    let line = shown_on_terminal(&server, &[xterm, ("NO_COLOR", "1")], &[], "hello");
    assert!(
        !line.contains(ESC) && line.contains("  Ter  pid="),
        "NO_COLOR: {line:?}"
    );
    let line = shown_on_terminal(&server, &[xterm, ("NO_COLOR", "")], &[], "hello");
    assert!(coloured(&line), "an empty NO_COLOR is unset: {line:?}");
    let line = shown_on_terminal(&server, &[("TERM", "dumb")], &[], "hello");
    assert!(!line.contains(ESC), "TERM=dumb: {line:?}");
    let line = shown_on_terminal(&server, &[xterm], &["--color", "never"], "hello");
    assert!(!line.contains(ESC), "--color never: {line:?}");
    let line = shown_on_terminal(
        &server,
        &[("TERM", "dumb"), ("NO_COLOR", "1")],
        &["--color", "always"],
        "hello",
    );
    assert!(coloured(&line), "--color always wins: {line:?}");

    // CLICOLOR_FORCE: colour into a pipe too, unless it is 0 or NO_COLOR is set.
    for (env, colour) in [
        (&[("CLICOLOR_FORCE", "1")][..], true),
        (&[("CLICOLOR_FORCE", "0")][..], false),
        (&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")][..], false),
        (&[("CLICOLOR_FORCE", "1"), ("TERM", "dumb")][..], true),
    ] {
        let mut cmd = server.pgnotify();
        cmd.args(["-v", "listen", "--format", "text", "Ter", "--count", "1"]);
        for (k, v) in env {
            cmd.env(k, *v);
        }
        let mut listener = cmd.spawn();
        listener.wait_ready();
        server.notify("Ter", "x");
        let line = listener.read_line();
        listener.expect_exit(0);
        assert_eq!(coloured(&line), colour, "{env:?}: {line:?}");
    }
    let line = text_line(&server, &["--color", "never"], "Ter", "x");
    assert!(!line.contains(ESC), "{line:?}");
}

#[test]
fn on_a_terminal_nothing_in_a_payload_or_channel_drives_it() {
    let server = Server::start();
    let evil = "a\u{1b}]0;title\u{7}b\u{1b}[2Jc\nd";
    let channel = "E\u{1b}[2J\u{202e}";
    for format in ["text", "raw"] {
        let out = on_terminal(
            &server,
            &[("TERM", "xterm"), ("NO_COLOR", "1")],
            &["listen", "--format", format, "Ter", channel, "--count", "3"],
            || {
                server.notify("Ter", evil);
                server.notify("Ter", &format!("[\"{}\"]", "x\u{7f}\u{9b}"));
                server.notify(channel, "from the odd channel");
            },
        );
        // The terminal's own line ends are CR LF; nothing else may be a control character.
        let hidden = |c: char| (c.is_control() && c != '\n' && c != '\r') || c == '\u{202e}';
        assert!(!out.contains(hidden), "{format}: {out:?}");
        assert!(
            out.contains("a\\x1b]0;title\\x07b\\x1b[2Jc\\nd"),
            "{format}: {out:?}"
        );
        assert!(out.contains("x\\x7f\\x9b"), "{format}: {out:?}");
        if format == "text" {
            assert!(out.contains("  E\\x1b[2J\\u{202e}  pid="), "{out:?}");
        }
    }
}

fn help(server: &Server, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = server
        .python(&PTY_SCRIPT.replace("READY", ""))
        .arg(exactly(env))
        .arg(env!("CARGO_BIN_EXE_pgnotify"))
        .args(args)
        .run();
    out.success();
    assert!(out.stdout.contains("Usage:"), "{}", out.report());
    out.stdout
}

#[test]
fn help_is_styled_by_the_same_rules() {
    let server = Server::start();
    let xterm = ("TERM", "xterm");
    assert!(
        help(&server, &[xterm], &["--help"]).contains(ESC),
        "styled on a terminal"
    );
    assert!(help(&server, &[xterm], &["listen", "-?"]).contains(ESC));
    assert!(!help(&server, &[xterm], &["--color", "never", "--help"]).contains(ESC));
    assert!(!help(&server, &[xterm], &["listen", "--help", "--color=never"]).contains(ESC));
    assert!(!help(&server, &[xterm, ("NO_COLOR", "1")], &["--help"]).contains(ESC));
    assert!(!help(&server, &[("TERM", "dumb")], &["--help"]).contains(ESC));
    assert!(
        help(
            &server,
            &[("NO_COLOR", "1")],
            &["--color", "always", "--help"]
        )
        .contains(ESC)
    );

    // Into a pipe: plain, unless forced.
    let piped = |env: &[(&str, &str)], args: &[&str]| -> Outcome {
        let mut cmd = server.bare();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, *v);
        }
        cmd.run()
    };
    let out = piped(&[], &["--help"]);
    assert!(!out.success().stdout.contains(ESC), "{}", out.report());
    let out = piped(&[], &["--color", "always", "--help"]);
    assert!(out.success().stdout.contains(ESC), "{}", out.report());
    let out = piped(&[("CLICOLOR_FORCE", "1")], &["--help"]);
    assert!(out.success().stdout.contains(ESC), "{}", out.report());
    let out = piped(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &["--help"]);
    assert!(!out.success().stdout.contains(ESC), "{}", out.report());
    // Usage errors go to stderr, by the same rules, still with status 2.
    let out = piped(&[], &["--color", "always", "listen", "--bogus"]);
    assert!(out.code(2).stderr.contains(ESC), "{}", out.report());
    let out = piped(
        &[("CLICOLOR_FORCE", "1")],
        &["--color", "never", "listen", "--bogus"],
    );
    assert!(!out.code(2).stderr.contains(ESC), "{}", out.report());
    assert!(
        out.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        out.report()
    );
}

#[test]
fn a_watch_table_event_reads_as_a_sentence_on_a_terminal() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders VALUES (42, 'a');",
    );
    server.watch_table(&["orders"]);
    let update = || server.psql("UPDATE orders SET note = 'b' WHERE id = 42");
    let out = on_terminal(
        &server,
        &[("TERM", "xterm"), ("NO_COLOR", "1")],
        &["listen", "orders", "--count", "1"],
        || {
            update();
        },
    );
    let line = out
        .lines()
        .find(|l| l.contains("pid="))
        .unwrap_or_else(|| panic!("no event: {out:?}"));
    assert!(
        line.ends_with("  UPDATE public.orders {\"id\":42}"),
        "{line:?}"
    );
    let out = on_terminal(
        &server,
        &[("TERM", "xterm")],
        &["listen", "orders", "--count", "1"],
        || {
            update();
        },
    );
    assert!(
        out.contains("\u{1b}[1;33mUPDATE\u{1b}[0m"),
        "UPDATE in its colour: {out:?}"
    );
    // With --rows the row images follow the key; TRUNCATE has no key.
    server.watch_table(&["orders", "--rows"]);
    let mut listener = server
        .pgnotify()
        .args(["-v", "listen", "--format", "text", "orders", "--count", "2"])
        .spawn();
    listener.wait_ready();
    update();
    server.psql("TRUNCATE orders");
    let line = listener.read_line();
    assert!(
        line.ends_with(
            "  UPDATE public.orders {\"id\":42} old={\"id\":42,\"note\":\"b\"} new={\"id\":42,\"note\":\"b\"}"
        ),
        "{line:?}"
    );
    assert!(listener.read_line().ends_with("  TRUNCATE public.orders"));
    listener.expect_exit(0);
}

#[test]
fn ndjson_on_a_terminal_escapes_what_acts_on_it_in_pipe_and_listen() {
    let server = Server::start();
    let payload = "A\u{9b}2J\u{202e}B\u{7f}\u{e0041}";
    for command in ["pipe", "listen"] {
        let mut args = vec![command, "c", "--count", "1"];
        if command == "listen" {
            args.push("--json");
        }
        let out = on_terminal(&server, &[("TERM", "xterm")], &args, || {
            server.notify("c", payload)
        });
        assert!(
            out.contains(r#""payload":"A\u009b2J\u202eB\u007f\udb40\udc41""#),
            "{command}: {out:?}"
        );
        assert!(
            !out.contains('\u{9b}') && !out.contains('\u{202e}'),
            "{command}: {out:?}"
        );
    }
}
