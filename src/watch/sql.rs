//! The SQL `watch-table` runs: the trigger function (its payload built with `format()` from
//! `to_json` pieces, under a fixed `search_path`, every call `pg_catalog.`-qualified), and the
//! install and removal scripts, each one transaction.

use super::{
    DELETE_TRIGGER, INSERT_TRIGGER, Installed, Kind, Marker, Op, ROW_TRIGGER, TRUNCATE_TRIGGER,
    Table, UPDATE_TRIGGER,
};
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
    object_parts_of(columns, |_, c| format!("{row}.{}", quote_ident(c)))
}

/// `object_parts` with each column's value the SQL expression `value(index, name)` gives.
fn object_parts_of(columns: &[String], value: impl Fn(usize, &str) -> String) -> Vec<Piece> {
    let mut parts = Vec::with_capacity(columns.len() * 2 + 1);
    for (i, c) in columns.iter().enumerate() {
        let name = serde_json::to_string(c).unwrap_or_default();
        let open = if i == 0 { "{" } else { "," };
        parts.push(Piece::text(format!("{open}{name}:")));
        parts.push(Piece::Sql(json_value(&value(i, c))));
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
fn key_changed(marker: &Marker, old: &str, new: &str) -> String {
    let column = |row: &str, c: &String| format!("{row}.{}::pg_catalog.text", quote_ident(c));
    let tests: Vec<String> = marker
        .key
        .iter()
        .map(|c| format!("{} IS DISTINCT FROM {}", column(old, c), column(new, c)))
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
fn key_by_name(marker: &Marker, json: &str) -> Piece {
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
    let _ = write!(sql, "'}}' FROM (SELECT {json} AS j) r), 'null')");
    Piece::Sql(sql)
}

/// The payload as one `format` expression: `op`, `schema`, `table`, then the given members
/// (`key` first), then `}`.
///
/// The op is written as a literal in the branch that knows it; the schema and table are the
/// trigger's own, read at each call, so that events stay right after a rename.
fn payload(op: Option<Op>, members: &[Member]) -> String {
    let name = |var: &str| format!("pg_catalog.to_json({var})::pg_catalog.text");
    payload_named(
        op,
        members,
        &name("TG_TABLE_SCHEMA"),
        &name("TG_TABLE_NAME"),
    )
}

/// `payload` with the schema's and the table's JSON given as SQL expressions (never NULL).
fn payload_named(op: Option<Op>, members: &[Member], schema: &str, table: &str) -> String {
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
    parts.push(Piece::Sql(schema.to_owned()));
    parts.push(Piece::text(",\"table\":"));
    parts.push(Piece::Sql(table.to_owned()));
    push_members(&mut parts, members);
    join(&parts)
}

/// The members as pieces after the ones in `parts`, then `}`.
fn push_members(parts: &mut Vec<Piece>, members: &[Member]) {
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
}

/// A payload in the statement function's fast path: the same text as `statement_payload`
/// while the table keeps the names it had at the install, which are written into the
/// template (no `to_json` of them at each call; `fast_send` checks the names).
fn fast_payload(table: &Table, op: Op, members: &[Member]) -> String {
    let json = |name: &str| serde_json::to_string(name).unwrap_or_default();
    let mut parts = vec![Piece::text(format!(
        "{{\"op\":\"{}\",\"schema\":{},\"table\":{}",
        op.sql(),
        json(&table.schema),
        json(&table.name)
    ))];
    push_members(&mut parts, members);
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
pub(super) fn function_body(table: &Table, marker: &Marker) -> String {
    match marker.triggers {
        Kind::Row => row_body(marker),
        Kind::Statement => statement_body(table, marker),
    }
}

/// The row trigger's function body (see `function_body`).
fn row_body(marker: &Marker) -> String {
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
                    members.push(When(key_changed(marker, "OLD", "NEW"), "old_key", old));
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
    // A durable event is a row, not a notification: it has no size limit to fall back from.
    if !marker.durable {
        oversized(&mut b, marker);
    }
    row_tail(&mut b, marker);
    b
}

/// PostgreSQL refuses payloads of 8000 bytes or more: the row function sends the key instead,
/// and never fails the user's write.
fn oversized(b: &mut String, marker: &Marker) {
    use Member::Always;
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
}

/// The rest of the row function: the stale fallbacks, then the send.
fn row_tail(b: &mut String, marker: &Marker) {
    use Member::Always;
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
        payload(
            None,
            &stale(key_by_name(
                marker,
                "CASE TG_OP WHEN 'DELETE' THEN pg_catalog.to_json(OLD) \
                 ELSE pg_catalog.to_json(NEW) END"
            ))
        )
    );
    // A durable event is a row: no limit to fall back from.
    if !marker.durable {
        let _ = writeln!(b, "    IF pg_catalog.octet_length(p) >= 8000 THEN");
        let _ = writeln!(b, "      p := {bare};");
        let _ = writeln!(b, "    END IF;");
    }
    let _ = writeln!(b, "  EXCEPTION WHEN OTHERS THEN");
    let _ = writeln!(
        b,
        "    -- The last resort: only what the trigger itself knows."
    );
    let _ = writeln!(b, "    p := {bare};");
    let _ = writeln!(b, "  END;");
    let _ = writeln!(b, "END;");
    let channel = quote_literal(&marker.channel);
    match marker.durable {
        false => {
            let _ = writeln!(b, "  sent := pg_catalog.pg_notify({channel}, p) IS NULL;");
        }
        true => {
            // Outside the exception block: if the event cannot be stored (no privilege), the
            // write fails rather than lose it.
            let _ = writeln!(
                b,
                "  INSERT INTO pgnotify.events (channel, payload) VALUES ({channel}, p);"
            );
            let _ = writeln!(
                b,
                "  sent := pg_catalog.pg_notify({}, {channel}) IS NULL;",
                quote_literal(crate::durable::WAKE_CHANNEL)
            );
        }
    }
    let _ = writeln!(b, "  RETURN NULL;");
    let _ = write!(b, "END;");
}

/// The transition tables' names, as the statement triggers declare them.
const NEW_TABLE: &str = "pgnotify_new";
const OLD_TABLE: &str = "pgnotify_old";

/// `PERFORM` sending one event per row of `rows` (a query with the payload as `p` and the key
/// columns as `k1`, `k2`, ...), in the order of its rows: the payload, or when it would reach
/// 8000 bytes the key with `"truncated": true`, or without the key.
///
/// `count`: a `SELECT ... INTO pgnotify_m` that counts the rows of `rows` whose `unpaired` is
/// true, sending every event all the same, for the UPDATE's check.
fn send_each(marker: &Marker, op: Op, rows: &str, count: bool) -> String {
    use Member::Always;
    let key = if marker.key.is_empty() {
        vec![Piece::text("null")]
    } else {
        object_parts_of(&marker.key, |i, _| format!("x.k{}", i + 1))
    };
    let truncated = || Always("truncated", vec![Piece::text("true")]);
    let with_key = statement_payload(op, &[Always("key", key), truncated()]);
    let bare = statement_payload(op, &[Always("key", vec![Piece::text("null")]), truncated()]);
    let (open, close) = match count {
        false => ("PERFORM", ""),
        true => (
            "SELECT pg_catalog.count(*) FILTER (WHERE x.unpaired), pg_catalog.count(",
            ") INTO pgnotify_m, pgnotify_n",
        ),
    };
    format!(
        "{open} pg_catalog.pg_notify({}, CASE\n        \
         WHEN pg_catalog.octet_length(x.p) < 8000 THEN x.p\n        \
         WHEN pg_catalog.octet_length({with_key}) < 8000 THEN {with_key}\n        \
         ELSE {bare} END){close}\n      FROM ({rows}) x;",
        quote_literal(&marker.channel)
    )
}

/// The key columns of `row` as `k1`, `k2`, ...: for `send_each`.
fn key_columns(marker: &Marker, row: &str) -> String {
    marker
        .key
        .iter()
        .enumerate()
        .map(|(i, c)| format!(", {row}.{} AS k{}", quote_ident(c), i + 1))
        .collect()
}

/// A payload in the statement function, where the schema's and table's JSON are variables.
fn statement_payload(op: Op, members: &[Member]) -> String {
    payload_named(Some(op), members, "pgnotify_s", "pgnotify_t")
}

/// The statement triggers' function body (plpgsql), without the dollar quotes: one function
/// for the three statement triggers with transition tables and the TRUNCATE trigger.
///
/// Each op sends all its events from one query over its transition table, in the table's
/// order, which is the order in which the rows were changed: the events, their order and the
/// fallbacks are the row function's, row for row. An UPDATE's old and new rows are paired by
/// position: PostgreSQL appends one old and one new row to the two tables for each row
/// updated, in one step (`AfterTriggerSaveEvent`), so the n-th rows of both are one row's
/// before and after. That holds for the tables this kind is chosen for (not partitioned,
/// without inheritance, where a row moved between partitions would be captured in two
/// steps); the function checks that both tables have as many rows as were paired, and if not
/// sends the stale events of the DDL fallback instead of guessing.
///
/// Two paths, for the cost of a single-row statement, which is mostly the preparing of each
/// query's expressions at every call:
/// - **The fast path** sends every event as built, with nothing checked in SQL: `pg_notify`
///   itself refuses an event of 8000 bytes or more, and an UPDATE's row that found no pair,
///   or any row of a table renamed since the install (whose names the fast path writes as
///   text), is sent to no channel, which `pg_notify` refuses as well (both
///   `invalid_parameter_value`).
/// - On that refusal, the block's subtransaction takes back what the fast path sent, and
///   **the checked path** sends the statement's events again, each checked for size (the key
///   with `"truncated": true`, or without the key) and the UPDATE's pairs counted (never
///   guessed: stale events when they do not pair). A fast path that succeeds sent exactly what
///   the checked path would have: every event under 8000 bytes, every row paired.
/// - On any other error (DDL since the install), the stale events.
///
/// Names: `#variable_conflict use_variable`, so that a column named like a variable changes
/// nothing; every column is written qualified by the alias of its table.
fn statement_body(table: &Table, marker: &Marker) -> String {
    use Member::Always;
    let mut b = String::new();
    let channel = quote_literal(&marker.channel);
    let names = "pgnotify_s := pg_catalog.to_json(TG_TABLE_SCHEMA)::pg_catalog.text;\n    \
                 pgnotify_t := pg_catalog.to_json(TG_TABLE_NAME)::pg_catalog.text;";
    let _ = writeln!(b, "#variable_conflict use_variable");
    let _ = writeln!(b, "DECLARE");
    let _ = writeln!(b, "  pgnotify_s pg_catalog.text;");
    let _ = writeln!(b, "  pgnotify_t pg_catalog.text;");
    let _ = writeln!(b, "  pgnotify_m pg_catalog.int8;");
    let _ = writeln!(b, "  pgnotify_n pg_catalog.int8;");
    let _ = writeln!(b, "  sent pg_catalog.bool;");
    let _ = writeln!(b, "BEGIN");
    if marker.events.contains(&Op::Truncate) {
        let _ = writeln!(b, "  IF TG_OP = 'TRUNCATE' THEN");
        let truncate = payload(
            Some(Op::Truncate),
            &[Always("key", vec![Piece::text("null")])],
        );
        let _ = writeln!(
            b,
            "    sent := pg_catalog.pg_notify({channel}, {truncate}) IS NULL;"
        );
        let _ = writeln!(b, "    RETURN NULL;");
        let _ = writeln!(b, "  END IF;");
    }
    let ops: Vec<Op> = [Op::Insert, Op::Update, Op::Delete]
        .into_iter()
        .filter(|op| marker.events.contains(op))
        .collect();
    let _ = writeln!(b, "BEGIN");
    branches(&mut b, &ops, "  ", |op| fast_send(table, marker, op));
    let _ = writeln!(b, "EXCEPTION");
    let _ = writeln!(
        b,
        "  WHEN invalid_parameter_value THEN\n    \
         -- pg_notify refused an event of 8000 bytes or more, or an UPDATE's row without a\n    \
         -- pair: the statement's events again, each one checked.\n    {names}"
    );
    let _ = writeln!(b, "    BEGIN");
    branches(&mut b, &ops, "      ", |op| checked_send(marker, op));
    let _ = writeln!(b, "    EXCEPTION WHEN OTHERS THEN");
    stale_sends(&mut b, marker, &ops, "      ");
    let _ = writeln!(b, "    END;");
    let _ = writeln!(
        b,
        "  WHEN OTHERS THEN\n    \
         -- DDL since the install (a column named here renamed or dropped): never fail the\n    \
         -- user's write. Each row's event says so, with the key if its columns are still there.\n    {names}"
    );
    stale_sends(&mut b, marker, &ops, "    ");
    let _ = writeln!(b, "END;");
    let _ = writeln!(b, "  RETURN NULL;");
    let _ = write!(b, "END;");
    b
}

/// The members of an INSERT's or a DELETE's event (the transition table's row `row`), and
/// that table.
fn single_members(marker: &Marker, op: Op) -> (&'static str, &'static str, Vec<Member>) {
    let (table, row, name) = match op {
        Op::Insert => (NEW_TABLE, "n", "new"),
        _ => (OLD_TABLE, "o", "old"),
    };
    let mut members = vec![Member::Always("key", key_parts(marker, row))];
    if marker.rows {
        members.push(Member::Always(name, image_parts(marker, row)));
    }
    (table, row, members)
}

/// The members of an UPDATE's event, from the columns of `update_pairs`.
fn update_members(marker: &Marker) -> Vec<Member> {
    use Member::{Always, When};
    let mut members = vec![Always("key", paired_key(marker, "n"))];
    let old_key = paired_key(marker, "o");
    members.push(When(paired_key_changed(marker), "old_key", old_key));
    if marker.rows {
        members.push(Always("old", paired_image(marker, "o")));
        members.push(Always("new", paired_image(marker, "n")));
    }
    members
}

/// An UPDATE's old and new rows paired by position (see `statement_body`): each column the
/// events need, as JSON, in one array per table (each a scan in the table's order), zipped by
/// `ROWS FROM (unnest(...), ...)`, which pads the shorter with NULLs. No join: the plan, made
/// once and cached for statements of every size, is the same for one row and a million. Never
/// a whole-row value, whose fields PostgreSQL reads wrong after a column was dropped.
///
/// `markers`: also a `true` per row of each table (`pgnotify_o`, `pgnotify_n`), NULL only
/// where a row found no pair, whatever its values. Without them, the key's JSON stands in:
/// never NULL for a key column, which is NOT NULL, but after DDL it may be, and then the row
/// only looks unpaired, which sends it down the checked path, never a wrong event.
fn update_pairs(marker: &Marker, markers: bool) -> String {
    let mut arrays = Vec::new();
    let mut names = Vec::new();
    for (side, table) in [("o", OLD_TABLE), ("n", NEW_TABLE)] {
        let mut push = |name: String, value: String| {
            arrays.push(format!(
                "pg_catalog.unnest(ARRAY(SELECT {value} FROM {table} {side}))"
            ));
            names.push(name);
        };
        if markers {
            push(format!("pgnotify_{side}"), "true".to_owned());
        }
        for (i, c) in marker.key.iter().enumerate() {
            let value = format!("pg_catalog.to_json({side}.{})", quote_ident(c));
            push(format!("pgnotify_{side}k{}", i + 1), value);
        }
        match (marker.rows, &marker.columns) {
            (false, _) => {}
            (true, None) => push(
                format!("pgnotify_{side}j"),
                format!("pg_catalog.to_json({side})"),
            ),
            (true, Some(image)) => {
                for (i, c) in image.iter().enumerate() {
                    let value = format!("pg_catalog.to_json({side}.{})", quote_ident(c));
                    push(format!("pgnotify_{side}c{}", i + 1), value);
                }
            }
        }
    }
    format!(
        "ROWS FROM (\n          {}\n        ) AS u({})",
        arrays.join(",\n          "),
        names.join(", ")
    )
}

/// The fast path's query for `op` (see `statement_body`).
fn fast_send(table: &Table, marker: &Marker, op: Op) -> String {
    // The table's names as installed, tested at each row: after a rename the channel is NULL,
    // which `pg_notify` refuses, and the checked path sends the events with the names as
    // they are now.
    let channel = format!(
        "CASE WHEN TG_TABLE_SCHEMA = {} AND TG_TABLE_NAME = {}{} THEN {} END",
        quote_literal(&table.schema),
        quote_literal(&table.name),
        match op {
            Op::Update => " AND u.pgnotify_ok1 IS NOT NULL AND u.pgnotify_nk1 IS NOT NULL",
            _ => "",
        },
        quote_literal(&marker.channel)
    );
    match op {
        Op::Update => {
            let p = fast_payload(table, op, &update_members(marker));
            format!(
                "    PERFORM pg_catalog.pg_notify({channel},\n        {p})\n      FROM {};",
                update_pairs(marker, false)
            )
        }
        _ => {
            let (from, row, members) = single_members(marker, op);
            let p = fast_payload(table, op, &members);
            format!(
                "    PERFORM pg_catalog.pg_notify({channel},\n        {p})\n      FROM {from} {row};"
            )
        }
    }
}

/// The checked path's query for `op` (see `statement_body`).
fn checked_send(marker: &Marker, op: Op) -> String {
    match op {
        Op::Update => {
            let p = statement_payload(Op::Update, &update_members(marker));
            // `send_each` wants the key's values as k1, ...: JSON here, which `to_json`
            // leaves as it is.
            let keys: String = (1..=marker.key.len())
                .map(|i| format!(", u.pgnotify_nk{i} AS k{i}"))
                .collect();
            let pairs = format!(
                "SELECT {p} AS p{keys},\n          \
                 u.pgnotify_o IS NULL OR u.pgnotify_n IS NULL AS unpaired\n        \
                 FROM {} OFFSET 0",
                update_pairs(marker, true)
            );
            let send = send_each(marker, Op::Update, &pairs, true);
            format!(
                "        {send}\n        \
                 IF pgnotify_m > 0 THEN\n          \
                 RAISE EXCEPTION 'pgnotify: the old and new rows of an UPDATE did not pair';\n        \
                 END IF;"
            )
        }
        _ => {
            let (table, row, members) = single_members(marker, op);
            let p = statement_payload(op, &members);
            let keys = key_columns(marker, row);
            let query = format!("SELECT {p} AS p{keys} FROM {table} {row} OFFSET 0");
            format!("        {}", send_each(marker, op, &query, false))
        }
    }
}

/// The stale events of the DDL fallback, as a block of its own: each row's event with the
/// key if its columns are still there, or, if even that fails, only what the trigger knows.
fn stale_sends(b: &mut String, marker: &Marker, ops: &[Op], indent: &str) {
    use Member::Always;
    let stale = |key: Piece| Always("stale", vec![Piece::text("true")]).after(key);
    let channel = quote_literal(&marker.channel);
    let table_of = |op: Op| match op {
        Op::Delete => (OLD_TABLE, "o"),
        _ => (NEW_TABLE, "n"),
    };
    let bare = |op: Op| statement_payload(op, &stale(Piece::text("null")));
    let inner = format!("{indent}  ");
    let _ = writeln!(b, "{indent}BEGIN");
    branches(b, ops, &inner, |op| {
        let (table, row) = table_of(op);
        let p = statement_payload(
            op,
            &stale(key_by_name(marker, &format!("pg_catalog.to_json({row})"))),
        );
        format!(
            "{inner}  PERFORM pg_catalog.pg_notify({channel}, CASE WHEN pg_catalog.octet_length(x.p) < 8000 \
             THEN x.p ELSE {} END)\n{inner}    FROM (SELECT {p} AS p FROM {table} {row} OFFSET 0) x;",
            bare(op)
        )
    });
    let _ = writeln!(b, "{indent}EXCEPTION WHEN OTHERS THEN");
    let _ = writeln!(
        b,
        "{indent}  -- The last resort: only what the trigger itself knows."
    );
    branches(b, ops, &inner, |op| {
        let (table, _) = table_of(op);
        format!(
            "{inner}  PERFORM pg_catalog.pg_notify({channel}, {}) FROM {table};",
            bare(op)
        )
    });
    let _ = writeln!(b, "{indent}END;");
}

/// `IF TG_OP = 'INSERT' THEN ... ELSIF ... END IF;` at `indent`, a branch per op of `ops`,
/// each the statements `query` writes for it; nothing when `ops` is empty.
fn branches(b: &mut String, ops: &[Op], indent: &str, query: impl Fn(Op) -> String) {
    for (i, op) in ops.iter().enumerate() {
        let keyword = if i == 0 { "IF" } else { "ELSIF" };
        let _ = writeln!(b, "{indent}{keyword} TG_OP = '{}' THEN", op.sql());
        let _ = writeln!(b, "{}", query(*op));
    }
    if !ops.is_empty() {
        let _ = writeln!(b, "{indent}END IF;");
    }
}

/// The key of one side of an UPDATE's pair (`o` or `n`), from its JSON columns.
fn paired_key(marker: &Marker, side: &str) -> Vec<Piece> {
    paired_object(&marker.key, &format!("u.pgnotify_{side}k"))
}

/// An object of JSON columns `prefix1`, `prefix2`, ... (`null` for a NULL).
fn paired_object(columns: &[String], prefix: &str) -> Vec<Piece> {
    let mut parts = object_parts_of(columns, |_, _| String::new());
    let mut i = 0;
    for part in &mut parts {
        if let Piece::Sql(sql) = part {
            i += 1;
            *sql = format!("COALESCE({prefix}{i}::pg_catalog.text, 'null')");
        }
    }
    parts
}

/// `key_changed` between the two sides of an UPDATE's pair: their JSON as text.
fn paired_key_changed(marker: &Marker) -> String {
    let tests: Vec<String> = (1..=marker.key.len())
        .map(|i| {
            format!(
                "u.pgnotify_ok{i}::pg_catalog.text IS DISTINCT FROM u.pgnotify_nk{i}::pg_catalog.text"
            )
        })
        .collect();
    tests.join(" OR ")
}

/// The row image of one side of an UPDATE's pair: `pgnotify_oj`, or the `pgnotify_oc` columns.
fn paired_image(marker: &Marker, side: &str) -> Vec<Piece> {
    match &marker.columns {
        None => vec![Piece::Sql(format!("u.pgnotify_{side}j::pg_catalog.text"))],
        Some(columns) => paired_object(columns, &format!("u.pgnotify_{side}c")),
    }
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
    let body = function_body(table, marker);
    let tag = dollar_tag(&body);
    let function = table.function_sql();
    let comment = quote_literal(&marker.comment());
    let on = table.sql();
    let mut s = Script::default();
    s.push(LOCK_TIMEOUT.to_owned());
    // The statement function's UPDATE joins its two tables on a row number, which the planner
    // cannot estimate: it would take a few hundred rows for millions and compile the query
    // with JIT, costing more than the statement.
    let jit = match marker.triggers {
        Kind::Row => "",
        Kind::Statement => "\n  SET jit = off",
    };
    s.push(format!(
        "CREATE OR REPLACE FUNCTION {function} RETURNS trigger\n  LANGUAGE plpgsql \
         SECURITY INVOKER\n  SET search_path = pg_catalog, pg_temp{jit}\nAS {tag}\n{body}\n{tag};"
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
    let triggers = marker.trigger_names();
    for (name, op, referencing) in [
        (INSERT_TRIGGER, "INSERT", "NEW TABLE AS pgnotify_new"),
        (
            UPDATE_TRIGGER,
            "UPDATE",
            "OLD TABLE AS pgnotify_old NEW TABLE AS pgnotify_new",
        ),
        (DELETE_TRIGGER, "DELETE", "OLD TABLE AS pgnotify_old"),
    ] {
        if triggers.contains(&name) {
            s.push(format!(
                "CREATE TRIGGER {} AFTER {op} ON {on}\n  REFERENCING {referencing}\n  \
                 FOR EACH STATEMENT EXECUTE FUNCTION {function};",
                quote_ident(name)
            ));
        }
    }
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
pub(crate) fn stored_body(table: &Table, marker: &Marker) -> String {
    format!("\n{}\n", function_body(table, marker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::tests::marker;

    fn table() -> Table {
        Table {
            oid: 1,
            schema: "My \"s\" 100%".into(),
            name: "it's".into(),
            partitioned: false,
            inheritance: false,
        }
    }

    #[test]
    fn the_body_quotes_names_and_calls_only_pg_catalog() {
        let body = function_body(&table(), &marker(true));
        assert!(body.contains(r#"NEW."We""ird""#), "{body}");
        assert!(body.contains("pg_catalog.pg_notify('it''s', p)"), "{body}");
        let statement = Marker {
            triggers: Kind::Statement,
            durable: false,
            ..marker(true)
        };
        for body in [body, function_body(&table(), &statement)] {
            for call in [
                "format(",
                "to_json(",
                "octet_length(",
                "pg_notify(",
                "unnest(",
            ] {
                for (i, _) in body.match_indices(call) {
                    assert!(body[..i].ends_with("pg_catalog."), "unqualified {call}");
                }
            }
        }
    }

    #[test]
    fn the_statement_fast_path_writes_the_names_as_json_and_checks_them_as_literals() {
        let statement = Marker {
            triggers: Kind::Statement,
            durable: false,
            ..marker(false)
        };
        let body = function_body(&table(), &statement);
        // JSON in the template (its % doubled for format, its backslashes for E''), SQL
        // literals in the test.
        assert!(
            body.contains(r#"E'{"op":"INSERT","schema":"My \\"s\\" 100%%","table":"it''s","key":"#),
            "{body}"
        );
        assert!(
            body.contains(r#"CASE WHEN TG_TABLE_SCHEMA = 'My "s" 100%' AND TG_TABLE_NAME = 'it''s' THEN 'it''s' END"#),
            "{body}"
        );
        assert!(body.contains("WHEN invalid_parameter_value THEN"), "{body}");
    }

    #[test]
    fn dollar_quotes_avoid_the_body() {
        assert_eq!(dollar_tag("x"), "$pgnotify$");
        assert_eq!(dollar_tag("a $pgnotify$ b"), "$pgnotify1$");
    }
}
