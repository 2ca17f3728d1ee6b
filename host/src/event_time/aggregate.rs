//! Event-time aggregation: grouped by a window (tumbling, sliding or session) of the
//! event time and optional key fields, with built-in aggregates, in one of Spark's
//! output modes, late rows dropped and state evicted by the watermark.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sluice_abi::encoding::Encoder;
use sluice_abi::{Batch, Groups as ValueGroups, Value};

use super::clock::EventClock;
use super::late::{LateCollector, LateRows};
use super::record::{self, Acc, field_bytes};
use super::step::{EventTimes, dataset, values};
use super::table::{self, KeyTable};
use super::windows::WindowSpec;
use crate::dataset::Dataset;
use crate::manifest::UdfRef;
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
    /// The field's values folded by a reduce UDF (`(a, b) -> c`, of one type).
    Reduce,
    /// The field's values folded into an accumulator, from a zero, by a fold UDF
    /// (`(accumulator, value) -> accumulator`).
    Fold,
}

/// One aggregate of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    /// The function.
    pub function: AggFn,
    /// The field it reads (`None` for `count`, and the whole record for a UDF).
    pub field: Option<String>,
    /// The output field's name.
    pub name: String,
    /// The function of [`AggFn::Reduce`] and [`AggFn::Fold`].
    pub udf: Option<UdfRef>,
    /// A fold's first accumulator, as JSON (see docs/manifest.md, "JSON values").
    pub zero: Option<String>,
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
    window: Option<(i64, i64)>,
    /// The event time past which the group is final: its window's end, or its time.
    close: Option<i64>,
    accs: Vec<Acc>,
}

type GroupId = (Option<(i64, i64)>, Vec<u8>);

/// Where a row goes: its window (none when grouped by keys only) and the event time past
/// which that group is final.
type Placement = (Option<(i64, i64)>, Option<i64>);

/// Groups are kept in this many shards, by their key's hash: a batch's rows are grouped,
/// and its groups evicted and emitted, shard by shard on all cores; each shard's output
/// rows are a partition of the step's output.
const SHARDS: usize = 4;

/// The shard of the key of hash `hash`.
fn shard_of(hash: u64) -> usize {
    // Bits a key table uses neither for its bucket (the lowest) nor for its tag (the top 7).
    (hash >> 32) as usize % SHARDS
}

/// The groups of one shard.
#[derive(Debug, Default)]
struct Shard {
    /// Sessions, per key (its canonical encoding): sorted by start, never overlapping.
    by_key: FxHashMap<Vec<u8>, Vec<Group>>,
    /// Windows and groups by keys only: per placement, its groups by key, each with its
    /// aggregates. A placement's groups close together, so eviction drops whole tables.
    placed: BTreeMap<Placement, KeyTable<Acc>>,
    /// Evicted tables, emptied, for the next placements (a window's table is as big as
    /// the next one's, and growing it again each window is most of the cost of a group).
    spare: Vec<KeyTable<Acc>>,
    /// The bytes `by_key`'s sessions count for ([`session_bytes`] each), counted as
    /// sessions come, merge and go.
    session_bytes: usize,
}

/// The bytes a session of a key of `key_len` bytes with `width` aggregates counts for.
/// An aggregate counts at its own size (a value it holds, a string's min, is not walked).
fn session_bytes(key_len: usize, width: usize) -> usize {
    key_len + std::mem::size_of::<Group>() + width * std::mem::size_of::<Acc>()
}

/// A shard's tables while a batch's rows are grouped, taken out of their map: a row finds
/// its windows' tables among those the row before it used, or else by hash, rather than
/// by a search of the map.
struct OpenTables {
    tables: Vec<(Placement, KeyTable<Acc>)>,
    index: FxHashMap<Placement, usize>,
    /// Per place in a row's list of placements, the table the last row used there.
    recent: Vec<(Placement, usize)>,
}

impl OpenTables {
    /// Takes every table of `placed`.
    fn take(placed: &mut BTreeMap<Placement, KeyTable<Acc>>) -> Self {
        let tables: Vec<_> = std::mem::take(placed).into_iter().collect();
        let index = tables
            .iter()
            .enumerate()
            .map(|(at, (placement, _))| (*placement, at))
            .collect();
        Self {
            tables,
            index,
            recent: Vec::new(),
        }
    }

    /// The table of `placement`, the `slot`th of its row's (a new one from `new` if there
    /// is none).
    fn table(
        &mut self,
        slot: usize,
        placement: Placement,
        new: impl FnOnce() -> KeyTable<Acc>,
    ) -> &mut KeyTable<Acc> {
        let at = match self.recent.get(slot) {
            Some(&(recent, at)) if recent == placement => at,
            _ => {
                let at = *self.index.entry(placement).or_insert_with(|| {
                    self.tables.push((placement, new()));
                    self.tables.len() - 1
                });
                if slot >= self.recent.len() {
                    self.recent.resize(slot + 1, (placement, at));
                }
                self.recent[slot] = (placement, at);
                at
            }
        };
        &mut self.tables[at].1
    }

    /// Puts every table (those added too) back into `placed`.
    fn put_back(self, placed: &mut BTreeMap<Placement, KeyTable<Acc>>) {
        placed.extend(self.tables);
    }
}

/// Spare tables a shard keeps at most.
const SPARE_TABLES: usize = 2;

impl Shard {
    fn rows(&self) -> usize {
        self.by_key.values().map(Vec::len).sum::<usize>()
            + self.placed.values().map(KeyTable::len).sum::<usize>()
    }

    /// The bytes its groups count for: the sessions' as counted, each placement's table's
    /// from its lengths.
    fn bytes(&self) -> usize {
        self.session_bytes + self.placed.values().map(KeyTable::bytes).sum::<usize>()
    }

