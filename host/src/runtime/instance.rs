//! One instance of a component in its own store, with its limits, and the calls into it.

use std::time::Duration;

use anyhow::Result;
use sluice_abi::{Batch, Groups, Kind};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::EPOCH_TICK;
use super::component::ExportedFunction;
use super::output::GuestOutput;

pub(super) mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "udf" });
}

use bindings::sluice::udf::types as wit;

/// What one UDF instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most linear memory the instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// The longest one call (one batch partition) may run.
    pub call_timeout: Duration,
    /// The most stdout plus stderr output kept from one call; the rest is dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(10),
            output_bytes: 64 << 10,
        }
    }
}

/// A call into a UDF that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The function returned an error (say, a record it cannot decode); the instance is fine.
    Failed {
        /// The guest's explanation.
        message: String,
        /// The record being processed, where known.
        record_index: Option<u32>,
    },
    /// The instance trapped (panic, timeout, memory limit) and cannot be called again.
    Trapped {
        /// What happened, with the guest's panic message if it panicked.
        message: String,
        /// The record being processed, where known.
        record_index: Option<u32>,
    },
}

impl CallError {
    /// The record being processed when the call failed, where known.
    pub fn record_index(&self) -> Option<u32> {
        match self {
            CallError::Failed { record_index, .. } | CallError::Trapped { record_index, .. } => {
                *record_index
            }
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (CallError::Failed { message, .. } | CallError::Trapped { message, .. }) = self;
        f.write_str(message)
    }
}

impl std::error::Error for CallError {}

/// The host side of one store: WASI (captured stdio, clocks and random, nothing else),
/// the limits, and what the guest reported before trapping.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    output: GuestOutput,
    panic: Option<(String, Option<u32>)>,
    refused_memory: Option<usize>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::sluice::udf::types::Host for GuestState {}

impl bindings::sluice::udf::diagnostics::Host for GuestState {
    fn report_panic(&mut self, message: String, record_index: Option<u32>) {
        self.panic = Some((message, record_index));
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.refused_memory = Some(desired);
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The linker every instance is made with: WASI preview 2 and Sluice's diagnostics.
pub(super) fn linker(engine: &wasmtime::Engine) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::Udf::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// One live instance of a UDF component.
pub struct UdfInstance {
    store: Store<GuestState>,
    udf: bindings::Udf,
    owner: String,
    trapped: bool,
}

impl UdfInstance {
    pub(super) fn new(
        pre: &bindings::UdfPre<GuestState>,
        owner: &str,
        limits: Limits,
    ) -> Result<Self> {
        let output = GuestOutput::new(limits.output_bytes);
        // No preopened directories, environment, arguments or network: only captured
        // stdout/stderr, clocks and random.
        let wasi = WasiCtx::builder()
            .stdout(output.stdout())
            .stderr(output.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limits,
            output,
            panic: None,
            refused_memory: None,
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| state);
        store.set_epoch_deadline(deadline_ticks(limits.call_timeout));
        let udf = pre.instantiate(&mut store)?;
        Ok(Self {
            store,
            udf,
            owner: owner.to_owned(),
            trapped: false,
        })
    }

    /// Whether the instance can still be called (it cannot after a trap).
    pub fn is_usable(&self) -> bool {
        !self.trapped
    }

    /// The component's functions.
    pub fn functions(&mut self) -> Result<Vec<ExportedFunction>, CallError> {
        let listed = self.call(|udf, store| udf.call_functions(store).map(Ok))?;
        Ok(listed
            .into_iter()
            .map(|info| ExportedFunction {
                name: info.name,
                kind: match info.kind {
                    wit::Kind::Map => Kind::Map,
                    wit::Kind::FlatMap => Kind::FlatMap,
                    wit::Kind::Filter => Kind::Filter,
                    wit::Kind::MapPartition => Kind::MapPartition,
                    wit::Kind::Reduce => Kind::Reduce,
                    wit::Kind::Fold => Kind::Fold,
                    wit::Kind::UpdateState => Kind::UpdateState,
                    wit::Kind::MapWithState => Kind::MapWithState,
                },
            })
            .collect())
    }

    /// Calls a function of kind map or map-partition on `input`.
    pub fn call_records(
        &mut self,
        kind: Kind,
        function: u32,
        input: Batch,
    ) -> Result<Batch, CallError> {
        let input = to_wit(input);
        let output = self.call(|udf, store| match kind {
            Kind::Map => udf.call_map(store, function, &input),
            Kind::MapPartition => udf.call_map_partition(store, function, &input),
            other => unreachable!("{other} functions are not called through call_records"),
        })?;
        from_wit(output)
    }

    /// Calls a flat-map function: group `i` of the answer holds what record `i` gave.
    pub fn call_flat_map(&mut self, function: u32, input: Batch) -> Result<Groups, CallError> {
        let input = to_wit(input);
        let output = self.call(|udf, store| udf.call_flat_map(store, function, &input))?;
        groups_from_wit(output)
    }

    /// Calls map, flat-map and filter functions one after the other, in one call.
    pub fn call_chain(&mut self, functions: &[u32], input: Batch) -> Result<Batch, CallError> {
        let input = to_wit(input);
        let output = self.call(|udf, store| udf.call_chain(store, functions, &input))?;
        from_wit(output)
    }

    /// Calls a filter function and returns the records it keeps.
    pub fn call_filter(&mut self, function: u32, input: Batch) -> Result<Batch, CallError> {
        let input = to_wit(input);
        let keep = self.call(|udf, store| udf.call_filter(store, function, &input))?;
        Ok(from_wit(input)?.select(&keep))
    }

    /// Calls an aggregating function on every group.
    pub fn call_aggregate(&mut self, function: u32, input: Groups) -> Result<Batch, CallError> {
        let input = groups_to_wit(input);
        let output = self.call(|udf, store| udf.call_aggregate(store, function, &input))?;
        from_wit(output)
    }

    /// Calls an update-state function on every key's group, for the batch of `time_ms`.
    pub fn call_update_state(
        &mut self,
        function: u32,
        time_ms: i64,
        input: Groups,
    ) -> Result<Batch, CallError> {
        let input = groups_to_wit(input);
        let output =
            self.call(|udf, store| udf.call_update_state(store, function, time_ms, &input))?;
        from_wit(output)
    }

    /// Calls a map-with-state function on every key's group, for the batch of `time_ms`.
    pub fn call_map_with_state(
        &mut self,
        function: u32,
        time_ms: i64,
        input: Groups,
    ) -> Result<Groups, CallError> {
        let input = groups_to_wit(input);
        let output =
            self.call(|udf, store| udf.call_map_with_state(store, function, time_ms, &input))?;
        groups_from_wit(output)
    }

    fn call<R>(
        &mut self,
        run: impl FnOnce(
            &bindings::Udf,
            &mut Store<GuestState>,
        ) -> wasmtime::Result<Result<R, wit::Failure>>,
    ) -> Result<R, CallError> {
        if self.trapped {
            return Err(CallError::Trapped {
                message: "this instance trapped earlier and cannot be called again".into(),
                record_index: None,
            });
        }
        let timeout = self.store.data().limits.call_timeout;
        self.store.set_epoch_deadline(deadline_ticks(timeout));
        let result = run(&self.udf, &mut self.store);
        self.store.data().output.flush_to_log(&self.owner);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(CallError::Failed {
                message: failure.message,
                record_index: failure.record_index,
            }),
            Err(error) => {
                self.trapped = true;
                Err(self.explain_trap(error))
            }
        }
    }

    fn explain_trap(&mut self, error: wasmtime::Error) -> CallError {
        let state = self.store.data_mut();
        if let Some((message, record_index)) = state.panic.take() {
            return CallError::Trapped {
                message: format!("panicked: {message}"),
                record_index,
            };
        }
        let message = if let Some(desired) = state.refused_memory.take() {
            format!(
                "tried to grow its memory to {} MiB, past the limit of {} MiB (raise `limits.memory` if it really needs more)",
                desired >> 20,
                state.limits.memory_bytes >> 20
            )
        } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            format!(
                "did not finish within the call timeout of {} ms and was stopped (is it looping? raise `limits.call_timeout` if it is only slow)",
                state.limits.call_timeout.as_millis()
            )
        } else {
            format!("trapped: {error:#}")
        };
        CallError::Trapped {
            message,
            record_index: None,
        }
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

fn to_wit(batch: Batch) -> wit::Batch {
    let (data, ends) = batch.into_parts();
    wit::Batch { data, ends }
}

fn groups_to_wit(groups: Groups) -> wit::Groups {
    let (records, group_ends) = groups.into_parts();
    wit::Groups {
        records: to_wit(records),
        group_ends,
    }
}

fn groups_from_wit(groups: wit::Groups) -> Result<Groups, CallError> {
    Groups::from_parts(from_wit(groups.records)?, groups.group_ends).map_err(|error| {
        CallError::Failed {
            message: format!("returned malformed groups: {error}"),
            record_index: None,
        }
    })
}

fn from_wit(batch: wit::Batch) -> Result<Batch, CallError> {
    Batch::from_parts(batch.data, batch.ends).map_err(|error| CallError::Failed {
        message: format!("returned a malformed batch: {error}"),
        record_index: None,
    })
}
