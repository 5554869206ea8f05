//! What `watch-table` installs: the trigger function's SQL, the marker that finds our objects
//! again, and the catalog lookups both `watch-table` and `--fetch` need.
//!
//! Owns: the event schema (`{"op","schema","table","key"}`, `new`/`old` with `--rows`,
//! `old_key` when an UPDATE changes the key, `truncated`), the objects' names, and the marker.
//! Does not own: running the SQL (`cmd::watch_table`) or reading rows back (`fetch`).
//!
//! Safety of the generated SQL (failure-modes S1, S5, S6):
//! - the table is resolved by the server (`to_regclass($1)`) and every name put into the DDL is
//!   the catalog's, quoted with `quote_ident`; every text is quoted with `quote_literal`;
//! - the function is `SECURITY INVOKER` with `SET search_path = pg_catalog, pg_temp`, and every
//!   function it calls is written `pg_catalog.`-qualified, so a writer's search_path cannot
//!   substitute one;
//! - the key comparison of an UPDATE compares JSON text, never the key's own `=`, which may
//!   live in a schema outside that search_path: nothing in the function can fail on a type;
//! - a payload that would reach 8000 bytes is replaced by the key and `"truncated": true`, and
//!   if even that is too long, by the event without its key: the user's write always succeeds.

use crate::conn::describe_pg_error;
use crate::exit::UsageError;
use crate::notification::{MAX_CHANNEL_BYTES, quote_ident, quote_literal};
use crate::output::escape_controls;
use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The row trigger's name, the same on every watched table.
pub const ROW_TRIGGER: &str = "pgnotify_watch";
/// The TRUNCATE statement trigger's name.
pub const TRUNCATE_TRIGGER: &str = "pgnotify_watch_truncate";
/// The first words of the comment on the trigger function pgnotify creates; the settings follow
/// as JSON. A trigger is ours when it has one of our names and calls a function with this
/// marker: `--list`, `--drop` and `--fetch` recognise our objects so. (The triggers carry no
/// comment of their own: `COMMENT ON TRIGGER` needs the table's ownership, which installing
/// does not.)
pub const MARKER_PREFIX: &str = "pgnotify watch-table ";
/// `json_build_object` takes at most 100 arguments: 50 name/value pairs.
pub const MAX_COLUMNS: usize = 50;

/// A change a trigger can report.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Truncate => "TRUNCATE",
        }
    }
}

/// What a watch sends; stored as JSON in the marker comment of each object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub version: u32,
    pub channel: String,
    pub events: Vec<Op>,
    /// Row images (`--rows`).
    pub rows: bool,
    /// The columns of the row images (`--columns`); all when absent.
    pub columns: Option<Vec<String>>,
    /// The key columns, in key order (empty: the table has no key).
    pub key: Vec<String>,
}

impl Marker {
    /// The comment text: the prefix, then the settings as JSON.
    pub fn comment(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{MARKER_PREFIX}{json}")
    }

    /// Reads a comment back; None for comments that are not ours.
    pub fn parse(comment: &str) -> Option<Marker> {
        serde_json::from_str(comment.strip_prefix(MARKER_PREFIX)?).ok()
    }

    /// "key" or "rows" or "rows (a, b)", for `--list` and messages.
    pub fn mode(&self) -> String {
        match (&self.rows, &self.columns) {
            (false, _) => "key".to_owned(),
            (true, None) => "rows".to_owned(),
            (true, Some(columns)) => format!("rows ({})", columns.join(", ")),
        }
    }

    /// The row operations (all but TRUNCATE), as SQL keywords.
    fn row_ops(&self) -> Vec<&'static str> {
        self.events
            .iter()
            .filter(|op| **op != Op::Truncate)
            .map(|op| op.sql())
            .collect()
    }

    /// The triggers this watch has, in name order: the row trigger for any row operation, the
    /// statement trigger for TRUNCATE.
    pub fn triggers(&self) -> Vec<&'static str> {
        let row = (!self.row_ops().is_empty()).then_some(ROW_TRIGGER);
        let truncate = self
            .events
            .contains(&Op::Truncate)
            .then_some(TRUNCATE_TRIGGER);
        row.into_iter().chain(truncate).collect()
    }

    /// "insert, update, delete, truncate".
    pub fn events_text(&self) -> String {
        let names: Vec<String> = self
            .events
            .iter()
            .map(|op| op.sql().to_lowercase())
            .collect();
        names.join(", ")
    }
}

