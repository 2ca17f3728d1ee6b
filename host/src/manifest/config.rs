//! A job as the engine runs it: the manifest resolved, checked and typed.

use std::path::PathBuf;
use std::time::Duration;

use sluice_abi::{Kind, Value};

pub use crate::operators::JoinKind;
use crate::runtime::Limits;
pub use crate::window::Span;

/// Everything needed to build and run one job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The job's name, used in logs and errors.
    pub name: String,
    /// The tenant the job runs for (`tenant`): its CPU share and quotas are the tenant's,
    /// from the host's configuration. `None`: the host's default tenant.
    pub tenant: Option<String>,
    /// The manifest as written (checkpoints keep it).
    pub manifest: String,
    /// The manifest's file, as given: run-time errors name it with the line of the step.
    pub file: PathBuf,
    /// How often a batch is cut.
    pub batch_interval: Duration,
    /// How many partitions each batch's data sets are split into.
    pub partitions: usize,
    /// How many cut batches may wait to be computed before the cutter waits too.
    pub max_queued_batches: usize,
    /// Whether consecutive map, flatMap and filter steps of one component run in one
    /// guest call, and combine by key inside it when a reduceByKey or combineByKey of the
    /// same component follows (`fuse`, default true).
    pub fuse: bool,
    /// What each UDF instance may use.
    pub limits: Limits,
    /// Where and how often recovery data is saved (required by stateful operators).
    pub checkpoint: Option<CheckpointConfig>,
    /// How watermarks combine and whether empty batches evict (`[event_time]`).
    pub event_time: crate::event_time::EventTimeSettings,
    /// Where records come from.
    pub sources: Vec<SourceConfig>,
    /// Derived streams, each after everything it reads from.
    pub streams: Vec<StreamConfig>,
    /// Where results go.
    pub sinks: Vec<SinkConfig>,
    /// How a server hosts the job (`None`: a job of `sluice run`).
    pub hosted: Option<Hosted>,
}

/// What changes for a job a server hosts for a tenant.
#[derive(Debug, Clone)]
pub struct Hosted {
    /// The tenant's files: every file the job opens is opened beneath this directory, so
    /// that no path (nor a symbolic link made while the job runs) leads out of it.
    pub files: PathBuf,
    /// The tenant's disk quota (`max_disk_bytes`) on its directory (its files, checkpoints
    /// and logs), shared by its jobs: files sinks, state checkpoints and the write-ahead
    /// log refuse to write past it.
    pub disk: std::sync::Arc<crate::disk::DiskQuota>,
}

/// `[checkpoint]`: the job's checkpoint directory and policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// The directory (created if missing); a restart with it resumes the job.
    pub dir: PathBuf,
    /// A state checkpoint is written every this many batches.
    pub every: u64,
    /// When the write-ahead log is forced to disk.
    pub fsync: FsyncPolicy,
}

/// When the write-ahead log is forced to disk (fsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Once per batch, before the batch is processed: a crash loses nothing that was in
    /// a processed batch, but may lose records received since the last cut.
    Batch,
    /// After every append by a receiver: nothing received is ever lost, at the cost of one
    /// disk flush per read.
    Record,
    /// Never: the operating system writes the log when it likes (survives a crash of
    /// Sluice, not of the machine).
    Never,
}

/// A named source of records.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The stream name it produces.
    pub name: String,
    /// What kind of receiver feeds it.
    pub kind: SourceKind,
}

