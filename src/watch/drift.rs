//! How a watched table drifted from its trigger since the install (`watch-table --list` and
//! `doctor` show it): each way in one sentence, with the command that fixes it.

use super::catalog::{Installed, columns, key_columns};
use super::{Kind, Marker, Table};
use crate::pg::quote_ident;
use crate::sanitize::escape_controls;
use anyhow::Result;
use serde::Serialize;

/// A way a watch no longer matches its table, found by [`drift`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Drift {
    /// Which kind: `key_column_gone`, `image_column_gone`, `key_changed`, `renamed`, `moved`,
    /// `trigger_disabled`, `trigger_missing`, `inheritance`.
    pub(crate) kind: &'static str,
    /// Whether its events say `"stale": true` (or are wrong) because of it.
    #[serde(skip)]
    pub(crate) stale: bool,
    /// What is wrong and what it does to the events, in one sentence.
    pub(crate) problem: String,
    /// What to run or do about it.
    pub(crate) fix: String,
}

/// How the table no longer matches what its watch was installed for: a key or image column
/// gone (writes still succeed: the trigger falls back to events with `"stale": true`, without
/// the key or the images), another key (events name rows by the old one), the table renamed
/// or moved to another schema since (its function keeps the old name, and a default channel
/// was the old table name), a trigger disabled or missing, or statement triggers on a table
/// that joined an inheritance tree. Each comes with its fix; reinstalling clears them all. A
/// key column's type does not matter: the payload is its `to_json`, whatever the type, and
/// `--fetch` casts the keys to the column's type as it is when it reads.
pub(crate) fn drift(
    client: &mut postgres::Client,
    table: &Table,
    marker: &Marker,
    installed: &Installed,
) -> Result<Vec<Drift>> {
    let columns = columns(client, table)?;
    let key = key_columns(client, table)?;
    let name = table.display();
    let again = format!("run `{}` to reinstall", reinstall_command(table, marker));
    let keyless = Marker {
        rows: true,
        ..marker.clone()
    };
    let mut found = Vec::new();
    let mut push = |kind, stale, problem: String, fix: String| {
        found.push(Drift {
            kind,
            stale,
            problem,
            fix,
        })
    };
    let gone: Vec<&String> = marker.key.iter().filter(|c| !columns.contains(c)).collect();
    for column in &gone {
        let fix = match key.is_empty() {
            true => format!(
                "add a primary key to {name}, then run `{}`; or run `{}` for events without \
                 a key",
                reinstall_command(table, marker),
                reinstall_command(table, &keyless)
            ),
            false => again.clone(),
        };
        let problem = format!(
            "key column {} of {name} is gone (dropped or renamed): its events carry no key \
             (\"key\": null, \"stale\": true), so nobody can tell which row changed",
            quote(column)
        );
        push("key_column_gone", true, problem, fix);
    }
    let images = marker.columns.iter().flatten();
    let missing: Vec<&String> = images.filter(|c| !columns.contains(c)).collect();
    if !missing.is_empty() {
        let kept: Vec<String> = marker
            .columns
            .iter()
            .flatten()
            .filter(|c| columns.contains(c))
            .cloned()
            .collect();
        let narrower = Marker {
            columns: (!kept.is_empty()).then_some(kept),
            ..marker.clone()
        };
        let problem = format!(
            "column {} of the row images (--columns) of {name} is gone (dropped or renamed): \
             its events carry no row images (\"stale\": true)",
            missing
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let fix = format!("run `{}` to reinstall", reinstall_command(table, &narrower));
        push("image_column_gone", true, problem, fix);
    }
    if gone.is_empty() && key != marker.key {
        let problem = match (marker.key.is_empty(), key.is_empty()) {
            (true, _) => format!(
                "{name} has a primary key ({}) now, but its events carry none (\"key\": null)",
                list_of(&key)
            ),
            (false, true) => format!(
                "{name} has no primary key any more, but its events name rows by ({})",
                list_of(&marker.key)
            ),
            (false, false) => format!(
                "the key of {name} is now ({}), but its events name rows by ({})",
                list_of(&key),
                list_of(&marker.key)
            ),
        };
        let fix = match key.is_empty() && !marker.rows {
            true => format!(
                "add the primary key back; or run `{}` for events without a key",
                reinstall_command(table, &keyless)
            ),
            false => again.clone(),
        };
        push("key_changed", true, problem, fix);
    }
    if let Some(function) = &installed.function {
        if function.schema != table.schema {
            let problem = format!(
                "{name} moved to schema {} since the install; its trigger function {} stayed \
                 in {}",
                quote(&table.schema),
                escape_controls(&function.sql()),
                quote(&function.schema)
            );
            push("moved", false, problem, again.clone());
        } else if function.name != table.function_name() {
            let problem = format!(
                "{name} was renamed since the install (its trigger function is still {}): its \
                 events name the table as it is now, still on channel {}",
                escape_controls(&function.sql()),
                quote(&marker.channel)
            );
            push("renamed", false, problem, again.clone());
        }
    }
    for (trigger, enabled) in &installed.disabled {
        let how = match enabled.as_str() {
            "R" => "fires only in replication sessions (ENABLE REPLICA TRIGGER)",
            _ => "is disabled (ALTER TABLE ... DISABLE TRIGGER)",
        };
        let problem = format!(
            "trigger {} on {name} {how}: its events are not sent",
            quote(trigger)
        );
        let fix = format!(
            "run `ALTER TABLE {} ENABLE TRIGGER {};` in psql, or `{}`",
            escape_controls(&table.sql()),
            quote(trigger),
            reinstall_command(table, marker)
        );
        push("trigger_disabled", false, problem, fix);
    }
    for trigger in marker.trigger_names() {
        if !installed.triggers.iter().any(|t| t == trigger) {
            let problem = format!(
                "trigger {} of the watch on {name} is missing: its events are not sent",
                quote(trigger)
            );
            push("trigger_missing", false, problem, again.clone());
        }
    }
    // Statement triggers of a table that became a partition, or an inheritance parent or
    // child, since the install: statements on a parent no longer reach them, or reach rows
    // row triggers would not see (`Table::row_triggers_needed`).
    let inheritance = marker.triggers == Kind::Statement
        && client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits i \
                                 WHERE i.inhrelid = $1 OR i.inhparent = $1)",
                &[&table.oid],
            )?
            .get::<_, bool>(0);
    if inheritance {
        let problem = format!(
            "{name} joined a partitioned table or an inheritance tree since the install, where \
             its statement triggers miss events or send others"
        );
        push("inheritance", true, problem, again);
    }
    Ok(found)
}