/// A table as the server resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

impl Table {
    /// `"My Schema"."Order Items"`: quoted, for SQL.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `shop.orders`, or `"My Schema"."Order Items"` when a part needs quotes: for people.
    pub fn display(&self) -> String {
        display_name(&self.schema, &self.name)
    }

    /// The trigger function's name: `pgnotify_watch_<table>`, cut to 63 bytes with a hash of
    /// the whole name when the table's name is long.
    pub fn function_name(&self) -> String {
        function_name(&self.name)
    }

    /// The function, schema-qualified and quoted, with its empty argument list.
    pub fn function_sql(&self) -> String {
        format!(
            "{}.{}()",
            quote_ident(&self.schema),
            quote_ident(&self.function_name())
        )
    }
}

/// `schema.table`, quoting a part only when it is not a plain lower-case identifier.
pub fn display_name(schema: &str, table: &str) -> String {
    fn part(s: &str) -> String {
        let plain = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            s.to_owned()
        } else {
            crate::output::escape_controls(&quote_ident(s)).into_owned()
        }
    }
    format!("{}.{}", part(schema), part(table))
}

fn function_name(table: &str) -> String {
    const PREFIX: &str = "pgnotify_watch_";
    let whole = format!("{PREFIX}{table}");
    if whole.len() <= MAX_CHANNEL_BYTES {
        return whole;
    }
    // FNV-1a: stable across versions and platforms, which std's hasher does not promise.
    let hash = table.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let room = MAX_CHANNEL_BYTES - PREFIX.len() - 9;
    let mut cut = room;
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{PREFIX}{}_{hash:08x}", &table[..cut])
}

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
pub fn function_body(marker: &Marker) -> String {
    use Member::{Always, When};
    let mut b = String::new();
    let rows = marker.rows;
    let _ = writeln!(b, "DECLARE");
    let _ = writeln!(b, "  p pg_catalog.text;");
    let _ = writeln!(b, "  sent pg_catalog.bool;");
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

/// What is on the table now, as far as the install and the removal care.
#[derive(Clone, Debug, Default)]
pub struct Installed {
    /// Our triggers on the table (names), with the marker of the first.
    pub triggers: Vec<String>,
    pub marker: Option<Marker>,
    /// The function our triggers call.
    pub function: Option<Function>,
    /// Triggers with one of our names that pgnotify did not create: never touched.
    pub foreign: Vec<String>,
}

/// A trigger function of ours, as the catalog has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub schema: String,
    pub name: String,
    /// Its body (`prosrc`).
    pub body: String,
}

