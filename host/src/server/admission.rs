//! Admitting a tenant's manifest: resolved against the tenant's uploaded components and
//! files, checkpointed where the server says, and checked against the tenancy rules (no
//! standard input, no path outside the tenant's files, sockets only to allowed hosts).

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};

use crate::beneath::{Beneath, JobFiles};
use crate::disk::DiskQuotas;
use crate::manifest::{
    self, Hosted, Hosting, JobConfig, ManifestError, SinkKind, SourceKind, StepConfig,
};
use crate::runtime::Runtime;

use super::config::TenantQuotas;
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
    /// It would clash with another job of the tenant.
    Conflict(String),
    /// It asks for more than a quota of the tenant allows.
    Quota(OverQuota),
    /// The registry could not be read.
    Internal(anyhow::Error),
}

impl Refusal {
    /// The reason a job this refuses at a resume failed for.
    pub fn failure_reason(&self) -> crate::metrics::FailureReason {
        use crate::metrics::FailureReason;
        match self {
            Refusal::Manifest(_) | Refusal::Rule(_) | Refusal::Conflict(_) => {
                FailureReason::Manifest
            }
            Refusal::Quota(_) => FailureReason::Quota,
            Refusal::Internal(_) => FailureReason::Other,
        }
    }
}

/// A quota a job is over: its name (as `quotas` of the API write it), its limit and
/// what the job asks for, in the quota's unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// The quota's name.
    pub quota: &'static str,
    /// Its limit.
    pub limit: u64,
    /// What the job asks for.
    pub requested: u64,
}

/// Refuses a job that asks for more than `quotas` allow of what a job states in its
/// manifest: partitions, call timeout and memory per instance. The runtime checks the
/// same at job start; checked here, a submit is refused rather than a job left failing.
pub fn check_quotas(quotas: &TenantQuotas, config: &JobConfig) -> Result<(), OverQuota> {
    let asks = [
        (
            "max_partitions",
            quotas.max_partitions,
            config.partitions as u64,
        ),
        (
            "max_call_timeout_ms",
            quotas.max_call_timeout_ms,
            config.limits.call_timeout.as_millis() as u64,
        ),
        (
            "memory_per_instance",
            quotas.memory_per_instance,
            config.limits.memory_bytes as u64,
        ),
    ];
    for (quota, limit, requested) in asks {
        if let Some(limit) = limit
            && requested > limit
        {
            return Err(OverQuota {
                quota,
                limit,
                requested,
            });
        }
    }
    Ok(())
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
    /// The quotas of tenants that leave one out.
    pub default_quotas: &'a TenantQuotas,
    /// The tenants' disk quotas, which their jobs share.
    pub disk_quotas: &'a DiskQuotas,
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
        let quotas = self
            .registry
            .tenant(tenant)
            .map_err(Refusal::Internal)?
            .map(|row| row.quotas.or(self.default_quotas))
            .unwrap_or_default();
        check_quotas(&quotas, &config).map_err(Refusal::Quota)?;
        let allowed = Some(self.allowed_hosts.to_vec());
        for source in &mut config.sources {
            if let SourceKind::Kafka(kafka) = &mut source.kind {
                kafka.allowed_brokers = allowed.clone();
            }
        }
        for sink in &mut config.sinks {
            if let SinkKind::Kafka(kafka) = &mut sink.kind {
                kafka.allowed_brokers = allowed.clone();
            }
        }
        config.hosted = Some(Hosted {
            files,
            disk: self
                .disk_quotas
                .of(&self.data.tenant(tenant), quotas.disk_bytes()),
        });
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
                    check_host(self.allowed_hosts, &what, &format!("{host}:{port}"))?;
                }
                SourceKind::Kafka(kafka) => {
                    check_kafka(self.allowed_hosts, &what, &kafka.brokers, &kafka.properties)?;
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
                SinkKind::Kafka(kafka) => {
                    check_kafka(self.allowed_hosts, &what, &kafka.brokers, &kafka.properties)?;
                }
                SinkKind::Print { .. } => {}
            }
        }
        Ok(())
    }

    /// Refuses `config` when one of its files sinks writes with the prefix another of its
    /// sinks, or a files sink of another job of `tenant`, writes with: their batches would
    /// replace (and, written at once, break) each other's files. The message names both.
    pub fn check_outputs(&self, tenant: &str, config: &JobConfig) -> Result<(), Refusal> {
        let files = self.data.files(tenant);
        let mut taken: Vec<(String, String, PathBuf)> = Vec::new();
        for job in self
            .registry
            .jobs(Some(tenant))
            .map_err(Refusal::Internal)?
        {
            if job.name != config.name {
                taken.extend(
                    files_prefixes(&job.manifest, &files)
                        .into_iter()
                        .map(|(sink, prefix)| (job.name.clone(), sink, prefix)),
                );
            }
        }
        for sink in &config.sinks {
            let SinkKind::Files { prefix, .. } = &sink.kind else {
                continue;
            };
            let prefix = normalize(prefix);
            if let Some((job, other, _)) = taken.iter().find(|(.., taken)| *taken == prefix) {
                let shown = prefix.strip_prefix(&files).unwrap_or(&prefix);
                return Err(Refusal::Conflict(format!(
                    "sink `{}` of job `{}` writes files with prefix `{}`, as sink `{other}` of \
                     job `{job}` does: each would replace the other's batch files; give each \
                     files sink a prefix of its own (e.g. `{}-{}`)",
                    sink.name,
                    config.name,
                    shown.display(),
                    shown.display(),
                    config.name
                )));
            }
            taken.push((config.name.clone(), sink.name.clone(), prefix));
        }
        Ok(())
    }
}

