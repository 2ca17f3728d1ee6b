//! From the manifest as written to a checked [`JobConfig`].

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_abi::Kind;
use toml::Spanned;

use super::ManifestError;
use super::bounds::{self, Bounds, Bytes, Quantity};
use super::config::*;
use super::spec::*;
use super::{keyed, suggest};

mod event_time;
mod kafka;
use crate::runtime::{Limits, Runtime};

const DOCS: &str = "see docs/manifest.md for every key and a full example";

/// Every `op` of a step, for suggestions (a test checks that each is accepted).
pub(super) const OPERATORS: &[&str] = &[
    "map",
    "flat_map",
    "filter",
    "map_partitions",
    "glom",
    "repartition",
    "union",
    "count",
    "distinct",
    "count_by_value",
    "reduce",
    "transform",
    "reduce_by_key",
    "group_by_key",
    "combine_by_key",
    "map_values",
    "flat_map_values",
    "cogroup",
    "join",
    "left_outer_join",
    "right_outer_join",
    "full_outer_join",
    "subtract",
    "subtract_by_key",
    "intersection",
    "transform_with",
    "window",
    "count_by_window",
    "reduce_by_window",
    "reduce_by_key_and_window",
    "group_by_key_and_window",
    "count_by_value_and_window",
    "update_state_by_key",
    "map_with_state",
    "state_snapshots",
    "event_time",
    "assign_window",
    "event_aggregate",
    "event_join",
    "dedup",
];

/// Every source `kind`.
const SOURCE_KINDS: &[&str] = &[
    "socket",
    "directory",
    "file",
    "generator",
    "stdin",
    "queue",
    "table",
    "kafka",
];

/// Every sink `kind`.
const SINK_KINDS: &[&str] = &["print", "files", "collect", "kafka"];

/// Every `batch_op` of `transform_with`.
const BATCH_OPS: &[&str] = &[
    "union",
    "join",
    "left_outer_join",
    "right_outer_join",
    "full_outer_join",
    "cogroup",
    "subtract",
    "subtract_by_key",
    "intersection",
];

/// Spark checks mapWithState timeouts when it checkpoints the state: every 10 batches by
/// default (`MapWithStateDStream`'s default checkpoint interval).
const DEFAULT_TIMEOUT_CHECK_EVERY: u64 = 10;

/// A state checkpoint every this many batches, unless `checkpoint.every` says otherwise.
const DEFAULT_CHECKPOINT_EVERY: u64 = 10;

pub struct Resolver<'a> {
    text: &'a str,
    file: &'a Path,
    base: PathBuf,
    runtime: &'a Runtime,
    aliases: BTreeMap<String, Spanned<String>>,
    /// Stream names defined so far (sources, then streams in order).
    defined: HashSet<String>,
    /// The batch interval, once read.
    interval: Duration,
    /// Whether the job has a checkpoint directory, once read.
    checkpointed: bool,
    /// The checkpoint directory, once read (exactly-once Kafka sinks keep offsets there).
    checkpoint_dir: Option<PathBuf>,
    /// The job's name, once read (a Kafka source's default group is named after it).
    job: String,
    /// Streams whose last step is a mapWithState (what `state_snapshots` may follow).
    mapped_with_state: HashSet<String>,
    /// Streams with a watermark upstream (what event-time output modes depend on).
    watermarked: HashSet<String>,
    /// The event-time steps upstream of each stream (what may follow them).
    lineages: std::collections::HashMap<String, event_time::Lineage>,
    /// The streams of late rows, by name (which steps route to them).
    late_groups: std::collections::HashMap<String, event_time::LateGroup>,
    /// Where a server keeps the job's components and checkpoints (`sluice serve`);
    /// `None`: aliases are paths and the manifest names its checkpoint directory.
    hosting: Option<&'a dyn super::Hosting>,
}

type Result<T> = std::result::Result<T, ManifestError>;

impl<'a> Resolver<'a> {
    pub fn new(text: &'a str, file: &'a Path, runtime: &'a Runtime) -> Self {
        let base = file
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        Self {
            text,
            file,
            base,
            runtime,
            aliases: BTreeMap::new(),
            defined: HashSet::new(),
            interval: Duration::from_secs(1),
            checkpointed: false,
            checkpoint_dir: None,
            job: String::new(),
            mapped_with_state: HashSet::new(),
            watermarked: HashSet::new(),
            lineages: Default::default(),
            late_groups: Default::default(),
            hosting: None,
        }
    }

    /// Resolves `[udfs]` aliases through `hosting` instead of as paths, refuses `.wasm`
    /// paths in UDF references, and checkpoints the job where `hosting` says.
    pub fn with_hosting(mut self, hosting: &'a dyn super::Hosting) -> Self {
        self.hosting = Some(hosting);
        self
    }

