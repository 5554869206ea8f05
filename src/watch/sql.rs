//! The SQL `watch-table` runs: the trigger function (its payload built with `format()` from
//! `to_json` pieces, under a fixed `search_path`, every call `pg_catalog.`-qualified), and the
//! install and removal scripts, each one transaction.

use super::{Installed, Marker, Op, ROW_TRIGGER, TRUNCATE_TRIGGER, Table};
use crate::pg::{quote_ident, quote_literal};
use std::fmt::Write as _;

/// A JSON value as text, never NULL: `COALESCE(pg_catalog.to_json(x)::pg_catalog.text, 'null')`.
fn json_value(expr: &str) -> String {
    format!("COALESCE(pg_catalog.to_json({expr})::pg_catalog.text, 'null')")
}

/// A JSON object of some of a row's columns, as pieces of text:
/// `{"id":42,"status":"paid"}`. Compact, in column order; the names are JSON-escaped here and
/// quoted as SQL literals.
fn object_parts(columns: &[String], row: &str) -> Vec<Piece> {
    let mut parts = Vec::with_capacity(columns.len() * 2 + 1);
    for (i, c) in columns.iter().enumerate() {
        let name = serde_json::to_string(c).unwrap_or_default();
        let open = if i == 0 { "{" } else { "," };
        parts.push(Piece::text(format!("{open}{name}:")));
        parts.push(Piece::Sql(json_value(&format!("{row}.{}", quote_ident(c)))));
    }
    parts.push(Piece::text("}"));
    parts
}

/// A row's key as JSON pieces, or `null` when the table has no key.
fn key_parts(marker: &Marker, row: &str) -> Vec<Piece> {
    if marker.key.is_empty() {
        return vec![Piece::text("null")];
    }
    object_parts(&marker.key, row)
}

/// A row image as JSON pieces: the whole row, or the `--columns`.
fn image_parts(marker: &Marker, row: &str) -> Vec<Piece> {
    match &marker.columns {
        None => vec![Piece::Sql(format!(
            "pg_catalog.to_json({row})::pg_catalog.text"
        ))],
        Some(columns) => object_parts(columns, row),
    }
}

/// A piece of JSON text being built: fixed text, or an SQL expression.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Sql(String),
}

impl Piece {
    fn text(text: impl Into<String>) -> Piece {
        Piece::Text(text.into())
    }
}

/// The pieces joined: `pg_catalog.format('{"id":%s}', expr)`, the texts in the template and
/// each expression an argument, where a NULL gives nothing.
///
/// `format` rather than `concat`: `concat` looks up the output function of every argument,
/// fixed texts included, at every call.
fn join(parts: &[Piece]) -> String {
    let mut template = String::new();
    let mut args = Vec::new();
    for part in parts {
        match part {
            Piece::Text(t) => template.push_str(&t.replace('%', "%%")),
            Piece::Sql(sql) => {
                template.push_str("%s");
                args.push(sql.as_str());
            }
        }
    }
    let mut sql = format!("pg_catalog.format({}", quote_literal(&template));
    for arg in args {
        sql.push_str(", ");
        sql.push_str(arg);
    }
    sql.push(')');
    sql
}

/// Whether an UPDATE changed the key: the key columns compared as text, never with the
/// type's own `=`, which may live outside our search_path (citext, say) and then fail the
/// user's write. Text output is as exact as the JSON the event would carry.
fn key_changed(marker: &Marker) -> String {
    let column = |row: &str, c: &String| format!("{row}.{}::pg_catalog.text", quote_ident(c));
    let tests: Vec<String> = marker
        .key
        .iter()
        .map(|c| format!("{} IS DISTINCT FROM {}", column("OLD", c), column("NEW", c)))
        .collect();
    tests.join(" OR ")
}

