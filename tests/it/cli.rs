//! The command line itself: usage errors, help, commands not there yet, generated files.

use crate::support::{Cmd, Server};

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--bogus"][..],
        &["listen"][..],
        &["listen", "a", "--count", "0"][..],
        &["listen", "a", "--timeout", "soon"][..],
        &["listen", "a", "--timeout", "0s"][..],
        &["listen", "a", "--json", "--format", "text"][..],
        &["notify"][..],
        &["notify", "a", "b", "--lines"][..],
        &["notify", "a", "--batch", "10"][..],
        &["-p", "70000", "listen", "a"][..],
        &["-w", "-W", "notify", "a"][..],
    ] {
        let out = Cmd::new().args(args).run();
        out.code(2);
        assert!(
            !out.stderr.is_empty() && !out.stderr.contains("panicked"),
            "{}",
            out.report()
        );
    }
}

#[test]
fn help_shows_every_command_with_examples() {
    let out = Cmd::new().arg("--help").run();
    out.success();
    for word in [
        "listen",
        "notify",
        "watch-table",
        "pipe",
        "demo",
        "Examples:",
        "--dbname",
        "--host",
    ] {
        assert!(
            out.stdout.contains(word),
            "--help lacks {word}{}",
            out.report()
        );
    }
    assert!(
        !out.stdout.contains("generate"),
        "the maintainers' command stays hidden"
    );
    for command in ["listen", "notify", "watch-table", "pipe", "demo"] {
        let out = Cmd::new().args([command, "--help"]).run();
        out.success();
        assert!(
            out.stdout.contains("Examples:"),
            "{command} --help lacks examples{}",
            out.report()
        );
    }
    Cmd::new().arg("-?").run().success();
}

#[test]
fn generated_files_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (path, content) in pgnotify::generate::files().unwrap() {
        if std::fs::read(root.join(&path)).ok().as_deref() != Some(&content[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run `cargo run -- generate`"
    );
}

#[test]
fn usage_mistakes_exit_2_everywhere() {
    // Malformed on its face, whichever part of pgnotify finds it: status 2, one line.
    let server = Server::start();
    for args in [
        &["pipe", "c", "--connect", "nohostport"][..],
        &["pipe", "c", "--connect", "127.0.0.1"],
        &["pipe", "c", "--serve", "70000"],
        &["pipe", "c", "--serve", "127.0.0.1:99999"],
        &["-d", "hots=x", "notify", "c", "x"],
        &["-d", "port=abc", "notify", "c", "x"],
        &["-d", "postgresql://u@h:port/db", "notify", "c", "x"],
        &["watch-table", "a.b.c.d"],
        &["watch-table", "a.b.c"],
        &["watch-table", "\"unterminated"],
    ] {
        server.pgnotify().args(args).run().code(2).one_line_error();
    }
    // Not malformed: a name that does not resolve to a table is a runtime error.
    server
        .pgnotify()
        .args(["watch-table", "no_such_table"])
        .run()
        .code(1)
        .one_line_error();
}
