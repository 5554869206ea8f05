//! How a `postgres` error is told to a person: one line, psql's way.

use crate::sanitize::strip_os_error;

/// One line for a `postgres` error: the server's message with its SQLSTATE, detail and hint,
/// or the I/O cause. Never includes a password: the crate's errors do not carry one.
pub(crate) fn describe_pg_error(e: &postgres::Error) -> String {
    describe(e, None)
}

/// Whether a failed statement lost the connection (closed, the server shutting the session
/// down, or an I/O failure) rather than failing as SQL.
pub(crate) fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| c.code().starts_with("57P"))
        || (e.as_db_error().is_none()
            && std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()))
}

/// [`describe_pg_error`] for a server known to be a hot standby or not (asked after it
/// refused a write, 25006): a standby refuses DDL as "in a read-only transaction", the words
/// of a session with `default_transaction_read_only` too.
pub(crate) fn describe_on(e: &postgres::Error, hot_standby: bool) -> String {
    describe(e, Some(hot_standby))
}

fn describe(e: &postgres::Error, hot_standby: Option<bool>) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        // 25006 read_only_sql_transaction: say what kind of server this is, and the fix.
        if db.code().code() == "25006" {
            let standby = hot_standby.or(db.message().contains("during recovery").then_some(true));
            text.push_str(match standby {
                Some(true) => {
                    "; the server is a hot standby, which is read-only: connect to the primary \
                     (with a list of hosts, target_session_attrs=primary chooses it)"
                }
                Some(false) => {
                    "; the session is read-only (default_transaction_read_only): connect to a \
                     writable server (with a list of hosts, target_session_attrs=read-write \
                     chooses one)"
                }
                None => {
                    "; the session is read-only (a hot standby, or default_transaction_read_only): \
                     connect to a writable primary (with a list of hosts, \
                     target_session_attrs=read-write chooses one)"
                }
            });
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
