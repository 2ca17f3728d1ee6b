//! The per-batch partial results a window operator remembers.

use std::collections::VecDeque;

use anyhow::Result;
use sluice_abi::Batch;

use crate::checkpoint::codec::SavedBatch;

/// A history as saved in a checkpoint: each batch number with its partitions.
pub type SavedHistory = Vec<(u64, Vec<SavedBatch>)>;

/// Values kept per batch number, oldest first.
#[derive(Debug)]
pub struct BatchHistory<T> {
    batches: VecDeque<(u64, T)>,
}

impl<T> Default for BatchHistory<T> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
        }
    }
}

impl<T> BatchHistory<T> {
    /// Remembers `value` for batch `number` (numbers only grow).
    pub fn push(&mut self, number: u64, value: T) {
        debug_assert!(self.batches.back().is_none_or(|(last, _)| *last < number));
        self.batches.push_back((number, value));
    }

    /// The values of batches `after < number <= up_to`, oldest first.
    pub fn range(&self, (after, up_to): (u64, u64)) -> impl Iterator<Item = &T> + '_ {
        self.batches
            .iter()
            .filter(move |(number, _)| *number > after && *number <= up_to)
            .map(|(_, value)| value)
    }

    /// Forgets every batch up to and including `number`: no window will need them.
    pub fn forget_up_to(&mut self, number: u64) {
        while self
            .batches
            .front()
            .is_some_and(|(first, _)| *first <= number)
        {
            self.batches.pop_front();
        }
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
            .map(|(number, value)| (*number, SavedBatch::all(partitions(value))))
            .collect()
    }

    /// A history restored from `saved`, each value rebuilt from its partitions.
    pub fn restore(saved: SavedHistory, value: impl Fn(Vec<Batch>) -> T) -> Result<Self> {
        let batches = saved
            .into_iter()
            .map(|(number, partitions)| Ok((number, value(SavedBatch::restore_all(partitions)?))))
            .collect::<Result<_>>()?;
        Ok(Self { batches })
    }

    /// How many records are remembered, given how to count a value's.
    pub fn records(&self, count: impl Fn(&T) -> usize) -> usize {
        self.batches.iter().map(|(_, value)| count(value)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_a_window_needs_and_forgets_the_rest() {
        let mut history = BatchHistory::default();
        (1..=5).for_each(|n| history.push(n, n * 10));
        assert_eq!(history.range((2, 4)).copied().collect::<Vec<_>>(), [30, 40]);
        history.forget_up_to(3);
        assert_eq!(history.len(), 2);
        assert_eq!(history.range((0, 9)).copied().collect::<Vec<_>>(), [40, 50]);
    }
}
