//! Versioned ClickHouse migrations, compiled in. The loader applies the ones a database
//! has not seen yet, in order, at start. Files live in `warehouse/migrations/`; a new one
//! gets the next number and is never edited after release.

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    sql: &'static str,
}

/// Every migration, in the order they must be applied.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "entities",
        sql: include_str!("../migrations/0002_entities.sql"),
    },
    Migration {
        version: 3,
        name: "loader_blocks",
        sql: include_str!("../migrations/0003_loader_blocks.sql"),
    },
    Migration {
        version: 4,
        name: "dead_letter_source",
        sql: include_str!("../migrations/0004_dead_letter_source.sql"),
    },
    Migration {
        version: 5,
        name: "loader_block_epochs",
        sql: include_str!("../migrations/0005_loader_block_epochs.sql"),
    },
    Migration {
        version: 6,
        name: "loader_block_ranges",
        sql: include_str!("../migrations/0006_loader_block_ranges.sql"),
    },
    Migration {
        version: 7,
        name: "analytics_state",
        sql: include_str!("../migrations/0007_analytics_state.sql"),
    },
    Migration {
        version: 8,
        name: "unmapped_fields",
        sql: include_str!("../migrations/0008_unmapped_fields.sql"),
    },
    Migration {
        version: 9,
        name: "erasures",
        sql: include_str!("../migrations/0009_erasures.sql"),
    },
];

/// Whether `statement` adds a column, so that "the column already exists" (code 15,
/// `DUPLICATE_COLUMN`) means it was applied before: ClickHouse 18.16 has no
/// `ADD COLUMN IF NOT EXISTS`, and a migration interrupted half way runs again whole.
pub fn adds_a_column(statement: &str) -> bool {
    statement.starts_with("ALTER TABLE ") && statement.contains(" ADD COLUMN ")
}

impl Migration {
    /// The migration's statements for `database`, comments removed, one per element.
    /// `database` must be a plain identifier (see [`is_valid_database_name`]).
    pub fn statements(&self, database: &str) -> Vec<String> {
        let without_comments: String = self
            .sql
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .map(|line| format!("{line}\n"))
            .collect();
        without_comments
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.replace("{db}", database))
            .collect()
    }
}

/// Whether `name` can be used unquoted as a ClickHouse database name:
/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters.
pub fn is_valid_database_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn statements_name_the_given_database_and_carry_no_placeholder() {
        for s in MIGRATIONS
            .iter()
            .flat_map(|m| m.statements("analytics_test"))
        {
            assert!(!s.contains("{db}"), "{s}");
            assert!(!s.contains("--"), "comment left in {s}");
            assert!(s.contains("analytics_test."), "{s}");
            // A view is replaced by dropping it first (18.16 has no CREATE OR REPLACE
            // VIEW): DROP TABLE IF EXISTS, then CREATE VIEW IF NOT EXISTS.
            assert!(
                s.contains("IF NOT EXISTS")
                    || s.starts_with("DROP TABLE IF EXISTS ")
                    || adds_a_column(&s),
                "not idempotent: {s}"
            );
        }
    }

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(is_valid_database_name("switchboard"));
        assert!(is_valid_database_name("_t1"));
        for bad in ["", "1db", "a-b", "db;DROP", "a.b", "db name"] {
            assert!(!is_valid_database_name(bad), "{bad:?}");
        }
    }
}
