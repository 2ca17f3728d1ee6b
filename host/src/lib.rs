//! Sluice: a micro-batch stream-processing engine whose user functions are WebAssembly
//! components.

pub mod runtime;
