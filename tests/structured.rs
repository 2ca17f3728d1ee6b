//! The structured Structured Streaming vectors alone (`tests/structured/cases.rs`; the
//! conformance runner runs them too, after its own): for a quick run while working on
//! event time.

#[path = "structured/cases.rs"]
mod cases;
mod common;

use sluice::runtime::{Runtime, RuntimeConfig};

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let _guard = tokio.enter();
    if !cases::run(&runtime) {
        std::process::exit(1);
    }
}
