//! The Kafka source, replayable as Spark's Kafka direct stream: every batch is an exact
//! offset range per partition, recorded in the write-ahead log's cut, so that a re-run
//! batch reads exactly the same records again.
//!
//! The source assigns partitions itself (no group rebalance, which costs seconds on some
//! brokers) and polls the cluster's metadata for new partitions and, with a pattern, new
//! topics. A fetching thread keeps what it has read per partition; a cut takes it (at most
//! `max_records_per_partition` per partition) and names the ranges it took. The ranges
//! end at what was fetched, never at the broker's "latest" offset (which some brokers
//! answer wrongly). Offsets are committed to the group after each batch, for tools that
//! show the lag, and a job without a checkpoint restarts from them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_abi::{Batch, Value};

use super::config::{KafkaSourceConfig, OnDecodeError, StartingOffsets, Topics};
use super::decode::decode;
use crate::checkpoint::OffsetRange;
use crate::receivers::rate::RateLimit;
use crate::receivers::{Completed, Ranged, Receiver};

/// How often the cluster's metadata is polled for new partitions and topics.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// How long one request to the cluster may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a re-read may go without a record before it is given up.
const REPLAY_STALL: Duration = Duration::from_secs(30);
/// The most records the source holds between cuts; past it the fetching thread stops
/// reading until a cut makes room (the broker keeps the rest).
const MAX_BUFFERED: usize = 1_000_000;

/// A topic and partition.
type Partition = (String, i32);

/// A Kafka source of one job.
pub struct KafkaSource {
    shared: Arc<Shared>,
    started: Mutex<bool>,
    rate: RateLimit,
    /// Undecodable records the last cut passed over (`on_decode_error = "skip"`).
    skipped: AtomicU64,
}

struct Shared {
    source: String,
    config: KafkaSourceConfig,
    consumer: BaseConsumer,
    fetched: Mutex<Fetched>,
    stop: AtomicBool,
}

#[derive(Default)]
struct Fetched {
    partitions: BTreeMap<Partition, Fetching>,
    buffered: usize,
    failure: Option<String>,
}

/// One assigned partition: where the next cut's range starts (once known) and the
/// records read since, each with its offset.
#[derive(Default)]
struct Fetching {
    next: Option<i64>,
    records: VecDeque<(i64, Vec<u8>)>,
    /// For a partition started by `starting_offsets = { timestamp }`: records before the
    /// first one at or after this time are passed over. The broker's answer is only where
    /// fetching starts: some brokers (Tansu 0.6) answer an earlier offset.
    not_before_ms: Option<i64>,
}

/// The client of `config`: its properties, then its brokers.
fn client(config: &KafkaSourceConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &config.brokers);
    client
}

/// A consumer for `config`: the client properties first, so that Sluice's own settings
/// (which its guarantees rest on) win.
fn consumer(config: &KafkaSourceConfig, reset: &str) -> Result<BaseConsumer> {
    client(config)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .create()
        .with_context(|| format!("cannot create a Kafka consumer for {}", config.brokers))
}

impl KafkaSource {
    /// A source for `config`; it reads nothing until [`Ranged::resume_after`] says where
    /// to start (a checkpointed job), or at once from the group's committed offsets when
    /// `from_group` (a job without a checkpoint).
    pub fn new(source: &str, config: &KafkaSourceConfig, from_group: bool) -> Result<Self> {
        let reset = match config.starting_offsets {
            StartingOffsets::Latest => "latest",
            _ => "earliest",
        };
        super::check_brokers(
            &format!("source `{source}`"),
            &client(config),
            config.allowed_brokers.as_deref(),
            REQUEST_TIMEOUT,
        )?;
        let consumer =
            consumer(config, reset).with_context(|| format!("source `{source}` cannot start"))?;
        let kafka = Self {
            shared: Arc::new(Shared {
                source: source.to_owned(),
                config: config.clone(),
                consumer,
                fetched: Mutex::new(Fetched::default()),
                stop: AtomicBool::new(false),
            }),
            started: Mutex::new(false),
            rate: RateLimit::new(config.rate),
            skipped: AtomicU64::new(0),
        };
        if from_group {
            kafka.start(HashMap::new(), true);
        }
        Ok(kafka)
    }

