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
        "the maintainers' tool is no command"
    );
    Cmd::new().args(["generate", "."]).run().code(2);
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
        "stale generated files {stale:?}: run `cargo run --example generate`"
    );
    // Nothing for maintainers in what users get, and a synopsis a person would write.
    for (path, content) in pgnotify::generate::files().unwrap() {
        let text = String::from_utf8(content).unwrap();
        assert!(
            !text.contains("generate"),
            "{} offers generate",
            path.display()
        );
    }
    let listen = std::fs::read_to_string(root.join("man/pgnotify-listen.1")).unwrap();
    let synopsis = listen
        .split(".SH SYNOPSIS\n")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert_eq!(
        synopsis
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", ""),
        // Channels are optional only with -i, which clap cannot say in one line.
        "pgnotify [OPTIONS] listen [OPTIONS] [CHANNEL...]"
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
        &["pipe", "c", "--serve", "[::1"],
        &["pipe", "c", "--connect", ":18083"],
        &["pipe", "c", "--connect", "[::1:18083"],
        &["pipe", "c", "--connect", "127.0.0.1:0"],
        &["-d", "hots=x", "notify", "c", "x"],
        &["-d", "port=abc", "notify", "c", "x"],
        &["-d", "postgresql://u@h:port/db", "notify", "c", "x"],
        &["watch-table", "a.b.c.d"],
        &["watch-table", "a.b.c"],
        &["watch-table", "\"unterminated"],
    ] {
        server.pgnotify().args(args).run().code(2).one_line_error();
    }
    // A service file's bad key is as malformed as the same key given with -d.
    let services = server.home.path().join("services.conf");
    std::fs::write(&services, "[svc]\nhots=x\n").unwrap();
    server
        .pgnotify()
        .args(["-d", "service=svc", "notify", "c", "x"])
        .env("PGSERVICEFILE", &services)
        .run()
        .code(2)
        .one_line_error();
    // Not malformed: a name that does not resolve to a table is a runtime error.
    server
        .pgnotify()
        .args(["watch-table", "no_such_table"])
        .run()
        .code(1)
        .one_line_error();
}

#[test]
fn the_readme_install_steps_give_a_man_page_and_completion() {
    // The README's install steps, verbatim, into a fresh HOME; `cargo install` is stood in for
    // by the binary this test run built (it installs the same file to the same place).
    let block = crate::support::readme_example(
        "cli::the_readme_install_steps_give_a_man_page_and_completion",
    );
    let steps: Vec<&str> = block
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("cargo install"))
        .collect();
    assert_eq!(steps.len(), 4, "{block}");
    let home = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -e
mkdir -p ~/.cargo/bin && cp "$PGNOTIFY" ~/.cargo/bin/
cd "$1"
{}
export PATH=~/.cargo/bin:/usr/bin:/bin
man -w pgnotify
man -w pgnotify-listen
source ~/.local/share/bash-completion/completions/pgnotify
COMP_WORDS=(pgnotify li); COMP_CWORD=1; COMP_LINE="pgnotify li"; COMP_POINT=11
_pgnotify pgnotify li pgnotify
echo "completes: ${{COMPREPLY[*]}}"
COMP_WORDS=(pgnotify pipe x --on-overflow ""); COMP_CWORD=4
_pgnotify pgnotify "" --on-overflow
echo "values: ${{COMPREPLY[*]}}"
"#,
        steps.join("\n")
    );
    let out = Cmd::shell(&script)
        .env("HOME", home.path())
        .arg(env!("CARGO_MANIFEST_DIR"))
        .run();
    out.success();
    let home = home.path().display().to_string();
    assert!(
        out.stdout
            .contains(&format!("{home}/.cargo/share/man/man1/pgnotify.1")),
        "{}",
        out.report()
    );
    assert!(out.stdout.contains("completes: listen"), "{}", out.report());
    assert!(
        out.stdout.contains("values: drop block exit"),
        "{}",
        out.report()
    );
    for file in [".zfunc/_pgnotify", ".config/fish/completions/pgnotify.fish"] {
        assert!(std::path::Path::new(&home).join(file).is_file(), "{file}");
    }
}