/// A name in a sentence, as SQL writes it, escaped for the terminal.
fn quote(name: &str) -> String {
    escape_controls(&quote_ident(name)).into_owned()
}

fn list_of(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `watch-table` command line that installs `marker` on the table as it is now, for the
/// shell: every setting of the watch written out (its channel too, so that listeners keep it).
pub(crate) fn reinstall_command(table: &Table, marker: &Marker) -> String {
    let mut words = vec![
        "pgnotify".to_owned(),
        "watch-table".to_owned(),
        shell_word(&raw_name(&table.schema, &table.name)),
    ];
    if marker.channel != table.name {
        option(&mut words, "--channel", &marker.channel);
    }
    if marker.events.len() < 4 {
        words.push("--events".into());
        words.push(marker.events_text().replace(", ", ","));
    }
    if marker.rows {
        words.push("--rows".into());
    }
    if let Some(columns) = &marker.columns {
        option(&mut words, "--columns", &columns.join(","));
    }
    if marker.triggers == Kind::Statement {
        words.push("--triggers".into());
        words.push("auto".into());
    }
    if marker.durable {
        words.push("--durable".into());
    }
    escape_controls(&words.join(" ")).into_owned()
}

/// `schema.table` as `watch-table` reads it, as `display_name` writes it but with its control
/// characters as they are: [`shell_word`] writes them for the shell.
fn raw_name(schema: &str, table: &str) -> String {
    let part = |s: &str| match s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        true => s.to_owned(),
        false => quote_ident(s),
    };
    format!("{}.{}", part(schema), part(table))
}

/// An option and its value, as two words; as one (`--channel=-x`) when the value begins
/// with a dash, which the option would otherwise refuse as a flag of its own.
fn option(words: &mut Vec<String>, option: &str, value: &str) {
    match value.starts_with('-') {
        true => words.push(shell_word(&format!("{option}={value}"))),
        false => {
            words.push(option.to_owned());
            words.push(shell_word(value));
        }
    }
}

/// A word for sh: as it is when it holds nothing the shell reads, else in single quotes; a
/// word with control characters as `"$(printf '...')"` with them in octal (`\033`), so that
/// the command shows none of them raw and still names the table when run. (A word that ends
/// in a newline stays single-quoted and escaped: command substitution drops a final newline.)
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-,/:=@%+".contains(c));
    if plain {
        return word.to_owned();
    }
    if word.chars().any(char::is_control) && !word.ends_with('\n') {
        let mut format = String::new();
        for c in word.chars() {
            match c {
                '\\' => format.push_str("\\\\"),
                '%' => format.push_str("%%"),
                '\'' => format.push_str("'\\''"),
                c if c.is_control() => {
                    for byte in c.to_string().bytes() {
                        format.push_str(&format!("\\{byte:03o}"));
                    }
                }
                c => format.push(c),
            }
        }
        return format!("\"$(printf '{format}')\"");
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Op;

    #[test]
    fn shell_words_are_quoted_only_when_the_shell_would_read_them() {
        assert_eq!(shell_word("public.orders"), "public.orders");
        assert_eq!(shell_word("a,b"), "a,b");
        assert_eq!(shell_word(""), "''");
        assert_eq!(
            shell_word(r#"public."It's $HOME""#),
            r#"'public."It'\''s $HOME"'"#
        );
        assert_eq!(
            shell_word("public.\"a\x1b[1m%\\'\u{85}\""),
            r#""$(printf 'public."a\033[1m%%\\'\''\302\205"')""#
        );
    }

    #[test]
    fn a_reinstall_command_carries_every_setting_of_the_watch() {
        let table = Table {
            oid: 1,
            schema: "My Schema".into(),
            name: "t".into(),
            partitioned: false,
            inheritance: false,
        };
        let marker = Marker {
            version: 1,
            channel: "old name".into(),
            events: vec![Op::Insert, Op::Delete],
            rows: true,
            columns: Some(vec!["a".into(), "b c".into()]),
            key: vec!["id".into()],
            triggers: Kind::Statement,
            durable: true,
        };
        assert_eq!(
            reinstall_command(&table, &marker),
            "pgnotify watch-table '\"My Schema\".t' --channel 'old name' --events insert,delete \
             --rows --columns 'a,b c' --triggers auto --durable"
        );
        let dashed = Marker {
            channel: "-x".into(),
            columns: Some(vec!["-a".into(), "b".into()]),
            ..marker
        };
        assert!(
            reinstall_command(&table, &dashed)
                .contains("--channel=-x --events insert,delete --rows --columns=-a,b "),
            "{}",
            reinstall_command(&table, &dashed)
        );
    }
}