    /// Starts the fetching thread (once): partitions in `resume` start at those offsets,
    /// the others from the group (`from_group`) or the starting offsets.
    fn start(&self, resume: HashMap<Partition, i64>, from_group: bool) {
        let mut started = self.started.lock().expect("kafka source poisoned");
        if std::mem::replace(&mut *started, true) {
            return;
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(format!("kafka-{}", shared.source))
            .spawn(move || fetch(&shared, &resume, from_group))
            .expect("a thread can be spawned");
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

/// The fetching thread: discovers partitions, assigns new ones, and keeps what it reads.
fn fetch(shared: &Shared, resume: &HashMap<Partition, i64>, from_group: bool) {
    let mut discovered = None::<Instant>;
    let mut first = true;
    let mut last_error = None::<Instant>;
    while !shared.stop.load(Ordering::Acquire) {
        if discovered.is_none_or(|at| at.elapsed() >= DISCOVERY_INTERVAL) {
            if let Err(error) = discover(shared, resume, from_group, first) {
                tracing::warn!(source = shared.source, "{error:#}; will retry");
            } else {
                first = false;
            }
            discovered = Some(Instant::now());
        }
        if shared
            .fetched
            .lock()
            .expect("kafka source poisoned")
            .buffered
            >= MAX_BUFFERED
        {
            // Backpressure: the broker keeps what is not read yet.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match shared.consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => keep(shared, &message),
            Some(Err(error))
                if last_error.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) =>
            {
                tracing::warn!(source = shared.source, "Kafka: {error}");
                last_error = Some(Instant::now());
            }
            Some(Err(_)) | None => {}
        }
    }
}

/// The partitions of the topics `config` names, as the cluster's metadata lists them.
fn partitions(consumer: &BaseConsumer, config: &KafkaSourceConfig) -> Result<Vec<Partition>> {
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .with_context(|| format!("cannot read the topics of {}", config.brokers))?;
    let pattern = match &config.topics {
        Topics::Pattern(pattern) => Some(
            regex::Regex::new(&format!("^(?:{pattern})$"))
                .expect("the pattern was checked with the manifest"),
        ),
        Topics::Names(_) => None,
    };
    let wanted = |name: &str| match (&config.topics, &pattern) {
        (Topics::Names(names), _) => names.iter().any(|wanted| wanted == name),
        (_, Some(pattern)) => pattern.is_match(name),
        _ => false,
    };
    Ok(metadata
        .topics()
        .iter()
        .filter(|topic| wanted(topic.name()))
        .flat_map(|topic| {
            topic
                .partitions()
                .iter()
                .map(|partition| (topic.name().to_owned(), partition.id()))
        })
        .collect())
}

/// Assigns the partitions not assigned yet: at their resume offset, else (at the first
/// discovery) from the group or the starting offsets, else (a partition that appeared
/// later) from its earliest record.
fn discover(
    shared: &Shared,
    resume: &HashMap<Partition, i64>,
    from_group: bool,
    first: bool,
) -> Result<()> {
    let found = partitions(&shared.consumer, &shared.config)?;
    let mut fetched = shared.fetched.lock().expect("kafka source poisoned");
    let new: Vec<Partition> = found
        .into_iter()
        .filter(|partition| !fetched.partitions.contains_key(partition))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    let mut by_time = TopicPartitionList::new();
    let mut starts = resume.clone();
    for (topic, partition) in &new {
        let resumed = resume.get(&(topic.clone(), *partition)).copied();
        let offset = match (&shared.config.starting_offsets, resumed) {
            (_, Some(offset)) => Offset::Offset(offset),
            // Fixed now, not when the first fetch asks: records produced in between are
            // after it.
            (StartingOffsets::Latest, None) if first && !from_group => {
                let (_, high) = shared
                    .consumer
                    .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)
                    .with_context(|| {
                        format!("cannot find the latest offset of {topic} partition {partition}")
                    })?;
                starts.insert((topic.clone(), *partition), high);
                Offset::Offset(high)
            }
            _ if !first => Offset::Beginning,
            _ if from_group => Offset::Stored,
            (StartingOffsets::Earliest, None) => Offset::Beginning,
            (StartingOffsets::Latest, None) => Offset::End,
            (StartingOffsets::Offsets(offsets), None) => offsets
                .get(topic)
                .and_then(|partitions| partitions.get(partition))
                .map_or(Offset::Beginning, |offset| Offset::Offset(*offset)),
            (StartingOffsets::Timestamp(at), None) => {
                by_time.add_partition_offset(topic, *partition, Offset::Offset(*at))?;
                continue;
            }
        };
        assignment.add_partition_offset(topic, *partition, offset)?;
    }
    if by_time.count() > 0 {
        let found = shared
            .consumer
            .offsets_for_times(by_time, REQUEST_TIMEOUT)
            .context("cannot find the offsets of `starting_offsets`' timestamp")?;
        for element in found.elements() {
            assignment.add_partition_offset(
                element.topic(),
                element.partition(),
                element.offset(),
            )?;
        }
    }
    shared
        .consumer
        .incremental_assign(&assignment)
        .context("cannot assign the topics' partitions")?;
    for partition in new {
        let next = starts.get(&partition).copied();
        let not_before_ms = match shared.config.starting_offsets {
            StartingOffsets::Timestamp(at)
                if first && !from_group && !resume.contains_key(&partition) =>
            {
                Some(at)
            }
            _ => None,
        };
        tracing::info!(
            source = shared.source,
            "reading {} partition {}{}",
            partition.0,
            partition.1,
            next.map_or_else(String::new, |offset| format!(" from offset {offset}"))
        );
        fetched.partitions.insert(
            partition,
            Fetching {
                next,
                records: VecDeque::new(),
                not_before_ms,
            },
        );
    }
    Ok(())
}

/// Decodes a fetched message into a record and keeps it; an undecodable one is skipped or
/// fails the source, as `on_decode_error` says.
fn keep(shared: &Shared, message: &BorrowedMessage<'_>) {
    let record = record(&shared.config, message);
    let mut fetched = shared.fetched.lock().expect("kafka source poisoned");
    let partition = (message.topic().to_owned(), message.partition());
    let Some(fetching) = fetched.partitions.get_mut(&partition) else {
        return;
    };
    if let Some(at) = fetching.not_before_ms {
        if message.timestamp().to_millis().is_none_or(|time| time < at) {
            return;
        }
        fetching.not_before_ms = None;
    }
    match record {
        Ok(record) => fetching.records.push_back((message.offset(), record)),
        Err(error) => match shared.config.on_decode_error {
            OnDecodeError::Skip => {
                // An empty record marks the offset as taken, so the range still covers it.
                fetching.records.push_back((message.offset(), Vec::new()));
            }
            OnDecodeError::Fail => {
                fetched.failure.get_or_insert(error);
                return;
            }
        },
    }
    fetched.buffered += 1;
}

/// A record with where it came from: the struct `{topic, partition, offset, timestamp,
/// key, value, headers}` that `sluice_sdk::KafkaRecord` reads.
fn with_metadata(
    from: &impl Message,
    timestamp: Option<i64>,
    key: Value,
    value: Value,
    headers: &[(&str, Option<&[u8]>)],
) -> Value {
    let headers = headers
        .iter()
        .map(|(name, bytes)| {
            Value::Tuple(vec![
                Value::String((*name).to_owned()),
                bytes.map_or(Value::Null, |bytes| Value::Bytes(bytes.to_vec())),
            ])
        })
        .collect();
    Value::Struct(vec![
        ("topic".into(), Value::String(from.topic().to_owned())),
        ("partition".into(), Value::Int(i64::from(from.partition()))),
        ("offset".into(), Value::Int(from.offset())),
        (
            "timestamp".into(),
            timestamp.map_or(Value::Null, Value::Int),
        ),
        ("key".into(), key),
        ("value".into(), value),
        ("headers".into(), Value::List(headers)),
    ])
}

/// The record a message becomes (encoded), or why it cannot be decoded.
fn record(config: &KafkaSourceConfig, message: &BorrowedMessage<'_>) -> Result<Vec<u8>, String> {
    let place = || {
        format!(
            "topic {} partition {} offset {}",
            message.topic(),
            message.partition(),
            message.offset()
        )
    };
    let value = decode(message.payload(), config.value_format)
        .map_err(|why| format!("the value at {} {why}", place()))?;
    let key = match config.key_format {
        Some(format) => Some(
            decode(message.key(), format).map_err(|why| format!("the key at {} {why}", place()))?,
        ),
        None => None,
    };
    let record = if config.metadata {
        let headers = message.headers().map_or_else(Vec::new, |headers| {
            headers
                .iter()
                .map(|header| (header.key, header.value))
                .collect()
        });
        with_metadata(
            message,
            message.timestamp().to_millis(),
            key.unwrap_or(Value::Null),
            value,
            &headers,
        )
    } else {
        match key {
            Some(key) => Value::Tuple(vec![key, value]),
            None => value,
        }
    };
    let mut bytes = Vec::new();
    record.encode_into(&mut bytes);
    Ok(bytes)
}

impl Receiver for KafkaSource {
    fn cut(&self) -> Result<Batch> {
        self.take().map(|(batch, _)| batch)
    }

