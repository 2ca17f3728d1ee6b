//! A job's operator graph: sources, the steps of every stream, and the streams the sinks
//! read, computed once per batch in dependency order.
//!
//! As in Spark, every node has a slide: 1 batch for sources, its window's slide for a
//! windowed step, its inputs' slide otherwise (inputs must agree). A node is computed only
//! at batch numbers that are multiples of its inputs' slide, its output exists only at
//! multiples of its own, and a sink writes only when its stream has output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sluice_abi::NamedFunction;

use crate::beneath::JobFiles;
use crate::dataset::Dataset;
use crate::event_time::{self, EventClock};
use crate::manifest::{InitialState, JobConfig, StepConfig, UdfRef};
use crate::metrics::StepMeter;
use crate::operators::builtin::{self, KeyBy, PairWith, Values};
use crate::operators::{self, BatchContext, Operator};
use crate::progress::BatchProgress;
use crate::runtime::{InstancePool, Runtime};
use crate::state::{self, StateStore};
use crate::tenancy::Placement;
use crate::udf::{BoundUdf, CombiningChain, UdfChain};
use crate::window::{self, Span};

struct Node {
    /// `stream/step number` for a step (`None` for a source): how checkpoints name it.
    id: Option<String>,
    /// `stream `name` step N (op ...)`, for errors.
    describe: String,
    /// The UDFs of the step as `(manifest label, component SHA-256)`.
    udfs: Vec<(String, String)>,
    inputs: Vec<usize>,
    /// `None` for a source, whose data the batch brings.
    operator: Option<Box<dyn Operator>>,
    /// The node's output exists at batch numbers that are multiples of this.
    slide: u64,
    /// What the step (and its UDFs) did so far.
    meter: Arc<StepMeter>,
}

impl Node {
    /// How the status line names the node: `` `counts` step 2, wc#slow ``.
    fn progress_name(&self) -> String {
        let step = self.id.as_deref().map_or_else(
            || self.describe.clone(),
            |id| match id.rsplit_once('/') {
                Some((stream, step)) => format!("`{stream}` step {step}"),
                None => id.to_owned(),
            },
        );
        let labels: Vec<&str> = self.udfs.iter().map(|(label, _)| label.as_str()).collect();
        if labels.is_empty() {
            step
        } else {
            format!("{step}, {}", labels.join(", "))
        }
    }
}

/// The operators of one job, wired together.
pub struct JobGraph {
    nodes: Vec<Node>,
    /// The node each sink reads, in sink order.
    sink_inputs: Vec<usize>,
    /// How many times each node's output is read (by nodes and sinks).
    readers: Vec<usize>,
    /// Whether each node is computed: it has readers, or its late rows have.
    needed: Vec<bool>,
    /// The job's event-time watermark, shared by its event-time steps.
    clock: Arc<EventClock>,
    /// What the batch in flight is doing; its steps are the nodes, by index.
    progress: Arc<BatchProgress>,
}

