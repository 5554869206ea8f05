//! The statements of `--fetch`: the catalog lookups that choose how a table's keys are sent,
//! the SQL that reads the rows of many keys at once, and running it for one table's events.

use super::Place;
use crate::pg::{describe_pg_error, quote_ident};
use crate::watch;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Statement};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

/// What is known about one (channel, schema, table).
pub(super) enum Entry {
    /// Watched on this channel: the statement reading the rows of many keys by that watch's
    /// key.
    Ready {
        statement: Statement,
        key: Vec<String>,
        by: By,
        row: RowAs,
    },
    /// Not watched on this channel (as of then).
    Refused(Instant),
}

/// How a statement takes the keys.
pub(super) enum By {
    /// One text array per key column, in the watch's key order, each element cast in SQL to
    /// its column's type: for each column, whether it takes the key's JSON text as written
    /// (a `json` or `jsonb` column) rather than a JSON string's content.
    Columns(Vec<bool>),
    /// One array of the keys' JSON, which `json_populate_record` turns into the columns'
    /// types: for key columns of an array or composite type, where that differs from the
    /// type's input function.
    Json,
}

/// How a statement returns each row (after its key's number).
pub(super) enum RowAs {
    /// As `to_json` writes it.
    Json,
    /// As its columns (`t.*`), when all are of a type whose JSON is plain (see [`Plain`]),
    /// which costs the server less than `to_json`: each column's name as the opening of its
    /// JSON member (`"id":`) and its type. A change of the table's columns changes the
    /// statement's result, which the server then refuses as changed: it is prepared again.
    Columns(Vec<(String, Plain)>),
}

/// A type that `to_json` writes as the value itself: an integer's digits, `true` or `false`,
/// a string of the text.
#[derive(Clone, Copy)]
pub(super) enum Plain {
    Int2,
    Int4,
    Int8,
    Bool,
    Text,
}

impl Plain {
    /// The result column's type as the server sends it (a domain as its base type).
    fn of(ty: &postgres::types::Type) -> Option<Plain> {
        use postgres::types::Type;
        Some(match *ty {
            Type::INT2 => Plain::Int2,
            Type::INT4 => Plain::Int4,
            Type::INT8 => Plain::Int8,
            Type::BOOL => Plain::Bool,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Plain::Text,
            _ => return None,
        })
    }
}

/// Appends the JSON `to_json` would write for a row returned as its columns (from the second
/// on): `{"id":1,"v":"x"}`.
fn write_columns(row: &postgres::Row, columns: &[(String, Plain)], text: &mut Vec<u8>) {
    use std::io::Write as _;
    text.push(b'{');
    for (i, (member, plain)) in columns.iter().enumerate() {
        if i > 0 {
            text.push(b',');
        }
        text.extend_from_slice(member.as_bytes());
        let at = i + 1;
        // The types were checked when preparing: a failure here would be a NULL.
        let written = match plain {
            Plain::Int2 => row
                .try_get::<_, Option<i16>>(at)
                .ok()
                .flatten()
                .map(i64::from),
            Plain::Int4 => row
                .try_get::<_, Option<i32>>(at)
                .ok()
                .flatten()
                .map(i64::from),
            Plain::Int8 => row.try_get::<_, Option<i64>>(at).ok().flatten(),
            Plain::Bool => {
                let value = row.try_get::<_, Option<bool>>(at).ok().flatten();
                text.extend_from_slice(match value {
                    Some(true) => b"true",
                    Some(false) => b"false",
                    None => b"null",
                });
                continue;
            }
            Plain::Text => {
                match row.try_get::<_, Option<&str>>(at).ok().flatten() {
                    Some(value) if serde_json::to_writer(&mut *text, value).is_ok() => {}
                    _ => text.extend_from_slice(b"null"),
                }
                continue;
            }
        };
        match written {
            Some(number) => {
                let _ = write!(text, "{number}");
            }
            None => text.extend_from_slice(b"null"),
        }
    }
    text.push(b'}');
}

