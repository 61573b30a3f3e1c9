//! The rows the simulated traffic becomes, written as JSON lines per storage table: the
//! real identity, normalization and row mapping, without Kafka or ClickHouse. Used to
//! test dashboard and analytics queries on a current ClickHouse engine.

use std::fs;
use std::io::Write;
use std::path::Path;

use schemas::{DeadLetter, RawEnvelope, Status};
use serde::Serialize;
use serde_json::Value;

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
    let mut tables = loader::rows::Tables::default();
    for (i, delivery) in deliveries.iter().enumerate() {
        let envelope = RawEnvelope {
            event_id: transform::identity::event_id(tenant, delivery.event, &delivery.body),
            tenant: tenant.to_owned(),
            event: delivery.event.to_owned(),
            received_at: delivery.at_ms,
            source_addr: "203.0.113.7".to_owned(),
            body: delivery.body.to_string().into_bytes(),
        };
        let event = transform::normalize(&envelope);
        if event.status == Status::Invalid {
            // What transform sends to the dead-letter topic.
            tables.add_dead_letter(DeadLetter {
                stage: "transform".to_owned(),
                reason: event.error.clone(),
                event_id: event.event_id.clone(),
                tenant: tenant.to_owned(),
                event: event.event.clone(),
                source_topic: "webhooks.raw".to_owned(),
                source_partition: 0,
                source_offset: i as i64,
                key: String::new(),
                payload: envelope.body.clone(),
                failed_at: delivery.at_ms + 500,
            });
        }
        tables.add_event(event);
    }
    fs::create_dir_all(dir)?;
    write(dir, "raw_events_store", &tables.raw, "received_at")?;
    write(dir, "call_events_store", &tables.calls, "received_at")?;
    write(dir, "contact_events_store", &tables.contacts, "received_at")?;
    write(
        dir,
        "contact_list_events_store",
        &tables.contact_lists,
        "received_at",
    )?;
    write(dir, "message_events_store", &tables.messages, "received_at")?;
    write(dir, "dead_letters_store", &tables.dead_letters, "failed_at")?;
    Ok(deliveries.len())
}

fn write<T: Serialize>(
    dir: &Path,
    table: &str,
    rows: &[T],
    time_column: &str,
) -> anyhow::Result<()> {
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
