//! `loader erase --tenant T --contact-id N | --phone P --requested-by WHO`: erases one
//! person of one tenant everywhere analysts can read them, keeps them out of everything
//! normalized later (live, late deliveries, `transform replay`), and records it.
//!
//! The order is what keeps anything from slipping through:
//! 1. The person is widened once: a contact id brings the phone numbers stored for it,
//!    a phone number the contact ids stored with it. If nothing stored matches, the
//!    command says so and changes nothing.
//! 2. One record per subject goes to the compacted erasure topic, acknowledged, before
//!    ClickHouse is touched. From then on every transform redacts the person before it
//!    produces (they follow the topic), so nothing normalized later can undo step 4.
//!    Done the other way round, a delivery normalized between the redaction and the
//!    record would bring the person back.
//! 3. What was normalized before the transforms took the record must be written before
//!    ClickHouse is redacted, or it would land after: the command waits
//!    `--propagation-ms` (the transforms' follow latency and a batch in flight), then
//!    until the loader group has committed the end `webhooks.normalized` has then. If it
//!    does not within `--drain-timeout-s` (a stalled pipeline), the erasure goes on and
//!    says so: run it again once the pipeline is healthy (every step is idempotent).
//! 4. The per-event rows are redacted with mutations (`warehouse::erasure`), each waited
//!    for, then the aggregate states of the entities (and field-example days) touched are
//!    rebuilt from them (`warehouse::states`).
//! 5. A row in `erasures` records who asked, when, the subjects and the rows per table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use schemas::{Erasure, Subject};
use tokio_util::sync::CancellationToken;
use warehouse::erasure::{AuditRow, Person};
use warehouse::states::{self, string_list};
use warehouse::Table;

use crate::sink::{Sink, SinkError};
use crate::{Config, RunError};

/// `loader erase`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("subject").required(true).multiple(true).args(["contact_id", "phone"])))]
pub struct EraseArgs {
    /// The tenant the person belongs to.
    #[arg(long, value_parser = tenant)]
    pub tenant: String,
    /// The person's NectarDesk contact id.
    #[arg(long, value_parser = contact_id)]
    pub contact_id: Option<i64>,
    /// A phone number of the person, in any format: compared by its digits.
    #[arg(long, value_parser = phone)]
    pub phone: Option<String>,
    /// Who asked for the erasure (recorded in the audit and the erasure list).
    #[arg(long, value_parser = not_blank)]
    pub requested_by: String,
    /// A reference recorded with it, e.g. a ticket number.
    #[arg(long, default_value = "")]
    pub reference: String,
    /// How long the running transforms get to take the new erasure before the command
    /// looks at what is still to be loaded.
    #[arg(long, default_value_t = 5_000)]
    pub propagation_ms: u64,
    /// How long to wait for the loader group to write what was normalized before.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_s: u64,
}

/// A malformed `loader erase` argument, named.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("{0:?} is not a tenant: use 1 to 64 of [a-z0-9_-]")]
    Tenant(String),
    #[error("{0:?} is not a contact id: use a positive integer")]
    ContactId(String),
    #[error("{0:?} is not a phone number: use digits (7 to 20) with any of + - . ( ) and spaces")]
    Phone(String),
    #[error("must not be empty")]
    Blank,
}

fn tenant(text: &str) -> Result<String, ArgError> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    ok.then(|| text.to_owned())
        .ok_or_else(|| ArgError::Tenant(text.to_owned()))
}

fn contact_id(text: &str) -> Result<i64, ArgError> {
    text.trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ArgError::ContactId(text.to_owned()))
}

/// A phone number, as its digits.
fn phone(text: &str) -> Result<String, ArgError> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let allowed = text
        .chars()
        .all(|c| c.is_ascii_digit() || " +-.()".contains(c));
    (allowed && (7..=20).contains(&digits.len()))
        .then_some(digits)
        .ok_or_else(|| ArgError::Phone(text.to_owned()))
}

fn not_blank(text: &str) -> Result<String, ArgError> {
    (!text.trim().is_empty())
        .then(|| text.trim().to_owned())
        .ok_or(ArgError::Blank)
}

/// Why an erasure failed.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("kafka failed while recording the erasure: {0}")]
    Kafka(#[from] KafkaError),
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub request_id: String,
    /// The subjects after widening.
    pub contact_ids: Vec<i64>,
    pub phones: Vec<String>,
    /// The person's calls, every event of which is redacted.
    pub call_ids: Vec<i64>,
    /// Rows redacted per table (every table that can hold the person, zeros included);
    /// empty if nothing matched.
    pub rows: Vec<(String, u64)>,
    /// Why the erasure should be run again, if it should.
    pub warning: Option<String>,
}