/// The receivers Sluice has.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// Text lines from a TCP server (Spark's `socketTextStream`); reconnects when the
    /// server goes away.
    Socket {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Lines of the text files that appear in a directory (Spark's `textFileStream`),
    /// each file read once, also across restarts of a checkpointed job.
    Directory {
        /// The watched directory.
        path: PathBuf,
        /// Whether files present at the job's first start are read too.
        include_existing: bool,
        /// Files modified longer than this before the newest file seen are forgotten
        /// and never read.
        max_file_age: std::time::Duration,
    },
    /// The lines of one text file, all at once or a number per batch; ends at its end.
    File {
        /// The file.
        path: PathBuf,
        /// How many lines go into each batch (`None`: all in the first).
        lines_per_batch: Option<usize>,
    },
    /// Integers 0, 1, 2, ... at a fixed rate (Spark's rate source), for demos and benchmarks.
    Generator {
        /// Records per second.
        rate: u64,
        /// Stop after this many records (`None`: never).
        limit: Option<u64>,
    },
    /// Lines of standard input, until it closes.
    Stdin,
    /// Records of Kafka topics, each batch an exact offset range per partition.
    Kafka(crate::connectors::kafka::KafkaSourceConfig),
    /// A static data set read once at start from a file, the same in every batch: the
    /// other side of a join with reference data (Spark: `transform(_.join(static))`).
    Table {
        /// The file.
        path: PathBuf,
        /// How it is written.
        format: TableFormat,
    },
    /// Fixed batches, one per batch interval (Spark's `queueStream` with `oneAtATime`),
    /// written in the manifest or read from a JSON lines file (see [`crate::json`]).
    Queue {
        /// The records of each batch.
        batches: Vec<Vec<Value>>,
    },
}

/// The file formats of a table source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// One JSON value per line (a pair as a 2-element array).
    JsonLines,
    /// CSV with a header row; each row becomes the pair (first column, other columns),
    /// the other columns as one string if there is one, else as a list of strings.
    Csv,
}

/// A stream derived from another one.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Its name.
    pub name: String,
    /// The stream it reads.
    pub from: String,
    /// The steps applied in order.
    pub steps: Vec<StepConfig>,
    /// The manifest line of each step (of its `op`), for run-time errors.
    pub lines: Vec<usize>,
    /// The streams of late rows (`late_rows`): per stateful event-time step that routes
    /// the rows it drops as late, its index in `steps` and the stream's name.
    pub late_rows: Vec<(usize, String)>,
}

/// A function of a component, checked to exist and to have the kind its step needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdfRef {
    /// The component file.
    pub component: PathBuf,
    /// The function's name.
    pub function: String,
    /// Its kind.
    pub kind: Kind,
    /// How the manifest wrote it, for messages.
    pub label: String,
}

