//! The component's exports: find the function by index, check its kind, move the batch
//! between the WIT types and the ABI types (no copy), and run the adapter.

use std::cell::RefCell;
use std::sync::Once;

use sluice_abi::{
    Combiner, Failed, Function, Kind, Merge, NamedFunction, OneRecord, Stage, function,
};

use crate::bindings::sluice::udf::{diagnostics, types};

pub use types::{Batch, Failure, FunctionInfo, Groups};

/// What a batch-returning export answers.
pub type BatchResult = Result<Batch, Failure>;
/// What the flat-map export answers.
pub type GroupsResult = Result<Groups, Failure>;
/// What the filter export answers.
pub type BitmapResult = Result<Vec<u8>, Failure>;

/// Lists `table` for the host.
pub fn functions(table: &[NamedFunction]) -> Vec<FunctionInfo> {
    table
        .iter()
        .map(|named| FunctionInfo {
            name: named.name.to_owned(),
            kind: match named.function.kind() {
                Kind::Map => types::Kind::Map,
                Kind::FlatMap => types::Kind::FlatMap,
                Kind::Filter => types::Kind::Filter,
                Kind::MapPartition => types::Kind::MapPartition,
                Kind::Reduce => types::Kind::Reduce,
                Kind::Fold => types::Kind::Fold,
                Kind::UpdateState => types::Kind::UpdateState,
                Kind::MapWithState => types::Kind::MapWithState,
            },
        })
        .collect()
}

/// Runs map function `index` of `table`.
pub fn map(table: &[NamedFunction], index: u32, input: Batch) -> BatchResult {
    match lookup(table, index, &[Kind::Map])? {
        Function::Map(run) => records(run, input),
        _ => unreachable!("lookup checked the kind"),
    }
}

/// Runs flat-map function `index` of `table`.
pub fn flat_map(table: &[NamedFunction], index: u32, input: Batch) -> GroupsResult {
    match lookup(table, index, &[Kind::FlatMap])? {
        Function::FlatMap(run) => run(&from_wit(input)?).map(groups_into_wit).map_err(to_wit),
        _ => unreachable!("lookup checked the kind"),
    }
}

/// Runs map-partition function `index` of `table`.
pub fn map_partition(table: &[NamedFunction], index: u32, input: Batch) -> BatchResult {
    match lookup(table, index, &[Kind::MapPartition])? {
        Function::MapPartition(run) => records(run, input),
        _ => unreachable!("lookup checked the kind"),
    }
}

/// Runs filter function `index` of `table`.
pub fn filter(table: &[NamedFunction], index: u32, input: Batch) -> BitmapResult {
    match lookup(table, index, &[Kind::Filter])? {
        Function::Filter(run) => run(&from_wit(input)?).map_err(to_wit),
        _ => unreachable!("lookup checked the kind"),
    }
}

/// Runs the map, flat-map and filter functions `indices` of `table` one after the other,
/// one record at a time. A failure names its function and the input record it came
/// from, whichever step it happened in.
pub fn chain(table: &[NamedFunction], indices: Vec<u32>, input: Batch) -> BatchResult {
    let steps = chain_steps(table, &indices)?;
    sluice_abi::chain::run(&steps, &from_wit(input)?)
        .map(into_wit)
        .map_err(|Failed { stage, failure }| {
            let Stage::Chain(step) = stage else {
                unreachable!("a chain that does not combine fails in its steps only")
            };
            named(table, indices[step], failure)
        })
}

/// The record-at-a-time adapters of the map, flat-map and filter functions `indices`.
fn chain_steps(table: &[NamedFunction], indices: &[u32]) -> Result<Vec<OneRecord>, Failure> {
    indices
        .iter()
        .map(|&index| {
            lookup(table, index, &[Kind::Map, Kind::FlatMap, Kind::Filter])?;
            Ok(table[index as usize].one_record)
        })
        .collect()
}

/// `failure` of function `index` of `table`, named by it.
fn named(table: &[NamedFunction], index: u32, failure: sluice_abi::Failure) -> Failure {
    Failure {
        message: format!("in `{}`: {}", table[index as usize].name, failure.message),
        record_index: failure.record_index,
    }
}

thread_local! {
    /// The `combine` export's table: it lives from a partition's first chunk to the call
    /// that flushes it (the host pins one instance to the partition).
    static COMBINER: RefCell<Combiner> = RefCell::new(Combiner::new());
}

/// Runs the chain `indices` of `table` over `input` and folds its `(key, value)` results
/// into the instance's table by key, with map function `create` (if any) making a key's
/// combiner and reduce or fold function `merge` folding values into it; with `flush`,
/// answers the table's pairs and empties it. A failure empties it too.
pub fn combine(
    table: &[NamedFunction],
    indices: Vec<u32>,
    create: Option<u32>,
    merge: u32,
    input: Batch,
    flush: bool,
) -> BatchResult {
    COMBINER.with_borrow_mut(|combiner| {
        let combined = combine_into(combiner, table, indices, create, merge, input, flush);
        if combined.is_err() {
            combiner.clear();
        }
        combined
    })
}