impl JobGraph {
    /// Builds the operators of `config`, with a pool of UDF instances per UDF step; or,
    /// given `natives`, with each UDF reference bound to the native function of the same
    /// name instead (to measure the WASM boundary against the same code in-process).
    /// The UDFs run where `placement` says (the job's tenant, its quotas and forced stop).
    pub fn build(
        config: &JobConfig,
        runtime: &Runtime,
        placement: &Placement,
        natives: Option<&[NamedFunction]>,
    ) -> Result<Self> {
        let mut builder = Builder {
            config,
            runtime,
            placement,
            natives,
            nodes: Vec::new(),
            streams: HashMap::new(),
            stores: HashMap::new(),
            clock: Arc::new(EventClock::new(config.event_time)),
            times: HashMap::new(),
            late_nodes: Vec::new(),
            late_streams: HashMap::new(),
            meter: Default::default(),
        };
        for source in &config.sources {
            let id = builder.push(format!("source `{}`", source.name), vec![], None)?;
            builder.streams.insert(source.name.clone(), id);
        }
        for stream in &config.streams {
            let mut current = builder.streams[&stream.from];
            let mut index = 0;
            while index < stream.steps.len() {
                let owner = format!(
                    "job `{}`, stream `{}` step {}",
                    config.name,
                    stream.name,
                    index + 1
                );
                let fused = if config.fuse {
                    fusable_run(&stream.steps[index..])
                } else {
                    Vec::new()
                };
                let reduction = builder.reduction_after(&stream.steps[index..], &fused)?;
                let mut store = None;
                let mut read_times = None;
                let late = stream
                    .late_rows
                    .iter()
                    .find(|(step, _)| *step == index)
                    .map(|(_, name)| (name, builder.late_rows_of(name)));
                let (operator, taken): (Box<dyn Operator>, usize) = match &stream.steps[index] {
                    _ if let Some(reduction) = reduction => (
                        builder.combined(&fused, reduction, &owner)?,
                        fused.len() + 1,
                    ),
                    _ if fused.len() > 1 => (builder.fused(&fused, &owner)?, fused.len()),
                    StepConfig::StateSnapshots => {
                        let store = builder.stores.get(&current).with_context(|| {
                            format!("{owner}: `state_snapshots` does not follow `map_with_state`")
                        })?;
                        let store = store.clone();
                        (Box::new(state::StateSnapshots { store }), 1)
                    }
                    StepConfig::MapWithState {
                        udf,
                        timeout,
                        timeout_check_every,
                        initial_state,
                    } => {
                        let operator = state::MapWithState {
                            udf: builder.bind(udf, &owner)?,
                            timeout: *timeout,
                            timeout_check_every: *timeout_check_every,
                            store: Arc::new(store_for(
                                state::MapWithState::KIND,
                                initial_state,
                                builder.config,
                            )?),
                        };
                        store = Some(operator.store.clone());
                        (Box::new(operator), 1)
                    }
                    StepConfig::EventTime(spec, udf) => {
                        let times = event_time::EventTimes {
                            spec: spec.clone(),
                            udf: udf
                                .as_ref()
                                .map(|udf| builder.bind(udf, &owner))
                                .transpose()?,
                        };
                        read_times = Some(times.clone());
                        let operator = event_time::EventTimeStep {
                            input: spec
                                .delay_ms
                                .map(|delay| builder.clock.register_input(delay)),
                            times,
                            clock: builder.clock.clone(),
                        };
                        (Box::new(operator), 1)
                    }
                    step @ (StepConfig::AssignWindow(_)
                    | StepConfig::EventAggregate(..)
                    | StepConfig::EventJoin(..)
                    | StepConfig::Dedup(_)) => (
                        builder.event_time(
                            step,
                            current,
                            format!("{}/{}", stream.name, index + 1),
                            late.as_ref().map(|(_, rows)| rows.clone()),
                        )?,
                        1,
                    ),
                    step => (builder.operator(step, &owner)?, 1),
                };
                // The stream's batch, then the other streams' of the same time (those of
                // the steps inside a `transform` included).
                let inputs = std::iter::once(current)
                    .chain(
                        stream.steps[index]
                            .other_streams()
                            .into_iter()
                            .map(|name| builder.streams[name]),
                    )
                    .collect();
                current = builder.push(
                    format!(
                        "{owner} ({}) at {}:{}",
                        operator.describe(),
                        config.file.display(),
                        stream.lines[index]
                    ),
                    inputs,
                    Some(operator),
                )?;
                let time = read_times.or_else(|| {
                    builder.nodes[current]
                        .inputs
                        .iter()
                        .find_map(|input| builder.times.get(input).cloned())
                });
                if let Some(time) = time {
                    builder.times.insert(current, time);
                }
                let node = &mut builder.nodes[current];
                node.id = Some(format!("{}/{}", stream.name, index + 1));
                node.udfs = stream.steps[index..index + taken]
                    .iter()
                    .flat_map(StepConfig::udfs)
                    .map(|udf| {
                        Ok((
                            udf.label.clone(),
                            runtime.load(&udf.component)?.digest().to_owned(),
                        ))
                    })
                    .collect::<Result<_>>()?;
                if let Some(store) = store {
                    builder.stores.insert(current, store);
                }
                if let Some((name, rows)) = late {
                    builder.late_stream(name, rows, current, &stream.name, index)?;
                }
                index += taken;
            }
            builder.streams.insert(stream.name.clone(), current);
        }
        let sink_inputs: Vec<usize> = config
            .sinks
            .iter()
            .map(|sink| builder.streams[&sink.from])
            .collect();
        let mut readers = vec![0; builder.nodes.len()];
        builder
            .nodes
            .iter()
            .flat_map(|node| &node.inputs)
            .chain(&sink_inputs)
            .for_each(|&input| readers[input] += 1);
        let mut needed: Vec<bool> = readers.iter().map(|&count| count > 0).collect();
        for &(late, step) in &builder.late_nodes {
            needed[step] |= needed[late];
        }
        let progress = Arc::new(BatchProgress::new(
            builder.nodes.iter().map(Node::progress_name).collect(),
        ));
        Ok(Self {
            nodes: builder.nodes,
            sink_inputs,
            readers,
            needed,
            clock: builder.clock,
            progress,
        })
    }

