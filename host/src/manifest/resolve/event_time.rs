//! The event-time section of a manifest: `[event_time]` and the `event_time`,
//! `assign_window`, `event_aggregate` and `dedup` steps, with the combinations Spark
//! refuses refused here, with its reasons.

use std::time::Duration;

use toml::Spanned;

use super::{Resolver, Result};
use crate::event_time::{
    AggFn, AggSpec, AggregateSpec, EventTimeSettings, Grouping, OutputMode, TimeField, TimeSpec,
    WatermarkPolicy, WindowSpec,
};
use crate::event_time::{JoinSpec, TimeRange};
use crate::manifest::bounds;
use crate::manifest::config::{JoinKind, StepConfig};
use crate::manifest::spec::{EventTimeSpec, StepSpec, StreamSpec};
use sluice_abi::Kind;

/// The keys each event-time step takes.
pub(super) fn keys(op: &str) -> &'static [&'static str] {
    match op {
        "event_time" => &["field", "index", "udf", "unit", "delay"],
        "assign_window" => &["window", "slide", "offset"],
        "event_aggregate" => &[
            "keys",
            "window",
            "slide",
            "offset",
            "session_gap",
            "session_gap_udf",
            "aggregates",
            "output_mode",
            "order_by",
            "late_rows",
        ],
        "event_join" => &[
            "other",
            "join",
            "keys",
            "other_keys",
            "time_range",
            "late_rows",
        ],
        _ => &["fields", "late_rows"],
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).expect("bounded durations fit in i64 ms")
}

