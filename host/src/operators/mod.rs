//! The operators of a job's graph, each computing one step of one batch.
//!
//! Every operator follows Spark Streaming's DStream semantics; where a choice had to be
//! made, the operator's docs say what Spark does.

mod aggregate;
pub mod builtin;
mod by_key;
mod join;
mod key_tables;
pub mod keyed;
mod set;
mod stateless;
mod union;

pub use aggregate::{Count, CountByValue, Reduce};
pub use by_key::{CombineByKey, CombinedByKey, FlatMapValues, GroupByKey, MapValues, ReduceByKey};
pub use join::{Cogroup, Join, JoinKind};
pub use set::{Distinct, Intersection, Subtract, SubtractByKey};
pub use stateless::{Filter, FlatMap, Fused, Glom, MapRecords, Repartition, Transform};
pub use union::Union;

use anyhow::Result;

use crate::dataset::Dataset;

/// What every operator knows about the batch it is computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchContext {
    /// The batch time: the end of the batch interval, in milliseconds.
    pub time_ms: i64,
    /// How many partitions a data set is split into (the job's parallelism).
    pub partitions: usize,
    /// The batch's number in the run: 1 for the first. Windows slide on it.
    pub number: u64,
}

/// One step of a job's graph.
pub trait Operator: Send + Sync {
    /// How errors and logs name the step, e.g. `flat_map wordcount.wasm#tokenize`.
    fn describe(&self) -> String;

    /// How many input streams the step takes (`None`: one or more, as union).
    fn arity(&self) -> Option<usize> {
        Some(1)
    }

    /// For a windowed operator, its slide in batches: it sees every batch of its input
    /// but its output is used only at batch numbers that are multiples of the slide.
    fn slide(&self) -> Option<u64> {
        None
    }

    /// Computes the step's output for one batch from its inputs' outputs, in input order.
    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset>;

    /// What the step remembers between batches, if anything: checkpoints save it.
    fn state(&self) -> Option<&dyn OperatorState> {
        None
    }
}

/// What a stateful operator (a window, a state store) remembers between batches: saved in
/// state checkpoints and restored from them after a restart.
pub trait OperatorState: Send + Sync {
    /// What kind of state it is (`window`, `update_state_by_key`, ...): a checkpoint is
    /// restored only into an operator of the same kind.
    fn kind(&self) -> &'static str;

    /// The state, encoded.
    fn save(&self) -> Vec<u8>;

    /// Replaces the state with one saved by an operator of the same kind.
    fn restore(&self, saved: &[u8]) -> Result<()>;

    /// How many entries it holds: keys for a state store, remembered records for a window.
    fn entries(&self) -> usize;

    /// About how many bytes of host memory it holds (its keys, states and records),
    /// counted as they change: reading it walks nothing (once per batch for the metrics,
    /// and for a tenant's `max_host_bytes`).
    fn bytes(&self) -> usize;
}

/// The one input of a unary operator.
pub(crate) fn single(inputs: Vec<Dataset>) -> Result<Dataset> {
    let [input] = inputs_of::<1>(inputs)?;
    Ok(input)
}

/// The `N` inputs of an operator that takes `N`; another count is a wiring error of the
/// graph, reported rather than trusted.
pub(crate) fn inputs_of<const N: usize>(inputs: Vec<Dataset>) -> Result<[Dataset; N]> {
    let count = inputs.len();
    inputs.try_into().map_err(|_| {
        anyhow::anyhow!(
            "the operator takes {N} input stream(s) but was given {count}: the job's graph is wired wrongly"
        )
    })
}
