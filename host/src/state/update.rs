//! updateStateByKey.

use anyhow::Result;
use sluice_abi::{Batch, Groups};

use super::store::{KeyStates, StateStore, read_cell, write_cell};
use crate::dataset::Dataset;
use crate::operators::keyed::{self, KeyGroups, push_pair};
use crate::operators::{BatchContext, Operator, OperatorState, single};
use crate::udf::BoundUdf;

/// updateStateByKey: every batch, the update function runs for every key that has a state
/// or new values, with the key's new values (possibly none) and old state (possibly
/// none); it returns the new state, or none to drop the key. As in Spark, the output is
/// the whole state table, `(key, state)` for every key, every batch.
pub struct UpdateStateByKey {
    /// `(values, old state) -> new state`.
    pub udf: BoundUdf,
    /// The states, hash-partitioned by key.
    pub store: StateStore,
}

impl UpdateStateByKey {
    /// The store's kind name.
    pub const KIND: &'static str = "update_state_by_key";

    fn update_partition(
        &self,
        states: &mut KeyStates,
        pairs: &Batch,
        time_ms: i64,
    ) -> Result<Batch> {
        let new_values = KeyGroups::of_pairs(pairs)?;
        let mut records = Batch::with_capacity(states.len() + pairs.len(), pairs.data().len());
        let mut group_ends = Vec::with_capacity(states.len() + new_values.key_count());
        let mut add_group = |state: Option<&[u8]>, values: &[&[u8]]| {
            records.push_with(|out| write_cell(out, state));
            values.iter().for_each(|value| records.push_encoded(value));
            group_ends.push(records.len() as u32);
        };
        // Keys with state first, in the map's order (the answers are matched back to
        // them by walking the map again), then new keys in arrival order.
        for (key, entry) in states.iter() {
            add_group(Some(&entry.state), new_values.get(key).unwrap_or_default());
        }
        let fresh: Vec<(&[u8], &[&[u8]])> = new_values
            .iter()
            .filter(|(key, _)| !states.contains_key(key))
            .collect();
        fresh.iter().for_each(|(_, values)| add_group(None, values));
        if group_ends.is_empty() {
            return Ok(Batch::new());
        }
        let keys = group_ends.len();
        let groups = Groups::from_parts(records, group_ends).expect("group ends are in order");
        // One state cell per key: `update_state` checked the guest's answer.
        let cells = self.udf.update_state(time_ms, groups)?;
        let mut table = Batch::with_capacity(keys, cells.data().len() * 2);
        let mut cells = cells.iter();
        let mut dropped = Vec::new();
        for ((key, entry), cell) in states.iter_mut().zip(&mut cells) {
            crate::scheduler::slice::tick()?;
            match read_cell(&self.udf, cell)? {
                Some(state) => {
                    push_pair(&mut table, key, state);
                    entry.set(state, time_ms);
                }
                None => dropped.push(key.clone()),
            }
        }
        for key in dropped {
            states.remove(&key);
        }
        for ((key, _), cell) in fresh.into_iter().zip(cells) {
            if let Some(state) = read_cell(&self.udf, cell)? {
                push_pair(&mut table, key, state);
                states.set(key, state, time_ms);
            }
        }
        Ok(table)
    }
}

impl Operator for UpdateStateByKey {
    fn describe(&self) -> String {
        format!("update_state_by_key {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let pairs = keyed::shuffle(single(inputs)?.into_partitions(), batch.partitions)?;
        let pairs = pairs.partitions();
        let tables = self
            .store
            .update(batch.partitions, batch.time_ms, |partition, states| {
                self.update_partition(states, &pairs[partition], batch.time_ms)
            })?;
        Ok(Dataset::from_partitions(tables))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&self.store)
    }
}