impl Resolver<'_> {
    /// `[event_time]`, or its defaults.
    pub(super) fn event_time_settings(
        &self,
        spec: Option<&EventTimeSpec>,
    ) -> Result<EventTimeSettings> {
        let mut settings = EventTimeSettings::default();
        let Some(spec) = spec else {
            return Ok(settings);
        };
        if let Some(policy) = self.choice(
            &spec.watermark_policy,
            "watermark policy",
            &[("min", WatermarkPolicy::Min), ("max", WatermarkPolicy::Max)],
        )? {
            settings.policy = policy;
        }
        if let Some(no_data) = &spec.no_data_batches {
            settings.no_data_batches = *no_data.get_ref();
        }
        Ok(settings)
    }

    fn event_duration(
        &self,
        value: &Spanned<String>,
        key: &str,
        range: &bounds::Bounds<Duration>,
    ) -> Result<i64> {
        Ok(millis(self.duration(value, key, range)?))
    }

    fn windows(&self, spec: &StepSpec, window: &Spanned<String>) -> Result<WindowSpec> {
        let duration_ms = self.event_duration(window, "window", &bounds::EVENT_SPAN)?;
        let slide_ms = match &spec.slide {
            Some(slide) => self.event_duration(slide, "slide", &bounds::EVENT_SPAN)?,
            None => duration_ms,
        };
        if slide_ms > duration_ms {
            return Err(self.error(
                spec.slide.as_ref().map(Spanned::span),
                "the slide must be <= the window duration (Spark: slide_duration must be <= window_duration)",
                "shorten `slide`, or lengthen `window`",
            ));
        }
        let start_ms = match &spec.offset {
            Some(offset) => self.event_duration(offset, "offset", &bounds::EVENT_DELAY)?,
            None => 0,
        };
        Ok(WindowSpec {
            duration_ms,
            slide_ms,
            start_ms,
        })
    }

    /// One of the event-time steps (its keys already checked).
    pub(super) fn event_time_step(&self, spec: &StepSpec) -> Result<StepConfig> {
        let op = spec.op.get_ref().as_str();
        let what = format!("the `{op}` step");
        Ok(match op {
            "event_time" => {
                let udf = spec
                    .udf
                    .as_ref()
                    .map(|udf| self.udf(udf, op, Kind::Map))
                    .transpose()?;
                let field = match (&spec.field, &spec.index, &udf) {
                    (Some(field), None, None) => TimeField::Named(field.get_ref().clone()),
                    (None, None, Some(udf)) => TimeField::Udf(udf.label.clone()),
                    (None, Some(index), None) => {
                        TimeField::Index(usize::try_from(*index.get_ref()).map_err(|_| {
                            self.error(
                                Some(index.span()),
                                "`index` must be 0 or more",
                                "give the tuple element's position, counting from 0",
                            )
                        })?)
                    }
                    _ => {
                        return Err(self.error(
                            Some(spec.op.span()),
                            "`event_time` needs one of `field` (a struct field), `index` (a tuple element) or `udf` (a map function returning the time)",
                            "keep one of `field = \"timestamp\"`, `index = 1` and `udf = \"alias#event_ms\"`",
                        ));
                    }
                };
                let unit_ms = self
                    .choice(&spec.unit, "time unit", &[("ms", 1), ("s", 1000)])?
                    .unwrap_or(1);
                let delay_ms = spec
                    .delay
                    .as_ref()
                    .map(|delay| self.event_duration(delay, "delay", &bounds::EVENT_DELAY))
                    .transpose()?;
                StepConfig::EventTime(
                    TimeSpec {
                        field,
                        unit_ms,
                        delay_ms,
                    },
                    udf,
                )
            }
            "assign_window" => {
                let window = self.required(&spec.window, &spec.op, "window", &what)?;
                StepConfig::AssignWindow(self.windows(spec, window)?)
            }
            "event_aggregate" => {
                let gap_udf = spec
                    .session_gap_udf
                    .as_ref()
                    .map(|udf| self.udf(udf, op, Kind::Map))
                    .transpose()?;
                let grouping = match (&spec.window, &spec.session_gap, &gap_udf) {
                    (Some(window), None, None) => Grouping::Window(self.windows(spec, window)?),
                    (None, Some(gap), None) => Grouping::Session {
                        gap_ms: Some(self.event_duration(
                            gap,
                            "session_gap",
                            &bounds::EVENT_SPAN,
                        )?),
                    },
                    (None, None, Some(_)) => Grouping::Session { gap_ms: None },
                    (None, None, None) => Grouping::Keys,
                    _ => {
                        return Err(self.error(
                            Some(spec.op.span()),
                            "an aggregation groups by one of a window, a fixed session gap or a session gap function",
                            "keep one of `window`, `session_gap` and `session_gap_udf`",
                        ));
                    }
                };
                let mode = self
                    .choice(
                        &spec.output_mode,
                        "output mode",
                        &[
                            ("append", OutputMode::Append),
                            ("update", OutputMode::Update),
                            ("complete", OutputMode::Complete),
                        ],
                    )?
                    .unwrap_or(OutputMode::Append);
                let aggregates = self.required(&spec.aggregates, &spec.op, "aggregates", &what)?;
                let aggregates = aggregates
                    .get_ref()
                    .iter()
                    .map(|text| self.aggregate(text, aggregates.span(), op))
                    .collect::<Result<_>>()?;
                let order_by = match &spec.order_by {
                    Some(order) => order
                        .get_ref()
                        .iter()
                        .map(
                            |text| match text.split_whitespace().collect::<Vec<_>>()[..] {
                                [field] | [field, "asc"] => Ok((field.to_owned(), false)),
                                [field, "desc"] => Ok((field.to_owned(), true)),
                                _ => Err(self.error(
                                    Some(order.span()),
                                    format!("`{text}` is not a sort order"),
                                    "write `field`, `field asc` or `field desc`",
                                )),
                            },
                        )
                        .collect::<Result<_>>()?,
                    None => Vec::new(),
                };
                let spec = AggregateSpec {
                    keys: spec
                        .keys
                        .as_ref()
                        .map(|keys| keys.get_ref().clone())
                        .unwrap_or_default(),
                    grouping,
                    aggregates,
                    mode,
                    order_by,
                };
                StepConfig::EventAggregate(spec, gap_udf)
            }
            "event_join" => {
                let other = self.required(&spec.other, &spec.op, "other", &what)?;
                let other = self.reference(other)?;
                let kind = self
                    .choice(
                        &spec.join,
                        "join",
                        &[
                            ("inner", JoinKind::Inner),
                            ("left_outer", JoinKind::LeftOuter),
                            ("right_outer", JoinKind::RightOuter),
                            ("full_outer", JoinKind::FullOuter),
                        ],
                    )?
                    .unwrap_or(JoinKind::Inner);
                let keys = self
                    .required(&spec.keys, &spec.op, "keys", &what)?
                    .get_ref()
                    .clone();
                let other_keys = match &spec.other_keys {
                    Some(other_keys) if other_keys.get_ref().len() != keys.len() => {
                        return Err(self.error(
                            Some(other_keys.span()),
                            format!(
                                "`other_keys` has {} fields and `keys` {}",
                                other_keys.get_ref().len(),
                                keys.len()
                            ),
                            "give as many key fields on each side, in matching order",
                        ));
                    }
                    Some(other_keys) => other_keys.get_ref().clone(),
                    None => keys.clone(),
                };
                let time_range = spec
                    .time_range
                    .as_ref()
                    .map(|range| {
                        TimeRange::parse(range.get_ref()).ok_or_else(|| {
                            self.error(
                                Some(range.span()),
                                format!("`{}` is not a time range", range.get_ref()),
                                "write the bounds of (this stream's time - the other's) as an interval: `[-5s, 5s]`, `(-inf, -5s)`; brackets include a bound",
                            )
                        })
                    })
                    .transpose()?;
                StepConfig::EventJoin(
                    JoinSpec {
                        kind,
                        keys,
                        other_keys,
                        time_range,
                    },
                    other,
                )
            }
            _ => StepConfig::Dedup(spec.fields.as_ref().map(|fields| fields.get_ref().clone())),
        })
    }

    /// One entry of `aggregates`, its UDF (of a reduce or fold) resolved.
    fn aggregate(&self, text: &str, span: std::ops::Range<usize>, op: &str) -> Result<AggSpec> {
        let (mut spec, udf) = parse_aggregate(text).ok_or_else(|| {
            self.error(
                Some(span.clone()),
                format!("`{text}` is not an aggregate"),
                "write `count`, or `sum(field)`, `min(field)`, `max(field)`, `avg(field)`, `last(field)`, `reduce(field, alias#function)`, `fold(field, alias#function, zero as JSON)` (field `*`: the whole record), each optionally followed by `as name`",
            )
        })?;
        if let Some(udf) = udf {
            let kind = match spec.function {
                AggFn::Fold => Kind::Fold,
                _ => Kind::Reduce,
            };
            spec.udf = Some(self.udf(&Spanned::new(span.clone(), udf), op, kind)?);
        }
        if let Some(zero) = &spec.zero
            && let Err(error) = crate::json::parse(zero)
        {
            return Err(self.error(
                Some(span),
                format!("the zero of `{text}` is not JSON: {error}"),
                "write the fold's first accumulator as JSON, e.g. `0` or `{\"$tuple\": [0.0, 0]}`",
            ));
        }
        Ok(spec)
    }

    /// Refuses what Spark refuses in a stream's event-time steps, where it is written,
    /// and what may not follow an event-time step (of this stream or one upstream): a
    /// DStream window or state step, or a third stateful event-time step in a row.
    /// Returns whether the stream ends with a watermark upstream, and the event-time
    /// steps upstream of each step's output.
    pub(super) fn check_event_time(
        &self,
        spec: &StreamSpec,
        from: &str,
        steps: &[StepConfig],
    ) -> Result<(bool, Vec<Lineage>)> {
        let mut watermarked = self.watermarked.contains(from);
        let mut lineage = self.lineages.get(from).cloned().unwrap_or_default();
        let mut after_each = Vec::with_capacity(steps.len());
        let stream = spec.name.get_ref().trim();
        for (index, (step, step_spec)) in steps.iter().zip(&spec.steps).enumerate() {
            let refuse = |message: &str, hint: &str| {
                Err(self.error(Some(step_spec.op.span()), message, hint))
            };
            let this = format!(
                "`{}` (stream `{stream}` step {})",
                step_spec.op.get_ref(),
                index + 1
            );
            for other in step.other_streams() {
                if let Some(other) = self.lineages.get(other) {
                    lineage.merge(other);
                }
            }
            match step {
                StepConfig::EventTime(time, _) => {
                    watermarked |= time.delay_ms.is_some();
                    lineage.time_field = time.name().map(str::to_owned);
                    lineage.first.get_or_insert(this);
                }
                StepConfig::AssignWindow(_) => {
                    lineage.first.get_or_insert(this);
                }
                StepConfig::Union(others) => {
                    watermarked |= others.iter().any(|other| self.watermarked.contains(other));
                }
                StepConfig::Dedup(_) | StepConfig::EventJoin(..) => {
                    lineage.stateful(this, None).map_err(|(message, hint)| {
                        self.error(Some(step_spec.op.span()), message, hint)
                    })?;
                }
                StepConfig::EventAggregate(aggregate, _) => {
                    self.check_aggregate(aggregate, &lineage, watermarked)
                        .map_err(|(message, hint)| {
                            self.error(Some(step_spec.op.span()), message, hint)
                        })?;
                    lineage
                        .stateful(this, Some(aggregate.mode))
                        .map_err(|(message, hint)| {
                            self.error(Some(step_spec.op.span()), message, hint)
                        })?;
                }
                other if other.remembers() => {
                    if let Some(first) = &lineage.first {
                        return refuse(
                            &format!(
                                "{this} is a DStream window or state step and cannot follow the event-time step {first}: DStream steps group rows by the batch they arrive in, while event-time steps emit by the watermark, so a DStream window or state after one would group results by the batch that happened to emit them, and its state would not recover in step with the watermark"
                            ),
                            "move the DStream step before the `event_time` step, or use an event-time step instead (`event_aggregate` with a `window`, `dedup`)",
                        );
                    }
                }
                _ => {}
            }
            after_each.push(lineage.clone());
        }
        if after_each.is_empty() {
            after_each.push(lineage);
        }
        Ok((watermarked, after_each))
    }

    /// Refuses the aggregations Spark refuses, with its reasons (as `(message, hint)`).
    fn check_aggregate(
        &self,
        aggregate: &AggregateSpec,
        lineage: &Lineage,
        watermarked: bool,
    ) -> std::result::Result<(), (String, String)> {
        let refuse = |message: &str, hint: &str| Err((message.to_owned(), hint.to_owned()));
        let session = matches!(aggregate.grouping, Grouping::Session { .. });
        if session && aggregate.keys.is_empty() {
            return refuse(
                "Global aggregation with session window in streaming query is not supported",
                "add `keys`: sessions are kept per key",
            );
        }
        if session
            && let Some(fold) = aggregate
                .aggregates
                .iter()
                .find(|agg| agg.function == AggFn::Fold)
        {
            return refuse(
                &format!(
                    "the fold aggregate `{}` cannot be used with session windows: merging sessions merges their accumulators, which a fold cannot",
                    fold.name
                ),
                "use a reduce function (`reduce(field, alias#function)`), whose results merge",
            );
        }
        if session && aggregate.mode == OutputMode::Update {
            return refuse(
                "Update output mode is not supported for session window",
                "use `output_mode = \"append\"` or `\"complete\"`",
            );
        }
        if aggregate.mode == OutputMode::Append && !(watermarked && lineage.timed(aggregate)) {
            return refuse(
                "append output mode is not supported for an aggregation without a watermark on a grouping key (Spark refuses it too: such groups are never final)",
                "add a `delay` to the `event_time` step and group by a window, a session or the event-time field; or use `output_mode = \"update\"` or `\"complete\"`",
            );
        }
        if !aggregate.order_by.is_empty() && aggregate.mode != OutputMode::Complete {
            return refuse(
                "sorting is not supported unless the output mode is complete",
                "remove `order_by`, or use `output_mode = \"complete\"`",
            );
        }
        Ok(())
    }

    /// The streams of late rows the steps of `spec` (reading `from`) declare
    /// (`late_rows`), defined as stream names, with the index of their step; refused on
    /// a step that never drops a row as late. `lineages` holds the event-time steps
    /// upstream of each step's output. Steps reading the same input may share a late
    /// stream (fan-out), which then judges each row by all of them.
    pub(super) fn late_streams(
        &mut self,
        spec: &StreamSpec,
        from: &str,
        steps: &[StepConfig],
        lineages: &[Lineage],
        watermarked: bool,
    ) -> Result<Vec<(usize, String)>> {
        let stream = spec.name.get_ref().trim();
        for read in std::iter::once(from).chain(steps.iter().flat_map(StepConfig::other_streams)) {
            if let Some(group) = self.late_groups.get_mut(read) {
                group
                    .read_by
                    .get_or_insert_with(|| format!("stream `{stream}`"));
            }
        }
        let mut late_streams = Vec::new();
        for (index, (step, step_spec)) in steps.iter().zip(&spec.steps).enumerate() {
            let Some(name) = &step_spec.late_rows else {
                continue;
            };
            let op = step_spec.op.get_ref();
            let never = match step {
                _ if !watermarked => Some(
                    "it has no watermark upstream (a `delay` on an `event_time` step), so no row is ever late",
                ),
                StepConfig::EventAggregate(aggregate, _)
                    if aggregate.mode == OutputMode::Complete =>
                {
                    Some("complete output mode keeps every group and drops no row")
                }
                StepConfig::EventAggregate(aggregate, _) if !lineages[index].timed(aggregate) => {
                    Some(
                        "it groups by keys alone (no window, session or event-time field), so no group is ever final and no row late",
                    )
                }
                _ => None,
            };
            if let Some(reason) = never {
                return Err(self.error(
                    Some(name.span()),
                    format!("`late_rows` on `{op}` would always be empty: {reason}"),
                    "remove `late_rows`, or give the step a watermark and a window (see docs/manifest.md, \"Late rows\")",
                ));
            }
            let this = format!("`{op}` (stream `{stream}` step {})", index + 1);
            // What the step reads, if it may share a late stream: its stream's input,
            // which it reads first and alone.
            let input =
                (index == 0 && !matches!(step, StepConfig::EventJoin(..))).then(|| from.to_owned());
            let late = match self.late_groups.get(name.get_ref().trim()) {
                Some(group) => {
                    let late = name.get_ref().trim().to_owned();
                    if let Some(reader) = &group.read_by {
                        return Err(self.error(
                            Some(name.span()),
                            format!(
                                "{this} cannot add its late rows to `{late}`: {reader}, above it, already reads that stream, which is whole only after its last step"
                            ),
                            format!(
                                "move {reader} (and whatever reads it) below {this}"
                            ),
                        ));
                    }
                    if input.is_none() || group.input != input {
                        return Err(self.error(
                            Some(name.span()),
                            format!(
                                "{this} cannot route its late rows to `{late}` too: {} routes there, and a late stream shared by several steps judges each row by all of them (a row goes there only if every one dropped it), so they must read the same rows: each the first step of a stream `from` one same stream, and none an `event_join` (which reads two)",
                                group.steps[0]
                            ),
                            format!(
                                "give it a late stream of its own (`late_rows = \"{late}_{}\"`), and `union` the two if one sink should get both; or start both streams `from` the same stream, the stateful step first",
                                group.steps.len() + 1
                            ),
                        ));
                    }
                    self.late_groups
                        .get_mut(&late)
                        .expect("found above")
                        .steps
                        .push(this);
                    late
                }
                None => {
                    let late = self.define(name)?;
                    self.late_groups.insert(
                        late.clone(),
                        LateGroup {
                            input,
                            steps: vec![this],
                            read_by: None,
                        },
                    );
                    late
                }
            };
            self.lineages
                .entry(late.clone())
                .or_default()
                .merge(&lineages[index]);
            late_streams.push((index, late));
        }
        Ok(late_streams)
    }
}

