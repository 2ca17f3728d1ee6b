//! User functions and the batch adapters that run them.
//!
//! An adapter turns a plain Rust function over serde types (`fn(&str) -> Vec<String>`)
//! into a function over a whole [`Batch`]: it decodes each record, calls the function,
//! and encodes what it returns. Guests run these adapters inside WASM behind one call per
//! batch; the host runs the very same adapters natively for built-in functions and for
//! benchmarks, so the two differ only by the boundary.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Groups};
use crate::encoding::{self, Error};
use crate::handoff::{Emit, Made, Record, hand_over, keep};
use crate::value::Value;

/// What shape of function a UDF is, which decides the operators it can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One record in, one record out.
    Map,
    /// One record in, any number out.
    FlatMap,
    /// One record in, keep it or not.
    Filter,
    /// A whole partition in, any number of records out.
    MapPartition,
    /// Two values in, one out; folds each group of records to one value.
    Reduce,
    /// An accumulator and a value in, the accumulator out; folds each group (whose first
    /// record is the initial accumulator) to one value.
    Fold,
    /// A key's new values and old state in, its new state out (Spark's updateStateByKey).
    UpdateState,
    /// One record of a key and the key's state in, the state updated and a record out
    /// (Spark's mapWithState).
    MapWithState,
}

impl Kind {
    /// The kind's name as the WIT contract and manifests spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::FlatMap => "flat-map",
            Kind::Filter => "filter",
            Kind::MapPartition => "map-partition",
            Kind::Reduce => "reduce",
            Kind::Fold => "fold",
            Kind::UpdateState => "update-state",
            Kind::MapWithState => "map-with-state",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a user function failed on a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, in words.
    pub message: String,
    /// The index within the batch partition of the record being processed, where known.
    pub record_index: Option<u32>,
}

impl Failure {
    /// A failure not tied to one record.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            record_index: None,
        }
    }

    pub(crate) fn at(index: usize, message: String) -> Self {
        Self {
            message,
            record_index: Some(index as u32),
        }
    }

    fn undecodable(index: usize, record: &[u8], error: Error) -> Self {
        let shown =
            Value::decode(record).map_or_else(|_| "undecodable bytes".into(), |v| v.to_json());
        Self::at(
            index,
            format!("record {index} ({shown}) does not fit the function's input type: {error}"),
        )
    }

    pub(crate) fn unencodable(index: usize, error: Error) -> Self {
        Self::at(
            index,
            format!("the function's result for record {index} cannot be encoded: {error}"),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

thread_local! {
    static CURRENT_RECORD: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The index of the record the running adapter is working on, if any: a guest's panic
/// hook reports it alongside the panic message.
pub fn current_record() -> Option<u32> {
    CURRENT_RECORD.with(Cell::get)
}

/// Marks `index` as the record being processed until the next mark or the end of the batch.
pub(crate) struct Progress;

impl Progress {
    pub(crate) fn start() -> Self {
        Progress
    }

    #[inline]
    pub(crate) fn at(&self, index: usize) {
        CURRENT_RECORD.with(|current| current.set(Some(index as u32)));
    }

    pub(crate) fn between_records(&self) {
        CURRENT_RECORD.with(|current| current.set(None));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.between_records();
    }
}

pub(crate) fn decode<'a, A: Deserialize<'a>>(
    progress: &Progress,
    index: usize,
    record: &'a [u8],
) -> Result<A, Failure> {
    progress.at(index);
    encoding::from_bytes(record).map_err(|error| Failure::undecodable(index, record, error))
}

/// Runs a one-in, one-out function over every record.
pub fn map<'a, A, B>(input: &'a Batch, mut f: impl FnMut(A) -> B) -> Result<Batch, Failure>
where
    A: Deserialize<'a>,
    B: Serialize,
{
    let progress = Progress::start();
    let mut output = Batch::with_capacity(input.len(), input.data().len());
    for (index, record) in input.iter().enumerate() {
        let result = f(decode(&progress, index, record)?);
        output
            .push(&result)
            .map_err(|error| Failure::unencodable(index, error))?;
    }
    Ok(output)
}

/// Runs a one-in, many-out function over every record; group `i` of the result holds
/// what record `i` gave (so that, say, flatMapValues can pair each with its key).
pub fn flat_map<'a, A, I>(input: &'a Batch, mut f: impl FnMut(A) -> I) -> Result<Groups, Failure>
where
    A: Deserialize<'a>,
    I: IntoIterator,
    I::Item: Serialize,
{
    let progress = Progress::start();
    let mut output = Batch::with_capacity(input.len(), input.data().len());
    let mut group_ends = Vec::with_capacity(input.len());
    for (index, record) in input.iter().enumerate() {
        for item in f(decode(&progress, index, record)?) {
            output
                .push(&item)
                .map_err(|error| Failure::unencodable(index, error))?;
        }
        group_ends.push(output.len() as u32);
    }
    Ok(Groups::from_parts(output, group_ends).expect("group ends are built in order"))
}

/// Runs a predicate over every record; bit `i % 8` of byte `i / 8` of the result is set
/// where record `i` is kept.
pub fn filter<'a, A>(input: &'a Batch, mut f: impl FnMut(A) -> bool) -> Result<Vec<u8>, Failure>
where
    A: Deserialize<'a>,
{
    let progress = Progress::start();
    let mut keep = vec![0u8; input.len().div_ceil(8)];
    for (index, record) in input.iter().enumerate() {
        if f(decode(&progress, index, record)?) {
            keep[index / 8] |= 1 << (index % 8);
        }
    }
    Ok(keep)
}

