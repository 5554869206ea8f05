//! Parses libpq connection strings, both forms: `key=value` conninfo and `postgres://` URIs.
//!
//! Owns only the syntax (libpq "Connection Strings", §34.1.1): quoting, percent-decoding, host
//! lists. Which keys mean what, and which source wins, is `settings::resolve`'s job.

use crate::sanitize::escape_controls;
use anyhow::{Result, bail};

/// The keywords libpq knows. pgnotify honours the ones `settings` reads and accepts the rest,
/// so that a connection string written for psql works here too.
pub(super) const KNOWN_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// True when `-d` holds a connection string rather than a plain database name, by libpq's
/// rule: a URI prefix, or an `=` anywhere.
pub(super) fn is_connection_string(s: &str) -> bool {
    uri_rest(s).is_some() || s.contains('=')
}

/// Parses a connection string of either form into (keyword, value) pairs, in order.
pub(crate) fn parse(s: &str) -> Result<Vec<(String, String)>> {
    let pairs = match uri_rest(s) {
        Some(rest) => parse_uri(rest)?,
        None => parse_keyword_value(s)?,
    };
    for (i, (key, _)) in pairs.iter().enumerate() {
        // An unknown "key" right after a password may be the rest of it (`password=a b=c`,
        // `?password=a&b=c`): refused without being quoted.
        if i > 0 && is_secret(&pairs[i - 1].0) && !KNOWN_KEYS.contains(&key.as_str()) {
            bail!(
                "invalid connection option after the password (quote a password that holds \
                 spaces, and percent-encode a \"&\" in a URI's as %26)"
            );
        }
        check_key(key)?;
    }
    Ok(pairs)
}

/// Refuses a keyword libpq would refuse. The keyword is quoted with its control characters
/// escaped, as every message here quotes what it was given: an error is one plain line.
pub(super) fn check_key(key: &str) -> Result<()> {
    if !KNOWN_KEYS.contains(&key) {
        bail!("invalid connection option \"{}\"", escape_controls(key));
    }
    Ok(())
}

/// Keys whose values are secrets, never to be shown.
fn is_secret(key: &str) -> bool {
    matches!(key, "password" | "sslpassword")
}

fn uri_rest(s: &str) -> Option<&str> {
    s.strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
}

/// `key = value ...`; values may be single-quoted; a backslash escapes the next character.
fn parse_keyword_value(s: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(is_space).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !is_space(c)) {
            key.push(c);
        }
        while chars.next_if(is_space).is_some() {}
        if chars.next() != Some('=') {
            // After an unquoted password with a space, this "key" is the rest of it (or of
            // the pairs that a "=" in it made).
            if pairs.iter().any(|(k, _)| is_secret(k)) {
                bail!(
                    "missing \"=\" after the password in connection info string (quote a \
                     password that holds spaces: password='...')"
                );
            }
            bail!(
                "missing \"=\" after \"{}\" in connection info string",
                escape_controls(&key)
            );
        }
        while chars.next_if(is_space).is_some() {}
        let value = if chars.next_if_eq(&'\'').is_some() {
            quoted_value(&mut chars)?
        } else {
            bare_value(&mut chars)
        };
        pairs.push((key, value));
    }
}

/// White space between a connection string's pairs: libpq's `isspace` in the C locale, ASCII
/// only, so that a password may hold a no-break space (Rust's `is_whitespace` is Unicode's).
fn is_space(c: &char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn quoted_value(chars: &mut impl Iterator<Item = char>) -> Result<String> {
    let mut value = String::new();
    loop {
        match chars.next() {
            None => bail!("unterminated quoted string in connection info string"),
            Some('\'') => return Ok(value),
            Some('\\') => match chars.next() {
                Some(c) => value.push(c),
                None => bail!("unterminated quoted string in connection info string"),
            },
            Some(c) => value.push(c),
        }
    }
}

fn bare_value(chars: &mut std::iter::Peekable<impl Iterator<Item = char>>) -> String {
    let mut value = String::new();
    while let Some(c) = chars.next_if(|c| !is_space(c)) {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                value.push(escaped);
            }
        } else {
            value.push(c);
        }
    }
    value
}

/// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, after the scheme.
///
/// No error quotes a user name or password. As in libpq, the user info ends at the first `@`
/// before the first `/`, so a `?` in a password belongs to it, and an `@` in the query is not
/// taken for one (`?application_name=me@laptop`); an `@` in a password must be `%40`.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>> {
    let slash = rest.find('/').unwrap_or(rest.len());
    let (userinfo, rest) = match rest[..slash].find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    // An `@` left after the user info: a password holding an unencoded "/" or "@" may have
    // been cut there, so a "key" may be a piece of it.
    let cut_short = rest.contains('@');
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (hostlist, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let mut pairs = Vec::new();
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            pairs.push(("user".to_owned(), percent_decode(user, "user name")?));
        }
        if let Some(p) = password {
            pairs.push(("password".to_owned(), percent_decode(p, "password")?));
        }
    }
    if !hostlist.is_empty() {
        let (hosts, ports) = split_hosts(hostlist)?;
        pairs.push(("host".to_owned(), hosts));
        if !ports.is_empty() {
            pairs.push(("port".to_owned(), ports));
        }
    }
    if !path.is_empty() {
        pairs.push(("dbname".to_owned(), percent_decode(path, "database name")?));
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = param.split_once('=') else {
            bail!("missing key/value separator \"=\" in a URI query parameter");
        };
        let key = percent_decode(key, "query parameter name")?;
        let after_secret = pairs.last().is_some_and(|(k, _)| is_secret(k));
        if !KNOWN_KEYS.contains(&key.as_str()) && !after_secret {
            if cut_short {
                bail!(
                    "invalid URI query parameter (percent-encode a \"/\" in a password as \
                     %2F, and an \"@\" as %40)"
                );
            }
            bail!("invalid URI query parameter: \"{}\"", escape_controls(&key));
        }
        // An unknown key after a password may be a piece of it: not named.
        let what = match KNOWN_KEYS.contains(&key.as_str()) {
            true => format!("value of query parameter {key}"),
            false => "value of a query parameter".to_owned(),
        };
        let value = percent_decode(value, &what)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Splits `h1:p1,[::1]:p2,h3` into the comma lists libpq's `host` and `port` keys hold.
/// The port list is empty when no host names a port.
fn split_hosts(list: &str) -> Result<(String, String)> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for item in list.split(',') {
        let (host, port) = if let Some(inner) = item.strip_prefix('[') {
            let Some((addr, after)) = inner.split_once(']') else {
                bail!("missing \"]\" in an IPv6 host address in the URI");
            };
            (addr, after.strip_prefix(':').unwrap_or(""))
        } else {
            item.split_once(':').unwrap_or((item, ""))
        };
        // Not quoted: with an unencoded "/" in a password, a piece of it lands here.
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            bail!(
                "invalid port number in the URI's host list (percent-encode a \"/\" in a \
                 password as %2F)"
            );
        }
        hosts.push(percent_decode(host, "host")?);
        ports.push(port.to_owned());
    }
    let ports = if ports.iter().all(String::is_empty) {
        String::new()
    } else {
        ports.join(",")
    };
    Ok((hosts.join(","), ports))
}

