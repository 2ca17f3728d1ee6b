//! The guest scheduler: every guest call of a host runs as an async wasmtime call on the
//! guest executor, a fixed set of threads, one per core, and nowhere else. A call holds a
//! run slot (one per core) for at most one epoch tick before it yields back into a
//! per-tenant weighted fair queue ([`fair`]), so a tenant's looping or sleeping guests
//! take only their tenant's share of the CPU and never stall another tenant's batches.
//!
//! Callers are synchronous (operators run on the threads of their batch's crew): each
//! hands its call, which owns the instance's store for its length, to the executor and
//! parks until the call brings the store back ([`Scheduler::block_on`]). A call waiting
//! for a run slot, or in a blocked host call (a WASI clock wait, `poll`), is a pending
//! task that holds no executor thread; only its caller's crew thread waits, and that is
//! host-side. So however many jobs call at once, guest code runs on no more threads than
//! there are cores, and the executor's threads also run the calls' timers (deadlines,
//! clock waits).
//!
//! A batch computes on a crew of threads, one per core, that it holds alone while it runs
//! and that the host's jobs share between batches ([`crew`]).
//!
//! Host-side work takes turns too ([`slice`]): a job's operator work runs while the job
//! holds a slot of a second fair queue, of one slot per core and the same tenant
//! weights, in slices of at most 10 ms, so a job counting 10 M records queues behind its
//! neighbours' host work as a looping guest queues behind their calls. The two queues
//! are apart so that no wait can close a cycle: a job's thread may wait for a guest slot
//! while its job holds a host slot (guest slots come back every epoch tick, whatever
//! the host does), but nothing that holds a guest slot ever waits for a host slot. For
//! the same reason an executor thread never waits for anything but its own tasks: it
//! never hands a call over itself (that would wait on the threads it is one of).

pub mod call;
pub mod crew;
pub mod fair;
pub mod slice;

use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

pub use call::Stopped;
pub use crew::Crews;
pub use fair::{FairGate, TenantId};
pub use slice::HostTurn;

/// The name of the guest executor's threads, the only threads guest code runs on.
pub const GUEST_THREAD: &str = "sluice-guest";

thread_local! {
    /// Whether this thread is one of a guest executor's.
    static ON_EXECUTOR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The guest executor and the fair queue of run slots guest calls take turns on.
pub struct Scheduler {
    /// The guest executor: one thread per core polls every guest call and its timers.
    executor: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    gate: FairGate,
    /// The run slots host-side operator work takes turns on ([`slice`]).
    host_gate: FairGate,
    /// The threads batches compute on ([`crew`]).
    crews: Crews,
    cores: usize,
}

/// What a guest call runs for: its tenant's place in the fair queue and its job's forced
/// stop. Cheap to clone.
#[derive(Clone)]
pub struct Seat {
    gate: FairGate,
    tenant: TenantId,
    host_gate: FairGate,
    host_tenant: TenantId,
    stop: CancellationToken,
}

impl Scheduler {
    /// A scheduler with one run slot and one executor thread per core.
    pub fn new() -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name(GUEST_THREAD)
            .on_thread_start(|| ON_EXECUTOR.set(true))
            .enable_time()
            .build()
            .context("cannot start the guest executor's threads")?;
        Ok(Self {
            handle: executor.handle().clone(),
            executor: Some(executor),
            gate: FairGate::new(cores),
            host_gate: FairGate::new(cores),
            crews: Crews::new(cores),
            cores,
        })
    }

    /// How many guest calls may run at once, and the guest executor's threads: the number
    /// of cores.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The fair queue of run slots guest calls take.
    pub fn gate(&self) -> &FairGate {
        &self.gate
    }

    /// The fair queue of run slots host-side operator work takes ([`slice`]).
    pub fn host_gate(&self) -> &FairGate {
        &self.host_gate
    }

    /// The crews of threads batches compute on, one batch per crew at a time ([`crew`]).
    pub fn crews(&self) -> &Crews {
        &self.crews
    }

    /// A seat for calls of a job of the tenant `name` with CPU `weight`; `stop` cancels
    /// them (a forced stop).
    pub fn seat(&self, tenant: &str, weight: u32, stop: CancellationToken) -> Seat {
        Seat {
            gate: self.gate.clone(),
            tenant: self.gate.tenant(tenant, weight),
            host_gate: self.host_gate.clone(),
            host_tenant: self.host_gate.tenant(tenant, weight),
            stop,
        }
    }

    /// Runs `task` to its end on the guest executor, parking this thread until it is done.
    /// The task owns what it calls into (a store and its instance) and hands it back in
    /// its output, so nothing is borrowed across threads. A job's thread gives its job's
    /// host turn back meanwhile ([`slice::paused`]). `None`: the task panicked (what it
    /// owned was dropped on the executor as the panic unwound).
    ///
    /// # Panics
    ///
    /// On a thread of the guest executor, which must never wait for its own threads.
    pub fn block_on<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        assert!(
            !ON_EXECUTOR.get(),
            "a guest call was handed to the guest executor from one of its own threads"
        );
        // If this thread unwinds while it waits, the task runs on detached and drops
        // its output on the executor.
        slice::paused(|| block_here(self.handle.spawn(task)).ok())
    }
}

