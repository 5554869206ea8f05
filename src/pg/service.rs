//! Reads connection services from libpq service files (`pg_service.conf`).
//!
//! Same rules as libpq (§34.17 "The Connection Service File"): INI-style `[name]` sections of
//! `key=value` lines, `#` comments; the user's file (`PGSERVICEFILE` or `~/.pg_service.conf`)
//! is searched first, then `pg_service.conf` in `PGSYSCONFDIR`.

use crate::exit::UsageError;
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::Path;

/// Finds service `name` in the files, in order; the first file that defines it wins.
pub(super) fn find(name: &str, files: &[&Path]) -> Result<Vec<(String, String)>> {
    for file in files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("could not read service file \"{}\"", file.display())
                });
            }
        };
        if let Some(pairs) = section(&text, name, file)? {
            return Ok(pairs);
        }
    }
    bail!("definition of service \"{name}\" not found")
}

/// The pairs of section `name`, or `None` when the file has no such section.
pub(crate) fn section(
    text: &str,
    name: &str,
    file: &Path,
) -> Result<Option<Vec<(String, String)>>> {
    let mut in_section = false;
    let mut found = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            in_section = header.strip_suffix(']') == Some(name);
            if in_section {
                found = Some(Vec::new());
            }
            continue;
        }
        if !in_section {
            continue;
        }
        // A malformed service file is a usage error (status 2), as the same text given with
        // -d would be; a service that is not defined at all is a connection failure (3).
        let at = || format!("service file \"{}\", line {}", file.display(), index + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(UsageError(format!("syntax error in {}", at())).into());
        };
        let key = key.trim();
        if key == "service" {
            return Err(UsageError(format!(
                "nested service specifications not supported in {}",
                at()
            ))
            .into());
        }
        super::conninfo::check_key(key).map_err(|e| UsageError(format!("in {}: {e:#}", at())))?;
        if let Some(pairs) = found.as_mut() {
            pairs.push((key.to_owned(), value.trim().to_owned()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_errors() {
        let path = Path::new("svc.conf");
        let text = "# c\n[a]\nhost=h1\nport = 1\n\n[b]\nhost=h2\n";
        let a = section(text, "a", path).unwrap().unwrap();
        assert_eq!(
            a,
            vec![("host".into(), "h1".into()), ("port".into(), "1".into())]
        );
        assert_eq!(section(text, "c", path).unwrap(), None);
        assert!(section("[a]\nnonsense\n", "a", path).is_err());
        assert!(section("[a]\nservice=b\n", "a", path).is_err());
        assert!(section("[a]\nhots=b\n", "a", path).is_err());
    }

    #[test]
    fn first_file_defining_the_service_wins() {
        let dir = std::env::temp_dir().join(format!("svc-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let user = dir.join("user.conf");
        let system = dir.join("system.conf");
        fs::write(&user, "[x]\nport=1\n").unwrap();
        fs::write(&system, "[x]\nport=2\n[y]\nport=3\n").unwrap();
        let files = [user.as_path(), system.as_path(), Path::new("/nonexistent")];
        assert_eq!(find("x", &files).unwrap()[0].1, "1");
        assert_eq!(find("y", &files).unwrap()[0].1, "3");
        let err = find("z", &files).unwrap_err().to_string();
        assert_eq!(err, "definition of service \"z\" not found");
        fs::remove_dir_all(&dir).unwrap();
    }
}
