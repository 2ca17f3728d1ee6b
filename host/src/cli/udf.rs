//! `sluice udf build` and `sluice udf inspect`.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use sluice::runtime::{Runtime, RuntimeConfig};

const TARGET: &str = "wasm32-wasip2";

/// Builds every cdylib of the crate or workspace at `path` into a component.
///
/// Flags come from the crate's own `.cargo/config.toml`, as for a plain `cargo build`:
/// setting them here instead would override that file, and make every switch between
/// the two rebuild all dependencies (cargo keys its cache on the flags).
pub fn build(path: &Path) -> Result<ExitCode> {
    ensure_target()?;
    if !simd_configured(path) {
        tracing::warn!(
            "no cargo configuration for {} enables SIMD, and its byte loops run about 3x slower without it: add to {}/.cargo/config.toml\n[target.{TARGET}]\nrustflags = [\"-C\", \"target-feature=+simd128\"]",
            path.display(),
            path.display()
        );
    }
    let output = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(path)
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

/// Whether a `.cargo/config.toml` that cargo reads in `path` (there or in a folder above
/// it) turns on `simd128` for the wasm target.
fn simd_configured(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    path.ancestors().any(|dir| {
        let Ok(text) = std::fs::read_to_string(dir.join(".cargo/config.toml")) else {
            return false;
        };
        let Ok(config) = text.parse::<toml::Table>() else {
            return false;
        };
        let flags = |table: Option<&toml::Value>| {
            table
                .and_then(|table| table.get("rustflags"))
                .is_some_and(|flags| flags.to_string().contains("+simd128"))
        };
        flags(config.get("target").and_then(|target| target.get(TARGET)))
            || flags(config.get("build"))
    })
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
    tracing::info!("installing the {TARGET} target with rustup");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_counts_as_configured_only_where_a_cargo_config_turns_it_on() {
        let dir = tempfile::tempdir().unwrap();
        let crate_dir = dir.path().join("workspace/my-udf");
        std::fs::create_dir_all(&crate_dir).unwrap();
        assert!(!simd_configured(&crate_dir));
        let config = dir.path().join("workspace/.cargo/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "[build]\ntarget = \"wasm32-wasip2\"\n").unwrap();
        assert!(!simd_configured(&crate_dir));
        std::fs::write(
            &config,
            "[target.wasm32-wasip2]\nrustflags = [\"-C\", \"target-feature=+simd128\"]\n",
        )
        .unwrap();
        assert!(
            simd_configured(&crate_dir),
            "found in a folder above the crate"
        );
    }
}
