//! `sluice udf build` and `sluice udf inspect`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use sluice::runtime::{Runtime, RuntimeConfig};

use super::{sdk, udf_python};

const TARGET: &str = "wasm32-wasip2";

/// Builds every cdylib of the crate or workspace at `path` into a component, and prints
/// where each went: `<workspace>/target/wasm32-wasip2/release/<name>.wasm`.
///
/// Flags come from the crate's own `.cargo/config.toml`, as for a plain `cargo build`:
/// setting them here instead would override that file, and make every switch between
/// the two rebuild all dependencies (cargo keys its cache on the flags).
///
/// Unless the crate chose its own target directory, cargo builds in one directory shared
/// by all UDF crates ([`shared_target_dir`]), so that the SDK and wit-bindgen compile once
/// per machine, not once per crate.
pub fn build(path: &Path) -> Result<ExitCode> {
    if udf_python::is_project(path) {
        return udf_python::build(path);
    }
    if !path.is_dir() {
        bail!(
            "{} is not a folder: give the folder of a UDF crate or workspace (`sluice new NAME` makes one)",
            path.display()
        );
    }
    if !path.join("Cargo.toml").is_file() {
        bail!(
            "{} has no Cargo.toml (nor udf.py): give the folder of a UDF crate or workspace (`sluice new NAME` makes one) or of a Python UDF project",
            path.display()
        );
    }
    ensure_target()?;
    // Crates made by `sluice new` depend on it; it is written once per version.
    sdk::install()?;
    let configs = cargo_configs(path);
    if !simd_configured(&configs) {
        tracing::warn!(
            "no cargo configuration for {} enables SIMD, and its byte loops run about 3x slower without it: add to {}/.cargo/config.toml\n[target.{TARGET}]\nrustflags = [\"-C\", \"target-feature=+simd128\"]",
            path.display(),
            path.display()
        );
    }
    let workspace = workspace_root(path)?;
    let shared = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(_) => None,
        None if target_dir_configured(&configs) => None,
        None => Some(shared_target_dir()?),
    };
    // Two builds at once would copy each other's components (crates of the same name
    // write the same file in the shared directory).
    let _lock = shared.as_deref().map(BuildLock::acquire).transpose()?;
    let mut cargo = Command::new("cargo");
    cargo
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(path)
        .stderr(Stdio::inherit());
    if let Some(dir) = &shared {
        cargo.env("CARGO_TARGET_DIR", dir);
    }
    let output = cargo
        .output()
        .context("cannot run cargo: install Rust with rustup (https://rustup.rs)")?;
    if !output.status.success() {
        bail!(
            "building the UDFs in {} failed (cargo's errors are above)",
            path.display()
        );
    }
    let destination = workspace.join("target").join(TARGET).join("release");
    let mut built = 0;
    for file in components(&output.stdout) {
        let file = Path::new(&file);
        let to = destination.join(file.file_name().expect("cargo names files"));
        if shared.is_some() {
            std::fs::create_dir_all(&destination)
                .and_then(|()| std::fs::copy(file, &to))
                .with_context(|| format!("cannot copy {} to {}", file.display(), to.display()))?;
            forget(file);
        }
        println!("{}", if shared.is_some() { &to } else { file }.display());
        built += 1;
    }
    if built == 0 {
        bail!(
            "{} has no cdylib crate: a UDF crate needs `[lib] crate-type = [\"cdylib\"]`",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The components among the artifacts of cargo's JSON messages.
fn components(messages: &[u8]) -> Vec<String> {
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(messages).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_cdylib = message["target"]["crate_types"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if message["reason"] == "compiler-artifact" && is_cdylib {
            files.extend(
                message["filenames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .filter(|f| f.ends_with(".wasm"))
                    .map(str::to_owned),
            );
        }
    }
    files
}

/// Removes a copied component from the shared directory, and its twin in `deps/`: cargo
/// names a cdylib without a hash, so another crate of the same name overwrites it, and
/// cargo, finding its own crate's output in place, would not build it again. Missing, it
/// is linked anew (the dependencies stay compiled).
fn forget(component: &Path) {
    let name = component.file_name().expect("cargo names files");
    let deps = component.with_file_name("deps").join(name);
    for file in [component, &deps] {
        let _ = std::fs::remove_file(file);
    }
}

/// The root of the cargo workspace `path` is in (the crate itself when it is on its own).
fn workspace_root(path: &Path) -> Result<PathBuf> {
    let output = Command::new("cargo")
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .current_dir(path)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo: install Rust with rustup (https://rustup.rs)")?;
    if !output.status.success() {
        bail!(
            "cargo cannot read the crate in {} (its error is above)",
            path.display()
        );
    }
    let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(manifest
        .parent()
        .expect("a manifest is in a folder")
        .to_owned())
}

/// The cargo target directory every UDF crate builds in: `$SLUICE_BUILD_DIR`, else
/// `$XDG_CACHE_HOME/sluice/udf-build`, else `~/.cache/sluice/udf-build`.
pub fn shared_target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_BUILD_DIR") {
        return Ok(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context(
            "none of SLUICE_BUILD_DIR, XDG_CACHE_HOME and HOME is set: set one, for the UDF build cache",
        )?;
    Ok(base.join("sluice/udf-build"))
}

/// An exclusive lock on the shared target directory, released when dropped (or when the
/// process ends, however it ends).
struct BuildLock {
    _held: std::fs::File,
}

impl BuildLock {
    fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(".sluice-build.lock");
        let file = std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .with_context(|| format!("cannot open the build lock {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Self { _held: file })
    }
}

/// The `.cargo/config.toml` files cargo reads for `path`, nearest first.
fn cargo_configs(path: &Path) -> Vec<toml::Table> {
    let Ok(path) = path.canonicalize() else {
        return Vec::new();
    };
    path.ancestors()
        .filter_map(|dir| std::fs::read_to_string(dir.join(".cargo/config.toml")).ok())
        .filter_map(|text| text.parse::<toml::Table>().ok())
        .collect()
}

/// Whether one of `configs` turns on `simd128` for the wasm target.
fn simd_configured(configs: &[toml::Table]) -> bool {
    configs.iter().any(|config| {
        let flags = |table: Option<&toml::Value>| {
            table
                .and_then(|table| table.get("rustflags"))
                .is_some_and(|flags| flags.to_string().contains("+simd128"))
        };
        flags(config.get("target").and_then(|target| target.get(TARGET)))
            || flags(config.get("build"))
    })
}

/// Whether one of `configs` sets `build.target-dir`: such a crate keeps its own.
fn target_dir_configured(configs: &[toml::Table]) -> bool {
    configs.iter().any(|config| {
        config
            .get("build")
            .and_then(|build| build.get("target-dir"))
            .is_some()
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
        assert!(!simd_configured(&cargo_configs(&crate_dir)));
        let config = dir.path().join("workspace/.cargo/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "[build]\ntarget = \"wasm32-wasip2\"\n").unwrap();
        assert!(!simd_configured(&cargo_configs(&crate_dir)));
        std::fs::write(
            &config,
            "[target.wasm32-wasip2]\nrustflags = [\"-C\", \"target-feature=+simd128\"]\n",
        )
        .unwrap();
        assert!(
            simd_configured(&cargo_configs(&crate_dir)),
            "found in a folder above the crate"
        );
    }

    #[test]
    fn a_crate_keeps_a_target_dir_its_cargo_config_sets() {
        let dir = tempfile::tempdir().unwrap();
        let crate_dir = dir.path().join("udfs/one");
        std::fs::create_dir_all(crate_dir.join(".cargo")).unwrap();
        assert!(!target_dir_configured(&cargo_configs(&crate_dir)));
        std::fs::create_dir_all(dir.path().join("udfs/.cargo")).unwrap();
        std::fs::write(
            dir.path().join("udfs/.cargo/config.toml"),
            "[build]\ntarget-dir = \"target\"\n",
        )
        .unwrap();
        assert!(target_dir_configured(&cargo_configs(&crate_dir)));
    }

    #[test]
    fn components_are_the_wasm_files_of_cdylib_artifacts() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"crate_types":["lib"]},"filenames":["/t/libserde.rlib"]}"#,
            r#"{"reason":"compiler-artifact","target":{"crate_types":["cdylib","rlib"]},"filenames":["/t/demo.wasm","/t/libdemo.rlib"]}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(components(messages.as_bytes()), ["/t/demo.wasm"]);
    }
}
