//! The catalog lookups of `watch-table` and `--fetch`: resolving a table as the server does,
//! its key and columns, what of ours is installed on it, and which tables are watched.

use super::drift::{Drift, drift};
use super::{MARKER_PREFIX, Marker, TRIGGERS, Table};
use crate::exit::UsageError;
use crate::pg::{describe_pg_error, quote_ident};
use crate::sanitize::escape_controls;
use anyhow::{Result, anyhow, bail};
use serde::Serialize;

/// What is on the table now, as far as the install and the removal care.
#[derive(Clone, Debug, Default)]
pub(crate) struct Installed {
    /// Our triggers on the table (names), with the marker of the first.
    pub(crate) triggers: Vec<String>,
    pub(crate) marker: Option<Marker>,
    /// The function our triggers call.
    pub(crate) function: Option<Function>,
    /// Triggers with one of our names that pgnotify did not create: never touched.
    pub(crate) foreign: Vec<String>,
    /// The partitioned table whose watch reaches this table (a partition) through cloned
    /// triggers: changed only there.
    pub(crate) inherited_from: Option<String>,
    /// Our triggers that do not fire in an ordinary session, with `tgenabled` (`D`: disabled,
    /// `R`: only for replication sessions).
    pub(crate) disabled: Vec<(String, String)>,
}

/// A trigger function of ours, as the catalog has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Function {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// Its body (`prosrc`).
    pub(crate) body: String,
}

