//! reduceByKeyAndWindow, with and without an inverse function; reduceByWindow,
//! countByWindow and countByValueAndWindow are built on it, as in Spark.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Result;
use rayon::prelude::*;
use sluice_abi::Batch;

use super::{BatchHistory, Span};
use crate::checkpoint::codec::{self, SavedBatch};
use crate::dataset::{Dataset, partitions_bytes};
use crate::operators::keyed::{self, KeyGroups, push_pair};
use crate::operators::{BatchContext, Operator, OperatorState, ReduceByKey, single};
use crate::udf::BoundUdf;
use crate::window::history::SavedHistory;

/// reduceByKeyAndWindow: `(key, value)` per key over the window, values folded with
/// `reduce`.
///
/// Each batch is reduced by key once and its partial result kept. Without `inverse`, a
/// window folds the partials of its batches. With `inverse`, as Spark's
/// `ReducedWindowedDStream`, it updates the previous window instead: previous value,
/// inverse-reduced with the batches that left, reduced with the batches that entered,
/// so a slide costs the same however long the window; keys whose value returns to the
/// identity stay (with, say, 0) unless `filter` drops them.
pub struct WindowedReduce {
    /// Folds two values.
    pub reduce: BoundUdf,
    /// Takes a value out of a fold (`(a + b) - b = a`).
    pub inverse: Option<BoundUdf>,
    /// Keeps the window's pairs it accepts (with an inverse only, as in Spark).
    pub filter: Option<BoundUdf>,
    /// Length and slide.
    pub span: Span,
    /// The partials and the previous window.
    pub state: Mutex<WindowState>,
}

/// What a windowed reduction remembers between batches.
#[derive(Default)]
pub struct WindowState {
    /// Each batch's pairs reduced by key, hash-partitioned by key.
    partials: BatchHistory<Vec<Batch>>,
    /// The last window's result (inverse form only).
    previous: Option<Vec<Batch>>,
}

impl WindowedReduce {
    fn recompute(&self, window: &[&Vec<Batch>], partition: usize) -> Result<Batch> {
        let mut groups = KeyGroups::default();
        for partial in window {
            groups.add_pairs(&partial[partition])?;
        }
        keyed::reduce_groups(&self.reduce, &groups)
    }

    /// previous - left + entered, per key of one partition.
    fn update(
        &self,
        inverse: &BoundUdf,
        previous: &Batch,
        left: &[&Vec<Batch>],
        entered: &[&Vec<Batch>],
        partition: usize,
    ) -> Result<Batch> {
        let reduced = |batches: &[&Vec<Batch>]| -> Result<Batch> {
            let mut groups = KeyGroups::default();
            for partial in batches {
                groups.add_pairs(&partial[partition])?;
            }
            keyed::reduce_groups(&self.reduce, &groups)
        };
        let (left, entered) = (reduced(left)?, reduced(entered)?);
        let left = single_values(&left)?;
        let entered_values = single_values(&entered)?;
        let previous_values = KeyGroups::of_pairs(previous)?;

        // Keys of the previous window with values that left: one inverse call for all.
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut leaving: Vec<Vec<&[u8]>> = Vec::new();
        let mut leaving_at: Vec<usize> = Vec::new();
        for (key, value) in previous_values.iter() {
            crate::scheduler::slice::tick()?;
            if let Some(gone) = left.get(key) {
                leaving.push(vec![value[0], gone]);
                leaving_at.push(keys.len());
            }
            keys.push(key);
            values.push(value[0].to_vec());
        }
        for (slot, value) in leaving_at
            .into_iter()
            .zip(keyed::fold_lists(inverse, &leaving)?)
        {
            values[slot] = value.into_owned();
        }
        // Then the values that entered: one reduce call for keys already there, new keys
        // as they are. A key only in batches that left, with no previous value, is
        // dropped (Spark throws "Neither previous window has value for key").
        let mut joining: Vec<Vec<&[u8]>> = Vec::new();
        let mut joining_at: Vec<usize> = Vec::new();
        let mut fresh: Vec<(&[u8], &[u8])> = Vec::new();
        let known: HashMap<&[u8], usize> = keys
            .iter()
            .enumerate()
            .map(|(slot, key)| (*key, slot))
            .collect();
        for (key, value) in entered_values.iter() {
            crate::scheduler::slice::tick()?;
            match known.get(key) {
                Some(&slot) => {
                    joining.push(vec![values[slot].as_slice(), value]);
                    joining_at.push(slot);
                }
                None => fresh.push((key, value)),
            }
        }
        let joined: Vec<Vec<u8>> = keyed::fold_lists(&self.reduce, &joining)?
            .into_iter()
            .map(|v| v.into_owned())
            .collect();
        for (slot, value) in joining_at.into_iter().zip(joined) {
            values[slot] = value;
        }
        let mut window = Batch::with_capacity(
            keys.len() + fresh.len(),
            previous.data().len() + entered.data().len(),
        );
        for (key, value) in keys.iter().zip(&values) {
            crate::scheduler::slice::tick()?;
            push_pair(&mut window, key, value);
        }
        for (key, value) in fresh {
            crate::scheduler::slice::tick()?;
            push_pair(&mut window, key, value);
        }
        Ok(window)
    }
}

