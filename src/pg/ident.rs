//! PostgreSQL's rules for channel names and payloads, checked here before any round trip, and
//! the quoting of identifiers and literals for the SQL that pgnotify writes.
//!
//! Owns: the limits (63-byte channels, 7999-byte payloads), quoting.

use crate::exit::UsageError;
use anyhow::{Result, bail};

/// The longest channel name PostgreSQL keeps: NAMEDATALEN - 1 bytes. `LISTEN` silently
/// truncates longer names (with a NOTICE) while `pg_notify()` rejects them, so the two would
/// end up on different channels: we refuse them up front.
pub(crate) const MAX_CHANNEL_BYTES: usize = 63;

/// The largest payload PostgreSQL accepts: async.c's NOTIFY_PAYLOAD_MAX_LENGTH is
/// BLCKSZ - NAMEDATALEN - 128 = 8000, and a payload is refused when `len >= 8000`.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 7999;

/// Checks a channel name against PostgreSQL's rules: not empty, at most 63 bytes, no NUL.
///
/// A channel name is always the user's argument, so a bad one is a usage error (status 2),
/// found before connecting.
pub(crate) fn check_channel(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "channel name is empty; PostgreSQL needs at least one character".to_owned()
    } else if name.contains('\0') {
        format!("channel name {name:?} contains a NUL byte, which PostgreSQL names cannot hold")
    } else if name.len() > MAX_CHANNEL_BYTES {
        format!(
            "channel name {:?} is {} bytes long; PostgreSQL's limit is {MAX_CHANNEL_BYTES} bytes",
            name,
            name.len()
        )
    } else {
        return Ok(());
    };
    Err(UsageError(why).into())
}

/// Checks a payload against PostgreSQL's rules: under 8000 bytes of UTF-8, no NUL.
///
/// The server counts bytes in the database encoding, after converting from the client's;
/// pgnotify always talks UTF-8, so for the usual UTF-8 database this is the server's own count.
pub(crate) fn check_payload(payload: &str) -> Result<()> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        bail!(
            "payload is {} bytes long; PostgreSQL's limit is {MAX_PAYLOAD_BYTES} bytes (less than 8000)",
            payload.len()
        );
    }
    if payload.contains('\0') {
        bail!("payload contains a NUL byte, which PostgreSQL text cannot hold");
    }
    Ok(())
}

/// Quotes an SQL identifier: wraps it in double quotes and doubles the quotes inside, so the
/// name reaches the server exactly as given (case kept, no injection through a name).
pub(crate) fn quote_ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// Quotes an SQL string literal, for the DDL that cannot take bind parameters (`COMMENT ON`,
/// a trigger function's body): quotes doubled, and `E'...'` when there are backslashes, so the
/// text is read back exactly whatever `standard_conforming_strings` says.
pub(crate) fn quote_literal(text: &str) -> String {
    postgres_protocol::escape::escape_literal(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_limits() {
        assert!(check_channel("a").is_ok());
        assert!(check_channel(&"x".repeat(63)).is_ok());
        let err = check_channel(&"x".repeat(64)).unwrap_err().to_string();
        assert!(
            err.contains("64 bytes") && err.contains("63 bytes"),
            "{err}"
        );
        // 32 two-byte characters are 64 bytes, though only 32 characters.
        assert!(check_channel(&"é".repeat(32)).is_err());
        assert!(check_channel(&"é".repeat(31)).is_ok());
        assert!(check_channel("").unwrap_err().to_string().contains("empty"));
        assert!(check_channel("a\0b").is_err());
        let err = check_channel("").unwrap_err();
        assert_eq!(crate::exit::for_error(&err), crate::exit::Exit::Usage);
    }

    #[test]
    fn payload_limits() {
        assert!(check_payload("").is_ok());
        assert!(check_payload(&"x".repeat(7999)).is_ok());
        let err = check_payload(&"x".repeat(8000)).unwrap_err().to_string();
        assert!(err.contains("8000 bytes") && err.contains("7999"), "{err}");
        assert!(check_payload(&"é".repeat(4000)).is_err());
        assert!(check_payload("a\0").is_err());
    }

    #[test]
    fn quoting_doubles_inner_quotes() {
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(
            quote_ident("a\"b; drop table x"),
            "\"a\"\"b; drop table x\""
        );
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'"), r" E'a\\b'''");
    }
}
