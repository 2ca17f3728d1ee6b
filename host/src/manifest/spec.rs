//! The manifest as written: TOML tables with every field kept with its position, so that
//! resolving it can point at the exact place of a mistake.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_abi::Value;
use toml::Spanned;

/// The whole manifest file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: Spanned<String>,
    pub tenant: Option<Spanned<String>>,
    pub batch_interval: Spanned<String>,
    pub partitions: Option<Spanned<i64>>,
    pub max_queued_batches: Option<Spanned<i64>>,
    pub fuse: Option<Spanned<bool>>,
    #[serde(default)]
    pub udfs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub limits: LimitsSpec,
    pub checkpoint: Option<CheckpointSpec>,
    pub event_time: Option<EventTimeSpec>,
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
}

/// `[limits]`: what each UDF instance of the job may use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub memory: Option<Spanned<String>>,
    pub call_timeout: Option<Spanned<String>>,
    pub output: Option<Spanned<String>>,
    pub transfer: Option<Spanned<String>>,
}

/// `[checkpoint]`: where and how often the job saves what recovery needs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Required but for a served job, whose server chooses its directory.
    pub dir: Option<Spanned<String>>,
    pub every: Option<Spanned<i64>>,
    pub fsync: Option<Spanned<String>>,
}

/// `[event_time]`: how the job's watermarks combine, and whether empty batches evict.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeSpec {
    pub watermark_policy: Option<Spanned<String>>,
    pub no_data_batches: Option<Spanned<bool>>,
}

/// One `[[sources]]` table; which fields apply depends on `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub lines_per_batch: Option<Spanned<i64>>,
    pub rate: Option<Spanned<i64>>,
    pub limit: Option<Spanned<i64>>,
    pub batches: Option<Spanned<Vec<Vec<Value>>>>,
    pub batches_file: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub brokers: Option<Spanned<String>>,
    pub topics: Option<Spanned<Vec<String>>>,
    pub topic_pattern: Option<Spanned<String>>,
    pub starting_offsets: Option<Spanned<toml::Value>>,
    pub max_records_per_partition: Option<Spanned<i64>>,
    pub key_format: Option<Spanned<String>>,
    pub value_format: Option<Spanned<String>>,
    pub metadata: Option<Spanned<bool>>,
    pub group_id: Option<Spanned<String>>,
    pub properties: Option<Spanned<BTreeMap<String, String>>>,
    pub on_decode_error: Option<Spanned<String>>,
    pub include_existing: Option<Spanned<bool>>,
    pub max_file_age: Option<Spanned<String>>,
    pub backpressure: Option<Spanned<bool>>,
    pub initial_rate: Option<Spanned<i64>>,
    pub max_rate: Option<Spanned<i64>>,
}

/// One `[[streams]]` table: a stream derived from another by a pipeline of steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: Spanned<String>,
    pub from: Spanned<String>,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

/// One step of a pipeline; which fields apply depends on `op`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub op: Spanned<String>,
    pub udf: Option<Spanned<String>>,
    pub partitions: Option<Spanned<i64>>,
    pub with: Option<Vec<Spanned<String>>>,
    pub steps: Option<Spanned<Vec<StepSpec>>>,
    pub other: Option<Spanned<String>>,
    pub batch_op: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
    pub slide: Option<Spanned<String>>,
    pub inverse: Option<Spanned<String>>,
    pub filter: Option<Spanned<String>>,
    pub create: Option<Spanned<String>>,
    pub merge_value: Option<Spanned<String>>,
    pub merge_combiners: Option<Spanned<String>>,
    pub initial_state: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub timeout_check_every: Option<Spanned<i64>>,
    pub field: Option<Spanned<String>>,
    pub index: Option<Spanned<i64>>,
    pub unit: Option<Spanned<String>>,
    pub delay: Option<Spanned<String>>,
    pub offset: Option<Spanned<String>>,
    pub session_gap: Option<Spanned<String>>,
    pub session_gap_udf: Option<Spanned<String>>,
    pub join: Option<Spanned<String>>,
    pub other_keys: Option<Spanned<Vec<String>>>,
    pub time_range: Option<Spanned<String>>,
    pub keys: Option<Spanned<Vec<String>>>,
    pub fields: Option<Spanned<Vec<String>>>,
    pub aggregates: Option<Spanned<Vec<String>>>,
    pub output_mode: Option<Spanned<String>>,
    pub order_by: Option<Spanned<Vec<String>>>,
    pub late_rows: Option<Spanned<String>>,
}

/// One `[[sinks]]` table; which fields apply depends on `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    pub name: Option<Spanned<String>>,
    pub from: Spanned<String>,
    pub kind: Spanned<String>,
    pub num: Option<Spanned<i64>>,
    pub prefix: Option<Spanned<String>>,
    pub suffix: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub brokers: Option<Spanned<String>>,
    pub topic: Option<Spanned<String>>,
    pub pairs: Option<Spanned<bool>>,
    pub delivery: Option<Spanned<String>>,
    pub properties: Option<Spanned<BTreeMap<String, String>>>,
}
