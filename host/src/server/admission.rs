//! Admitting a tenant's manifest: resolved against the tenant's uploaded components and
//! files, checkpointed where the server says, and checked against the tenancy rules (no
//! standard input, no path outside the tenant's files, sockets only to allowed hosts).

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};

use crate::manifest::{self, Hosting, JobConfig, ManifestError, SinkKind, SourceKind, StepConfig};
use crate::runtime::Runtime;

use super::data::DataDir;
use super::registry::Registry;

/// The file name manifest errors of submitted jobs point at.
pub const MANIFEST_NAME: &str = "job.toml";

/// A job admitted to run for a tenant.
pub struct Admitted {
    /// The job, for the tenant, with the server's checkpoint directory.
    pub config: JobConfig,
    /// The uploaded components it uses, as `(name, digest)`.
    pub components: Vec<(String, String)>,
}

/// Why a manifest was refused.
#[derive(Debug)]
pub enum Refusal {
    /// It does not resolve (as `sluice check` would say).
    Manifest(ManifestError),
    /// It breaks a rule of the server.
    Rule(String),
    /// The registry could not be read.
    Internal(anyhow::Error),
}

/// What a tenant's manifests are admitted against.
pub struct Admission<'a> {
    /// The data directory.
    pub data: &'a DataDir,
    /// The registry.
    pub registry: &'a Registry,
    /// The runtime components load into.
    pub runtime: &'a Runtime,
    /// The `host:port`s socket sources may connect to.
    pub allowed_hosts: &'a [String],
}

impl Admission<'_> {
    /// Admits `text` as a job of `tenant`.
    pub fn admit(&self, tenant: &str, text: &str) -> Result<Admitted, Refusal> {
        let files = self.data.files(tenant);
        let hosting = TenantHosting {
            tenant,
            data: self.data,
            registry: self.registry,
            used: RefCell::new(Vec::new()),
            failure: RefCell::new(None),
        };
        let parsed =
            manifest::parse_hosted(text, &files.join(MANIFEST_NAME), self.runtime, &hosting);
        if let Some(error) = hosting.failure.take() {
            return Err(Refusal::Internal(error));
        }
        let mut config = parsed.map_err(|mut error| {
            error.file = PathBuf::from(MANIFEST_NAME);
            error.message = error.message.replace(&format!("{}/", files.display()), "");
            Refusal::Manifest(error)
        })?;
        check_job_name(&config.name).map_err(Refusal::Rule)?;
        match &config.tenant {
            Some(named) if named != tenant => {
                return Err(Refusal::Rule(format!(
                    "the manifest names tenant `{named}`, but the token is tenant `{tenant}`'s: \
                     leave `tenant` out (jobs run for the tenant that submits them)"
                )));
            }
            _ => config.tenant = Some(tenant.to_owned()),
        }
        self.check_sources_and_sinks(&config, &files)
            .map_err(Refusal::Rule)?;
        let mut components = hosting.used.take();
        components.sort();
        components.dedup();
        Ok(Admitted { config, components })
    }

    fn check_sources_and_sinks(&self, config: &JobConfig, files: &Path) -> Result<(), String> {
        for source in &config.sources {
            let what = format!("source `{}`", source.name);
            match &source.kind {
                SourceKind::Stdin => {
                    return Err(format!(
                        "{what} reads standard input, which a server's jobs do not have: use a \
                         file (PUT /v1/files/PATH) or a socket source"
                    ));
                }
                SourceKind::Socket { host, port } => {
                    let address = format!("{host}:{port}");
                    if !self.allowed_hosts.contains(&address) {
                        return Err(format!(
                            "{what} connects to {address}, which the server does not allow \
                             (allowed: {}); ask its operator to add it to `allowed_hosts` of the \
                             server configuration",
                            list_or_none(self.allowed_hosts)
                        ));
                    }
                }
                SourceKind::Kafka(_) => {
                    return Err(format!(
                        "{what} is a Kafka source, which `sluice serve` does not run yet: run \
                         the job with `sluice run`"
                    ));
                }
                SourceKind::Directory { path, .. }
                | SourceKind::File { path, .. }
                | SourceKind::Table { path, .. } => beneath(path, files, &what)?,
                SourceKind::Generator { .. } | SourceKind::Queue { .. } => {}
            }
        }
        for stream in &config.streams {
            for step in &stream.steps {
                if let StepConfig::UpdateStateByKey {
                    initial_state: Some(initial),
                    ..
                }
                | StepConfig::MapWithState {
                    initial_state: Some(initial),
                    ..
                } = step
                {
                    beneath(
                        &initial.path,
                        files,
                        &format!("`initial_state` of stream `{}`", stream.name),
                    )?;
                }
            }
        }
        for sink in &config.sinks {
            let what = format!("sink `{}`", sink.name);
            match &sink.kind {
                SinkKind::Files { prefix, .. } => beneath(prefix, files, &what)?,
                SinkKind::Collect => {
                    return Err(format!(
                        "{what} is a collect sink, which keeps output in the server's memory: \
                         use a files sink and read its output with GET /v1/files/PATH"
                    ));
                }
                SinkKind::Kafka(_) => {
                    return Err(format!(
                        "{what} is a Kafka sink, which `sluice serve` does not run yet: run \
                         the job with `sluice run`"
                    ));
                }
                SinkKind::Print { .. } => {}
            }
        }
        Ok(())
    }
}