    fn is_drained(&self) -> bool {
        false
    }

    fn ranged(&self) -> Option<&dyn Ranged> {
        Some(self)
    }
}

impl Ranged for KafkaSource {
    fn take(&self) -> Result<(Batch, Vec<OffsetRange>)> {
        let mut fetched = self.shared.fetched.lock().expect("kafka source poisoned");
        if let Some(failure) = fetched.failure.take() {
            bail!(
                "source `{}`: {failure}; set `on_decode_error = \"skip\"` to skip such records",
                self.shared.source
            );
        }
        let limit = self
            .shared
            .config
            .max_records_per_partition
            .map_or(usize::MAX, |limit| limit as usize);
        let waiting: Vec<usize> = fetched
            .partitions
            .values()
            .map(|fetching| fetching.records.len())
            .collect();
        let rate_limits = self.rate.per_partition(&waiting);
        let mut batch = Batch::new();
        let mut ranges = Vec::new();
        let mut taken = 0;
        let mut skipped = 0;
        for (index, ((topic, partition), fetching)) in fetched.partitions.iter_mut().enumerate() {
            let rate_limit = rate_limits
                .as_ref()
                .map_or(usize::MAX, |limits| limits[index]);
            let count = fetching.records.len().min(limit).min(rate_limit);
            let mut last = None;
            for (offset, record) in fetching.records.drain(..count) {
                if record.is_empty() {
                    skipped += 1;
                } else {
                    batch.push_with(|out| out.extend_from_slice(&record));
                }
                fetching.next.get_or_insert(offset);
                last = Some(offset);
            }
            taken += count;
            let Some(start) = fetching.next else {
                continue;
            };
            let end = last.map_or(start, |last| last + 1);
            fetching.next = Some(end);
            ranges.push(OffsetRange {
                topic: topic.clone(),
                partition: *partition,
                start,
                end,
            });
        }
        fetched.buffered -= taken;
        self.skipped.store(skipped, Ordering::Release);
        if skipped > 0 {
            tracing::warn!(
                source = self.shared.source,
                skipped,
                "skipped undecodable records (on_decode_error = \"skip\")"
            );
        }
        Ok((batch, ranges))
    }

