//! The guest scheduler: every guest call of a host runs as an async wasmtime call on a
//! fixed set of threads (one per core), and at most one call per core runs at a time. A
//! call holds a run slot for at most one epoch tick before it yields back into a
//! per-tenant weighted fair queue ([`fair`]), so a tenant's looping or sleeping guests
//! take only their tenant's share of the CPU and never stall another tenant's batches.
//!
//! Callers are synchronous (operators run on the threads of their batch's crew): each
//! drives its call on its own thread, which runs guest code only while it holds one of the
//! run slots (one per core) and sleeps while it waits for one ([`Scheduler::block_on`]).
//! So however many jobs wait, no more guest calls run than there are cores.
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
//! the host does), but nothing that holds a guest slot ever waits for a host slot.

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

/// The fair queue of run slots guest calls take turns on, and the timers of their deadlines.
pub struct Scheduler {
    threads: Option<tokio::runtime::Runtime>,
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
    /// A scheduler with one run slot per core, and a thread for its timers.
    pub fn new() -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-guest-timers")
            .enable_time()
            .build()
            .context("cannot start the guest scheduler's threads")?;
        Ok(Self {
            handle: threads.handle().clone(),
            threads: Some(threads),
            gate: FairGate::new(cores),
            host_gate: FairGate::new(cores),
            crews: Crews::new(cores),
            cores,
        })
    }

    /// How many guest calls may run at once: the number of cores.
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

    /// Runs `task` to its end on this thread: the task's guest code runs only while it
    /// holds a run slot, and the thread sleeps while it waits for one. Timers (the call
    /// deadline, WASI clock waits) run on the scheduler's timer thread. A job's thread
    /// gives its job's host turn back meanwhile ([`slice::paused`]). `None`: the task
    /// panicked.
    pub fn block_on<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let _timers = self.handle.enter();
        slice::paused(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_here(task))).ok()
        })
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
        if let Some(threads) = self.threads.take() {
            threads.shutdown_background();
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
