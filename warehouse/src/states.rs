//! Rebuilding aggregate states from their per-event tables, for a part of the data: the
//! entities an erasure touched, the days whose text retention expired. The states only
//! take values in (a materialized view adds each inserted row), so a value redacted in a
//! per-event table by a mutation stays in its state until the state is recomputed.
//!
//! A rebuild deletes the state rows that `state_filter` selects and inserts them again
//! from the per-event rows that `store_filter` selects, read with FINAL (one row per
//! event, its newest load), through the very SELECT of the state's materialized view
//! (taken from the migrations, so the two cannot drift). Rows the loader adds meanwhile
//! are safe: a mutation only touches parts that existed when it was submitted, and every
//! state is idempotent under a row added twice.

use crate::migrations::MIGRATIONS;
use crate::Table;

/// An aggregate state table and the per-event table its materialized view reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub table: &'static str,
    pub store: Table,
}

pub const CALLS: State = State {
    table: "calls_state",
    store: Table::CallEvents,
};
pub const CONTACTS: State = State {
    table: "contacts_state",
    store: Table::ContactEvents,
};
pub const MESSAGES: State = State {
    table: "messages_state",
    store: Table::MessageEvents,
};
pub const UNMAPPED_FIELDS: State = State {
    table: "unmapped_fields_state",
    store: Table::UnmappedFields,
};

impl State {
    /// The SELECT of the state's materialized view, for `database`, reading `source` (a
    /// table or a parenthesized subquery) instead of the per-event table.
    pub fn select_from(self, database: &str, source: &str) -> String {
        let head = format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{}_mv TO {database}.{} AS",
            self.table, self.table
        );
        let select = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements(database))
            .filter_map(|s| s.strip_prefix(&head).map(|select| select.trim().to_owned()))
            .next_back()
            .unwrap_or_else(|| panic!("no migration creates {}_mv", self.table));
        select.replace(
            &format!("FROM {database}.{}", self.store),
            &format!("FROM {source}"),
        )
    }

    /// The two statements that rebuild a part of the state: a mutation deleting the
    /// state rows `state_filter` selects, then an insert of those recomputed from the
    /// per-event rows `store_filter` selects. Run the second once the first is done.
    pub fn rebuild(self, database: &str, state_filter: &str, store_filter: &str) -> [String; 2] {
        let source = format!(
            "(SELECT * FROM {database}.{} FINAL WHERE {store_filter})",
            self.store
        );
        [
            format!(
                "ALTER TABLE {database}.{} DELETE WHERE {state_filter}",
                self.table
            ),
            format!(
                "INSERT INTO {database}.{} {}",
                self.table,
                self.select_from(database, &source)
            ),
        ]
    }
}

/// A ClickHouse string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `(a, b, …)` of quoted strings, for `IN`.
pub fn string_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(quote).collect();
    format!("({})", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_view_select() {
        for state in [CALLS, CONTACTS, MESSAGES, UNMAPPED_FIELDS] {
            let select = state.select_from("db", "(SELECT 1)");
            assert!(select.starts_with("SELECT"), "{select}");
            assert!(select.contains("FROM (SELECT 1)"), "{select}");
            assert!(select.contains("GROUP BY"), "{select}");
        }
    }

    #[test]
    fn a_rebuild_deletes_then_recomputes_the_same_part() {
        let [delete, insert] = CALLS.rebuild(
            "db",
            "tenant = 'acme' AND call_id IN (7)",
            "tenant = 'acme' AND call_id IN (7)",
        );
        assert_eq!(
            delete,
            "ALTER TABLE db.calls_state DELETE WHERE tenant = 'acme' AND call_id IN (7)"
        );
        assert!(
            insert.starts_with("INSERT INTO db.calls_state SELECT"),
            "{insert}"
        );
        assert!(
            insert.contains("FROM (SELECT * FROM db.call_events_store_v2 FINAL WHERE tenant = 'acme' AND call_id IN (7))"),
            "{insert}"
        );
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote("it's"), r"'it\'s'");
        assert_eq!(string_list(["a", "b\\"]), r"('a', 'b\\')");
    }
}
