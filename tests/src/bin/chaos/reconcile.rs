//! Reconciliation of a chaos run: the keys ClickHouse must show for the accepted
//! deliveries, what the reader views show, and the report. In cluster mode the views read
//! the Distributed tables, so the same queries see every shard.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::bail;
use schemas::RawEnvelope;
use tests::ClickHouse;
use warehouse::Table;

use crate::traffic::Outcome;
use crate::TENANT;

/// What ClickHouse must show for the accepted deliveries, computed with the same pure
/// normalization and row mapping the services use.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    raw: BTreeSet<String>,
    call_events: BTreeSet<String>,
    calls: BTreeSet<i64>,
    contacts: BTreeSet<i64>,
    contact_lists: BTreeSet<i64>,
    messages: BTreeSet<String>,
    /// Per call: its distinct event ids, and the disposition of the last accepted one
    /// that had a disposition.
    call_state: BTreeMap<i64, (BTreeSet<String>, String)>,
}

impl Expected {
    pub(crate) fn from(outcomes: &[Outcome]) -> Expected {
        let mut accepted: Vec<&Outcome> =
            outcomes.iter().filter(|o| o.event_id.is_some()).collect();
        accepted.sort_by_key(|o| o.accepted_seq);
        let mut expected = Expected::default();
        for outcome in accepted {
            let event_id = outcome.event_id.clone().unwrap();
            if !expected.raw.insert(event_id.clone()) {
                continue; // A duplicate: the first receipt is the one kept.
            }
            let envelope = RawEnvelope {
                event_id: event_id.clone(),
                tenant: TENANT.into(),
                event: outcome.delivery.event.into(),
                received_at: 0,
                source_addr: String::new(),
                body: outcome.delivery.body.to_string().into_bytes(),
            };
            let mut tables = warehouse::Tables::default();
            tables.add_event(normalize::normalize(&envelope));
            for row in &tables.calls {
                expected.call_events.insert(row.event_id.clone());
                expected.calls.insert(row.call_id);
                let state = expected.call_state.entry(row.call_id).or_default();
                state.0.insert(row.event_id.clone());
                if !row.disposition_code.is_empty() {
                    state.1 = row.disposition_code.clone();
                }
            }
            expected
                .contacts
                .extend(tables.contacts.iter().map(|r| r.contact_id));
            expected
                .contact_lists
                .extend(tables.contact_lists.iter().map(|r| r.list_id));
            expected
                .messages
                .extend(tables.messages.iter().map(|r| r.message_id.clone()));
        }
        expected
    }
}