/// A stream of late rows, as the steps that route to it are read.
#[derive(Debug)]
pub(super) struct LateGroup {
    /// The stream its steps read (first and alone), if it may take more steps.
    input: Option<String>,
    /// Its steps, as messages name them.
    steps: Vec<String>,
    /// The first stream that reads it, as messages name it (no step may join after).
    read_by: Option<String>,
}

/// The event-time steps upstream of a stream, through `from` and the streams it unions
/// or joins: what may follow them.
#[derive(Debug, Clone, Default)]
pub(super) struct Lineage {
    /// The first event-time step, as messages name it: `` `event_time` (stream `s` step 1) ``.
    first: Option<String>,
    /// The stateful event-time steps in a row, as messages name them, with the output
    /// mode of an aggregation.
    stateful: Vec<(String, Option<OutputMode>)>,
    /// The field the last `event_time` step reads the time from, if a named one.
    time_field: Option<String>,
}

impl Lineage {
    /// Joins the lineage of another input of a step.
    fn merge(&mut self, other: &Lineage) {
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
        if other.stateful.len() > self.stateful.len() {
            self.stateful.clone_from(&other.stateful);
        }
        if self.time_field.is_none() {
            self.time_field.clone_from(&other.time_field);
        }
    }

    /// Adds the stateful event-time step `this` (with its output mode, for an
    /// aggregation); refuses a third in a row, and any after an aggregation whose output
    /// changes from batch to batch, as `(message, hint)`.
    fn stateful(
        &mut self,
        this: String,
        mode: Option<OutputMode>,
    ) -> std::result::Result<(), (String, String)> {
        if let Some((aggregation, Some(mode @ (OutputMode::Update | OutputMode::Complete)))) =
            self.stateful.last()
        {
            let mode = if *mode == OutputMode::Update {
                "update"
            } else {
                "complete"
            };
            return Err((
                format!(
                    "{this} cannot follow the aggregation {aggregation} in {mode} output mode: its rows change from batch to batch, so a stateful step after it would count each version again (Spark: Multiple streaming aggregations are not supported with streaming DataFrames/Datasets, except in append mode)"
                ),
                "use `output_mode = \"append\"` on the first aggregation, or end the query there"
                    .to_owned(),
            ));
        }
        if let [first, second] = &self.stateful[..] {
            return Err((
                format!(
                    "{this} would be a third stateful event-time step in a row, after {} and {}: an event-time step may be followed by stateless steps, sinks and one further stateful event-time step (as `dedup` then `event_aggregate`), not more",
                    first.0, second.0
                ),
                "end the query after the second stateful step (send its result to a sink, e.g. Kafka, and read it in another job), or fold two of the steps into one".to_owned(),
            ));
        }
        self.first.get_or_insert_with(|| this.clone());
        self.stateful.push((this, mode));
        Ok(())
    }