/// Runs a function over the whole partition at once.
pub fn map_partition<'a, A, I>(
    input: &'a Batch,
    f: impl FnOnce(Vec<A>) -> I,
) -> Result<Batch, Failure>
where
    A: Deserialize<'a>,
    I: IntoIterator,
    I::Item: Serialize,
{
    let progress = Progress::start();
    let records = input
        .iter()
        .enumerate()
        .map(|(index, record)| decode(&progress, index, record))
        .collect::<Result<Vec<A>, _>>()?;
    progress.between_records();
    let mut output = Batch::new();
    for item in f(records) {
        output
            .push(&item)
            .map_err(|error| Failure::new(format!("a result cannot be encoded: {error}")))?;
    }
    Ok(output)
}

/// Folds each group of records to one value with a two-in, one-out function, left to right.
pub fn reduce<'a, A>(input: &'a Groups, mut f: impl FnMut(A, A) -> A) -> Result<Batch, Failure>
where
    A: Deserialize<'a> + Serialize,
{
    fold(input, |accumulator: A, value: A| f(accumulator, value))
}

/// Folds each group to one value: its first record is the initial accumulator `C`, each
/// later one a value `V` folded in by `f`, left to right.
pub fn fold<'a, C, V>(input: &'a Groups, mut f: impl FnMut(C, V) -> C) -> Result<Batch, Failure>
where
    C: Deserialize<'a> + Serialize,
    V: Deserialize<'a>,
{
    let progress = Progress::start();
    let records = input.records();
    let mut output = Batch::with_capacity(input.len(), records.data().len() / input.len().max(1));
    for group in 0..input.len() {
        let mut indices = input.group(group);
        let first = indices.next().ok_or_else(|| {
            Failure::new(format!("group {group} is empty: there is nothing to fold"))
        })?;
        let mut accumulator: C = decode(&progress, first, records.get(first))?;
        for index in indices {
            accumulator = f(accumulator, decode(&progress, index, records.get(index))?);
        }
        output
            .push(&accumulator)
            .map_err(|error| Failure::unencodable(first, error))?;
    }
    Ok(output)
}

#[inline(always)]
fn decode_one<'a, A: Deserialize<'a>>(index: usize, record: Record<'a>) -> Result<A, Failure> {
    record
        .decode()
        .map_err(|error| does_not_fit(index, record, error))
}

#[cold]
fn does_not_fit(index: usize, record: Record<'_>, error: Error) -> Failure {
    Failure::at(
        index,
        format!(
            "record {index} ({}) does not fit the function's input type: {error}",
            record.to_json()
        ),
    )
}

/// [`map`] for one record: `f`'s result for `record` (made from the chain's input record
/// `index`, as failures name it) sent to `emit`, through `out` if it must be encoded.
pub fn map_one<'a, A, B>(
    index: usize,
    record: Record<'a>,
    out: &mut Vec<u8>,
    emit: &mut Emit<'_>,
    f: impl FnOnce(A) -> B,
) -> Result<(), Failure>
where
    A: Deserialize<'a>,
    B: Serialize,
{
    hand_over(index, &f(decode_one(index, record)?), out, emit)
}