    fn records_in(&self, ranges: &[OffsetRange]) -> Result<Batch> {
        replay(&self.shared, ranges)
    }

    fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Acquire)
    }

    fn resume_after(&self, ranges: &[OffsetRange]) {
        let resume = ranges
            .iter()
            .map(|range| ((range.topic.clone(), range.partition), range.end))
            .collect();
        self.start(resume, false);
    }

    fn completed(&self, ranges: &[OffsetRange], batch: &Completed) {
        let records = ranges
            .iter()
            .map(|range| (range.end - range.start).max(0) as u64)
            .sum();
        if let Some(rate) = self.rate.completed(
            batch.time_ms,
            records,
            batch.processing,
            batch.scheduling_delay,
        ) {
            tracing::debug!(
                source = self.shared.source,
                rate = rate as u64,
                "backpressure: the next batches take at most {} records/s",
                rate as u64
            );
        }
        let mut offsets = TopicPartitionList::new();
        for range in ranges {
            if let Err(error) = offsets.add_partition_offset(
                &range.topic,
                range.partition,
                Offset::Offset(range.end),
            ) {
                tracing::warn!(
                    source = self.shared.source,
                    "cannot commit offsets: {error}"
                );
                return;
            }
        }
        if offsets.count() > 0
            && let Err(error) = self.shared.consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::warn!(
                source = self.shared.source,
                "cannot commit offsets to group `{}`: {error}",
                self.shared.config.group_id
            );
        }
    }
}