/// Polls `task` on this thread until it is done, parking the thread while it is pending.
fn block_here<F: Future>(task: F) -> F::Output {
    let mut task = std::pin::pin!(task);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = task.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Wakes a thread parked in [`block_here`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // A host may be dropped inside async code, where waiting for threads is refused.
        if let Some(executor) = self.executor.take() {
            executor.shutdown_background();
        }
    }
}

impl Seat {
    /// Runs one guest call (see [`call::run`]).
    pub async fn run<F: Future>(&self, timeout: Duration, call: F) -> Result<F::Output, Stopped> {
        call::run(&self.gate, self.tenant, timeout, &self.stop, call).await
    }

    /// A turn at host-side work for a job of the seat's tenant ([`slice`]).
    pub fn host_turn(&self) -> Arc<HostTurn> {
        HostTurn::new(self.host_gate.clone(), self.host_tenant, self.stop.clone())
    }

    /// The tenant the seat's calls run for.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Whether the job was stopped by force.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    use wasmtime::{Engine, Linker, Module, Store, UpdateDeadline};

    use super::*;

    /// A core module whose export `run` calls the host's `seen` until it answers 0.
    /// (Hand-encoded: the host has no text-format parser.)
    fn spinning_module() -> Vec<u8> {
        let types = [2, 0x60, 0, 1, 0x7f, 0x60, 0, 0];
        let imports = [
            1, 4, b'h', b'o', b's', b't', 4, b's', b'e', b'e', b'n', 0, 0,
        ];
        let functions = [1, 1];
        let exports = [1, 3, b'r', b'u', b'n', 0, 1];
        // loop; call $seen; br_if 0; end; end
        let code = [1, 9, 0, 0x03, 0x40, 0x10, 0, 0x0d, 0, 0x0b, 0x0b];
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        for (id, contents) in [
            (1u8, &types[..]),
            (2, &imports),
            (3, &functions),
            (7, &exports),
            (10, &code),
        ] {
            wasm.push(id);
            wasm.push(contents.len() as u8);
            wasm.extend_from_slice(contents);
        }
        wasm
    }

    /// The threads guest code was seen running on, by name and id, and how often it
    /// yielded at an epoch tick.
    #[derive(Default)]
    struct Seen {
        threads: Mutex<HashSet<(Option<String>, std::thread::ThreadId)>>,
        yields: AtomicUsize,
    }

    impl Seen {
        fn record(&self) {
            let thread = std::thread::current();
            let name = thread.name().map(str::to_owned);
            self.threads.lock().unwrap().insert((name, thread.id()));
        }
    }

