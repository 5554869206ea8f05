//! Property tests: the parsers and encoders that take anyone's text, fed generated input.
//!
//! One file per target: `conninfo` (connection strings and URIs), `files` (the password and
//! service files), `duration`, `ident` (channel names, and identifier quoting for
//! `watch-table`), `json` (the NDJSON encoder) and `text` (the human formats). Each property
//! runs [`CASES`] cases, or `PROPTEST_CASES` when that is set (`PROPTEST_CASES=100000 cargo
//! test --lib properties` for a longer run). A failure is shrunk to a small input and recorded
//! in `proptest-regressions/properties/<file>.txt`, which is committed: every later run tries
//! the recorded inputs first. Each crash found also became a plain `#[test]` with the input.
//!
//! Owns: test code only (`#[cfg(test)]`). Imports any wing, as the tests of each wing would.

mod conninfo;
mod duration;
mod files;
mod ident;
mod json;
mod text;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// Cases per property when `PROPTEST_CASES` is not set: all of them take 3 to 10 s in a
/// debug build on a shared 2-core machine (10,000 each took 30 s).
const CASES: u32 = 1024;

/// The configuration of every property: [`CASES`] unless `PROPTEST_CASES` says otherwise,
/// and failures recorded beside the source, under `proptest-regressions/`.
fn config() -> Config {
    // Config::default() reads PROPTEST_CASES; only its absence gets our bound.
    let from_env = std::env::var_os("PROPTEST_CASES").is_some();
    let base = Config::default();
    Config {
        cases: if from_env { base.cases } else { CASES },
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..base
    }
}

/// Characters that break parsers and terminals: controls of C0 and C1, DEL, NUL, the line
/// and paragraph separators, a bidirectional override, the byte-order mark, a tag
/// character, quotes, escapes, and the separators of every syntax under test.
const NASTY: &[char] = &[
    '\0',
    '\n',
    '\r',
    '\t',
    '\x0b',
    '\x0c',
    '\x1b',
    '\x07',
    '\x08',
    '\x7f',
    '\u{80}',
    '\u{85}',
    '\u{9b}',
    '\u{9f}',
    '\u{a0}',
    '\u{ad}',
    '\u{2028}',
    '\u{2029}',
    '\u{202e}',
    '\u{200b}',
    '\u{feff}',
    '\u{e0041}',
    '\u{fffd}',
    '"',
    '\'',
    '\\',
    ':',
    '=',
    '#',
    '%',
    '@',
    '/',
    '?',
    '&',
    '*',
    '[',
    ']',
    ',',
    '.',
    ' ',
    '$',
    '{',
    '}',
    'é',
    '日',
    'A',
    'a',
    '0',
    '_',
];

/// Any string, weighted towards [`NASTY`] characters.
fn wild_string(max: usize) -> impl Strategy<Value = String> {
    let c = prop_oneof![
        3 => proptest::sample::select(NASTY),
        1 => any::<char>(),
    ];
    prop_oneof![
        proptest::collection::vec(c, 0..max).prop_map(|v| v.into_iter().collect()),
        proptest::string::string_regex(&format!("(?s).{{0,{max}}}"))
            .unwrap_or_else(|e| panic!("regex: {e}")),
    ]
}

/// Whether text holds a character that acts on a terminal: C0 and C1 controls and DEL.
fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// A dotted chain of SQL identifiers read by PostgreSQL's scanner (scan.l): a quoted part
/// ends at a lone `"` and reads `""` as one quote (an empty one is an error); an unquoted
/// part is a letter, `_` or non-ASCII character, then those, digits and `$`, and is folded to
/// lower case (ASCII only, as `downcase_identifier` does in a UTF-8 database). Keywords are
/// not checked. `None` when PostgreSQL would refuse the text as a name.
fn sql_names(text: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                    '"' => break,
                    c => name.push(c),
                }
            }
            if name.is_empty() {
                return None;
            }
        } else {
            let first = chars.next_if(|c| c.is_ascii_alphabetic() || *c == '_' || !c.is_ascii())?;
            name.push(first.to_ascii_lowercase());
            while let Some(c) = chars
                .next_if(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$') || !c.is_ascii())
            {
                name.push(c.to_ascii_lowercase());
            }
        }
        names.push(name);
        match chars.next() {
            None => return Some(names),
            Some('.') => {}
            Some(_) => return None,
        }
    }
}

#[test]
fn the_sql_name_reader_follows_postgresql() {
    let names = |t: &str| sql_names(t).map(|v| v.join("|"));
    assert_eq!(names("Orders").as_deref(), Some("orders"));
    assert_eq!(
        names("\"My \"\"S\"\"\".t$1").as_deref(),
        Some("My \"S\"|t$1")
    );
    assert_eq!(names("\"a.b\".\"\"\"\"").as_deref(), Some("a.b|\""));
    assert_eq!(names("é.x").as_deref(), Some("é|x"));
    for bad in ["", "\"\"", "1a", "a.", ".a", "\"a", "a b", "a\"b\"", "$a"] {
        assert_eq!(names(bad), None, "{bad:?}");
    }
}
