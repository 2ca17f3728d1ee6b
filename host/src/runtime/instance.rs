//! One instance of a component in its own store, with its limits, and the calls into it.

use std::time::Duration;

use anyhow::Result;
use sluice_abi::{Batch, Groups, Kind};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::EPOCH_TICK;
use super::component::ExportedFunction;
use super::error::{CallError, Witness, explain_instantiation, explain_trap};
use super::output::{GuestOutput, capped};

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
    /// The most stdout plus stderr output kept from one call; the rest is dropped. A
    /// failure or panic message is cut to the same size.
    pub output_bytes: usize,
    /// The most bytes one call may pass from the guest to the host (its answer, a failure
    /// or panic message): wasmtime's hostcall fuel.
    pub transfer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(10),
            output_bytes: 64 << 10,
            transfer_bytes: 128 << 20,
        }
    }
}

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
        self.panic = Some((capped(message, self.limits.output_bytes), record_index));
    }
}

impl GuestState {
    /// What the guest reported or was refused, taken for explaining a failure.
    fn witness(&mut self) -> Witness {
        Witness {
            panic: self.panic.take(),
            refused_memory: self.refused_memory.take(),
        }
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
    ) -> Result<Self, CallError> {
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
        store.set_hostcall_fuel(limits.transfer_bytes);
        let udf = pre.instantiate(&mut store).map_err(|error| {
            let seen = store.data_mut().witness();
            explain_instantiation(&error, seen, &limits)
        })?;
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
        let answers_to = match kind {
            Kind::Map => AnswersTo::Records,
            _ => AnswersTo::Whole,
        };
        from_wit(output, answers_to)
    }

    /// Calls a flat-map function: group `i` of the answer holds what record `i` gave.
    pub fn call_flat_map(&mut self, function: u32, input: Batch) -> Result<Groups, CallError> {
        let input = to_wit(input);
        let output = self.call(|udf, store| udf.call_flat_map(store, function, &input))?;
        groups_from_wit(output, AnswersTo::Records)
    }

    /// Calls map, flat-map and filter functions one after the other, in one call.
    pub fn call_chain(&mut self, functions: &[u32], input: Batch) -> Result<Batch, CallError> {
        let input = to_wit(input);
        let output = self.call(|udf, store| udf.call_chain(store, functions, &input))?;
        from_wit(output, AnswersTo::Whole)
    }

    /// Calls a filter function; returns the input back with the answer, in which bit
    /// `i % 8` of byte `i / 8` is set when record `i` is kept (its length is the caller's
    /// to check).
    pub fn call_filter(
        &mut self,
        function: u32,
        input: Batch,
    ) -> Result<(Batch, Vec<u8>), CallError> {
        let input = to_wit(input);
        let keep = self.call(|udf, store| udf.call_filter(store, function, &input))?;
        let input = Batch::from_parts(input.data, input.ends).expect("the host's own batch");
        Ok((input, keep))
    }

    /// Calls an aggregating function on every group.
    pub fn call_aggregate(&mut self, function: u32, input: Groups) -> Result<Batch, CallError> {
        let input = groups_to_wit(input);
        let output = self.call(|udf, store| udf.call_aggregate(store, function, &input))?;
        from_wit(output, AnswersTo::Groups)
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
        from_wit(output, AnswersTo::Groups)
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
        groups_from_wit(output, AnswersTo::Groups)
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
        let limits = self.store.data().limits;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(CallError::Failed {
                message: capped(failure.message, limits.output_bytes),
                record_index: failure.record_index,
            }),
            Err(error) => {
                self.trapped = true;
                let seen = self.store.data_mut().witness();
                Err(explain_trap(&error, seen, &limits))
            }
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

/// What the records of a guest's answer stand for, so that a bad one is traced back to
/// the input it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswersTo {
    /// Answer `i` (a record, or a group of them) is record `i`'s.
    Records,
    /// Answer `i` is input group `i`'s.
    Groups,
    /// The answers stand for the input as a whole (map-partition, chains).
    Whole,
}

/// A guest's answer as a batch, its offsets and every record checked (well formed, not
/// nested too deep) before anything reads it.
fn from_wit(batch: wit::Batch, answers_to: AnswersTo) -> Result<Batch, CallError> {
    let batch = unchecked_from_wit(batch)?;
    batch
        .check_records()
        .map_err(|(index, error)| bad_answer(index, &error, answers_to))?;
    Ok(batch)
}

/// A guest's answer as groups, checked as [`from_wit`] does.
fn groups_from_wit(groups: wit::Groups, answers_to: AnswersTo) -> Result<Groups, CallError> {
    let groups = Groups::from_parts(unchecked_from_wit(groups.records)?, groups.group_ends)
        .map_err(|error| CallError::invalid(format!("returned malformed groups: {error}"), None))?;
    groups
        .records()
        .check_records()
        .map_err(|(index, error)| bad_answer(groups.group_of(index), &error, answers_to))?;
    Ok(groups)
}

fn unchecked_from_wit(batch: wit::Batch) -> Result<Batch, CallError> {
    Batch::from_parts(batch.data, batch.ends)
        .map_err(|error| CallError::invalid(format!("returned a malformed batch: {error}"), None))
}

fn bad_answer(at: usize, error: &sluice_abi::encoding::Error, answers_to: AnswersTo) -> CallError {
    let (whose, record_index) = match answers_to {
        AnswersTo::Records => (format!("for record {at}"), Some(at)),
        AnswersTo::Groups => (format!("for group {at} of its input"), None),
        AnswersTo::Whole => (format!("number {at}"), None),
    };
    CallError::invalid(
        format!("returned a result ({whose}) that the host refuses: {error}"),
        record_index,
    )
}
