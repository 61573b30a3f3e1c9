//! Migrations: the database created, pending migrations applied and recorded, and a
//! schema newer than this loader refused.

use warehouse::migrations::{adds_a_column, Migration, MIGRATIONS};

use super::{Sink, SinkError};

impl Sink {
    /// The database's schema version (its newest migration applied).
    pub fn schema_version(&self) -> u32 {
        self.version
    }

    /// Applies the migrations the database has not seen; returns its schema version.
    pub(super) async fn migrate(&self) -> Result<u32, SinkError> {
        let db = &self.database;
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
            .await?;
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
             (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) \
             ENGINE = MergeTree ORDER BY version"
        ))
        .await?;
        let applied: Vec<u32> = self
            .client
            .query(&format!("SELECT version FROM {db}.schema_migrations"))
            .fetch_all()
            .await
            .map_err(SinkError::at("reading schema_migrations"))?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(&found) = applied.iter().max().filter(|&&v| v > known) {
            return Err(SinkError::SchemaTooNew {
                database: db.clone(),
                found,
                known,
            });
        }
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            self.apply(migration).await?;
        }
        Ok(known)
    }

    async fn apply(&self, migration: &Migration) -> Result<(), SinkError> {
        for statement in migration.statements(&self.database) {
            match self.execute(&statement).await {
                // Applied before this migration was interrupted (see `adds_a_column`).
                Err(e) if adds_a_column(&statement) && e.is_existing_column() => {}
                result => result?,
            }
        }
        self.client
            .query(&format!(
                "INSERT INTO {}.schema_migrations (version, name) VALUES (?, ?)",
                self.database
            ))
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(SinkError::at(format!(
                "recording migration {}",
                migration.version
            )))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "Applied migration"
        );
        Ok(())
    }
}