    #[test]
    fn guest_code_of_more_callers_than_cores_runs_only_on_the_executors_threads() {
        let scheduler = Arc::new(Scheduler::new().unwrap());
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, spinning_module()).unwrap();
        let seen = Arc::new(Seen::default());
        let ticking = Arc::new(AtomicBool::new(true));
        let ticker = {
            let (engine, ticking) = (engine.clone(), ticking.clone());
            std::thread::spawn(move || {
                while ticking.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    engine.increment_epoch();
                }
            })
        };
        let callers: Vec<_> = (0..scheduler.cores() * 3)
            .map(|caller| {
                let (scheduler, engine, module, seen) = (
                    scheduler.clone(),
                    engine.clone(),
                    module.clone(),
                    seen.clone(),
                );
                std::thread::spawn(move || {
                    let seat = scheduler.seat(&format!("t{}", caller % 2), 1, Default::default());
                    let mut linker = Linker::new(&engine);
                    let until = Instant::now() + Duration::from_millis(100);
                    let in_host_call = seen.clone();
                    linker
                        .func_wrap("host", "seen", move || {
                            in_host_call.record();
                            i32::from(Instant::now() < until)
                        })
                        .unwrap();
                    let mut store = Store::new(&engine, ());
                    store.set_epoch_deadline(1);
                    let in_epoch_callback = seen.clone();
                    store.epoch_deadline_callback(move |_| {
                        in_epoch_callback.record();
                        in_epoch_callback.yields.fetch_add(1, Ordering::Relaxed);
                        Ok(UpdateDeadline::Yield(1))
                    });
                    let caller = std::thread::current().id();
                    let ran = scheduler.block_on(async move {
                        let call = async {
                            let instance = linker.instantiate_async(&mut store, &module).await?;
                            let run = instance.get_typed_func::<(), ()>(&mut store, "run")?;
                            run.call_async(&mut store, ()).await
                        };
                        seat.run(Duration::from_secs(60), call).await
                    });
                    assert!(matches!(ran, Some(Ok(Ok(())))), "the call ran to its end");
                    caller
                })
            })
            .collect();
        let callers: HashSet<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        ticking.store(false, Ordering::Relaxed);
        ticker.join().unwrap();
        assert!(
            seen.yields.load(Ordering::Relaxed) > callers.len(),
            "the calls were preempted at epoch ticks"
        );
        let seen = seen.threads.lock().unwrap();
        assert!(
            seen.iter()
                .all(|(name, _)| name.as_deref() == Some(GUEST_THREAD)),
            "guest code ran outside the executor: {seen:?}"
        );
        let threads: HashSet<_> = seen.iter().map(|(_, id)| *id).collect();
        assert!(threads.is_disjoint(&callers), "{seen:?}");
        assert!(
            (1..=scheduler.cores()).contains(&threads.len()),
            "{} callers ran guest code on {} threads, over {} cores",
            callers.len(),
            threads.len(),
            scheduler.cores()
        );
    }

    #[test]
    fn a_call_that_panics_comes_back_as_none_and_the_executor_runs_on() {
        let scheduler = Scheduler::new().unwrap();
        assert!(
            scheduler
                .block_on(async { panic!("a bug in a call's host code") })
                .is_none()
        );
        let thread = scheduler.block_on(async { std::thread::current().name().map(str::to_owned) });
        assert_eq!(thread.flatten().as_deref(), Some(GUEST_THREAD));
    }

    #[test]
    fn an_executor_thread_never_waits_for_its_own_threads() {
        let scheduler = Arc::new(Scheduler::new().unwrap());
        let nested = scheduler.clone();
        // Were it allowed, every executor thread could end up waiting on the others.
        let outcome = scheduler.block_on(async move { nested.block_on(async {}) });
        assert!(
            outcome.is_none(),
            "the nested hand-over panics: {outcome:?}"
        );
    }
}
