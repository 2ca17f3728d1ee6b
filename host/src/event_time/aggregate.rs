//! Event-time aggregation: grouped by a window (tumbling, sliding or session) of the
//! event time and optional key fields, with built-in aggregates, in one of Spark's
//! output modes, late rows dropped and state evicted by the watermark.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use sluice_abi::Value;

use super::clock::EventClock;
use super::record::{self, Acc};
use super::step::{TimeSpec, dataset, values};
use super::windows::WindowSpec;
use crate::dataset::Dataset;
use crate::operators::{BatchContext, Operator, OperatorState, single};
use crate::udf::BoundUdf;

/// What an aggregation emits, and when (Spark's output modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// A group once, when the watermark passes its end; then its state is dropped.
    Append,
    /// The groups that changed, every batch; groups the watermark passed are dropped.
    Update,
    /// The whole result table, every batch; nothing is dropped.
    Complete,
}

/// A built-in aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// Rows in the group.
    Count,
    /// Sum of a field.
    Sum,
    /// Smallest value of a field.
    Min,
    /// Largest value of a field.
    Max,
    /// Mean of a field (a float).
    Avg,
    /// The field's value in the group's last row, in arrival order.
    Last,
}

/// One aggregate of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    /// The function.
    pub function: AggFn,
    /// The field it reads (`None` for `count`).
    pub field: Option<String>,
    /// The output field's name.
    pub name: String,
}

/// How rows are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// By the key fields only (one of them may be the event time itself).
    Keys,
    /// By tumbling or sliding window.
    Window(WindowSpec),
    /// By session: rows closer than the gap (per key) fall in one session.
    Session {
        /// Each row opens `[t, t + gap)`; `None`: a map UDF gives each row's gap (ms).
        gap_ms: Option<i64>,
    },
}

/// The `event_aggregate` step's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSpec {
    /// Grouping key fields (none: one global group per window).
    pub keys: Vec<String>,
    /// Grouping in time.
    pub grouping: Grouping,
    /// The aggregates, in output order.
    pub aggregates: Vec<AggSpec>,
    /// The output mode.
    pub mode: OutputMode,
    /// Sort of the result (complete mode only): output fields, `true` for descending.
    pub order_by: Vec<(String, bool)>,
}

#[derive(Debug, Clone)]
struct Group {
    key: Value,
    window: Option<(i64, i64)>,
    /// The event time past which the group is final: its window's end, or its time.
    close: Option<i64>,
    accs: Vec<Acc>,
}

type GroupId = (Option<(i64, i64)>, Vec<u8>);

#[derive(Debug, Default)]
struct Groups {
    table: BTreeMap<GroupId, Group>,
    /// Sessions per key (key bytes), sorted by start, never overlapping.
    sessions: BTreeMap<Vec<u8>, Vec<Group>>,
}

impl Groups {
    fn rows(&self) -> usize {
        self.table.len() + self.sessions.values().map(Vec::len).sum::<usize>()
    }
}

/// `event_aggregate`: see the module docs. Emits
/// `{window: {start, end}, key: {field: value, ...}, <aggregate>: value, ...}` records
/// (`window` only when grouped in time, `key` only with key fields).
pub struct EventAggregate {
    spec: AggregateSpec,
    time: Option<TimeSpec>,
    clock: Arc<EventClock>,
    step: usize,
    /// Whether the watermark drops late rows and evicts state here.
    evicts: bool,
    /// Index of the key that is the event time itself, if any.
    time_key: Option<usize>,
    /// Gives each row's session gap, for sessions without a fixed one.
    gap_udf: Option<BoundUdf>,
    groups: Mutex<Groups>,
}