/// Keys found in one table or view.
#[derive(Debug, Default, Clone)]
struct Found {
    rows: usize,
    keys: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    /// (name, expected keys, found)
    tables: Vec<(&'static str, BTreeSet<String>, Found)>,
    /// Where inserts are deduplicated by token: per storage table, rows stored more than
    /// once (physically, merges stopped).
    pub(crate) stored: Option<Vec<(Table, u64)>>,
    calls_checked: usize,
    calls_out_of_order: Vec<String>,
    calls_with_unanswered_events: usize,
}

impl Report {
    fn lost(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, want, found)| want.difference(&found.keys).count())
            .sum()
    }

    fn duplicates(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, _, found)| found.rows - found.keys.len())
            .sum()
    }

    fn stored_duplicates(&self) -> u64 {
        self.stored.iter().flatten().map(|(_, n)| n).sum()
    }

    pub(crate) fn failed(&self) -> bool {
        self.lost() > 0
            || self.duplicates() > 0
            || self.stored_duplicates() > 0
            || !self.calls_out_of_order.is_empty()
    }

    pub(crate) fn table(&self, outcomes: &[Outcome]) -> String {
        let answered = outcomes.iter().filter(|o| o.event_id.is_some()).count();
        let retried = outcomes.iter().filter(|o| o.attempts > 1).count();
        let gave_up = outcomes.len() - answered;
        let mut out = String::new();
        out.push_str(&format!(
            "{:<34}{:>10}\n",
            "deliveries sent",
            outcomes.len()
        ));
        out.push_str(&format!("{:<34}{:>10}\n", "answered 200", answered));
        out.push_str(&format!(
            "{:<34}{:>10}\n",
            "needed a retry (5xx / no answer)", retried
        ));
        out.push_str(&format!(
            "{:<34}{:>10}\n",
            "never answered 200 (sender gave up)", gave_up
        ));
        out.push('\n');
        out.push_str(&format!(
            "{:<16}{:>10}{:>10}{:>8}{:>8}{:>14}\n",
            "table", "expected", "present", "lost", "extra", "visible dups"
        ));
        for (name, want, found) in &self.tables {
            out.push_str(&format!(
                "{:<16}{:>10}{:>10}{:>8}{:>8}{:>14}\n",
                name,
                want.len(),
                found.keys.intersection(want).count(),
                want.difference(&found.keys).count(),
                found.keys.difference(want).count(),
                found.rows - found.keys.len()
            ));
        }
        if let Some(stored) = &self.stored {
            out.push_str(
                "\nrows an insert stored again (insert deduplication tokens; merges stopped):\n",
            );
            for (table, n) in stored {
                out.push_str(&format!("  {:<28}{:>8}\n", table.name(), n));
            }
        }
        out.push('\n');
        out.push_str(&format!(
            "per-call order: {} calls checked, {} with a merged state that differs from the last accepted event{}\n",
            self.calls_checked,
            self.calls_out_of_order.len(),
            if self.calls_with_unanswered_events > 0 {
                format!(" ({} calls skipped: they hold an event whose 200 was lost in a kill)", self.calls_with_unanswered_events)
            } else {
                String::new()
            }
        ));
        for line in self.calls_out_of_order.iter().take(10) {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

/// Polls ClickHouse until every expected key is present (or `within` passes with no
/// progress), then builds the report.
pub(crate) async fn settle(
    clickhouse: &ClickHouse,
    expected: &Expected,
    within: Duration,
) -> Report {
    let started = Instant::now();
    let mut last_progress = (Instant::now(), usize::MAX);
    loop {
        match reconcile(clickhouse, expected).await {
            Ok(report) => {
                let lost = report.lost();
                if lost == 0 && report.calls_out_of_order.is_empty() {
                    println!(
                        "settled {:.0} s after the last fault",
                        started.elapsed().as_secs_f64()
                    );
                    return report;
                }
                if lost != last_progress.1 {
                    last_progress = (Instant::now(), lost);
                }
                if last_progress.0.elapsed() >= within {
                    println!("no progress for {within:?}; reporting what is there");
                    return report;
                }
            }
            Err(e) => {
                if started.elapsed() >= within {
                    println!("ClickHouse unreadable: {e}");
                    return Report::default();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Stops background merges of the storage tables (see `physical` in `main`), once the
/// loader has created them.
pub(crate) async fn stop_merges(clickhouse: &ClickHouse) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = warehouse::migrations::MIGRATIONS.len();
    loop {
        let applied = clickhouse
            .rows("SELECT version FROM {db}.schema_migrations")
            .await
            .map(|rows| rows.len())
            .unwrap_or(0);
        if applied >= want {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the loader did not create the tables within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for table in Table::ALL {
        clickhouse
            .execute(&format!("SYSTEM STOP MERGES {{db}}.{table}"))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Per storage table, how many rows one insert stored again: physical rows minus
/// distinct rows, a row being named by its event (or dead letter's source record), its
/// receipt and its block's `loaded_at_ms`. A record that came twice through Kafka (a
/// stage redoing a suffix after a crash) is written by another block, with another
/// `loaded_at_ms`: only a block whose insert went in twice counts here.
pub(crate) async fn stored_duplicates(
    clickhouse: &ClickHouse,
) -> anyhow::Result<Vec<(Table, u64)>> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let identity = match table {
            Table::DeadLetters => {
                "stage, source_topic, source_partition, source_offset, failed_at_ms, loaded_at_ms"
            }
            // One row per path of a delivery.
            Table::UnmappedFields => "event_id, received_at_ms, loaded_at_ms, kind, path",
            _ => "event_id, received_at_ms, loaded_at_ms",
        };
        let rows = clickhouse
            .rows(&format!(
                "SELECT count() - uniqExact({identity}) AS n FROM {{db}}.{table}"
            ))
            .await
            .map_err(anyhow::Error::msg)?;
        out.push((table, rows[0]["n"].as_u64().unwrap_or_default()));
    }
    Ok(out)
}

async fn reconcile(clickhouse: &ClickHouse, expected: &Expected) -> Result<Report, String> {
    let strings = |set: &BTreeSet<i64>| set.iter().map(i64::to_string).collect::<BTreeSet<_>>();
    let mut report = Report::default();
    let sources: [(&'static str, &str, BTreeSet<String>); 6] = [
        (
            "raw_events",
            "SELECT event_id AS k FROM {db}.raw_events",
            expected.raw.clone(),
        ),
        (
            "call_events",
            "SELECT event_id AS k FROM {db}.call_events",
            expected.call_events.clone(),
        ),
        (
            "calls",
            "SELECT toString(call_id) AS k FROM {db}.calls",
            strings(&expected.calls),
        ),
        (
            "contacts",
            "SELECT toString(contact_id) AS k FROM {db}.contacts",
            strings(&expected.contacts),
        ),
        (
            "contact_lists",
            "SELECT toString(list_id) AS k FROM {db}.contact_lists",
            strings(&expected.contact_lists),
        ),
        (
            "messages",
            "SELECT message_id AS k FROM {db}.messages",
            expected.messages.clone(),
        ),
    ];
    for (name, sql, want) in sources {
        let rows = clickhouse.rows(sql).await?;
        let keys = rows
            .iter()
            .filter_map(|r| r["k"].as_str().map(str::to_owned))
            .collect();
        report.tables.push((
            name,
            want,
            Found {
                rows: rows.len(),
                keys,
            },
        ));
    }

    let mut stored: HashMap<i64, (String, BTreeSet<String>)> = HashMap::new();
    for r in clickhouse
        .rows("SELECT call_id, disposition_code FROM {db}.calls")
        .await?
    {
        if let (Some(call), Some(code)) = (r["call_id"].as_i64(), r["disposition_code"].as_str()) {
            stored.entry(call).or_default().0 = code.to_owned();
        }
    }
    for r in clickhouse
        .rows("SELECT call_id, groupUniqArray(event_id) AS ids FROM {db}.call_events GROUP BY call_id")
        .await?
    {
        if let (Some(call), Some(ids)) = (r["call_id"].as_i64(), r["ids"].as_array()) {
            stored.entry(call).or_default().1 =
                ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        }
    }
    for (call, (ids, disposition)) in &expected.call_state {
        let Some((got, stored_ids)) = stored.get(call) else {
            continue;
        };
        if stored_ids != ids {
            if stored_ids.is_superset(ids) {
                report.calls_with_unanswered_events += 1;
            }
            continue; // Missing events are counted as lost above.
        }
        report.calls_checked += 1;
        if got != disposition {
            report.calls_out_of_order.push(format!(
                "call {call}: merged disposition {got:?}, last accepted {disposition:?}"
            ));
        }
    }
    Ok(report)
}
