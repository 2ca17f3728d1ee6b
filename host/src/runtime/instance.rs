//! One instance of a component in its own store, with its limits, and the calls into it.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use sluice_abi::{Batch, Groups, Kind};
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, ComponentType, Func, HasSelf, Lift, Linker, Lower,
    ResourceTable,
};
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::component::ExportedFunction;
use super::error::{CallError, Limit, Witness, explain_instantiation, explain_stop, explain_trap};
use super::footprint::Footprint;
use super::output::{GuestOutput, Origin, capped};
use crate::scheduler::{Scheduler, Seat};
use crate::tenancy::{Account, InstanceHold, Placement};

pub(super) mod bindings {
    // Exports are called asynchronously, so that the scheduler can preempt them at epoch
    // ticks and cut blocked WASI calls short (crate::scheduler).
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "udf",
        exports: { default: async },
    });
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
    /// The tenant, whose guest memory in all this instance's memory counts against.
    account: Arc<Account>,
    /// The memory this instance holds in the tenant's account.
    memory_held: u64,
    /// The memory the tenant's `memory_total` refused, with the quota.
    refused_tenant_memory: Option<(String, usize)>,
}

impl Drop for GuestState {
    fn drop(&mut self) {
        self.account.release_memory(self.memory_held);
    }
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
            refused_tenant_memory: self.refused_tenant_memory.take(),
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.refused_memory = Some(desired);
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        let grow = desired.saturating_sub(current) as u64;
        if !self.account.grow_memory(grow) {
            let quota = self.account.quotas().memory_total.unwrap_or_default();
            self.refused_tenant_memory = Some((self.account.name().to_owned(), quota));
            return Err(wasmtime::Error::msg("tenant memory quota reached"));
        }
        self.memory_held += grow;
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

/// The linker every instance is made with: WASI preview 2 (async, so that a clock wait
/// yields its thread) and Sluice's diagnostics.
pub(super) fn linker(engine: &wasmtime::Engine) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::Udf::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// One live instance of a UDF component.
pub struct UdfInstance {
    /// The store and its instance; `None` once a call trapped or was stopped.
    live: Option<Box<Live>>,
    scheduler: Arc<Scheduler>,
    seat: Seat,
    limits: Limits,
    /// The UDF, its job and tenant: errors and its output's log lines name them.
    origin: Origin,
    /// What one call may return (the tenant's quotas).
    max_output_records: usize,
    max_output_bytes: usize,
    _hold: InstanceHold,
}

/// What a call takes to the scheduler's threads and brings back.
struct Live {
    store: Store<GuestState>,
    exports: Exports,
}

/// The parameters of the `combine` export of the `combining-udf` world: (functions,
/// create, merge, input, flush); it answers the combined pairs.
type CombineParams<'a> = (&'a [u32], Option<u32>, u32, BatchView<'a>, bool);

/// An instance's exports: those of the `udf` world, and `combine` when the component has it.
struct Exports {
    udf: bindings::Udf,
    /// The record-at-a-time exports again, untyped: they are typed per call over a
    /// [`BatchView`] of the caller's buffers, which the bindings' `batch` (owned vectors)
    /// cannot borrow.
    records: RecordExports,
    /// Typed as taking [`CombineParams`] when the instance is made, and per call.
    combine: Option<Func>,
}

/// The exports a chunk of a partition is sent to.
struct RecordExports {
    map: Func,
    flat_map: Func,
    filter: Func,
    map_partition: Func,
    chain: Func,
}

impl RecordExports {
    fn new(
        store: &mut Store<GuestState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<Self> {
        let mut export = |name: &str| {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| wasmtime::Error::msg(format!("the component exports no `{name}`")))
        };
        Ok(Self {
            map: export("map")?,
            flat_map: export("flat-map")?,
            filter: export("filter")?,
            map_partition: export("map-partition")?,
            chain: export("chain")?,
        })
    }
}

/// The WIT `batch` record lowered straight from the host's buffers: a chunk of a
/// partition goes into the guest's memory in one copy, not first copied out of the
/// partition into a batch of its own.
#[derive(ComponentType, Lower)]
#[component(record)]
struct BatchView<'a> {
    data: &'a [u8],
    ends: &'a [u32],
}

