//! The storage tables, listed once. Everything that names a table (the loader's inserts,
//! its metrics labels, the simulator's files) takes the name from here.

/// A storage table the loader writes (`*_store`); analysts read the views over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    RawEvents,
    CallEvents,
    ContactEvents,
    ContactListEvents,
    MessageEvents,
    DeadLetters,
    UnmappedFields,
}

impl Table {
    /// Every storage table.
    pub const ALL: [Table; 7] = [
        Table::RawEvents,
        Table::CallEvents,
        Table::ContactEvents,
        Table::ContactListEvents,
        Table::MessageEvents,
        Table::DeadLetters,
        Table::UnmappedFields,
    ];

    /// The table's name in ClickHouse (also the `table` label of the loader's metrics).
    pub fn name(self) -> &'static str {
        match self {
            Table::RawEvents => "raw_events_store_v2",
            Table::CallEvents => "call_events_store_v2",
            Table::ContactEvents => "contact_events_store_v2",
            Table::ContactListEvents => "contact_list_events_store_v2",
            Table::MessageEvents => "message_events_store_v2",
            Table::DeadLetters => "dead_letters_store_v2",
            Table::UnmappedFields => "unmapped_fields_store",
        }
    }

    /// How the table's rows are spread over shards in cluster mode (the sharding key of
    /// its Distributed table). A function of the table's ORDER BY columns only, so the
    /// rows ReplacingMergeTree would merge always share a shard and FINAL on each shard
    /// collapses every duplicate; for entity tables, of (tenant, entity id) only, so an
    /// entity's events share a shard and per-entity GROUP BYs are exact there. Raw events
    /// go by event, not entity: a replay that changes an event's entity id must land on
    /// the shard of the row it replaces. Never `rand()`: a block sent again must split
    /// the same way to be deduplicated. See scripts/cluster/README.md, "Statements".
    pub fn shard_key(self) -> &'static str {
        match self {
            Table::RawEvents => "cityHash64(tenant, event_id)",
            Table::CallEvents => "cityHash64(tenant, call_id)",
            Table::ContactEvents => "cityHash64(tenant, contact_id)",
            Table::ContactListEvents => "cityHash64(tenant, list_id)",
            Table::MessageEvents => "cityHash64(tenant, message_id)",
            Table::DeadLetters => {
                "cityHash64(stage, source_topic, source_partition, source_offset)"
            }
            // A delivery's paths with its raw event.
            Table::UnmappedFields => "cityHash64(tenant, event_id)",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A row of one storage table: the table it goes to, and the event it belongs to (to
/// name the row when the server refuses it).
pub trait StoreRow: serde::Serialize {
    const TABLE: Table;
    fn event_id(&self) -> &str;
    fn tenant(&self) -> &str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_creates_the_tables_listed_here() {
        let ddl: String = crate::migrations::MIGRATIONS
            .iter()
            .flat_map(|m| m.statements("db"))
            .collect();
        for table in Table::ALL {
            assert!(
                ddl.contains(&format!("CREATE TABLE IF NOT EXISTS db.{table}")),
                "{table} is not created by any migration"
            );
        }
    }
}
