//! Job manifests: TOML files that say where records come from, what is done to them and
//! where they go. Every key is documented in `docs/manifest.md`.
//!
//! Loading is two steps: [`spec`] parses the TOML (rejecting unknown keys and wrong
//! types), then [`resolve`] checks what the keys mean (streams that exist, components
//! that load, functions of the right kind) and produces a [`JobConfig`]. Every error
//! names the file, line and column, and says what to do.

pub mod config;
mod resolve;
mod spec;

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

/// Reads, parses and checks the manifest at `path`. Components are loaded through
/// `runtime`, so a manifest that passes can run.
pub fn load(path: &Path, runtime: &Runtime) -> Result<JobConfig, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|error| ManifestError {
        file: path.to_owned(),
        position: None,
        message: format!("cannot read the manifest: {error}"),
        hint: Some(
            "check the path; `sluice run` takes a job manifest such as examples/wordcount/job.toml"
                .into(),
        ),
    })?;
    parse(&text, path, runtime)
}

/// Parses and checks manifest `text`; `path` is where it came from (for messages and for
/// resolving relative paths against its directory).
pub fn parse(text: &str, path: &Path, runtime: &Runtime) -> Result<JobConfig, ManifestError> {
    resolve::Resolver::new(text, path, runtime).resolve()
}