/// One step of a pipeline.
#[derive(Debug, Clone)]
pub enum StepConfig {
    /// One record in, one out.
    Map(UdfRef),
    /// One record in, any number out.
    FlatMap(UdfRef),
    /// Keep the records a predicate accepts.
    Filter(UdfRef),
    /// A function over each whole partition.
    MapPartitions(UdfRef),
    /// Each partition as one list record.
    Glom,
    /// Spread the records over this many partitions.
    Repartition(usize),
    /// This stream's records followed by those of the named streams.
    Union(Vec<String>),
    /// The number of records.
    Count,
    /// `[value, count]` per distinct record.
    CountByValue,
    /// All records folded with a reduce function.
    Reduce(UdfRef),
    /// A pipeline applied to each batch's data set.
    Transform(Vec<StepConfig>),
    /// Pairs: one per key, values folded with a reduce function.
    ReduceByKey(UdfRef),
    /// Pairs: one `(key, [values])` per key.
    GroupByKey,
    /// Pairs: one per key, values combined with three functions.
    CombineByKey {
        /// value -> combiner (map).
        create: UdfRef,
        /// (combiner, value) -> combiner (fold).
        merge_value: UdfRef,
        /// (combiner, combiner) -> combiner (reduce).
        merge_combiners: UdfRef,
    },
    /// Pairs: a map function applied to values.
    MapValues(UdfRef),
    /// Pairs: a flat-map function applied to values.
    FlatMapValues(UdfRef),
    /// Pairs: `(key, [[this stream's values], [the other's]])` per key.
    Cogroup(String),
    /// Pairs: joined by key with the other stream.
    Join(JoinKind, String),
    /// Every record of this stream, duplicates included, equal to no record of the other.
    Subtract(String),
    /// Pairs: every pair of this stream whose key the other stream's pairs lack.
    SubtractByKey(String),
    /// Each record found in both streams, once.
    Intersection(String),
    /// Each record once.
    Distinct,
    /// Every record of the window's batches.
    Window(Span),
    /// The number of records in the window.
    CountByWindow(Span),
    /// All records of the window folded with a reduce function (and its inverse).
    ReduceByWindow {
        /// Folds two values.
        reduce: UdfRef,
        /// Takes a value back out.
        inverse: Option<UdfRef>,
        /// Length and slide.
        span: Span,
    },
    /// Pairs: one per key over the window.
    ReduceByKeyAndWindow {
        /// Folds two values.
        reduce: UdfRef,
        /// Takes a value back out.
        inverse: Option<UdfRef>,
        /// Keeps the window's pairs it accepts (only with `inverse`).
        filter: Option<UdfRef>,
        /// Length and slide.
        span: Span,
    },
    /// Pairs: `(key, [values])` over the window.
    GroupByKeyAndWindow(Span),
    /// Pairs: the whole `(key, state)` table, every key's state updated by a function.
    UpdateStateByKey {
        /// `(values, old state) -> new state` (update-state).
        udf: UdfRef,
        /// `(key, state)` pairs to start from.
        initial_state: Option<InitialState>,
    },
    /// What a function emits per record, given and updating the key's state.
    MapWithState {
        /// `(key, value, state) -> emitted` (map-with-state).
        udf: UdfRef,
        /// How long a key may stay idle before its last call.
        timeout: Option<Duration>,
        /// Idle keys are looked for only at batch numbers that are multiples of this.
        timeout_check_every: u64,
        /// `(key, state)` pairs to start from.
        initial_state: Option<InitialState>,
    },
    /// Pairs: the `(key, state)` table of the mapWithState step this follows.
    StateSnapshots,
    /// `[record, count]` over the window, records whose count is 0 dropped.
    CountByValueAndWindow(Span),
    /// Where each record's event time is, and the watermark delay; with the map UDF
    /// that gives it, for [`crate::event_time::TimeField::Udf`].
    EventTime(crate::event_time::TimeSpec, Option<UdfRef>),
    /// One record per event-time window a record falls in, with its `window`.
    AssignWindow(crate::event_time::WindowSpec),
    /// Aggregation over event-time windows and keys, in an output mode; with a map UDF
    /// giving each record's session gap (ms) when the sessions have no fixed gap.
    EventAggregate(crate::event_time::AggregateSpec, Option<UdfRef>),
    /// The first record per key (these fields, or the whole record).
    Dedup(Option<Vec<String>>),
    /// A stream-stream join with watermarks.
    EventJoin(crate::event_time::JoinSpec, String),
}

/// A file of `(key, state)` pairs a state step starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialState {
    /// The file.
    pub path: PathBuf,
    /// How it is written (as a table source).
    pub format: TableFormat,
}

impl StepConfig {
    /// The UDFs the step calls, nested steps' included.
    pub fn udfs(&self) -> Vec<&UdfRef> {
        match self {
            StepConfig::Map(udf)
            | StepConfig::FlatMap(udf)
            | StepConfig::Filter(udf)
            | StepConfig::MapPartitions(udf)
            | StepConfig::Reduce(udf)
            | StepConfig::ReduceByKey(udf)
            | StepConfig::MapValues(udf)
            | StepConfig::FlatMapValues(udf)
            | StepConfig::UpdateStateByKey { udf, .. }
            | StepConfig::MapWithState { udf, .. }
            | StepConfig::EventTime(_, Some(udf)) => vec![udf],
            StepConfig::EventAggregate(spec, gap_udf) => gap_udf
                .iter()
                .chain(spec.aggregates.iter().filter_map(|agg| agg.udf.as_ref()))
                .collect(),
            StepConfig::CombineByKey {
                create,
                merge_value,
                merge_combiners,
            } => vec![create, merge_value, merge_combiners],
            StepConfig::ReduceByWindow {
                reduce, inverse, ..
            } => std::iter::once(reduce).chain(inverse).collect(),
            StepConfig::ReduceByKeyAndWindow {
                reduce,
                inverse,
                filter,
                ..
            } => std::iter::once(reduce)
                .chain(inverse)
                .chain(filter)
                .collect(),
            StepConfig::Transform(steps) => steps.iter().flat_map(StepConfig::udfs).collect(),
            _ => Vec::new(),
        }
    }