/// Whether an error running a prepared statement says that DDL has outdated it: a column it
/// names is gone, a type it was written for changed (which also changes the type of its
/// result: it returns the key columns for this very reason). Prepared again, it either works
/// or fails to prepare, with the server's words for what changed.
pub(super) fn outdated_by_ddl(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|code| {
        code.code().starts_with("42") && *code != SqlState::INSUFFICIENT_PRIVILEGE
            || *code == SqlState::FEATURE_NOT_SUPPORTED
    })
}

/// A key as an event wrote it: each column and its value (JSON).
type Key<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

/// Runs the statement for the events whose key (`keys`, as the events wrote them) has exactly
/// the watch's columns, each row's JSON appended to `text`: where the row of each event is, in
/// their order (`Some(None)` for a row that is gone), `None` for an event whose key is another.
pub(super) fn read_rows(
    client: &mut Client,
    statement: &Statement,
    key: &[String],
    by: &By,
    row_as: &RowAs,
    keys: &[String],
    text: &mut Vec<u8>,
) -> Result<Vec<Option<Place>>, postgres::Error> {
    let mut exact: Vec<(&str, Key<'_>)> = Vec::with_capacity(keys.len());
    let mut asked: Vec<Option<usize>> = Vec::with_capacity(keys.len());
    for json in keys {
        let columns: Option<Key<'_>> = serde_json::from_str(json).ok();
        match columns {
            Some(columns)
                if columns.len() == key.len()
                    && key.iter().all(|k| columns.contains_key(k.as_str())) =>
            {
                asked.push(Some(exact.len()));
                exact.push((json, columns));
            }
            _ => asked.push(None),
        }
    }
    let count = exact.len();
    let mut rows: Vec<Place> = vec![None; count];
    if count > 0 {
        let mut found = match by {
            By::Json => {
                let keys: Vec<&str> = exact.iter().map(|(json, _)| *json).collect();
                client.query_raw(statement, [&keys as &(dyn ToSql + Sync)])?
            }
            By::Columns(raw) => {
                let arrays: Vec<Vec<Option<String>>> = key
                    .iter()
                    .zip(raw)
                    .map(|(k, raw)| {
                        exact
                            .iter()
                            .map(|(_, columns)| key_text(columns.get(k.as_str())?, *raw))
                            .collect()
                    })
                    .collect();
                client.query_raw(statement, arrays.iter().map(|a| a as &(dyn ToSql + Sync)))?
            }
        };
        while let Some(row) = found.next()? {
            let number: i64 = row.get(0);
            let slot = usize::try_from(number - 1)
                .ok()
                .and_then(|i| rows.get_mut(i));
            if let Some(slot) = slot {
                let start = text.len();
                match row_as {
                    RowAs::Json => text.extend_from_slice(row.get::<_, &str>(1).as_bytes()),
                    RowAs::Columns(columns) => write_columns(&row, columns, text),
                }
                *slot = Some(start..text.len());
            }
        }
    }
    Ok(asked
        .into_iter()
        .map(|slot| slot.map(|i| rows[i].take()))
        .collect())
}

/// A key column's value in an event, as the text the server casts to the column's type, as
/// `json_populate_record` would read it: a JSON string's content, other JSON as written (a
/// number digit for digit), `null` as NULL; for a `json` or `jsonb` column (`raw`), the JSON
/// as written.
fn key_text(value: &RawValue, raw: bool) -> Option<String> {
    let json = value.get();
    if json == "null" {
        return None;
    }
    if !raw && json.starts_with('"') {
        return serde_json::from_str(json).ok();
    }
    Some(json.to_owned())
}

/// Checks that the table is watched on `channel` and prepares the statement that reads the
/// rows of many keys by that watch's key. The keys are numbered by `WITH ORDINALITY` and each
/// row found comes back with its key's number; each key is looked up on its own (`OFFSET 0`
/// keeps the planner from hashing the whole table instead). See [`By`] for how keys go.
pub(super) fn prepare(
    client: &mut Client,
    channel: &str,
    schema: &str,
    table: &str,
) -> Result<Entry, String> {
    let watch = watch::watch_of(client, schema, table).map_err(|e| format!("{e:#}"))?;
    let Some(marker) = watch.filter(|m| m.channel == channel && !m.key.is_empty()) else {
        return Ok(Entry::Refused(Instant::now()));
    };
    let types = key_types(client, schema, table, &marker.key).map_err(|e| describe_pg_error(&e))?;
    let table = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let sql = |row: &str| match &types {
        Some(types) => by_columns(&table, &marker.key, types, row),
        None => by_json(&table, &marker.key, row),
    };
    let by = match &types {
        Some(types) => By::Columns(types.iter().map(|t| t.raw).collect()),
        None => By::Json,
    };
    // The columns first: the statement says their types, as the server will send them.
    let statement = client
        .prepare(&sql("t.*"))
        .map_err(|e| describe_pg_error(&e))?;
    let plain: Option<Vec<(String, Plain)>> = statement.columns()[1..]
        .iter()
        .map(|c| {
            let member = format!("{}:", serde_json::to_string(c.name()).ok()?);
            Some((member, Plain::of(c.type_())?))
        })
        .collect();
    let (statement, row) = match plain {
        Some(columns) => (statement, RowAs::Columns(columns)),
        None => {
            // The key columns too: a change of their type, which the casts would outlive,
            // changes the statement's result, which the server then refuses as changed.
            let outputs: String = marker
                .key
                .iter()
                .map(|c| format!(", t.{}", quote_ident(c)))
                .collect();
            let json = format!("pg_catalog.to_json(t)::pg_catalog.text{outputs}");
            let statement = client
                .prepare(&sql(&json))
                .map_err(|e| describe_pg_error(&e))?;
            (statement, RowAs::Json)
        }
    };
    Ok(Entry::Ready {
        statement,
        key: marker.key,
        by,
        row,
    })
}

/// Runs the catalog lookups of [`prepare`] once, for no table, so that in a new session the
/// first table's do not wait for the server to fill its catalog caches (about 1.5 ms). What it
/// finds, and any error, is of no interest.
pub(super) fn warm_up(client: &mut Client) {
    let _ = watch::watch_of(client, "", "");
    let _ = key_types(client, "", "", &[String::new()]);
}

/// A key column's type, as the catalog says in this session.
struct KeyType {
    /// `format_type`'s name for it, valid in this session. Without a typmod, but given as -1
    /// rather than NULL: NULL names `bpchar` `character`, which a cast reads as `character(1)`
    /// (and `bit` as `bit(1)`).
    name: String,
    /// A `json` or `jsonb` column (or a domain over one): it takes the key's JSON as written.
    raw: bool,
}

/// The types of the key columns, in key order; None when a column is not there (the statement
/// by JSON then fails with the server's own words) or when one is of an array or composite
/// type (or a domain over one), which `json_populate_record` reads in its own way.
fn key_types(
    client: &mut Client,
    schema: &str,
    table: &str,
    key: &[String],
) -> Result<Option<Vec<KeyType>>, postgres::Error> {
    let rows = client.query(
        "WITH RECURSIVE c(name, typ, base) AS ( \
             SELECT a.attname::pg_catalog.text, a.atttypid, a.atttypid \
               FROM pg_catalog.pg_attribute a \
               JOIN pg_catalog.pg_class r ON r.oid = a.attrelid \
               JOIN pg_catalog.pg_namespace s ON s.oid = r.relnamespace \
              WHERE s.nspname::pg_catalog.text = $1 AND r.relname::pg_catalog.text = $2 \
                AND a.attname::pg_catalog.text = ANY($3) AND a.attnum > 0 \
                AND NOT a.attisdropped \
             UNION ALL \
             SELECT c.name, c.typ, t.typbasetype \
               FROM c JOIN pg_catalog.pg_type t ON t.oid = c.base WHERE t.typtype = 'd') \
         SELECT c.name, pg_catalog.format_type(c.typ, -1), \
                c.base IN ('pg_catalog.json'::pg_catalog.regtype, \
                           'pg_catalog.jsonb'::pg_catalog.regtype), \
                t.typtype IN ('c', 'p') OR t.typelem <> 0 \
           FROM c JOIN pg_catalog.pg_type t ON t.oid = c.base WHERE t.typtype <> 'd'",
        &[&schema, &table, &key],
    )?;
    let mut types = Vec::with_capacity(key.len());
    for column in key {
        let Some(row) = rows.iter().find(|r| r.get::<_, &str>(0) == column) else {
            return Ok(None);
        };
        if row.get::<_, bool>(3) {
            return Ok(None);
        }
        types.push(KeyType {
            name: row.get(1),
            raw: row.get(2),
        });
    }
    Ok(Some(types))
}

/// The statement for [`By::Columns`]: `$1`, `$2`... the text arrays of each key column, each
/// element cast to the column's type; each row found as `row` makes it (`t.*`, or its JSON).
fn by_columns(table: &str, key: &[String], types: &[KeyType], row: &str) -> String {
    let arrays: Vec<String> = (1..=key.len())
        .map(|i| format!("pg_catalog.unnest(${i}::pg_catalog.text[])"))
        .collect();
    let names: Vec<String> = (1..=key.len()).map(|i| format!("k{i}")).collect();
    let matches: Vec<String> = key
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (c, t))| format!("t.{} = u.k{}::{}", quote_ident(c), i + 1, t.name))
        .collect();
    format!(
        "SELECT u.n, r.* \
           FROM ROWS FROM ({}) WITH ORDINALITY AS u({}, n) \
                CROSS JOIN LATERAL \
                (SELECT {row} FROM {table} AS t WHERE {} OFFSET 0) AS r",
        arrays.join(", "),
        names.join(", "),
        matches.join(" AND ")
    )
}