/// The one value per key of reduced pairs, by key.
fn single_values(pairs: &Batch) -> Result<ValueByKey<'_>> {
    let mut values = ValueByKey::default();
    for record in pairs.iter() {
        crate::scheduler::slice::tick()?;
        let (key, value) = keyed::split_pair(record)?;
        values.order.push(key);
        values.map.insert(key, value);
    }
    Ok(values)
}

#[derive(Default)]
struct ValueByKey<'a> {
    order: Vec<&'a [u8]>,
    map: HashMap<&'a [u8], &'a [u8]>,
}

impl<'a> ValueByKey<'a> {
    fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.map.get(key).copied()
    }

    fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.order.iter().map(|key| (*key, self.map[key]))
    }
}

impl Operator for WindowedReduce {
    fn describe(&self) -> String {
        let inverse = self.inverse.as_ref().map_or(String::new(), |inverse| {
            format!(" inverse {}", inverse.label())
        });
        format!(
            "reduce_by_key_and_window {}{inverse}, {} batches, slide {}",
            self.reduce.label(),
            self.span.window,
            self.span.slide
        )
    }

    fn slide(&self) -> Option<u64> {
        Some(self.span.slide)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let partial = ReduceByKey::reduce(&self.reduce, single(inputs)?, batch.partitions)?;
        let mut state = self.state.lock().expect("window state poisoned");
        let now = batch.number;
        let partial = partial.into_partitions();
        let bytes = partitions_bytes(&partial);
        state.partials.push(now, partial, bytes);
        if !self.span.is_due(now) {
            return Ok(Dataset::default());
        }
        let (span, partitions) = (self.span, batch.partitions);
        let window = match (&self.inverse, &state.previous) {
            (Some(inverse), Some(previous)) => {
                let left: Vec<&Vec<Batch>> = state
                    .partials
                    .range((
                        (now - span.slide).saturating_sub(span.window),
                        now.saturating_sub(span.window),
                    ))
                    .collect();
                let entered: Vec<&Vec<Batch>> =
                    state.partials.range((now - span.slide, now)).collect();
                (0..partitions)
                    .into_par_iter()
                    .map(|p| self.update(inverse, &previous[p], &left, &entered, p))
                    .collect::<Result<Vec<_>>>()?
            }
            _ => {
                let window: Vec<&Vec<Batch>> = state.partials.range(span.covering(now)).collect();
                (0..partitions)
                    .into_par_iter()
                    .map(|p| self.recompute(&window, p))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let window = match &self.filter {
            Some(filter) => window
                .into_par_iter()
                .map(|pairs| filter.filter(pairs))
                .collect::<Result<Vec<_>, _>>()?,
            None => window,
        };
        if self.inverse.is_some() {
            state.previous = Some(window.clone());
        }
        // The next slide needs the batches after `now - window` (those that will leave).
        state.partials.forget_up_to(now.saturating_sub(span.window));
        Ok(Dataset::from_partitions(window))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

impl OperatorState for WindowedReduce {
    fn kind(&self) -> &'static str {
        if self.inverse.is_some() {
            "reduce_by_key_and_window with inverse"
        } else {
            "reduce_by_key_and_window"
        }
    }

    fn save(&self) -> Vec<u8> {
        let state = self.state.lock().expect("window state poisoned");
        let saved: (SavedHistory, Option<Vec<SavedBatch>>) = (
            state.partials.save(Vec::as_slice),
            state.previous.as_deref().map(SavedBatch::all),
        );
        codec::encode(&saved)
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let (partials, previous): (SavedHistory, Option<Vec<SavedBatch>>) = codec::decode(saved)?;
        *self.state.lock().expect("window state poisoned") = WindowState {
            partials: BatchHistory::restore(partials, |partitions| partitions)?,
            previous: previous.map(SavedBatch::restore_all).transpose()?,
        };
        Ok(())
    }

    fn entries(&self) -> usize {
        let state = self.state.lock().expect("window state poisoned");
        let count = |partitions: &Vec<Batch>| partitions.iter().map(Batch::len).sum::<usize>();
        state.partials.records(count) + state.previous.as_ref().map_or(0, count)
    }

    /// The partials' bytes as counted, and the last window's (a pass over its partitions).
    fn bytes(&self) -> usize {
        let state = self.state.lock().expect("window state poisoned");
        state.partials.bytes() + state.previous.as_deref().map_or(0, partitions_bytes)
    }
}
