//! `loader erase` against the real broker and server (and, with
//! `CLICKHOUSE_URL=$CHDB_URL`, the current engine): every fixture is sent, contact 30417
//! (Maria Okafor, +1 555 765 4321) is erased, and she is gone from every view; then all
//! of `webhooks.raw` is replayed and late deliveries about her arrive, and she is still
//! gone. An erasure that matches nothing changes nothing; a malformed one names its
//! argument.

use std::time::Duration;

use loader::erase::{erase, EraseArgs, Report};
use serde_json::{json, Value};
use tests::{fixture, fixture_names, Pipeline, Stages};
use tokio_util::sync::CancellationToken;
use transform::{Point, ReplayArgs};

/// Her name, email or number, whatever the formatting of the number.
const HER: &str =
    r"(?i)okafor|maria|5\D{0,3}5\D{0,3}5\D{0,3}7\D{0,3}6\D{0,3}5\D{0,3}4\D{0,3}3\D{0,3}2\D{0,3}1";

/// Every text column analysts can read, by view: (view, scalar columns, array columns).
const TEXTS: &[(&str, &[&str], &[&str])] = &[
    ("raw_events", &["payload"], &[]),
    ("dead_letters", &["payload"], &[]),
    (
        "call_events",
        &["contact_phone", "disposition_note", "transfer_number"],
        &["external_numbers"],
    ),
    (
        "calls",
        &["contact_phone", "disposition_note", "transfer_number"],
        &["external_numbers"],
    ),
    (
        "contacts",
        &[
            "first_name",
            "last_name",
            "email",
            "phone",
            "additional_fields",
            "integrations",
        ],
        &[],
    ),
    ("messages", &["from_number", "to_number", "text"], &[]),
    ("unmapped_fields", &["example"], &[]),
];

async fn rows(pipeline: &Pipeline, sql: &str) -> Vec<Value> {
    pipeline.clickhouse.rows(sql).await.unwrap()
}

async fn count(pipeline: &Pipeline, sql: &str) -> u64 {
    rows(pipeline, &format!("SELECT count() AS n FROM ({sql})")).await[0]["n"]
        .as_u64()
        .unwrap()
}

/// Where she can still be read, as (view, rows).
async fn traces(pipeline: &Pipeline) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    for (view, scalars, arrays) in TEXTS {
        let mut tests: Vec<String> = scalars
            .iter()
            .map(|c| format!("match({c}, '{HER}')"))
            .collect();
        tests.extend(
            arrays
                .iter()
                .map(|c| format!("arrayExists(x -> match(x, '{HER}'), {c})")),
        );
        let sql = format!("SELECT 1 FROM {{db}}.{view} WHERE {}", tests.join(" OR "));
        let n = count(pipeline, &sql).await;
        if n > 0 {
            found.push((view.to_string(), n));
        }
    }
    for (what, sql) in [
        ("recordings of her calls", "SELECT 1 FROM {db}.calls WHERE contact_id = 30417 AND notEmpty(recording_urls)"),
        ("recordings of her call events", "SELECT 1 FROM {db}.call_events WHERE contact_id = 30417 AND notEmpty(recording_urls)"),
        ("texts of her messages", "SELECT 1 FROM {db}.messages WHERE message_id IN ('9001', 'SM9003', '9100') AND text != ''"),
    ] {
        let n = count(pipeline, sql).await;
        if n > 0 {
            found.push((what.to_owned(), n));
        }
    }
    found
}

fn args(contact_id: Option<i64>, phone: Option<&str>) -> EraseArgs {
    EraseArgs {
        tenant: tests::TENANT.into(),
        contact_id,
        phone: phone.map(str::to_owned),
        requested_by: "dpo@acme.example".into(),
        reference: "ticket 4711".into(),
        propagation_ms: 1_000,
        drain_timeout_s: 60,
    }
}

async fn run_erase(pipeline: &Pipeline, args: &EraseArgs) -> Report {
    tokio::time::timeout(
        Duration::from_secs(300),
        erase(&pipeline.loader_config, args, &CancellationToken::new()),
    )
    .await
    .expect("the erasure finishes")
    .unwrap()
    .expect("not interrupted")
}

