//! `sluice serve`: a long-running host that tenants submit jobs to over HTTP.
//!
//! The server keeps a [`registry`] (SQLite in the data directory) of tenants, their
//! components and jobs; components are stored content-addressed ([`data`]) and compiled
//! once by the shared runtime; manifests are admitted under the tenancy rules
//! ([`admission`]); the [`supervisor`] runs jobs on one [`Host`] and restarts failed
//! ones; the [`api`] is the HTTP face of all of it, beside the web UI and `/metrics`
//! ([`crate::ui`]) of the jobs it runs, shown to each tenant's token as the [`gate`] says.

pub mod admission;
pub mod api;
pub mod config;
pub mod data;
pub mod gate;
pub mod logs;
pub mod registry;
pub mod supervisor;
pub mod tokens;
pub mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::checkpoint::RecoveryOptions;
use crate::disk::DiskQuotas;
use crate::host::Host;
use crate::runtime::{Limits, RuntimeConfig};
use crate::tenancy::TenantConfig;

pub use admission::{Admission, Admitted, OverQuota};
pub use config::{RestartPolicy, ServerConfig, TenantQuotas};
use data::DataDir;
use registry::{ComponentRow, Desired, Registry, TenantRow};
use supervisor::{JobState, Supervisor};
use upload::Upload;

/// Where `sluice serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7450";

/// Where `sluice serve` keeps its data unless told otherwise.
pub const DEFAULT_DATA: &str = "sluice-data";

/// How long stopping the server waits for its jobs to end.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);

/// The longest an uploaded component's `functions` export may run when the upload is
/// validated: listing is no work, and a tenant's upload must not hold the server up.
pub const LISTING_DEADLINE: Duration = Duration::from_secs(1);

/// What `sluice serve` is started with.
#[derive(Clone)]
pub struct ServeOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The data directory.
    pub data: PathBuf,
    /// The configuration.
    pub config: ServerConfig,
    /// Where the jobs' log lines go: its [`logs::JobLogs::layer`] must be installed in
    /// the process's tracing subscriber for them to arrive.
    pub logs: Arc<logs::JobLogs>,
}

/// Why a tenant was not created.
#[derive(Debug)]
enum TenantRefusal {
    /// The name is taken.
    Exists,
    /// Its instance quota does not fit in the pool: the limit is what is left of it.
    Pool(OverQuota),
}

/// A running server's shared state.
pub struct Server {
    data: DataDir,
    registry: Arc<Registry>,
    host: Arc<Host>,
    supervisor: Arc<Supervisor>,
    config: ServerConfig,
    logs: Arc<logs::JobLogs>,
    /// The tenants' disk quotas, which their jobs share.
    disk_quotas: DiskQuotas,
    /// One component validation at a time per tenant.
    upload_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while the component store changes: registering a component, removing unused
    /// ones. Not held while a component is validated, so that tenants' uploads do not
    /// wait on each other.
    store: tokio::sync::Mutex<()>,
    /// The digests of stored components being validated, with how many uploads are
    /// validating each: not garbage yet, though no one uses them.
    validating: Mutex<HashMap<String, usize>>,
}

/// Runs a server until `shutdown` completes, then stops every job (waiting at most
/// [`STOP_LIMIT`]) and returns. Jobs that were running run again at the next start.
/// `on_admin_token` is given the admin token when this start created it.
pub async fn serve(
    options: ServeOptions,
    on_admin_token: impl FnOnce(&str, &std::path::Path),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let data = DataDir::create(&options.data)?;
    options.logs.keep_in(data.clone());
    let registry = Arc::new(Registry::open(&data.registry())?);
    if !registry.has_admin()? {
        let path = data.admin_token();
        if path.exists() {
            bail!(
                "{} exists but the registry has no admin token: the data directory is \
                 inconsistent; remove the file to have a new admin token made",
                path.display()
            );
        }
        let token = tokens::generate()?;
        tokens::write_private(&path, &token)?;
        registry.add_token(&tokens::hash(&token), None)?;
        on_admin_token(&token, &path);
    }
    let defaults = &options.config.default_quotas;
    let tenants = registry
        .tenants()?
        .iter()
        .map(|tenant| runtime_tenant(tenant, defaults))
        .collect();
    // Many tenants' jobs: their batch times are spread over the interval.
    let host = Arc::new(
        Host::new(RuntimeConfig {
            max_instances: options.config.max_instances,
            tenants,
            ..RuntimeConfig::default()
        })?
        .with_batch_phases(),
    );
    let supervisor = Arc::new(Supervisor::new(
        host.clone(),
        registry.clone(),
        options.config.restart,
    ));
    let server = Arc::new(Server {
        data,
        registry,
        host,
        supervisor,
        config: options.config,
        logs: options.logs,
        disk_quotas: DiskQuotas::default(),
        upload_turns: Mutex::new(HashMap::new()),
        store: tokio::sync::Mutex::new(()),
        validating: Mutex::new(HashMap::new()),
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another server running there? choose another \
                 address with --listen",
                options.listen
            )
        })?;
    server.clone().resume().await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data = %server.data.root().display(), "listening");
    let app = api::router(server.clone()).merge(crate::ui::router(
        server.supervisor.metrics().clone(),
        gate::RegistryGate(server.registry.clone()),
    ));
    tokio::select! {
        served = axum::serve(listener, app) => served.context("the HTTP server failed")?,
        () = shutdown => {}
    }
    tracing::info!("stopping every job");
    let late = server.supervisor.stop_all(STOP_LIMIT).await;
    for (tenant, job) in &late {
        tracing::warn!(
            tenant,
            job,
            "did not stop within {} s",
            STOP_LIMIT.as_secs()
        );
    }
    tracing::info!("stopped");
    Ok(())
}

