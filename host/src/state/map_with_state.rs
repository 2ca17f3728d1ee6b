//! mapWithState and its state snapshots.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use sluice_abi::encoding::{self, Encoder};
use sluice_abi::{Batch, Groups};

use super::store::{Entry, KeyStates, StateStore, read_cell, write_cell};
use crate::dataset::Dataset;
use crate::operators::keyed::{self, KeyGroups};
use crate::operators::{BatchContext, Operator, OperatorState, single};
use crate::udf::BoundUdf;

/// mapWithState: the function runs once per `(key, value)` record with the key's state,
/// which it may read, update or remove, and emits at most one record per call. With a
/// timeout, a key that received nothing for longer than the timeout gets one last call
/// without a value, its state marked as timing out, and is then removed.
///
/// Idle keys are looked for only at batch numbers that are multiples of
/// `timeout_check_every` (counted from the job's first batch, through restarts), as
/// Spark does: its `MapWithStateRDD` removes timed-out keys only in the full scan it
/// makes when it checkpoints the state, every 10 batch intervals by default. Between
/// checks an idle key stays, in the state and in its snapshots, and keys idle since
/// different batches time out together at the next check. A key that gets data has its
/// idle time reset, whether or not its state changed, and gets no timeout call.
pub struct MapWithState {
    /// `(key, value, state) -> emitted`.
    pub udf: BoundUdf,
    /// How long a key may stay idle.
    pub timeout: Option<Duration>,
    /// Idle keys are looked for at batch numbers that are multiples of this.
    pub timeout_check_every: u64,
    /// The states, shared with [`StateSnapshots`] steps.
    pub store: Arc<StateStore>,
}

impl MapWithState {
    /// The store's kind name.
    pub const KIND: &'static str = "map_with_state";

    fn map_partition(
        &self,
        states: &mut KeyStates,
        pairs: &Batch,
        batch: &BatchContext,
    ) -> Result<Batch> {
        let time_ms = batch.time_ms;
        let values = KeyGroups::of_pairs(pairs)?;
        let mut keys: Vec<&[u8]> = Vec::with_capacity(values.key_count());
        let mut records = Batch::with_capacity(pairs.len() * 2, pairs.data().len() * 2);
        let mut group_ends = Vec::with_capacity(values.key_count());
        let mut add_group = |key, state: Option<&Entry>, timing_out: bool, values: &[&[u8]]| {
            records.push_encoded(key);
            records.push_with(|out| {
                Encoder::new(out).tuple_header(2);
                write_cell(out, state.map(|entry| &*entry.state));
                encoding::encode_into(out, &timing_out).expect("a bool always encodes");
            });
            values.iter().for_each(|value| records.push_encoded(value));
            group_ends.push(records.len() as u32);
        };
        for (key, values) in values.iter() {
            add_group(key, states.get(key), false, values);
            keys.push(key);
        }
        let idle_since = self
            .timeout
            .filter(|_| batch.number.is_multiple_of(self.timeout_check_every))
            .map(|timeout| time_ms - timeout.as_millis() as i64);
        let timing_out: Vec<Box<[u8]>> = match idle_since {
            Some(threshold) => states
                .iter()
                .filter(|(key, entry)| entry.updated_ms < threshold && values.get(key).is_none())
                .map(|(key, _)| key.clone())
                .collect(),
            None => Vec::new(),
        };
        for key in &timing_out {
            add_group(key, states.get(key), true, &[]);
        }
        if group_ends.is_empty() {
            return Ok(Batch::new());
        }
        let groups = Groups::from_parts(records, group_ends).expect("group ends are in order");
        // One group per key, each opening with a state cell: `map_with_state` checked the
        // guest's answer.
        let results = self.udf.map_with_state(time_ms, groups)?;
        let returned = results.records();
        let mut emitted = Batch::new();
        let all_keys = keys.into_iter().chain(timing_out.iter().map(|key| &**key));
        for (group, key) in all_keys.enumerate() {
            let mut indices = results.group(group);
            let cell = indices
                .next()
                .expect("every group opens with its state cell");
            let state = read_cell(&self.udf, returned.get(cell))?;
            indices.for_each(|at| emitted.push_encoded(returned.get(at)));
            // A key with data gets its update time refreshed even if the function left
            // its state as it was, as Spark does when a timeout is set.
            match state {
                Some(state) => states.set(key, state, time_ms),
                None => {
                    states.remove(key);
                }
            }
        }
        Ok(emitted)
    }
}

impl Operator for MapWithState {
    fn describe(&self) -> String {
        match self.timeout {
            Some(timeout) => format!(
                "map_with_state {}, timeout {} checked every {} batches",
                self.udf.label(),
                humantime::format_duration(timeout),
                self.timeout_check_every
            ),
            None => format!("map_with_state {}", self.udf.label()),
        }
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let pairs = keyed::shuffle(single(inputs)?.into_partitions(), batch.partitions)?;
        let pairs = pairs.partitions();
        let emitted = self
            .store
            .update(batch.partitions, batch.time_ms, |partition, states| {
                self.map_partition(states, &pairs[partition], batch)
            })?;
        Ok(Dataset::from_partitions(emitted))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&*self.store)
    }
}

/// stateSnapshots: the whole `(key, state)` table of a mapWithState step after each batch
/// (its input, the mapWithState step's output, only orders it after that step).
pub struct StateSnapshots {
    /// The mapWithState step's store.
    pub store: Arc<StateStore>,
}

impl Operator for StateSnapshots {
    fn describe(&self) -> String {
        "state_snapshots".into()
    }

    fn apply(&self, _inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        Ok(Dataset::from_partitions(self.store.pairs()))
    }
}
