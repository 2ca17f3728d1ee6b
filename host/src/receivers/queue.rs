//! Bounded receivers that hand over one prepared batch per cut: the queue (Spark's
//! `queueStream` with `oneAtATime = true`) and the file source. Both are replayable: the
//! position of a cut is the index of the batch it took.

use std::sync::atomic::{AtomicU64, Ordering};

use sluice_abi::{Batch, Value};

use super::{Receiver, Replayable, encode_values, push_line};

/// Prepared batches, handed over one per cut; then empty batches.
pub struct Queue {
    batches: Vec<Batch>,
    next: AtomicU64,
}

impl Queue {
    fn of(batches: Vec<Batch>) -> Self {
        Self {
            batches,
            next: AtomicU64::new(0),
        }
    }

    /// One batch per element of `batches`.
    pub fn from_values(batches: &[Vec<Value>]) -> Self {
        Self::of(batches.iter().map(|values| encode_values(values)).collect())
    }

    /// The lines of `text`, `lines_per_batch` at a time (all at once if `None`).
    pub fn from_text(text: &str, lines_per_batch: Option<usize>) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let chunk = lines_per_batch.unwrap_or(lines.len()).max(1);
        Self::of(
            lines
                .chunks(chunk)
                .map(|lines| {
                    let mut batch = Batch::new();
                    lines.iter().for_each(|line| push_line(&mut batch, line));
                    batch
                })
                .collect(),
        )
    }
}

impl Receiver for Queue {
    fn cut(&self) -> Batch {
        self.records_at(self.next.fetch_add(1, Ordering::AcqRel))
    }

    fn is_drained(&self) -> bool {
        self.next.load(Ordering::Acquire) >= self.batches.len() as u64
    }

    fn replayable(&self) -> Option<&dyn Replayable> {
        Some(self)
    }
}

impl Replayable for Queue {
    fn position(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn records_at(&self, position: u64) -> Batch {
        usize::try_from(position)
            .ok()
            .and_then(|index| self.batches.get(index))
            .cloned()
            .unwrap_or_default()
    }

    fn seek(&self, position: u64) {
        self.next.store(position, Ordering::Release);
    }
}
