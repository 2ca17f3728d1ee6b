//! A component whose `functions` export never returns, for testing that the server
//! refuses its upload within the listing deadline rather than hanging (tests/serve.rs).
//! No call but `functions` is ever made, so every other export only says so.

// The state exports flatten to eight core-wasm arguments, past clippy's limit (the SDK's
// bindings allow it the same way).
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "udf" });
}
use bindings::*;

struct ListingLoops;

/// The answer of every export but `functions`.
fn never_listed() -> Failure {
    Failure {
        message: "listing_loops lists no functions, so none can be called".into(),
        record_index: None,
    }
}

impl Guest for ListingLoops {
    fn functions() -> Vec<FunctionInfo> {
        let mut spins: u64 = 0;
        loop {
            // Opaque to the optimizer, so the loop stays a loop that burns CPU.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn map(_: u32, _: Batch) -> Result<Batch, Failure> {
        Err(never_listed())
    }

    fn flat_map(_: u32, _: Batch) -> Result<Groups, Failure> {
        Err(never_listed())
    }

    fn filter(_: u32, _: Batch) -> Result<Vec<u8>, Failure> {
        Err(never_listed())
    }

    fn map_partition(_: u32, _: Batch) -> Result<Batch, Failure> {
        Err(never_listed())
    }

    fn chain(_: Vec<u32>, _: Batch) -> Result<Batch, Failure> {
        Err(never_listed())
    }

    fn aggregate(_: u32, _: Groups) -> Result<Batch, Failure> {
        Err(never_listed())
    }

    fn update_state(_: u32, _: i64, _: Groups) -> Result<Batch, Failure> {
        Err(never_listed())
    }

    fn map_with_state(_: u32, _: i64, _: Groups) -> Result<Groups, Failure> {
        Err(never_listed())
    }
}

export!(ListingLoops);