    /// Whether `aggregate` groups by event time: by a window, a session or the event-time
    /// field itself (what a watermark can close).
    fn timed(&self, aggregate: &AggregateSpec) -> bool {
        aggregate.grouping != Grouping::Keys
            || self
                .time_field
                .as_ref()
                .is_some_and(|name| aggregate.keys.contains(name))
    }
}

/// An aggregate as written: `count`, `sum(field)`, `min`, `max`, `avg`, `last`,
/// `reduce(field, udf)` or `fold(field, udf, zero)` (field `*`: the whole record), with an
/// optional `as name`; with the UDF reference of a reduce or fold.
fn parse_aggregate(text: &str) -> Option<(AggSpec, Option<String>)> {
    let text = text.trim();
    let (call, name) = match text.rsplit_once(" as ") {
        Some((call, name)) if !name.contains(')') => (call.trim(), Some(name.trim().to_owned())),
        _ => (text, None),
    };
    let (function, args) = match call.split_once('(') {
        Some((function, rest)) => (function.trim(), Some(rest.strip_suffix(')')?)),
        None => (call, None),
    };
    let mut args = args.map(|args| args.splitn(3, ',').map(str::trim));
    let mut arg = || {
        args.as_mut()
            .and_then(Iterator::next)
            .filter(|arg| !arg.is_empty())
    };
    let (field, udf, zero) = (arg(), arg(), arg());
    let function = match (function, field, udf, zero) {
        ("count", None, None, None) => AggFn::Count,
        ("sum", Some(_), None, None) => AggFn::Sum,
        ("min", Some(_), None, None) => AggFn::Min,
        ("max", Some(_), None, None) => AggFn::Max,
        ("avg", Some(_), None, None) => AggFn::Avg,
        ("last", Some(_), None, None) => AggFn::Last,
        ("reduce", Some(_), Some(_), None) => AggFn::Reduce,
        ("fold", Some(_), Some(_), Some(_)) => AggFn::Fold,
        _ => return None,
    };
    let spec = AggSpec {
        function,
        name: name.unwrap_or_else(|| function_name(function).to_owned()),
        field: field.filter(|field| *field != "*").map(str::to_owned),
        udf: None,
        zero: zero.map(str::to_owned),
    };
    Some((spec, udf.map(str::to_owned)))
}

