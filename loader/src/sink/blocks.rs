//! The block log (`loader_blocks`): each block's ranges, recorded before it is written
//! and marked done after (see `crate::block`).

use std::collections::BTreeMap;

use crate::batch::Segment;
use crate::block::{self, Recorded};
use crate::consume::TopicPartition;

use super::{Sink, SinkError};

/// What `loader_blocks` records of a block: its name, its ranges, its rows' loaded_at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    pub name: &'a str,
    pub segments: &'a BTreeMap<i32, Segment>,
    pub loaded_at_ms: u64,
}

/// A row of `loader_blocks`: one range of a block.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct BlockRow {
    consumer_group: String,
    topic: String,
    partition: i32,
    epoch: u32,
    first_offset: i64,
    last_offset: i64,
    first_record: u64,
    loaded_at_ms: u64,
    block: String,
    done: u8,
    recorded_at: u32,
}

/// What `loader_blocks` says of a range.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct RecordedRow {
    epoch: u32,
    first_offset: i64,
    last_offset: i64,
    first_record: u64,
    loaded_at_ms: u64,
    block: String,
    done: u8,
}

impl Sink {
    /// The range recorded (last) as starting at `first_offset` of a partition, if any,
    /// and the partition's newest epoch.
    pub async fn recorded_range(
        &self,
        group: &str,
        tp: &TopicPartition,
        first_offset: i64,
    ) -> Result<(Option<Recorded>, u32), SinkError> {
        let range: Option<RecordedRow> = self
            .read_block_log(
                "SELECT epoch, first_offset, last_offset, first_record, loaded_at_ms, block, done \
                 FROM loader_blocks FINAL \
                 WHERE consumer_group = ? AND topic = ? AND partition = ? AND first_offset = ? \
                 ORDER BY epoch DESC LIMIT 1",
            )
            .bind(group)
            .bind(&tp.topic)
            .bind(tp.partition)
            .bind(first_offset)
            .fetch_optional()
            .await
            .map_err(SinkError::at("reading loader_blocks"))?;
        let max_epoch: u32 = self
            .read_block_log(
                "SELECT max(epoch) FROM loader_blocks \
                 WHERE consumer_group = ? AND topic = ? AND partition = ?",
            )
            .bind(group)
            .bind(&tp.topic)
            .bind(tp.partition)
            .fetch_one()
            .await
            .map_err(SinkError::at("reading loader_blocks"))?;
        let range = range.map(|r| {
            // Ranges recorded before blocks had names were blocks of their own.
            let block = if r.block.is_empty() {
                let segment = Segment {
                    epoch: r.epoch,
                    first: r.first_offset,
                    last: r.last_offset,
                    first_record: r.first_record,
                };
                block::name(group, &tp.topic, &BTreeMap::from([(tp.partition, segment)]))
            } else {
                r.block
            };
            Recorded {
                epoch: r.epoch,
                last_offset: r.last_offset,
                first_record: r.first_record,
                loaded_at_ms: r.loaded_at_ms,
                block,
                done: r.done != 0,
            }
        });
        Ok((range, max_epoch))
    }

    /// Per partition, the last offset of each range of the recorded block `name`.
    pub async fn block_ranges(
        &self,
        group: &str,
        topic: &str,
        name: &str,
    ) -> Result<BTreeMap<i32, i64>, SinkError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Range {
            partition: i32,
            last_offset: i64,
        }
        let ranges: Vec<Range> = self
            .read_block_log(
                "SELECT partition, last_offset FROM loader_blocks FINAL \
                 WHERE consumer_group = ? AND topic = ? AND block = ?",
            )
            .bind(group)
            .bind(topic)
            .bind(name)
            .fetch_all()
            .await
            .map_err(SinkError::at("reading loader_blocks"))?;
        Ok(ranges
            .into_iter()
            .map(|r| (r.partition, r.last_offset))
            .collect())
    }

    /// Records that the offsets `first_offset..=last_offset` of a partition are about to
    /// be inserted as one block.
    pub async fn record_block(
        &self,
        group: &str,
        topic: &str,
        block: &Block<'_>,
        done: bool,
    ) -> Result<(), SinkError> {
        let recorded_at = u32::try_from(runtime::now_ms() / 1000).unwrap_or(u32::MAX);
        let rows: Vec<BlockRow> = block
            .segments
            .iter()
            .map(|(partition, s)| BlockRow {
                consumer_group: group.to_owned(),
                topic: topic.to_owned(),
                partition: *partition,
                epoch: s.epoch,
                first_offset: s.first,
                last_offset: s.last,
                first_record: s.first_record,
                loaded_at_ms: block.loaded_at_ms,
                block: block.name.to_owned(),
                done: u8::from(done),
                recorded_at,
            })
            .collect();
        if self.replicas < 2 {
            return self.insert_into("loader_blocks", &rows, None, &[]).await;
        }
        // With replicas, the record must be on more than one before the block is
        // written: a replica that dies right after would otherwise take the only copy,
        // and a loader reading the other would cut the block anew.
        let quorum = self.replicas.to_string();
        let with_quorum = [
            ("insert_quorum", quorum.as_str()),
            ("insert_quorum_timeout", "5000"),
        ];
        match self
            .insert_into("loader_blocks", &rows, None, &with_quorum)
            .await
        {
            // A replica is down (285), or the quorum write's outcome is unknown (319):
            // one copy now beats none; the loader keeps going and says so.
            Err(e) if matches!(e.server_code(), Some(285 | 319)) => {
                tracing::warn!(error = %e, "Block recorded without a quorum of replicas");
                self.insert_into("loader_blocks", &rows, None, &[]).await
            }
            result => result,
        }
    }

    /// A read of the block log. In a cluster never from a replica that lags: a block
    /// recorded just before a crash must be found.
    fn read_block_log(&self, sql: &str) -> clickhouse::query::Query {
        let query = self.client().query(sql);
        if self.layout.cluster().is_none() {
            return query;
        }
        query
            .with_setting("max_replica_delay_for_distributed_queries", "1")
            .with_setting("fallback_to_stale_replicas_for_distributed_queries", "0")
    }
}
