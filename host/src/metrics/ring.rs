//! The last batches of one job, as the UI charts them: a ring of at most [`RING_BATCHES`]
//! small entries, so a job's history costs at most 56 KiB however long it runs.

use std::collections::VecDeque;

use serde::Serialize;

/// The most batches a job remembers.
pub const RING_BATCHES: usize = 1000;

/// One batch, as the job page and `GET /v1/jobs/{job}/batches` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchEntry {
    /// The batch number.
    pub number: u64,
    /// The batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// Records its sources brought.
    pub records_in: u64,
    /// Records it delivered to sinks.
    pub records_out: u64,
    /// How long it waited after its time before it started computing, in microseconds.
    pub scheduling_us: u64,
    /// How long computing and writing it took, in microseconds.
    pub processing_us: u64,
    /// Whether it was re-run from the write-ahead log after a restart.
    pub replayed: bool,
}

const _: () = assert!(std::mem::size_of::<BatchEntry>() <= 64);

/// The last [`RING_BATCHES`] batches of a job, oldest first.
#[derive(Debug, Default)]
pub struct BatchRing {
    entries: VecDeque<BatchEntry>,
}

impl BatchRing {
    /// Remembers `entry`, forgetting the oldest one past [`RING_BATCHES`].
    pub fn push(&mut self, entry: BatchEntry) {
        if self.entries.len() == RING_BATCHES {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The last `count` batches, oldest first.
    pub fn last(&self, count: usize) -> Vec<BatchEntry> {
        let skip = self.entries.len().saturating_sub(count);
        self.entries.iter().skip(skip).copied().collect()
    }

    /// How many batches it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `quantile` (0 to 1, nearest rank) of `value` over the batches it holds.
    pub fn quantile(&self, quantile: f64, value: impl Fn(&BatchEntry) -> u64) -> Option<u64> {
        let mut values: Vec<u64> = self.entries.iter().map(value).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
        Some(values[rank - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(number: u64) -> BatchEntry {
        BatchEntry {
            number,
            time_ms: number as i64 * 1000,
            records_in: number,
            records_out: 0,
            scheduling_us: 0,
            processing_us: number * 10,
            replayed: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_last_thousand_batches_oldest_first() {
        let mut ring = BatchRing::default();
        for number in 1..=2500 {
            ring.push(entry(number));
        }
        assert_eq!(ring.len(), RING_BATCHES);
        let last = ring.last(5000);
        assert_eq!((last[0].number, last[999].number), (1501, 2500));
        let three: Vec<u64> = ring.last(3).iter().map(|entry| entry.number).collect();
        assert_eq!(three, [2498, 2499, 2500]);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut ring = BatchRing::default();
        assert_eq!(ring.quantile(0.5, |entry| entry.processing_us), None);
        for number in 1..=100 {
            ring.push(entry(number));
        }
        assert_eq!(ring.quantile(0.5, |entry| entry.processing_us), Some(500));
        assert_eq!(ring.quantile(0.99, |entry| entry.processing_us), Some(990));
        assert_eq!(ring.quantile(1.0, |entry| entry.processing_us), Some(1000));
    }
}
