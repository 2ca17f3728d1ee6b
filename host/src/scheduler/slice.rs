//! Host-side work in slices: a job's operator work (counting, grouping, joining, window
//! and state updates) runs only while the job holds a run slot of the same fair queue
//! guest calls take turns on, for at most [`SLICE`] at a time.
//!
//! A job's host work holds one slot whatever the number of its threads (a job's threads
//! share its [`HostTurn`]): a thread blocked in a parallel join of its own job never
//! holds a slot another of its threads needs, so the queue cannot deadlock. Long loops
//! call [`tick`] every record; every [`CHECK_EVERY`] records it looks at the clock, and
//! once the slice is used up it gives the slot back (charging the tenant) and waits for
//! the fair queue to grant one again. A guest call made while the turn is held gives the
//! turn back for the call's length (the call takes its own slot, see
//! [`super::Scheduler::block_on`]) and takes it again afterwards.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fair::{FairGate, Slot, TenantId};

/// The longest a job's host work holds a run slot before it queues again.
pub const SLICE: Duration = Duration::from_millis(10);

/// Records between two looks at the clock: a few microseconds of work at most.
pub const CHECK_EVERY: u32 = 1024;

thread_local! {
    static TURN: RefCell<Option<Arc<HostTurn>>> = const { RefCell::new(None) };
    static SINCE_CHECK: Cell<u32> = const { Cell::new(0) };
}

/// One job's turn at host work: the run slot its threads share.
pub struct HostTurn {
    gate: FairGate,
    tenant: TenantId,
    held: Mutex<Option<Slot>>,
}

impl HostTurn {
    /// The turn of a job of `tenant`, holding no slot yet.
    pub fn new(gate: FairGate, tenant: TenantId) -> Arc<Self> {
        Arc::new(Self {
            gate,
            tenant,
            held: Mutex::new(None),
        })
    }

    /// Makes the host work of the calling thread run on this turn (a job's threads call it
    /// when they start).
    pub fn enter(self: &Arc<Self>) {
        TURN.with(|turn| *turn.borrow_mut() = Some(self.clone()));
    }

    /// Returns at once if the job holds a slot whose slice is not used up; otherwise gives
    /// back the used one and waits, parking the thread, for the fair queue to grant
    /// another.
    pub fn take(&self) {
        let used_up = {
            let mut held = self.lock();
            match &*held {
                Some(slot) if slot.held_for() < SLICE => return,
                _ => held.take(),
            }
        };
        // Dropping the slot charges the tenant and hands the slot to the next waiter.
        drop(used_up);
        let slot = super::block_here(self.gate.acquire(self.tenant));
        let mut held = self.lock();
        if held.is_none() {
            *held = Some(slot);
        }
        // Another thread of the job took a slot meanwhile: ours goes back unused.
    }

    /// Gives the slot back, if the job holds one: its host work is done or waits.
    pub fn release(&self) {
        let slot = self.lock().take();
        drop(slot);
    }

    /// Whether the job holds a slot now.
    pub fn is_held(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Slot>> {
        self.held.lock().expect("host turn poisoned")
    }
}

/// The cooperative check of a host loop, called once per record: every [`CHECK_EVERY`]
/// calls, a thread of a job whose slice is used up queues for its next one. Free on a
/// thread of no job.
#[inline]
pub fn tick() {
    let count = SINCE_CHECK.get() + 1;
    if count < CHECK_EVERY {
        SINCE_CHECK.set(count);
        return;
    }
    SINCE_CHECK.set(0);
    if let Some(turn) = current() {
        turn.take();
    }
}

/// The turn of the calling thread's job, if it is a job's thread.
pub fn current() -> Option<Arc<HostTurn>> {
    TURN.with(|turn| turn.borrow().clone())
}

/// Gives back the calling thread's job turn for the length of `work` (a guest call, which
/// takes its own slot), then takes it again.
pub fn paused<T>(work: impl FnOnce() -> T) -> T {
    let Some(turn) = current() else {
        return work();
    };
    let held = turn.is_held();
    turn.release();
    let done = work();
    if held {
        turn.take();
    }
    done
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
            tick();
        }
    }

    #[test]
    fn a_long_host_loop_lets_another_tenant_in_every_slice() {
        let gate = FairGate::new(1);
        let hog = HostTurn::new(gate.clone(), gate.tenant("hog", 1));
        let neighbour = HostTurn::new(gate.clone(), gate.tenant("neighbour", 1));
        let started = Arc::new(AtomicBool::new(false));
        let hogging = {
            let (hog, started) = (hog.clone(), started.clone());
            std::thread::spawn(move || {
                hog.enter();
                hog.take();
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
            neighbour.take();
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
    fn a_guest_call_made_while_holding_the_turn_does_not_deadlock() {
        let gate = FairGate::new(1);
        let tenant = gate.tenant("t", 1);
        let turn = HostTurn::new(gate.clone(), tenant);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            turn.enter();
            turn.take();
            // The one slot is the turn's: a guest call must get it while paused.
            let answer = paused(|| {
                let slot = super::super::block_here(gate.acquire(tenant));
                drop(slot);
                7
            });
            assert!(turn.is_held(), "the turn is taken again after the call");
            turn.release();
            done.send(answer).unwrap();
        });
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(7));
    }

    #[test]
    fn ticks_on_a_thread_of_no_job_do_nothing() {
        for _ in 0..10 * CHECK_EVERY {
            tick();
        }
        assert!(current().is_none());
    }
}
