//! A loaded component: compiled, linked, pre-instantiated, with its function list read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use sluice_abi::Kind;
use wasmtime::component::ComponentExportIndex;

use super::Runtime;
use super::error::{CallError, Limit};
use super::footprint::Footprint;
use super::instance::{GuestState, Limits, UdfInstance, bindings};
use crate::scheduler::Scheduler;
use crate::tenancy::Placement;

/// The largest component file loaded, in bytes (documented in docs/manifest.md).
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// One function a component exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFunction {
    /// Its name, as a manifest refers to it.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
}

/// Refuses, in one line, a file that is not a WebAssembly component: wasmtime's own
/// errors for these print the magic bytes as a multi-line Rust `Debug`.
fn check_header(wasm: &[u8], path: &Path) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    // The version and layer after the magic: 1 for a core module, 0xd for a component.
    const MODULE: &[u8] = &[1, 0, 0, 0];
    const COMPONENT: &[u8] = &[0x0d, 0, 1, 0];
    let build = "build it from a crate that uses `sluice_sdk::udfs!` with `sluice udf build CRATE`";
    match (wasm.get(..4), wasm.get(4..8)) {
        (Some(MAGIC), Some(COMPONENT)) => Ok(()),
        (Some(MAGIC), Some(MODULE)) => bail!(
            "{} is a core WebAssembly module, not a component: {build} (it targets wasm32-wasip2, which makes components)",
            path.display()
        ),
        (Some(MAGIC), _) => bail!(
            "{} is a WebAssembly file of a version or layer Sluice does not know: {build}",
            path.display()
        ),
        _ => bail!(
            "{} is not a WebAssembly component (it does not start with the bytes `\\0asm`): {build}",
            path.display()
        ),
    }
}

/// Why listing the functions of the component at `path` stopped at `limit` of `listing`,
/// said in the terms of the listing rather than of a job's call; `None` for a limit the
/// listing does not set.
fn listing_refusal(path: &Path, limit: Limit, listing: &Limits) -> Option<anyhow::Error> {
    let what = match limit {
        Limit::CallTimeout => format!(
            "did not list its functions within {} ms, the deadline of its `functions` export \
             (is it looping or waiting?)",
            listing.call_timeout.as_millis()
        ),
        Limit::Memory => format!(
            "needed more than the memory limit of {} MiB to list its functions",
            listing.memory_bytes >> 20
        ),
        _ => return None,
    };
    Some(anyhow::anyhow!(
        "{} {what}: `functions` must return the component's function list at once, without \
         work or waiting (the `sluice_sdk::udfs!` macro builds one that does); fix it and \
         build it again",
        path.display()
    ))
}

/// A component ready to be instantiated any number of times.
pub struct LoadedComponent {
    path: PathBuf,
    digest: String,
    pre: bindings::UdfPre<GuestState>,
    /// The `combine` export, which components built for `sluice:udf@0.1.0` lack.
    combine: Option<ComponentExportIndex>,
    /// What each instance takes from the host's pool.
    footprint: Footprint,
    scheduler: Arc<Scheduler>,
    functions: Vec<ExportedFunction>,
}

impl LoadedComponent {
    /// Compiles the component at `path` and lists its functions by a call made under
    /// `listing` (its deadline and memory limit).
    pub(super) fn load(runtime: &Runtime, path: &Path, listing: Limits) -> Result<Self> {
        let wasm = crate::files::read_capped(path, MAX_COMPONENT_BYTES)
            .with_context(|| format!("cannot read UDF component {}", path.display()))?;
        check_header(&wasm, path)?;
        let digest = format!("{:x}", Sha256::digest(&wasm));
        let not_a_udf = || {
            format!(
                "{} is not a Sluice UDF component: build it from a crate that uses `sluice_sdk::udfs!` \
                 with `sluice udf build CRATE`",
                path.display()
            )
        };
        let component = runtime
            .cache
            .compile(runtime.engine(), &wasm, &digest)
            .with_context(not_a_udf)?;
        let footprint = Footprint::of(&component, &wasm).with_context(not_a_udf)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(not_a_udf)?;
        let pre = bindings::UdfPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(not_a_udf)?;
        let combine = component.get_export_index(None, "combine");
        let mut loaded = Self {
            path: path.to_owned(),
            digest,
            pre,
            combine,
            footprint,
            scheduler: runtime.scheduler.clone(),
            functions: Vec::new(),
        };
        let over_limit = |error: &CallError| match error {
            CallError::Limit { limit, .. } => listing_refusal(path, *limit, &listing),
            _ => None,
        };
        let mut probe = loaded
            .instantiate("(listing functions)", listing, &runtime.host_placement)
            .map_err(|error| match over_limit(&error) {
                Some(refusal) => refusal,
                None => anyhow::Error::from(error).context(not_a_udf()),
            })?;
        loaded.functions = probe
            .functions()
            .map_err(|error| match over_limit(&error) {
                Some(refusal) => refusal,
                None => anyhow::Error::from(error)
                    .context(format!("{} failed to list its functions", path.display())),
            })?;
        let mut names: Vec<&str> = loaded.functions.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            bail!(
                "{} exports two functions named `{}`",
                path.display(),
                pair[0]
            );
        }
        Ok(loaded)
    }

    /// The SHA-256 of the component's bytes, in hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The functions it exports, in index order.
    pub fn functions(&self) -> &[ExportedFunction] {
        &self.functions
    }

    /// The index of the function called `name`, for calls.
    pub fn function_index(&self, name: &str) -> Option<(u32, Kind)> {
        self.functions
            .iter()
            .position(|function| function.name == name)
            .map(|index| (index as u32, self.functions[index].kind))
    }

    /// A fresh instance with its own store and limits, counted against and run for
    /// `placement` (the job's tenant, quotas and seat on the scheduler); `owner`
    /// names who uses it in logs and errors (job and operator). The error says what
    /// refused it: the host's instance pool being full, the memory limit, or the host's
    /// per-instance quota.
    pub fn instantiate(
        &self,
        owner: &str,
        limits: Limits,
        placement: &Placement,
    ) -> Result<UdfInstance, CallError> {
        UdfInstance::new(
            &self.pre,
            self.combine.as_ref(),
            &self.footprint,
            &self.scheduler,
            placement,
            owner,
            limits,
        )
    }

    /// Whether the component exports `combine` (the `combining-udf` world, which the Rust
    /// SDK builds since `sluice:udf@0.1.1`): a chain of its functions followed by a
    /// reduction by key can then combine inside the guest.
    pub fn combines(&self) -> bool {
        self.combine.is_some()
    }

    /// What each of its instances takes from the host's pool, read when it loaded.
    pub fn footprint(&self) -> Footprint {
        self.footprint
    }

    /// The file the component was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