    /// Every group's aggregates.
    fn accs_mut(&mut self) -> impl Iterator<Item = &mut [Acc]> {
        let sessions = self
            .by_key
            .values_mut()
            .flatten()
            .map(|group| group.accs.as_mut_slice());
        sessions.chain(self.placed.values_mut().flat_map(KeyTable::all_values_mut))
    }
}

/// The encodings of the parts of group keys and output records that are the same in all,
/// written once a batch rather than once a record.
struct Shape {
    /// A key's struct header.
    key_header: Vec<u8>,
    /// Per key field, its name.
    key_names: Vec<Vec<u8>>,
    /// An output record's struct header, its field name `window`, the window's struct
    /// header and its field name `start`.
    windowed_header: Vec<u8>,
    /// An output record's struct header, when grouped by keys only.
    header: Vec<u8>,
    /// The field names `end` and `key`.
    end: Vec<u8>,
    key: Vec<u8>,
    /// Per aggregate, its output field's name.
    aggregates: Vec<Vec<u8>>,
}

/// One output row: its window, key (encoded) and aggregates.
type Row<'a> = (Option<(i64, i64)>, &'a [u8], &'a [Acc]);

/// `event_aggregate`: see the module docs. Emits
/// `{window: {start, end}, key: {field: value, ...}, <aggregate>: value, ...}` records
/// (`window` only when grouped in time, `key` only with key fields).
pub struct EventAggregate {
    spec: AggregateSpec,
    time: Option<EventTimes>,
    clock: Arc<EventClock>,
    step: usize,
    /// Whether the watermark drops late rows and evicts state here.
    evicts: bool,
    /// Index of the key that is the event time itself, if any.
    time_key: Option<usize>,
    /// Gives each row's session gap, for sessions without a fixed one.
    gap_udf: Option<BoundUdf>,
    /// Per aggregate, its reduce or fold function and a fold's zero.
    folds: Vec<Option<(BoundUdf, Option<Value>)>>,
    shards: Mutex<Vec<Shard>>,
    /// Where the rows late for every window they fall in go, if the step routes them.
    late: Option<Arc<LateRows>>,
}

impl EventAggregate {
    /// The step `id` (`stream/step number`), reading event time with `time` (the
    /// `event_time` step before it, if any); `udfs` holds, per aggregate, the function
    /// of a reduce or fold.
    pub fn new(
        spec: AggregateSpec,
        time: Option<EventTimes>,
        gap_udf: Option<BoundUdf>,
        udfs: Vec<Option<BoundUdf>>,
        clock: Arc<EventClock>,
        id: String,
    ) -> Result<Self> {
        let folds = spec
            .aggregates
            .iter()
            .zip(udfs)
            .map(|(agg, udf)| {
                let Some(udf) = udf else { return Ok(None) };
                let zero = agg
                    .zero
                    .as_deref()
                    .map(crate::json::parse)
                    .transpose()
                    .with_context(|| format!("step `{id}`: the zero of `{}`", agg.name))?;
                Ok(Some((udf, zero)))
            })
            .collect::<Result<_>>()?;
        let time_key = time
            .as_ref()
            .and_then(EventTimes::name)
            .and_then(|name| spec.keys.iter().position(|key| key == name));
        let timed = time_key.is_some() || spec.grouping != Grouping::Keys;
        let evicts = clock.watermarked() && timed && spec.mode != OutputMode::Complete;
        let step = clock.register_step(id, evicts);
        Ok(Self {
            spec,
            time,
            clock,
            step,
            evicts,
            time_key,
            gap_udf,
            folds,
            shards: Mutex::new(new_shards()),
            late: None,
        })
    }

    /// Routes the rows late for every window they fall in to `late` (each once).
    pub fn with_late_rows(mut self, late: Arc<LateRows>) -> Self {
        self.late = Some(late);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Shard>> {
        self.shards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the grouping needs each row's event time.
    fn timed(&self) -> bool {
        self.spec.grouping != Grouping::Keys || self.time_key.is_some()
    }

    /// The event times of the records of `data` when it carries them or a UDF gives them
    /// (a call for the batch); `None` when each record's time is read as it is grouped
    /// ([`Self::time_of`]).
    fn times<'d>(&self, data: &'d Dataset, step: &str) -> Result<Option<Cow<'d, [Option<i64>]>>> {
        match &self.time {
            Some(time) if self.timed() => match time.carried(data) {
                Some(times) => Ok(Some(Cow::Borrowed(times))),
                None if time.udf.is_some() => {
                    time.times(data, step).map(|times| Some(times.into()))
                }
                None => Ok(None),
            },
            Some(_) => Ok(None),
            None if self.timed() => {
                bail!("{step}: windows need an `event_time` step before this one")
            }
            None => Ok(None),
        }
    }

    /// The event time of `record`, where the grouping needs it (not for a UDF's times).
    fn time_of(&self, record: &[u8], step: &str) -> Result<Option<i64>> {
        match &self.time {
            Some(time) if self.timed() => time.time_in(record, step),
            _ => Ok(None),
        }
    }

    /// What aggregate `agg` reads of the encoded `record`: a field, the whole record
    /// (UDFs without a field), or nothing (`count`).
    fn input_of(&self, agg: &AggSpec, record: &[u8], step: &str) -> Result<Option<Value>> {
        let bytes = match (&agg.field, agg.function) {
            (Some(field), _) => field_bytes(record, field, step)?,
            (None, AggFn::Reduce | AggFn::Fold) => record,
            (None, _) => return Ok(None),
        };
        Value::decode(bytes)
            .map(Some)
            .context("a record does not decode")
    }

    /// Folds `record` into a group's aggregates.
    fn add(&self, accs: &mut [Acc], record: &[u8], step: &str) -> Result<()> {
        for (agg, acc) in self.spec.aggregates.iter().zip(accs) {
            acc.add(self.input_of(agg, record, step)?.as_ref(), step)?;
        }
        Ok(())
    }