impl Function {
    /// Quoted, with its empty argument list.
    pub fn sql(&self) -> String {
        format!(
            "{}.{}()",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

/// Waits at most 10 s for the table's lock, so writers never queue behind an install for long.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s';";

/// Statements that run as one transaction.
#[derive(Clone, Debug, Default)]
pub struct Script(Vec<String>);

impl Script {
    fn push(&mut self, statement: String) {
        self.0.push(statement);
    }

    pub fn statements(&self) -> &[String] {
        &self.0
    }

    /// The script as `--print-sql` shows it, ready for psql: `BEGIN;` ... `COMMIT;`.
    pub fn text(&self) -> String {
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
pub fn install_sql(table: &Table, marker: &Marker, installed: &Installed) -> Script {
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
pub fn drop_sql(table: &Table, installed: &Installed) -> Script {
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
pub fn stored_body(marker: &Marker) -> String {
    format!("\n{}\n", function_body(marker))
}

/// Checks `--columns` against the table's columns and the 50-column limit.
pub fn check_columns(table: &Table, wanted: &[String], existing: &[String]) -> Result<()> {
    if wanted.len() > MAX_COLUMNS {
        bail!(
            "--columns names {} columns; at most {MAX_COLUMNS} fit in one row image",
            wanted.len()
        );
    }
    for column in wanted {
        if !existing.contains(column) {
            bail!(
                "column {} does not exist in table {} (names are exact: case matters)",
                quote_ident(column),
                table.display()
            );
        }
    }
    Ok(())
}

/// Resolves TABLE as written in SQL (`orders`, `shop.orders`, `"My Schema"."Order Items"`) on
/// the server, with the session's search_path, as psql's `\d` would: a malformed name is a usage
/// error (status 2), a missing one or something that is not a table an error (status 1).
pub fn resolve(client: &mut postgres::Client, name: &str) -> Result<Table> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, \
                    c.relkind::pg_catalog.text \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&name],
        )
        .map_err(|e| {
            let why = describe_pg_error(&e);
            let malformed = e.code().is_some_and(|c| c.code() == "42602");
            let err = anyhow!("{why}");
            if malformed {
                UsageError(format!(
                    "{} is not a valid table name: {why}",
                    escape_controls(&format!("{name:?}"))
                ))
                .into()
            } else {
                err.context(format!("could not look up table {name:?}"))
            }
        })?;
    let Some(row) = rows.first() else {
        bail!(
            "table {} does not exist (or is not on the search_path; write schema.table)",
            escape_controls(&format!("{name:?}"))
        );
    };
    let table = Table {
        oid: row.get(0),
        schema: row.get(1),
        name: row.get(2),
    };
    let kind: String = row.get(3);
    if kind != "r" && kind != "p" {
        let what = match kind.as_str() {
            "v" => "a view",
            "m" => "a materialized view",
            "f" => "a foreign table",
            "S" => "a sequence",
            "i" | "I" => "an index",
            _ => "not a table",
        };
        bail!("{} is {what}; watch-table needs a table", table.display());
    }
    Ok(table)
}

/// The key a watch sends: the primary key's columns, else those of the replica identity index
/// (unique, not null, as logical replication uses); empty when there is neither.
pub fn key_columns(client: &mut postgres::Client, table: &Table) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT i.indexrelid, a.attname::pg_catalog.text \
           FROM pg_catalog.pg_index i \
          CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) \
                WITH ORDINALITY AS k(attnum, ord) \
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
          WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident) \
          ORDER BY i.indisprimary DESC, i.indexrelid, k.ord",
        &[&table.oid],
    )?;
    let Some(first) = rows.first().map(|r| r.get::<_, u32>(0)) else {
        return Ok(Vec::new());
    };
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, u32>(0) == first)
        .map(|r| r.get(1))
        .collect())
}

/// The table's columns, in order.
pub fn columns(client: &mut postgres::Client, table: &Table) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT attname::pg_catalog.text FROM pg_catalog.pg_attribute \
          WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&table.oid],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What of ours is on the table (triggers with our names that call a function without our
/// marker are `foreign`).
pub fn installed(client: &mut postgres::Client, table: &Table) -> Result<Installed> {
    let rows = client.query(
        "SELECT t.tgname::pg_catalog.text, \
                n.nspname::pg_catalog.text, p.proname::pg_catalog.text, p.prosrc, \
                pg_catalog.obj_description(p.oid, 'pg_proc') \
           FROM pg_catalog.pg_trigger t \
           JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
          WHERE t.tgrelid = $1 AND t.tgname::pg_catalog.text = ANY($2) \
          ORDER BY 1",
        &[&table.oid, &vec![ROW_TRIGGER, TRUNCATE_TRIGGER]],
    )?;
    let mut installed = Installed::default();
    for row in &rows {
        let name: String = row.get(0);
        let marker = row
            .get::<_, Option<String>>(4)
            .and_then(|c| Marker::parse(&c));
        let Some(marker) = marker else {
            installed.foreign.push(name);
            continue;
        };
        installed.triggers.push(name);
        installed.marker.get_or_insert(marker);
        installed.function = Some(Function {
            schema: row.get(1),
            name: row.get(2),
            body: row.get(3),
        });
    }
    Ok(installed)
}

/// Refuses to install when a trigger or function has one of our names but is not ours, or when
/// our function's name serves another table's watch: nothing of the user's is ever replaced.
pub fn check_names_free(
    client: &mut postgres::Client,
    table: &Table,
    installed: &Installed,
) -> Result<()> {
    if let Some(name) = installed.foreign.first() {
        bail!(
            "table {} already has a trigger named {name} that pgnotify did not create; \
             pgnotify leaves it alone (rename it to let pgnotify watch this table)",
            table.display()
        );
    }
    let taken = client.query(
        "SELECT pg_catalog.obj_description(p.oid, 'pg_proc'), \
                EXISTS (SELECT FROM pg_catalog.pg_trigger t \
                         WHERE t.tgfoid = p.oid AND t.tgrelid OPERATOR(pg_catalog.<>) $1) \
           FROM pg_catalog.pg_proc p \
           JOIN pg_catalog.pg_class c ON c.relnamespace = p.pronamespace \
          WHERE c.oid = $1 AND p.proname::pg_catalog.text = $2 AND p.pronargs = 0",
        &[&table.oid, &table.function_name()],
    )?;
    if let Some(row) = taken.first() {
        let ours = row
            .get::<_, Option<String>>(0)
            .is_some_and(|c| Marker::parse(&c).is_some());
        let elsewhere: bool = row.get(1);
        if !ours || elsewhere {
            bail!(
                "a function {}.{} already exists{}; pgnotify leaves it alone",
                quote_ident(&table.schema),
                quote_ident(&table.function_name()),
                if ours {
                    " and serves another table"
                } else {
                    " and was not created by pgnotify"
                }
            );
        }
    }
    Ok(())
}

/// A watched table, as `--list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Watched {
    pub schema: String,
    pub table: String,
    #[serde(flatten)]
    pub marker: Marker,
}