/// Waits until `n` distinct events were loaded after `since_ms`.
async fn wait_for_loads(pipeline: &Pipeline, since_ms: i64, n: usize) {
    let sql = format!(
        "SELECT DISTINCT event_id FROM {{db}}.raw_events_store_v2 WHERE loaded_at_ms > {since_ms}"
    );
    pipeline
        .wait_for_rows(&sql, n, Duration::from_secs(90))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_person_stays_gone_after_a_replay_and_late_deliveries() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    let names: Vec<String> = fixture_names()
        .into_iter()
        .filter(|n| n != "call-ended-not-json")
        .collect();
    for name in &names {
        let (event, body) = fixture(name);
        let (status, answer) = pipeline.post(&event, &body).await;
        assert_eq!(status, 200, "{name}: {answer}");
    }
    pipeline
        .wait_for_rows(
            "SELECT * FROM {db}.dead_letters",
            2,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let events = pipeline
        .wait_for_rows(
            "SELECT event_id FROM {db}.raw_events",
            names.len(),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .len();
    pipeline
        .wait_for_rows("SELECT 1 FROM {db}.messages", 4, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        traces(&pipeline).await.len() >= 6,
        "she is everywhere before the erasure"
    );

    let report = run_erase(&pipeline, &args(Some(30417), None)).await;
    assert_eq!(report.contact_ids, [30417]);
    assert_eq!(
        report.phones,
        ["15557654321"],
        "her number, found through her contact id"
    );
    assert_eq!(report.warning, None);
    assert!(report.total_rows() > 10, "{report:?}");
    assert_eq!(traces(&pipeline).await, [], "gone after the erasure");
    let others = rows(&pipeline, "SELECT contact_id, full_name, phone_digits FROM {db}.contacts WHERE contact_id != 30417 ORDER BY contact_id").await;
    assert_eq!(
        others,
        [
            json!({"contact_id": 30502, "full_name": "", "phone_digits": "15557001234"}),
            json!({"contact_id": 30600, "full_name": "Ana Diaz", "phone_digits": ""}),
        ],
        "nobody else is touched"
    );
    assert!(
        count(
            &pipeline,
            "SELECT 1 FROM {db}.calls WHERE contact_id = 30417 AND duration_s > 0"
        )
        .await
            > 0,
        "her calls stay, as facts without her"
    );
    let audit = rows(
        &pipeline,
        "SELECT requested_by, reference, contact_ids, phones, total_rows FROM {db}.erasures",
    )
    .await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["requested_by"], "dpo@acme.example");
    assert_eq!(audit[0]["phones"], json!(["15557654321"]));
    assert_eq!(audit[0]["total_rows"], json!(report.total_rows()));

    // Replay all of webhooks.raw: the transform redacts her again before producing.
    let replayed_from = runtime::now_ms();
    let replay = ReplayArgs {
        from: Point::Earliest,
        until: None,
    };
    let done = tokio::time::timeout(
        Duration::from_secs(120),
        transform::replay(
            &pipeline.transform_config,
            &replay,
            &CancellationToken::new(),
        ),
    )
    .await
    .expect("the replay finishes")
    .unwrap();
    assert_eq!(done.read as usize, names.len());
    wait_for_loads(&pipeline, replayed_from, events).await;
    assert_eq!(
        traces(&pipeline).await,
        [],
        "gone after replaying webhooks.raw"
    );

    // Late deliveries about her: a contact update, a text from her number, and a
    // recording of one of her calls that names no one (only the call id).
    let late_from = runtime::now_ms();
    let update = json!({"id": 30417, "firstName": "Maria", "lastName": "Okafor", "email": "maria@new.example",
                        "phone": "(555) 765-4321", "additionalFields": {"note": "called back"}});
    let text = json!({"id": 9100, "type": "sms", "from": "+1 555 765 4321", "to": "+15550100",
                      "text": "Me again", "date": "2026-03-03T10:00:00-05:00"});
    let recording =
        json!({"id": 880142, "call_recordings": ["acme.nectardesk.io/api/call/recording/99999"]});
    for (event, body) in [
        ("contact-modified", update),
        ("message-received", text),
        ("call-recording-received", recording),
    ] {
        assert_eq!(pipeline.post(event, &body.to_string()).await.0, 200);
    }
    wait_for_loads(&pipeline, late_from, 3).await;
    pipeline
        .wait_for_rows(
            "SELECT 1 FROM {db}.messages WHERE message_id = '9100'",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let late = traces(&pipeline).await;
    // The late contact update came with her number without its country code: only its
    // contact id names her, which is enough.
    assert_eq!(late, [], "gone after late deliveries");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_that_matches_nothing_says_so_and_changes_nothing() {
    let pipeline = Pipeline::start(Stages::ALL).await;
    let (event, body) = fixture("contact-created-full");
    assert_eq!(pipeline.post(&event, &body).await.0, 200);
    pipeline
        .wait_for_rows("SELECT 1 FROM {db}.contacts", 1, Duration::from_secs(60))
        .await
        .unwrap();
    let before = rows(&pipeline, "SELECT * FROM {db}.contacts").await;

    let report = run_erase(&pipeline, &args(Some(99_999), Some("+44 20 7946 0000"))).await;
    assert!(report.rows.is_empty(), "{report:?}");
    assert_eq!(rows(&pipeline, "SELECT * FROM {db}.contacts").await, before);
    assert_eq!(
        rows(&pipeline, "SELECT count() AS n FROM {db}.erasures").await[0]["n"],
        json!(0)
    );
    // Nothing was added to the erasure list either: that number still comes through.
    let body = json!({"id": 99_999, "firstName": "Zed", "phone": "+44 20 7946 0000"}).to_string();
    assert_eq!(pipeline.post("contact-created", &body).await.0, 200);
    pipeline
        .wait_for_rows(
            "SELECT 1 FROM {db}.contacts WHERE contact_id = 99999 AND first_name = 'Zed'",
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    pipeline.stop().await;
}

#[test]
fn a_malformed_erasure_request_stops_with_a_message_naming_the_argument() {
    use clap::Parser;
    for (argv, named) in [
        (
            vec![
                "--tenant",
                "acme",
                "--contact-id",
                "12x",
                "--requested-by",
                "dpo",
            ],
            "--contact-id",
        ),
        (
            vec!["--tenant", "acme", "--phone", "12", "--requested-by", "dpo"],
            "--phone",
        ),
        (
            vec![
                "--tenant",
                "ACME!",
                "--phone",
                "+15557654321",
                "--requested-by",
                "dpo",
            ],
            "--tenant",
        ),
        (
            vec!["--tenant", "acme", "--requested-by", "dpo"],
            "--contact-id",
        ),
    ] {
        let full = ["loader", "erase"].into_iter().chain(argv.iter().copied());
        let error = loader::Config::try_parse_from(full)
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{argv:?}: {error}");
    }
}