/// One member of an event: always there, or only when a condition holds.
enum Member {
    Always(&'static str, Vec<Piece>),
    When(String, &'static str, Vec<Piece>),
}

impl Member {
    /// `"key": key`, then this member.
    fn after(self, key: Piece) -> Vec<Member> {
        vec![Member::Always("key", vec![key]), self]
    }
}

/// For the fallback after DDL: the row's key by the key columns the watch was installed with,
/// looked up by name in `to_json` of the whole row, which never fails; `null` when one of them
/// is gone (renamed or dropped). Never another column: the event carries nothing the watch
/// was not installed to send.
fn key_by_name(marker: &Marker) -> Piece {
    if marker.key.is_empty() {
        return Piece::text("null");
    }
    let mut sql = String::from("COALESCE((SELECT ");
    for (i, c) in marker.key.iter().enumerate() {
        let name = serde_json::to_string(c).unwrap_or_default();
        let open = if i == 0 { "{" } else { "," };
        let _ = write!(
            sql,
            "{} || (r.j -> {})::pg_catalog.text || ",
            quote_literal(&format!("{open}{name}:")),
            quote_literal(c)
        );
    }
    sql.push_str(
        "'}' FROM (SELECT CASE TG_OP WHEN 'DELETE' THEN pg_catalog.to_json(OLD) \
         ELSE pg_catalog.to_json(NEW) END AS j) r), 'null')",
    );
    Piece::Sql(sql)
}

/// The payload as one `format` expression: `op`, `schema`, `table`, then the given members
/// (`key` first), then `}`.
///
/// The op is written as a literal in the branch that knows it; the schema and table are the
/// trigger's own, read at each call, so that events stay right after a rename.
fn payload(op: Option<Op>, members: &[Member]) -> String {
    let mut parts = match op {
        Some(op) => vec![Piece::text(format!(
            "{{\"op\":\"{}\",\"schema\":",
            op.sql()
        ))],
        None => vec![
            Piece::text("{\"op\":"),
            Piece::Sql(json_value("TG_OP")),
            Piece::text(",\"schema\":"),
        ],
    };
    // Never NULL: no COALESCE needed.
    let name = |var: &str| Piece::Sql(format!("pg_catalog.to_json({var})::pg_catalog.text"));
    parts.push(name("TG_TABLE_SCHEMA"));
    parts.push(Piece::text(",\"table\":"));
    parts.push(name("TG_TABLE_NAME"));
    for member in members {
        match member {
            Member::Always(name, value) => {
                parts.push(Piece::text(format!(",\"{name}\":")));
                parts.extend(value.iter().cloned());
            }
            // NULL when the condition fails, which `format` prints as nothing.
            Member::When(condition, name, value) => {
                let mut inner = vec![Piece::text(format!(",\"{name}\":"))];
                inner.extend(value.iter().cloned());
                let sql = format!("CASE WHEN {condition} THEN {} END", join(&inner));
                parts.push(Piece::Sql(sql));
            }
        }
    }
    parts.push(Piece::text("}"));
    join(&parts)
}

/// The trigger function's body (plpgsql), without the dollar quotes.
///
/// The payload is built as text by joining JSON pieces (`to_json` of each value), which
/// gives compact JSON with the members in a fixed order, and costs less than building a
/// `json` value and printing it.
///
/// Written for the cost per row, which matters most when each statement is its own
/// transaction: PL/pgSQL prepares every expression it meets afresh in each transaction, at a
/// cost that grows with the expression's function calls. So a call meets four small
/// statements (the op test, the payload, the size check, the send), all evaluated as simple
/// expressions; the send is an assignment because `PERFORM` would start an executor; the
/// rare oversized event is rebuilt in a branch that is only prepared when it runs.
pub(super) fn function_body(marker: &Marker) -> String {
    use Member::{Always, When};
    let mut b = String::new();
    let rows = marker.rows;
    let _ = writeln!(b, "DECLARE");
    let _ = writeln!(b, "  p pg_catalog.text;");
    let _ = writeln!(b, "  sent pg_catalog.bool;");
    let _ = writeln!(b, "BEGIN");
    let _ = writeln!(b, "BEGIN");
    let mut first = true;
    for op in &marker.events {
        let keyword = if first { "IF" } else { "ELSIF" };
        first = false;
        let _ = writeln!(b, "  {keyword} TG_OP = '{}' THEN", op.sql());
        let mut members = Vec::new();
        match op {
            Op::Insert => {
                members.push(Always("key", key_parts(marker, "NEW")));
                if rows {
                    members.push(Always("new", image_parts(marker, "NEW")));
                }
            }
            Op::Update => {
                members.push(Always("key", key_parts(marker, "NEW")));
                if !marker.key.is_empty() {
                    let old = key_parts(marker, "OLD");
                    members.push(When(key_changed(marker), "old_key", old));
                }
                if rows {
                    members.push(Always("old", image_parts(marker, "OLD")));
                    members.push(Always("new", image_parts(marker, "NEW")));
                }
            }
            Op::Delete => {
                members.push(Always("key", key_parts(marker, "OLD")));
                if rows {
                    members.push(Always("old", image_parts(marker, "OLD")));
                }
            }
            Op::Truncate => members.push(Always("key", vec![Piece::text("null")])),
        }
        let _ = writeln!(b, "    p := {};", payload(Some(*op), &members));
    }
    let _ = writeln!(b, "  ELSE");
    let _ = writeln!(b, "    RETURN NULL;");
    let _ = writeln!(b, "  END IF;");
    let _ = writeln!(
        b,
        "  -- PostgreSQL refuses payloads of 8000 bytes or more: never fail the user's write."
    );
    let _ = writeln!(b, "  IF pg_catalog.octet_length(p) >= 8000 THEN");
    // The key again: the old row's for a DELETE, none for a TRUNCATE, else the new row's.
    let key = if marker.key.is_empty() {
        vec![Piece::text("null")]
    } else {
        vec![Piece::Sql(format!(
            "CASE TG_OP WHEN 'DELETE' THEN {} WHEN 'TRUNCATE' THEN 'null' ELSE {} END",
            join(&key_parts(marker, "OLD")),
            join(&key_parts(marker, "NEW"))
        ))]
    };
    let truncated = || Always("truncated", vec![Piece::text("true")]);
    let with_key = payload(None, &[Always("key", key), truncated()]);
    let _ = writeln!(b, "    p := {with_key};");
    let _ = writeln!(b, "    IF pg_catalog.octet_length(p) >= 8000 THEN");
    let null = Always("key", vec![Piece::text("null")]);
    let _ = writeln!(b, "      p := {};", payload(None, &[null, truncated()]));
    let _ = writeln!(b, "    END IF;");
    let _ = writeln!(b, "  END IF;");
    let _ = writeln!(
        b,
        "EXCEPTION WHEN OTHERS THEN\n  -- DDL since the install (a column named here renamed or dropped): never fail the\n  \
         -- user's write. The event says so, with the key if its columns are still there."
    );
    let stale = |key: Piece| Always("stale", vec![Piece::text("true")]).after(key);
    let bare = payload(None, &stale(Piece::text("null")));
    let _ = writeln!(b, "  BEGIN");
    let _ = writeln!(
        b,
        "    p := {};",
        payload(None, &stale(key_by_name(marker)))
    );
    let _ = writeln!(b, "    IF pg_catalog.octet_length(p) >= 8000 THEN");
    let _ = writeln!(b, "      p := {bare};");
    let _ = writeln!(b, "    END IF;");
    let _ = writeln!(b, "  EXCEPTION WHEN OTHERS THEN");
    let _ = writeln!(
        b,
        "    -- The last resort: only what the trigger itself knows."
    );
    let _ = writeln!(b, "    p := {bare};");
    let _ = writeln!(b, "  END;");
    let _ = writeln!(b, "END;");
    let _ = writeln!(
        b,
        "  sent := pg_catalog.pg_notify({}, p) IS NULL;",
        quote_literal(&marker.channel)
    );
    let _ = writeln!(b, "  RETURN NULL;");
    let _ = write!(b, "END;");
    b
}

/// `$pgnotify$`, or `$pgnotify1$`... : a dollar quote that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    (0..)
        .map(|i| match i {
            0 => "$pgnotify$".to_owned(),
            i => format!("$pgnotify{i}$"),
        })
        .find(|tag| !body.contains(tag.as_str()))
        .unwrap_or_default()
}

/// Waits at most 10 s for the table's lock, so writers never queue behind an install for long.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s';";

/// Statements that run as one transaction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Script(Vec<String>);

impl Script {
    fn push(&mut self, statement: String) {
        self.0.push(statement);
    }

