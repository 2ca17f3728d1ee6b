//! Event time, as Spark's Structured Streaming: windows over the time in the data rather
//! than the batch's, a watermark that says how late data may still come, state evicted
//! once the watermark passes it, and output modes (`append`, `update`, `complete`).
//!
//! DStream windows (over batch time) live in [`crate::window`]; nothing here shares their
//! state. One [`EventClock`] per job holds the watermark: it is computed at the end of
//! each batch from the event times the `event_time` steps saw, and used by the next batch
//! (a batch never makes its own rows late). The stateful steps ([`EventAggregate`],
//! [`Dedup`]) read it; their state and the watermark are checkpointed like any other
//! step's. A stateful step may route the rows it dropped as late to a stream of their
//! own ([`LateRows`]).

mod aggregate;
mod clock;
mod dedup;
mod join;
mod late;
mod record;
mod step;
mod table;
mod windows;

pub use aggregate::{AggFn, AggSpec, AggregateSpec, EventAggregate, Grouping, OutputMode};
pub use clock::{
    BatchReport, EventClock, EventTimeSettings, StepReport, TimeStats, WatermarkPolicy,
};
pub use dedup::Dedup;
pub use join::{EventJoin, JoinSpec, TimeRange};
pub use late::{LateRows, LateStream};
pub use step::{AssignWindow, EventTimeStep, EventTimes, RecordTimes, TimeField, TimeSpec};
pub use windows::WindowSpec;
