//! The password file (`pg/pgpass.rs`) and the service file (`pg/service.rs`): any text is read
//! without a panic; escaped fields match exactly what they escape; comments and blank lines
//! change nothing.

use super::{config, wild_string};
use crate::pg::parsers::{Lookup, PgpassKey, pgpass_find, service_section};
use proptest::prelude::*;
use std::path::Path;

/// A field of a password-file line: any text on one line.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => wild_string(12).prop_map(|s| s.replace(['\n', '\r'], "")),
        1 => proptest::sample::select(&["*", "localhost", "\\", ":", "#", "\\*", "**"][..])
            .prop_map(str::to_owned),
    ]
}

/// Escapes `\` and `:` with a backslash, as libpq's password file wants them; a field that
/// would read as the wildcard `*`, or begin a comment line with `#`, gets a backslash too.
fn escape(field: &str, first: bool) -> String {
    let mut out = String::new();
    for (i, c) in field.chars().enumerate() {
        if c == '\\' || c == ':' || (first && i == 0 && c == '#') {
            out.push('\\');
        }
        out.push(c);
    }
    if field == "*" {
        out.insert(0, '\\');
    }
    out
}

/// Lines that are not entries: comments, and empty or blank lines.
fn noise() -> impl Strategy<Value = Vec<String>> {
    let line = prop_oneof![
        field().prop_map(|s| format!("#{s}")),
        Just(String::new()),
        "[ \t]{1,3}",
        Just("#*:*:*:*:not this one".to_owned()),
    ];
    proptest::collection::vec(line, 0..4)
}

fn key<'a>(fields: &'a [String]) -> PgpassKey<'a> {
    PgpassKey {
        host: &fields[0],
        port: &fields[1],
        dbname: &fields[2],
        user: &fields[3],
    }
}

/// A service file's key: the ones `check_key` accepts, `service` excepted (nesting is refused).
const SERVICE_KEYS: &[&str] = &["host", "port", "dbname", "user", "sslmode", "options"];

/// A section's lines, `key=value` with white space around either, and what they read as.
fn section_lines() -> impl Strategy<Value = (Vec<String>, Vec<(String, String)>)> {
    let pair = (
        proptest::sample::select(SERVICE_KEYS),
        field(),
        "[ \t]{0,2}",
        "[ \t]{0,2}",
    );
    proptest::collection::vec(pair, 0..5).prop_map(|pairs| {
        let lines = pairs
            .iter()
            .map(|(k, v, a, b)| format!("{a}{k}{b}={a}{v}{b}"))
            .collect();
        let read = pairs
            .into_iter()
            .map(|(k, v, _, _)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        (lines, read)
    })
}

/// Interleaves noise lines with `lines`.
fn with_noise(lines: &[String], noise: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        for n in noise.get(i).into_iter().flatten() {
            out.push_str(n);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_password_file_is_read_without_a_panic(
        text in wild_string(200),
        fields in proptest::collection::vec(field(), 4),
    ) {
        let _ = pgpass_find(&text, &key(&fields));
    }

    #[test]
    fn escaped_fields_match_exactly_what_they_escape(
        fields in proptest::collection::vec(field(), 5),
        before in noise(),
        after in noise(),
        other in 0..4usize,
    ) {
        // An empty host field matches no connection (libpq's neither): the default socket
        // is `localhost`, any other a name or a path.
        let mut fields = fields;
        if fields[0].is_empty() {
            fields[0].push('h');
        }
        let line: Vec<String> = fields.iter().enumerate().map(|(i, f)| escape(f, i == 0)).collect();
        let text = with_noise(&[line.join(":"), "#end".into()], &[before, after]);
        // An empty host is the default socket, which the file calls localhost.
        let mut wanted = fields.clone();
        if wanted[0] == "localhost" {
            wanted[0].clear();
        }
        prop_assert_eq!(pgpass_find(&text, &key(&wanted)), Lookup::Found(fields[4].clone()), "{}", text);
        // Another value in any one of the four fields is not this line's.
        let mut elsewhere = wanted.clone();
        elsewhere[other].push('x');
        prop_assert_eq!(pgpass_find(&text, &key(&elsewhere)), Lookup::NotFound, "{}", text);
    }

    #[test]
    fn any_service_file_is_read_without_a_panic(
        text in wild_string(200),
        name in wild_string(8),
    ) {
        let _ = service_section(&text, &name, Path::new("svc.conf"));
    }

    #[test]
    fn a_section_reads_back_whatever_surrounds_it(
        name in field().prop_filter("a name of its own", |n| {
            !n.is_empty() && !n.contains(']') && n != "another" && n != "after"
        }),
        (lines, read) in section_lines(),
        (other, _) in section_lines(),
        noise in proptest::collection::vec(noise(), 0..8),
    ) {
        let mut all = vec!["[another]".to_owned()];
        all.extend(other.iter().cloned());
        all.push(format!("[{name}]"));
        all.extend(lines.iter().cloned());
        all.push("[after]".to_owned());
        all.extend(other);
        let text = with_noise(&all, &noise);
        let found = service_section(&text, &name, Path::new("svc.conf")).map_err(|e| e.to_string());
        prop_assert_eq!(found, Ok(Some(read)), "{}", text);
    }

    #[test]
    fn comments_and_blank_lines_change_nothing(
        lines in proptest::collection::vec(field(), 0..8),
        noise in proptest::collection::vec(noise(), 0..8),
        name in field(),
        fields in proptest::collection::vec(field(), 4),
    ) {
        let plain = with_noise(&lines, &[]);
        let noisy = with_noise(&lines, &noise);
        let read = |text: &str| {
            service_section(text, &name, Path::new("svc.conf")).map_err(|_| "refused")
        };
        prop_assert_eq!(read(&plain), read(&noisy));
        prop_assert_eq!(pgpass_find(&plain, &key(&fields)), pgpass_find(&noisy, &key(&fields)));
    }
}
