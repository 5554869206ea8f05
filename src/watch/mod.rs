//! What `watch-table` installs: the model (a watch's settings, kept as the marker that finds
//! our objects again, and the objects' names), the trigger function's SQL (`sql`), and the
//! catalog lookups both `watch-table` and `--fetch` need (`catalog`).
//!
//! Owns: the event schema (`{"op","schema","table","key"}`, `new`/`old` with `--rows`,
//! `old_key` when an UPDATE changes the key, `truncated`), the objects' names, and the marker.
//! Does not own: running the SQL (`cmd::watch_table`) or reading rows back (`stream`'s fetch).
//!
//! Safety of the generated SQL (a table, column or channel name is anyone's text; a trigger
//! runs with the writer's privileges and `search_path`):
//! - the table is resolved by the server (`to_regclass($1)`) and every name put into the DDL is
//!   the catalog's, quoted with `quote_ident`; every text is quoted with `quote_literal`;
//! - the function is `SECURITY INVOKER` with `SET search_path = pg_catalog, pg_temp`, and every
//!   function it calls is written `pg_catalog.`-qualified, so a writer's search_path cannot
//!   substitute one;
//! - the key comparison of an UPDATE compares JSON text, never the key's own `=`, which may
//!   live in a schema outside that search_path: nothing in the function can fail on a type;
//! - a payload that would reach 8000 bytes is replaced by the key and `"truncated": true`, and
//!   if even that is too long, by the event without its key: the user's write always succeeds.

mod catalog;
mod drift;
mod sql;

pub(crate) use catalog::{
    Installed, Watched, check_names_free, columns, installed, key_columns, list, ownership_missing,
    resolve, watch_of,
};
pub(crate) use sql::{Script, drop_sql, install_sql, stored_body};

use crate::pg::{MAX_CHANNEL_BYTES, quote_ident};
use crate::sanitize::escape_controls;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The row trigger's name, the same on every watched table.
pub(crate) const ROW_TRIGGER: &str = "pgnotify_watch";
/// The TRUNCATE statement trigger's name.
pub(crate) const TRUNCATE_TRIGGER: &str = "pgnotify_watch_truncate";
/// The statement triggers with transition tables (`Kind::Statement`): one per op, as
/// PostgreSQL allows transition tables only on a trigger for one event.
pub(crate) const INSERT_TRIGGER: &str = "pgnotify_watch_insert";
pub(crate) const UPDATE_TRIGGER: &str = "pgnotify_watch_update";
pub(crate) const DELETE_TRIGGER: &str = "pgnotify_watch_delete";
/// Every name a trigger of ours may have: what the catalog lookups look for.
pub(crate) const TRIGGERS: [&str; 5] = [
    ROW_TRIGGER,
    TRUNCATE_TRIGGER,
    INSERT_TRIGGER,
    UPDATE_TRIGGER,
    DELETE_TRIGGER,
];
/// The first words of the comment on the trigger function pgnotify creates; the settings follow
/// as JSON. A trigger is ours when it has one of our names and calls a function with this
/// marker: `--list`, `--drop` and `--fetch` recognise our objects so. (The triggers carry no
/// comment of their own: `COMMENT ON TRIGGER` needs the table's ownership, which installing
/// does not.)
pub(crate) const MARKER_PREFIX: &str = "pgnotify watch-table ";
/// `json_build_object` takes at most 100 arguments: 50 name/value pairs.
pub(crate) const MAX_COLUMNS: usize = 50;

/// A change a trigger can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Truncate => "TRUNCATE",
        }
    }
}

/// How a watch's triggers fire for INSERT, UPDATE and DELETE (TRUNCATE is always a statement
/// trigger).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// `FOR EACH ROW`: the function runs once per row. Markers written before there was a
    /// choice have no `triggers` member, and read as this.
    #[default]
    Row,
    /// `FOR EACH STATEMENT` with transition tables: the function runs once per statement and
    /// sends every row's event from one query.
    Statement,
}

impl Kind {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Kind::Row => "row",
            Kind::Statement => "statement",
        }
    }
}

/// What a watch sends; stored as JSON in the marker comment of each object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub(crate) version: u32,
    pub(crate) channel: String,
    pub(crate) events: Vec<Op>,
    /// Row images (`--rows`).
    pub(crate) rows: bool,
    /// The columns of the row images (`--columns`); all when absent.
    pub(crate) columns: Option<Vec<String>>,
    /// The key columns, in key order (empty: the table has no key).
    pub(crate) key: Vec<String>,
    /// Row or statement triggers (absent in markers of earlier versions: row).
    #[serde(default)]
    pub(crate) triggers: Kind,
    /// `--durable`: events are stored in the outbox, and the NOTIFY only wakes consumers
    /// (absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) durable: bool,
}

impl Marker {
    /// The comment text: the prefix, then the settings as JSON.
    pub(crate) fn comment(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{MARKER_PREFIX}{json}")
    }

    /// Reads a comment back; None for comments that are not ours.
    pub(crate) fn parse(comment: &str) -> Option<Marker> {
        serde_json::from_str(comment.strip_prefix(MARKER_PREFIX)?).ok()
    }