impl Report {
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

/// What is stored about a person.
#[derive(Debug, Default)]
struct Found {
    event_ids: BTreeSet<String>,
    call_ids: BTreeSet<String>,
    contact_ids: BTreeSet<String>,
    message_ids: BTreeSet<String>,
    rows: Vec<(String, u64)>,
}

/// Runs `loader erase`; `None` if `shutdown` came first.
pub async fn erase(
    config: &Config,
    args: &EraseArgs,
    shutdown: &CancellationToken,
) -> Result<Option<Report>, RunError> {
    if !config.clickhouse.cluster.is_empty() {
        return Err(RunError::NotInCluster(
            "erase",
            "Erasure: forgetting one person",
        ));
    }
    let Some(sink) = crate::connect(config, crate::sink::Schema::Migrate, shutdown).await? else {
        return Ok(None);
    };
    let mut person = widen(&sink, args).await?;
    person.call_ids = calls_of(&sink, &person).await?;
    let mut report = Report {
        request_id: format!("er-{}-{:08x}", runtime::now_ms(), fastrand::u32(..)),
        contact_ids: person.contact_ids.clone(),
        phones: person.phones.clone(),
        ..Report::default()
    };
    if find(&sink, &person)
        .await?
        .rows
        .iter()
        .all(|(_, n)| *n == 0)
    {
        return Ok(Some(report));
    }
    let requested_at = runtime::now_ms();
    let subjects = person
        .contact_ids
        .iter()
        .map(|id| Subject::Contact(*id))
        .chain(person.phones.iter().map(|p| Subject::Phone(p.clone())))
        .chain(person.call_ids.iter().map(|id| Subject::Call(*id)))
        .collect();
    record(
        config,
        args,
        &person.tenant,
        subjects,
        &report.request_id,
        requested_at,
    )
    .await?;
    if !drain(config, args).await? {
        report.warning = Some(format!(
            "the loader group {} did not write what was normalized before the erasure within {} s; \
             run the erasure again once the pipeline is healthy",
            config.group_id, args.drain_timeout_s
        ));
    }
    // A call of theirs that was normalized before the transforms took the list: its
    // later events must be redacted too.
    let new_calls: Vec<i64> = calls_of(&sink, &person)
        .await?
        .into_iter()
        .filter(|id| !person.call_ids.contains(id))
        .collect();
    if !new_calls.is_empty() {
        let subjects = new_calls.iter().map(|id| Subject::Call(*id)).collect();
        record(
            config,
            args,
            &person.tenant,
            subjects,
            &report.request_id,
            requested_at,
        )
        .await?;
        person.call_ids.extend(new_calls);
    }
    let found = find(&sink, &person).await?;
    redact(&sink, &person, &found).await?;
    report.rows = found.rows;
    report.call_ids = person.call_ids.clone();
    let seconds = |ms: i64| u32::try_from(ms / 1000).unwrap_or_default();
    let audit = AuditRow {
        request_id: report.request_id.clone(),
        tenant: person.tenant.clone(),
        requested_by: args.requested_by.clone(),
        reference: args.reference.clone(),
        requested_at: seconds(requested_at),
        finished_at: seconds(runtime::now_ms()),
        contact_ids: person.contact_ids.clone(),
        phones: person.phones.clone(),
        call_ids: person.call_ids.clone(),
        tables: report.rows.iter().map(|(t, _)| t.clone()).collect(),
        rows: report.rows.iter().map(|(_, n)| *n).collect(),
        total_rows: report.total_rows(),
        note: report.warning.clone().unwrap_or_default(),
    };
    sink.insert_audit(&audit).await?;
    tracing::info!(
        request_id = %report.request_id,
        tenant = %person.tenant,
        rows = report.total_rows(),
        "Erasure done"
    );
    Ok(Some(report))
}

/// The person of `args`, widened once through what is stored.
async fn widen(sink: &Sink, args: &EraseArgs) -> Result<Person, SinkError> {
    let db = sink.database();
    let tenant = states::quote(&args.tenant);
    let mut ids: BTreeSet<i64> = args.contact_id.into_iter().collect();
    let mut phones: BTreeSet<String> = args.phone.iter().cloned().collect();
    let digits = |c: &str| format!("replaceRegexpAll({c}, '[^0-9]', '')");
    if let Some(id) = args.contact_id {
        for (table, column) in [
            (Table::ContactEvents, "phone"),
            (Table::CallEvents, "contact_phone"),
        ] {
            let sql = format!(
                "SELECT DISTINCT {d} FROM {db}.{table} WHERE tenant = {tenant} AND contact_id = {id} \
                 AND length({d}) >= 7",
                d = digits(column)
            );
            phones.extend(sink.strings(&sql).await?);
        }
    }
    if let Some(phone) = &args.phone {
        for (table, column) in [
            (Table::ContactEvents, "phone"),
            (Table::CallEvents, "contact_phone"),
        ] {
            let sql = format!(
                "SELECT DISTINCT toString(contact_id) FROM {db}.{table} WHERE tenant = {tenant} \
                 AND {} = {} AND isNotNull(contact_id)",
                digits(column),
                states::quote(phone)
            );
            ids.extend(
                sink.strings(&sql)
                    .await?
                    .iter()
                    .filter_map(|id| id.parse::<i64>().ok()),
            );
        }
    }
    Ok(Person {
        tenant: args.tenant.clone(),
        contact_ids: ids.into_iter().collect(),
        phones: phones.into_iter().collect(),
        call_ids: Vec::new(),
    })
}

/// The calls whose contact is the person.
async fn calls_of(sink: &Sink, person: &Person) -> Result<Vec<i64>, SinkError> {
    let sql = format!(
        "SELECT DISTINCT toString(call_id) FROM {}.{} WHERE tenant = {} AND {}",
        sink.database(),
        Table::CallEvents,
        states::quote(&person.tenant),
        Person {
            call_ids: Vec::new(),
            ..person.clone()
        }
        .calls_of_person()
    );
    let ids = sink.strings(&sql).await?;
    Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
}

/// What is stored about `person`, and how many rows of each table.
async fn find(sink: &Sink, person: &Person) -> Result<Found, SinkError> {
    let db = sink.database();
    let mut found = Found::default();
    for (table, id, filter, ids) in [
        (
            Table::CallEvents,
            "call_id",
            person.calls(),
            &mut found.call_ids,
        ),
        (
            Table::ContactEvents,
            "contact_id",
            person.contacts(),
            &mut found.contact_ids,
        ),
        (
            Table::MessageEvents,
            "message_id",
            person.messages(),
            &mut found.message_ids,
        ),
    ] {
        let rows: Vec<(String, String)> = sink
            .client()
            .query(&format!(
                "SELECT event_id, toString({id}) FROM {db}.{table} WHERE {filter}"
            ))
            .fetch_all()
            .await
            .map_err(|source| SinkError::ClickHouse {
                op: format!("finding the person in {table}"),
                source,
            })?;
        for (event_id, entity_id) in rows {
            found.event_ids.insert(event_id);
            ids.insert(entity_id);
        }
    }
    // Events that only their payload ties to the person (unrecognized, invalid, or a
    // number where no reader looks).
    let typed: Vec<String> = found.event_ids.iter().cloned().collect();
    found.event_ids.extend(
        sink.strings(&format!(
            "SELECT event_id FROM {db}.{} WHERE {}",
            Table::RawEvents,
            person.raw_events(&typed)
        ))
        .await?,
    );
    let event_ids: Vec<String> = found.event_ids.iter().cloned().collect();
    for (table, filter) in person.matches(&event_ids) {
        found
            .rows
            .push((table.to_owned(), sink.count(table, &filter).await?));
    }
    Ok(found)
}

/// Redacts the rows, then rebuilds the states they fed.
async fn redact(sink: &Sink, person: &Person, found: &Found) -> Result<(), SinkError> {
    let db = sink.database();
    let event_ids: Vec<String> = found.event_ids.iter().cloned().collect();
    // The days of the field examples, read before the examples are emptied.
    let example_days = if event_ids.is_empty() {
        Vec::new()
    } else {
        sink.strings(&format!(
            "SELECT DISTINCT toString(toDate(received_at)) FROM {db}.{} WHERE tenant = {} AND event_id IN {}",
            Table::UnmappedFields,
            states::quote(&person.tenant),
            string_list(event_ids.iter().map(String::as_str))
        ))
        .await?
    };
    for (_, mutation) in person.mutations(db, &event_ids) {
        sink.mutate(&mutation).await?;
    }
    let tenant = format!("tenant = {}", states::quote(&person.tenant));
    let int_list = |ids: &BTreeSet<String>| {
        format!("({})", ids.iter().cloned().collect::<Vec<_>>().join(", "))
    };
    for (state, column, ids) in [
        (states::CALLS, "call_id", int_list(&found.call_ids)),
        (states::CONTACTS, "contact_id", int_list(&found.contact_ids)),
        (
            states::MESSAGES,
            "message_id",
            string_list(found.message_ids.iter().map(String::as_str)),
        ),
    ] {
        if ids == "()" {
            continue;
        }
        let filter = format!("{tenant} AND {column} IN {ids}");
        sink.rebuild(&state.rebuild(db, &filter, &filter)).await?;
    }
    if !example_days.is_empty() {
        let days = string_list(example_days.iter().map(String::as_str));
        sink.rebuild(&states::UNMAPPED_FIELDS.rebuild(
            db,
            &format!("{tenant} AND day IN {days}"),
            &format!("{tenant} AND toDate(received_at) IN {days}"),
        ))
        .await?;
    }
    Ok(())
}

/// Adds subjects of the person to the erasure list, and waits for Kafka's
/// acknowledgement.
async fn record(
    config: &Config,
    args: &EraseArgs,
    tenant: &str,
    subjects: Vec<Subject>,
    request_id: &str,
    requested_at: i64,
) -> Result<(), EraseError> {
    let topic = &config.erasures_topic;
    config.kafka.ensure_compacted_topic(topic).await?;
    let producer = config.kafka.reliable_producer(Duration::from_secs(60))?;
    for subject in subjects {
        let erasure = Erasure::of(
            tenant,
            &subject,
            request_id,
            &args.requested_by,
            requested_at,
        );
        let payload = schemas::avro::erasure()
            .encode(&erasure)
            .expect("an erasure has only strings and a number, which always encode");
        let key = erasure.key();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Waits for the transforms to take the erasure, then for the loader group to commit the
/// end `webhooks.normalized` has then; `false` if it did not in time.
async fn drain(config: &Config, args: &EraseArgs) -> Result<bool, EraseError> {
    tokio::time::sleep(Duration::from_millis(args.propagation_ms)).await;
    let topic = &config.topics.normalized_topic;
    // The loader's group, only to read its committed offsets: it joins nothing.
    let consumer: BaseConsumer = config
        .kafka
        .client_config()
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ends = BTreeMap::new();
    let mut wanted = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        if high > low {
            ends.insert(partition.id(), high);
            wanted.add_partition(topic, partition.id());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_s);
    loop {
        let committed = consumer.committed_offsets(wanted.clone(), timeout)?;
        let behind = committed.elements().iter().any(|e| match e.offset() {
            Offset::Offset(at) => at < ends.get(&e.partition()).copied().unwrap_or_default(),
            _ => true,
        });
        if !behind {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<EraseArgs, String> {
        let argv = ["loader", "erase"].iter().chain(args);
        match Config::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Some(crate::config::Command::Erase(args)) => Ok(args),
            _ => Err("no erase".into()),
        }
    }

    #[tokio::test]
    async fn refuses_a_cluster_before_it_touches_anything() {
        // The server at this URL does not exist: the refusal must come first.
        let config = Config::try_parse_from([
            "loader",
            "--clickhouse-cluster",
            "switchboard",
            "--clickhouse-url",
            "http://127.0.0.1:9",
            "erase",
            "--tenant",
            "acme",
            "--contact-id",
            "7",
            "--requested-by",
            "dpo@example.com",
        ])
        .unwrap();
        let Some(crate::config::Command::Erase(args)) = &config.command else {
            panic!("no erase");
        };
        let error = erase(&config, args, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(error, RunError::NotInCluster("erase", _)),
            "{error}"
        );
        assert!(
            error.to_string().contains("does not run in a cluster"),
            "{error}"
        );
    }

    #[test]
    fn reads_a_contact_id_or_a_phone_number() {
        let args = parse(&[
            "--tenant",
            "acme",
            "--phone",
            "+1 (555) 765-4321",
            "--requested-by",
            "dpo",
        ])
        .unwrap();
        assert_eq!(
            (args.contact_id, args.phone.as_deref()),
            (None, Some("15557654321"))
        );
        let args = parse(&[
            "--tenant",
            "acme",
            "--contact-id",
            "30417",
            "--requested-by",
            "dpo",
        ])
        .unwrap();
        assert_eq!(args.contact_id, Some(30417));
    }

    #[test]
    fn a_malformed_request_names_the_argument() {
        for (flag, value, said) in [
            ("--tenant", "Acme Corp", "not a tenant"),
            ("--contact-id", "abc", "not a contact id"),
            ("--contact-id", "0", "not a contact id"),
            ("--phone", "555", "not a phone number"),
            ("--phone", "call me", "not a phone number"),
        ] {
            let mut args = vec!["--tenant", "acme", "--requested-by", "dpo"];
            if flag == "--tenant" {
                args[1] = value;
                args.extend(["--contact-id", "1"]);
            } else {
                args.extend([flag, value]);
            }
            let error = parse(&args).unwrap_err();
            assert!(
                error.contains(flag) && error.contains(said),
                "{flag} {value}: {error}"
            );
        }
        let error = parse(&["--tenant", "acme", "--requested-by", "dpo"]).unwrap_err();
        assert!(
            error.contains("--contact-id") && error.contains("--phone"),
            "{error}"
        );
        let error = parse(&["--tenant", "acme", "--contact-id", "1"]).unwrap_err();
        assert!(error.contains("--requested-by"), "{error}");
    }
}
