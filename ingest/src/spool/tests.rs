use super::*;

fn record(key: &str, payload: &[u8], traceparent: Option<&str>) -> Record {
    Record {
        key: key.to_owned(),
        payload: payload.to_vec(),
        traceparent: traceparent.map(str::to_owned),
    }
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn entries_come_back_in_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 20, 100).unwrap();
        for i in 0..5 {
            let payload = format!("p{i}");
            let key = format!("acme:call:{i}");
            spool
                .append(record(&key, payload.as_bytes(), None))
                .await
                .unwrap();
        }
        assert_eq!(spool.events(), 5);
        let first = spool.oldest(2, u64::MAX).await.unwrap();
        assert_eq!(first[0].record.key, "acme:call:0");
        assert_eq!(first[1].record.payload, b"p1");
        spool
            .remove(first.iter().map(|e| e.seq).collect())
            .await
            .unwrap();
        assert_eq!(spool.events(), 3);
    }
    // A restart (new process) finds what was not removed, and appends after it.
    let spool = Spool::open(dir.path(), 1 << 20, 100).unwrap();
    assert_eq!(spool.events(), 3);
    spool
        .append(record("acme:call:9", b"p9", Some(TRACE)))
        .await
        .unwrap();
    let entries = spool.oldest(10, u64::MAX).await.unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e.record.key.as_str()).collect();
    assert_eq!(
        keys,
        ["acme:call:2", "acme:call:3", "acme:call:4", "acme:call:9"]
    );
    // The trace context is kept with the entry it belongs to, and only there.
    let traces: Vec<Option<&str>> = entries
        .iter()
        .map(|e| e.record.traceparent.as_deref())
        .collect();
    assert_eq!(traces, [None, None, None, Some(TRACE)]);
}

#[tokio::test]
async fn a_full_spool_refuses_and_frees_room_when_drained() {
    let dir = tempfile::tempdir().unwrap();
    // Room for exactly one 60 kB entry.
    let max_bytes = 2 * (EMPTY_FILE_BYTES + file_cost(60_005));
    let spool = Spool::open(dir.path(), max_bytes, 60_005).unwrap();
    assert!(spool.has_room());
    spool.append(record("k", &[0; 60_000], None)).await.unwrap();
    assert!(
        !spool.has_room(),
        "ready while the largest delivery would not fit"
    );
    assert!(matches!(
        spool.append(record("k", &[0; 60_000], None)).await,
        Err(SpoolError::Full { .. })
    ));
    let entries = spool.oldest(1, u64::MAX).await.unwrap();
    spool.remove(vec![entries[0].seq]).await.unwrap();
    assert_eq!(spool.bytes(), 0);
    assert!(spool.has_room());
    spool.append(record("k", &[0; 60_000], None)).await.unwrap();
}

#[tokio::test]
async fn concurrent_appends_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), 1 << 24, 100).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(record(&format!("k{i}"), b"x", None)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(spool.events(), 200);
    assert_eq!(spool.oldest(1000, u64::MAX).await.unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_never_take_the_file_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 1 << 20;
    let spool = Arc::new(Spool::open(dir.path(), limit, 20_100).unwrap());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                spool
                    .append(record(&format!("k{i}"), &[7; 20_000], None))
                    .await
            })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => stored += 1,
            Err(SpoolError::Full { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let file = std::fs::metadata(dir.path().join("spool.redb"))
        .unwrap()
        .len();
    assert!(stored > 0 && stored < 200, "{stored} stored");
    assert!(file <= limit, "a {limit}-byte spool grew to {file} bytes");
    assert_eq!(spool.events(), stored);
    assert!(spool.bytes() <= limit / 2);
}

#[tokio::test]
async fn a_drained_spool_gives_its_disk_back() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 30, 600_000).unwrap();
    for i in 0..20 {
        spool
            .append(record(&format!("k{i}"), &[1; 500_000], None))
            .await
            .unwrap();
    }
    let full = spool.file_bytes();
    assert!(full > 10_000_000, "{full}");
    loop {
        let entries = spool.oldest(5, 2_000_000).await.unwrap();
        assert!(entries.len() <= 4, "a batch holds at most its bytes");
        if entries.is_empty() {
            break;
        }
        spool
            .remove(entries.iter().map(|e| e.seq).collect())
            .await
            .unwrap();
    }
    let drained = spool.file_bytes();
    assert!(
        drained <= EMPTY_FILE_BYTES,
        "{drained} bytes left of {full}"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("spool.redb"))
            .unwrap()
            .len(),
        drained
    );
}

#[test]
fn an_unwritable_directory_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Spool::open(&file.path().join("spool"), 1 << 20, 100)
        .err()
        .unwrap();
    assert!(err.to_string().starts_with("spool directory"), "{err}");
}