    pub(crate) fn statements(&self) -> &[String] {
        &self.0
    }

    /// The script as `--print-sql` shows it, ready for psql: `BEGIN;` ... `COMMIT;`.
    pub(crate) fn text(&self) -> String {
        let mut text = String::from("BEGIN;\n");
        for statement in &self.0 {
            text.push_str(statement);
            text.push('\n');
        }
        text.push_str("COMMIT;\n");
        text
    }
}

/// The install script, one transaction: replaces whatever of ours is there.
pub(crate) fn install_sql(table: &Table, marker: &Marker, installed: &Installed) -> Script {
    let body = function_body(marker);
    let tag = dollar_tag(&body);
    let function = table.function_sql();
    let comment = quote_literal(&marker.comment());
    let on = table.sql();
    let mut s = Script::default();
    s.push(LOCK_TIMEOUT.to_owned());
    s.push(format!(
        "CREATE OR REPLACE FUNCTION {function} RETURNS trigger\n  LANGUAGE plpgsql \
         SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp\nAS {tag}\n{body}\n{tag};"
    ));
    s.push(format!("COMMENT ON FUNCTION {function} IS {comment};"));
    for trigger in &installed.triggers {
        s.push(format!("DROP TRIGGER {} ON {on};", quote_ident(trigger)));
    }
    if let Some(old) = &installed.function
        && old.sql() != function
    {
        s.push(format!("DROP FUNCTION {};", old.sql()));
    }
    let triggers = marker.triggers();
    if triggers.contains(&ROW_TRIGGER) {
        s.push(format!(
            "CREATE TRIGGER {} AFTER {} ON {on}\n  FOR EACH ROW EXECUTE FUNCTION {function};",
            quote_ident(ROW_TRIGGER),
            marker.row_ops().join(" OR ")
        ));
    }
    if triggers.contains(&TRUNCATE_TRIGGER) {
        s.push(format!(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {on}\n  FOR EACH STATEMENT EXECUTE FUNCTION \
             {function};",
            quote_ident(TRUNCATE_TRIGGER)
        ));
    }
    s
}

/// The removal script, one transaction: our triggers, then our function.
pub(crate) fn drop_sql(table: &Table, installed: &Installed) -> Script {
    let mut s = Script::default();
    s.push(LOCK_TIMEOUT.to_owned());
    for trigger in &installed.triggers {
        s.push(format!(
            "DROP TRIGGER {} ON {};",
            quote_ident(trigger),
            table.sql()
        ));
    }
    if let Some(function) = &installed.function {
        s.push(format!("DROP FUNCTION {};", function.sql()));
    }
    s
}

/// The function body as the catalog will store it (`prosrc`): what the install compares to
/// decide that nothing needs to change.
pub(crate) fn stored_body(marker: &Marker) -> String {
    format!("\n{}\n", function_body(marker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::tests::marker;

    #[test]
    fn the_body_quotes_names_and_calls_only_pg_catalog() {
        let body = function_body(&marker(true));
        assert!(body.contains(r#"NEW."We""ird""#), "{body}");
        assert!(body.contains("pg_catalog.pg_notify('it''s', p)"), "{body}");
        for call in ["format(", "to_json(", "octet_length(", "pg_notify("] {
            for (i, _) in body.match_indices(call) {
                assert!(body[..i].ends_with("pg_catalog."), "unqualified {call}");
            }
        }
    }

    #[test]
    fn dollar_quotes_avoid_the_body() {
        assert_eq!(dollar_tag("x"), "$pgnotify$");
        assert_eq!(dollar_tag("a $pgnotify$ b"), "$pgnotify1$");
    }
}
