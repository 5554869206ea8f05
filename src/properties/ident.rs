//! Names in SQL (`pg/ident.rs`, `watch/`): a channel name pgnotify accepts reaches the server
//! exactly, quoted as an identifier; a name the server would cut or refuse is refused first;
//! `schema.table`, quoted for SQL or for people, reads back as the two names it quotes.

use super::{config, has_control, sql_names, wild_string};
use crate::pg::{MAX_CHANNEL_BYTES, check_channel, quote_ident};
use crate::sanitize::hidden;
use crate::watch::{Table, display_name};
use proptest::prelude::*;

/// A name: often short, sometimes around PostgreSQL's 63-byte limit.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => wild_string(20),
        1 => wild_string(70),
        1 => ("[a-zé]{0,3}", 58..68usize).prop_map(|(tail, n)| format!("{}{tail}", "x".repeat(n))),
    ]
}

/// A name a catalog can hold: not empty, no NUL.
fn stored_name() -> impl Strategy<Value = String> {
    name().prop_map(|s| match s.replace('\0', "") {
        s if s.is_empty() => "x".to_owned(),
        s => s,
    })
}

fn table(schema: String, name: String) -> Table {
    Table {
        oid: 1,
        schema,
        name,
        partitioned: false,
        inheritance: false,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_channel_is_accepted_exactly_when_postgresql_keeps_it_whole(name in name()) {
        let fits = !name.is_empty() && name.len() <= MAX_CHANNEL_BYTES && !name.contains('\0');
        match check_channel(&name) {
            Ok(()) => {
                prop_assert!(fits, "{:?}", name);
                // LISTEN "name": the server reads back the very name, within NAMEDATALEN.
                let quoted = quote_ident(&name);
                prop_assert_eq!(sql_names(&quoted), Some(vec![name.clone()]), "{}", quoted);
            }
            Err(e) => {
                prop_assert!(!fits, "{:?}: {}", name, e);
                let text = format!("{e:#}");
                prop_assert!(!has_control(&text), "{:?}", text);
                prop_assert_eq!(crate::exit::for_error(&e), crate::exit::Exit::Usage);
            }
        }
    }

    #[test]
    fn a_table_quoted_for_sql_reads_back(schema in stored_name(), table_name in stored_name()) {
        let t = table(schema.clone(), table_name.clone());
        prop_assert_eq!(sql_names(&t.sql()), Some(vec![schema.clone(), table_name]), "{}", t.sql());
        let f = t.function_sql();
        let f = f.strip_suffix("()").unwrap_or(&f);
        let function = sql_names(f).unwrap_or_default();
        prop_assert_eq!(function.first(), Some(&schema));
        prop_assert!(function.get(1).is_some_and(|f| f.len() <= MAX_CHANNEL_BYTES), "{:?}", function);
    }

    #[test]
    fn a_table_shown_to_people_reads_back_and_never_acts_on_a_terminal(
        schema in stored_name(),
        table_name in stored_name(),
    ) {
        let shown = display_name(&schema, &table_name);
        prop_assert!(!shown.chars().any(hidden), "{:?}", shown);
        if !schema.chars().chain(table_name.chars()).any(hidden) {
            prop_assert_eq!(sql_names(&shown), Some(vec![schema, table_name]), "{}", shown);
        }
    }
}
