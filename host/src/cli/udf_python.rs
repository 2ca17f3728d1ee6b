//! `sluice udf build` for a Python UDF project: a folder holding `udf.py`, optionally with
//! a `pyproject.toml` naming the component and its pure-Python dependencies.
//!
//! componentize-py (exactly [`COMPONENTIZE_PY`], in a venv of its own under
//! `~/.cache/sluice/python`) builds the module, the Python guest SDK and the dependencies
//! into one component of the `udf` world, with CPython inside. The SDK and the WIT come
//! from the binary (see `sdk.rs`), so this works outside the checkout.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::sdk;

/// The componentize-py release Python UDFs are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The module componentize-py is pointed at: it imports the project's `udf.py` (whose
/// decorators export its functions) and the SDK's class serving the world's exports.
const APP_MODULE: &str = "sluice_component";
const APP_SOURCE: &str = "import udf  # noqa: F401  (its decorators export its functions)\n\
                          from sluice_sdk.component import WitWorld  # noqa: F401\n";

/// Whether `path` is a Python UDF project.
pub fn is_project(path: &Path) -> bool {
    path.join("udf.py").is_file()
}

/// Builds the project at `path` into `<path>/target/<name>.wasm` and prints that path. A
/// build whose inputs (sources, dependencies, SDK, WIT, componentize-py) are those of the
/// component already there is skipped.
pub fn build(path: &Path) -> Result<ExitCode> {
    let project = Project::read(path)?;
    let sdk = sdk::install()?;
    let sdk_root = sdk.parent().expect("the SDK is in a folder").to_owned();
    let target = path.join("target");
    let output = target.join(format!("{}.wasm", project.name));
    let stamp = target.join(format!("{}.wasm.inputs", project.name));
    let inputs = project.fingerprint(&sdk_root)?;
    if output.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|old| old == inputs) {
        println!("{}", output.display());
        return Ok(ExitCode::SUCCESS);
    }
    let componentize = componentize_py()?;
    let work = target.join("build");
    std::fs::create_dir_all(&work)
        .with_context(|| format!("cannot create the build folder {}", work.display()))?;
    std::fs::write(work.join(format!("{APP_MODULE}.py")), APP_SOURCE)
        .with_context(|| format!("cannot write to {}", work.display()))?;
    let mut search = vec![path.to_owned(), sdk_root.join("python"), work.clone()];
    if !project.dependencies.is_empty() {
        search.push(install_dependencies(&project.dependencies, &work)?);
    }
    let mut command = Command::new(&componentize);
    command
        .arg("-d")
        .arg(sdk_root.join("wit"))
        .args(["-w", "udf", "componentize"]);
    for dir in &search {
        command.arg("-p").arg(dir);
    }
    command
        .arg(APP_MODULE)
        .arg("-o")
        .arg(&output)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", componentize.display()))?;
    if !status.success() {
        bail!(
            "componentize-py could not build {} (its errors are above: an exception raised while \
             udf.py is imported stops the build)",
            path.join("udf.py").display()
        );
    }
    std::fs::write(&stamp, inputs).with_context(|| format!("cannot write {}", stamp.display()))?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

/// What `pyproject.toml` says about the project, with defaults for a bare `udf.py`.
#[derive(Debug, PartialEq, Eq)]
struct Project {
    dir: PathBuf,
    /// The component's file name: `[project] name`, else the folder's name.
    name: String,
    /// `[project] dependencies`, as pip requirement strings.
    dependencies: Vec<String>,
}

