//! Sluice: a micro-batch stream-processing engine whose user functions are WebAssembly
//! components.
//!
//! A job is read from a [`manifest`], turned into a [`graph`] of [`operators`] whose user
//! functions ([`udf`]) run in the WASM [`runtime`]; [`receivers`] collect records, the
//! [`batcher`] cuts them into a batch every interval, the graph computes the batch on all
//! cores, and [`sinks`] write the results. A [`host`] runs many jobs side by side.

pub mod batcher;
pub mod beneath;
pub mod checkpoint;
pub mod connectors;
pub mod dataset;
pub mod disk;
pub mod event_time;
pub mod failure;
pub(crate) mod fault;
pub(crate) mod files;
pub mod graph;
pub mod host;
pub mod job;
pub mod json;
pub mod manifest;
pub mod metrics;
pub mod operators;
pub mod progress;
pub mod receivers;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod sinks;
pub mod state;
pub mod tenancy;
pub mod terminal;
pub mod udf;
pub mod ui;
pub mod window;