impl EventAggregate {
    /// The step `id` (`stream/step number`), reading event time with `time` (the
    /// `event_time` step before it, if any).
    pub fn new(
        spec: AggregateSpec,
        time: Option<TimeSpec>,
        gap_udf: Option<BoundUdf>,
        clock: Arc<EventClock>,
        id: String,
    ) -> Self {
        let time_key = time
            .as_ref()
            .and_then(TimeSpec::name)
            .and_then(|name| spec.keys.iter().position(|key| key == name));
        let timed = time_key.is_some() || spec.grouping != Grouping::Keys;
        let evicts = clock.watermarked() && timed && spec.mode != OutputMode::Complete;
        let step = clock.register_step(id, evicts);
        Self {
            spec,
            time,
            clock,
            step,
            evicts,
            time_key,
            gap_udf,
            groups: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn time(&self, record: &Value, step: &str) -> Result<Option<i64>> {
        match &self.time {
            Some(time) => time.time_of(record, step),
            None => bail!("{step}: windows need an `event_time` step before this one"),
        }
    }

    fn fresh_accs(&self, record: &Value, step: &str) -> Result<Vec<Acc>> {
        self.spec
            .aggregates
            .iter()
            .map(|agg| {
                let mut acc = match agg.function {
                    AggFn::Count => Acc::Count(0),
                    AggFn::Sum => Acc::Sum(Value::Null),
                    AggFn::Min => Acc::Min(Value::Null),
                    AggFn::Max => Acc::Max(Value::Null),
                    AggFn::Avg => Acc::Avg(0.0, 0),
                    AggFn::Last => Acc::Last(Value::Null),
                };
                let value = match &agg.field {
                    Some(field) => Some(record::field(record, field, step)?),
                    None => None,
                };
                acc.add(value, step)?;
                Ok(acc)
            })
            .collect()
    }

    fn output(&self, group: &Group) -> Value {
        let mut fields = Vec::with_capacity(self.spec.aggregates.len() + 2);
        if let Some(window) = group.window {
            fields.push(("window", record::window(window)));
        }
        if !self.spec.keys.is_empty() {
            fields.push(("key", group.key.clone()));
        }
        for (agg, acc) in self.spec.aggregates.iter().zip(&group.accs) {
            fields.push((agg.name.as_str(), acc.value()));
        }
        record::record(fields)
    }

    fn sorted(&self, mut records: Vec<Value>) -> Vec<Value> {
        for (field, descending) in self.spec.order_by.iter().rev() {
            let value = |record: &Value| {
                record
                    .field(field)
                    .or_else(|| record.field("key").and_then(|key| key.field(field)))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            records.sort_by(|a, b| {
                let order = record::compare(&value(a), &value(b));
                if *descending { order.reverse() } else { order }
            });
        }
        records
    }
}

impl EventAggregate {
    /// Each record's session gap from the gap UDF, if the step has one.
    fn gaps(&self, data: &Dataset, step: &str) -> Result<Vec<i64>> {
        let Some(udf) = &self.gap_udf else {
            return Ok(Vec::new());
        };
        let answers = udf.records(data.concatenated())?;
        values(&Dataset::from_partitions(vec![answers]))?
            .into_iter()
            .map(|gap| match gap {
                Value::Int(gap) => Ok(gap),
                other => bail!(
                    "{step}: the session gap function `{}` returned {}, not milliseconds",
                    udf.label(),
                    other.to_json()
                ),
            })
            .collect()
    }
}

fn merge_into(target: &mut [Acc], from: &[Acc], step: &str) -> Result<()> {
    target
        .iter_mut()
        .zip(from)
        .try_for_each(|(acc, other)| acc.merge(other, step))
}

impl Operator for EventAggregate {
    fn describe(&self) -> String {
        format!(
            "event_aggregate {:?} by {:?}",
            self.spec.grouping, self.spec.keys
        )
    }

    fn apply(&self, inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        let data = single(inputs)?;
        let Some((late_with, evict_with)) = self.clock.watermarks() else {
            return Ok(Dataset::default());
        };
        let step = self.describe();
        let is_late = |close: Option<i64>| self.evicts && close.is_some_and(|c| c <= late_with);
        let mut groups = self.lock();
        let mut touched: BTreeSet<GroupId> = BTreeSet::new();
        let mut late_groups: HashSet<GroupId> = HashSet::new();
        let mut late_rows = 0;
        let gaps = self.gaps(&data, &step)?;
        for (index, record) in values(&data)?.into_iter().enumerate() {
            let key_fields = self
                .spec
                .keys
                .iter()
                .map(|key| Ok((key.as_str(), record::field(&record, key, &step)?.clone())))
                .collect::<Result<Vec<_>>>()?;
            let key = record::record(key_fields);
            let key_bytes = key.to_bytes();
            let (windows, close_of_key) = match self.spec.grouping {
                Grouping::Keys => {
                    let close = match self.time_key {
                        Some(_) => self.time(&record, &step)?,
                        None => None,
                    };
                    (vec![None], close)
                }
                Grouping::Window(spec) => match self.time(&record, &step)? {
                    Some(time) => (spec.windows_of(time).map(Some).collect(), None),
                    None => continue,
                },
                Grouping::Session { gap_ms } => {
                    let gap_ms = gap_ms.or_else(|| gaps.get(index).copied()).unwrap_or(0);
                    match self.time(&record, &step)? {
                        Some(time) if gap_ms > 0 => (vec![Some((time, time + gap_ms))], None),
                        _ => continue,
                    }
                }
            };
            let mut counted = false;
            for window in windows {
                let close = window.map(|(_, end)| end).or(close_of_key);
                let id = (window, key_bytes.clone());
                if is_late(close) {
                    late_groups.insert(id);
                    continue;
                }
                counted = true;
                let accs = self.fresh_accs(&record, &step)?;
                if let Grouping::Session { .. } = self.spec.grouping {
                    let (start, end) = window.expect("a session has bounds");
                    let sessions = groups.sessions.entry(key_bytes.clone()).or_default();
                    let mut merged = Group {
                        key: key.clone(),
                        window: Some((start, end)),
                        close: Some(end),
                        accs,
                    };
                    let mut kept = Vec::with_capacity(sessions.len() + 1);
                    for session in sessions.drain(..) {
                        let (s, e) = session.window.expect("a session has bounds");
                        let (ms, me) = merged.window.expect("a session has bounds");
                        if s <= me && ms <= e {
                            let mut accs = session.accs;
                            merge_into(&mut accs, &merged.accs, &step)?;
                            let bounds = (s.min(ms), e.max(me));
                            merged = Group {
                                key: merged.key,
                                window: Some(bounds),
                                close: Some(bounds.1),
                                accs,
                            };
                        } else {
                            kept.push(session);
                        }
                    }
                    kept.push(merged);
                    kept.sort_by_key(|session| session.window);
                    *sessions = kept;
                    continue;
                }
                match groups.table.get_mut(&id) {
                    Some(group) => merge_into(&mut group.accs, &accs, &step)?,
                    None => {
                        groups.table.insert(
                            id.clone(),
                            Group {
                                key: key.clone(),
                                window,
                                close,
                                accs,
                            },
                        );
                    }
                }
                touched.insert(id);
            }
            if !counted {
                late_rows += 1;
            }
        }
        let mut evicted = Vec::new();
        if self.evicts {
            let due = |group: &Group| group.close.is_some_and(|close| close <= evict_with);
            let ids: Vec<GroupId> = groups
                .table
                .iter()
                .filter(|(_, group)| due(group))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                evicted.extend(groups.table.remove(&id));
            }
            for sessions in groups.sessions.values_mut() {
                let (done, open): (Vec<Group>, Vec<Group>) = sessions.drain(..).partition(due);
                evicted.extend(done);
                *sessions = open;
            }
            groups.sessions.retain(|_, sessions| !sessions.is_empty());
        }
        let out: Vec<Value> = match self.spec.mode {
            OutputMode::Append => {
                evicted.sort_by(|a, b| {
                    (a.window, a.key.to_bytes()).cmp(&(b.window, b.key.to_bytes()))
                });
                evicted.iter().map(|group| self.output(group)).collect()
            }
            OutputMode::Update => touched
                .iter()
                .filter_map(|id| groups.table.get(id))
                .map(|group| self.output(group))
                .collect(),
            OutputMode::Complete => self.sorted(
                groups
                    .table
                    .values()
                    .chain(groups.sessions.values().flatten())
                    .map(|group| self.output(group))
                    .collect(),
            ),
        };
        self.clock
            .report(self.step, groups.rows(), late_groups.len(), late_rows);
        Ok(dataset(&out))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

fn save_group(group: &Group) -> Value {
    let pair = |bounds: Option<(i64, i64)>| match bounds {
        Some((start, end)) => Value::Tuple(vec![Value::Int(start), Value::Int(end)]),
        None => Value::Null,
    };
    Value::Tuple(vec![
        group.key.clone(),
        pair(group.window),
        group.close.map_or(Value::Null, Value::Int),
        Value::List(group.accs.iter().map(Acc::save).collect()),
    ])
}

fn restore_group(saved: &Value) -> Result<Group> {
    let Value::Tuple(parts) = saved else {
        bail!("a checkpointed group is not a tuple")
    };
    let [key, window, close, Value::List(accs)] = parts.as_slice() else {
        bail!("a checkpointed group is malformed")
    };
    let window = match window {
        Value::Tuple(bounds) => match bounds.as_slice() {
            [Value::Int(start), Value::Int(end)] => Some((*start, *end)),
            _ => bail!("a checkpointed window is malformed"),
        },
        _ => None,
    };
    Ok(Group {
        key: key.clone(),
        window,
        close: match close {
            Value::Int(close) => Some(*close),
            _ => None,
        },
        accs: accs.iter().map(Acc::restore).collect::<Result<_>>()?,
    })
}

/// Every group and session, with its aggregates.
impl OperatorState for EventAggregate {
    fn kind(&self) -> &'static str {
        "event_aggregate"
    }

    fn save(&self) -> Vec<u8> {
        let groups = self.lock();
        let table = groups.table.values().map(save_group).collect();
        let sessions = groups.sessions.values().flatten().map(save_group).collect();
        Value::Tuple(vec![Value::List(table), Value::List(sessions)]).to_bytes()
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let saved = Value::decode(saved)?;
        let Value::Tuple(parts) = &saved else {
            bail!("the checkpointed aggregation state is not a tuple")
        };
        let [Value::List(table), Value::List(sessions)] = parts.as_slice() else {
            bail!("the checkpointed aggregation state is malformed")
        };
        let mut restored = Groups::default();
        for group in table {
            let group = restore_group(group)?;
            restored
                .table
                .insert((group.window, group.key.to_bytes()), group);
        }
        for session in sessions {
            let session = restore_group(session)?;
            restored
                .sessions
                .entry(session.key.to_bytes())
                .or_default()
                .push(session);
        }
        *self.lock() = restored;
        Ok(())
    }

    fn entries(&self) -> usize {
        self.lock().rows()
    }
}
