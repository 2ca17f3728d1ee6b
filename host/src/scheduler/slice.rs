//! Host-side work in slices: a job's operator work (splitting, counting, grouping,
//! joining, state updates) runs only while the job holds a run slot of the host's fair
//! queue for host work (weighted per tenant as guest calls are), for at most [`SLICE`]
//! at a time.
//!
//! A job's host work holds one slot whatever the number of its threads (the threads of
//! its batch's crew, [`super::crew`], share its [`HostTurn`]): a thread blocked in a
//! parallel join of its own job never holds a slot another of its threads needs. Long
//! loops call [`tick`] every record;
//! every [`CHECK_EVERY`] records it looks at the clock, and once the slice is used up it
//! gives the slot back (charging the tenant) and waits for the fair queue to grant one
//! again. A guest call gives the turn back for its length ([`paused`]); the next tick
//! takes it again. A batch takes the turn at its first tick (so a batch of a few records
//! never queues) and gives it back before its sinks write (they may wait on the world
//! outside). A job stopped by force gets an error from its next tick (or from its wait
//! for a slot), so its batch is abandoned at once rather than after its host work.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use tokio_util::sync::CancellationToken;

use super::fair::{FairGate, Slot, TenantId};

/// The longest a job's host work holds a run slot before it queues again.
pub const SLICE: Duration = Duration::from_millis(10);

/// Records between two looks at the clock: a few microseconds of work at most.
pub const CHECK_EVERY: u32 = 1024;

thread_local! {
    static TURN: RefCell<Option<Arc<TurnCell>>> = const { RefCell::new(None) };
    static SINCE_CHECK: Cell<u32> = const { Cell::new(0) };
}

/// Which job's turn a thread does its host work on. A thread of a crew
/// ([`super::crew`]) keeps its crew's cell for its life, and the cell names the job whose
/// batch the crew runs now.
#[derive(Default)]
pub struct TurnCell(Mutex<Option<Arc<HostTurn>>>);

impl TurnCell {
    /// Makes the calling thread's host work run on the turn this cell names, now and
    /// whenever it names another.
    pub fn enter(self: Arc<Self>) {
        TURN.with(|turn| *turn.borrow_mut() = Some(self));
    }

    /// Names the job turn the cell's threads work on (none: they belong to no job).
    pub fn set(&self, turn: Option<Arc<HostTurn>>) {
        *self.0.lock().expect("turn cell poisoned") = turn;
    }

    fn get(&self) -> Option<Arc<HostTurn>> {
        self.0.lock().expect("turn cell poisoned").clone()
    }
}

/// One job's turn at host work: the run slot its threads share.
pub struct HostTurn {
    gate: FairGate,
    tenant: TenantId,
    /// The job's forced stop: its host work fails at its next tick.
    stop: CancellationToken,
    state: Mutex<TurnState>,
    /// Wakes the job's threads waiting while one of them queues for the slot.
    granted: Condvar,
}

#[derive(Default)]
struct TurnState {
    slot: Option<Slot>,
    /// Whether a thread of the job is queued for a slot: the others wait for it rather
    /// than queue too (a thread holding a lock its sibling waits on may be the queued
    /// one, and one slot serves them all).
    queued: bool,
}

impl HostTurn {
    /// The turn of a job of `tenant`, holding no slot yet; `stop` is the job's forced stop.
    pub fn new(gate: FairGate, tenant: TenantId, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            gate,
            tenant,
            stop,
            state: Mutex::default(),
            granted: Condvar::new(),
        })
    }

    /// Makes the host work of the calling thread run on this turn, for the thread's life.
    pub fn enter(self: &Arc<Self>) {
        Arc::new(TurnCell(Mutex::new(Some(self.clone())))).enter();
    }

    /// Returns at once if the job holds a slot whose slice is not used up; otherwise gives
    /// back the used one and waits, parking the thread, for the fair queue to grant
    /// another (or for another thread of the job to get it). Fails, giving the slot back,
    /// once the job is stopped by force, even while it waits.
    pub fn take(&self) -> Result<()> {
        let mut state = self.lock();
        loop {
            if self.stop.is_cancelled() {
                drop(state.slot.take());
                bail!("the job was stopped by force: its host work was cut short");
            }
            if state
                .slot
                .as_ref()
                .is_some_and(|slot| slot.held_for() < SLICE)
            {
                return Ok(());
            }
            // Dropping a used slot charges the tenant and hands the slot on.
            drop(state.slot.take());
            if state.queued {
                state = self.granted.wait(state).expect("host turn poisoned");
                continue;
            }
            state.queued = true;
            drop(state);
            let slot = super::block_here(async {
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => None,
                    slot = self.gate.acquire(self.tenant) => Some(slot),
                }
            });
            state = self.lock();
            state.slot = slot;
            state.queued = false;
            self.granted.notify_all();
        }
    }

    /// Gives the slot back, if the job holds one: its host work is done or waits.
    pub fn release(&self) {
        let slot = self.lock().slot.take();
        drop(slot);
    }

    /// Whether the job holds a slot now.
    pub fn is_held(&self) -> bool {
        self.lock().slot.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().expect("host turn poisoned")
    }
}

/// The cooperative check of a host loop, called once per record: every [`CHECK_EVERY`]
/// calls, a thread of a job whose slice is used up queues for its next one. Fails once the
/// job is stopped by force ([`HostTurn::take`]). Free on a thread of no job.
#[inline]
pub fn tick() -> Result<()> {
    let count = SINCE_CHECK.get() + 1;
    if count < CHECK_EVERY {
        SINCE_CHECK.set(count);
        return Ok(());
    }
    SINCE_CHECK.set(0);
    match current() {
        Some(turn) => turn.take(),
        None => Ok(()),
    }
}