    /// Computes one batch from the sources' data sets (in source order) and returns what
    /// each sink gets (in sink order; `None` where its stream has no output this batch).
    /// Each node is computed once, and only if something reads it; a data set read once
    /// is moved rather than copied.
    pub fn compute(
        &self,
        sources: Vec<Dataset>,
        batch: &BatchContext,
    ) -> Result<Vec<Option<Dataset>>> {
        self.compute_watched(sources, batch, |_| Ok(()))
    }

    /// [`JobGraph::compute`], showing `watch` the steps' outputs held after each step
    /// (what the batch holds in flight); an error of `watch` stops the batch.
    pub fn compute_watched(
        &self,
        sources: Vec<Dataset>,
        batch: &BatchContext,
        mut watch: impl FnMut(&[Option<Dataset>]) -> Result<()>,
    ) -> Result<Vec<Option<Dataset>>> {
        let mut outputs: Vec<Option<Dataset>> = Vec::with_capacity(self.nodes.len());
        let mut unread = self.readers.clone();
        self.clock
            .begin(sources.iter().any(|source| !source.is_empty()));
        let mut sources = sources.into_iter();
        for (id, node) in self.nodes.iter().enumerate() {
            let output = match &node.operator {
                None => Some(sources.next().context("the batch lacks a source's data")?),
                Some(operator) => {
                    let inputs: Option<Vec<Dataset>> = node
                        .inputs
                        .iter()
                        .map(|&input| take(&mut outputs, &mut unread, input))
                        .collect();
                    match inputs {
                        Some(inputs) if self.needed[id] => {
                            self.progress.step(id);
                            let started = std::time::Instant::now();
                            let output = operator
                                .apply(inputs, batch)
                                .with_context(|| node.describe.clone())?;
                            node.meter.step(output.len(), started.elapsed());
                            batch.number.is_multiple_of(node.slide).then_some(output)
                        }
                        _ => None,
                    }
                }
            };
            outputs.push(output);
            watch(&outputs)?;
        }
        self.clock.end();
        self.progress.sinks();
        Ok(self
            .sink_inputs
            .iter()
            .map(|&input| take(&mut outputs, &mut unread, input))
            .collect())
    }
}

/// A step that keeps state between batches.
pub struct StatefulStep<'a> {
    /// How checkpoints name it: `stream/step number`.
    pub id: &'a str,
    /// Its UDFs as `(manifest label, component SHA-256)`.
    pub udfs: &'a [(String, String)],
    /// Its state.
    pub state: &'a dyn crate::operators::OperatorState,
    /// Its meter, which counts its state's entries and saved bytes.
    pub meter: &'a Arc<StepMeter>,
}

impl JobGraph {
    /// The job's event-time watermark and what the last batch did with it.
    pub fn event_clock(&self) -> &EventClock {
        &self.clock
    }

    /// What the batch in flight is doing, updated at every step.
    pub fn progress(&self) -> &Arc<BatchProgress> {
        &self.progress
    }

    /// Every step's UDFs as `(manifest label, component SHA-256)`.
    pub fn udf_digests(&self) -> Vec<(&str, &str)> {
        self.nodes
            .iter()
            .flat_map(|node| &node.udfs)
            .map(|(label, digest)| (label.as_str(), digest.as_str()))
            .collect()
    }

