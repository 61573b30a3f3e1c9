//! The rows the simulated traffic becomes, written as JSON lines per storage table: the
//! real identity, normalization and row mapping, without Kafka or ClickHouse. They are
//! the rows as they reach the loader, before it settles a block (`warehouse::resolve`):
//! the sender's duplicates and late retries are still there, and `key_day` and
//! `loaded_at_ms` are left for the reader to fill (the SQL checks model the loader; see
//! `sqlcheck/loader_model.py`). Used to test dashboard and analytics queries on both
//! ClickHouse engines.

use std::fs;
use std::io::Write;
use std::path::Path;

use schemas::{Position, RawEnvelope};
use serde_json::Value;
use warehouse::StoreRow;

use crate::traffic::{Generator, Scenario};

/// Generates `hours` of traffic from `start_ms`, as tenant `tenant`, and writes
/// `<table>.jsonl` files into `dir`. Each row gets a `loaded_at` a second or two after its
/// receipt, as the loader would. Returns the number of deliveries.
pub fn write_rows(
    scenario: Scenario,
    tenant: &str,
    start_ms: i64,
    hours: u32,
    dir: &Path,
) -> anyhow::Result<usize> {
    let mut generator = Generator::new(scenario);
    let deliveries = generator.window(start_ms, start_ms + i64::from(hours) * 3_600_000);
    let mut tables = warehouse::Tables::default();
    for (i, delivery) in deliveries.iter().enumerate() {
        let envelope = RawEnvelope {
            event_id: normalize::identity::event_id(tenant, delivery.event, &delivery.body),
            tenant: tenant.to_owned(),
            event: delivery.event.to_owned(),
            received_at: delivery.at_ms,
            source_addr: "203.0.113.7".to_owned(),
            body: delivery.body.to_string().into_bytes(),
        };
        let position = Position {
            topic: "webhooks.raw".to_owned(),
            partition: 0,
            offset: i as i64,
        };
        // What transform decides for the record: the same function, the same rows.
        let outcome = normalize::process(
            &envelope,
            &position,
            b"",
            delivery.at_ms + 500,
            &normalize::Erasures::default(),
        );
        if let Some(letter) = outcome.dead_letter {
            tables.add_dead_letter(letter);
        }
        if let Some(event) = outcome.normalized {
            tables.add_event(event);
        }
    }
    fs::create_dir_all(dir)?;
    write(dir, &tables.raw, "received_at")?;
    write(dir, &tables.calls, "received_at")?;
    write(dir, &tables.contacts, "received_at")?;
    write(dir, &tables.contact_lists, "received_at")?;
    write(dir, &tables.messages, "received_at")?;
    write(dir, &tables.dead_letters, "failed_at")?;
    write(dir, &tables.unmapped, "received_at")?;
    Ok(deliveries.len())
}

/// Writes `<table>.jsonl`.
fn write<T: StoreRow>(dir: &Path, rows: &[T], time_column: &str) -> anyhow::Result<()> {
    let table = T::TABLE;
    let mut file = std::io::BufWriter::new(fs::File::create(dir.join(format!("{table}.jsonl")))?);
    for (i, row) in rows.iter().enumerate() {
        let mut value = serde_json::to_value(row)?;
        let at = value[time_column].as_u64().unwrap_or_default();
        value["loaded_at"] = Value::from(at + 1 + (i as u64 % 2));
        serde_json::to_writer(&mut file, &value)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(())
}
