//! Looks a password up in a libpq password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`).
//!
//! Same rules as libpq (§34.16 "The Password File"): `host:port:database:user:password` lines,
//! `*` matches anything, `\` escapes `:` and `\`, the first match wins, `localhost` matches a
//! connection to the default socket (the caller passes an empty host for that), and a file that
//! group or others can read is ignored with a warning.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What the connection is for, as the password file's first four fields see it.
pub(crate) struct Key<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: &'a str,
    pub(crate) dbname: &'a str,
    pub(crate) user: &'a str,
}

/// The outcome of a lookup: a password, nothing, or a warning why the file was not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(String),
    NotFound,
    Ignored(String),
}

/// Reads `path` and returns the password of the first line matching `key`.
pub(super) fn lookup(path: &Path, key: &Key) -> Lookup {
    let Ok(meta) = fs::metadata(path) else {
        return Lookup::NotFound;
    };
    if !meta.is_file() {
        return Lookup::Ignored(format!(
            "password file \"{}\" is not a plain file",
            path.display()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Lookup::Ignored(format!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        ));
    }
    match fs::read(path) {
        Ok(bytes) => find(&String::from_utf8_lossy(&bytes), key),
        Err(e) => Lookup::Ignored(format!(
            "could not read password file \"{}\": {e}",
            path.display()
        )),
    }
}

pub(crate) fn find(text: &str, key: &Key) -> Lookup {
    let host = if key.host.is_empty() {
        "localhost"
    } else {
        key.host
    };
    let wanted = [host, key.port, key.dbname, key.user];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_fields(line);
        if fields.len() < 5 {
            continue;
        }
        // A bare `*` matches anything; an escaped `\*` is a plain asterisk (libpq's
        // pwdfMatchesString looks for the wildcard before it removes escapes).
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|((field, escaped), value)| (field == "*" && !escaped) || field == value);
        if matches {
            return Lookup::Found(fields[4].0.clone());
        }
    }
    Lookup::NotFound
}

/// Splits a line at unescaped colons (into five fields at most: the password keeps the rest)
/// and removes the escapes; each field says whether it held one.
fn split_fields(line: &str) -> Vec<(String, bool)> {
    let mut fields = vec![(String::new(), false)];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = fields.last_mut()
                {
                    last.0.push(next);
                    last.1 = true;
                }
            }
            ':' if fields.len() < 5 => fields.push((String::new(), false)),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.0.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(host: &'a str, port: &'a str, db: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port,
            dbname: db,
            user,
        }
    }

    #[test]
    fn first_match_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:5432:*:alice:nope\n\
                    db\\:1:*:*:alice:pa\\:ss\\\\word\n\
                    *:*:*:alice:fallback\n";
        assert_eq!(
            find(text, &key("db:1", "5432", "x", "alice")),
            Lookup::Found("pa:ss\\word".into())
        );
        assert_eq!(
            find(text, &key("h", "1", "x", "alice")),
            Lookup::Found("fallback".into())
        );
        assert_eq!(find(text, &key("h", "1", "x", "bob")), Lookup::NotFound);
    }

    #[test]
    fn the_default_socket_matches_localhost_and_other_sockets_their_path() {
        let text = "localhost:5432:db:u:default\n/tmp/x:5432:db:u:path\n";
        assert_eq!(
            find(text, &key("", "5432", "db", "u")),
            Lookup::Found("default".into())
        );
        assert_eq!(
            find(text, &key("/tmp/x", "5432", "db", "u")),
            Lookup::Found("path".into())
        );
        assert_eq!(
            find(text, &key("/tmp/y", "5432", "db", "u")),
            Lookup::NotFound
        );
    }

    #[test]
    fn unescaped_colons_in_the_password_are_kept() {
        assert_eq!(
            find("*:*:*:*:a:b\n", &key("h", "1", "d", "u")),
            Lookup::Found("a:b".into())
        );
    }

    #[test]
    fn an_escaped_asterisk_is_no_wildcard() {
        // Found by the properties (src/properties/files.rs): `\*` matched any database.
        let text = "\t::\\*::\n";
        assert_eq!(
            find(text, &key("\t", "", "*", "")),
            Lookup::Found(String::new())
        );
        assert_eq!(find(text, &key("\t", "", "x", "")), Lookup::NotFound);
        assert_eq!(
            find("*:*:\\**:*:pw\n", &key("h", "1", "**", "u")),
            Lookup::Found("pw".into())
        );
        assert_eq!(
            find("*:*:*:*:\\*\n", &key("h", "1", "d", "u")),
            Lookup::Found("*".into())
        );
    }

    #[test]
    fn open_permissions_are_refused() {
        let dir = std::env::temp_dir().join(format!("pgpass-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        fs::write(&file, "*:*:*:*:secret\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let k = key("h", "1", "d", "u");
        assert!(matches!(lookup(&file, &k), Lookup::Ignored(w) if w.contains("0600")));
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&file, &k), Lookup::Found("secret".into()));
        assert_eq!(lookup(&dir.join("missing"), &k), Lookup::NotFound);
        fs::remove_dir_all(&dir).unwrap();
    }
}
