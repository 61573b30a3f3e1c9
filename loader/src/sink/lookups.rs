//! What settling a block reads and writes (see `crate::known`): recent receipts, entity
//! days, new entity keys.

use warehouse::resolve::EntityKeyRow;
use warehouse::Table;

use super::{string_literal, Sink, SinkError};

impl Sink {
    /// The first receipt of every event received since `since_s` (Unix seconds), at
    /// most `limit` of the newest.
    pub async fn recent_receipts(
        &self,
        since_s: u32,
        limit: usize,
    ) -> Result<Vec<(String, String, u64)>, SinkError> {
        self.client()
            .query(&format!(
                "SELECT tenant, event_id, min(received_at_ms) AS first FROM {} \
                 WHERE received_at >= toDateTime(?) GROUP BY tenant, event_id \
                 ORDER BY first DESC LIMIT {limit}",
                Table::RawEvents.name()
            ))
            .bind(since_s)
            .fetch_all()
            .await
            .map_err(SinkError::at("reading recent receipts"))
    }

    /// The days `entity_keys` holds for some entities of one tenant and kind.
    pub async fn key_days(
        &self,
        tenant: &str,
        entity: &str,
        ids: &[&str],
    ) -> Result<Vec<(String, u16)>, SinkError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A literal list: 18.16 uses the primary key for `IN (…)`, not for has(?, …).
        let list: Vec<String> = ids.iter().map(|id| string_literal(id)).collect();
        self.client()
            .query(&format!(
                "SELECT entity_id, argMin(key_day, (first_received_at_ms, key_day)) AS day \
                 FROM entity_keys WHERE tenant = ? AND entity = ? AND entity_id IN ({}) \
                 GROUP BY entity_id",
                list.join(",")
            ))
            .bind(tenant)
            .bind(entity)
            .fetch_all()
            .await
            .map_err(SinkError::at("reading entity_keys"))
    }

    /// Stores new entity keys, before the rows that use them.
    pub async fn insert_keys(
        &self,
        keys: &[EntityKeyRow],
        token: Option<&str>,
    ) -> Result<(), SinkError> {
        self.insert_into("entity_keys", keys, token, &[]).await
    }
}
