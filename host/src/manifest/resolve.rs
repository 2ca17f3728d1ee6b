//! From the manifest as written to a checked [`JobConfig`].

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_abi::Kind;
use toml::Spanned;

use super::ManifestError;
use super::config::*;
use super::spec::*;
use crate::runtime::{Limits, Runtime};

const DOCS: &str = "see docs/manifest.md for every key and a full example";

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
    /// Streams whose last step is a mapWithState (what `state_snapshots` may follow).
    mapped_with_state: HashSet<String>,
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
            mapped_with_state: HashSet::new(),
        }
    }

    pub fn resolve(mut self) -> Result<JobConfig> {
        let spec: JobSpec = toml::from_str(self.text).map_err(|error| {
            self.error(error.span(), error.message().trim_end().to_owned(), DOCS)
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
        let batch_interval = self.duration(&spec.batch_interval, "batch_interval")?;
        self.interval = batch_interval;
        if batch_interval < Duration::from_millis(10) {
            return Err(self.error(
                Some(spec.batch_interval.span()),
                "the batch interval is shorter than 10 ms",
                "use an interval of 10 ms or more",
            ));
        }
        let partitions = match &spec.partitions {
            Some(partitions) => self.positive(partitions, "partitions")?,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let limits = self.limits(&spec.limits)?;
        let checkpoint = spec
            .checkpoint
            .as_ref()
            .map(|checkpoint| self.checkpoint(checkpoint))
            .transpose()?;
        self.checkpointed = checkpoint.is_some();
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
            manifest: self.text.to_owned(),
            batch_interval,
            partitions,
            limits,
            checkpoint,
            sources,
            streams,
            sinks,
        })
    }

    fn checkpoint(&self, spec: &CheckpointSpec) -> Result<CheckpointConfig> {
        if spec.dir.get_ref().trim().is_empty() {
            return Err(self.error(
                Some(spec.dir.span()),
                "the checkpoint directory is empty",
                "name a directory, e.g. `dir = \"checkpoints/wordcount\"`",
            ));
        }
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
            dir: self.base.join(spec.dir.get_ref()),
            every: spec
                .every
                .as_ref()
                .map_or(Ok(10), |every| self.positive(every, "checkpoint.every"))?
                as u64,
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
                    self.size(memory, "limits.memory")
                })?,
            call_timeout: spec
                .call_timeout
                .as_ref()
                .map_or(Ok(defaults.call_timeout), |timeout| {
                    self.duration(timeout, "limits.call_timeout")
                })?,
            output_bytes: spec
                .output
                .as_ref()
                .map_or(Ok(defaults.output_bytes), |output| {
                    self.size(output, "limits.output")
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
            ("format", spec.format.as_ref().map(Spanned::span)),
        ];
        let kind = match spec.kind.get_ref().as_str() {
            "socket" => {
                self.only(&fields, &["host", "port"], "a socket source")?;
                let port = self.required(&spec.port, &spec.kind, "port", "a socket source")?;
                let port = u16::try_from(*port.get_ref())
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| {
                        self.error(
                            Some(port.span()),
                            format!("port {} is not a TCP port", port.get_ref()),
                            "use a port from 1 to 65535",
                        )
                    })?;
                let host = spec
                    .host
                    .as_ref()
                    .map_or("127.0.0.1".to_owned(), |host| host.get_ref().clone());
                SourceKind::Socket { host, port }
            }
            "directory" => {
                self.only(&fields, &["path"], "a directory source")?;
                let path = self.required(&spec.path, &spec.kind, "path", "a directory source")?;
                let directory = self.base.join(path.get_ref());
                if !directory.is_dir() {
                    return Err(self.error(Some(path.span()), format!("directory {} does not exist", directory.display()), "create it first, or fix the path (relative paths start at the manifest's directory)"));
                }
                SourceKind::Directory { path: directory }
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
                    .map(|lines| self.positive(lines, "lines_per_batch"))
                    .transpose()?;
                SourceKind::File {
                    path: file,
                    lines_per_batch,
                }
            }
            "generator" => {
                self.only(&fields, &["rate", "limit"], "a generator source")?;
                let rate = self.required(&spec.rate, &spec.kind, "rate", "a generator source")?;
                let rate = self.positive(rate, "rate")? as u64;
                let limit = spec
                    .limit
                    .as_ref()
                    .map(|limit| self.positive(limit, "limit").map(|l| l as u64))
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
                self.only(&fields, &["batches"], "a queue source")?;
                let batches =
                    self.required(&spec.batches, &spec.kind, "batches", "a queue source")?;
                SourceKind::Queue {
                    batches: batches.get_ref().clone(),
                }
            }
            other => {
                return Err(self.error(
                    Some(spec.kind.span()),
                    format!("unknown source kind `{other}`"),
                    "use one of: socket, directory, file, generator, stdin, queue, table",
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
        let name = self.define(&spec.name)?;
        if let Some(StepConfig::MapWithState { .. }) = steps.last() {
            self.mapped_with_state.insert(name.clone());
        }
        Ok(StreamConfig { name, from, steps })
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
            "glom" | "count" | "count_by_value" | "group_by_key" => {
                takes(&[])?;
                match op {
                    "glom" => StepConfig::Glom,
                    "count" => StepConfig::Count,
                    "count_by_value" => StepConfig::CountByValue,
                    _ => StepConfig::GroupByKey,
                }
            }
            "repartition" => {
                takes(&["partitions"])?;
                let partitions = self.required(&spec.partitions, &spec.op, "partitions", &what)?;
                StepConfig::Repartition(self.positive(partitions, "partitions")?)
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
                StepConfig::Transform(
                    steps
                        .get_ref()
                        .iter()
                        .map(|step| self.step(step))
                        .collect::<Result<_>>()?,
                )
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
            "cogroup" | "join" | "left_outer_join" | "right_outer_join" | "full_outer_join" => {
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
                            "use one of: union, join, left_outer_join, right_outer_join, full_outer_join, cogroup",
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
                takes(&["udf", "timeout", "initial_state"])?;
                StepConfig::MapWithState {
                    udf: function(&spec.udf, "udf", Kind::MapWithState)?,
                    timeout: spec
                        .timeout
                        .as_ref()
                        .map(|timeout| self.duration(timeout, "timeout"))
                        .transpose()?,
                    initial_state: self.initial_state(spec)?,
                }
            }
            "state_snapshots" => {
                takes(&[])?;
                StepConfig::StateSnapshots
            }
            other => {
                return Err(self.error(
                    Some(spec.op.span()),
                    format!("unknown operator `{other}`"),
                    "see docs/manifest.md for the operators",
                ));
            }
        })
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

    /// A window's length and slide, which must be multiples of the batch interval; the
    /// slide defaults to the interval.
    fn span(&self, spec: &StepSpec) -> Result<Span> {
        let window = self.required(&spec.window, &spec.op, "window", "a windowed step")?;
        let batches = |value: &Spanned<String>, name: &str| -> Result<u64> {
            let duration = self.duration(value, name)?;
            let interval = self.interval.as_millis();
            let millis = duration.as_millis();
            if millis == 0 || !millis.is_multiple_of(interval) {
                return Err(self.error(
                    Some(value.span()),
                    format!(
                        "`{name}` = \"{}\" is not a multiple of the batch interval ({interval} ms)",
                        value.get_ref()
                    ),
                    format!(
                        "use a whole number of batch intervals, e.g. \"{}ms\"",
                        interval * (millis / interval).max(1)
                    ),
                ));
            }
            Ok((millis / interval) as u64)
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
        ];
        let kind = match spec.kind.get_ref().as_str() {
            "print" => {
                self.only(&fields, &["num"], "a print sink")?;
                SinkKind::Print {
                    num: spec
                        .num
                        .as_ref()
                        .map_or(Ok(10), |num| self.positive(num, "num"))?,
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
                    "use one of: print, files, collect",
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
        let (path, path_span) = match self.aliases.get(component) {
            Some(aliased) => (self.base.join(aliased.get_ref()), aliased.span()),
            None if component.ends_with(".wasm") => (self.base.join(component), span.clone()),
            None => {
                let known: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
                return Err(self.error(
                    Some(span),
                    format!("`{component}` is neither a declared UDF alias nor a .wasm path"),
                    format!(
                        "declare it under [udfs] (declared: {}), or give the component's path",
                        list_or_none(&known)
                    ),
                ));
            }
        };
        let loaded = self.runtime.load(&path).map_err(|error| self.error(Some(path_span), format!("{error:#}"), "build the UDF crate with `sluice udf build CRATE`, or fix the path (relative paths start at the manifest's directory)"))?;
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
                format!("it exports: {}", list_or_none(&exports)),
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

    fn positive(&self, value: &Spanned<i64>, name: &str) -> Result<usize> {
        usize::try_from(*value.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                self.error(
                    Some(value.span()),
                    format!(
                        "`{name}` must be a positive whole number, not {}",
                        value.get_ref()
                    ),
                    format!("set `{name}` to 1 or more"),
                )
            })
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
                    format!("use one of: {}", names.join(", ")),
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

    fn duration(&self, value: &Spanned<String>, name: &str) -> Result<Duration> {
        humantime::parse_duration(value.get_ref()).map_err(|error| {
            self.error(
                Some(value.span()),
                format!(
                    "`{name}` = \"{}\" is not a duration: {error}",
                    value.get_ref()
                ),
                "write a duration such as \"500ms\", \"2s\" or \"1m\"",
            )
        })
    }

    fn size(&self, value: &Spanned<String>, name: &str) -> Result<usize> {
        value
            .get_ref()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64() as usize)
            .map_err(|error| {
                self.error(
                    Some(value.span()),
                    format!("`{name}` = \"{}\" is not a size: {error}", value.get_ref()),
                    "write a size such as \"64MiB\" or \"512KiB\"",
                )
            })
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

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