impl Function {
    /// Quoted, with its empty argument list.
    pub(crate) fn sql(&self) -> String {
        format!(
            "{}.{}()",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

/// Resolves TABLE as written in SQL (`orders`, `shop.orders`, `"My Schema"."Order Items"`) on
/// the server, with the session's search_path, as psql's `\d` would: a malformed name is a usage
/// error (status 2), a missing one or something that is not a table an error (status 1).
pub(crate) fn resolve(client: &mut postgres::Client, name: &str) -> Result<Table> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::pg_catalog.text, c.relname::pg_catalog.text, \
                    c.relkind::pg_catalog.text, \
                    EXISTS (SELECT FROM pg_catalog.pg_inherits i \
                             WHERE i.inhrelid = c.oid OR i.inhparent = c.oid) \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&name],
        )
        .map_err(|e| {
            let why = describe_pg_error(&e);
            // The name's own syntax: invalid name syntax, too many dotted names, or a
            // reference to another database (a.b.c).
            let malformed = e
                .code()
                .is_some_and(|c| ["42602", "42601", "0A000"].contains(&c.code()));
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
    let kind: String = row.get(3);
    let table = Table {
        oid: row.get(0),
        schema: row.get(1),
        name: row.get(2),
        partitioned: kind == "p",
        inheritance: row.get(4),
    };
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
pub(crate) fn key_columns(client: &mut postgres::Client, table: &Table) -> Result<Vec<String>> {
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
pub(crate) fn columns(client: &mut postgres::Client, table: &Table) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT attname::pg_catalog.text FROM pg_catalog.pg_attribute \
          WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&table.oid],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What of ours is on the table (triggers with our names that call a function without our
/// marker are `foreign`).
pub(crate) fn installed(client: &mut postgres::Client, table: &Table) -> Result<Installed> {
    let rows = client.query(
        "SELECT t.tgname::pg_catalog.text, \
                n.nspname::pg_catalog.text, p.proname::pg_catalog.text, p.prosrc, \
                pg_catalog.obj_description(p.oid, 'pg_proc'), \
                (SELECT pt.tgrelid::pg_catalog.regclass::pg_catalog.text \
                   FROM pg_catalog.pg_trigger pt WHERE pt.oid = t.tgparentid), \
                t.tgenabled::pg_catalog.text \
           FROM pg_catalog.pg_trigger t \
           JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
          WHERE t.tgrelid = $1 AND t.tgname::pg_catalog.text = ANY($2) \
          ORDER BY 1",
        &[&table.oid, &TRIGGERS.to_vec()],
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
        if let Some(parent) = row.get::<_, Option<String>>(5) {
            installed.inherited_from = Some(parent);
            continue;
        }
        let enabled: String = row.get(6);
        if enabled == "D" || enabled == "R" {
            installed.disabled.push((name.clone(), enabled));
        }
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
pub(crate) fn check_names_free(
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
                         WHERE t.tgfoid = p.oid AND t.tgrelid OPERATOR(pg_catalog.<>) $1 \
                           AND t.tgparentid = 0) \
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

/// Why the current role cannot remove (or replace) what of ours is on the table, if it cannot:
/// `DROP TRIGGER` needs ownership of the table, `DROP FUNCTION` and `CREATE OR REPLACE
/// FUNCTION` ownership of the function. A role that installed a watch with the TRIGGER
/// privilege owns the function but not the table, so neither it nor the table's owner can
/// remove the watch alone. The answer names both owners, so the fix is plain.
pub(crate) fn ownership_missing(
    client: &mut postgres::Client,
    table: &Table,
    installed: &Installed,
) -> Result<Option<String>> {
    let function = installed.function.as_ref().map(|f| f.sql());
    let row = client.query_one(
        "SELECT CURRENT_USER::pg_catalog.text, \
                pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text, \
                pg_catalog.pg_has_role(c.relowner, 'USAGE'), \
                pg_catalog.pg_get_userbyid(p.proowner)::pg_catalog.text, \
                p.proowner IS NULL OR pg_catalog.pg_has_role(p.proowner, 'USAGE') \
           FROM pg_catalog.pg_class c \
           LEFT JOIN pg_catalog.pg_proc p ON p.oid = pg_catalog.to_regprocedure($2) \
          WHERE c.oid = $1",
        &[&table.oid, &function],
    )?;
    let (me, table_owner, owns_table): (String, String, bool) =
        (row.get(0), row.get(1), row.get(2));
    let function_owner: Option<String> = row.get(3);
    let owns_function: bool = row.get(4);
    let lacks_table = !owns_table && !installed.triggers.is_empty();
    if !lacks_table && owns_function {
        return Ok(None);
    }
    let quote = |role: &str| escape_controls(&quote_ident(role)).into_owned();
    let mut needs = vec![format!(
        "of table {} for its triggers (owned by {})",
        table.display(),
        quote(&table_owner)
    )];
    if let (Some(owner), Some(function)) = (&function_owner, &function) {
        needs.push(format!(
            "of its function {} (owned by {})",
            escape_controls(function),
            quote(owner)
        ));
    }
    let lacks = match (lacks_table, owns_function) {
        (true, false) => "either",
        (true, true) => "the table's",
        (false, _) => "the function's",
    };
    Ok(Some(format!(
        "it needs ownership {}, and role {} lacks {lacks}: run it as a role that can act as \
         both owners (a superuser can)",
        needs.join(" and "),
        quote(&me)
    )))
}

/// A watched table, as `--list` shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Watched {
    pub(crate) schema: String,
    pub(crate) table: String,
    #[serde(flatten)]
    pub(crate) marker: Marker,
    /// The table changed since the install so that its events say `"stale": true`: a key or
    /// image column renamed or dropped, or another primary key (events name rows by the old
    /// one). Running `watch-table` again brings the watch up to date.
    pub(crate) stale: bool,
    /// How the trigger no longer matches the table, each with its fix ([`drift`]).
    pub(crate) problems: Vec<Drift>,
}

/// Every watched table in the database (or only `table`), found by the marker on our triggers,
/// with how each no longer matches its table.
pub(crate) fn list(client: &mut postgres::Client, table: Option<&Table>) -> Result<Vec<Watched>> {
    let rows = client.query(
        "SELECT DISTINCT ON (n.nspname, c.relname) \
                n.nspname::pg_catalog.text, c.relname::pg_catalog.text, d.description, c.oid \
           FROM pg_catalog.pg_trigger t \
           JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_catalog.pg_description d ON d.objoid = t.tgfoid AND d.objsubid = 0 \
                AND d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
          WHERE t.tgname::pg_catalog.text = ANY($1) AND t.tgparentid = 0 \
            AND pg_catalog.starts_with(d.description, $2) \
            AND ($3::pg_catalog.oid IS NULL OR t.tgrelid = $3) \
          ORDER BY n.nspname, c.relname, t.tgname",
        &[&TRIGGERS.to_vec(), &MARKER_PREFIX, &table.map(|t| t.oid)],
    )?;
    let mut watched = Vec::new();
    for r in &rows {
        let Some(marker) = Marker::parse(&r.get::<_, String>(2)) else {
            continue;
        };
        let table = Table {
            oid: r.get(3),
            schema: r.get(0),
            name: r.get(1),
            partitioned: false,
            inheritance: false,
        };
        let installed = installed(client, &table)?;
        let problems = drift(client, &table, &marker, &installed)?;
        watched.push(Watched {
            schema: table.schema,
            table: table.name,
            marker,
            stale: problems.iter().any(|d| d.stale),
            problems,
        });
    }
    Ok(watched)
}

/// The watch on `schema.table`, named exactly (as an event names it), if there is one.
pub(crate) fn watch_of(
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
        &[&schema, &table, &TRIGGERS.to_vec()],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .find_map(|c| Marker::parse(&c)))
}