/// The statement for [`By::Json`]: `$1` the array of the keys' JSON.
fn by_json(table: &str, key: &[String], row: &str) -> String {
    let matches: Vec<String> = key
        .iter()
        .map(|c| format!("t.{0} = k.{0}", quote_ident(c)))
        .collect();
    format!(
        "SELECT u.n, r.* \
           FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(j, n) \
                CROSS JOIN LATERAL \
                (SELECT {row} \
                   FROM pg_catalog.json_populate_record(NULL::{table}, u.j::pg_catalog.json) \
                        AS k, {table} AS t \
                  WHERE {} OFFSET 0) AS r",
        matches.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_become_the_text_json_populate_record_would_read() {
        let key: Key<'_> = serde_json::from_str(
            r#"{"s":"it's \"q\" \\ \u00e9 \ud83d\ude00","n":9007199254740993,"f":1.50,"b":true,"z":null,"o":{"a":[1,"x"]}}"#,
        )
        .unwrap();
        let text = |column: &str, raw: bool| key_text(key[column], raw);
        assert_eq!(text("s", false).unwrap(), "it's \"q\" \\ \u{e9} \u{1f600}");
        assert_eq!(text("n", false).unwrap(), "9007199254740993");
        assert_eq!(text("f", false).unwrap(), "1.50");
        assert_eq!(text("b", false).unwrap(), "true");
        assert_eq!(text("z", false), None);
        assert_eq!(text("z", true), None);
        assert_eq!(text("o", false).unwrap(), r#"{"a":[1,"x"]}"#);
        // A json or jsonb column takes a string as JSON, quotes and escapes kept.
        assert_eq!(
            text("s", true).unwrap(),
            r#""it's \"q\" \\ \u00e9 \ud83d\ude00""#
        );
    }
}