    /// "key" or "rows" or "rows (a, b)", for `--list` and messages.
    pub(crate) fn mode(&self) -> String {
        let mode = match (&self.rows, &self.columns) {
            (false, _) => "key".to_owned(),
            (true, None) => "rows".to_owned(),
            (true, Some(columns)) => format!("rows ({})", columns.join(", ")),
        };
        match self.durable {
            true => format!("{mode}, durable"),
            false => mode,
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

    /// The triggers this watch has, in name order: the row trigger for any row operation (or,
    /// with statement triggers, one per operation), the statement trigger for TRUNCATE.
    pub(crate) fn trigger_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .events
            .iter()
            .map(|op| match (op, self.triggers) {
                (Op::Truncate, _) => TRUNCATE_TRIGGER,
                (_, Kind::Row) => ROW_TRIGGER,
                (Op::Insert, Kind::Statement) => INSERT_TRIGGER,
                (Op::Update, Kind::Statement) => UPDATE_TRIGGER,
                (Op::Delete, Kind::Statement) => DELETE_TRIGGER,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// "insert, update, delete, truncate".
    pub(crate) fn events_text(&self) -> String {
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
pub(crate) struct Table {
    pub(crate) oid: u32,
    pub(crate) schema: String,
    pub(crate) name: String,
    /// A partitioned table: its row triggers are cloned onto every partition, attached later
    /// too, but a TRUNCATE of one partition fires no trigger of the parent's.
    pub(crate) partitioned: bool,
    /// A partition, or a table with inheritance parents or children: statement triggers would
    /// not send the events row triggers do (see `Table::row_triggers_needed`).
    pub(crate) inheritance: bool,
}

impl Table {
    /// `"My Schema"."Order Items"`: quoted, for SQL.
    pub(crate) fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `shop.orders`, or `"My Schema"."Order Items"` when a part needs quotes: for people.
    pub(crate) fn display(&self) -> String {
        display_name(&self.schema, &self.name)
    }

    /// Why this table's watch must use row triggers, if it must: statement triggers with
    /// transition tables send the same events only on a plain table with a key.
    /// - a partitioned table: a statement trigger fires on the parent, which would name the
    ///   parent rather than the partition, and a row moved between partitions is an UPDATE
    ///   there but a DELETE and an INSERT to row triggers;
    /// - a partition or inheritance child: its statement triggers do not fire for statements
    ///   on the parent, which do change its rows;
    /// - an inheritance parent: its transition tables hold the children's rows too, which its
    ///   row triggers never see;
    /// - no key: the old and new rows of an UPDATE could not be checked to pair.
    pub(crate) fn row_triggers_needed(&self, key: &[String]) -> Option<&'static str> {
        if self.partitioned {
            Some("it is partitioned")
        } else if self.inheritance {
            Some("it is a partition or has inheritance parents or children")
        } else if key.is_empty() {
            Some("it has no key")
        } else {
            None
        }
    }

    /// The trigger function's name: `pgnotify_watch_<table>`, cut to 63 bytes with a hash of
    /// the whole name when the table's name is long.
    pub(crate) fn function_name(&self) -> String {
        function_name(&self.name)
    }

    /// The function, schema-qualified and quoted, with its empty argument list.
    pub(crate) fn function_sql(&self) -> String {
        format!(
            "{}.{}()",
            quote_ident(&self.schema),
            quote_ident(&self.function_name())
        )
    }
}

/// `schema.table`, quoting a part only when it is not a plain lower-case identifier.
pub(crate) fn display_name(schema: &str, table: &str) -> String {
    fn part(s: &str) -> String {
        let plain = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            s.to_owned()
        } else {
            escape_controls(&quote_ident(s)).into_owned()
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

/// Checks `--columns` against the table's columns and the 50-column limit.
pub(crate) fn check_columns(table: &Table, wanted: &[String], existing: &[String]) -> Result<()> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn marker(rows: bool) -> Marker {
        Marker {
            version: 1,
            channel: "it's".into(),
            events: vec![Op::Insert, Op::Update, Op::Delete, Op::Truncate],
            rows,
            columns: None,
            key: vec!["id".into(), "We\"ird".into()],
            triggers: Kind::Row,
            durable: false,
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
    fn markers_without_a_kind_read_as_row_triggers() {
        let old = r#"pgnotify watch-table {"version":1,"channel":"t","events":["insert"],"rows":false,"columns":null,"key":["id"]}"#;
        let m = Marker::parse(old).expect("an earlier version's marker");
        assert_eq!(m.triggers, Kind::Row);
        assert_eq!(m.trigger_names(), [ROW_TRIGGER]);
        let m = Marker {
            triggers: Kind::Statement,
            ..marker(false)
        };
        assert!(m.comment().contains(r#""triggers":"statement""#));
        assert_eq!(Marker::parse(&m.comment()), Some(m.clone()));
        assert_eq!(
            m.trigger_names(),
            [
                DELETE_TRIGGER,
                INSERT_TRIGGER,
                TRUNCATE_TRIGGER,
                UPDATE_TRIGGER
            ]
        );
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
    fn display_names_quote_only_when_needed() {
        assert_eq!(display_name("public", "orders"), "public.orders");
        assert_eq!(
            display_name("My Schema", "Order\"s"),
            r#""My Schema"."Order""s""#
        );
    }
}
