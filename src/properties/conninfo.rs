//! Connection strings (`pg/conninfo.rs`): any text is parsed or refused in one line, never a
//! panic; what libpq's quoting writes, keyword/value or URI, reads back as written.

use super::{config, has_control, wild_string};
use crate::pg::parsers::conninfo as parse;
use proptest::prelude::*;

/// Keys a connection string may hold (a sample of libpq's).
const KEYS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "target_session_attrs",
    "connect_timeout",
    "sslpassword",
];

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((proptest::sample::select(KEYS), wild_string(24)), 0..6).prop_map(
        |v| {
            v.into_iter()
                .map(|(k, v)| (k.to_owned(), v.replace('\0', "")))
                .collect()
        },
    )
}

/// `key='value'`, a quote and a backslash escaped with a backslash (libpq's
/// `appendConnStrVal`, which always quotes).
fn quoted(pairs: &[(String, String)]) -> String {
    let one = |(k, v): &(String, String)| {
        format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    };
    pairs.iter().map(one).collect::<Vec<_>>().join(" ")
}

/// `key=value` unquoted: every backslash, quote and white space escaped with a backslash.
fn bare(pairs: &[(String, String)]) -> String {
    let one = |(k, v): &(String, String)| {
        let mut out = format!("{k}=");
        for c in v.chars() {
            if c == '\\' || c == '\'' || c.is_whitespace() {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    pairs.iter().map(one).collect::<Vec<_>>().join(" \t ")
}

/// Percent-encodes every byte but RFC 3986's unreserved ones.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A URI's parts, and what it reads as.
#[derive(Debug)]
struct Uri {
    user: String,
    password: Option<String>,
    hosts: Vec<(String, String)>,
    dbname: String,
    query: Vec<(String, String)>,
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("localhost".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("::1".to_owned()),
        Just("/tmp/pg sock".to_owned()),
        "[a-z][a-z0-9.-]{0,12}",
    ]
}

fn uri() -> impl Strategy<Value = Uri> {
    let text = || wild_string(16).prop_map(|s| s.replace('\0', ""));
    let port = prop_oneof![Just(String::new()), "[0-9]{1,5}"];
    (
        text(),
        proptest::option::of(text()),
        proptest::collection::vec((host(), port), 0..3),
        text(),
        pairs(),
    )
        .prop_map(|(user, password, hosts, dbname, query)| Uri {
            user,
            password,
            hosts,
            dbname,
            query,
        })
}

impl Uri {
    fn render(&self, scheme: &str) -> String {
        let mut out = scheme.to_owned();
        if !self.user.is_empty() || self.password.is_some() {
            out.push_str(&pct(&self.user));
            if let Some(p) = &self.password {
                out.push(':');
                out.push_str(&pct(p));
            }
            out.push('@');
        }
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(h, p)| {
                let h = match h.contains(':') {
                    true => format!("[{h}]"),
                    false => pct(h),
                };
                match p.is_empty() {
                    true => h,
                    false => format!("{h}:{p}"),
                }
            })
            .collect();
        out.push_str(&hosts.join(","));
        out.push('/');
        out.push_str(&pct(&self.dbname));
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", pct(v)))
            .collect();
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }

    /// The pairs libpq makes of it, in order.
    fn expected(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut put = |k: &str, v: &str| pairs.push((k.to_owned(), v.to_owned()));
        if !self.user.is_empty() {
            put("user", &self.user);
        }
        if let Some(p) = &self.password {
            put("password", p);
        }
        if !self.hosts.is_empty() {
            let hosts: Vec<&str> = self.hosts.iter().map(|(h, _)| h.as_str()).collect();
            put("host", &hosts.join(","));
            if self.hosts.iter().any(|(_, p)| !p.is_empty()) {
                let ports: Vec<&str> = self.hosts.iter().map(|(_, p)| p.as_str()).collect();
                put("port", &ports.join(","));
            }
        }
        if !self.dbname.is_empty() {
            put("dbname", &self.dbname);
        }
        pairs.extend(self.query.iter().cloned());
        pairs
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused_in_one_clean_line(s in wild_string(64)) {
        if let Err(e) = parse(&s) {
            let text = format!("{e:#}");
            prop_assert!(!has_control(&text), "{text:?}");
        }
    }

    #[test]
    fn any_uri_tail_is_parsed_or_refused_in_one_clean_line(
        scheme in proptest::sample::select(&["postgres://", "postgresql://"][..]),
        s in wild_string(64),
    ) {
        if let Err(e) = parse(&format!("{scheme}{s}")) {
            let text = format!("{e:#}");
            prop_assert!(!has_control(&text), "{text:?}");
        }
    }

    #[test]
    fn no_error_quotes_a_piece_of_a_password(
        before in wild_string(12),
        after in wild_string(12),
        form in 0..4usize,
    ) {
        // A password typed without its quoting or percent-encoding, the marker in its middle.
        let password = format!("{before}SeCrEt{after}");
        let text = match form {
            0 => format!("host=h password={password} port=1"),
            1 => format!("postgres://u:{password}@h/d?sslmode=disable"),
            2 => format!("postgres://h/d?password={password}&sslmode=disable"),
            _ => format!("postgres://h/d?sslpassword={password}"),
        };
        if let Err(e) = parse(&text) {
            let text = format!("{e:#}");
            prop_assert!(!text.contains("SeCrEt"), "{}", text);
        }
    }

    #[test]
    fn quoted_keyword_values_read_back(pairs in pairs()) {
        let text = quoted(&pairs);
        prop_assert_eq!(parse(&text).map_err(|e| e.to_string()), Ok(pairs), "{}", text);
    }

    #[test]
    fn bare_keyword_values_read_back(pairs in pairs()) {
        // An empty bare value is no value at all: `k= ` reads the next key as it.
        let pairs: Vec<_> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let text = bare(&pairs);
        prop_assert_eq!(parse(&text).map_err(|e| e.to_string()), Ok(pairs), "{}", text);
    }

    #[test]
    fn percent_encoded_uris_read_back(
        uri in uri(),
        scheme in proptest::sample::select(&["postgres://", "postgresql://"][..]),
    ) {
        let text = uri.render(scheme);
        prop_assert_eq!(
            parse(&text).map_err(|e| e.to_string()),
            Ok(uri.expected()),
            "{}",
            text
        );
    }

    #[test]
    fn a_nul_in_a_uri_is_refused_without_quoting_it(
        uri in uri(),
        at in 0..3usize,
    ) {
        let mut uri = uri;
        match at {
            0 => uri.user.push('\0'),
            1 => uri.dbname.push('\0'),
            _ => uri.query.push(("password".into(), "Sec\0ret".into())),
        }
        let err = parse(&uri.render("postgres://")).map(|_| ()).unwrap_err().to_string();
        prop_assert!(err.contains("%00"), "{}", err);
        prop_assert!(!err.contains("Sec"), "{}", err);
    }
}
