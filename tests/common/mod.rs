//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod browser;
pub mod kafka;
pub mod observe;
pub mod release;
pub mod run;
pub mod stepper;
pub mod wait;
pub mod wordcount;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is inside the workspace")
        .to_owned()
}

/// Every file of `dir` with its text, sorted by name: what a files sink wrote, in batch
/// order.
pub fn files_by_name(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(file).unwrap())
        })
        .collect()
}

/// Waits until `tenant` of `host` holds no host bytes (`max_host_bytes`), failing after
/// 10 s naming `what` was awaited: a failed job's buffers and log go only once its
/// receiver tasks have ended. Call it from a multi-threaded tokio test.
pub fn wait_for_host_bytes_released(host: &sluice::host::Host, tenant: &str, what: &str) {
    let account = host
        .runtime()
        .tenancy()
        .account(tenant)
        .unwrap_or_else(|| panic!("no tenant `{tenant}`"));
    tokio::task::block_in_place(|| {
        wait::until(std::time::Duration::from_secs(10), what, || {
            account.host_bytes() == 0
        })
    });
}

/// The component built from `udfs/<name>`, or a panic saying how to build it.
pub fn udf(name: &str) -> PathBuf {
    let path = root().join(format!("udfs/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which builds the UDFs first",
        path.display()
    );
    path
}

/// The component built from the Python UDF project `udfs/python/<name>`, or a panic
/// saying how to build it.
pub fn python_udf(name: &str) -> PathBuf {
    let path = root().join(format!("udfs/python/{name}/target/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which builds the Python UDFs first",
        path.display()
    );
    path
}

/// The compiled-component cache the tests share with the `sluice` binary they run, so
/// that a large component (a Python one) is compiled once per run.
pub fn cache_dir() -> PathBuf {
    root().join("target/sluice-cache")
}

/// The `sluice` binary, with the test component cache.
pub fn sluice() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.env("SLUICE_CACHE_DIR", cache_dir());
    command
}
