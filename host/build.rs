//! Embeds the guest SDKs (sluice-sdk, sluice-abi, the Python `sluice_sdk` and the WIT
//! contract) in the `sluice` binary, so that UDF crates outside the checkout can depend on it: `sluice new` and
//! `sluice udf build` write it out (src/cli/sdk.rs).

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Folders embedded, each as (path from the workspace root, path in the written SDK).
const TREES: &[(&str, &str)] = &[
    ("guest-sdk/src", "sluice-sdk/src"),
    ("guest-sdk/abi/src", "sluice-abi/src"),
    ("wit", "wit"),
    ("guest-sdk/python/sluice_sdk", "python/sluice_sdk"),
];

fn main() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .expect("host/ is inside the workspace")
        .to_owned();
    let mut list = String::from("&[\n");
    for (from, to) in TREES {
        let dir = root.join(from);
        println!("cargo::rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        walk(&dir, &mut files);
        files.sort();
        for file in files {
            let relative = file.strip_prefix(&dir).unwrap().to_str().unwrap();
            writeln!(
                list,
                "    ({:?}, include_str!({:?})),",
                format!("{to}/{relative}"),
                file.display().to_string()
            )
            .unwrap();
        }
    }
    list.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("sdk_files.rs");
    std::fs::write(out, list).unwrap();
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Python's bytecode caches (from running the SDK's tests) are not sources.
        if path.ends_with("__pycache__") {
            continue;
        }
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}