/// Every watched table in the database (or only `table`), found by the marker on our triggers.
pub fn list(client: &mut postgres::Client, table: Option<&Table>) -> Result<Vec<Watched>> {
    let rows = client.query(
        "SELECT DISTINCT ON (n.nspname, c.relname) \
                n.nspname::pg_catalog.text, c.relname::pg_catalog.text, d.description \
           FROM pg_catalog.pg_trigger t \
           JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_catalog.pg_description d ON d.objoid = t.tgfoid AND d.objsubid = 0 \
                AND d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
          WHERE t.tgname::pg_catalog.text = ANY($1) \
            AND pg_catalog.starts_with(d.description, $2) \
            AND ($3::pg_catalog.oid IS NULL OR t.tgrelid = $3) \
          ORDER BY n.nspname, c.relname, t.tgname",
        &[
            &vec![ROW_TRIGGER, TRUNCATE_TRIGGER],
            &MARKER_PREFIX,
            &table.map(|t| t.oid),
        ],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Watched {
                schema: r.get(0),
                table: r.get(1),
                marker: Marker::parse(&r.get::<_, String>(2))?,
            })
        })
        .collect())
}

/// The watch on `schema.table`, named exactly (as an event names it), if there is one.
pub fn watch_of(
    client: &mut postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Option<Marker>> {
    let rows = client.query(
        "SELECT pg_catalog.obj_description(t.tgfoid, 'pg_proc') \
           FROM pg_catalog.pg_trigger t \
           JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname::pg_catalog.text = $1 AND c.relname::pg_catalog.text = $2 \
            AND t.tgname::pg_catalog.text = ANY($3)",
        &[&schema, &table, &vec![ROW_TRIGGER, TRUNCATE_TRIGGER]],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .find_map(|c| Marker::parse(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(rows: bool) -> Marker {
        Marker {
            version: 1,
            channel: "it's".into(),
            events: vec![Op::Insert, Op::Update, Op::Delete, Op::Truncate],
            rows,
            columns: None,
            key: vec!["id".into(), "We\"ird".into()],
        }
    }

    #[test]
    fn markers_round_trip_and_ignore_other_comments() {
        let m = marker(true);
        assert_eq!(Marker::parse(&m.comment()), Some(m.clone()));
        assert!(m.comment().starts_with(MARKER_PREFIX));
        assert_eq!(Marker::parse("my own trigger"), None);
        assert_eq!(Marker::parse("pgnotify watch-table {broken"), None);
        assert_eq!(m.mode(), "rows");
        assert_eq!(m.events_text(), "insert, update, delete, truncate");
    }

    #[test]
    fn function_names_fit_in_63_bytes() {
        assert_eq!(function_name("orders"), "pgnotify_watch_orders");
        let long = "é".repeat(31);
        let name = function_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(name, function_name(&"é".repeat(30)));
        assert_eq!(name, function_name(&long), "stable");
    }

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

    #[test]
    fn display_names_quote_only_when_needed() {
        assert_eq!(display_name("public", "orders"), "public.orders");
        assert_eq!(
            display_name("My Schema", "Order\"s"),
            r#""My Schema"."Order""s""#
        );
    }
}
