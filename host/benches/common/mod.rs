//! What every benchmark shares.

use std::path::PathBuf;

/// The allocator of the `sluice` binary, so the engine runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The word count component, built by `scripts/setup`.
pub fn wordcount() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../udfs/target/wasm32-wasip2/release/wordcount.wasm");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup first",
        path.display()
    );
    path
}