/// Calls `func`, typed as taking `params` and answering `result<R, failure>`.
async fn call_typed<P, R>(
    func: Func,
    store: &mut Store<GuestState>,
    params: P,
) -> wasmtime::Result<Result<R, wit::Failure>>
where
    P: ComponentNamedList + Lower + Send + Sync,
    (Result<R, wit::Failure>,): ComponentNamedList + Lift + Send + Sync + 'static,
{
    let typed = func.typed::<P, (Result<R, wit::Failure>,)>(&*store)?;
    let (answer,) = typed.call_async(store, params).await?;
    Ok(answer)
}

/// A call of one export on a live instance.
type GuestCall<R> = Box<
    dyn for<'a> FnOnce(
            &'a Exports,
            &'a mut Store<GuestState>,
        ) -> Pin<
            Box<dyn Future<Output = wasmtime::Result<Result<R, wit::Failure>>> + Send + 'a>,
        > + Send,
>;

impl UdfInstance {
    pub(super) fn new(
        pre: &bindings::UdfPre<GuestState>,
        combine: Option<&ComponentExportIndex>,
        footprint: &Footprint,
        scheduler: &Arc<Scheduler>,
        placement: &Placement,
        owner: &str,
        limits: Limits,
    ) -> Result<Self, CallError> {
        let hold = placement.account.hold_instance(footprint)?;
        let seat = &placement.seat;
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
            account: placement.account.clone(),
            memory_held: 0,
            refused_tenant_memory: None,
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| state);
        // Every tick, the running call gives its core back to the fair queue.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        store.set_hostcall_fuel(limits.transfer_bytes);
        let pre = pre.clone();
        let combine = combine.cloned();
        let task_seat = seat.clone();
        let made = scheduler.block_on(async move {
            let instantiate = async {
                let instance = pre.instance_pre().instantiate_async(&mut store).await?;
                let udf = bindings::Udf::new(&mut store, &instance)?;
                let records = RecordExports::new(&mut store, &instance)?;
                let combine = combine
                    .map(|export| -> wasmtime::Result<Func> {
                        let typed = instance.get_typed_func::<
                            CombineParams<'static>,
                            (Result<wit::Batch, wit::Failure>,),
                        >(&mut store, export)?;
                        Ok(*typed.func())
                    })
                    .transpose()?;
                wasmtime::Result::Ok(Exports {
                    udf,
                    records,
                    combine,
                })
            };
            let made = task_seat.run(limits.call_timeout, instantiate).await;
            (store, made)
        });
        let Some((mut store, made)) = made else {
            return Err(host_panicked());
        };
        let exports = match made {
            Ok(Ok(exports)) => exports,
            Ok(Err(error)) => {
                let seen = store.data_mut().witness();
                return Err(explain_instantiation(&error, seen, &limits));
            }
            Err(stopped) => return Err(explain_stop(stopped, &limits)),
        };
        Ok(Self {
            live: Some(Box::new(Live { store, exports })),
            scheduler: scheduler.clone(),
            seat: seat.clone(),
            limits,
            origin: Origin {
                udf: owner.to_owned(),
                tenant: placement.account.name().to_owned(),
                job: placement.job.clone(),
            },
            max_output_records: placement.account.quotas().max_call_output_records,
            max_output_bytes: placement.account.quotas().max_call_output_bytes,
            _hold: hold,
        })
    }

    /// Refuses an answer of `records` records in `bytes` bytes past the tenant's quotas.
    fn check_output(&self, records: usize, bytes: usize) -> Result<(), CallError> {
        let over = |limit, key, value: String, got: String| CallError::Limit {
            limit,
            message: format!(
                "returned {got}, over the tenant's quota `{key}` of {value} per call \
                 (the host configuration sets it)"
            ),
            record_index: None,
        };
        if records > self.max_output_records {
            return Err(over(
                Limit::CallOutputRecords,
                "max_call_output_records",
                self.max_output_records.to_string(),
                format!("{records} records"),
            ));
        }
        if bytes > self.max_output_bytes {
            return Err(over(
                Limit::CallOutputBytes,
                "max_call_output_bytes",
                format!("{} MiB", self.max_output_bytes >> 20),
                format!("{} MiB of records", bytes >> 20),
            ));
        }
        Ok(())
    }

    /// The guest memory the instance holds, in bytes (0 once it trapped: its store is gone).
    pub fn memory_bytes(&self) -> u64 {
        self.live
            .as_ref()
            .map_or(0, |live| live.store.data().memory_held)
    }

    /// Whether the instance can still be called (it cannot after a trap).
    pub fn is_usable(&self) -> bool {
        self.live.is_some()
    }

    /// The component's functions.
    pub fn functions(&mut self) -> Result<Vec<ExportedFunction>, CallError> {
        let listed = self.call(Box::new(|exports, store| {
            Box::pin(async move { exports.udf.call_functions(store).await.map(Ok) })
        }))?;
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
        input: SentBatch,
    ) -> Result<Batch, CallError> {
        let output: wit::Batch = self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                let func = match kind {
                    Kind::Map => exports.records.map,
                    Kind::MapPartition => exports.records.map_partition,
                    other => unreachable!("{other} functions are not called through call_records"),
                };
                call_typed(func, store, (function, input.view())).await
            })
        }))?;
        self.check_output(output.ends.len(), output.data.len())?;
        let answers_to = match kind {
            Kind::Map => AnswersTo::Records,
            _ => AnswersTo::Whole,
        };
        from_wit(output, answers_to)
    }

    /// Calls a flat-map function: group `i` of the answer holds what record `i` gave.
    pub fn call_flat_map(&mut self, function: u32, input: SentBatch) -> Result<Groups, CallError> {
        let output: wit::Groups = self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                call_typed(exports.records.flat_map, store, (function, input.view())).await
            })
        }))?;
        self.check_output(output.records.ends.len(), output.records.data.len())?;
        groups_from_wit(output, AnswersTo::Records)
    }

    /// Calls map, flat-map and filter functions one after the other, in one call.
    pub fn call_chain(&mut self, functions: &[u32], input: SentBatch) -> Result<Batch, CallError> {
        let functions = functions.to_vec();
        let output: wit::Batch = self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                call_typed(exports.records.chain, store, (&functions[..], input.view())).await
            })
        }))?;
        self.check_output(output.ends.len(), output.data.len())?;
        from_wit(output, AnswersTo::Whole)
    }

    /// Calls the `combine` export: runs the chain `functions` over `input` and folds the
    /// resulting pairs into the instance's table by key (see the WIT world
    /// `combining-udf`); with `flush`, answers the table's pairs. Only for components
    /// that have the export ([`LoadedComponent::combines`](super::LoadedComponent::combines)).
    pub fn call_combine(
        &mut self,
        functions: &[u32],
        create: Option<u32>,
        merge: u32,
        input: SentBatch,
        flush: bool,
    ) -> Result<Batch, CallError> {
        let functions = functions.to_vec();
        let output: wit::Batch = self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                let combine = exports
                    .combine
                    .expect("combine is called only on components that export it");
                let params: CombineParams<'_> =
                    (&functions[..], create, merge, input.view(), flush);
                call_typed(combine, store, params).await
            })
        }))?;
        self.check_output(output.ends.len(), output.data.len())?;
        from_wit(output, AnswersTo::Whole)
    }

    /// Stops the instance from being called again (and so from going back to its pool):
    /// for an instance whose guest-side state a failed call left part-way.
    pub fn retire(&mut self) {
        self.live = None;
    }

    /// Calls a filter function; answers with a mask in which bit `i % 8` of byte `i / 8`
    /// is set when record `i` is kept (its length is the caller's to check).
    pub fn call_filter(&mut self, function: u32, input: SentBatch) -> Result<Vec<u8>, CallError> {
        self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                call_typed(exports.records.filter, store, (function, input.view())).await
            })
        }))
    }

    /// Calls an aggregating function on every group.
    pub fn call_aggregate(&mut self, function: u32, input: Groups) -> Result<Batch, CallError> {
        let input = groups_to_wit(input);
        let output = self.call(Box::new(move |exports, store| {
            Box::pin(async move { exports.udf.call_aggregate(store, function, &input).await })
        }))?;
        self.check_output(output.ends.len(), output.data.len())?;
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
        let output = self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                exports
                    .udf
                    .call_update_state(store, function, time_ms, &input)
                    .await
            })
        }))?;
        self.check_output(output.ends.len(), output.data.len())?;
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
        let output = self.call(Box::new(move |exports, store| {
            Box::pin(async move {
                exports
                    .udf
                    .call_map_with_state(store, function, time_ms, &input)
                    .await
            })
        }))?;
        self.check_output(output.records.ends.len(), output.records.data.len())?;
        groups_from_wit(output, AnswersTo::Groups)
    }

    /// Runs `call` on the scheduler's threads, in the job's seat, under the call timeout.
    fn call<R: Send + 'static>(&mut self, call: GuestCall<R>) -> Result<R, CallError> {
        let Some(mut live) = self.live.take() else {
            return Err(CallError::Trapped {
                message: "this instance trapped earlier and cannot be called again".into(),
                record_index: None,
            });
        };
        let seat = self.seat.clone();
        let limits = self.limits;
        let finished = self.scheduler.block_on(async move {
            let result = {
                let Live { store, exports } = &mut *live;
                store.set_epoch_deadline(1);
                seat.run(limits.call_timeout, call(exports, store)).await
            };
            (live, result)
        });
        let Some((mut live, result)) = finished else {
            return Err(host_panicked());
        };
        live.store.data().output.flush_to_log(&self.origin);
        match result {
            Ok(Ok(Ok(value))) => {
                self.live = Some(live);
                Ok(value)
            }
            Ok(Ok(Err(failure))) => {
                self.live = Some(live);
                Err(CallError::Failed {
                    message: capped(failure.message, limits.output_bytes),
                    record_index: failure.record_index,
                })
            }
            Ok(Err(error)) => {
                let seen = live.store.data_mut().witness();
                Err(explain_trap(&error, seen, &limits))
            }
            // The call was dropped mid-way: the instance is not fit to be called again.
            Err(stopped) => Err(explain_stop(stopped, &limits)),
        }
    }
}