/// Refuses to re-run `range` of `source` when the broker no longer holds all of it: `low`
/// is the partition's first offset still held, and anything before it was deleted by
/// retention. Re-running with records missing would lose them (Spark's `failOnDataLoss`).
fn refuse_lost(source: &str, range: &OffsetRange, low: i64) -> Result<()> {
    if low > range.start {
        bail!(
            "source `{source}`: the batch to re-run took offsets {}..{} of {} partition {}, and the broker deleted them up to {low} (retention): re-running it would lose records. Restore them, or move the checkpoint directory away to start afresh",
            range.start,
            range.end,
            range.topic,
            range.partition
        );
    }
    Ok(())
}

/// Reads exactly the records of `ranges` again (a re-run batch), in the order the cut
/// took them. Offsets retention has deleted are data loss: refused.
fn replay(shared: &Shared, ranges: &[OffsetRange]) -> Result<Batch> {
    let config = &shared.config;
    let wanted: Vec<&OffsetRange> = ranges
        .iter()
        .filter(|range| range.end > range.start)
        .collect();
    let mut batch = Batch::new();
    if wanted.is_empty() {
        return Ok(batch);
    }
    // Sluice's own reader: it must not move the fetching consumer.
    let reader = consumer(config, "error")?;
    let mut assignment = TopicPartitionList::new();
    for range in &wanted {
        let (low, _) = reader
            .fetch_watermarks(&range.topic, range.partition, REQUEST_TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot read the offsets {}..{} of {} partition {} again",
                    range.start, range.end, range.topic, range.partition
                )
            })?;
        refuse_lost(&shared.source, range, low)?;
        assignment.add_partition_offset(
            &range.topic,
            range.partition,
            Offset::Offset(range.start),
        )?;
    }
    reader
        .assign(&assignment)
        .context("cannot assign partitions to re-read")?;
    let mut read: HashMap<Partition, Vec<(i64, Vec<u8>)>> = HashMap::new();
    let mut done = std::collections::HashSet::new();
    let mut progress = Instant::now();
    let end_of = |topic: &str, partition: i32| {
        wanted
            .iter()
            .find(|range| range.topic == topic && range.partition == partition)
            .map(|range| range.end)
    };
    while done.len() < wanted.len() {
        if progress.elapsed() > REPLAY_STALL {
            bail!(
                "source `{}`: re-reading a batch's offsets from {} got nothing for {}s; is the broker up?",
                shared.source,
                config.brokers,
                REPLAY_STALL.as_secs()
            );
        }
        let Some(message) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| {
            format!(
                "source `{}`: cannot re-read a batch's offsets",
                shared.source
            )
        })?;
        progress = Instant::now();
        let Some(end) = end_of(message.topic(), message.partition()) else {
            continue;
        };
        let partition = (message.topic().to_owned(), message.partition());
        if done.contains(&partition) {
            continue;
        }
        let records = read.entry(partition.clone()).or_default();
        if message.offset() < end {
            let record = match record(config, &message) {
                Ok(record) => record,
                Err(_) if config.on_decode_error == OnDecodeError::Skip => Vec::new(),
                Err(error) => bail!("source `{}`: {error}", shared.source),
            };
            records.push((message.offset(), record));
        }
        if message.offset() + 1 >= end {
            done.insert(partition);
        }
    }
    for range in &wanted {
        for (_, record) in read
            .remove(&(range.topic.clone(), range.partition))
            .unwrap_or_default()
        {
            if !record.is_empty() {
                batch.push_with(|out| out.extend_from_slice(&record));
            }
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use sluice_sdk::KafkaRecord;

    use super::*;

    /// The struct a `metadata = true` source makes is what the SDK's `KafkaRecord` reads:
    /// a keyed record with headers, and a tombstone without key or timestamp.
    #[test]
    fn metadata_records_read_as_the_sdk_type() {
        let message = OwnedMessage::new(
            None,
            None,
            "events".into(),
            Timestamp::NotAvailable,
            2,
            41,
            None,
        );
        let encode = |record: Value| {
            let mut bytes = Vec::new();
            record.encode_into(&mut bytes);
            bytes
        };
        let keyed = encode(with_metadata(
            &message,
            Some(1_700_000_000_000),
            Value::String("k".into()),
            Value::String("v".into()),
            &[("trace", Some(b"\x01\x02")), ("empty", None)],
        ));
        let record: KafkaRecord<String, String> = sluice_abi::encoding::from_bytes(&keyed).unwrap();
        assert_eq!(
            record,
            KafkaRecord {
                topic: "events".into(),
                partition: 2,
                offset: 41,
                timestamp: Some(1_700_000_000_000),
                key: Some("k".into()),
                value: Some("v".into()),
                headers: vec![
                    ("trace".into(), Value::Bytes(vec![1, 2])),
                    ("empty".into(), Value::Null),
                ],
            }
        );
        let tombstone = encode(with_metadata(&message, None, Value::Null, Value::Null, &[]));
        let record: KafkaRecord = sluice_abi::encoding::from_bytes(&tombstone).unwrap();
        assert_eq!(
            (record.key, record.value, record.timestamp),
            (None, None, None)
        );
    }

    fn range(start: i64, end: i64) -> OffsetRange {
        OffsetRange {
            topic: "events".into(),
            partition: 3,
            start,
            end,
        }
    }

    #[test]
    fn a_rerun_whose_first_offsets_were_deleted_is_refused_naming_them() {
        let error = refuse_lost("events", &range(10, 20), 11).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("offsets 10..20 of events partition 3")
                && message.contains("deleted them up to 11")
                && message.contains("retention"),
            "{message}"
        );
        refuse_lost("events", &range(10, 20), 25).unwrap_err();
    }

    #[test]
    fn a_rerun_whose_offsets_are_all_held_goes_ahead() {
        refuse_lost("events", &range(10, 20), 10).unwrap();
        refuse_lost("events", &range(10, 20), 0).unwrap();
    }
}
