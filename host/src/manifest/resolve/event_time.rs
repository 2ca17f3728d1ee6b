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
        ],
        "event_join" => &["other", "join", "keys", "other_keys", "time_range"],
        _ => &["fields"],
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

    /// Refuses what Spark refuses in a stream's event-time steps, where it is written;
    /// returns whether the stream ends with a watermark upstream.
    pub(super) fn check_event_time(
        &self,
        spec: &StreamSpec,
        from: &str,
        steps: &[StepConfig],
    ) -> Result<bool> {
        let mut watermarked = self.watermarked.contains(from);
        let mut time_field: Option<&TimeSpec> = None;
        let mut after_event_time = false;
        for (step, step_spec) in steps.iter().zip(&spec.steps) {
            let refuse = |message: &str, hint: &str| {
                Err(self.error(Some(step_spec.op.span()), message, hint))
            };
            match step {
                StepConfig::EventTime(time, _) => {
                    watermarked |= time.delay_ms.is_some();
                    time_field = Some(time);
                    after_event_time = true;
                }
                StepConfig::Union(others) => {
                    watermarked |= others.iter().any(|other| self.watermarked.contains(other));
                }
                StepConfig::Dedup(_) | StepConfig::EventJoin(..) => after_event_time = true,
                StepConfig::EventAggregate(aggregate, _) => {
                    after_event_time = true;
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
                    let time_key = time_field
                        .and_then(TimeSpec::name)
                        .is_some_and(|name| aggregate.keys.iter().any(|key| key == name));
                    let timed = time_key || aggregate.grouping != Grouping::Keys;
                    if aggregate.mode == OutputMode::Append && !(watermarked && timed) {
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
                }
                other if after_event_time && other.remembers() => {
                    return refuse(
                        "a DStream window or state step cannot follow an event-time step",
                        "use event-time steps only after `event_time`, or move the DStream step before it",
                    );
                }
                _ => {}
            }
        }
        Ok(watermarked)
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
    use super::*;

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
