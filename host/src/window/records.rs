//! window and groupByKeyAndWindow: every record of the window's batches.

use std::sync::Mutex;

use anyhow::Result;
use rayon::prelude::*;
use sluice_abi::Batch;

use super::{BatchHistory, Span};
use crate::checkpoint::codec;
use crate::dataset::{Dataset, partitions_bytes};
use crate::operators::keyed::{self, KeyGroups};
use crate::operators::{BatchContext, GroupByKey, Operator, OperatorState, single};
use crate::window::history::SavedHistory;

/// window: the records of every batch in the window, oldest batch first (Spark's
/// `window`, a union of the window's batches).
pub struct Window {
    /// Length and slide.
    pub span: Span,
    /// The batches still inside some future window.
    pub history: Mutex<BatchHistory<Dataset>>,
}

impl Operator for Window {
    fn describe(&self) -> String {
        format!(
            "window {} batches, slide {}",
            self.span.window, self.span.slide
        )
    }

    fn slide(&self) -> Option<u64> {
        Some(self.span.slide)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let mut history = self.history.lock().expect("window history poisoned");
        let input = single(inputs)?;
        let bytes = input.bytes();
        history.push(batch.number, input, bytes);
        if !self.span.is_due(batch.number) {
            return Ok(Dataset::default());
        }
        let partitions = history
            .range(self.span.covering(batch.number))
            .flat_map(|data| data.partitions().iter().cloned())
            .collect();
        history.forget_up_to((batch.number + self.span.slide).saturating_sub(self.span.window));
        Ok(Dataset::from_partitions(partitions))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

impl OperatorState for Window {
    fn kind(&self) -> &'static str {
        "window"
    }

    fn save(&self) -> Vec<u8> {
        let history = self.history.lock().expect("window history poisoned");
        codec::encode(&history.save(Dataset::partitions))
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let saved: SavedHistory = codec::decode(saved)?;
        *self.history.lock().expect("window history poisoned") =
            BatchHistory::restore(saved, Dataset::from_partitions)?;
        Ok(())
    }

    fn entries(&self) -> usize {
        let history = self.history.lock().expect("window history poisoned");
        history.records(Dataset::len)
    }

    fn bytes(&self) -> usize {
        self.history
            .lock()
            .expect("window history poisoned")
            .bytes()
    }
}

/// groupByKeyAndWindow: `(key, [values])` over the window, values in batch order then
/// arrival order (Spark: `groupByKey().window(...)`, then the groups merged per key).
pub struct GroupByKeyAndWindow {
    /// Length and slide.
    pub span: Span,
    /// Each batch's pairs, hash-partitioned by key.
    pub history: Mutex<BatchHistory<Vec<Batch>>>,
}

impl Operator for GroupByKeyAndWindow {
    fn describe(&self) -> String {
        format!(
            "group_by_key_and_window {} batches, slide {}",
            self.span.window, self.span.slide
        )
    }

    fn slide(&self) -> Option<u64> {
        Some(self.span.slide)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let shuffled = keyed::shuffle(single(inputs)?.into_partitions(), batch.partitions)?;
        let mut history = self.history.lock().expect("window history poisoned");
        let partitions = shuffled.into_partitions();
        let bytes = partitions_bytes(&partitions);
        history.push(batch.number, partitions, bytes);
        if !self.span.is_due(batch.number) {
            return Ok(Dataset::default());
        }
        let window: Vec<&Vec<Batch>> = history.range(self.span.covering(batch.number)).collect();
        let partitions = (0..batch.partitions)
            .into_par_iter()
            .map(|partition| {
                let mut groups = KeyGroups::default();
                for data in &window {
                    groups.add_pairs(&data[partition])?;
                }
                Ok(GroupByKey::write_groups(&groups))
            })
            .collect::<Result<_>>()?;
        history.forget_up_to((batch.number + self.span.slide).saturating_sub(self.span.window));
        Ok(Dataset::from_partitions(partitions))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

impl OperatorState for GroupByKeyAndWindow {
    fn kind(&self) -> &'static str {
        "group_by_key_and_window"
    }

    fn save(&self) -> Vec<u8> {
        let history = self.history.lock().expect("window history poisoned");
        codec::encode(&history.save(Vec::as_slice))
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let saved: SavedHistory = codec::decode(saved)?;
        *self.history.lock().expect("window history poisoned") =
            BatchHistory::restore(saved, |partitions| partitions)?;
        Ok(())
    }

    fn entries(&self) -> usize {
        let history = self.history.lock().expect("window history poisoned");
        history.records(|partitions| partitions.iter().map(Batch::len).sum())
    }

    fn bytes(&self) -> usize {
        self.history
            .lock()
            .expect("window history poisoned")
            .bytes()
    }
}
