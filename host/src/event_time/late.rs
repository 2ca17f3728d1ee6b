//! Late rows routed to a stream of their own (`late_rows = "name"` on a stateful
//! event-time step), as Flink's side output of late data: the rows the step dropped as
//! late in a batch, each once, in input order.
//!
//! Several steps reading the same input (fan-out: streams `from` one stream, each
//! starting with a stateful step) may name one late stream. It then judges each input
//! row by all of them: a row goes there once, and only if every one of those steps
//! dropped it as late; one that any of them kept is not late.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use sluice_abi::Batch;

use crate::dataset::Dataset;
use crate::operators::{BatchContext, Operator};

/// What one step dropped as late in a batch: the input positions and those rows.
#[derive(Debug, Default)]
struct Dropped {
    positions: Vec<usize>,
    rows: Batch,
}

/// The steps that feed one late stream, each in a slot of its own.
#[derive(Debug)]
struct Joint {
    slots: Mutex<Vec<Option<Dropped>>>,
}

/// Where a stateful step leaves the rows it dropped as late in the batch, for the stream
/// that carries them: the step puts them, the stream's node (computed after every step
/// that feeds it) takes them.
#[derive(Debug)]
pub struct LateRows {
    /// This step's slot in `joint`.
    slot: usize,
    joint: Arc<Joint>,
}

impl Default for LateRows {
    /// The late rows of one step alone.
    fn default() -> Self {
        Self::shared(1).pop().expect("one step")
    }
}

impl LateRows {
    /// One handle per step of `steps` steps that read the same input and feed one late
    /// stream: a row goes there only if each of them dropped it.
    pub fn shared(steps: usize) -> Vec<Self> {
        let joint = Arc::new(Joint {
            slots: Mutex::new((0..steps).map(|_| None).collect()),
        });
        (0..steps)
            .map(|slot| Self {
                slot,
                joint: joint.clone(),
            })
            .collect()
    }

    /// The rows this step dropped in this batch (replacing what a failed run of the
    /// batch may have left).
    fn put(&self, dropped: Dropped) {
        self.lock()[self.slot] = Some(dropped);
    }

    /// The rows every step that ran since the last take dropped (a step that did not
    /// run got no rows, so it judges none), each once, in input order.
    fn take(&self) -> Batch {
        let slots: Vec<Dropped> = self.lock().iter_mut().filter_map(Option::take).collect();
        let Some((first, others)) = slots.split_first() else {
            return Batch::new();
        };
        if others.is_empty() {
            return slots.into_iter().next().expect("one slot").rows;
        }
        let mut late = Batch::new();
        first
            .positions
            .iter()
            .zip(first.rows.iter())
            .filter(|(position, _)| {
                others
                    .iter()
                    .all(|other| other.positions.binary_search(*position).is_ok())
            })
            .for_each(|(_, row)| late.push_encoded(row));
        late
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Dropped>>> {
        self.joint
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The rows of a batch a step dropped as late, while it collects them: nothing is kept
/// when the step has no late stream.
pub(crate) struct LateCollector {
    dropped: Option<Dropped>,
}

impl LateCollector {
    /// Collects for `late`, if the step has a late stream.
    pub(crate) fn new(late: Option<&LateRows>) -> Self {
        Self {
            dropped: late.map(|_| Dropped::default()),
        }
    }

    /// Notes that the (encoded) input row `record`, at `position` in the step's input
    /// (counted across partitions, in increasing order), was dropped as late.
    pub(crate) fn dropped(&mut self, position: usize, record: &[u8]) {
        if let Some(dropped) = &mut self.dropped {
            dropped.positions.push(position);
            dropped.rows.push_encoded(record);
        }
    }

    /// Hands the rows to the late stream.
    pub(crate) fn finish(self, late: Option<&LateRows>) {
        if let (Some(late), Some(dropped)) = (late, self.dropped) {
            late.put(dropped);
        }
    }
}

/// The node of a late stream: what its steps dropped as late in the batch.
pub struct LateStream {
    /// Shared with the steps (any one's handle takes what all of them dropped).
    pub rows: Arc<LateRows>,
    /// The steps, as `stream/step number` (several joined by `, `).
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

    const CONTEXT: BatchContext = BatchContext {
        time_ms: 0,
        partitions: 1,
        number: 1,
    };

    fn taken(stream: &LateStream) -> Vec<Vec<u8>> {
        let out = stream.apply(Vec::new(), &CONTEXT).unwrap();
        out.records().map(<[u8]>::to_vec).collect()
    }

    fn drop_rows(late: &LateRows, rows: &[(usize, &[u8])]) {
        let mut collector = LateCollector::new(Some(late));
        for (position, row) in rows {
            collector.dropped(*position, row);
        }
        collector.finish(Some(late));
    }

    #[test]
    fn a_batch_hands_over_what_its_step_dropped_once() {
        let late = Arc::new(LateRows::default());
        let stream = LateStream {
            rows: late.clone(),
            step: "s/2".into(),
        };
        drop_rows(&late, &[(0, b"a"), (3, b"b")]);
        assert_eq!(taken(&stream), [b"a", b"b"]);
        // Taken: the next batch, whose step did not run, has none.
        assert!(taken(&stream).is_empty());
        // A re-run of a failed batch replaces what the failed run left.
        drop_rows(&late, &[(0, b"x")]);
        drop_rows(&late, &[(1, b"y")]);
        assert_eq!(taken(&stream), [b"y"]);
    }

    #[test]
    fn steps_sharing_a_late_stream_route_a_row_once_only_if_each_dropped_it() {
        let steps: Vec<Arc<LateRows>> = LateRows::shared(3).into_iter().map(Arc::new).collect();
        let stream = LateStream {
            rows: steps[2].clone(),
            step: "a/1, b/1, c/1".into(),
        };
        // Rows 0 to 4 of one input: 1 and 4 are dropped by all three steps; 0 by two
        // (the third kept it), 2 and 3 by one.
        drop_rows(&steps[0], &[(0, b"r0"), (1, b"r1"), (2, b"r2"), (4, b"r4")]);
        drop_rows(&steps[1], &[(0, b"r0"), (1, b"r1"), (3, b"r3"), (4, b"r4")]);
        drop_rows(&steps[2], &[(1, b"r1"), (4, b"r4")]);
        assert_eq!(taken(&stream), [b"r1", b"r4"]);
        assert!(taken(&stream).is_empty());
        // A step that kept every row routes none of them.
        drop_rows(&steps[0], &[(0, b"r0")]);
        drop_rows(&steps[1], &[(0, b"r0")]);
        drop_rows(&steps[2], &[]);
        assert!(taken(&stream).is_empty());
        // The steps that ran judge: one that did not run got no rows.
        drop_rows(&steps[0], &[(2, b"r2")]);
        drop_rows(&steps[1], &[(2, b"r2")]);
        assert_eq!(taken(&stream), [b"r2"]);
    }

    #[test]
    fn a_step_without_a_late_stream_keeps_nothing() {
        let mut collector = LateCollector::new(None);
        collector.dropped(0, b"a");
        assert!(collector.dropped.is_none());
        collector.finish(None);
    }
}