/// Decodes a percent-encoded part of a URI; `what` names the part in errors, which never
/// quote it (it may be a password, or hold a piece of one).
fn percent_decode(s: &str, what: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).unwrap_or("");
            let Ok(byte) = u8::from_str_radix(hex, 16) else {
                bail!("invalid percent-encoded token in the URI's {what}");
            };
            if byte == 0 {
                bail!("forbidden value %00 in the URI's {what}");
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("the URI's {what} is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keyword_value_with_quotes_and_escapes() {
        assert_eq!(
            pairs("host=localhost port = 5433 dbname='my db' password='it\\'s' user=a\\ b"),
            kv(&[
                ("host", "localhost"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("password", "it's"),
                ("user", "a b"),
            ])
        );
        assert_eq!(pairs("dbname=''"), kv(&[("dbname", "")]));
    }

    #[test]
    fn keyword_value_errors() {
        let err = parse("host").unwrap_err().to_string();
        assert!(err.contains("missing \"=\" after \"host\""), "{err}");
        assert!(
            parse("password='abc")
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        let err = parse("hots=x").unwrap_err().to_string();
        assert_eq!(err, "invalid connection option \"hots\"");
    }

    #[test]
    fn uris() {
        assert_eq!(
            pairs(
                "postgresql://u%40x:p%3Aw@db.example:6543/my%20db?application_name=a&sslmode=disable"
            ),
            kv(&[
                ("user", "u@x"),
                ("password", "p:w"),
                ("host", "db.example"),
                ("port", "6543"),
                ("dbname", "my db"),
                ("application_name", "a"),
                ("sslmode", "disable"),
            ])
        );
        assert_eq!(pairs("postgres://"), kv(&[]));
        assert_eq!(
            pairs("postgresql://%2Ftmp%2Fsock/db"),
            kv(&[("host", "/tmp/sock"), ("dbname", "db")])
        );
        assert_eq!(
            pairs("postgresql://h1:1,[::1]:2,h3/d"),
            kv(&[("host", "h1,::1,h3"), ("port", "1,2,"), ("dbname", "d")])
        );
        assert_eq!(
            pairs("postgresql:///d?host=/run/pg&port=7"),
            kv(&[("dbname", "d"), ("host", "/run/pg"), ("port", "7")])
        );
    }

    #[test]
    fn uri_errors_never_quote_a_password() {
        for uri in [
            "postgres://u:MySecret%zz@h/d",
            "postgres://u:MySecret%ff@h/d",
            "postgres://h/d?password=MySecret%zz",
            "postgres://h/d?sslpassword=MySecret%ff",
            "postgres://u:My/Secret@h/d",
            "postgres://u:MySecret@h/d?MySecret",
        ] {
            let err = format!("{:#}", parse(uri).unwrap_err());
            assert!(!err.contains("Secret"), "{uri}: {err}");
        }
        for conninfo in [
            "password=My Secret",
            "password=My Secret=x",
            "postgres://h/d?password=My&Secret=1",
            // Found while writing the properties: the piece after an unencoded "&" was named
            // as a key when its value did not decode.
            "postgres://h/d?password=My&Secret=%zz",
            // Found by the properties: the password's "/" ended the user info, and the piece
            // after its "?" was quoted as a query parameter.
            "postgres://u:/?Secret@h/d?sslmode=disable",
            "postgres://u:@?Secret@h/d?sslmode=disable",
        ] {
            let err = parse(conninfo).unwrap_err().to_string();
            assert!(!err.contains("Secret"), "{conninfo}: {err}");
        }
    }

    #[test]
    fn only_ascii_white_space_separates_pairs() {
        // Found by the properties: a no-break space ended a password, as libpq's isspace
        // does not, and the rest was quoted in the error.
        assert_eq!(
            pairs("password=a\u{a0}b\u{2028}c\x0bport=1"),
            kv(&[("password", "a\u{a0}b\u{2028}c"), ("port", "1")])
        );
        let err = parse("host=h password=\u{202e}\u{a0}=\u{1b}\nSecret port=1")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("Secret"), "{err}");
        let err = parse("password=a =b Secret").unwrap_err().to_string();
        assert!(!err.contains("Secret"), "{err}");
    }

    #[test]
    fn errors_quote_no_control_character() {
        // Found by the properties (src/properties/conninfo.rs): a key was quoted raw.
        for (text, shown) in [
            ("\u{1b}\0\0", "missing \"=\" after \"\\x1b\\x00\\x00\""),
            ("postgres://?\0=", "invalid URI query parameter: \"\\x00\""),
            (
                "postgres://?%0a%1b=1",
                "invalid URI query parameter: \"\\n\\x1b\"",
            ),
            ("a\u{9b}=1", "invalid connection option \"a\\x9b\""),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(shown), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_at_sign_in_the_query_is_not_user_info() {
        assert_eq!(
            pairs("postgres://u:pw@127.0.0.1:1?application_name=me@laptop"),
            kv(&[
                ("user", "u"),
                ("password", "pw"),
                ("host", "127.0.0.1"),
                ("port", "1"),
                ("application_name", "me@laptop"),
            ])
        );
    }

    #[test]
    fn a_question_mark_in_a_password_belongs_to_it() {
        assert_eq!(
            pairs("postgres://u:pa?ss@h/d?sslmode=disable"),
            kv(&[
                ("user", "u"),
                ("password", "pa?ss"),
                ("host", "h"),
                ("dbname", "d"),
                ("sslmode", "disable"),
            ])
        );
    }

    #[test]
    fn uri_errors() {
        assert!(
            parse("postgresql://h/d?nope=1")
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
        assert!(parse("postgresql://h/%zz").is_err());
        assert!(parse("postgresql://h/%00").is_err());
        assert!(parse("postgresql://[::1/d").is_err());
    }

    #[test]
    fn detection() {
        assert!(is_connection_string("postgres://x"));
        assert!(is_connection_string("host=x"));
        assert!(!is_connection_string("mydb"));
    }
}