impl Project {
    fn read(path: &Path) -> Result<Self> {
        if !is_project(path) {
            bail!(
                "{} has no udf.py: a Python UDF project is a folder holding udf.py (and optionally pyproject.toml)",
                path.display()
            );
        }
        let folder_name = path
            .canonicalize()
            .ok()
            .and_then(|dir| {
                dir.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "udf".into());
        let manifest = path.join("pyproject.toml");
        let table: toml::Table = match std::fs::read_to_string(&manifest) {
            Ok(text) => text
                .parse()
                .with_context(|| format!("{} is not valid TOML", manifest.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", manifest.display()));
            }
        };
        let section = table.get("project");
        let name = match section.and_then(|project| project.get("name")) {
            None => folder_name,
            Some(toml::Value::String(name)) => name.clone(),
            Some(other) => bail!(
                "{}: [project] name must be a string, not {other}",
                manifest.display()
            ),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "the project name `{name}` (from {}) cannot name a file: use letters, digits, `-`, `_` and `.`",
                if section.is_some() {
                    manifest.display().to_string()
                } else {
                    "its folder".into()
                }
            );
        }
        let dependencies = match section.and_then(|project| project.get("dependencies")) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(requirement) => Ok(requirement.clone()),
                    other => bail!(
                        "{}: [project] dependencies holds {other}, not a requirement string",
                        manifest.display()
                    ),
                })
                .collect::<Result<_>>()?,
            Some(other) => bail!(
                "{}: [project] dependencies must be a list of requirement strings, not {other}",
                manifest.display()
            ),
        };
        Ok(Self {
            dir: path.to_owned(),
            name,
            dependencies,
        })
    }

    /// A digest of everything the component is built from.
    fn fingerprint(&self, sdk_root: &Path) -> Result<String> {
        let mut hash = Sha256::new();
        hash.update(COMPONENTIZE_PY);
        hash.update(APP_SOURCE);
        for requirement in &self.dependencies {
            hash.update(requirement);
            hash.update([0]);
        }
        for dir in [
            self.dir.clone(),
            sdk_root.join("python"),
            sdk_root.join("wit"),
        ] {
            let mut files = Vec::new();
            sources(&dir, &mut files)?;
            files.sort();
            for file in files {
                hash.update(
                    file.strip_prefix(&dir)
                        .unwrap_or(&file)
                        .to_string_lossy()
                        .as_bytes(),
                );
                hash.update(
                    std::fs::read(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                );
            }
        }
        Ok(format!("{:x}\n", hash.finalize()))
    }
}

/// The Python, TOML and WIT files under `dir`, leaving out build output and caches.
fn sources(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "__pycache__") && !name.starts_with('.') {
                sources(&path, files)?;
            }
        } else if name.ends_with(".py") || name.ends_with(".toml") || name.ends_with(".wit") {
            files.push(path);
        }
    }
    Ok(())
}

/// Where componentize-py's venv lives: `$XDG_CACHE_HOME/sluice/python`, else
/// `~/.cache/sluice/python`.
fn python_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context(
            "neither XDG_CACHE_HOME nor HOME is set: set HOME, where componentize-py is installed",
        )?;
    Ok(base.join("sluice/python"))
}

/// The componentize-py executable, installed into its venv first if it is missing or of
/// another version.
fn componentize_py() -> Result<PathBuf> {
    let venv = python_dir()?.join("venv");
    let executable = venv.join("bin/componentize-py");
    let installed = Command::new(&executable)
        .arg("--version")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(COMPONENTIZE_PY));
    if installed {
        return Ok(executable);
    }
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY} into {} (once)",
        venv.display()
    );
    if !venv.join("bin/pip").is_file() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .stdin(Stdio::null())
            .status()
            .context("cannot run python3: Python UDFs need Python 3.10 or later (with its venv module) to install componentize-py")?;
        if !status.success() {
            bail!(
                "`python3 -m venv {}` failed (its error is above): install Python's venv module (Debian: python3-venv)",
                venv.display()
            );
        }
    }
    pip(&venv)
        .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
        .status()
        .context("cannot run pip")?
        .success()
        .then_some(executable)
        .with_context(|| {
            format!("pip could not install componentize-py {COMPONENTIZE_PY} (its error is above)")
        })
}

fn pip(venv: &Path) -> Command {
    let mut command = Command::new(venv.join("bin/pip"));
    command
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .stdin(Stdio::null());
    command
}