/// A guest call's task panicked on the scheduler's threads: a bug in the host.
fn host_panicked() -> CallError {
    CallError::Stopped {
        message: "stopped: the host's code running the call panicked (a bug in Sluice)".into(),
    }
}

/// Records sent to guest calls that stay the caller's: consecutive records of a
/// partition (or all of it), which a call lowers into the guest's memory straight from the
/// partition's buffers ([`BatchView`]), so that a chunk is not first copied out of its
/// partition (a quarter of a map's samples were `memmove`), and a caller that runs a failed
/// call's records again (one at a time, to name the one that fails) keeps them without a
/// copy.
#[derive(Clone)]
pub struct SentBatch(Arc<Sent>);

struct Sent {
    partition: Arc<Batch>,
    /// The records, by index in the partition.
    records: Range<usize>,
    /// Their bytes in the partition's data.
    bytes: Range<usize>,
    /// Where each record ends, counted from the first one's start; `None` when the
    /// records start the partition, whose own offsets then serve.
    rebased: Option<Vec<u32>>,
}

impl SentBatch {
    /// `records`, to send.
    pub fn new(records: Batch) -> Self {
        let all = 0..records.len();
        Self::part(&Arc::new(records), all)
    }

    /// Records `records` of `partition`, to send without a copy of their bytes (their
    /// offsets are copied, rebased, unless they start the partition).
    pub fn part(partition: &Arc<Batch>, records: Range<usize>) -> Self {
        let ends = partition.ends();
        let start_of = |index: usize| index.checked_sub(1).map_or(0, |i| ends[i]);
        let base = start_of(records.start);
        let bytes = base as usize..start_of(records.end) as usize;
        let rebased =
            (base != 0).then(|| ends[records.clone()].iter().map(|end| end - base).collect());
        Self(Arc::new(Sent {
            partition: partition.clone(),
            records,
            bytes,
            rebased,
        }))
    }

