//! The guest SDK that travels with the binary.
//!
//! `sluice-sdk` is not published, and a path into a checkout only works inside it, so the
//! binary embeds sluice-sdk, sluice-abi and the WIT contract (see `build.rs`) and writes
//! them to `~/.local/share/sluice/sdk/<version>/`, where UDF crates made by `sluice new`
//! depend on them by path.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Every source file of the SDK, as (path in the written SDK, contents).
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The workspace manifest the SDK's crates inherit their fields and dependencies from.
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");

/// The SDK's crates, as (folder in the written SDK, their manifest in the checkout).
const CRATES: &[(&str, &str)] = &[
    ("sluice-sdk", include_str!("../../../guest-sdk/Cargo.toml")),
    (
        "sluice-abi",
        include_str!("../../../guest-sdk/abi/Cargo.toml"),
    ),
];

/// Workspace path dependencies, as (path in the checkout, path from a written crate).
const PATHS: &[(&str, &str)] = &[("guest-sdk/abi", "../sluice-abi")];

/// The lock file the example UDFs are built and tested with: a new crate starts from it,
/// so that its dependencies resolve to the versions tested here.
pub const LOCK: &str = include_str!("../../../udfs/Cargo.lock");

/// Where this version's SDK goes: `$XDG_DATA_HOME/sluice/sdk/<version>`, else
/// `~/.local/share/sluice/sdk/<version>`.
pub fn dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set: set HOME, where the SDK is written")?;
    Ok(base.join("sluice/sdk").join(env!("CARGO_PKG_VERSION")))
}

/// Writes the SDK under [`dir`] unless it is there already, and returns the path of the
/// `sluice-sdk` crate. Only files whose contents differ are written: cargo judges path
/// dependencies by their files' times, and rewriting them would rebuild every UDF crate.
pub fn install() -> Result<PathBuf> {
    let dir = dir()?;
    let workspace: toml::Table = WORKSPACE_MANIFEST
        .parse()
        .expect("the workspace manifest is valid TOML");
    let mut files: Vec<(String, String)> = FILES
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    for (name, manifest) in CRATES {
        files.push((
            format!("{name}/Cargo.toml"),
            standalone_manifest(manifest, &workspace)?,
        ));
    }
    for (path, text) in files {
        let path = dir.join(path);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        std::fs::create_dir_all(path.parent().expect("SDK files are in folders"))
            .and_then(|()| std::fs::write(&path, text))
            .with_context(|| format!("cannot write the Sluice SDK to {}", path.display()))?;
    }
    Ok(dir.join("sluice-sdk"))
}

/// A member's manifest with what it inherits from the workspace written in, so that it
/// builds on its own; without dev-dependencies, whose tests are not shipped.
fn standalone_manifest(member: &str, workspace: &toml::Table) -> Result<String> {
    let mut manifest: toml::Table = member.parse().context("an SDK manifest is not TOML")?;
    let inherited = |table: &toml::Table, section: &str, key: &str| -> Result<toml::Value> {
        workspace
            .get("workspace")
            .and_then(|w| w.get(section))
            .and_then(|s| s.get(key))
            .cloned()
            .with_context(|| format!("`{key}` is not in [workspace.{section}]"))
            .map(|value| merge(value, table))
    };
    if let Some(toml::Value::Table(package)) = manifest.get_mut("package") {
        for (key, value) in package.iter_mut() {
            if let toml::Value::Table(table) = value
                && is_inherited(table)
            {
                *value = inherited(table, "package", key)?;
            }
        }
    }
    manifest.remove("dev-dependencies");
    if let Some(toml::Value::Table(dependencies)) = manifest.get_mut("dependencies") {
        for (name, value) in dependencies.iter_mut() {
            if let toml::Value::Table(table) = value
                && is_inherited(table)
            {
                let mut resolved = inherited(table, "dependencies", name)?;
                relocate(&mut resolved)?;
                *value = resolved;
            }
        }
    }
    Ok(manifest.to_string())
}

fn is_inherited(table: &toml::Table) -> bool {
    table.get("workspace") == Some(&toml::Value::Boolean(true))
}

/// The workspace's value with the member's own additions (`features`, ...).
fn merge(value: toml::Value, member: &toml::Table) -> toml::Value {
    let extra: toml::Table = member
        .iter()
        .filter(|(key, _)| *key != "workspace")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    match value {
        toml::Value::Table(mut table) => {
            table.extend(extra);
            toml::Value::Table(table)
        }
        toml::Value::String(version) if !extra.is_empty() => {
            let mut table = extra;
            table.insert("version".into(), toml::Value::String(version));
            toml::Value::Table(table)
        }
        value => value,
    }
}

/// Points a path dependency at its place in the written SDK.
fn relocate(dependency: &mut toml::Value) -> Result<()> {
    let Some(toml::Value::String(path)) = dependency.get_mut("path") else {
        return Ok(());
    };
    match PATHS.iter().find(|(from, _)| from == path) {
        Some((_, to)) => {
            *path = to.to_string();
            Ok(())
        }
        None => bail!("the SDK depends on {path}, which is not shipped with it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written_manifest(name: &str) -> toml::Table {
        let workspace = WORKSPACE_MANIFEST.parse().unwrap();
        let (_, manifest) = CRATES.iter().find(|(n, _)| *n == name).unwrap();
        standalone_manifest(manifest, &workspace)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn written_manifests_inherit_nothing_and_point_into_the_sdk() {
        let sdk = written_manifest("sluice-sdk");
        assert_eq!(
            sdk["package"]["version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(sdk["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(
            sdk["dependencies"]["sluice-abi"]["path"].as_str(),
            Some("../sluice-abi")
        );
        assert!(
            sdk["dependencies"]["serde"]["features"].is_array(),
            "keeps the workspace's features: {sdk}"
        );
        let abi = written_manifest("sluice-abi");
        assert!(!abi.contains_key("dev-dependencies"));
        assert!(!abi.to_string().contains("workspace"), "{abi}");
        assert!(!sdk.to_string().contains(env!("CARGO_MANIFEST_DIR")));
    }

    #[test]
    fn the_sdk_ships_its_sources_and_the_wit_contract() {
        let paths: Vec<&str> = FILES.iter().map(|(path, _)| *path).collect();
        for expected in [
            "sluice-sdk/src/lib.rs",
            "sluice-abi/src/lib.rs",
            "wit/udf.wit",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn merge_adds_the_members_features_to_a_plain_version() {
        let member: toml::Table = "workspace = true\nfeatures = [\"x\"]".parse().unwrap();
        let merged = merge(toml::Value::String("1".into()), &member);
        assert_eq!(merged["version"].as_str(), Some("1"));
        assert_eq!(merged["features"][0].as_str(), Some("x"));
    }
}
