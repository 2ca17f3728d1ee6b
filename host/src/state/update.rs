//! updateStateByKey.

use anyhow::{Context, Result};
use sluice_abi::encoding::cell_parts;
use sluice_abi::{Batch, Groups};

use super::store::{Entry, KeyStates, StateStore, write_cell};
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
        let mut keys: Vec<Box<[u8]>> = Vec::with_capacity(states.len() + new_values.key_count());
        let mut records = Batch::with_capacity(states.len() + pairs.len(), pairs.data().len());
        let mut group_ends = Vec::with_capacity(keys.capacity());
        let mut add_group = |key: &[u8], state: Option<&[u8]>, values: &[&[u8]]| {
            records.push_with(|out| write_cell(out, state));
            values.iter().for_each(|value| records.push_encoded(value));
            group_ends.push(records.len() as u32);
            keys.push(key.into());
        };
        for (key, entry) in states.iter() {
            add_group(
                key,
                Some(&entry.state),
                new_values.get(key).unwrap_or_default(),
            );
        }
        for (key, values) in new_values.iter() {
            if !states.contains_key(key) {
                add_group(key, None, values);
            }
        }
        if keys.is_empty() {
            return Ok(Batch::new());
        }
        let groups = Groups::from_parts(records, group_ends).expect("group ends are in order");
        let cells = self.udf.update_state(time_ms, groups)?;
        anyhow::ensure!(
            cells.len() == keys.len(),
            "UDF `{}` answered {} states for {} keys",
            self.udf.label(),
            cells.len(),
            keys.len()
        );
        let mut table = Batch::with_capacity(keys.len(), cells.data().len() * 2);
        for (key, cell) in keys.into_iter().zip(cells.iter()) {
            match cell_parts(cell).with_context(|| {
                format!(
                    "UDF `{}` returned something other than a state cell",
                    self.udf.label()
                )
            })? {
                Some(state) => {
                    push_pair(&mut table, &key, state);
                    states.insert(
                        key,
                        Entry {
                            state: state.into(),
                            updated_ms: time_ms,
                        },
                    );
                }
                None => {
                    states.remove(&key);
                }
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
        let pairs = keyed::shuffle(single(inputs).into_partitions(), batch.partitions)?;
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