    /// The streams the step reads besides its input, in the order its operator takes
    /// them after the input (nested steps' included).
    pub fn other_streams(&self) -> Vec<&str> {
        match self {
            StepConfig::Union(others) => others.iter().map(String::as_str).collect(),
            StepConfig::Cogroup(other)
            | StepConfig::Join(_, other)
            | StepConfig::Subtract(other)
            | StepConfig::SubtractByKey(other)
            | StepConfig::Intersection(other)
            | StepConfig::EventJoin(_, other) => vec![other],
            StepConfig::Transform(steps) => {
                steps.iter().flat_map(StepConfig::other_streams).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the step's operator remembers earlier batches (a window's records or
    /// partial results, a state store): what a state checkpoint saves for the step.
    pub fn remembers(&self) -> bool {
        match self {
            StepConfig::Window(_)
            | StepConfig::CountByWindow(_)
            | StepConfig::ReduceByWindow { .. }
            | StepConfig::ReduceByKeyAndWindow { .. }
            | StepConfig::GroupByKeyAndWindow(_)
            | StepConfig::CountByValueAndWindow(_)
            | StepConfig::UpdateStateByKey { .. }
            | StepConfig::MapWithState { .. }
            | StepConfig::EventAggregate(..)
            | StepConfig::EventJoin(..)
            | StepConfig::Dedup(_) => true,
            StepConfig::Transform(steps) => steps.iter().any(StepConfig::remembers),
            _ => false,
        }
    }

    /// Whether the step keeps state that only a checkpoint can bring back after a crash
    /// (Spark requires a checkpoint directory for the same operators).
    pub fn needs_checkpoint(&self) -> bool {
        match self {
            StepConfig::UpdateStateByKey { .. }
            | StepConfig::MapWithState { .. }
            | StepConfig::CountByWindow(_)
            | StepConfig::CountByValueAndWindow(_)
            | StepConfig::EventAggregate(..)
            | StepConfig::EventJoin(..)
            | StepConfig::Dedup(_) => true,
            StepConfig::ReduceByWindow { inverse, .. }
            | StepConfig::ReduceByKeyAndWindow { inverse, .. } => inverse.is_some(),
            StepConfig::Transform(steps) => steps.iter().any(StepConfig::needs_checkpoint),
            _ => false,
        }
    }
}

/// Where a stream's batches go.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The sink's name (for collected output and messages).
    pub name: String,
    /// The stream it writes.
    pub from: String,
    /// How it writes.
    pub kind: SinkKind,
}

/// The sinks Sluice has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// Spark's `print()`: a header with the batch time, then the first `num` records.
    Print {
        /// How many records to show.
        num: usize,
    },
    /// One file per batch, `prefix-<batch time ms>[.suffix]`, written whole by rename.
    Files {
        /// Path prefix, relative to the manifest.
        prefix: PathBuf,
        /// File extension (may be empty).
        suffix: String,
        /// How records are written.
        format: FileFormat,
    },
    /// Kept in memory for the program that runs the job (tests, embedding).
    Collect,
    /// Records written to a Kafka topic, exactly once by default.
    Kafka(crate::connectors::kafka::KafkaSinkConfig),
}

/// How a file sink writes records, one per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Strings as themselves, anything else as JSON (Spark's `saveAsTextFiles`).
    Text,
    /// Every record as JSON.
    JsonLines,
    /// Every record as typed JSON ([`crate::json`]), which reads back as the same value.
    JsonTyped,
}