/// [`flat_map`] for one record: each of `f`'s results for `record` sent to `emit` in turn.
pub fn flat_map_one<'a, A, I>(
    index: usize,
    record: Record<'a>,
    out: &mut Vec<u8>,
    emit: &mut Emit<'_>,
    f: impl FnOnce(A) -> I,
) -> Result<(), Failure>
where
    A: Deserialize<'a>,
    I: IntoIterator,
    I::Item: Serialize,
{
    for item in f(decode_one(index, record)?) {
        hand_over(index, &item, out, emit)?;
    }
    Ok(())
}

/// [`filter`] for one record.
pub fn filter_one<'a, A>(
    index: usize,
    record: Record<'a>,
    f: impl FnOnce(A) -> bool,
) -> Result<bool, Failure>
where
    A: Deserialize<'a>,
{
    Ok(f(decode_one(index, record)?))
}

/// [`fold`] for one value: `combiner` with `value` folded in, kept as [`keep`] keeps it
/// (an integer as it is, anything else encoded into `out`).
#[inline]
pub fn fold_one<'a, C, V>(
    index: usize,
    combiner: Record<'a>,
    value: Record<'a>,
    out: &mut Vec<u8>,
    f: impl FnOnce(C, V) -> C,
) -> Result<Made, Failure>
where
    C: Deserialize<'a> + Serialize,
    V: Deserialize<'a>,
{
    let folded = f(decode_one(index, combiner)?, decode_one(index, value)?);
    keep(index, &folded, out)
}

/// A map function over one record (see [`map_one`]).
pub type MapOneFn =
    for<'a> fn(usize, Record<'a>, &mut Vec<u8>, &mut Emit<'_>) -> Result<(), Failure>;
/// A flat-map function over one record (see [`flat_map_one`]).
pub type FlatMapOneFn =
    for<'a> fn(usize, Record<'a>, &mut Vec<u8>, &mut Emit<'_>) -> Result<(), Failure>;
/// A predicate over one record (see [`filter_one`]).
pub type FilterOneFn = for<'a> fn(usize, Record<'a>) -> Result<bool, Failure>;
/// A reduce or fold function over one combiner and one value (see [`fold_one`]).
pub type FoldOneFn =
    for<'a> fn(usize, Record<'a>, Record<'a>, &mut Vec<u8>) -> Result<Made, Failure>;

/// A function adapted to one record at a time, which fused chains run: records pass from
/// step to step through one small buffer per step, never gathered into batches.
#[derive(Debug, Clone, Copy)]
pub enum OneRecord {
    /// A map function.
    Map(MapOneFn),
    /// A flat-map function.
    FlatMap(FlatMapOneFn),
    /// A filter.
    Filter(FilterOneFn),
    /// A reduce or fold function.
    Fold(FoldOneFn),
    /// A function of a kind that only runs over whole partitions or groups.
    None,
}

/// A function over one batch partition's records.
pub type RecordsFn = fn(&Batch) -> Result<Batch, Failure>;
/// A function over one batch partition's records, answering with each record's results.
pub type FlatMapFn = fn(&Batch) -> Result<Groups, Failure>;
/// A predicate over one batch partition, answering with a bitmap.
pub type FilterFn = fn(&Batch) -> Result<Vec<u8>, Failure>;
/// A function folding each group of records to one value.
pub type GroupsFn = fn(&Groups) -> Result<Batch, Failure>;
/// A function updating each key's state cell, for the batch of the given time.
pub type UpdateStateFn = fn(&Groups, i64) -> Result<Batch, Failure>;
/// A function mapping each key's records with its state, for the batch of the given time.
pub type MapWithStateFn = fn(&Groups, i64) -> Result<Groups, Failure>;

/// A user function already adapted to batches, tagged with its kind.
#[derive(Debug, Clone, Copy)]
pub enum Function {
    /// See [`Kind::Map`].
    Map(RecordsFn),
    /// See [`Kind::FlatMap`].
    FlatMap(FlatMapFn),
    /// See [`Kind::Filter`].
    Filter(FilterFn),
    /// See [`Kind::MapPartition`].
    MapPartition(RecordsFn),
    /// See [`Kind::Reduce`].
    Reduce(GroupsFn),
    /// See [`Kind::Fold`].
    Fold(GroupsFn),
    /// See [`Kind::UpdateState`].
    UpdateState(UpdateStateFn),
    /// See [`Kind::MapWithState`].
    MapWithState(MapWithStateFn),
}

