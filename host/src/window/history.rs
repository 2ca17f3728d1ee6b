//! The per-batch partial results a window operator remembers.

use std::collections::VecDeque;

use anyhow::Result;
use sluice_abi::Batch;

use crate::checkpoint::codec::SavedBatch;
use crate::dataset::partitions_bytes;

/// A history as saved in a checkpoint: each batch number with its partitions.
pub type SavedHistory = Vec<(u64, Vec<SavedBatch>)>;

/// Values kept per batch number, oldest first, with the bytes they take counted as they
/// come and go.
#[derive(Debug)]
pub struct BatchHistory<T> {
    /// Each batch's number, value and bytes.
    batches: VecDeque<(u64, T, usize)>,
    bytes: usize,
}

impl<T> Default for BatchHistory<T> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T> BatchHistory<T> {
    /// Remembers `value`, which takes `bytes`, for batch `number` (numbers only grow).
    pub fn push(&mut self, number: u64, value: T, bytes: usize) {
        debug_assert!(self.batches.back().is_none_or(|(last, ..)| *last < number));
        self.batches.push_back((number, value, bytes));
        self.bytes += bytes;
    }

    /// The values of batches `after < number <= up_to`, oldest first.
    pub fn range(&self, (after, up_to): (u64, u64)) -> impl Iterator<Item = &T> + '_ {
        self.batches
            .iter()
            .filter(move |(number, ..)| *number > after && *number <= up_to)
            .map(|(_, value, _)| value)
    }

    /// Forgets every batch up to and including `number`: no window will need them.
    pub fn forget_up_to(&mut self, number: u64) {
        while self
            .batches
            .front()
            .is_some_and(|(first, ..)| *first <= number)
        {
            if let Some((_, _, bytes)) = self.batches.pop_front() {
                self.bytes -= bytes;
            }
        }
    }

    /// The bytes its values take, as counted when they came.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many batches are remembered.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether no batch is remembered.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The history as saved, each value as its partitions.
    pub fn save(&self, partitions: impl Fn(&T) -> &[Batch]) -> SavedHistory {
        self.batches
            .iter()
            .map(|(number, value, _)| (*number, SavedBatch::all(partitions(value))))
            .collect()
    }

    /// A history restored from `saved`, each value rebuilt from its partitions.
    pub fn restore(saved: SavedHistory, value: impl Fn(Vec<Batch>) -> T) -> Result<Self> {
        let mut history = Self::default();
        for (number, partitions) in saved {
            let partitions = SavedBatch::restore_all(partitions)?;
            let bytes = partitions_bytes(&partitions);
            history.push(number, value(partitions), bytes);
        }
        Ok(history)
    }

    /// How many records are remembered, given how to count a value's.
    pub fn records(&self, count: impl Fn(&T) -> usize) -> usize {
        self.batches.iter().map(|(_, value, _)| count(value)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_a_window_needs_and_forgets_the_rest() {
        let mut history = BatchHistory::default();
        (1..=5).for_each(|n| history.push(n, n * 10, n as usize));
        assert_eq!(history.range((2, 4)).copied().collect::<Vec<_>>(), [30, 40]);
        history.forget_up_to(3);
        assert_eq!(history.len(), 2);
        assert_eq!(history.range((0, 9)).copied().collect::<Vec<_>>(), [40, 50]);
        assert_eq!(history.bytes(), 4 + 5);
    }

    #[test]
    fn the_running_byte_count_matches_a_recount_of_the_partitions_kept() {
        let batch = |records: u64| {
            let mut batch = Batch::new();
            (0..records).for_each(|record| {
                batch.push_encoded(&sluice_abi::encoding::to_bytes(&(record * 1000)).unwrap())
            });
            batch
        };
        let recount = |history: &BatchHistory<Vec<Batch>>| {
            history
                .range((0, u64::MAX))
                .map(|value| partitions_bytes(value))
                .sum::<usize>()
        };
        let mut history = BatchHistory::default();
        for number in 1..=40 {
            let partitions = vec![batch(number % 7), batch(number % 3)];
            let bytes = partitions_bytes(&partitions);
            history.push(number, partitions, bytes);
            history.forget_up_to(number.saturating_sub(6));
            assert_eq!(history.bytes(), recount(&history), "at batch {number}");
        }
        let restored =
            BatchHistory::restore(history.save(Vec::as_slice), |partitions| partitions).unwrap();
        assert_eq!(restored.bytes(), history.bytes());
    }
}
