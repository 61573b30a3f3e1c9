//! `transform replay`: normalizes `webhooks.raw` again, all of it or from a point in
//! time, with the current code, and publishes the results to `webhooks.normalized` like
//! the live service, where the running loader picks them up.
//!
//! Nothing is duplicated and nothing goes offline: a replayed event has the same event
//! id and receipt time as before, so its rows replace the earlier ones in place (the
//! storage tables keep, for one event id and one receipt time, the row inserted last),
//! and dead letters are keyed by the raw record they came from. The replay reads with a
//! throw-away consumer group and commits nothing, so the live `transform` is untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::{await_deliveries, enqueue, position, Config, ErasureList, Router, RunError};

/// Settings of `transform replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Where to start: `earliest`, or an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)
    /// compared with the time each raw record was written to Kafka.
    #[arg(long, default_value = "earliest", value_parser = Point::parse)]
    pub from: Point,
    /// Where to stop (exclusive), an RFC 3339 time; by default, the end of the topic
    /// when the replay starts.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

/// A point in `webhooks.raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Earliest,
    /// Unix milliseconds.
    At(i64),
}

/// A replay setting that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not {1}")]
pub struct BadPoint(pub String, pub &'static str);

impl Point {
    /// `earliest`, or an RFC 3339 time.
    pub fn parse(value: &str) -> Result<Point, BadPoint> {
        if value == "earliest" {
            return Ok(Point::Earliest);
        }
        parse_time(value).map(Point::At).map_err(|_| {
            BadPoint(
                value.to_owned(),
                "`earliest` or an RFC 3339 time like 2026-11-01T00:00:00Z",
            )
        })
    }
}

/// An RFC 3339 time, as Unix milliseconds.
fn parse_time(value: &str) -> Result<i64, BadPoint> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            BadPoint(
                value.to_owned(),
                "an RFC 3339 time like 2026-11-01T00:00:00Z",
            )
        })
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Partitions with records in the range.
    pub partitions: usize,
    /// Raw records read.
    pub read: u64,
    /// Normalized records published.
    pub normalized: u64,
    /// Dead letters published.
    pub dead_lettered: u64,
}

/// Replays the range of `webhooks.raw` that `args` names; returns when it is all
/// published and acknowledged, or when `shutdown` is cancelled (then `Ok` with what
/// was done so far).
pub async fn replay(
    config: &Config,
    args: &ReplayArgs,
    shutdown: &CancellationToken,
) -> Result<Report, RunError> {
    let (from, until) = (args.from, args.until);
    let topic = &config.topics.raw_topic;
    let consumer: StreamConsumer = config
        .kafka
        .client_config()
        .set(
            "group.id",
            format!("{}-replay-{}", config.group_id, runtime::now_ms()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let ranges = ranges(&consumer, topic, from, until)?;
    // Replayed history is redacted like live traffic: an erased person stays erased.
    let follow = shutdown.child_token();
    let _stop_following = follow.clone().drop_guard();
    let Some(erasures) =
        ErasureList::follow(&config.kafka, &config.erasures_topic, &follow).await?
    else {
        return Ok(Report::default());
    };
    let mut router = Router::new(config.topics.clone(), erasures);
    let producer = config
        .kafka
        .reliable_producer(Duration::from_millis(config.delivery_timeout_ms))?;
    let mut report = Report {
        partitions: ranges.len(),
        ..Report::default()
    };
    tracing::info!(topic = %topic, ?ranges, "Replaying");
    if ranges.is_empty() {
        return Ok(report);
    }
    let mut assignment = TopicPartitionList::new();
    for (&partition, &(start, _)) in &ranges {
        assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
    }
    consumer.assign(&assignment)?;

    let mut pending: BTreeMap<i32, i64> = ranges.iter().map(|(&p, &(_, end))| (p, end)).collect();
    let mut deliveries = Vec::new();
    while !pending.is_empty() {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(report),
            message = consumer.recv() => message?,
        };
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = pending.get(&partition) else {
            continue;
        };
        if offset < end {
            report.read += 1;
            let span = tracing::info_span!("replay", partition, offset);
            runtime::trace::continue_trace(&span, runtime::trace::of_message(&message).as_deref());
            let traceparent = runtime::trace::traceparent(&span);
            for output in router.route(
                &position(&message),
                message.key(),
                message.payload().unwrap_or_default(),
                runtime::now_ms(),
            ) {
                if output.topic == config.topics.normalized_topic {
                    report.normalized += 1;
                } else {
                    report.dead_lettered += 1;
                }
                let delivery = enqueue(&producer, &output, traceparent.as_deref()).await?;
                deliveries.push((output.topic.clone(), delivery));
            }
        }
        if offset + 1 >= end {
            pending.remove(&partition);
        }
        let full = deliveries.len() >= config.batch_max_messages || pending.is_empty();
        if full && !await_deliveries(std::mem::take(&mut deliveries), shutdown).await? {
            return Ok(report);
        }
    }
    Ok(report)
}

/// Per partition with records to replay, the first offset and the end (exclusive).
fn ranges(
    consumer: &StreamConsumer,
    topic: &str,
    from: Point,
    until: Option<i64>,
) -> Result<BTreeMap<i32, (i64, i64)>, RunError> {
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let at = |ms: i64| -> Result<BTreeMap<i32, Option<i64>>, RunError> {
        let mut query = TopicPartitionList::new();
        for &partition in &partitions {
            query.add_partition_offset(topic, partition, Offset::Offset(ms))?;
        }
        let found = consumer.offsets_for_times(query, timeout)?;
        Ok(found
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw()))
            .collect())
    };
    let starts = match from {
        Point::Earliest => BTreeMap::new(),
        Point::At(ms) => at(ms)?,
    };
    let ends = match until {
        None => BTreeMap::new(),
        Some(ms) => at(ms)?,
    };
    let mut ranges = BTreeMap::new();
    for &partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        // No offset at or after a time means: past the end of the partition.
        let start = match from {
            Point::Earliest => low,
            Point::At(_) => starts
                .get(&partition)
                .copied()
                .flatten()
                .filter(|&o| o >= 0)
                .unwrap_or(high),
        };
        let end = match until {
            None => high,
            Some(_) => ends
                .get(&partition)
                .copied()
                .flatten()
                .filter(|&o| o >= 0)
                .unwrap_or(high),
        };
        if start < end {
            ranges.insert(partition, (start.max(low), end));
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ReplayArgs, String> {
        let argv = ["transform", "replay"].iter().chain(args);
        match Config::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Some(crate::Command::Replay(args)) => Ok(args),
            None => Err("no replay".into()),
        }
    }

    #[test]
    fn reads_earliest_and_rfc3339_points() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.from, args.until), (Point::Earliest, None));
        let args = parse(&[
            "--from",
            "2026-11-01T00:00:00Z",
            "--until",
            "2026-11-01T01:00:00+01:00",
        ])
        .unwrap();
        assert_eq!(
            (args.from, args.until),
            (Point::At(1_793_491_200_000), Some(1_793_491_200_000))
        );
    }

    #[test]
    fn names_the_flag_that_cannot_be_read() {
        let error = parse(&["--from", "yesterday"]).unwrap_err();
        assert!(
            error.contains("--from") && error.contains("\"yesterday\""),
            "{error}"
        );
        let error = parse(&["--until", "earliest"]).unwrap_err();
        assert!(error.contains("--until"), "{error}");
    }
}
