//! The layout of `src/` is a contract (ARCHITECTURE.md): which wing may import which, that only
//! the edge sees clap, and that the sinks and encoders never see PostgreSQL or the engine. These
//! tests read the source as text and fail when a rule is broken; the checker itself is tested
//! on a made-up tree that breaks every rule once, so it cannot pass by finding nothing.

use std::collections::BTreeSet;
use std::path::Path;

/// Every top-level module of `src/`, the wing it belongs to, and the wings it may import.
/// A module missing here fails the test: a new one must be placed (here and in
/// ARCHITECTURE.md) before it lands.
const WINGS: &[(&str, &[&str])] = &[
    // The edge: clap and the process environment stop here.
    ("main", &[]),
    ("lib", &["*"]),
    ("app", &["*"]),
    ("cli", &[]),
    (
        "config",
        &[
            "cli", "stream", "format", "pg", "watch", "durable", "LEAVES",
        ],
    ),
    ("generate", &["cli", "LEAVES"]),
    // One module per command; the console (`listen -i`) is a sink of its own.
    (
        "cmd",
        &[
            "config", "stream", "watch", "durable", "format", "sink", "pg", "LEAVES",
        ],
    ),
    // The listen/pipe engine.
    (
        "stream",
        &["pg", "watch", "durable", "format", "sink", "LEAVES"],
    ),
    // watch-table's model, SQL and catalog queries.
    ("watch", &["pg", "durable", "LEAVES"]),
    // The durable outbox: its DDL and every statement on it.
    ("durable", &["pg", "LEAVES"]),
    // Destinations, and encoders: no PostgreSQL, no engine.
    ("sink", &["format", "LEAVES"]),
    ("format", &["LEAVES"]),
    // PostgreSQL and libpq conventions.
    ("pg", &["LEAVES"]),
    // Property tests (`#[cfg(test)]`): they exercise every wing, as each wing's tests would.
    ("properties", &["*"]),
];

/// The leaves: small modules any wing may use, which import only each other.
const LEAVES: &[&str] = &[
    "backoff",
    "deadline",
    "exit",
    "keepalive",
    "msg",
    "notification",
    "panic",
    "readiness",
    "sanitize",
    "signals",
    "stats",
    "tempdb",
    "terminal",
];

/// Modules that may use clap: the edge.
const CLAP: &[&str] = &["main", "app", "cli", "config", "generate"];

/// Modules that may end the process themselves: the error path, the panic hook, signals.
const PROCESS_EXIT: &[&str] = &["exit", "panic", "signals"];

/// The top-level module a file under `src/` belongs to: `sink/peer.rs` -> `sink`.
fn module_of(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The code of a file without its full-line comments (doc comments name other wings freely).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names as `crate::NAME`, `crate::{A, B::..}` included.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // Split the group at its top-level commas; each item starts with a module name.
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    found.insert(ident(item.trim_start()));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        found.insert(ident(item.trim_start()));
    }
    found.remove("");
    found
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Whether a token appears in the code as a whole word (`clap` but not `clap_mangen`'s tail).
fn names(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        boundary(before) && boundary(after)
    })
}

/// Every broken rule in `files` (paths relative to `src/`, and their text), one line each.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let module = module_of(path);
        let code = code(text);
        let allowed: &[&str] = match WINGS.iter().find(|(m, _)| *m == module) {
            Some((_, allowed)) => allowed,
            None if LEAVES.contains(&module) => &["LEAVES"],
            None => {
                found.push(format!(
                    "src/{path}: module `{module}` belongs to no wing (place it in tests/it/layout.rs and ARCHITECTURE.md)"
                ));
                continue;
            }
        };
        for import in crate_imports(&code) {
            let ok = import == module
                || allowed.contains(&"*")
                || allowed.contains(&import.as_str())
                || (allowed.contains(&"LEAVES") && LEAVES.contains(&import.as_str()));
            if !ok {
                found.push(format!(
                    "src/{path}: `{module}` may not import `crate::{import}`"
                ));
            }
        }
        if code.contains("super::super") {
            found.push(format!(
                "src/{path}: reaches another wing through super::super; name it as crate::"
            ));
        }
        for word in ["clap", "clap_complete", "clap_mangen"] {
            if names(&code, word) && !CLAP.contains(&module) {
                found.push(format!("src/{path}: only the edge may use {word}"));
            }
        }
        if names(&code, "tokio")
            && !["pg/listener.rs", "pg/tls.rs", "pg/wire.rs"].contains(&path.as_str())
        {
            found.push(format!(
                "src/{path}: only pg/listener.rs drives the async runtime (and pg/tls.rs and \
                 pg/wire.rs implement its stream traits)"
            ));
        }
        if matches!(module, "sink" | "format") && code.contains("postgres") {
            found.push(format!(
                "src/{path}: sinks and encoders never see the postgres crate"
            ));
        }
        let exits = code.contains("process::exit")
            || code
                .lines()
                .any(|l| l.contains("process::{") && names(l, "exit"));
        if exits && !PROCESS_EXIT.contains(&module) {
            found.push(format!(
                "src/{path}: ends the process itself; return the error to the one error path (exit::report)"
            ));
        }
        for print in ["println!", "eprintln!", "print!", "eprint!"] {
            if code
                .match_indices(print)
                .any(|(i, _)| !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
            {
                found.push(format!(
                    "src/{path}: {print} panics on a closed stream; write to a locked handle"
                ));
            }
        }
    }
    found
}

