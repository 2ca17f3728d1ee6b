//! The threads batches compute on, shared by every job of a host.
//!
//! A batch runs its partitions in parallel on a crew: one thread per core (a rayon pool),
//! which the batch holds alone while it runs and gives back to the host's idle crews when
//! it is done, for the next batch of any job. So a host keeps as many crews as it has
//! batches in flight at once, not one per job: 1000 jobs at a 1 s interval share a few,
//! rather than keeping 2000 threads whose wake-ups and spinning cost more than the
//! batches' own work.
//!
//! A crew is never shared by two batches at once, and that is what keeps jobs apart: a
//! thread of a batch waits (for a run slot of the fair queues, or in a guest's clock wait)
//! holding only its own batch's crew, and rayon's work stealing (a thread waiting in a
//! parallel join runs other work of its pool meanwhile) only ever runs the same batch's
//! work. A single job still computes a batch's partitions on every core.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::sync::oneshot;

use super::slice::{self, HostTurn, TurnCell};

/// The most idle crews a host keeps; a crew given back beyond them ends its threads. A
/// burst of batches (hostile jobs whose guests sleep hold their crews for their call
/// timeout) leaves no lasting crowd of idle threads behind.
pub const IDLE_CREWS: usize = 16;

/// The host's crews: those idle now, and how to make another. Cheap to clone.
#[derive(Clone)]
pub struct Crews {
    inner: Arc<Inner>,
}

struct Inner {
    /// Idle crews, the one given back last on top: its threads are the likeliest to be
    /// awake still.
    idle: Mutex<Vec<Crew>>,
    /// Threads in a crew: one per core.
    threads: usize,
}

/// One batch's threads, and the job turn they do host work on.
struct Crew {
    threads: rayon::ThreadPool,
    /// The turn of the job whose batch the crew runs (none while it is idle).
    turn: Arc<TurnCell>,
}

impl Crews {
    /// Crews of `threads` threads each; none is made before a batch needs one.
    pub fn new(threads: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::default(),
                threads: threads.max(1),
            }),
        }
    }

    /// Runs `work` (a batch of the job whose host turn is `turn`) on a crew that no other
    /// batch uses meanwhile: an idle one, or a new one if none is idle; or right here if
    /// this thread is of a crew working for `turn` already. Its threads do their host work
    /// on `turn` ([`super::slice::tick`]). A panic in `work` goes on up from here.
    pub fn run<T: Send>(&self, turn: &Arc<HostTurn>, work: impl FnOnce() -> T + Send) -> Result<T> {
        if slice::current().is_some_and(|current| Arc::ptr_eq(&current, turn)) {
            return Ok(work());
        }
        let crew = self.lease(turn)?;
        let done = crew.threads.install(work);
        self.give_back(crew);
        Ok(done)
    }

    /// Runs `work` as [`Crews::run`] does, waiting for it without holding the calling
    /// thread: the batcher's async task hands its batch to a crew and awaits the result.
    pub async fn compute<T: Send + 'static>(
        &self,
        turn: &Arc<HostTurn>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let crew = self.lease(turn)?;
        let (done, result) = oneshot::channel();
        crew.threads.spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            // The receiver is gone only if the batcher was dropped: nobody wants the result.
            let _ = done.send(outcome);
        });
        // If this future is dropped mid-way, so is the crew: its threads end once the work
        // is done.
        let outcome = result
            .await
            .context("a crew's thread ended before its batch was done")?;
        self.give_back(crew);
        outcome.map_err(|panic| anyhow::anyhow!("the batch panicked: {}", panic_message(&*panic)))
    }

    /// An idle crew, or a new one, set to work on `turn`.
    fn lease(&self, turn: &Arc<HostTurn>) -> Result<Crew> {
        let crew = match self.lock().pop() {
            Some(crew) => crew,
            None => self.make()?,
        };
        crew.turn.set(Some(turn.clone()));
        Ok(crew)
    }

    /// Puts a crew whose batch is done back among the idle ones, or ends its threads if
    /// [`IDLE_CREWS`] are idle already.
    fn give_back(&self, crew: Crew) {
        crew.turn.set(None);
        let mut idle = self.lock();
        if idle.len() < IDLE_CREWS {
            idle.push(crew);
        }
    }

    /// How many crews are idle now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn make(&self) -> Result<Crew> {
        let turn = Arc::new(TurnCell::default());
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(self.inner.threads)
            .thread_name(|index| format!("sluice-crew #{index}"))
            .start_handler({
                let turn = turn.clone();
                move |_| turn.clone().enter()
            })
            .build()
            .context("cannot start the threads a batch computes on")?;
        Ok(Crew { threads, turn })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Crew>> {
        self.inner.idle.lock().expect("crews poisoned")
    }
}