/// The turn of the calling thread's job, if it is a job's thread.
pub fn current() -> Option<Arc<HostTurn>> {
    TURN.with(|turn| turn.borrow().as_ref().and_then(|cell| cell.get()))
}

/// Gives back the calling thread's job turn before `work` (a guest call, which takes a
/// guest slot of its own), so that other jobs' host work runs meanwhile; the thread's
/// next [`tick`] takes the turn again. (Taking it again here could leave it held by a
/// thread that has nothing left to do while another thread of the job waits.)
pub fn paused<T>(work: impl FnOnce() -> T) -> T {
    if let Some(turn) = current() {
        turn.release();
    }
    work()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    /// Spins for `length`, ticking as a host loop over records does.
    fn host_loop(length: Duration) {
        let until = Instant::now() + length;
        while Instant::now() < until {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            tick().unwrap();
        }
    }

    #[test]
    fn a_long_host_loop_lets_another_tenant_in_every_slice() {
        let gate = FairGate::new(1);
        let hog = HostTurn::new(
            gate.clone(),
            gate.tenant("hog", 1),
            CancellationToken::new(),
        );
        let neighbour = HostTurn::new(
            gate.clone(),
            gate.tenant("neighbour", 1),
            CancellationToken::new(),
        );
        let started = Arc::new(AtomicBool::new(false));
        let hogging = {
            let (hog, started) = (hog.clone(), started.clone());
            std::thread::spawn(move || {
                hog.enter();
                hog.take().unwrap();
                started.store(true, Ordering::SeqCst);
                host_loop(Duration::from_millis(600));
                hog.release();
            })
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let mut waits = Vec::new();
        for _ in 0..20 {
            let asked = Instant::now();
            neighbour.take().unwrap();
            waits.push(asked.elapsed());
            neighbour.release();
            std::thread::sleep(Duration::from_millis(5));
        }
        hogging.join().unwrap();
        let longest = waits.iter().max().unwrap();
        eprintln!("neighbour's waits for a slot: longest {longest:?} of {waits:?}");
        // Without slices the neighbour would wait out the whole 600 ms loop.
        assert!(
            *longest < Duration::from_millis(150),
            "the neighbour waited {longest:?} behind a host loop"
        );
        let hog_id = gate.find("hog").unwrap();
        assert!(gate.used(hog_id) >= Duration::from_millis(300));
    }

    #[test]
    fn a_guest_call_gives_the_turn_to_another_job_and_the_next_tick_takes_it_back() {
        let gate = FairGate::new(1);
        let tenant = gate.tenant("t", 1);
        let (calling, other) = (
            HostTurn::new(gate.clone(), tenant, CancellationToken::new()),
            HostTurn::new(gate.clone(), tenant, CancellationToken::new()),
        );
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            calling.enter();
            calling.take().unwrap();
            // The one host slot is the calling job's: the other job gets it during the call.
            paused(|| {
                other.take().unwrap();
                other.release();
            });
            assert!(!calling.is_held());
            for _ in 0..CHECK_EVERY {
                tick().unwrap();
            }
            done.send(calling.is_held()).unwrap();
        });
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(true));
    }

    #[test]
    fn ticks_on_a_thread_of_no_job_do_nothing() {
        for _ in 0..10 * CHECK_EVERY {
            tick().unwrap();
        }
        assert!(current().is_none());
    }

    #[test]
    fn a_forced_stop_fails_the_next_tick_of_a_long_host_loop_and_frees_the_slot() {
        let gate = FairGate::new(1);
        let stop = CancellationToken::new();
        let stopped = HostTurn::new(gate.clone(), gate.tenant("stopped", 1), stop.clone());
        let (started, running) = std::sync::mpsc::channel();
        let looping = {
            let stopped = stopped.clone();
            std::thread::spawn(move || {
                stopped.enter();
                stopped.take().unwrap();
                started.send(()).unwrap();
                // A host loop that would run for a minute unless a tick fails.
                let until = Instant::now() + Duration::from_secs(60);
                while Instant::now() < until {
                    if let Err(error) = tick() {
                        return Some((Instant::now(), error.to_string()));
                    }
                }
                None
            })
        };
        running.recv().unwrap();
        let asked = Instant::now();
        stop.cancel();
        let (failed, error) = looping.join().unwrap().expect("the loop was cut short");
        let took = failed - asked;
        assert!(took < Duration::from_secs(1), "the loop ran on {took:?}");
        assert!(error.contains("stopped by force"), "{error}");
        assert!(!stopped.is_held(), "the stopped job gave its slot back");
    }

    #[test]
    fn a_forced_stop_ends_a_wait_for_a_slot() {
        let gate = FairGate::new(1);
        let holder = HostTurn::new(
            gate.clone(),
            gate.tenant("holder", 1),
            CancellationToken::new(),
        );
        holder.take().unwrap();
        let stop = CancellationToken::new();
        let waiting = HostTurn::new(gate.clone(), gate.tenant("waiting", 1), stop.clone());
        let (asked, answered) = std::sync::mpsc::channel();
        std::thread::spawn(move || asked.send(waiting.take()).unwrap());
        // The one slot is the holder's: the waiting job queues until its stop.
        assert!(answered.recv_timeout(Duration::from_millis(100)).is_err());
        stop.cancel();
        let taken = answered.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(taken.unwrap_err().to_string().contains("stopped by force"));
        holder.release();
    }
}
