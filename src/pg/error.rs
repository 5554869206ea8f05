//! How a `postgres` error is told to a person: one line, psql's way.

use crate::sanitize::strip_os_error;

/// One line for a `postgres` error: the server's message with its SQLSTATE, detail and hint,
/// or the I/O cause. Never includes a password: the crate's errors do not carry one.
pub(crate) fn describe_pg_error(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = strip_os_error(&cause.to_string());
        source = cause.source();
    }
    text
}
