//! Late rows routed to a stream of their own (`late_rows = "name"` on a stateful
//! event-time step), as Flink's side output of late data: the rows the step dropped as
//! late in a batch, each once, in input order.

use std::sync::Mutex;

use anyhow::Result;
use sluice_abi::Batch;

use crate::dataset::Dataset;
use crate::operators::{BatchContext, Operator};

/// Where a stateful step leaves the rows it dropped as late in the batch, for the stream
/// that carries them: the step puts them, the stream's node (computed right after the
/// step) takes them.
#[derive(Debug, Default)]
pub struct LateRows {
    rows: Mutex<Option<Batch>>,
}

impl LateRows {
    /// The rows the step dropped in this batch (replacing what a failed run of the batch
    /// may have left).
    pub(crate) fn put(&self, rows: Batch) {
        *self.lock() = Some(rows);
    }

    /// The rows put since the last take (none if the step did not run).
    fn take(&self) -> Batch {
        self.lock().take().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Batch>> {
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The rows of a batch a step dropped as late, while it collects them: nothing is kept
/// when the step has no late stream.
pub(crate) struct LateCollector {
    rows: Option<Batch>,
}

impl LateCollector {
    /// Collects for `late`, if the step has a late stream.
    pub(crate) fn new(late: Option<&LateRows>) -> Self {
        Self {
            rows: late.map(|_| Batch::new()),
        }
    }

    /// Notes that the (encoded) input row `record` was dropped as late.
    pub(crate) fn dropped(&mut self, record: &[u8]) {
        if let Some(rows) = &mut self.rows {
            rows.push_encoded(record);
        }
    }

    /// Hands the rows to the late stream.
    pub(crate) fn finish(self, late: Option<&LateRows>) {
        if let (Some(late), Some(rows)) = (late, self.rows) {
            late.put(rows);
        }
    }
}

/// The node of a late stream: what its step dropped as late in the batch.
pub struct LateStream {
    /// Shared with the step.
    pub rows: std::sync::Arc<LateRows>,
    /// The step, as `stream/step number`.
    pub step: String,
}

impl Operator for LateStream {
    fn describe(&self) -> String {
        format!("late rows of step `{}`", self.step)
    }

    fn arity(&self) -> Option<usize> {
        Some(0)
    }

    fn apply(&self, _inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        Ok(Dataset::from_partitions(vec![self.rows.take()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_hands_over_what_its_step_dropped_once() {
        let late = std::sync::Arc::new(LateRows::default());
        let stream = LateStream {
            rows: late.clone(),
            step: "s/2".into(),
        };
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        let mut collector = LateCollector::new(Some(&late));
        collector.dropped(b"a");
        collector.dropped(b"b");
        collector.finish(Some(&late));
        let out = stream.apply(Vec::new(), &context).unwrap();
        assert_eq!(out.records().collect::<Vec<_>>(), [b"a", b"b"]);
        // Taken: the next batch, whose step did not run, has none.
        assert!(stream.apply(Vec::new(), &context).unwrap().is_empty());
        // A re-run of a failed batch replaces what the failed run left.
        let mut failed = LateCollector::new(Some(&late));
        failed.dropped(b"x");
        failed.finish(Some(&late));
        let mut rerun = LateCollector::new(Some(&late));
        rerun.dropped(b"y");
        rerun.finish(Some(&late));
        let out = stream.apply(Vec::new(), &context).unwrap();
        assert_eq!(out.records().collect::<Vec<_>>(), [b"y"]);
    }

    #[test]
    fn a_step_without_a_late_stream_keeps_nothing() {
        let mut collector = LateCollector::new(None);
        collector.dropped(b"a");
        assert!(collector.rows.is_none());
        collector.finish(None);
    }
}