fn function_name(function: AggFn) -> &'static str {
    match function {
        AggFn::Count => "count",
        AggFn::Sum => "sum",
        AggFn::Min => "min",
        AggFn::Max => "max",
        AggFn::Avg => "avg",
        AggFn::Last => "last",
        AggFn::Reduce => "reduce",
        AggFn::Fold => "fold",
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, job, refused};
    use super::*;

    /// The top of a job whose stateful steps can checkpoint.
    const TOP: &str = "batch_interval = \"1s\"\n[checkpoint]\ndir = \"c\"";

    /// A job of stream `w` (from source `s`) with `steps`, then `more` (streams, sinks).
    fn jobs(steps: &str, more: &str) -> String {
        format!("{}{more}\n", job(TOP, steps))
    }

    const TIME: &str = r#"{ op = "event_time", field = "t", unit = "s", delay = "5s" }"#;
    const WINDOWED: &str =
        r#"{ op = "event_aggregate", keys = ["k"], window = "10s", aggregates = ["count"] }"#;

    #[test]
    fn a_dstream_window_or_state_step_after_an_event_time_step_is_refused_naming_both() {
        let error = refused(&jobs(
            &format!(r#"{TIME}, {WINDOWED}, {{ op = "window", window = "2s" }}"#),
            "",
        ));
        for part in [
            "`window` (stream `w` step 3) is a DStream window or state step",
            "cannot follow the event-time step `event_time` (stream `w` step 1)",
            "by the batch they arrive in",
            "help: move the DStream step before the `event_time` step",
        ] {
            assert!(error.contains(part), "`{part}` is not in: {error}");
        }
        // In a stream reading one with event-time steps, through `from` or a union.
        let downstream = r#"[[streams]]
name = "v"
from = "w"
steps = [{ op = "count_by_window", window = "2s" }]"#;
        let error = refused(&jobs(TIME, downstream));
        assert!(
            error.contains("`count_by_window` (stream `v` step 1)")
                && error.contains("`event_time` (stream `w` step 1)"),
            "{error}"
        );
        let unioned = r#"[[streams]]
name = "v"
from = "s"
steps = [{ op = "union", with = ["w"] }, { op = "count_by_value_and_window", window = "2s" }]"#;
        let error = refused(&jobs(r#"{ op = "dedup" }"#, unioned));
        assert!(
            error.contains("`count_by_value_and_window` (stream `v` step 2)")
                && error.contains("`dedup` (stream `w` step 1)"),
            "{error}"
        );
        // Before the event time, a DStream window is fine.
        check(&jobs(
            &format!(r#"{{ op = "window", window = "2s" }}, {TIME}, {WINDOWED}"#),
            "",
        ))
        .unwrap();
    }

    #[test]
    fn one_further_stateful_event_time_step_may_follow_the_first_and_no_more() {
        let dedup = r#"{ op = "dedup", fields = ["k", "t"] }"#;
        check(&jobs(&format!("{TIME}, {dedup}, {WINDOWED}"), "")).unwrap();
        let error = refused(&jobs(&format!("{TIME}, {dedup}, {WINDOWED}, {dedup}"), ""));
        for part in [
            "`dedup` (stream `w` step 4) would be a third stateful event-time step in a row",
            "after `dedup` (stream `w` step 2) and `event_aggregate` (stream `w` step 3)",
            "one further stateful event-time step",
        ] {
            assert!(error.contains(part), "`{part}` is not in: {error}");
        }
        // Counted across streams too.
        let third = format!("[[streams]]\nname = \"v\"\nfrom = \"w\"\nsteps = [{dedup}]");
        let error = refused(&jobs(&format!("{TIME}, {dedup}, {WINDOWED}"), &third));
        assert!(
            error.contains("`dedup` (stream `v` step 1) would be a third"),
            "{error}"
        );
        // After an aggregation whose rows change from batch to batch, none.
        let updating = r#"{ op = "event_aggregate", keys = ["k"], window = "10s",
            aggregates = ["count"], output_mode = "update" }"#;
        let error = refused(&jobs(&format!("{TIME}, {updating}, {dedup}"), ""));
        assert!(
            error.contains(
                "`dedup` (stream `w` step 3) cannot follow the aggregation `event_aggregate` (stream `w` step 2) in update output mode"
            ),
            "{error}"
        );
    }

    #[test]
    fn event_time_steps_are_refused_inside_transform() {
        let error = refused(&jobs(
            &format!(r#"{{ op = "transform", steps = [{TIME}] }}"#),
            "",
        ));
        assert!(
            error.contains("`event_time` cannot be used inside `transform`"),
            "{error}"
        );
    }

    #[test]
    fn late_rows_define_a_stream_and_are_refused_where_no_row_is_ever_late() {
        let late = r#"{ op = "event_aggregate", keys = ["k"], window = "10s", slide = "5s",
            aggregates = ["count"], late_rows = "late" }"#;
        let sink = "[[sinks]]\nfrom = \"late\"\nkind = \"print\"";
        let config = check(&jobs(&format!("{TIME}, {late}"), sink)).unwrap();
        assert_eq!(config.streams[0].late_rows, [(1, "late".to_owned())]);
        assert_eq!(config.sinks[1].from, "late");
        for (steps, reason) in [
            (
                late.replace("window = \"10s\", slide = \"5s\",", "")
                    .replace("aggregates", "output_mode = \"update\", aggregates"),
                "it groups by keys alone",
            ),
            (
                late.replace("aggregates", "output_mode = \"complete\", aggregates"),
                "complete output mode keeps every group",
            ),
        ] {
            let error = refused(&jobs(&format!("{TIME}, {steps}"), sink));
            assert!(
                error.contains("`late_rows` on `event_aggregate` would always be empty")
                    && error.contains(reason),
                "{error}"
            );
        }
        let unwatermarked =
            r#"{ op = "event_time", field = "t" }, { op = "dedup", late_rows = "late" }"#;
        let error = refused(&jobs(unwatermarked, sink));
        assert!(error.contains("no watermark upstream"), "{error}");
        let error = refused(&jobs(
            &format!(r#"{TIME}, {{ op = "dedup", late_rows = "w" }}"#),
            "",
        ));
        assert!(error.contains("the name `w` is used twice"), "{error}");
        let error = refused(&jobs(
            r#"{ op = "event_time", field = "t", late_rows = "late" }"#,
            "",
        ));
        assert!(
            error.contains("`late_rows` does not apply to the `event_time` step"),
            "{error}"
        );
    }

    #[test]
    fn steps_reading_one_stream_may_share_a_late_stream_and_no_others() {
        let windowed = WINDOWED.replace(" }", r#", late_rows = "late" }"#);
        let dedup = r#"{ op = "dedup", fields = ["k", "t"], late_rows = "late" }"#;
        let fan_out = |first: &str, between: &str, second: &str| {
            jobs(
                TIME,
                &format!(
                    "[[streams]]\nname = \"a\"\nfrom = \"w\"\nsteps = [{first}]\n{between}\
                     [[streams]]\nname = \"b\"\nfrom = \"w\"\nsteps = [{second}]\n\
                     [[sinks]]\nfrom = \"late\"\nkind = \"print\""
                ),
            )
        };
        let config = check(&fan_out(&windowed, "", dedup)).unwrap();
        assert_eq!(config.streams[1].late_rows, [(0, "late".to_owned())]);
        assert_eq!(config.streams[2].late_rows, [(0, "late".to_owned())]);
        // Not after another step, which reads other rows (in a chain, the rows the
        // first step kept), nor an `event_join`.
        let error = refused(&fan_out(
            &windowed,
            "",
            &format!(r#"{{ op = "dedup", fields = ["k", "t"] }}, {windowed}"#),
        ));
        for part in [
            "`event_aggregate` (stream `b` step 2) cannot route its late rows to `late` too",
            "`event_aggregate` (stream `a` step 1) routes there",
            "a row goes there only if every one dropped it",
            "late_rows = \"late_2\"",
        ] {
            assert!(error.contains(part), "`{part}` is not in: {error}");
        }
        let error = refused(&jobs(&format!("{TIME}, {dedup}, {windowed}"), ""));
        assert!(
            error.contains("(stream `w` step 3) cannot route"),
            "{error}"
        );
        let join = r#"{ op = "event_join", other = "w", keys = ["k"], late_rows = "late" }"#;
        let error = refused(&fan_out(&windowed, "", join));
        assert!(
            error.contains("(stream `b` step 1) cannot route"),
            "{error}"
        );
        // Nor once a stream above reads the late stream.
        let reader = "[[streams]]\nname = \"r\"\nfrom = \"late\"\n\
                      steps = [{ op = \"union\", with = [\"w\"] }]\n";
        let error = refused(&fan_out(&windowed, reader, dedup));
        assert!(
            error.contains("`dedup` (stream `b` step 1) cannot add its late rows to `late`: stream `r`, above it, already reads that stream"),
            "{error}"
        );
    }

    #[test]
    fn aggregates_read_as_written() {
        let (sum, udf) = parse_aggregate("sum(v) as total").unwrap();
        assert_eq!(
            (sum.function, sum.field.as_deref(), sum.name.as_str(), udf),
            (AggFn::Sum, Some("v"), "total", None)
        );
        assert_eq!(parse_aggregate("count").unwrap().0.name, "count");
        assert!(parse_aggregate("count(v)").is_none());
        assert!(parse_aggregate("sum").is_none());
        assert!(parse_aggregate("median(v)").is_none());
        assert!(parse_aggregate("sum(v, c#sum)").is_none());
    }

    #[test]
    fn udf_aggregates_read_their_function_and_zero() {
        let (reduce, udf) = parse_aggregate("reduce(v, c#sum) as total").unwrap();
        assert_eq!(
            (reduce.function, reduce.field.as_deref(), udf.as_deref()),
            (AggFn::Reduce, Some("v"), Some("c#sum"))
        );
        let (fold, udf) =
            parse_aggregate(r#"fold(*, t#add, {"$tuple": [0.0, 0]}) as avg"#).unwrap();
        assert_eq!(
            (
                fold.function,
                fold.field,
                udf.as_deref(),
                fold.zero.as_deref()
            ),
            (
                AggFn::Fold,
                None,
                Some("t#add"),
                Some(r#"{"$tuple": [0.0, 0]}"#)
            )
        );
        assert_eq!(fold.name, "avg");
        assert!(parse_aggregate("reduce(v)").is_none());
        assert!(parse_aggregate("fold(v, t#add)").is_none());
        assert!(parse_aggregate("reduce(v, c#sum, 0)").is_none());
    }
}