impl Function {
    /// The function's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Function::Map(_) => Kind::Map,
            Function::FlatMap(_) => Kind::FlatMap,
            Function::Filter(_) => Kind::Filter,
            Function::MapPartition(_) => Kind::MapPartition,
            Function::Reduce(_) => Kind::Reduce,
            Function::Fold(_) => Kind::Fold,
            Function::UpdateState(_) => Kind::UpdateState,
            Function::MapWithState(_) => Kind::MapWithState,
        }
    }
}

/// A function with the name a manifest calls it by.
#[derive(Debug, Clone, Copy)]
pub struct NamedFunction {
    /// The name, unique within its component.
    pub name: &'static str,
    /// The function.
    pub function: Function,
    /// The same function one record at a time, for fused chains.
    pub one_record: OneRecord,
}

/// Builds a `&'static [NamedFunction]` from plain functions, one line each:
///
/// ```
/// fn tokenize(line: &str) -> Vec<String> {
///     line.split_whitespace().map(str::to_owned).collect()
/// }
/// fn sum(a: i64, b: i64) -> i64 {
///     a + b
/// }
/// let table = sluice_abi::functions! {
///     flat_map tokenize,
///     reduce sum,
/// };
/// assert_eq!(table[1].name, "sum");
/// ```
///
/// The kinds are `map`, `flat_map`, `filter`, `map_partition`, `reduce`, `fold`,
/// `update_state` and `map_with_state`.
#[macro_export]
macro_rules! functions {
    ($($kind:ident $name:ident),* $(,)?) => {
        &[$($crate::functions!(@one $kind $name)),*]
    };
    (@one map $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::Map(|batch: &$crate::Batch| $crate::function::map(batch, $name)),
            one_record: $crate::function::OneRecord::Map(|index, record, out, emit| $crate::function::map_one(index, record, out, emit, $name)),
        }
    };
    (@one flat_map $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::FlatMap(|batch: &$crate::Batch| $crate::function::flat_map(batch, $name)),
            one_record: $crate::function::OneRecord::FlatMap(|index, record, out, emit| $crate::function::flat_map_one(index, record, out, emit, $name)),
        }
    };
    (@one filter $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::Filter(|batch: &$crate::Batch| $crate::function::filter(batch, $name)),
            one_record: $crate::function::OneRecord::Filter(|index, record| $crate::function::filter_one(index, record, $name)),
        }
    };
    (@one map_partition $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::MapPartition(|batch: &$crate::Batch| $crate::function::map_partition(batch, $name)),
            one_record: $crate::function::OneRecord::None,
        }
    };
    (@one fold $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::Fold(|groups: &$crate::Groups| $crate::function::fold(groups, $name)),
            one_record: $crate::function::OneRecord::Fold(|index, combiner, value, out| $crate::function::fold_one(index, combiner, value, out, $name)),
        }
    };
    (@one update_state $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::UpdateState(|groups: &$crate::Groups, time_ms: i64| $crate::state::update_state(groups, time_ms, $name)),
            one_record: $crate::function::OneRecord::None,
        }
    };
    (@one map_with_state $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::MapWithState(|groups: &$crate::Groups, time_ms: i64| $crate::state::map_with_state(groups, time_ms, $name)),
            one_record: $crate::function::OneRecord::None,
        }
    };
    (@one reduce $name:ident) => {
        $crate::function::NamedFunction {
            name: stringify!($name),
            function: $crate::function::Function::Reduce(|groups: &$crate::Groups| $crate::function::reduce(groups, $name)),
            one_record: $crate::function::OneRecord::Fold(|index, combiner, value, out| $crate::function::fold_one(index, combiner, value, out, $name)),
        }
    };
    // Last: any other word in the place of a kind.
    (@one $kind:ident $name:ident) => {
        compile_error!(concat!(
            "unknown UDF kind `", stringify!($kind), "` for `", stringify!($name),
            "`: the kinds are map, flat_map, filter, map_partition, reduce, fold, update_state, map_with_state"
        ))
    };
}