/// Refuses a job name that could not name a directory of its own.
pub fn check_job_name(name: &str) -> Result<(), String> {
    check_name(name, "job").map_err(|error| format!("{error}: rename the job (`name = ...`)"))
}

/// Refuses a name (of a tenant, job or component) that is not 1 to 64 letters, digits,
/// `-`, `_` or `.`, starting with a letter or digit: names become file names.
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` is not 1 to 64 letters, digits, `-`, `_` or `.` starting with \
             a letter or digit"
        ))
    }
}

/// Refuses `path` unless it stays inside `root` as written (no absolute path out, no
/// `..` above it) and as it is on disk now (no symbolic link leading out).
fn beneath(path: &Path, root: &Path, what: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "{what}: {why}; a job's paths are relative to the tenant's files (PUT /v1/files/PATH) \
             and must stay inside them"
        ))
    };
    let Ok(relative) = path.strip_prefix(root) else {
        return refuse("the path is outside the tenant's files");
    };
    let mut depth = 0usize;
    for part in relative.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return refuse("the path leads out with `..`"),
        }
    }
    // What exists of the path now must resolve inside the tenant's files too.
    let Ok(real_root) = root.canonicalize() else {
        return Ok(());
    };
    let mut existing = path.to_owned();
    while !existing.exists() {
        if !existing.pop() {
            return Ok(());
        }
    }
    match existing.canonicalize() {
        Ok(real) if real.starts_with(&real_root) => Ok(()),
        _ => refuse("a symbolic link on the path leads out"),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// The tenant's uploaded components and its jobs' checkpoint directories.
struct TenantHosting<'a> {
    tenant: &'a str,
    data: &'a DataDir,
    registry: &'a Registry,
    /// The components found, as `(name, digest)`.
    used: RefCell<Vec<(String, String)>>,
    /// A registry failure, which is the server's fault rather than the manifest's.
    failure: RefCell<Option<anyhow::Error>>,
}

impl Hosting for TenantHosting<'_> {
    fn component(&self, reference: &str) -> Result<PathBuf, String> {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest.trim_start_matches("sha256:"))),
            None => (reference, None),
        };
        let found = match self.registry.component(self.tenant, name) {
            Ok(found) => found,
            Err(error) => {
                *self.failure.borrow_mut() = Some(error);
                return Err("the registry could not be read".into());
            }
        };
        let Some(component) = found else {
            return Err(format!("there is no uploaded component `{name}`"));
        };
        if let Some(digest) = digest
            && digest != component.digest
        {
            return Err(format!(
                "component `{name}` is sha256 {}, not {digest}",
                component.digest
            ));
        }
        self.used
            .borrow_mut()
            .push((component.name, component.digest.clone()));
        Ok(self.data.component(&component.digest))
    }

    fn checkpoint_dir(&self, job: &str) -> PathBuf {
        // A name that cannot be a directory is refused after resolving.
        let job = if check_name(job, "job").is_ok() {
            job
        } else {
            "invalid"
        };
        self.data.checkpoint(self.tenant, job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        assert!(beneath(&root.join("in/a.txt"), &root, "x").is_ok());
        assert!(beneath(&root.join("in/../b.txt"), &root, "x").is_ok());
        for (path, says) in [
            (PathBuf::from("/etc/passwd"), "outside"),
            (root.join("../x"), "`..`"),
            (root.join("in/../../x"), "`..`"),
            (root.join("out/passwd"), "symbolic link"),
        ] {
            let error = beneath(&path, &root, "source `s`").unwrap_err();
            assert!(
                error.contains(says) && error.contains("source `s`"),
                "{error}"
            );
        }
    }

    #[test]
    fn names_must_be_file_names() {
        assert!(check_name("word-count_2.v1", "job").is_ok());
        for name in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(check_name(name, "job").is_err(), "{name}");
        }
    }
}