/// Installs `requirements` into a folder of `work` (kept while they stay the same) and
/// checks that every package in it is pure Python.
fn install_dependencies(requirements: &[String], work: &Path) -> Result<PathBuf> {
    let key = format!("{:x}", Sha256::digest(requirements.join("\n")));
    let dir = work.join("dependencies");
    let done = dir.join(".sluice-requirements");
    if std::fs::read_to_string(&done).is_ok_and(|old| old == key) {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let venv = python_dir()?.join("venv");
    let status = pip(&venv)
        .args(["--no-compile", "--target"])
        .arg(&dir)
        .args(requirements)
        .status()
        .context("cannot run pip")?;
    if !status.success() {
        bail!(
            "pip could not install the dependencies of pyproject.toml ({}): its error is above",
            requirements.join(", ")
        );
    }
    check_pure(&dir)?;
    std::fs::write(&done, key).with_context(|| format!("cannot write {}", done.display()))?;
    Ok(dir)
}

/// Refuses, by name, a package with native code among those installed in `dir`: a
/// compiled extension cannot be loaded inside a WebAssembly component.
fn check_pure(dir: &Path) -> Result<()> {
    let mut native = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let folder = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(stem) = folder.strip_suffix(".dist-info") else {
            continue;
        };
        let metadata = std::fs::read_to_string(path.join("METADATA")).unwrap_or_default();
        let name = metadata
            .lines()
            .find_map(|line| line.strip_prefix("Name: "))
            .map(str::to_owned)
            .unwrap_or_else(|| stem.split('-').next().unwrap_or(stem).to_owned());
        let wheel = std::fs::read_to_string(path.join("WHEEL")).unwrap_or_default();
        let record = std::fs::read_to_string(path.join("RECORD")).unwrap_or_default();
        let extension = record
            .lines()
            .filter_map(|line| line.split(',').next())
            .find(|file| {
                [".so", ".pyd", ".dylib"]
                    .iter()
                    .any(|ext| file.ends_with(ext) || file.contains(".so."))
            });
        let impure = wheel
            .lines()
            .any(|line| line.trim() == "Root-Is-Purelib: false");
        match (extension, impure) {
            (Some(file), _) => native.push(format!("`{name}` (it ships {file})")),
            (None, true) => native.push(format!("`{name}` (its wheel is platform-specific)")),
            (None, false) => {}
        }
    }
    if !native.is_empty() {
        bail!(
            "pyproject.toml depends on packages with native code, which cannot run inside a \
             WebAssembly component: {}. Only pure-Python packages can be bundled; drop these \
             or use pure-Python alternatives",
            native.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(dir: &Path, name: &str, wheel: &str, record: &str) {
        let info = dir.join(format!("{name}-1.0.dist-info"));
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\n"),
        )
        .unwrap();
        std::fs::write(info.join("WHEEL"), wheel).unwrap();
        std::fs::write(info.join("RECORD"), record).unwrap();
    }

    #[test]
    fn packages_with_native_code_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        dist(
            dir.path(),
            "six",
            "Root-Is-Purelib: true\n",
            "six.py,sha256=x,1\n",
        );
        check_pure(dir.path()).expect("a pure-Python package is bundled");
        dist(
            dir.path(),
            "numpy",
            "Root-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_17_x86_64\n",
            "numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so,sha256=x,1\n",
        );
        let error = check_pure(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("`numpy` (it ships numpy/core/_multiarray_umath"),
            "{error}"
        );
        assert!(!error.contains("six"), "{error}");
    }

    #[test]
    fn the_project_is_named_by_pyproject_else_by_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("scorer");
        std::fs::create_dir_all(&project).unwrap();
        assert!(
            Project::read(&project)
                .unwrap_err()
                .to_string()
                .contains("has no udf.py")
        );
        std::fs::write(project.join("udf.py"), "import sluice_sdk\n").unwrap();
        let bare = Project::read(&project).unwrap();
        assert_eq!((bare.name.as_str(), bare.dependencies.len()), ("scorer", 0));
        std::fs::write(
            project.join("pyproject.toml"),
            "[project]\nname = \"sentiment\"\ndependencies = [\"six==1.16.0\"]\n",
        )
        .unwrap();
        let named = Project::read(&project).unwrap();
        assert_eq!(named.name, "sentiment");
        assert_eq!(named.dependencies, ["six==1.16.0"]);
        std::fs::write(
            project.join("pyproject.toml"),
            "[project]\nname = \"../x\"\n",
        )
        .unwrap();
        assert!(
            Project::read(&project)
                .unwrap_err()
                .to_string()
                .contains("cannot name a file")
        );
    }

    #[test]
    fn the_fingerprint_follows_the_sources_but_not_the_build_output() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("p");
        let sdk = dir.path().join("sdk");
        for folder in [project.join("target"), sdk.join("python"), sdk.join("wit")] {
            std::fs::create_dir_all(folder).unwrap();
        }
        std::fs::write(project.join("udf.py"), "x = 1\n").unwrap();
        let read = || Project::read(&project).unwrap().fingerprint(&sdk).unwrap();
        let first = read();
        std::fs::write(project.join("target/p.wasm"), "built").unwrap();
        assert_eq!(read(), first);
        std::fs::write(project.join("udf.py"), "x = 2\n").unwrap();
        assert_ne!(read(), first);
    }
}