    pub fn resolve(mut self) -> Result<JobConfig> {
        let spec: JobSpec = toml::from_str(self.text).map_err(|error| {
            let message = error.message().trim_end().to_owned();
            let hint = match suggest::unknown_field(&message) {
                Some(suggestion) => format!("{suggestion} {DOCS}"),
                None => DOCS.to_owned(),
            };
            self.error(error.span(), message, hint)
        })?;
        self.aliases = spec.udfs.clone();
        let name = spec.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(self.error(
                Some(spec.name.span()),
                "the job name is empty",
                "give the job a name: `name = \"wordcount\"`",
            ));
        }
        let batch_interval = self.duration(
            &spec.batch_interval,
            "batch_interval",
            &bounds::BATCH_INTERVAL,
        )?;
        // Batch times are whole milliseconds since the epoch.
        if !batch_interval.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(self.error(
                Some(spec.batch_interval.span()),
                format!(
                    "`batch_interval` = {:?} is not a whole number of milliseconds",
                    spec.batch_interval.get_ref()
                ),
                format!("use \"{}ms\"", batch_interval.as_millis()),
            ));
        }
        self.interval = batch_interval;
        self.job = spec.name.get_ref().trim().to_owned();
        let partitions = match &spec.partitions {
            Some(partitions) => self.count(partitions, "partitions", &bounds::PARTITIONS)? as usize,
            None => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(bounds::PARTITIONS.max as usize),
        };
        let tenant = match &spec.tenant {
            Some(tenant) if tenant.get_ref().trim().is_empty() => {
                return Err(self.error(
                    Some(tenant.span()),
                    "`tenant` is empty",
                    "name a tenant of the host's configuration, or leave `tenant` out",
                ));
            }
            tenant => tenant
                .as_ref()
                .map(|tenant| tenant.get_ref().trim().to_owned()),
        };
        let max_queued_batches = spec.max_queued_batches.as_ref().map_or(Ok(100), |max| {
            self.count(max, "max_queued_batches", &bounds::MAX_QUEUED_BATCHES)
        })? as usize;
        let limits = self.limits(&spec.limits)?;
        let checkpoint = spec
            .checkpoint
            .as_ref()
            .map(|checkpoint| self.checkpoint(checkpoint))
            .transpose()?;
        let checkpoint = match (checkpoint, self.hosting) {
            (checkpoint, None) => checkpoint,
            (checkpoint, Some(hosting)) => Some(CheckpointConfig {
                dir: hosting.checkpoint_dir(&self.job),
                ..checkpoint.unwrap_or(CheckpointConfig {
                    dir: PathBuf::new(),
                    every: DEFAULT_CHECKPOINT_EVERY,
                    fsync: FsyncPolicy::Batch,
                })
            }),
        };
        self.checkpointed = checkpoint.is_some();
        self.checkpoint_dir = checkpoint.as_ref().map(|checkpoint| checkpoint.dir.clone());
        let event_time = self.event_time_settings(spec.event_time.as_ref())?;
        if spec.sources.is_empty() {
            return Err(self.error(
                None,
                "the job has no source",
                "add a `[[sources]]` table, for example `kind = \"socket\"`",
            ));
        }
        let sources = spec
            .sources
            .iter()
            .map(|source| self.source(source))
            .collect::<Result<Vec<_>>>()?;
        let streams = spec
            .streams
            .iter()
            .map(|stream| self.stream(stream))
            .collect::<Result<Vec<_>>>()?;
        if let Some((stream, step, record)) = keyed::non_pair_from_queue(&sources, &streams) {
            let op = &spec.streams[stream].steps[step].op;
            return Err(self.error(
                Some(op.span()),
                format!(
                    "`{}` reads key-value pairs, but the queue source `{}` has the record {}, which is not a pair",
                    op.get_ref(),
                    streams[stream].from,
                    crate::json::to_json(record)
                ),
                "make pairs before it (a `map` step whose UDF returns `(key, value)`), or give the queue pairs: 2-element arrays such as `[\"a\", 1]`",
            ));
        }
        if spec.sinks.is_empty() {
            return Err(self.error(
                None,
                "the job has no sink, so its results would go nowhere",
                "add a `[[sinks]]` table, for example `kind = \"print\"`",
            ));
        }
        let sinks = spec
            .sinks
            .iter()
            .enumerate()
            .map(|(i, sink)| self.sink(i, sink))
            .collect::<Result<Vec<_>>>()?;
        Ok(JobConfig {
            name,
            tenant,
            manifest: self.text.to_owned(),
            file: self.file.to_owned(),
            batch_interval,
            partitions,
            max_queued_batches,
            fuse: spec.fuse.as_ref().is_none_or(|fuse| *fuse.get_ref()),
            limits,
            checkpoint,
            event_time,
            sources,
            streams,
            sinks,
            hosted: None,
        })
    }

    fn checkpoint(&self, spec: &CheckpointSpec) -> Result<CheckpointConfig> {
        // A served job's directory is the server's choice (see `resolve`).
        let dir = match (&spec.dir, self.hosting) {
            (_, Some(_)) => PathBuf::new(),
            (Some(dir), None) if !dir.get_ref().trim().is_empty() => self.base.join(dir.get_ref()),
            (Some(dir), None) => {
                return Err(self.error(
                    Some(dir.span()),
                    "the checkpoint directory is empty",
                    "name a directory, e.g. `dir = \"checkpoints/wordcount\"`",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    None,
                    "`[checkpoint]` has no `dir`",
                    "name a directory, e.g. `dir = \"checkpoints/wordcount\"`",
                ));
            }
        };
        let fsync = self
            .choice(
                &spec.fsync,
                "fsync policy",
                &[
                    ("batch", FsyncPolicy::Batch),
                    ("record", FsyncPolicy::Record),
                    ("never", FsyncPolicy::Never),
                ],
            )?
            .unwrap_or(FsyncPolicy::Batch);
        Ok(CheckpointConfig {
            dir,
            every: spec
                .every
                .as_ref()
                .map_or(Ok(DEFAULT_CHECKPOINT_EVERY), |every| {
                    self.count(every, "checkpoint.every", &bounds::CHECKPOINT_EVERY)
                })?,
            fsync,
        })
    }

    fn limits(&self, spec: &LimitsSpec) -> Result<Limits> {
        let defaults = Limits::default();
        Ok(Limits {
            memory_bytes: spec
                .memory
                .as_ref()
                .map_or(Ok(defaults.memory_bytes), |memory| {
                    self.size(memory, "limits.memory", &bounds::MEMORY)
                })?,
            call_timeout: spec
                .call_timeout
                .as_ref()
                .map_or(Ok(defaults.call_timeout), |timeout| {
                    self.duration(timeout, "limits.call_timeout", &bounds::CALL_TIMEOUT)
                })?,
            output_bytes: spec
                .output
                .as_ref()
                .map_or(Ok(defaults.output_bytes), |output| {
                    self.size(output, "limits.output", &bounds::OUTPUT)
                })?,
            transfer_bytes: spec
                .transfer
                .as_ref()
                .map_or(Ok(defaults.transfer_bytes), |transfer| {
                    self.size(transfer, "limits.transfer", &bounds::TRANSFER)
                })?,
        })
    }

    fn source(&mut self, spec: &SourceSpec) -> Result<SourceConfig> {
        let name = self.define(&spec.name)?;
        let fields = [
            ("host", spec.host.as_ref().map(Spanned::span)),
            ("port", spec.port.as_ref().map(Spanned::span)),
            ("path", spec.path.as_ref().map(Spanned::span)),
            (
                "lines_per_batch",
                spec.lines_per_batch.as_ref().map(Spanned::span),
            ),
            ("rate", spec.rate.as_ref().map(Spanned::span)),
            ("limit", spec.limit.as_ref().map(Spanned::span)),
            ("batches", spec.batches.as_ref().map(Spanned::span)),
            (
                "batches_file",
                spec.batches_file.as_ref().map(Spanned::span),
            ),
            ("format", spec.format.as_ref().map(Spanned::span)),
            (
                "include_existing",
                spec.include_existing.as_ref().map(Spanned::span),
            ),
            (
                "max_file_age",
                spec.max_file_age.as_ref().map(Spanned::span),
            ),
        ]
        .into_iter()
        .chain(kafka::source_fields(spec))
        .collect::<Vec<_>>();
        let kind = match spec.kind.get_ref().as_str() {
            "kafka" => {
                self.only(&fields, kafka::SOURCE_KEYS, "a kafka source")?;
                SourceKind::Kafka(self.kafka_source(spec)?)
            }
            "socket" => {
                self.only(&fields, &["host", "port"], "a socket source")?;
                let port = self.required(&spec.port, &spec.kind, "port", "a socket source")?;
                let port = self.count(port, "port", &bounds::PORT)? as u16;
                let host = spec
                    .host
                    .as_ref()
                    .map_or("127.0.0.1".to_owned(), |host| host.get_ref().clone());
                SourceKind::Socket { host, port }
            }
            "directory" => {
                self.only(
                    &fields,
                    &["path", "include_existing", "max_file_age"],
                    "a directory source",
                )?;
                let path = self.required(&spec.path, &spec.kind, "path", "a directory source")?;
                let directory = self.base.join(path.get_ref());
                if !directory.is_dir() {
                    return Err(self.error(Some(path.span()), format!("directory {} does not exist", directory.display()), "create it first, or fix the path (relative paths start at the manifest's directory)"));
                }
                SourceKind::Directory {
                    path: directory,
                    include_existing: spec
                        .include_existing
                        .as_ref()
                        .is_some_and(|include| *include.get_ref()),
                    max_file_age: spec
                        .max_file_age
                        .as_ref()
                        .map_or(Ok(bounds::MAX_FILE_AGE_DEFAULT), |age| {
                            self.duration(age, "max_file_age", &bounds::MAX_FILE_AGE)
                        })?,
                }
            }
            "file" => {
                self.only(&fields, &["path", "lines_per_batch"], "a file source")?;
                let path = self.required(&spec.path, &spec.kind, "path", "a file source")?;
                let file = self.base.join(path.get_ref());
                if !file.is_file() {
                    return Err(self.error(
                        Some(path.span()),
                        format!("file {} does not exist", file.display()),
                        "fix the path (relative paths start at the manifest's directory)",
                    ));
                }
                let lines_per_batch = spec
                    .lines_per_batch
                    .as_ref()
                    .map(|lines| {
                        self.count(lines, "lines_per_batch", &bounds::LINES_PER_BATCH)
                            .map(|lines| lines as usize)
                    })
                    .transpose()?;
                SourceKind::File {
                    path: file,
                    lines_per_batch,
                }
            }
            "generator" => {
                self.only(&fields, &["rate", "limit"], "a generator source")?;
                let rate = self.required(&spec.rate, &spec.kind, "rate", "a generator source")?;
                let rate = self.count(rate, "rate", &bounds::GENERATOR_RATE)?;
                let limit = spec
                    .limit
                    .as_ref()
                    .map(|limit| self.count(limit, "limit", &bounds::GENERATOR_LIMIT))
                    .transpose()?;
                SourceKind::Generator { rate, limit }
            }
            "stdin" => {
                self.only(&fields, &[], "a stdin source")?;
                SourceKind::Stdin
            }
            "table" => {
                self.only(&fields, &["path", "format"], "a table source")?;
                let path = self.required(&spec.path, &spec.kind, "path", "a table source")?;
                let file = self.existing_file(path)?;
                let format = self
                    .choice(
                        &spec.format,
                        "table format",
                        &[
                            ("json_lines", TableFormat::JsonLines),
                            ("csv", TableFormat::Csv),
                        ],
                    )?
                    .unwrap_or_else(|| table_format(&file));
                SourceKind::Table { path: file, format }
            }
            "queue" => {
                self.only(&fields, &["batches", "batches_file"], "a queue source")?;
                let batches = match (&spec.batches, &spec.batches_file) {
                    (Some(batches), None) => batches.get_ref().clone(),
                    (None, Some(path)) => {
                        let file = self.existing_file(path)?;
                        let files = match self.hosting {
                            Some(hosting) => hosting.files(),
                            None => Ok(crate::beneath::JobFiles::Anywhere),
                        };
                        files
                            .map_err(anyhow::Error::from)
                            .and_then(|files| crate::receivers::read_batches_file(&file, &files))
                            .map_err(|error| {
                                self.error(
                                    Some(path.span()),
                                    format!("{error:#}"),
                                    "write one batch per line: a JSON array of records \
                                     (docs/manifest.md, `JSON values`), in a file among the \
                                     job's own files",
                                )
                            })?
                    }
                    (Some(_), Some(path)) => {
                        return Err(self.error(
                            Some(path.span()),
                            "a queue source has both `batches` and `batches_file`",
                            "keep one of them",
                        ));
                    }
                    (None, None) => {
                        return Err(self.error(
                            Some(spec.kind.span()),
                            "a queue source needs `batches` or `batches_file`",
                            format!("add `batches = [[...], ...]` or `batches_file = \"batches.jsonl\"`; {DOCS}"),
                        ));
                    }
                };
                SourceKind::Queue { batches }
            }
            other => {
                return Err(self.error(
                    Some(spec.kind.span()),
                    format!("unknown source kind `{other}`"),
                    suggest::hint(
                        other,
                        SOURCE_KINDS.iter().copied(),
                        &format!("use one of: {}", SOURCE_KINDS.join(", ")),
                    ),
                ));
            }
        };
        Ok(SourceConfig { name, kind })
    }

    fn stream(&mut self, spec: &StreamSpec) -> Result<StreamConfig> {
        let from = self.reference(&spec.from)?;
        let steps = spec
            .steps
            .iter()
            .map(|step| self.step(step))
            .collect::<Result<Vec<_>>>()?;
        for (index, step) in steps.iter().enumerate() {
            if !matches!(step, StepConfig::StateSnapshots) {
                continue;
            }
            let after_map_with_state = match index.checked_sub(1) {
                Some(before) => matches!(steps[before], StepConfig::MapWithState { .. }),
                None => self.mapped_with_state.contains(&from),
            };
            if !after_map_with_state {
                return Err(self.error(
                    Some(spec.steps[index].op.span()),
                    "`state_snapshots` does not follow a `map_with_state` step",
                    "put it right after `map_with_state`, or start a stream `from` one whose last step is `map_with_state`",
                ));
            }
        }
        let (watermarked, lineages) = self.check_event_time(spec, &from, &steps)?;
        let name = self.define(&spec.name)?;
        let late_rows = self.late_streams(spec, &from, &steps, &lineages, watermarked)?;
        for late in late_rows.iter().map(|(_, late)| late).chain([&name]) {
            if watermarked {
                self.watermarked.insert(late.clone());
            }
        }
        if let Some(lineage) = lineages.last() {
            self.lineages.insert(name.clone(), lineage.clone());
        }
        if let Some(StepConfig::MapWithState { .. }) = steps.last() {
            self.mapped_with_state.insert(name.clone());
        }
        let lines = spec
            .steps
            .iter()
            .map(|step| line_and_column(self.text, step.op.span().start).0)
            .collect();
        Ok(StreamConfig {
            name,
            from,
            steps,
            lines,
            late_rows,
        })
    }

    /// One step, which must have a checkpoint directory to recover from if it keeps state.
    fn step(&self, spec: &StepSpec) -> Result<StepConfig> {
        let step = self.unchecked_step(spec)?;
        if step.needs_checkpoint() && !self.checkpointed {
            let op = spec.op.get_ref();
            return Err(self.error(
                Some(spec.op.span()),
                format!(
                    "`{op}` keeps state across batches, and the job has no checkpoint directory to recover it from after a crash (Spark requires one too)"
                ),
                "add a `[checkpoint]` table with `dir = \"checkpoints/<job name>\"`",
            ));
        }
        Ok(step)
    }

    fn unchecked_step(&self, spec: &StepSpec) -> Result<StepConfig> {
        let span = |field: &Option<Spanned<String>>| field.as_ref().map(Spanned::span);
        let fields = [
            ("udf", span(&spec.udf)),
            ("partitions", spec.partitions.as_ref().map(Spanned::span)),
            (
                "with",
                spec.with
                    .as_ref()
                    .and_then(|with| with.first())
                    .map(Spanned::span),
            ),
            ("steps", spec.steps.as_ref().map(Spanned::span)),
            ("other", span(&spec.other)),
            ("batch_op", span(&spec.batch_op)),
            ("window", span(&spec.window)),
            ("slide", span(&spec.slide)),
            ("inverse", span(&spec.inverse)),
            ("filter", span(&spec.filter)),
            ("create", span(&spec.create)),
            ("merge_value", span(&spec.merge_value)),
            ("merge_combiners", span(&spec.merge_combiners)),
            ("initial_state", span(&spec.initial_state)),
            ("timeout", span(&spec.timeout)),
            (
                "timeout_check_every",
                spec.timeout_check_every.as_ref().map(Spanned::span),
            ),
            ("field", span(&spec.field)),
            ("index", spec.index.as_ref().map(Spanned::span)),
            ("unit", span(&spec.unit)),
            ("delay", span(&spec.delay)),
            ("offset", span(&spec.offset)),
            ("session_gap", span(&spec.session_gap)),
            ("session_gap_udf", span(&spec.session_gap_udf)),
            ("join", span(&spec.join)),
            ("other_keys", spec.other_keys.as_ref().map(Spanned::span)),
            ("time_range", span(&spec.time_range)),
            ("keys", spec.keys.as_ref().map(Spanned::span)),
            ("fields", spec.fields.as_ref().map(Spanned::span)),
            ("aggregates", spec.aggregates.as_ref().map(Spanned::span)),
            ("output_mode", span(&spec.output_mode)),
            ("order_by", spec.order_by.as_ref().map(Spanned::span)),
            ("late_rows", span(&spec.late_rows)),
        ];
        let op = spec.op.get_ref().as_str();
        let what = format!("the `{op}` step");
        let takes = |allowed: &[&str]| self.only(&fields, allowed, &what);
        let function =
            |field: &Option<Spanned<String>>, name: &str, kind: Kind| -> Result<UdfRef> {
                self.udf(self.required(field, &spec.op, name, &what)?, op, kind)
            };
        let optional_function =
            |field: &Option<Spanned<String>>, kind: Kind| -> Result<Option<UdfRef>> {
                field
                    .as_ref()
                    .map(|reference| self.udf(reference, op, kind))
                    .transpose()
            };
        let other = || -> Result<String> {
            let other = spec.other.as_ref().ok_or_else(|| {
                self.error(
                    Some(spec.op.span()),
                    format!("`{op}` needs a second stream"),
                    "add `other = \"stream-name\"`: a source or a stream defined above",
                )
            })?;
            self.reference(other)
        };
        let span = || self.span(spec);
        Ok(match op {
            "map" | "flat_map" | "filter" | "map_partitions" | "reduce" | "reduce_by_key"
            | "map_values" | "flat_map_values" => {
                takes(&["udf"])?;
                let kind = match op {
                    "map" | "map_values" => Kind::Map,
                    "flat_map" | "flat_map_values" => Kind::FlatMap,
                    "filter" => Kind::Filter,
                    "map_partitions" => Kind::MapPartition,
                    _ => Kind::Reduce,
                };
                let udf = function(&spec.udf, "udf", kind)?;
                match op {
                    "map" => StepConfig::Map(udf),
                    "flat_map" => StepConfig::FlatMap(udf),
                    "filter" => StepConfig::Filter(udf),
                    "map_partitions" => StepConfig::MapPartitions(udf),
                    "reduce" => StepConfig::Reduce(udf),
                    "reduce_by_key" => StepConfig::ReduceByKey(udf),
                    "map_values" => StepConfig::MapValues(udf),
                    _ => StepConfig::FlatMapValues(udf),
                }
            }
            "glom" | "count" | "count_by_value" | "group_by_key" | "distinct" => {
                takes(&[])?;
                match op {
                    "glom" => StepConfig::Glom,
                    "count" => StepConfig::Count,
                    "count_by_value" => StepConfig::CountByValue,
                    "distinct" => StepConfig::Distinct,
                    _ => StepConfig::GroupByKey,
                }
            }
            "repartition" => {
                takes(&["partitions"])?;
                let partitions = self.required(&spec.partitions, &spec.op, "partitions", &what)?;
                StepConfig::Repartition(
                    self.count(partitions, "partitions", &bounds::PARTITIONS)? as usize
                )
            }
            "union" => {
                takes(&["with"])?;
                let with = spec
                    .with
                    .as_ref()
                    .filter(|with| !with.is_empty())
                    .ok_or_else(|| {
                        self.error(
                            Some(spec.op.span()),
                            "`union` needs the streams to merge with",
                            "add `with = [\"other-stream\"]`",
                        )
                    })?;
                StepConfig::Union(
                    with.iter()
                        .map(|name| self.reference(name))
                        .collect::<Result<_>>()?,
                )
            }
            "transform" => {
                takes(&["steps"])?;
                let steps = self.required(&spec.steps, &spec.op, "steps", &what)?;
                let specs = steps.get_ref();
                let steps = specs
                    .iter()
                    .map(|step| self.step(step))
                    .collect::<Result<Vec<_>>>()?;
                self.transformable(specs, &steps)?;
                StepConfig::Transform(steps)
            }
            "combine_by_key" => {
                takes(&["create", "merge_value", "merge_combiners"])?;
                StepConfig::CombineByKey {
                    create: function(&spec.create, "create", Kind::Map)?,
                    merge_value: function(&spec.merge_value, "merge_value", Kind::Fold)?,
                    merge_combiners: function(
                        &spec.merge_combiners,
                        "merge_combiners",
                        Kind::Reduce,
                    )?,
                }
            }
            "cogroup" | "join" | "left_outer_join" | "right_outer_join" | "full_outer_join"
            | "subtract" | "subtract_by_key" | "intersection" => {
                takes(&["other"])?;
                binary(op, other()?).expect("a two-stream operator")
            }
            "transform_with" => {
                takes(&["other", "batch_op"])?;
                let batch_op = self.required(&spec.batch_op, &spec.op, "batch_op", &what)?;
                let other = other()?;
                match batch_op.get_ref().as_str() {
                    "union" => StepConfig::Union(vec![other]),
                    name => binary(name, other).ok_or_else(|| {
                        self.error(
                            Some(batch_op.span()),
                            format!("unknown batch operation `{name}`"),
                            suggest::hint(
                                name,
                                BATCH_OPS.iter().copied(),
                                &format!("use one of: {}", BATCH_OPS.join(", ")),
                            ),
                        )
                    })?,
                }
            }
            "window"
            | "count_by_window"
            | "group_by_key_and_window"
            | "count_by_value_and_window" => {
                takes(&["window", "slide"])?;
                let span = span()?;
                match op {
                    "window" => StepConfig::Window(span),
                    "count_by_window" => StepConfig::CountByWindow(span),
                    "group_by_key_and_window" => StepConfig::GroupByKeyAndWindow(span),
                    _ => StepConfig::CountByValueAndWindow(span),
                }
            }
            "reduce_by_window" => {
                takes(&["udf", "inverse", "window", "slide"])?;
                StepConfig::ReduceByWindow {
                    reduce: function(&spec.udf, "udf", Kind::Reduce)?,
                    inverse: optional_function(&spec.inverse, Kind::Reduce)?,
                    span: span()?,
                }
            }
            "reduce_by_key_and_window" => {
                takes(&["udf", "inverse", "filter", "window", "slide"])?;
                let inverse = optional_function(&spec.inverse, Kind::Reduce)?;
                if let (Some(filter), None) = (&spec.filter, &inverse) {
                    return Err(self.error(
                        Some(filter.span()),
                        "`filter` applies only with an `inverse` function",
                        "add `inverse = ...`, or filter the output with a `filter` step",
                    ));
                }
                StepConfig::ReduceByKeyAndWindow {
                    reduce: function(&spec.udf, "udf", Kind::Reduce)?,
                    inverse,
                    filter: optional_function(&spec.filter, Kind::Filter)?,
                    span: span()?,
                }
            }
            "update_state_by_key" => {
                takes(&["udf", "initial_state"])?;
                StepConfig::UpdateStateByKey {
                    udf: function(&spec.udf, "udf", Kind::UpdateState)?,
                    initial_state: self.initial_state(spec)?,
                }
            }
            "map_with_state" => {
                takes(&["udf", "timeout", "timeout_check_every", "initial_state"])?;
                // The ranges before the component, which takes far longer to check.
                let timeout = spec
                    .timeout
                    .as_ref()
                    .map(|timeout| self.duration(timeout, "timeout", &bounds::STATE_TIMEOUT))
                    .transpose()?;
                let timeout_check_every = spec
                    .timeout_check_every
                    .as_ref()
                    .map_or(Ok(DEFAULT_TIMEOUT_CHECK_EVERY), |every| {
                        self.count(every, "timeout_check_every", &bounds::TIMEOUT_CHECK_EVERY)
                    })?;
                StepConfig::MapWithState {
                    udf: function(&spec.udf, "udf", Kind::MapWithState)?,
                    timeout,
                    timeout_check_every,
                    initial_state: self.initial_state(spec)?,
                }
            }
            "state_snapshots" => {
                takes(&[])?;
                StepConfig::StateSnapshots
            }
            "event_time" | "assign_window" | "event_aggregate" | "event_join" | "dedup" => {
                takes(event_time::keys(op))?;
                self.event_time_step(spec)?
            }
            other => {
                return Err(self.error(
                    Some(spec.op.span()),
                    format!("unknown operator `{other}`"),
                    suggest::hint(
                        other,
                        OPERATORS.iter().copied(),
                        "see docs/manifest.md for the operators",
                    ),
                ));
            }
        })
    }

    /// Refuses the steps a `transform` cannot hold, where they are written: the
    /// mapWithState family (whose snapshots are read by name outside the step), the
    /// event-time steps (which read the job's watermark and the event time the steps
    /// before them give, outside any one batch's data set), and a
    /// second step that remembers batches (a checkpoint keeps one state per step).
    fn transformable(&self, specs: &[StepSpec], steps: &[StepConfig]) -> Result<()> {
        let mut remembering: Option<&str> = None;
        for (spec, step) in specs.iter().zip(steps) {
            let op = spec.op.get_ref().as_str();
            if matches!(
                step,
                StepConfig::MapWithState { .. }
                    | StepConfig::StateSnapshots
                    | StepConfig::EventTime(..)
                    | StepConfig::AssignWindow(_)
                    | StepConfig::EventAggregate(..)
                    | StepConfig::EventJoin(..)
                    | StepConfig::Dedup(_)
            ) {
                return Err(self.error(
                    Some(spec.op.span()),
                    format!("`{op}` cannot be used inside `transform`"),
                    format!(
                        "make `{op}` a step of the stream itself, before or after the `transform`"
                    ),
                ));
            }
            if !step.remembers() {
                continue;
            }
            if let Some(first) = remembering {
                return Err(self.error(
                    Some(spec.op.span()),
                    format!(
                        "`{op}` is a second step inside one `transform` that remembers batches, after `{first}`"
                    ),
                    "a `transform` may hold one window or state step: put the other in a step of its own before or after the `transform`",
                ));
            }
            remembering = Some(op);
        }
        Ok(())
    }

    fn initial_state(&self, spec: &StepSpec) -> Result<Option<InitialState>> {
        spec.initial_state
            .as_ref()
            .map(|path| {
                let path = self.existing_file(path)?;
                let format = table_format(&path);
                Ok(InitialState { path, format })
            })
            .transpose()
    }

    /// A window's length and slide, which must be multiples of the batch interval, within
    /// [`bounds::WINDOW_BATCHES`] of them; the slide defaults to the interval.
    fn span(&self, spec: &StepSpec) -> Result<Span> {
        let window = self.required(&spec.window, &spec.op, "window", "a windowed step")?;
        let batches = |value: &Spanned<String>, name: &str| -> Result<u64> {
            let interval = self.interval.as_nanos();
            let duration = self.parse_duration(value, name)?.map(|d| d.as_nanos());
            if let Some(nanos) = duration
                && !nanos.is_multiple_of(interval)
            {
                let interval_ms = self.interval.as_millis();
                return Err(self.error(
                    Some(value.span()),
                    format!(
                        "`{name}` = \"{}\" is not a multiple of the batch interval ({interval_ms} ms)",
                        value.get_ref()
                    ),
                    format!(
                        "use a whole number of batch intervals, e.g. \"{}ms\"",
                        interval_ms * (nanos / interval).max(1)
                    ),
                ));
            }
            let batches = duration.and_then(|nanos| u64::try_from(nanos / interval).ok());
            match batches.filter(|batches| bounds::WINDOW_BATCHES.contains(*batches)) {
                Some(batches) => Ok(batches),
                None => {
                    let longest = self.interval * bounds::WINDOW_BATCHES.max as u32;
                    Err(self.out_of_range(
                        value,
                        name,
                        format!(
                            "{} batch intervals (with this interval, from {} to {})",
                            bounds::WINDOW_BATCHES,
                            self.interval.show(),
                            longest.show()
                        ),
                    ))
                }
            }
        };
        let window = batches(window, "window")?;
        let slide = spec
            .slide
            .as_ref()
            .map_or(Ok(1), |slide| batches(slide, "slide"))?;
        Ok(Span { window, slide })
    }

    fn sink(&self, index: usize, spec: &SinkSpec) -> Result<SinkConfig> {
        let from = self.reference(&spec.from)?;
        let name = spec.name.as_ref().map_or_else(
            || format!("sink-{}", index + 1),
            |name| name.get_ref().clone(),
        );
        let fields = [
            ("num", spec.num.as_ref().map(Spanned::span)),
            ("prefix", spec.prefix.as_ref().map(Spanned::span)),
            ("suffix", spec.suffix.as_ref().map(Spanned::span)),
            ("format", spec.format.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .chain(kafka::sink_fields(spec))
        .collect::<Vec<_>>();
        let kind = match spec.kind.get_ref().as_str() {
            "kafka" => {
                self.only(&fields, kafka::SINK_KEYS, "a kafka sink")?;
                SinkKind::Kafka(self.kafka_sink(spec)?)
            }
            "print" => {
                self.only(&fields, &["num"], "a print sink")?;
                SinkKind::Print {
                    num: spec.num.as_ref().map_or(Ok(10), |num| {
                        self.count(num, "num", &bounds::PRINT_NUM)
                            .map(|num| num as usize)
                    })?,
                }
            }
            "files" => {
                self.only(&fields, &["prefix", "suffix", "format"], "a files sink")?;
                let prefix = self.required(&spec.prefix, &spec.kind, "prefix", "a files sink")?;
                let format = self
                    .choice(
                        &spec.format,
                        "file format",
                        &[
                            ("text", FileFormat::Text),
                            ("json_lines", FileFormat::JsonLines),
                            ("json_typed", FileFormat::JsonTyped),
                        ],
                    )?
                    .unwrap_or(FileFormat::Text);
                SinkKind::Files {
                    prefix: self.base.join(prefix.get_ref()),
                    suffix: spec
                        .suffix
                        .as_ref()
                        .map_or_else(String::new, |suffix| suffix.get_ref().clone()),
                    format,
                }
            }
            "collect" => {
                self.only(&fields, &[], "a collect sink")?;
                SinkKind::Collect
            }
            other => {
                return Err(self.error(
                    Some(spec.kind.span()),
                    format!("unknown sink kind `{other}`"),
                    suggest::hint(
                        other,
                        SINK_KINDS.iter().copied(),
                        &format!("use one of: {}", SINK_KINDS.join(", ")),
                    ),
                ));
            }
        };
        Ok(SinkConfig { name, from, kind })
    }

    /// Resolves `alias#function` or `path/to/component.wasm#function`, loads the
    /// component and checks the function exists with the kind `op` needs.
    fn udf(&self, reference: &Spanned<String>, op: &str, kind: Kind) -> Result<UdfRef> {
        let span = reference.span();
        let label = reference.get_ref();
        let Some((component, function)) = label.rsplit_once('#') else {
            return Err(self.error(Some(span), format!("UDF reference `{label}` has no `#function`"), "write `component.wasm#function` or `alias#function` (aliases are declared under [udfs])"));
        };
        // A broken path is reported where it is written: at the alias, if there is one.
        let (path, path_span) = match (self.aliases.get(component), self.hosting) {
            (Some(aliased), Some(hosting)) => {
                let path = hosting.component(aliased.get_ref()).map_err(|message| {
                    self.error(Some(aliased.span()), message, "upload it first: `sluice submit` uploads the components a manifest names, or PUT /v1/components/NAME")
                })?;
                (path, aliased.span())
            }
            (None, Some(_)) => {
                let known: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
                return Err(self.error(
                    Some(span),
                    format!("`{component}` is not a declared UDF alias"),
                    format!(
                        "declare it under [udfs] as the name of an uploaded component (declared: {})",
                        list_or_none(&known)
                    ),
                ));
            }
            (Some(aliased), None) => (tidy(&self.base.join(aliased.get_ref())), aliased.span()),
            (None, None) if component.ends_with(".wasm") => {
                (tidy(&self.base.join(component)), span.clone())
            }
            (None, None) => {
                let known: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
                return Err(self.error(
                    Some(span),
                    format!("`{component}` is neither a declared UDF alias nor a .wasm path"),
                    suggest::hint(
                        component,
                        known.iter().copied(),
                        &format!(
                            "declare it under [udfs] (declared: {}), or give the component's path",
                            list_or_none(&known)
                        ),
                    ),
                ));
            }
        };
        let loaded = self.runtime.load(&path).map_err(|error| {
            // The error of a file that is there already says how to build a component.
            let hint = if path.exists() {
                "relative paths start at the manifest's directory"
            } else {
                "build the UDF crate with `sluice udf build CRATE`, or fix the path (relative paths start at the manifest's directory)"
            };
            self.error(Some(path_span), format!("{error:#}"), hint)
        })?;
        let Some((_, found)) = loaded.function_index(function) else {
            let exports: Vec<String> = loaded
                .functions()
                .iter()
                .map(|f| format!("{} ({})", f.name, f.kind))
                .collect();
            let exports: Vec<&str> = exports.iter().map(String::as_str).collect();
            return Err(self.error(
                Some(span),
                format!("{} has no function `{function}`", path.display()),
                suggest::hint(
                    function,
                    loaded.functions().iter().map(|f| f.name.as_str()),
                    &format!("it exports: {}", list_or_none(&exports)),
                ),
            ));
        };
        if found != kind {
            return Err(self.error(Some(span), format!("`{op}` needs a {kind} function, but `{function}` is a {found} function"), format!("use a {kind} function here, or use `{function}` with an operator that takes {found} functions")));
        }
        Ok(UdfRef {
            component: path,
            function: function.to_owned(),
            kind,
            label: label.clone(),
        })
    }

    /// A new stream name: not empty, not taken.
    fn define(&mut self, name: &Spanned<String>) -> Result<String> {
        let text = name.get_ref().trim();
        if text.is_empty() {
            return Err(self.error(
                Some(name.span()),
                "the name is empty",
                "give every source and stream a name",
            ));
        }
        if !self.defined.insert(text.to_owned()) {
            return Err(self.error(
                Some(name.span()),
                format!("the name `{text}` is used twice"),
                "give every source and stream its own name",
            ));
        }
        Ok(text.to_owned())
    }

    /// A stream name defined above.
    fn reference(&self, name: &Spanned<String>) -> Result<String> {
        let text = name.get_ref().trim();
        if self.defined.contains(text) {
            return Ok(text.to_owned());
        }
        let mut known: Vec<&str> = self.defined.iter().map(String::as_str).collect();
        known.sort_unstable();
        Err(self.error(
            Some(name.span()),
            format!("no source or stream is named `{text}` above this point"),
            format!(
                "known so far: {}; define a stream before the streams and sinks that read it",
                list_or_none(&known)
            ),
        ))
    }

    /// Fails on the first field that is present but does not apply to `what`.
    fn only(
        &self,
        fields: &[(&str, Option<Range<usize>>)],
        allowed: &[&str],
        what: &str,
    ) -> Result<()> {
        match fields
            .iter()
            .find(|(name, span)| span.is_some() && !allowed.contains(name))
        {
            Some((name, span)) => Err(self.error(
                span.clone(),
                format!("`{name}` does not apply to {what}"),
                if allowed.is_empty() {
                    format!("{what} takes no parameters; remove `{name}`")
                } else {
                    format!("{what} takes: {}", allowed.join(", "))
                },
            )),
            None => Ok(()),
        }
    }

    fn required<'s, T>(
        &self,
        field: &'s Option<Spanned<T>>,
        owner: &Spanned<String>,
        name: &str,
        what: &str,
    ) -> Result<&'s Spanned<T>> {
        field.as_ref().ok_or_else(|| {
            self.error(
                Some(owner.span()),
                format!("{what} needs `{name}`"),
                format!("add `{name} = ...`; {DOCS}"),
            )
        })
    }

    /// The count `value` holds, if `bounds` contains it.
    fn count(&self, value: &Spanned<i64>, key: &str, bounds: &Bounds<u64>) -> Result<u64> {
        self.bounded(value, key, u64::try_from(*value.get_ref()).ok(), bounds)
    }

    /// `parsed`, the value `value` holds (`None`: too large to hold at all), if `bounds`
    /// contains it; else an error naming the key, the value and the range.
    fn bounded<T: Quantity, W: std::fmt::Debug>(
        &self,
        value: &Spanned<W>,
        key: &str,
        parsed: Option<T>,
        bounds: &Bounds<T>,
    ) -> Result<T> {
        parsed
            .filter(|parsed| bounds.contains(*parsed))
            .ok_or_else(|| self.out_of_range(value, key, bounds.to_string()))
    }

    fn out_of_range<W: std::fmt::Debug>(
        &self,
        value: &Spanned<W>,
        key: &str,
        range: String,
    ) -> ManifestError {
        self.error(
            Some(value.span()),
            format!(
                "`{key}` = {:?} is out of range: it must be {range}",
                value.get_ref()
            ),
            format!("give `{key}` a value {range} (docs/manifest.md lists every key's range)"),
        )
    }

    /// The value the name in `field` stands for among `choices`, if the field is given;
    /// an unknown name is an error that lists the choices.
    fn choice<T: Copy>(
        &self,
        field: &Option<Spanned<String>>,
        what: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>> {
        let Some(field) = field else {
            return Ok(None);
        };
        let name = field.get_ref();
        match choices.iter().find(|(choice, _)| choice == name) {
            Some((_, value)) => Ok(Some(*value)),
            None => {
                let names: Vec<String> = choices
                    .iter()
                    .map(|(choice, _)| format!("`{choice}`"))
                    .collect();
                Err(self.error(
                    Some(field.span()),
                    format!("unknown {what} `{name}`"),
                    suggest::hint(
                        name,
                        choices.iter().map(|(choice, _)| *choice),
                        &format!("use one of: {}", names.join(", ")),
                    ),
                ))
            }
        }
    }

    /// The file `path` names (relative to the manifest), which must exist.
    fn existing_file(&self, path: &Spanned<String>) -> Result<PathBuf> {
        let file = self.base.join(path.get_ref());
        if !file.is_file() {
            return Err(self.error(
                Some(path.span()),
                format!("file {} does not exist", file.display()),
                "fix the path (relative paths start at the manifest's directory)",
            ));
        }
        Ok(file)
    }

    /// The duration `value` holds, if `bounds` contains it.
    fn duration(
        &self,
        value: &Spanned<String>,
        key: &str,
        bounds: &Bounds<Duration>,
    ) -> Result<Duration> {
        let parsed = self.parse_duration(value, key)?;
        self.bounded(value, key, parsed, bounds)
    }

    /// The duration `value` holds; `None` if it is too long (or too precise) for any
    /// duration, which no range contains.
    fn parse_duration(&self, value: &Spanned<String>, key: &str) -> Result<Option<Duration>> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(duration) => Ok(Some(duration)),
            Err(humantime::DurationError::NumberOverflow) => Ok(None),
            Err(error) => Err(self.error(
                Some(value.span()),
                format!(
                    "`{key}` = \"{}\" is not a duration: {error}",
                    value.get_ref()
                ),
                "write a duration such as \"500ms\", \"2s\" or \"1m\"",
            )),
        }
    }

    /// The size `value` holds, in bytes, if `bounds` contains it.
    fn size(&self, value: &Spanned<String>, key: &str, bounds: &Bounds<Bytes>) -> Result<usize> {
        let parsed = value
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map_err(|error| {
                self.error(
                    Some(value.span()),
                    format!("`{key}` = \"{}\" is not a size: {error}", value.get_ref()),
                    "write a size such as \"64MiB\" or \"512KiB\"",
                )
            })?;
        let Bytes(bytes) = self.bounded(value, key, Some(Bytes(parsed.as_u64())), bounds)?;
        Ok(bytes as usize)
    }

    fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            position: span.map(|span| line_and_column(self.text, span.start)),
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The step a two-stream operator name stands for.
/// A table's format by its file name: CSV for `.csv`, JSON lines otherwise.
fn table_format(file: &Path) -> TableFormat {
    if file.extension().is_some_and(|ext| ext == "csv") {
        TableFormat::Csv
    } else {
        TableFormat::JsonLines
    }
}