fn combine_into(
    combiner: &mut Combiner,
    table: &[NamedFunction],
    indices: Vec<u32>,
    create: Option<u32>,
    merge: u32,
    input: Batch,
    flush: bool,
) -> BatchResult {
    let chain = chain_steps(table, &indices)?;
    let create_fn = match create {
        Some(index) => {
            lookup(table, index, &[Kind::Map])?;
            match table[index as usize].one_record {
                OneRecord::Map(run) => Some(run),
                _ => unreachable!("a map function runs one record at a time"),
            }
        }
        None => None,
    };
    let accepted: &[Kind] = if create.is_some() {
        &[Kind::Fold]
    } else {
        &[Kind::Reduce]
    };
    lookup(table, merge, accepted)?;
    let OneRecord::Fold(merge_fn) = table[merge as usize].one_record else {
        unreachable!("a reduce or fold function runs one value at a time")
    };
    let merging = Merge {
        create: create_fn,
        merge: merge_fn,
    };
    combiner
        .add(&chain, merging, &from_wit(input)?)
        .map_err(|Failed { stage, failure }| {
            let function = match stage {
                Stage::Chain(step) => indices[step],
                Stage::Create => create.expect("only a create function fails creating"),
                Stage::Merge => merge,
            };
            named(table, function, failure)
        })?;
    Ok(into_wit(if flush {
        combiner.flush()
    } else {
        sluice_abi::Batch::new()
    }))
}

/// Runs aggregating function `index` of `table` (a reduce or fold) on every group.
pub fn aggregate(table: &[NamedFunction], index: u32, input: Groups) -> BatchResult {
    match lookup(table, index, &[Kind::Reduce, Kind::Fold])? {
        Function::Reduce(run) | Function::Fold(run) => {
            run(&from_wit_groups(input)?).map(into_wit).map_err(to_wit)
        }
        _ => unreachable!("lookup checked the kind"),
    }
}

/// Runs update-state function `index` of `table` on every key's group.
pub fn update_state(
    table: &[NamedFunction],
    index: u32,
    batch_time: i64,
    input: Groups,
) -> BatchResult {
    match lookup(table, index, &[Kind::UpdateState])? {
        Function::UpdateState(run) => run(&from_wit_groups(input)?, batch_time)
            .map(into_wit)
            .map_err(to_wit),
        _ => unreachable!("lookup checked the kind"),
    }
}

/// Runs map-with-state function `index` of `table` on every key's group.
pub fn map_with_state(
    table: &[NamedFunction],
    index: u32,
    batch_time: i64,
    input: Groups,
) -> GroupsResult {
    match lookup(table, index, &[Kind::MapWithState])? {
        Function::MapWithState(run) => run(&from_wit_groups(input)?, batch_time)
            .map(groups_into_wit)
            .map_err(to_wit),
        _ => unreachable!("lookup checked the kind"),
    }
}

fn records(run: function::RecordsFn, input: Batch) -> BatchResult {
    run(&from_wit(input)?).map(into_wit).map_err(to_wit)
}

fn lookup(table: &[NamedFunction], index: u32, accepted: &[Kind]) -> Result<Function, Failure> {
    install_panic_hook();
    let named = table.get(index as usize).ok_or_else(|| Failure {
        message: format!(
            "this component has no function number {index} (it has {})",
            table.len()
        ),
        record_index: None,
    })?;
    if accepted.contains(&named.function.kind()) {
        Ok(named.function)
    } else {
        Err(Failure {
            message: format!(
                "function `{}` is a {} function, called as a {} function",
                named.name,
                named.function.kind(),
                accepted[0]
            ),
            record_index: None,
        })
    }
}

fn from_wit(batch: Batch) -> Result<sluice_abi::Batch, Failure> {
    sluice_abi::Batch::from_parts(batch.data, batch.ends).map_err(|error| Failure {
        message: error.to_string(),
        record_index: None,
    })
}

fn from_wit_groups(groups: Groups) -> Result<sluice_abi::Groups, Failure> {
    sluice_abi::Groups::from_parts(from_wit(groups.records)?, groups.group_ends).map_err(|error| {
        Failure {
            message: error.to_string(),
            record_index: None,
        }
    })
}

fn into_wit(batch: sluice_abi::Batch) -> Batch {
    let (data, ends) = batch.into_parts();
    Batch { data, ends }
}

fn groups_into_wit(groups: sluice_abi::Groups) -> Groups {
    let (records, group_ends) = groups.into_parts();
    Groups {
        records: into_wit(records),
        group_ends,
    }
}

fn to_wit(failure: sluice_abi::Failure) -> Failure {
    Failure {
        message: failure.message,
        record_index: failure.record_index,
    }
}

/// Reports a panic to the host before the guest traps: with `panic = "abort"` (the only
/// panic strategy on wasm32-wasip2) nothing can be returned after it.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic without a message");
            let message = match info.location() {
                Some(at) => format!("{payload} (at {}:{})", at.file(), at.line()),
                None => payload.to_owned(),
            };
            diagnostics::report_panic(&message, function::current_record());
        }))
    });
}