/// The prefixes of the files sinks of a registered manifest (as `(sink, prefix)`), read
/// without resolving the rest of it.
fn files_prefixes(manifest: &str, files: &Path) -> Vec<(String, PathBuf)> {
    #[derive(serde::Deserialize)]
    struct Sinks {
        #[serde(default)]
        sinks: Vec<Sink>,
    }
    #[derive(serde::Deserialize)]
    struct Sink {
        name: Option<String>,
        kind: String,
        prefix: Option<String>,
    }
    let Ok(parsed) = toml::from_str::<Sinks>(manifest) else {
        return Vec::new();
    };
    parsed
        .sinks
        .into_iter()
        .enumerate()
        .filter(|(_, sink)| sink.kind == "files")
        .filter_map(|(index, sink)| {
            let prefix = normalize(&files.join(sink.prefix?));
            // As the manifest names a sink without a name.
            let name = sink.name.unwrap_or_else(|| format!("sink-{}", index + 1));
            Some((name, prefix))
        })
        .collect()
}

/// `path` with its `.` and `..` parts taken out as written (not as on disk).
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
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

/// Refuses a connection to `address` (`host:port`) unless the server allows it.
fn check_host(allowed_hosts: &[String], what: &str, address: &str) -> Result<(), String> {
    if allowed_hosts.iter().any(|allowed| allowed == address) {
        return Ok(());
    }
    Err(format!(
        "{what} connects to {address}, which the server does not allow (allowed: {}); ask \
         its operator to add it to `allowed_hosts` of the server configuration",
        list_or_none(allowed_hosts)
    ))
}

/// Refuses Kafka brokers the server does not allow, and client properties that would
/// reach past them: other brokers, files of the server, commands, URLs.
fn check_kafka(
    allowed_hosts: &[String],
    what: &str,
    brokers: &str,
    properties: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    for broker in brokers.split(',').map(str::trim) {
        let broker = broker
            .split_once("://")
            .map_or(broker, |(_, address)| address);
        check_host(allowed_hosts, &format!("{what}'s broker"), broker)?;
    }
    if let Some(key) = properties.keys().find(|key| reaches_out(key)) {
        return Err(format!(
            "{what} sets the client property `{key}`, which a served job may not set (it \
             names brokers, files of the server, commands or URLs): brokers come from \
             `brokers`, which the server's `allowed_hosts` must list"
        ));
    }
    Ok(())
}

/// Whether a librdkafka property names a host, a file, a command or a URL.
fn reaches_out(key: &str) -> bool {
    const NAMING: &[&str] = &[
        "bootstrap.servers",
        "metadata.broker.list",
        "location",
        "keytab",
        "cmd",
        "plugin",
        "url",
        "endpoint",
        "file",
        "resolve",
    ];
    let key = key.to_ascii_lowercase();
    NAMING.iter().any(|naming| key.contains(naming))
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

    fn files(&self) -> std::io::Result<JobFiles> {
        let files = Beneath::open(&self.data.files(self.tenant))?;
        Ok(JobFiles::Beneath(std::sync::Arc::new(files)))
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
    fn kafka_reaches_only_allowed_brokers() {
        let allowed = ["127.0.0.1:9092".to_owned(), "kafka:9093".to_owned()];
        let none = std::collections::BTreeMap::new();
        assert!(check_kafka(&allowed, "source `k`", "127.0.0.1:9092, kafka:9093", &none).is_ok());
        let refused = check_kafka(&allowed, "source `k`", "127.0.0.1:9092,evil:9092", &none);
        assert!(
            refused
                .as_ref()
                .unwrap_err()
                .contains("source `k`'s broker connects to evil:9092"),
            "{refused:?}"
        );
        for key in [
            "bootstrap.servers",
            "ssl.ca.location",
            "sasl.kerberos.kinit.cmd",
        ] {
            let properties = [(key.to_owned(), "x".to_owned())].into();
            let refused = check_kafka(&allowed, "sink `k`", "kafka:9093", &properties);
            assert!(
                refused.as_ref().unwrap_err().contains(&format!("`{key}`")),
                "{refused:?}"
            );
        }
        let tuning = [("linger.ms".to_owned(), "5".to_owned())].into();
        assert!(check_kafka(&allowed, "sink `k`", "kafka:9093", &tuning).is_ok());
    }

    #[test]
    fn names_must_be_file_names() {
        assert!(check_name("word-count_2.v1", "job").is_ok());
        for name in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(check_name(name, "job").is_err(), "{name}");
        }
    }
}
