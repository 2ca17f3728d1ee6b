//! What a manifest says about a Kafka source or sink, resolved and checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a key or value is read from (or written to) Kafka's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The bytes as they are.
    Bytes,
    /// UTF-8 text.
    String,
    /// JSON, read as [typed JSON](crate::json).
    Json,
}

/// Which topics a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// These topics.
    Names(Vec<String>),
    /// Every topic whose whole name matches this regular expression, found by polling
    /// the cluster's metadata.
    Pattern(String),
}

/// Where a source starts in a partition it has no position for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The oldest record the broker holds.
    Earliest,
    /// After the newest record.
    Latest,
    /// At the first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
    /// At these offsets, by topic and partition; partitions not named start at the
    /// earliest.
    Offsets(BTreeMap<String, BTreeMap<i32, i64>>),
}

/// What an undecodable key or value does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDecodeError {
    /// Fail the job, naming the topic, partition and offset.
    Fail,
    /// Skip the record (counted and reported).
    Skip,
}

/// A `kind = "kafka"` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// `host:port,...` of brokers to bootstrap from.
    pub brokers: String,
    /// What it reads.
    pub topics: Topics,
    /// Where it starts without a position from the checkpoint (or the group).
    pub starting_offsets: StartingOffsets,
    /// At most this many records per partition per batch.
    pub max_records_per_partition: Option<u64>,
    /// Backpressure and the rate limits per partition.
    pub rate: crate::receivers::rate::RateConfig,
    /// How values are decoded.
    pub value_format: Format,
    /// How keys are decoded; `None`: records are values only, else `[key, value]` pairs.
    pub key_format: Option<Format>,
    /// Records are `{topic, partition, offset, timestamp, key, value, headers}` structs.
    pub metadata: bool,
    /// The consumer group offsets are committed to after each batch.
    pub group_id: String,
    /// Client properties passed through to librdkafka (SASL, TLS, ...).
    pub properties: BTreeMap<String, String>,
    /// What an undecodable record does.
    pub on_decode_error: OnDecodeError,
    /// The only brokers (`host:port`) the cluster may advertise, for a served job (its
    /// server's `allowed_hosts`); `None`: any.
    pub allowed_brokers: Option<Vec<String>>,
}

/// What a Kafka sink promises about a batch written again after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A re-run batch writes only the records the first run did not: no duplicates.
    ExactlyOnce,
    /// A re-run batch is written again whole.
    AtLeastOnce,
}

/// A `kind = "kafka"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    /// `host:port,...` of brokers to bootstrap from.
    pub brokers: String,
    /// The topic written to (it must exist).
    pub topic: String,
    /// How keys and values are encoded (`string` or `json`).
    pub format: Format,
    /// Records are `[key, value]` pairs (else each whole record is a value without key).
    pub pairs: bool,
    /// Exactly-once or at-least-once.
    pub delivery: Delivery,
    /// Client properties passed through to librdkafka.
    pub properties: BTreeMap<String, String>,
    /// The job's checkpoint directory: where exactly-once keeps the end offsets of the
    /// last batch written, and the instance id its records carry.
    pub checkpoint: Option<PathBuf>,
    /// The only brokers (`host:port`) the cluster may advertise, for a served job (its
    /// server's `allowed_hosts`); `None`: any.
    pub allowed_brokers: Option<Vec<String>>,
}
