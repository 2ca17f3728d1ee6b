//! The WASM runtime: one wasmtime engine per host process, components compiled once and
//! cached on disk, and pools of pre-instantiated, limited instances per operator.
//!
//! Settings follow `shared/notes/wasm-boundary-measurements.md`: concurrency support off
//! (~290 ns a call otherwise), epoch interruption rather than fuel for CPU deadlines,
//! the default large memory reservation (a small one brings bounds checks back) with
//! memory capped per instance by a resource limiter, and the pooling allocator.

mod cache;
mod component;
mod error;
mod footprint;
mod instance;
mod output;
mod pool;

pub use component::{ExportedFunction, LoadedComponent, MAX_COMPONENT_BYTES};
pub use error::{CallError, Limit};
pub use footprint::Footprint;
pub use instance::{Limits, SentBatch, UdfInstance};
pub use pool::InstancePool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::Linker;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use instance::GuestState;

use crate::scheduler::Scheduler;
use crate::tenancy::{HostConfig, Placement, Tenancy, TenantConfig};

/// How often the epoch advances: the longest a guest call runs before it yields its core
/// back to the fair queue, and the granularity of every call timeout.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The tenant the host's own guest calls (listing a component's functions) run for.
const HOST_TENANT: &str = "(host)";

/// Settings of the runtime shared by every job of a host.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// How many component instances may be alive at once, across all jobs (see
    /// [`crate::tenancy::DEFAULT_MAX_INSTANCES`] for the address space each reserves).
    pub max_instances: u32,
    /// The tenants jobs run for, with their weights and quotas.
    pub tenants: Vec<TenantConfig>,
}

impl RuntimeConfig {
    /// The runtime of a host configured by `host`.
    pub fn with_host(host: HostConfig) -> Self {
        Self {
            max_instances: host.max_instances,
            tenants: host.tenants,
            ..Self::default()
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            // Small, so that tests may make many hosts in one process: each instance
            // reserves over 8 GiB of address space. A host configuration's default is
            // larger (`tenancy::DEFAULT_MAX_INSTANCES`).
            max_instances: 256,
            tenants: Vec::new(),
        }
    }
}

/// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("sluice"))
}

/// The wasmtime engine, the linker every instance is made with, and the loaded components.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: cache::ComponentCache,
    loaded: Mutex<HashMap<PathBuf, Arc<LoadedComponent>>>,
    stop_ticker: Arc<std::sync::atomic::AtomicBool>,
    scheduler: Arc<Scheduler>,
    tenancy: Tenancy,
    /// Where the host's own calls run (listing a component's functions).
    host_placement: Placement,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker that enforces call deadlines.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>> {
        disable_transparent_huge_pages();
        let mut pooling = PoolingAllocationConfig::default();
        // The pool is `max_instances` slots of a Rust component's footprint; a larger
        // component's instance holds several (counted by the tenancy, `Footprint::slots`).
        let slot = Footprint::SLOT;
        pooling
            .total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * slot.core_instances)
            .total_memories(config.max_instances * slot.memories)
            .total_tables(config.max_instances * slot.tables)
            .total_stacks(config.max_instances);
        let mut wasm_config = Config::new();
        wasm_config
            .epoch_interruption(true)
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        if std::env::var_os("SLUICE_PERF_MAP").is_some() {
            // For profiling guests: `perf` names their functions from /tmp/perf-PID.map.
            wasm_config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm_config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;
        let linker = instance::linker(&engine)?;
        let cache = cache::ComponentCache::new(&engine, config.cache_dir);
        let stop_ticker = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone())?;
        let scheduler = Arc::new(Scheduler::new()?);
        let tenancy = Tenancy::new(&HostConfig {
            max_instances: config.max_instances,
            tenants: config.tenants,
        })?;
        tenancy.add(TenantConfig::named(HOST_TENANT))?;
        let host_placement = tenancy.place_host(HOST_TENANT, &scheduler)?;
        Ok(Arc::new(Self {
            engine,
            linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            stop_ticker,
            scheduler,
            tenancy,
            host_placement,
        }))
    }

    /// Loads the component at `path` (compiling it, or taking it from the disk cache) and
    /// lists its functions under the default [`Limits`]. A component already loaded by
    /// this host is shared.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedComponent>> {
        self.load_listing_under(path, Limits::default())
    }

    /// Loads the component at `path` as [`Runtime::load`] does, listing its functions
    /// under `listing` (its call timeout is the deadline of `functions`, its memory the
    /// most the listing instance may have), so that a server validates an upload under
    /// the uploading tenant's limits.
    pub fn load_listing_under(&self, path: &Path, listing: Limits) -> Result<Arc<LoadedComponent>> {
        let key = path
            .canonicalize()
            .with_context(|| format!("cannot open UDF component {}", path.display()))?;
        let table = || self.loaded.lock().expect("component table poisoned");
        if let Some(component) = table().get(&key) {
            return Ok(component.clone());
        }
        // Loaded without holding the table, so that one slow component does not hold up
        // another's load; of two loads of one file that race, the first kept is shared.
        let component = Arc::new(LoadedComponent::load(self, &key, listing)?);
        Ok(table().entry(key).or_insert(component).clone())
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The tenants of the host.
    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// The scheduler every guest call of the host runs on.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Turns transparent huge pages off for the process. mimalloc asks for them on its arenas
/// (`MADV_HUGEPAGE`), and a host's many job threads each touch a few pages of their own:
/// every touched 2 MiB region then became resident whole (measured, 1000 jobs of 2 threads:
/// 2836 MiB resident, 3.2 GiB of it huge pages; 578 MiB without them).
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; an
    // older kernel refuses it, which only leaves huge pages on.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}