fn binary(op: &str, other: String) -> Option<StepConfig> {
    Some(match op {
        "cogroup" => StepConfig::Cogroup(other),
        "join" => StepConfig::Join(JoinKind::Inner, other),
        "left_outer_join" => StepConfig::Join(JoinKind::LeftOuter, other),
        "right_outer_join" => StepConfig::Join(JoinKind::RightOuter, other),
        "full_outer_join" => StepConfig::Join(JoinKind::FullOuter, other),
        "subtract" => StepConfig::Subtract(other),
        "subtract_by_key" => StepConfig::SubtractByKey(other),
        "intersection" => StepConfig::Intersection(other),
        _ => return None,
    })
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

/// `path` without `.` components, as errors show it (`../udfs/x.wasm`, not
/// `./../udfs/x.wasm`).
fn tidy(path: &Path) -> PathBuf {
    let tidied: PathBuf = path
        .components()
        .filter(|part| *part != std::path::Component::CurDir)
        .collect();
    if tidied.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        tidied
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, LazyLock};

    use super::*;
    use crate::runtime::RuntimeConfig;

    static RUNTIME: LazyLock<Arc<Runtime>> = LazyLock::new(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            max_instances: 4,
            ..RuntimeConfig::default()
        })
        .unwrap()
    });

    /// A job of one queue source and one print sink, `top` added at the top level and
    /// `steps` as the steps of one stream.
    pub(super) fn job(top: &str, steps: &str) -> String {
        format!(
            "name = \"t\"\n{top}\n[[sources]]\nname = \"s\"\nkind = \"queue\"\nbatches = [[1]]\n\
             [[streams]]\nname = \"w\"\nfrom = \"s\"\nsteps = [{steps}]\n\
             [[sinks]]\nfrom = \"w\"\nkind = \"print\"\n"
        )
    }

    pub(super) fn check(text: &str) -> Result<JobConfig> {
        Resolver::new(text, Path::new("job.toml"), &RUNTIME).resolve()
    }

    pub(super) fn refused(text: &str) -> String {
        match check(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_interval_is_bounded_and_whole_milliseconds() {
        for ok in ["10ms", "24h", "1day"] {
            let config = check(&job(&format!("batch_interval = \"{ok}\""), "")).unwrap();
            assert!(bounds::BATCH_INTERVAL.contains(config.batch_interval));
        }
        for (value, expected) in [
            ("9ms", "from 10ms to 24h"),
            ("24h 1ms", "from 10ms to 24h"),
            ("584942417 years", "from 10ms to 24h"),
            ("9223372036854775808ms", "from 10ms to 24h"),
            ("18446744073709551616ms", "from 10ms to 24h"),
            ("10500us", "not a whole number of milliseconds"),
        ] {
            let error = refused(&job(&format!("batch_interval = \"{value}\""), ""));
            assert!(error.contains(expected), "{value}: {error}");
            assert!(error.contains("job.toml:2:18"), "{value}: {error}");
        }
    }

    #[test]
    fn counts_are_bounded_on_both_sides() {
        let interval = "batch_interval = \"1s\"";
        for (line, ok) in [("partitions = 1", true), ("partitions = 1024", true)] {
            assert_eq!(check(&job(&format!("{interval}\n{line}"), "")).is_ok(), ok);
        }
        for value in [0, -1, 1025, i64::MAX, i64::MIN] {
            let error = refused(&job(&format!("{interval}\npartitions = {value}"), ""));
            assert!(
                error.contains(&format!(
                    "`partitions` = {value} is out of range: it must be from 1 to 1024"
                )),
                "{error}"
            );
            assert!(error.contains("job.toml:3:14"), "{error}");
        }
        let repartition = |n: i64| {
            job(
                interval,
                &format!("{{ op = \"repartition\", partitions = {n} }}"),
            )
        };
        assert!(check(&repartition(1024)).is_ok());
        assert!(refused(&repartition(1_000_000_000)).contains("from 1 to 1024"));
    }

    #[test]
    fn sizes_are_bounded_and_zero_is_refused() {
        let limits = |key: &str, value: &str| {
            job(
                &format!("batch_interval = \"1s\"\n[limits]\n{key} = \"{value}\""),
                "",
            )
        };
        let config = check(&limits("memory", "4GiB")).unwrap();
        assert_eq!(config.limits.memory_bytes, 4 << 30);
        assert_eq!(
            check(&limits("memory", "1MiB"))
                .unwrap()
                .limits
                .memory_bytes,
            1 << 20
        );
        for value in ["0B", "1023KiB", "4097MiB", "99999999999999999999GiB"] {
            let error = refused(&limits("memory", value));
            assert!(
                error.contains("`limits.memory`") && error.contains("from 1MiB to 4GiB"),
                "{error}"
            );
        }
        assert!(check(&limits("output", "64MiB")).is_ok());
        assert!(refused(&limits("output", "65MiB")).contains("from 1KiB to 64MiB"));
        assert!(refused(&limits("call_timeout", "1h 1ms")).contains("from 10ms to 1h"));
        assert!(refused(&limits("memory", "lots")).contains("is not a size"));
    }

    #[test]
    fn windows_span_at_most_ten_thousand_batches() {
        let window = |interval: &str, length: &str, slide: &str| {
            job(
                &format!("batch_interval = \"{interval}\""),
                &format!("{{ op = \"window\", window = \"{length}\", slide = \"{slide}\" }}"),
            )
        };
        assert!(check(&window("10ms", "100s", "100s")).is_ok());
        assert!(check(&window("24h", "10000d", "24h")).is_ok());
        let error = refused(&window("10ms", "100s 10ms", "10ms"));
        assert!(
            error.contains("`window` = \"100s 10ms\" is out of range: it must be from 1 to 10_000 batch intervals (with this interval, from 10ms to 100s)"),
            "{error}"
        );
        assert!(
            refused(&window("1s", "584942417 years", "1s"))
                .contains("from 1 to 10_000 batch intervals")
        );
        assert!(refused(&window("1s", "99999999999999999999s", "1s")).contains("out of range"));
        assert!(refused(&window("1s", "10s", "10001s")).contains("`slide`"));
        assert!(
            refused(&window("1s", "1500ms", "1s")).contains("not a multiple of the batch interval")
        );
        assert!(
            refused(&window("10ms", "10ms 1ns", "10ms"))
                .contains("not a multiple of the batch interval")
        );
    }

    #[test]
    fn state_timeouts_and_print_counts_are_bounded() {
        let timeout = |value: &str| {
            job(
                "batch_interval = \"1s\"\n[checkpoint]\ndir = \"c\"",
                &format!(
                    "{{ op = \"map_with_state\", udf = \"x.wasm#f\", timeout = \"{value}\" }}"
                ),
            )
        };
        // The range is checked before the component is looked for (there is none).
        assert!(
            refused(&timeout("367d"))
                .contains("`timeout` = \"367d\" is out of range: it must be from 10ms to 366d")
        );
        let print = |num: i64| {
            job("batch_interval = \"1s\"", "").replace(
                "kind = \"print\"",
                &format!("kind = \"print\"\nnum = {num}"),
            )
        };
        assert!(check(&print(1_000_000)).is_ok());
        assert!(refused(&print(1_000_001)).contains("from 1 to 1_000_000"));
    }

    #[test]
    fn new_counts_have_defaults_and_ranges() {
        let interval = "batch_interval = \"1s\"";
        assert_eq!(check(&job(interval, "")).unwrap().max_queued_batches, 100);
        let queued = |n: i64| job(&format!("{interval}\nmax_queued_batches = {n}"), "");
        assert_eq!(check(&queued(10_000)).unwrap().max_queued_batches, 10_000);
        let error = refused(&queued(0));
        assert!(
            error.contains("`max_queued_batches` = 0 is out of range: it must be from 1 to 10_000"),
            "{error}"
        );
        assert!(error.contains("job.toml:3:22"), "{error}");
        let every = |n: i64| {
            job(
                "batch_interval = \"1s\"\n[checkpoint]\ndir = \"c\"",
                &format!(
                    "{{ op = \"map_with_state\", udf = \"x.wasm#f\", timeout_check_every = {n} }}"
                ),
            )
        };
        for n in [0, 10_001] {
            let error = refused(&every(n));
            assert!(
                error.contains(&format!(
                    "`timeout_check_every` = {n} is out of range: it must be from 1 to 10_000"
                )),
                "{error}"
            );
        }
    }

    #[test]
    fn transform_refuses_what_it_cannot_hold_where_it_is_written() {
        let interval = "batch_interval = \"1s\"\n[checkpoint]\ndir = \"c\"";
        let error = refused(&job(
            interval,
            "{ op = \"transform\", steps = [{ op = \"distinct\" }, { op = \"state_snapshots\" }] }",
        ));
        assert!(
            error.contains("`state_snapshots` cannot be used inside `transform`"),
            "{error}"
        );
        assert!(error.contains("job.toml:12:67"), "{error}");
        let error = refused(&job(
            interval,
            "{ op = \"transform\", steps = [{ op = \"window\", window = \"2s\" }, { op = \"count_by_window\", window = \"2s\" }] }",
        ));
        assert!(
            error.contains(
                "second step inside one `transform` that remembers batches, after `window`"
            ),
            "{error}"
        );
        let config = check(&job(
            interval,
            "{ op = \"transform\", steps = [{ op = \"subtract\", other = \"s\" }, { op = \"union\", with = [\"s\", \"s\"] }, { op = \"distinct\" }] }",
        ))
        .unwrap();
        assert_eq!(config.streams[0].steps[0].other_streams(), ["s", "s", "s"]);
    }

    #[test]
    fn a_queue_takes_batches_or_a_batches_file() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("job.toml");
        std::fs::write(
            dir.path().join("b.jsonl"),
            "[null, {\"$tuple\": [1, 2]}]\n[]\n",
        )
        .unwrap();
        let text = job("batch_interval = \"1s\"", "")
            .replace("batches = [[1]]", "batches_file = \"b.jsonl\"");
        let config = Resolver::new(&text, &manifest, &RUNTIME).resolve().unwrap();
        let SourceKind::Queue { batches } = &config.sources[0].kind else {
            panic!("a queue");
        };
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0][0], sluice_abi::Value::Null);
        std::fs::write(dir.path().join("b.jsonl"), "[1]\n{\"$tuple\": [1]}\n").unwrap();
        let error = Resolver::new(&text, &manifest, &RUNTIME)
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2")
                && error.contains("not a batch")
                && error.contains("job.toml:6:16"),
            "{error}"
        );
        let both = text.replace("batches_file", "batches = [[1]]\nbatches_file");
        assert!(refused(&both).contains("both `batches` and `batches_file`"));
        let neither = text.replace("batches_file = \"b.jsonl\"", "");
        assert!(refused(&neither).contains("needs `batches` or `batches_file`"));
    }
}