    /// Every step as `(stream/step number, its meter)`, in graph order (sources are not
    /// steps).
    pub fn step_meters(&self) -> Vec<(&str, &Arc<StepMeter>)> {
        self.nodes
            .iter()
            .filter_map(|node| Some((node.id.as_deref()?, &node.meter)))
            .collect()
    }

    /// Has each stateful step's meter count the entries and bytes its state holds: once
    /// per batch (counting costs a lock and a length per partition or window slice, and
    /// the stores keep their bytes counted as they change: never a pass over records).
    pub fn meter_state(&self) {
        for step in self.stateful_steps() {
            step.meter.state(step.state.entries(), step.state.bytes());
        }
    }

    /// The steps that keep state, in graph order.
    pub fn stateful_steps(&self) -> Vec<StatefulStep<'_>> {
        self.nodes
            .iter()
            .filter_map(|node| {
                Some(StatefulStep {
                    id: node.id.as_deref()?,
                    udfs: &node.udfs,
                    state: node.operator.as_ref()?.state()?,
                    meter: &node.meter,
                })
            })
            .collect()
    }
}

/// The output of node `id` for one more reader: moved out for the last one, cloned before.
fn take(outputs: &mut [Option<Dataset>], unread: &mut [usize], id: usize) -> Option<Dataset> {
    unread[id] -= 1;
    if unread[id] == 0 {
        outputs[id].take()
    } else {
        outputs[id].clone()
    }
}

struct Builder<'a> {
    config: &'a JobConfig,
    runtime: &'a Runtime,
    placement: &'a Placement,
    natives: Option<&'a [NamedFunction]>,
    nodes: Vec<Node>,
    streams: HashMap<String, usize>,
    /// The stores of the mapWithState nodes, for the `state_snapshots` that follow them.
    stores: HashMap<usize, Arc<StateStore>>,
    /// The job's watermark.
    clock: Arc<EventClock>,
    /// Where the records of a node's output have their event time (from the
    /// `event_time` step upstream).
    times: HashMap<usize, event_time::EventTimes>,
    /// `(late stream node, a step's node)` for every step feeding a stream of late rows.
    late_nodes: Vec<(usize, usize)>,
    /// The streams of late rows by name, while their steps are built.
    late_streams: HashMap<String, LateGroup>,
    /// The meter of the step being built, which its UDFs' pools count on; the node
    /// pushed next takes it.
    meter: std::cell::RefCell<Arc<StepMeter>>,
}

/// A stream of late rows while the steps feeding it are built.
struct LateGroup {
    /// One per step, in build order.
    handles: Vec<Arc<event_time::LateRows>>,
    /// The steps built so far: their nodes and `stream/step number`.
    steps: Vec<(usize, String)>,
}

