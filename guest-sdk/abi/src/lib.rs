//! Sluice's data ABI: what the host and every guest agree on below the WIT contract.
//!
//! - [`Value`]: the self-describing model every record is an instance of.
//! - [`encoding`]: its compact canonical bytes, as a serde format, so guest authors write
//!   plain Rust types and the host can render, hash and compare records without a guest.
//! - [`Batch`] and [`Groups`]: records laid out flat, as they cross the boundary.
//! - [`function`]: the adapters that run a plain Rust function over a batch.
//! - [`chain`]: a fused chain of record-at-a-time functions run one record at a time.
//! - [`combine`]: map-side combining of `(key, value)` pairs by key, behind a fused chain
//!   whose steps pass records on one at a time ([`handoff`]).
//! - [`table`]: values by key, short keys kept inline, keys in the order first seen.

pub mod batch;
pub mod chain;
pub mod combine;
pub mod encoding;
pub mod function;
pub mod handoff;
pub mod state;
pub mod table;
pub mod value;

pub use batch::{Batch, Groups};
pub use combine::{Combiner, Failed, Merge, Stage};
pub use function::{Failure, Function, Kind, NamedFunction, OneRecord};
pub use handoff::Record;
pub use state::{State, batch_time_ms};
pub use value::Value;