fn read_tree(dir: &Path, under: &str, files: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{under}{name}");
        if entry.file_type().unwrap().is_dir() {
            read_tree(&entry.path(), &format!("{path}/"), files);
        } else if name.ends_with(".rs") {
            files.push((path, std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
}

#[test]
fn the_tree_keeps_its_layout() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, "", &mut files);
    // Not vacuous: the tree was read, wings and all.
    for must in [
        "lib.rs",
        "sink/mod.rs",
        "stream/source.rs",
        "pg/connect.rs",
        "cli.rs",
    ] {
        assert!(files.iter().any(|(p, _)| p == must), "src/{must} not read");
    }
    let broken = violations(&files);
    assert!(
        broken.is_empty(),
        "layout rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_wing_is_on_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let modules = WINGS.iter().map(|(m, _)| *m).chain(LEAVES.iter().copied());
    for wing in modules.filter(|m| !["main", "lib"].contains(m)) {
        let dir = root.join("src").join(wing);
        let named = match dir.is_dir() {
            true => format!("{wing}/"),
            false => format!("`{wing}"),
        };
        assert!(
            map.contains(&named),
            "ARCHITECTURE.md does not mention {named}"
        );
    }
}

#[test]
fn the_guards_catch_what_they_guard() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let tree = [
        file(
            "sink/peer.rs",
            "use crate::pg::quote_ident;\nuse postgres::Client;",
        ),
        file("format/text.rs", "use clap::ValueEnum;"),
        file("config.rs", "use crate::cmd::demo::DemoSettings;"),
        file("pg/connect.rs", "use crate::{exit::{self, Exit}, stream};"),
        file("exit.rs", "use crate::format::Encoder;"),
        file("stream/source.rs", "fn f() { std::process::exit(1) }"),
        file("stream/queue.rs", "use std::process::{exit, Command};"),
        file("format/psql.rs", "use tokio_postgres::Client;"),
        file("sink/server.rs", "use super::super::stream::Queue;"),
        file("stream/fetch.rs", "fn f() { tokio::spawn(x) }"),
        file("watch/sql.rs", "fn f() { println!(\"x\") }"),
        file("fresh.rs", "fn f() {}"),
        // Not broken: a comment may name anything, and a wing may import its own.
        file(
            "sink/mod.rs",
            "//! never imports crate::pg or clap\nuse crate::sink::x;",
        ),
    ];
    let found = violations(&tree);
    let expect = [
        "src/sink/peer.rs: `sink` may not import `crate::pg`",
        "src/sink/peer.rs: sinks and encoders never see the postgres crate",
        "src/format/text.rs: only the edge may use clap",
        "src/config.rs: `config` may not import `crate::cmd`",
        "src/pg/connect.rs: `pg` may not import `crate::stream`",
        "src/exit.rs: `exit` may not import `crate::format`",
        "src/stream/source.rs: ends the process itself",
        "src/stream/queue.rs: ends the process itself",
        "src/format/psql.rs: sinks and encoders never see the postgres crate",
        "src/sink/server.rs: reaches another wing through super::super",
        "src/stream/fetch.rs: only pg/listener.rs drives the async runtime",
        "src/watch/sql.rs: println! panics",
        "src/fresh.rs: module `fresh` belongs to no wing",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "not caught: {e}\nfound:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
}