/// What a panic said, if it said it as a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::scheduler::fair::FairGate;

    fn turn(gate: &FairGate, tenant: &str) -> Arc<HostTurn> {
        HostTurn::new(
            gate.clone(),
            gate.tenant(tenant, 1),
            CancellationToken::new(),
        )
    }

    #[test]
    fn a_batch_uses_every_thread_of_its_crew_and_works_on_its_own_jobs_turn() {
        let gate = FairGate::new(2);
        let (crews, job) = (Crews::new(2), turn(&gate, "t"));
        // Both partitions must run at once to pass the barrier: one thread each.
        let meeting = Barrier::new(2);
        let turns = crews
            .run(&job, || {
                rayon::broadcast(|_| {
                    meeting.wait();
                    slice::current().is_some_and(|current| Arc::ptr_eq(&current, &job))
                })
            })
            .unwrap();
        assert_eq!(turns, [true, true]);
        assert_eq!(crews.idle(), 1, "the crew went back to the idle ones");
    }

    #[test]
    fn batches_in_flight_at_once_get_crews_of_their_own_and_an_idle_one_is_reused() {
        let gate = FairGate::new(2);
        let crews = Crews::new(2);
        let (first, second) = (turn(&gate, "a"), turn(&gate, "b"));
        let (entered, waiting) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holding = {
            let (crews, first) = (crews.clone(), first.clone());
            std::thread::spawn(move || {
                crews
                    .run(&first, move || {
                        entered.send(()).unwrap();
                        // A batch whose thread waits (as on a queued guest call).
                        released.recv().unwrap();
                        std::thread::current().name().map(str::to_owned)
                    })
                    .unwrap()
            })
        };
        waiting.recv_timeout(Duration::from_secs(10)).unwrap();
        // The first batch waits holding its crew: the second gets another and runs.
        let seen = crews
            .run(&second, || {
                slice::current().is_some_and(|current| Arc::ptr_eq(&current, &second))
            })
            .unwrap();
        assert!(seen);
        release.send(()).unwrap();
        assert!(holding.join().unwrap().unwrap().starts_with("sluice-crew"));
        assert_eq!(crews.idle(), 2);
        crews.run(&first, || ()).unwrap();
        assert_eq!(crews.idle(), 2, "an idle crew ran the third batch");
    }

    #[test]
    fn an_awaited_batch_runs_on_a_crew_and_a_nested_run_for_its_job_stays_there() {
        let gate = FairGate::new(2);
        let (crews, job) = (Crews::new(2), turn(&gate, "t"));
        let tokio = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (inner, nested) = {
            let (crews, job) = (crews.clone(), job.clone());
            tokio
                .block_on(crews.clone().compute(&job.clone(), move || {
                    let outer = std::thread::current().id();
                    // What Job::process does inside the batcher's batch: no second crew.
                    let inner = crews.run(&job, || std::thread::current().id()).unwrap();
                    (inner == outer, crews.idle())
                }))
                .unwrap()
        };
        assert!(inner, "the nested run stayed on the batch's thread");
        assert_eq!(nested, 0, "no other crew was made or taken for it");
        assert_eq!(crews.idle(), 1);
        let panicked = tokio
            .block_on(crews.compute(&job, || panic!("a bug in an operator")))
            .unwrap_err();
        assert!(
            panicked.to_string().contains("a bug in an operator"),
            "{panicked}"
        );
    }

    #[test]
    fn idle_threads_of_a_crew_belong_to_no_job() {
        let gate = FairGate::new(1);
        let crews = Crews::new(1);
        crews.run(&turn(&gate, "t"), || ()).unwrap();
        let idle = crews.lock().pop().unwrap();
        assert!(idle.threads.install(slice::current).is_none());
    }
}
