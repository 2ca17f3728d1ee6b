//! `sluice new`: a UDF crate that builds anywhere, with a job that runs it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use super::sdk;

/// The languages `sluice new` writes UDFs in.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A Rust crate using `sluice-sdk`.
    Rust,
}

/// The files of a new Rust crate, as (path in the crate, template).
const RUST_TEMPLATE: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../guest-sdk/template/Cargo.toml.template"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../../guest-sdk/template/.cargo/config.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../guest-sdk/template/gitignore"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../guest-sdk/template/src/lib.rs"),
    ),
    (
        "job.toml",
        include_str!("../../../guest-sdk/template/job.toml"),
    ),
    ("Cargo.lock", sdk::LOCK),
];

/// Creates `path/` with a UDF crate named after its last component, and prints what to
/// run next.
pub fn new(path: &Path, lang: Lang) -> Result<ExitCode> {
    let Lang::Rust = lang;
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} does not end in a crate name", path.display()))?;
    check_name(name)?;
    if path.exists() {
        bail!(
            "{} already exists: give `sluice new` the path of a folder to create",
            path.display()
        );
    }
    let sdk = sdk::install()?;
    write(path, name, &sdk)?;
    let component = name.replace('-', "_");
    let shown = path.display();
    println!(
        "created the UDF crate {shown} (functions in {shown}/src/lib.rs) and its job {shown}/job.toml"
    );
    println!("next:");
    println!("  sluice udf build {shown}");
    println!(
        "  echo '\"to be or not\"' | sluice udf test {shown}/target/wasm32-wasip2/release/{component}.wasm#tokenize"
    );
    println!("  sluice run {shown}/job.toml");
    Ok(ExitCode::SUCCESS)
}

/// Writes the crate's files, depending on the SDK crate at `sdk`.
fn write(path: &Path, name: &str, sdk: &Path) -> Result<()> {
    let component = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{name}", name)
            .replace("{component}", &component)
            .replace("{alias}", &component)
            .replace("{version}", env!("CARGO_PKG_VERSION"))
            .replace("{sdk}", &sdk.display().to_string())
    };
    for (file, template) in RUST_TEMPLATE {
        let file = path.join(file);
        std::fs::create_dir_all(file.parent().expect("template files are in the crate"))
            .and_then(|()| std::fs::write(&file, fill(template)))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Refuses names cargo would refuse, saying why before any file is written.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!(
            "`{name}` cannot name a crate: use a letter, then letters, digits, `-` or `_` (e.g. `word-count`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_start_with_a_letter_and_hold_no_spaces() {
        for good in ["demo", "word-count", "a_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["1demo", "my demo", "", "é", "-x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_of_the_templates_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my-udf");
        write(&path, "my-udf", Path::new("/sdk/sluice-sdk")).unwrap();
        for (file, _) in RUST_TEMPLATE {
            let text = std::fs::read_to_string(path.join(file)).unwrap();
            for placeholder in ["{name}", "{component}", "{alias}", "{version}", "{sdk}"] {
                assert!(!text.contains(placeholder), "{file}: {placeholder}");
            }
        }
        let job = std::fs::read_to_string(path.join("job.toml")).unwrap();
        assert!(job.contains("my_udf = \"target/wasm32-wasip2/release/my_udf.wasm\""));
        let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("sluice-sdk = { path = \"/sdk/sluice-sdk\" }"));
        assert!(
            new(&path, Lang::Rust).is_err(),
            "refuses an existing folder"
        );
    }
}
