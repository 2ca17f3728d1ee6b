//! `sluice udf build` and `sluice udf inspect`.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use sluice::runtime::{Runtime, RuntimeConfig};

const TARGET: &str = "wasm32-wasip2";

/// Builds every cdylib of the crate or workspace at `path` into a component.
pub fn build(path: &Path) -> Result<ExitCode> {
    ensure_target()?;
    let output = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(path)
        .env(
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
            "-Ctarget-feature=+simd128",
        )
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run cargo in {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "building the UDFs in {} failed (cargo's errors are above)",
            path.display()
        );
    }
    let mut built = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_cdylib = message["target"]["crate_types"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if message["reason"] == "compiler-artifact" && is_cdylib {
            for file in message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .filter(|f| f.ends_with(".wasm"))
            {
                println!("{file}");
                built += 1;
            }
        }
    }
    if built == 0 {
        bail!(
            "{} has no cdylib crate: a UDF crate needs `[lib] crate-type = [\"cdylib\"]`",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs the wasm32-wasip2 target with rustup if it is missing.
fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup: install Rust with rustup (https://rustup.rs)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed");
    }
    Ok(())
}

/// Prints the component's digest and functions.
pub fn inspect(file: &Path) -> Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let component = runtime.load(file)?;
    println!("{} (sha256 {})", file.display(), component.digest());
    for function in component.functions() {
        println!("  {:<24} {}", function.name, function.kind);
    }
    Ok(ExitCode::SUCCESS)
}