    /// Appends the canonical encoding of the group key of `record`, the struct
    /// `{key field: value, ...}`, to `out`, without decoding the record.
    fn key_of(&self, shape: &Shape, record: &[u8], out: &mut Vec<u8>, step: &str) -> Result<()> {
        out.extend_from_slice(&shape.key_header);
        for (key, name) in self.spec.keys.iter().zip(&shape.key_names) {
            out.extend_from_slice(name);
            out.extend_from_slice(field_bytes(record, key, step)?);
        }
        Ok(())
    }

    /// The encodings of the parts of keys and output records that are the same in all.
    fn shape(&self) -> Shape {
        let encoded = |write: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = Vec::new();
            write(&mut bytes);
            bytes
        };
        let name = |name: &str| encoded(&|out| Encoder::new(out).field_name(name));
        let fields = self.spec.aggregates.len() + usize::from(!self.spec.keys.is_empty());
        Shape {
            key_header: encoded(&|out| Encoder::new(out).struct_header(self.spec.keys.len())),
            key_names: self.spec.keys.iter().map(|key| name(key)).collect(),
            windowed_header: encoded(&|out| {
                Encoder::new(out).struct_header(fields + 1);
                Encoder::new(out).field_name("window");
                Encoder::new(out).struct_header(2);
                Encoder::new(out).field_name("start");
            }),
            header: encoded(&|out| Encoder::new(out).struct_header(fields)),
            end: name("end"),
            key: name("key"),
            aggregates: self
                .spec
                .aggregates
                .iter()
                .map(|agg| name(&agg.name))
                .collect(),
        }
    }

    fn fresh_accs(&self, record: &[u8], step: &str) -> Result<Vec<Acc>> {
        let mut accs = Vec::with_capacity(self.spec.aggregates.len());
        self.fresh_accs_into(record, step, &mut accs)?;
        Ok(accs)
    }

    /// Appends to `accs` the aggregates of a new group of `record`.
    fn fresh_accs_into(&self, record: &[u8], step: &str, accs: &mut Vec<Acc>) -> Result<()> {
        for (agg, fold) in self.spec.aggregates.iter().zip(&self.folds) {
            accs.push({
                let mut acc = match agg.function {
                    AggFn::Count => Acc::Count(0),
                    AggFn::Sum => Acc::Sum(Value::Null),
                    AggFn::Min => Acc::Min(Value::Null),
                    AggFn::Max => Acc::Max(Value::Null),
                    AggFn::Avg => Acc::Avg(0.0, 0),
                    AggFn::Last => Acc::Last(Value::Null),
                    AggFn::Reduce | AggFn::Fold => {
                        Acc::Udf(fold.iter().filter_map(|(_, zero)| zero.clone()).collect())
                    }
                };
                acc.add(self.input_of(agg, record, step)?.as_ref(), step)?;
                acc
            });
        }
        Ok(())
    }

    /// Folds every UDF accumulator's pending values to one value: one call of each
    /// function for all the groups that got values.
    fn fold_pending(&self, shards: &mut [Shard], step: &str) -> Result<()> {
        for (index, fold) in self.folds.iter().enumerate() {
            let Some((udf, _)) = fold else { continue };
            let mut pending: Vec<&mut Acc> = shards
                .iter_mut()
                .flat_map(Shard::accs_mut)
                .map(|accs| &mut accs[index])
                .filter(|acc| acc.unfolded().is_some())
                .collect();
            if pending.is_empty() {
                continue;
            }
            let mut records = Batch::new();
            let mut ends = Vec::with_capacity(pending.len());
            for acc in &pending {
                for value in acc.unfolded().into_iter().flatten() {
                    records.push_with(|out| value.encode_into(out));
                }
                ends.push(u32::try_from(records.len()).context("too many values to fold")?);
            }
            let name = &self.spec.aggregates[index].name;
            let folded = udf
                .aggregate(ValueGroups::from_parts(records, ends)?)
                .with_context(|| format!("{step}: aggregate `{name}`"))?;
            for (acc, result) in pending.iter_mut().zip(folded.iter()) {
                let result = Value::decode(result)
                    .with_context(|| format!("{step}: aggregate `{name}` returned bad bytes"))?;
                **acc = Acc::Udf(vec![result]);
            }
        }
        Ok(())
    }

    /// Appends the output record of a group (its window, key and aggregates) to `out`.
    fn output(&self, shape: &Shape, (window, key, accs): Row, out: &mut Vec<u8>) {
        if let Some((start, end)) = window {
            out.extend_from_slice(&shape.windowed_header);
            Encoder::new(out).write_int(start);
            out.extend_from_slice(&shape.end);
            Encoder::new(out).write_int(end);
        } else {
            out.extend_from_slice(&shape.header);
        }
        if !self.spec.keys.is_empty() {
            out.extend_from_slice(&shape.key);
            out.extend_from_slice(key);
        }
        for (name, acc) in shape.aggregates.iter().zip(accs) {
            out.extend_from_slice(name);
            match acc {
                Acc::Count(count) => Encoder::new(out).write_int(*count),
                other => other.value().encode_into(out),
            }
        }
    }

    fn sorted(&self, mut records: Vec<Value>) -> Vec<Value> {
        // Rows equal by `order_by` keep the order of their window and key, whatever shard
        // their group is in.
        records.sort_by_cached_key(|record| {
            let bound = |name| match record.field("window").and_then(|window| window.field(name)) {
                Some(Value::Int(ms)) => Some(*ms),
                _ => None,
            };
            (
                bound("start").zip(bound("end")),
                record.field("key").map(Value::to_bytes),
            )
        });
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

/// Adds the session `bounds` (with `accs`) to a key's sessions, merging every session it
/// overlaps or touches.
fn merge_session(
    sessions: &mut Vec<Group>,
    bounds: (i64, i64),
    accs: Vec<Acc>,
    step: &str,
) -> Result<()> {
    let mut merged = Group {
        window: Some(bounds),
        close: Some(bounds.1),
        accs,
    };
    let mut kept = Vec::with_capacity(sessions.len() + 1);
    for session in sessions.drain(..) {
        let (s, e) = session.window.expect("a session has bounds");
        let (ms, me) = merged.window.expect("a session has bounds");
        if s <= me && ms <= e {
            let mut accs = session.accs;
            merge_into(&mut accs, &merged.accs, step)?;
            let bounds = (s.min(ms), e.max(me));
            merged = Group {
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
    Ok(())
}

fn merge_into(target: &mut [Acc], from: &[Acc], step: &str) -> Result<()> {
    target
        .iter_mut()
        .zip(from)
        .try_for_each(|(acc, other)| acc.merge(other, step))
}

/// A record of the batch as read for grouping.
struct Read {
    /// Its index in the batch.
    record: usize,
    /// Where its key's encoding is in its partition's [`ReadPartition::keys`].
    key: Range<usize>,
    /// The key's hash.
    hash: u64,
    /// Its event time, where the grouping needs it.
    time: Option<i64>,
}

/// The records of one partition of a batch, read: their keys' encodings one after
/// another, and per shard the records whose key it holds, in order.
struct ReadPartition {
    /// The index in the batch of the partition's first record.
    first: usize,
    keys: Vec<u8>,
    shards: Vec<Vec<Read>>,
}

/// What grouping a shard's rows of a batch found late.
#[derive(Default)]
struct Late {
    /// The (window, key) groups late rows fell in.
    groups: HashSet<GroupId>,
    /// The records that fell in no group, all late.
    records: Vec<usize>,
}

fn new_shards() -> Vec<Shard> {
    (0..SHARDS).map(|_| Shard::default()).collect()
}

/// What one batch runs with: its watermarks, and what the step's settings make of them.
struct Run<'a> {
    step: &'a str,
    late_with: i64,
    evict_with: i64,
    data: &'a Dataset,
    gaps: &'a [i64],
}

impl EventAggregate {
    /// Reads the records of `partition` (the first is record `first` of the batch): their
    /// keys, their hashes and, unless `times` has them, their event times.
    fn read(
        &self,
        partition: &Batch,
        first: usize,
        times: Option<&[Option<i64>]>,
        step: &str,
    ) -> Result<ReadPartition> {
        let shape = self.shape();
        let mut keys = Vec::with_capacity(partition.data().len());
        let mut shards: Vec<Vec<Read>> = (0..SHARDS)
            .map(|_| Vec::with_capacity(partition.len() / SHARDS * 5 / 4))
            .collect();
        for (offset, record) in partition.iter().enumerate() {
            crate::scheduler::slice::tick()?;
            let index = first + offset;
            let time = match times {
                Some(times) => times[index],
                None => self.time_of(record, step)?,
            };
            let start = keys.len();
            self.key_of(&shape, record, &mut keys, step)?;
            let hash = table::hash(&keys[start..]);
            shards[shard_of(hash)].push(Read {
                record: index,
                key: start..keys.len(),
                hash,
                time,
            });
        }
        Ok(ReadPartition {
            first,
            keys,
            shards,
        })
    }

    /// Groups the rows of shard `index` of the batch (read into `read`) into `shard`.
    fn group(
        &self,
        shard: &mut Shard,
        index: usize,
        read: &[ReadPartition],
        run: &Run,
    ) -> Result<Late> {
        let mut tables = OpenTables::take(&mut shard.placed);
        let grouped = self.group_rows(shard, &mut tables, index, read, run);
        tables.put_back(&mut shard.placed);
        grouped
    }

    /// [`Self::group`], with the shard's tables taken out into `tables`.
    fn group_rows(
        &self,
        shard: &mut Shard,
        tables: &mut OpenTables,
        index: usize,
        read: &[ReadPartition],
        run: &Run,
    ) -> Result<Late> {
        let step = run.step;
        let is_late = |close: Option<i64>| self.evicts && close.is_some_and(|c| c <= run.late_with);
        let session = matches!(self.spec.grouping, Grouping::Session { .. });
        let update = self.spec.mode == OutputMode::Update;
        let width = self.spec.aggregates.len();
        let mut late = Late::default();
        // Reused for every record: its (group, close) pairs, and a new group's aggregates.
        let mut placed: Vec<Placement> = Vec::new();
        let mut fresh = Vec::with_capacity(width);
        for (partition, part) in run.data.partitions().iter().zip(read) {
            for row in &part.shards[index] {
                crate::scheduler::slice::tick()?;
                let record = partition.get(row.record - part.first);
                let key = &part.keys[row.key.clone()];
                placed.clear();
                match (self.spec.grouping, row.time) {
                    (Grouping::Keys, time) => placed.push((None, time)),
                    (Grouping::Window(spec), Some(time)) => placed.extend(
                        spec.windows_of(time)
                            .map(|window| (Some(window), Some(window.1))),
                    ),
                    (Grouping::Session { gap_ms }, Some(time)) => {
                        let gap_ms = gap_ms
                            .or_else(|| run.gaps.get(row.record).copied())
                            .unwrap_or(0);
                        if gap_ms <= 0 {
                            continue;
                        }
                        placed.push((Some((time, time + gap_ms)), Some(time + gap_ms)));
                    }
                    (_, None) => continue,
                }
                let mut counted = false;
                for (slot, &(window, close)) in placed.iter().enumerate() {
                    if is_late(close) {
                        late.groups.insert((window, key.to_vec()));
                        continue;
                    }
                    counted = true;
                    if session {
                        let of_key = match shard.by_key.get_mut(key) {
                            Some(of_key) => of_key,
                            None => shard.by_key.entry(key.to_vec()).or_default(),
                        };
                        let accs = self.fresh_accs(record, step)?;
                        let before = of_key.len();
                        merge_session(of_key, window.expect("a session has bounds"), accs, step)?;
                        let one = session_bytes(key.len(), width);
                        shard.session_bytes =
                            shard.session_bytes + of_key.len() * one - before * one;
                        continue;
                    }
                    let table = tables.table(slot, (window, close), || {
                        shard.spare.pop().unwrap_or_else(|| KeyTable::new(width))
                    });
                    let group = match table.find(row.hash, key) {
                        Some(group) => {
                            self.add(table.values_mut(group), record, step)?;
                            group
                        }
                        None => {
                            self.fresh_accs_into(record, step, &mut fresh)?;
                            table.insert(row.hash, key, fresh.drain(..))
                        }
                    };
                    if update {
                        table.mark_changed(group);
                    }
                }
                if !counted {
                    late.records.push(row.record);
                }
            }
        }
        Ok(late)
    }

    /// Evicts what the watermark closed from `shard` and encodes its output rows: sessions
    /// sorted by window and key (they are kept in a hash map, whose order a restore
    /// changes), then windows' groups by window, each window's in the order its groups
    /// came (which a checkpoint keeps), so that a re-run batch emits what it did.
    fn emit(&self, shard: &mut Shard, run: &Run) -> Result<Batch> {
        let mut evicted = Vec::new();
        let mut evicted_sessions = Vec::new();
        if self.evicts {
            let due = |close: Option<i64>| close.is_some_and(|close| close <= run.evict_with);
            evicted.extend(shard.placed.extract_if(.., |&(_, close), _| due(close)));
            for (key, of_key) in shard.by_key.iter_mut() {
                crate::scheduler::slice::tick()?;
                evicted_sessions.extend(
                    of_key
                        .extract_if(.., |group| due(group.close))
                        .map(|group| (key.clone(), group)),
                );
            }
            shard.by_key.retain(|_, of_key| !of_key.is_empty());
            let width = self.spec.aggregates.len();
            shard.session_bytes -= evicted_sessions
                .iter()
                .map(|(key, _): &(Vec<u8>, Group)| session_bytes(key.len(), width))
                .sum::<usize>();
        }
        let mut sessions: Vec<Row> = match self.spec.mode {
            OutputMode::Append => evicted_sessions
                .iter()
                .map(|(key, group)| session_row(key, group))
                .collect(),
            OutputMode::Update => Vec::new(),
            OutputMode::Complete => shard
                .by_key
                .iter()
                .flat_map(|(key, of_key)| of_key.iter().map(move |group| session_row(key, group)))
                .collect(),
        };
        sessions.sort_unstable_by(|(a_window, a_key, _), (b_window, b_key, _)| {
            (a_window, a_key).cmp(&(b_window, b_key))
        });
        // Update mode: the groups that changed and were not evicted.
        let changed: Vec<(Placement, Vec<usize>)> = match self.spec.mode {
            OutputMode::Update => shard
                .placed
                .iter_mut()
                .map(|(placement, table)| (*placement, table.take_changed()))
                .collect(),
            OutputMode::Append | OutputMode::Complete => Vec::new(),
        };
        let groups: Vec<Row> = match self.spec.mode {
            OutputMode::Append => evicted
                .iter()
                .flat_map(|(placement, table)| table_rows(placement, table))
                .collect(),
            OutputMode::Update => changed
                .iter()
                .flat_map(|(placement, changed)| {
                    let table = &shard.placed[placement];
                    changed
                        .iter()
                        .map(move |&group| (placement.0, table.key(group), table.values(group)))
                })
                .collect(),
            OutputMode::Complete => shard
                .placed
                .iter()
                .flat_map(|(placement, table)| table_rows(placement, table))
                .collect(),
        };
        let shape = self.shape();
        let rows = sessions.len() + groups.len();
        let mut out = Batch::with_capacity(rows, rows * 64);
        for row in sessions.into_iter().chain(groups) {
            crate::scheduler::slice::tick()?;
            out.push_with(|bytes| self.output(&shape, row, bytes));
        }
        for (_, mut table) in evicted {
            if shard.spare.len() < SPARE_TABLES {
                table.clear();
                shard.spare.push(table);
            }
        }
        Ok(out)
    }
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
        let mut shards = self.lock();
        let mut routed = LateCollector::new(self.late.as_deref());
        let gaps = self.gaps(&data, &step)?;
        let times = self.times(&data, &step)?;
        let firsts = data.partitions().iter().scan(0, |first, partition| {
            let this = *first;
            *first += partition.len();
            Some(this)
        });
        let read = data
            .partitions()
            .par_iter()
            .zip(firsts.collect::<Vec<_>>())
            .map(|(partition, first)| self.read(partition, first, times.as_deref(), &step))
            .collect::<Result<Vec<_>>>()?;
        let run = Run {
            step: &step,
            late_with,
            evict_with,
            data: &data,
            gaps: &gaps,
        };
        let late = shards
            .par_iter_mut()
            .enumerate()
            .map(|(index, shard)| self.group(shard, index, &read, &run))
            .collect::<Result<Vec<_>>>()?;
        drop(read);
        self.fold_pending(&mut shards, &step)?;
        let out = shards
            .par_iter_mut()
            .map(|shard| self.emit(shard, &run))
            .collect::<Result<Vec<_>>>()?;
        let late_groups = late.iter().map(|late| late.groups.len()).sum();
        let mut late_rows: Vec<usize> = late.into_iter().flat_map(|late| late.records).collect();
        late_rows.sort_unstable();
        let records: Vec<&[u8]> = if self.late.is_some() {
            data.records().collect()
        } else {
            Vec::new()
        };
        late_rows
            .iter()
            .filter_map(|&index| Some((index, *records.get(index)?)))
            .for_each(|(index, record)| routed.dropped(index, record));
        let state_rows = shards.iter().map(Shard::rows).sum();
        self.clock
            .report(self.step, state_rows, late_groups, late_rows.len());
        routed.finish(self.late.as_deref());
        let out = Dataset::from_partitions(out);
        if self.spec.order_by.is_empty() {
            Ok(out)
        } else {
            Ok(dataset(&self.sorted(values(&out)?)))
        }
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

/// The output row of a session.
fn session_row<'a>(key: &'a [u8], session: &'a Group) -> Row<'a> {
    (session.window, key, &session.accs)
}

/// The output rows of the groups of a placement.
fn table_rows<'a>(
    (window, _): &Placement,
    table: &'a KeyTable<Acc>,
) -> impl Iterator<Item = Row<'a>> {
    let window = *window;
    table.groups().map(move |(key, accs)| (window, key, accs))
}

/// A group (`close` is the event time past which it is final) as a value, for checkpoints.
fn save_group((window, key, accs): Row, close: Option<i64>) -> Value {
    let pair = |bounds: Option<(i64, i64)>| match bounds {
        Some((start, end)) => Value::Tuple(vec![Value::Int(start), Value::Int(end)]),
        None => Value::Null,
    };
    Value::Tuple(vec![
        Value::Bytes(key.to_vec()),
        pair(window),
        close.map_or(Value::Null, Value::Int),
        Value::List(accs.iter().map(Acc::save).collect()),
    ])
}

/// A group saved by [`save_group`], with its key's encoding.
fn restore_group(saved: &Value) -> Result<(Vec<u8>, Group)> {
    let Value::Tuple(parts) = saved else {
        bail!("a checkpointed group is not a tuple")
    };
    let [Value::Bytes(key), window, close, Value::List(accs)] = parts.as_slice() else {
        bail!("a checkpointed group is malformed")
    };
    let window = match window {
        Value::Tuple(bounds) => match bounds.as_slice() {
            [Value::Int(start), Value::Int(end)] => Some((*start, *end)),
            _ => bail!("a checkpointed window is malformed"),
        },
        _ => None,
    };
    let group = Group {
        window,
        close: match close {
            Value::Int(close) => Some(*close),
            _ => None,
        },
        accs: accs.iter().map(Acc::restore).collect::<Result<_>>()?,
    };
    Ok((key.clone(), group))
}

/// Every group and session, with its aggregates.
impl OperatorState for EventAggregate {
    fn kind(&self) -> &'static str {
        "event_aggregate"
    }

    fn save(&self) -> Vec<u8> {
        let shards = self.lock();
        let sessions = shards.iter().flat_map(|shard| &shard.by_key);
        let sessions = sessions.flat_map(|(key, of_key)| {
            of_key
                .iter()
                .map(move |group| save_group((group.window, key, &group.accs), group.close))
        });
        let placed = shards.iter().flat_map(|shard| &shard.placed);
        let placed = placed.flat_map(|(&(window, close), table)| {
            table
                .groups()
                .map(move |(key, accs)| save_group((window, key, accs), close))
        });
        Value::List(sessions.chain(placed).collect()).to_bytes()
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let Value::List(saved) = Value::decode(saved)? else {
            bail!("the checkpointed aggregation state is not a list")
        };
        let mut restored = new_shards();
        let width = self.spec.aggregates.len();
        for group in &saved {
            let (key, group) = restore_group(group)?;
            if group.accs.len() != width {
                bail!(
                    "a checkpointed group has {} aggregates where the step has {width}",
                    group.accs.len()
                );
            }
            let hash = table::hash(&key);
            let shard = &mut restored[shard_of(hash)];
            if matches!(self.spec.grouping, Grouping::Session { .. }) {
                shard.session_bytes += session_bytes(key.len(), width);
                shard.by_key.entry(key).or_default().push(group);
                continue;
            }
            let table = shard
                .placed
                .entry((group.window, group.close))
                .or_insert_with(|| KeyTable::new(width));
            if table.find(hash, &key).is_some() {
                bail!("a checkpointed group is there twice");
            }
            table.insert(hash, &key, group.accs);
        }
        restored
            .iter_mut()
            .flat_map(|shard| shard.by_key.values_mut())
            .for_each(|of_key| of_key.sort_by_key(|group| group.window));
        *self.lock() = restored;
        Ok(())
    }

    fn entries(&self) -> usize {
        self.lock().iter().map(Shard::rows).sum()
    }

    fn bytes(&self) -> usize {
        self.lock().iter().map(Shard::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_time::{EventTimeSettings, TimeField, TimeSpec};

    fn event(key: &str, seconds: i64) -> Value {
        record::record(vec![
            ("k", Value::String(key.into())),
            ("t", Value::Int(seconds)),
        ])
    }

    /// An aggregation behind a 10 s watermark on field `t` (seconds).
    fn aggregation(
        grouping: Grouping,
        mode: OutputMode,
    ) -> (Arc<EventClock>, EventAggregate, usize) {
        let clock = Arc::new(EventClock::new(EventTimeSettings::default()));
        let input = clock.register_input(10_000);
        let time = TimeSpec {
            field: TimeField::Named("t".into()),
            unit_ms: 1000,
            delay_ms: Some(10_000),
        };
        let spec = AggregateSpec {
            keys: vec!["k".into()],
            grouping,
            aggregates: vec![AggSpec {
                function: AggFn::Count,
                field: None,
                name: "n".into(),
                udf: None,
                zero: None,
            }],
            mode,
            order_by: Vec::new(),
        };
        let aggregate = EventAggregate::new(
            spec,
            Some(EventTimes::read(time)),
            None,
            vec![None],
            clock.clone(),
            "s/1".into(),
        )
        .unwrap();
        (clock, aggregate, input)
    }

    /// Runs one batch; returns `(window start s, window end s, count)` per output record.
    fn batch(
        clock: &EventClock,
        aggregate: &EventAggregate,
        input: usize,
        events: &[(&str, i64)],
    ) -> Vec<(i64, i64, i64)> {
        let records: Vec<Value> = events.iter().map(|(k, t)| event(k, *t)).collect();
        clock.begin(!records.is_empty());
        let times: Vec<i64> = events.iter().map(|(_, t)| t * 1000).collect();
        clock.observe(input, &times);
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        let out = aggregate.apply(vec![dataset(&records)], &context).unwrap();
        clock.end();
        values(&out)
            .unwrap()
            .iter()
            .map(|record| {
                let bound = |name| match record.field("window").and_then(|w| w.field(name)) {
                    Some(Value::Int(ms)) => ms / 1000,
                    _ => panic!("no window in {}", record.to_json()),
                };
                let Some(Value::Int(n)) = record.field("n") else {
                    panic!("no count in {}", record.to_json())
                };
                (bound("start"), bound("end"), *n)
            })
            .collect()
    }

    #[test]
    fn a_restored_aggregation_emits_a_batch_in_the_order_the_original_did() {
        let tumbling = Grouping::Window(WindowSpec {
            duration_ms: 10_000,
            slide_ms: 10_000,
            start_ms: 0,
        });
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        let run = |(clock, aggregate, input): &(Arc<EventClock>, EventAggregate, usize),
                   events: &[(String, i64)]| {
            let records: Vec<Value> = events.iter().map(|(k, t)| event(k, *t)).collect();
            clock.begin(true);
            let times: Vec<i64> = events.iter().map(|(_, t)| t * 1000).collect();
            clock.observe(*input, &times);
            let out = aggregate.apply(vec![dataset(&records)], &context).unwrap();
            clock.end();
            values(&out).unwrap()
        };
        let events = |keys: std::ops::Range<i64>, seconds: i64| -> Vec<(String, i64)> {
            keys.rev().map(|key| (format!("k{key}"), seconds)).collect()
        };
        let original = aggregation(tumbling, OutputMode::Complete);
        run(&original, &events(0..40, 3));
        let restored = aggregation(tumbling, OutputMode::Complete);
        restored.1.restore(&original.1.save()).unwrap();
        let next = [events(20..60, 4), events(0..10, 14)].concat();
        let emitted = run(&original, &next);
        assert_eq!(emitted.len(), 70);
        assert_eq!(run(&restored, &next), emitted);
    }

    #[test]
    fn open_tables_give_each_placement_its_own_table_whatever_slot_asks() {
        let (a, b) = ((Some((0, 10)), Some(10)), (Some((5, 15)), Some(15)));
        let mut placed = BTreeMap::from([(b, KeyTable::new(1))]);
        let mut tables = OpenTables::take(&mut placed);
        assert!(placed.is_empty());
        let key = |table: &mut KeyTable<Acc>, count| {
            table.insert(table::hash(b"k"), b"k", [Acc::Count(count)]);
        };
        key(tables.table(0, a, || KeyTable::new(1)), 1);
        key(tables.table(1, b, || unreachable!("b has a table")), 2);
        // Asked from the slot the other one was last used in.
        assert_eq!(
            tables.table(0, b, || unreachable!()).values(0),
            [Acc::Count(2)]
        );
        assert_eq!(
            tables.table(1, a, || unreachable!()).values(0),
            [Acc::Count(1)]
        );
        assert_eq!(tables.table(5, a, || unreachable!()).len(), 1);
        tables.put_back(&mut placed);
        assert_eq!(placed.keys().collect::<Vec<_>>(), [&a, &b]);
    }

    #[test]
    fn sessions_merge_across_batches_and_close_by_the_watermark() {
        let (clock, sessions, input) = aggregation(
            Grouping::Session {
                gap_ms: Some(10_000),
            },
            OutputMode::Append,
        );
        assert!(batch(&clock, &sessions, input, &[("a", 25), ("a", 40)]).is_empty());
        // 30 bridges [25, 35) and [40, 50) (touching counts).
        assert!(batch(&clock, &sessions, input, &[("a", 30)]).is_empty());
        assert_eq!(sessions.entries(), 1);
        assert_eq!(sessions.bytes(), recounted_bytes(&sessions), "merged");
        batch(&clock, &sessions, input, &[("a", 90)]);
        assert_eq!(sessions.bytes(), recounted_bytes(&sessions), "a second key");
        assert_eq!(batch(&clock, &sessions, input, &[]), [(25, 50, 3)]);
        assert_eq!(sessions.bytes(), recounted_bytes(&sessions), "one evicted");
        // A row whose session ends at or before the watermark (80 s) is late.
        batch(&clock, &sessions, input, &[("b", 60)]);
        assert_eq!(
            clock.last_report().unwrap().steps[0].rows_dropped_by_watermark,
            1
        );
    }

    /// The bytes of `aggregate`'s groups counted afresh, group by group.
    fn recounted_bytes(aggregate: &EventAggregate) -> usize {
        let width = aggregate.spec.aggregates.len();
        let shards = aggregate.lock();
        let sessions: usize = shards
            .iter()
            .flat_map(|shard| &shard.by_key)
            .map(|(key, of_key)| of_key.len() * session_bytes(key.len(), width))
            .sum();
        sessions
            + shards
                .iter()
                .map(|shard| shard.bytes() - shard.session_bytes)
                .sum::<usize>()
    }

    #[test]
    fn a_row_counts_in_its_open_sliding_windows_only() {
        let windows = WindowSpec {
            duration_ms: 10_000,
            slide_ms: 5_000,
            start_ms: 0,
        };
        let (clock, aggregate, input) = aggregation(Grouping::Window(windows), OutputMode::Update);
        batch(&clock, &aggregate, input, &[("a", 30)]);
        batch(&clock, &aggregate, input, &[]);
        // Watermark 20 s: 17 s is in [10, 20) (closed) and [15, 25) (open).
        assert_eq!(
            batch(&clock, &aggregate, input, &[("a", 17)]),
            [(15, 25, 1)]
        );
        assert_eq!(
            clock.last_report().unwrap().steps[0].rows_dropped_by_watermark,
            1
        );
        assert_eq!(clock.last_report().unwrap().steps[0].late_rows_dropped, 0);
    }

    #[test]
    fn state_survives_a_checkpoint() {
        let (clock, aggregate, input) = aggregation(
            Grouping::Session {
                gap_ms: Some(10_000),
            },
            OutputMode::Complete,
        );
        batch(&clock, &aggregate, input, &[("a", 1), ("b", 3), ("a", 30)]);
        let saved = aggregate.save();
        let (clock, restored, input) = aggregation(
            Grouping::Session {
                gap_ms: Some(10_000),
            },
            OutputMode::Complete,
        );
        restored.restore(&saved).unwrap();
        assert_eq!(restored.bytes(), aggregate.bytes());
        assert_eq!(restored.bytes(), recounted_bytes(&restored));
        let mut table = batch(&clock, &restored, input, &[("a", 5)]);
        table.sort();
        assert_eq!(table, [(1, 15, 2), (3, 13, 1), (30, 40, 1)]);
        assert!(restored.restore(&[1, 2, 3]).is_err());
    }

    #[test]
    fn a_row_is_routed_late_once_and_only_when_every_window_dropped_it() {
        let windows = WindowSpec {
            duration_ms: 10_000,
            slide_ms: 5_000,
            start_ms: 0,
        };
        let (clock, aggregate, input) = aggregation(Grouping::Window(windows), OutputMode::Update);
        let late = Arc::new(LateRows::default());
        let aggregate = aggregate.with_late_rows(late.clone());
        let stream = crate::event_time::LateStream {
            rows: late,
            step: "s/1".into(),
        };
        let routed = || {
            let context = BatchContext {
                time_ms: 0,
                partitions: 1,
                number: 1,
            };
            values(&stream.apply(Vec::new(), &context).unwrap()).unwrap()
        };
        batch(&clock, &aggregate, input, &[("a", 30)]);
        assert!(routed().is_empty());
        batch(&clock, &aggregate, input, &[]);
        // Watermark 20 s: 14 s is late in [5, 15) and [10, 20), 2 s in [-5, 5) and
        // [0, 10); 17 s still counts in [15, 25).
        batch(&clock, &aggregate, input, &[("a", 14), ("a", 17), ("b", 2)]);
        assert_eq!(routed(), [event("a", 14), event("b", 2)]);
        let report = clock.last_report().unwrap();
        assert_eq!(report.steps[0].late_rows_dropped, 2);
        assert_eq!(report.steps[0].rows_dropped_by_watermark, 4);
    }

    #[test]
    fn aggregations_sharing_a_late_stream_route_a_row_once_only_if_both_dropped_it() {
        let tumbling = |seconds: i64| {
            Grouping::Window(WindowSpec {
                duration_ms: seconds * 1000,
                slide_ms: seconds * 1000,
                start_ms: 0,
            })
        };
        let (clock, by_10s, input) = aggregation(tumbling(10), OutputMode::Update);
        let by_minute = EventAggregate::new(
            AggregateSpec {
                grouping: tumbling(60),
                ..by_10s.spec.clone()
            },
            by_10s.time.clone(),
            None,
            vec![None],
            clock.clone(),
            "m/1".into(),
        )
        .unwrap();
        let [first, second] = <[LateRows; 2]>::try_from(LateRows::shared(2))
            .unwrap()
            .map(Arc::new);
        let stream = crate::event_time::LateStream {
            rows: second.clone(),
            step: "s/1, m/1".into(),
        };
        let (by_10s, by_minute) = (
            by_10s.with_late_rows(first),
            by_minute.with_late_rows(second),
        );
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        // A batch through both aggregations (one input fanned out); what the stream got.
        let fanned_out = |events: &[(&str, i64)]| {
            let records: Vec<Value> = events.iter().map(|(k, t)| event(k, *t)).collect();
            clock.begin(!records.is_empty());
            let times: Vec<i64> = events.iter().map(|(_, t)| t * 1000).collect();
            clock.observe(input, &times);
            for aggregate in [&by_10s, &by_minute] {
                aggregate.apply(vec![dataset(&records)], &context).unwrap();
            }
            clock.end();
            values(&stream.apply(Vec::new(), &context).unwrap()).unwrap()
        };
        assert!(fanned_out(&[("a", 85)]).is_empty());
        assert!(fanned_out(&[]).is_empty());
        // Watermark 75 s: 30 s and 5 s are late for both; 65 s only for the 10 s
        // windows ([60, 70)), while the minute [60, 120) counts it; 78 s for neither.
        let routed = fanned_out(&[("a", 30), ("a", 65), ("a", 78), ("b", 5)]);
        assert_eq!(routed, [event("a", 30), event("b", 5)]);
        let report = clock.last_report().unwrap();
        let dropped: Vec<usize> = report
            .steps
            .iter()
            .map(|step| step.late_rows_dropped)
            .collect();
        assert_eq!(dropped, [3, 2], "each step counts the rows it dropped");
    }
}