    /// The records as the guest receives them.
    fn view(&self) -> BatchView<'_> {
        let sent = &*self.0;
        BatchView {
            data: &sent.partition.data()[sent.bytes.clone()],
            ends: sent
                .rebased
                .as_deref()
                .unwrap_or(&sent.partition.ends()[sent.records.clone()]),
        }
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.0.records.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.0.records.is_empty()
    }

    /// The encoded bytes of record `index`.
    pub fn get(&self, index: usize) -> &[u8] {
        let BatchView { data, ends } = self.view();
        let start = index.checked_sub(1).map_or(0, |i| ends[i] as usize);
        &data[start..ends[index] as usize]
    }

    /// The records as a batch of their own: without a copy when they are a whole
    /// partition that nothing else holds (a call drops its handle before it returns).
    pub fn into_batch(self) -> Batch {
        let sent = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Sent {
            partition: shared.partition.clone(),
            records: shared.records.clone(),
            bytes: shared.bytes.clone(),
            rebased: None,
        });
        if sent.records.len() == sent.partition.len() {
            Arc::try_unwrap(sent.partition).unwrap_or_else(|shared| (*shared).clone())
        } else {
            sent.partition.slice(sent.records)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_batch_comes_back_whole_and_without_a_copy_once_no_call_holds_it() {
        let mut records = Batch::new();
        ["a", "", "ccc"]
            .iter()
            .for_each(|text| records.push(text).unwrap());
        let sent = SentBatch::new(records.clone());
        assert_eq!(sent.len(), 3);
        assert_eq!(
            (0..sent.len()).map(|i| sent.get(i)).collect::<Vec<_>>(),
            records.iter().collect::<Vec<_>>()
        );
        let held = sent.clone();
        let data = held.view().data.as_ptr();
        assert_eq!(sent.into_batch(), records, "copied while a call holds it");
        assert_eq!(
            held.into_batch().data().as_ptr(),
            data,
            "moved back, not copied"
        );
        assert!(SentBatch::new(Batch::new()).is_empty());
    }

    #[test]
    fn a_part_of_a_partition_is_sent_from_its_buffers_with_its_own_offsets() {
        let mut records = Batch::new();
        ["a", "", "ccc", "dd", "e"]
            .iter()
            .for_each(|text| records.push(text).unwrap());
        let partition = Arc::new(records.clone());
        for range in [0..2, 1..4, 2..5, 3..3] {
            let sent = SentBatch::part(&partition, range.clone());
            let expected = records.slice(range.clone());
            assert_eq!(sent.len(), expected.len());
            let view = sent.view();
            assert_eq!(view.data, expected.data(), "{range:?}");
            assert_eq!(view.ends, expected.ends(), "{range:?}");
            let start = partition.ends()[..range.start].last().copied().unwrap_or(0);
            assert_eq!(
                view.data.as_ptr(),
                partition.data()[start as usize..].as_ptr(),
                "not copied"
            );
            assert_eq!(
                (0..sent.len()).map(|i| sent.get(i)).collect::<Vec<_>>(),
                expected.iter().collect::<Vec<_>>()
            );
            assert_eq!(sent.into_batch(), expected);
        }
    }
}
