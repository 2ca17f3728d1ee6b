//! Bounded receivers that hand over one prepared batch per cut: the queue (Spark's
//! `queueStream` with `oneAtATime = true`) and the file source.

use std::collections::VecDeque;
use std::sync::Mutex;

use sluice_abi::{Batch, Value};

use super::{Receiver, encode_values, push_line};

/// Prepared batches, handed over one per cut; then empty batches.
pub struct Queue {
    batches: Mutex<VecDeque<Batch>>,
}

impl Queue {
    /// One batch per element of `batches`.
    pub fn from_values(batches: &[Vec<Value>]) -> Self {
        Self {
            batches: Mutex::new(batches.iter().map(|values| encode_values(values)).collect()),
        }
    }

    /// The lines of `text`, `lines_per_batch` at a time (all at once if `None`).
    pub fn from_text(text: &str, lines_per_batch: Option<usize>) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let chunk = lines_per_batch.unwrap_or(lines.len()).max(1);
        let batches = lines
            .chunks(chunk)
            .map(|lines| {
                let mut batch = Batch::new();
                lines.iter().for_each(|line| push_line(&mut batch, line));
                batch
            })
            .collect();
        Self {
            batches: Mutex::new(batches),
        }
    }
}

impl Receiver for Queue {
    fn cut(&self) -> Batch {
        self.batches
            .lock()
            .expect("queue poisoned")
            .pop_front()
            .unwrap_or_default()
    }

    fn is_drained(&self) -> bool {
        self.batches.lock().expect("queue poisoned").is_empty()
    }
}
