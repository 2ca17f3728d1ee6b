//! What every benchmark shares.
// Each benchmark uses only some of the helpers.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod process;

/// The allocator of the `sluice` binary, so the engine runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The word count component, built by `scripts/setup`.
pub fn wordcount() -> PathBuf {
    component("wordcount")
}

/// The component built from `udfs/<name>` by `scripts/setup`.
pub fn component(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../udfs/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup first",
        path.display()
    );
    path
}

/// The process's resident memory.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}