fn runtime_tenant(tenant: &TenantRow, defaults: &TenantQuotas) -> TenantConfig {
    TenantConfig {
        name: tenant.name.clone(),
        weight: tenant.weight,
        quotas: tenant.quotas.or(defaults).runtime(),
    }
}

impl Server {
    /// Starts the jobs meant to be running, and records the others.
    async fn resume(self: Arc<Self>) -> Result<()> {
        for job in self.registry.jobs(None)? {
            let key = (job.tenant.clone(), job.name.clone());
            match job.desired {
                Desired::Stopped => {
                    self.supervisor
                        .record(key, &job.manifest, JobState::Stopped, None)
                }
                Desired::Failed => {
                    self.supervisor
                        .record(key, &job.manifest, JobState::Failed, job.error)
                }
                Desired::Running => {
                    let server = self.clone();
                    let (tenant, manifest) = (job.tenant.clone(), job.manifest.clone());
                    let admitted = tokio::task::spawn_blocking(move || {
                        server.admission().admit(&tenant, &manifest)
                    })
                    .await?;
                    match admitted {
                        Ok(admitted) => {
                            tracing::info!(tenant = job.tenant, job = job.name, "resuming");
                            self.supervisor
                                .start(key, admitted.config, RecoveryOptions::default())
                                .await;
                        }
                        Err(refusal) => {
                            let error = format!("cannot resume: {refusal:?}");
                            tracing::error!(tenant = job.tenant, job = job.name, "{error}");
                            self.supervisor.record(
                                key.clone(),
                                &job.manifest,
                                JobState::Failed,
                                Some(error.clone()),
                            );
                            self.supervisor
                                .note_failure(&key, refusal.failure_reason(), error);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn admission(&self) -> Admission<'_> {
        Admission {
            data: &self.data,
            registry: &self.registry,
            runtime: self.host.runtime(),
            allowed_hosts: &self.config.allowed_hosts,
            default_quotas: &self.config.default_quotas,
            disk_quotas: &self.disk_quotas,
        }
    }

    /// The tenant's quotas, the server's defaults filling in.
    fn quotas(&self, tenant: &str) -> Result<TenantQuotas> {
        let row = self
            .registry
            .tenant(tenant)?
            .with_context(|| format!("tenant `{tenant}` is gone"))?;
        Ok(row.quotas.or(&self.config.default_quotas))
    }

    /// The limits an upload of `tenant` is validated under: the [`LISTING_DEADLINE`] and
    /// the tenant's memory per instance.
    fn listing_limits(&self, tenant: &str) -> Result<Limits> {
        let mut limits = Limits {
            call_timeout: LISTING_DEADLINE,
            ..Limits::default()
        };
        if let Some(memory) = self.quotas(tenant)?.memory_per_instance {
            limits.memory_bytes = usize::try_from(memory).unwrap_or(usize::MAX);
        }
        Ok(limits)
    }

    fn validating(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.validating.lock().expect("validations poisoned")
    }

    fn upload_turn(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.upload_turns
            .lock()
            .expect("upload turns poisoned")
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }

    /// Registers a tenant and gives it a token (returned), its files directory and its
    /// place in the runtime. Refused when the name is taken, or when its instance quota
    /// does not fit in what other tenants left of the pool.
    fn create_tenant(&self, tenant: &TenantRow) -> Result<Result<String, TenantRefusal>> {
        if self.registry.tenant(&tenant.name)?.is_some() {
            return Ok(Err(TenantRefusal::Exists));
        }
        let tenancy = self.host.runtime().tenancy();
        let reservable = tenancy.reservable(&tenant.name);
        if let Some(quota) = tenant.quotas.or(&self.config.default_quotas).max_instances
            && quota > reservable
        {
            return Ok(Err(TenantRefusal::Pool(OverQuota {
                quota: "max_instances",
                limit: u64::from(reservable),
                requested: u64::from(quota),
            })));
        }
        tenancy.add(runtime_tenant(tenant, &self.config.default_quotas))?;
        std::fs::create_dir_all(self.data.files(&tenant.name))
            .with_context(|| format!("cannot create the files of tenant `{}`", tenant.name))?;
        let token = tokens::generate()?;
        if !self.registry.create_tenant(tenant, &tokens::hash(&token))? {
            return Ok(Err(TenantRefusal::Exists));
        }
        tracing::info!(tenant = tenant.name, "tenant created");
        Ok(Ok(token))
    }

    /// Stops and removes every job, component and file of `tenant`; `false` if there is
    /// no such tenant.
    async fn delete_tenant(&self, tenant: &str) -> Result<bool> {
        if self.registry.tenant(tenant)?.is_none() {
            return Ok(false);
        }
        for job in self.registry.jobs(Some(tenant))? {
            self.supervisor
                .remove(&(tenant.to_owned(), job.name.clone()))
                .await;
            self.logs.remove(tenant, &job.name);
        }
        self.registry.delete_tenant(tenant)?;
        self.host.runtime().tenancy().remove(tenant);
        remove_dir(&self.data.tenant(tenant))?;
        self.disk_quotas.remove(&self.data.tenant(tenant));
        self.collect_garbage().await?;
        tracing::info!(tenant, "tenant deleted");
        Ok(true)
    }

    /// Stops and removes the tenant's job `name` with its checkpoints.
    async fn delete_job(&self, tenant: &str, name: &str) -> Result<()> {
        self.supervisor
            .remove(&(tenant.to_owned(), name.to_owned()))
            .await;
        self.registry.delete_job(tenant, name)?;
        self.logs.remove(tenant, name);
        remove_dir(&self.data.job(tenant, name))?;
        self.collect_garbage().await
    }

    /// Validates an upload as a Sluice UDF component (compiling it once for every
    /// tenant), stores it by its digest and registers it as the tenant's `name`. The
    /// inner error says why the upload is not a component.
    async fn register_component(
        self: Arc<Self>,
        tenant: String,
        name: String,
        upload: Upload,
    ) -> Result<Result<ComponentRow, String>> {
        let (digest, size) = (upload.digest.clone(), upload.size);
        let path = self.data.component(&digest);
        let listing = self.listing_limits(&tenant)?;
        let validation = {
            let _store = self.store.lock().await;
            upload.keep(&path)?;
            Validation::start(self.clone(), &digest)
        };
        let runtime_path = path.clone();
        let server = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            server
                .host
                .runtime()
                .load_listing_under(&runtime_path, listing)
        })
        .await;
        let _store = self.store.lock().await;
        drop(validation);
        let loaded = match loaded? {
            Ok(loaded) => loaded,
            Err(error) => {
                if !self.registry.digest_in_use(&digest)?
                    && !self.validating().contains_key(&digest)
                {
                    let _ = std::fs::remove_file(&path);
                }
                let message = format!("{error:#}").replace(
                    &path.display().to_string(),
                    &format!("the upload of `{name}`"),
                );
                return Ok(Err(message));
            }
        };
        let component = ComponentRow {
            name,
            digest,
            size,
            functions: loaded
                .functions()
                .iter()
                .map(|function| format!("{} ({})", function.name, function.kind))
                .collect(),
        };
        let replaced = self.registry.component(&tenant, &component.name)?;
        self.registry.put_component(&tenant, &component)?;
        if let Some(replaced) = replaced
            && !self.registry.digest_in_use(&replaced.digest)?
        {
            let _ = std::fs::remove_file(self.data.component(&replaced.digest));
        }
        tracing::info!(
            tenant,
            component = component.name,
            digest = component.digest,
            "component registered"
        );
        Ok(Ok(component))
    }

    /// Removes stored components no tenant or job refers to.
    async fn collect_garbage(&self) -> Result<()> {
        let _store = self.store.lock().await;
        for entry in std::fs::read_dir(self.data.components())? {
            let path = entry?.path();
            let Some(digest) = path.file_stem().and_then(|stem| stem.to_str()) else {
                continue;
            };
            if !self.registry.digest_in_use(digest)? && !self.validating().contains_key(digest) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// A stored component's validation under way: until it ends (or its request is dropped),
/// the component is not garbage.
struct Validation {
    server: Arc<Server>,
    digest: String,
}

impl Validation {
    fn start(server: Arc<Server>, digest: &str) -> Self {
        *server.validating().entry(digest.to_owned()).or_default() += 1;
        Self {
            server,
            digest: digest.to_owned(),
        }
    }
}

impl Drop for Validation {
    fn drop(&mut self) {
        let mut validating = self.server.validating();
        if let Some(count) = validating.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                validating.remove(&self.digest);
            }
        }
    }
}

fn remove_dir(dir: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
