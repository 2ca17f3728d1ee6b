//! Windows over batches: the operators that compute a result over the last `window`
//! batches every `slide` batches, and the store of per-batch partial results they keep.
//!
//! Semantics are Spark's (`WindowOperationsSuite`): lengths are counted in batches of the
//! job's interval; output happens only at batch numbers that are multiples of the slide;
//! the window at batch `t` covers batches `t - window + 1 ..= t`, and windows at the start
//! of the stream are partial. A store keeps a batch's partial result only while some
//! future window can still use it, so memory is bounded by the window, not the stream.

mod history;
mod records;
mod reduce;

pub use history::BatchHistory;
pub use records::{GroupByKeyAndWindow, Window};
pub use reduce::WindowedReduce;

/// A window's length and slide, in batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// How many batches a window covers.
    pub window: u64,
    /// How many batches apart windows are computed.
    pub slide: u64,
}

impl Span {
    /// Whether a window is computed at batch `number`.
    pub fn is_due(&self, number: u64) -> bool {
        number.is_multiple_of(self.slide)
    }

    /// The batch numbers `(after, up_to]` the window ending at `number` covers.
    pub fn covering(&self, number: u64) -> (u64, u64) {
        (number.saturating_sub(self.window), number)
    }
}
