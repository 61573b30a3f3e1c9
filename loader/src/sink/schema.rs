//! Migrations: the database created, pending migrations applied (in the layout's form:
//! on one server as written, in a cluster ON CLUSTER with Replicated engines and
//! Distributed tables) and recorded; a schema this loader does not know refused.

use warehouse::layout::SCHEMA_MIGRATIONS;
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
        self.execute(&self.layout.create_database(db)).await?;
        self.execute(&self.layout.schema_migrations(db)).await?;
        let applied = self.applied().await?;
        let known = known_version();
        self.refuse_newer(&applied, known)?;
        let migrations = self
            .layout
            .migrations(db)
            .map_err(|e| SinkError::Layout(e.to_string()))?;
        for (migration, statements) in migrations {
            if !applied.contains(&migration.version) {
                self.apply(migration, &statements).await?;
            }
        }
        Ok(known)
    }

    /// Checks that the database is at the version this loader knows, without changing
    /// it; returns the version.
    pub(super) async fn check_version(&self) -> Result<u32, SinkError> {
        let applied = self.applied().await.map_err(|e| SinkError::SchemaTooOld {
            database: self.database.clone(),
            found: 0,
            known: known_version(),
            detail: e.to_string(),
        })?;
        let known = known_version();
        self.refuse_newer(&applied, known)?;
        let found = applied.iter().copied().max().unwrap_or(0);
        if found < known {
            return Err(SinkError::SchemaTooOld {
                database: self.database.clone(),
                found,
                known,
                detail: String::new(),
            });
        }
        Ok(found)
    }

    /// The versions recorded in `schema_migrations`.
    async fn applied(&self) -> Result<Vec<u32>, SinkError> {
        self.client()
            .query(&format!(
                "SELECT DISTINCT version FROM {}.{SCHEMA_MIGRATIONS}",
                self.database
            ))
            .fetch_all()
            .await
            .map_err(SinkError::at("reading schema_migrations"))
    }

    fn refuse_newer(&self, applied: &[u32], known: u32) -> Result<(), SinkError> {
        match applied.iter().copied().max().filter(|&v| v > known) {
            Some(found) => Err(SinkError::SchemaTooNew {
                database: self.database.clone(),
                found,
                known,
            }),
            None => Ok(()),
        }
    }

    async fn apply(&self, migration: &Migration, statements: &[String]) -> Result<(), SinkError> {
        for statement in statements {
            match self.execute(statement).await {
                // Applied before this migration was interrupted (see `adds_a_column`).
                Err(e) if adds_a_column(statement) && e.is_existing_column() => {}
                result => result?,
            }
        }
        self.client()
            .query(&format!(
                "INSERT INTO {}.{SCHEMA_MIGRATIONS} (version, name, applied_at) VALUES (?, ?, now())",
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

/// The newest migration this loader carries.
fn known_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
