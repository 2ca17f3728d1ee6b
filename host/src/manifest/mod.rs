//! Job manifests: TOML files that say where records come from, what is done to them and
//! where they go. Every key is documented in `docs/manifest.md`.
//!
//! Loading is two steps: [`spec`] parses the TOML (rejecting unknown keys and wrong
//! types), then [`resolve`] checks what the keys mean (streams that exist, components
//! that load, functions of the right kind) and produces a [`JobConfig`]. Every error
//! names the file, line and column, and says what to do.

pub mod bounds;
pub mod config;
mod keyed;
mod resolve;
mod spec;
pub mod suggest;

pub use config::*;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::runtime::Runtime;

/// A manifest that cannot be run, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// Line and column (from 1) of the offending text, where there is one.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// The largest manifest file read, in bytes: far more than any job needs (a `queue`
/// source's batches included), and a bound on what `check` reads.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Reads, parses and checks the manifest at `path`. Components are loaded through
/// `runtime`, so a manifest that passes can run.
pub fn load(path: &Path, runtime: &Runtime) -> Result<JobConfig, ManifestError> {
    let text = read_manifest(path).map_err(|message| ManifestError {
        file: path.to_owned(),
        position: None,
        message,
        hint: Some(
            "check the path; `sluice run` takes a job manifest such as examples/wordcount/job.toml"
                .into(),
        ),
    })?;
    parse(&text, path, runtime)
}

/// The text of the manifest at `path`: a regular file of at most [`MAX_MANIFEST_BYTES`].
fn read_manifest(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_capped(path, MAX_MANIFEST_BYTES)
        .map_err(|error| format!("cannot read the manifest: {error:#}"))?;
    String::from_utf8(bytes).map_err(|error| format!("the manifest is not UTF-8 text: {error}"))
}

/// How a server hosts a job (`sluice serve`): its `[udfs]` aliases name uploaded
/// components (`name` or `name@sha256`) rather than paths, and the server, not the
/// manifest, chooses its checkpoint directory.
pub trait Hosting {
    /// The file of the uploaded component `reference` names, or why there is none.
    fn component(&self, reference: &str) -> Result<PathBuf, String>;

    /// The checkpoint directory of job `job`.
    fn checkpoint_dir(&self, job: &str) -> PathBuf;

    /// Where the files the manifest names are opened: beneath the tenant's directory.
    fn files(&self) -> std::io::Result<crate::beneath::JobFiles>;
}

/// Parses and checks manifest `text` as [`parse`] does, for a job `hosting` hosts.
pub fn parse_hosted(
    text: &str,
    path: &Path,
    runtime: &Runtime,
    hosting: &dyn Hosting,
) -> Result<JobConfig, ManifestError> {
    resolve::Resolver::new(text, path, runtime)
        .with_hosting(hosting)
        .resolve()
}

/// Parses and checks manifest `text`; `path` is where it came from (for messages and for
/// resolving relative paths against its directory).
pub fn parse(text: &str, path: &Path, runtime: &Runtime) -> Result<JobConfig, ManifestError> {
    resolve::Resolver::new(text, path, runtime).resolve()
}