impl Builder<'_> {
    /// Adds a node, working out its slide and checking it as Spark does.
    fn push(
        &mut self,
        describe: String,
        inputs: Vec<usize>,
        operator: Option<Box<dyn Operator>>,
    ) -> Result<usize> {
        let slides: Vec<u64> = inputs
            .iter()
            .map(|&input| self.nodes[input].slide)
            .collect();
        let input_slide = slides.first().copied().unwrap_or(1);
        if slides.iter().any(|&slide| slide != input_slide) {
            bail!(
                "{describe}: its input streams slide differently ({slides:?} batches); windows feeding one operator must have the same slide"
            );
        }
        let slide = match operator.as_ref().and_then(|operator| operator.slide()) {
            Some(slide) => {
                if !slide.is_multiple_of(input_slide) {
                    bail!(
                        "{describe}: the slide ({slide} batches) must be a multiple of its input's slide ({input_slide} batches)"
                    );
                }
                slide
            }
            None => input_slide,
        };
        self.nodes.push(Node {
            id: None,
            udfs: Vec::new(),
            describe,
            inputs,
            operator,
            slide,
            meter: self.meter.take(),
        });
        Ok(self.nodes.len() - 1)
    }

    fn operator(&self, step: &StepConfig, owner: &str) -> Result<Box<dyn Operator>> {
        let bind = |udf: &UdfRef| self.bind(udf, owner);
        let bind_optional = |udf: &Option<UdfRef>| udf.as_ref().map(bind).transpose();
        Ok(match step {
            StepConfig::Map(udf) => Box::new(operators::MapRecords {
                op: "map",
                udf: bind(udf)?,
            }),
            StepConfig::FlatMap(udf) => Box::new(operators::FlatMap { udf: bind(udf)? }),
            StepConfig::MapPartitions(udf) => Box::new(operators::MapRecords {
                op: "map_partitions",
                udf: bind(udf)?,
            }),
            StepConfig::Filter(udf) => Box::new(operators::Filter { udf: bind(udf)? }),
            StepConfig::Reduce(udf) => Box::new(operators::Reduce { udf: bind(udf)? }),
            StepConfig::Glom => Box::new(operators::Glom),
            StepConfig::Repartition(partitions) => Box::new(operators::Repartition {
                partitions: *partitions,
            }),
            StepConfig::Union(_) => Box::new(operators::Union),
            StepConfig::Count => Box::new(operators::Count),
            StepConfig::CountByValue => Box::new(operators::CountByValue),
            StepConfig::Transform(steps) => Box::new(operators::Transform::new(
                steps
                    .iter()
                    .map(|step| Ok((self.operator(step, owner)?, step.other_streams().len())))
                    .collect::<Result<_>>()?,
            )),
            StepConfig::ReduceByKey(udf) => Box::new(operators::ReduceByKey { udf: bind(udf)? }),
            StepConfig::GroupByKey => Box::new(operators::GroupByKey),
            StepConfig::CombineByKey {
                create,
                merge_value,
                merge_combiners,
            } => Box::new(operators::CombineByKey {
                create: bind(create)?,
                merge_value: bind(merge_value)?,
                merge_combiners: bind(merge_combiners)?,
            }),
            StepConfig::MapValues(udf) => Box::new(operators::MapValues { udf: bind(udf)? }),
            StepConfig::FlatMapValues(udf) => {
                Box::new(operators::FlatMapValues { udf: bind(udf)? })
            }
            StepConfig::Cogroup(_) => Box::new(operators::Cogroup),
            StepConfig::Join(kind, _) => Box::new(operators::Join { kind: *kind }),
            StepConfig::Subtract(_) => Box::new(operators::Subtract),
            StepConfig::SubtractByKey(_) => Box::new(operators::SubtractByKey),
            StepConfig::Intersection(_) => Box::new(operators::Intersection),
            StepConfig::Distinct => Box::new(operators::Distinct),
            StepConfig::Window(span) => Box::new(window::Window {
                span: *span,
                history: Mutex::default(),
            }),
            StepConfig::GroupByKeyAndWindow(span) => Box::new(window::GroupByKeyAndWindow {
                span: *span,
                history: Mutex::default(),
            }),
            StepConfig::ReduceByKeyAndWindow {
                reduce,
                inverse,
                filter,
                span,
            } => Box::new(windowed_reduce(
                bind(reduce)?,
                bind_optional(inverse)?,
                bind_optional(filter)?,
                *span,
            )),
            // Spark: `map((null, _)).reduceByKeyAndWindow(f, finv, ...).map(_._2)`.
            StepConfig::ReduceByWindow {
                reduce,
                inverse,
                span,
            } => Box::new(operators::Transform::pipeline(vec![
                Box::new(KeyBy(PairWith::NullKey)),
                Box::new(windowed_reduce(
                    bind(reduce)?,
                    bind_optional(inverse)?,
                    None,
                    *span,
                )),
                Box::new(Values),
            ])),
            // Spark: `map(_ => 1L).reduceByWindow(_ + _, _ - _, ...)`.
            StepConfig::CountByWindow(span) => {
                let [add, subtract, _] = builtin::counting();
                Box::new(operators::Transform::pipeline(vec![
                    Box::new(KeyBy(PairWith::NullKeyOne)),
                    Box::new(windowed_reduce(add, Some(subtract), None, *span)),
                    Box::new(Values),
                ]))
            }
            // Spark: `map((_, 1L)).reduceByKeyAndWindow(_ + _, _ - _, ..., _._2 != 0)`.
            StepConfig::UpdateStateByKey { udf, initial_state } => {
                Box::new(state::UpdateStateByKey {
                    udf: bind(udf)?,
                    store: store_for(state::UpdateStateByKey::KIND, initial_state, self.config)?,
                })
            }
            StepConfig::EventTime(..)
            | StepConfig::AssignWindow(_)
            | StepConfig::EventAggregate(..)
            | StepConfig::EventJoin(..)
            | StepConfig::Dedup(_) => {
                bail!("{owner}: event-time steps cannot be used inside `transform`")
            }
            StepConfig::MapWithState { .. } | StepConfig::StateSnapshots => {
                bail!(
                    "{owner}: `map_with_state` and `state_snapshots` cannot be used inside `transform`"
                )
            }
            StepConfig::CountByValueAndWindow(span) => {
                let [add, subtract, nonzero] = builtin::counting();
                Box::new(operators::Transform::pipeline(vec![
                    Box::new(KeyBy(PairWith::One)),
                    Box::new(windowed_reduce(add, Some(subtract), Some(nonzero), *span)),
                ]))
            }
        })
    }

    /// The next step's handle of the stream of late rows `name`, shared by every step
    /// that names it (steps reading the same input: the resolver checks it).
    fn late_rows_of(&mut self, name: &str) -> Arc<event_time::LateRows> {
        let group = self.late_streams.entry(name.to_owned()).or_insert_with(|| {
            let steps = self
                .config
                .streams
                .iter()
                .flat_map(|stream| &stream.late_rows)
                .filter(|(_, late)| late == name)
                .count();
            LateGroup {
                handles: event_time::LateRows::shared(steps)
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
                steps: Vec::new(),
            }
        });
        group.handles[group.steps.len()].clone()
    }

    /// Notes that node `step` (step `index` of stream `stream`) routes the rows it drops
    /// as late to the stream `name`; after its last step, adds that stream: a node
    /// computed right after it, at the same batch numbers, with what the steps dropped.
    fn late_stream(
        &mut self,
        name: &str,
        rows: Arc<event_time::LateRows>,
        step: usize,
        stream: &str,
        index: usize,
    ) -> Result<()> {
        let group = self
            .late_streams
            .get_mut(name)
            .expect("the step took a handle of it");
        group.steps.push((step, format!("{stream}/{}", index + 1)));
        if group.steps.len() < group.handles.len() {
            return Ok(());
        }
        let steps = std::mem::take(&mut group.steps);
        let operator = event_time::LateStream {
            rows,
            step: steps
                .iter()
                .map(|(_, id)| id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let describe = format!(
            "job `{}`, stream `{name}` ({})",
            self.config.name,
            operator.describe()
        );
        let late = self.push(describe, Vec::new(), Some(Box::new(operator)))?;
        self.nodes[late].slide = self.nodes[step].slide;
        if let Some(time) = self.times.get(&step).cloned() {
            self.times.insert(late, time);
        }
        self.late_nodes
            .extend(steps.iter().map(|&(step, _)| (late, step)));
        self.streams.insert(name.to_owned(), late);
        Ok(())
    }

    /// An event-time step reading the output of node `input`; `id` is `stream/step`;
    /// with `late`, the step routes the rows it drops as late there.
    fn event_time(
        &self,
        step: &StepConfig,
        input: usize,
        id: String,
        late: Option<Arc<event_time::LateRows>>,
    ) -> Result<Box<dyn Operator>> {
        let time = self.times.get(&input).cloned();
        let needs_time = || {
            time.clone().with_context(|| {
                format!("step `{id}`: event-time windows need an `event_time` step before them")
            })
        };
        Ok(match step {
            StepConfig::AssignWindow(windows) => Box::new(event_time::AssignWindow {
                time: needs_time()?,
                windows: *windows,
            }),
            StepConfig::EventAggregate(spec, gap_udf) => {
                if spec.grouping != event_time::Grouping::Keys {
                    needs_time()?;
                }
                let owner = format!("job `{}`, step `{id}`", self.config.name);
                let bind = |udf: Option<&UdfRef>| udf.map(|udf| self.bind(udf, &owner)).transpose();
                let udfs = spec
                    .aggregates
                    .iter()
                    .map(|aggregate| bind(aggregate.udf.as_ref()))
                    .collect::<Result<_>>()?;
                let aggregate = event_time::EventAggregate::new(
                    spec.clone(),
                    time,
                    bind(gap_udf.as_ref())?,
                    udfs,
                    self.clock.clone(),
                    id,
                )?;
                match late {
                    Some(late) => Box::new(aggregate.with_late_rows(late)),
                    None => Box::new(aggregate),
                }
            }
            StepConfig::EventJoin(spec, other) => {
                let other_time = self.times.get(&self.streams[other]).cloned();
                let join = event_time::EventJoin::new(
                    spec.clone(),
                    [time, other_time],
                    self.clock.clone(),
                    id,
                );
                match late {
                    Some(late) => Box::new(join.with_late_rows(late)),
                    None => Box::new(join),
                }
            }
            StepConfig::Dedup(fields) => {
                let dedup = event_time::Dedup::new(fields.clone(), time, self.clock.clone(), id);
                match late {
                    Some(late) => Box::new(dedup.with_late_rows(late)),
                    None => Box::new(dedup),
                }
            }
            other => bail!("step `{id}`: {other:?} is not an event-time step"),
        })
    }

    /// The reduction by key right after the fusable run `run` at the start of `steps`,
    /// when every function of it is of the run's component and that component can
    /// combine (natively, every chain can).
    fn reduction_after<'s>(
        &self,
        steps: &'s [StepConfig],
        run: &[&UdfRef],
    ) -> Result<Option<Reduction<'s>>> {
        let Some(first) = run.first() else {
            return Ok(None);
        };
        let reduction = match steps.get(run.len()) {
            Some(StepConfig::ReduceByKey(reduce)) => Reduction {
                create: None,
                merge: reduce,
                merge_combiners: reduce,
            },
            Some(StepConfig::CombineByKey {
                create,
                merge_value,
                merge_combiners,
            }) => Reduction {
                create: Some(create),
                merge: merge_value,
                merge_combiners,
            },
            _ => return Ok(None),
        };
        let same_component = reduction
            .create
            .into_iter()
            .chain([reduction.merge, reduction.merge_combiners])
            .all(|udf| udf.component == first.component);
        let combines = self.natives.is_some() || self.runtime.load(&first.component)?.combines();
        Ok((same_component && combines).then_some(reduction))
    }

    /// One operator for a fusable run of steps and the reduction by key after it,
    /// combining inside the run's guest call.
    fn combined(
        &self,
        steps: &[&UdfRef],
        reduction: Reduction<'_>,
        owner: &str,
    ) -> Result<Box<dyn Operator>> {
        let merge_combiners = self.bind(reduction.merge_combiners, owner)?;
        let chain = match self.chain(steps, owner)? {
            chain @ UdfChain::Native(_) => CombiningChain::Native {
                chain,
                create: reduction
                    .create
                    .map(|create| self.bind(create, owner))
                    .transpose()?,
                merge: self.bind(reduction.merge, owner)?,
            },
            UdfChain::Wasm {
                pool,
                functions,
                mut label,
            } => {
                let index = |udf: &UdfRef| {
                    pool.component()
                        .function_index(&udf.function)
                        .map(|(index, _)| index)
                        .with_context(|| {
                            format!(
                                "{} no longer exports `{}`",
                                udf.component.display(),
                                udf.function
                            )
                        })
                };
                for udf in reduction.create.iter().chain([&reduction.merge]) {
                    label.push_str(" -> ");
                    label.push_str(&udf.label);
                }
                CombiningChain::Wasm {
                    create: reduction.create.map(index).transpose()?,
                    merge: index(reduction.merge)?,
                    pool,
                    functions,
                    label,
                }
            }
        };
        Ok(Box::new(operators::CombinedByKey {
            chain,
            merge_combiners,
        }))
    }

    /// One operator for consecutive record-at-a-time steps of one component.
    fn fused(&self, steps: &[&UdfRef], owner: &str) -> Result<Box<dyn Operator>> {
        let chain = self.chain(steps, owner)?;
        Ok(Box::new(operators::Fused { chain }))
    }

    /// Consecutive record-at-a-time steps of one component as one chain.
    fn chain(&self, steps: &[&UdfRef], owner: &str) -> Result<UdfChain> {
        Ok(if self.natives.is_some() {
            UdfChain::Native(
                steps
                    .iter()
                    .map(|udf| self.bind(udf, owner))
                    .collect::<Result<_>>()?,
            )
        } else {
            let label = steps
                .iter()
                .map(|udf| udf.label.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
            let component = self.runtime.load(&steps[0].component)?;
            let functions = steps
                .iter()
                .map(|udf| {
                    component
                        .function_index(&udf.function)
                        .map(|(index, _)| index)
                })
                .collect::<Option<Vec<u32>>>()
                .with_context(|| {
                    format!(
                        "{} no longer exports every function of {label}",
                        steps[0].component.display()
                    )
                })?;
            let warm = self.config.partitions.min(rayon::current_num_threads());
            let pool = InstancePool::new(
                component,
                format!("{owner} ({label})"),
                self.config.limits,
                self.placement.clone(),
                warm,
                self.meter.borrow().clone(),
            )?;
            UdfChain::Wasm {
                pool: Arc::new(pool),
                functions,
                label,
            }
        })
    }

    /// A pool of instances of the UDF's component for this step alone, so that no two
    /// operators (or jobs) share guest memory.
    fn bind(&self, udf: &UdfRef, owner: &str) -> Result<BoundUdf> {
        if let Some(natives) = self.natives {
            let native = natives
                .iter()
                .find(|native| native.name == udf.function && native.function.kind() == udf.kind)
                .with_context(|| format!("no native {} function `{}`", udf.kind, udf.function))?;
            return Ok(BoundUdf::Native(*native));
        }
        let component = self.runtime.load(&udf.component)?;
        let (index, kind) = component.function_index(&udf.function).with_context(|| {
            format!(
                "{} no longer exports `{}`",
                udf.component.display(),
                udf.function
            )
        })?;
        let warm = self.config.partitions.min(rayon::current_num_threads());
        let pool = InstancePool::new(
            component,
            format!("{owner} ({})", udf.label),
            self.config.limits,
            self.placement.clone(),
            warm,
            self.meter.borrow().clone(),
        )?;
        Ok(BoundUdf::Wasm {
            pool: Arc::new(pool),
            index,
            kind,
            label: udf.label.clone(),
        })
    }
}

/// A reduction by key that can combine inside a chain's guest call: reduceByKey (whose
/// reduce function is all three) or combineByKey.
#[derive(Clone, Copy)]
struct Reduction<'s> {
    /// value -> combiner, for combineByKey.
    create: Option<&'s UdfRef>,
    /// Folds a value into a combiner.
    merge: &'s UdfRef,
    /// Merges two partitions' combiners.
    merge_combiners: &'s UdfRef,
}

/// The UDFs of the longest run of map, flat-map and filter steps at the start of `steps`
/// whose functions come from one component.
fn fusable_run(steps: &[StepConfig]) -> Vec<&UdfRef> {
    fn record_udf(step: &StepConfig) -> Option<&UdfRef> {
        match step {
            StepConfig::Map(udf) | StepConfig::FlatMap(udf) | StepConfig::Filter(udf) => Some(udf),
            _ => None,
        }
    }
    let mut run: Vec<&UdfRef> = Vec::new();
    for udf in steps.iter().map_while(record_udf) {
        if run
            .first()
            .is_some_and(|first| first.component != udf.component)
        {
            break;
        }
        run.push(udf);
    }
    run
}

/// A state store of `kind`, starting from the initial state file if there is one (opened
/// where job `config` opens its files).
fn store_for(
    kind: &'static str,
    initial: &Option<InitialState>,
    config: &JobConfig,
) -> Result<StateStore> {
    let initial = initial
        .as_ref()
        .map(|initial| {
            let files = JobFiles::of(config)?;
            crate::receivers::load_table(&initial.path, initial.format, &files)
        })
        .transpose()
        .context(crate::failure::Failing::new(
            crate::failure::FailureKind::Source,
            "cannot load the initial state",
        ))?;
    Ok(StateStore::new(kind, initial))
}

fn windowed_reduce(
    reduce: BoundUdf,
    inverse: Option<BoundUdf>,
    filter: Option<BoundUdf>,
    span: Span,
) -> window::WindowedReduce {
    window::WindowedReduce {
        reduce,
        inverse,
        filter,
        span,
        state: Mutex::default(),
    }
}
