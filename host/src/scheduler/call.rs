//! One guest call driven through the fair gate: it runs only while it holds a run slot,
//! gives the slot back whenever it yields (at every epoch tick, or when a host call such
//! as a WASI clock wait blocks), and is charged against its timeout for the time it runs
//! and the wall time it spends in blocked host calls, never for time queued for a slot.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::fair::{FairGate, TenantId, Ticket};

/// Why a guest call was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It used up its timeout.
    Timeout {
        /// Time it ran guest code (and host calls that did not block).
        ran: Duration,
        /// Wall time it spent blocked in host calls (clock waits, `poll`).
        blocked: Duration,
        /// Whether it was blocked in a host call when the time ran out.
        in_host_call: bool,
    },
    /// Its job was stopped by force.
    Cancelled,
}

/// Runs `call` for `tenant` through `gate` until it finishes, `timeout` of charged time
/// passes, or `stop` is cancelled. The caller must drop `call` when this returns an error:
/// a wasmtime call future dropped mid-call unwinds the guest.
pub async fn run<F: Future>(
    gate: &FairGate,
    tenant: TenantId,
    timeout: Duration,
    stop: &CancellationToken,
    call: F,
) -> Result<F::Output, Stopped> {
    let mut call = pin!(call);
    let signal = Arc::new(WakeSignal::default());
    let waker = Waker::from(signal.clone());
    let (mut ran, mut blocked) = (Duration::ZERO, Duration::ZERO);
    let timed_out = |ran, blocked, in_host_call| {
        Err(Stopped::Timeout {
            ran,
            blocked,
            in_host_call,
        })
    };
    // After an epoch yield, the call's place in the queue, taken before it gave its slot
    // back.
    let mut queued: Option<Ticket> = None;
    loop {
        let place = queued.take().unwrap_or_else(|| gate.enqueue(tenant));
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => return Err(Stopped::Cancelled),
            slot = place => slot,
        };
        let started = Instant::now();
        signal.woken.store(false, Ordering::SeqCst);
        let polled = call.as_mut().poll(&mut Context::from_waker(&waker));
        ran += started.elapsed();
        if let Poll::Ready(output) = polled {
            return Ok(output);
        }
        if stop.is_cancelled() {
            return Err(Stopped::Cancelled);
        }
        if ran + blocked >= timeout {
            return timed_out(ran, blocked, false);
        }
        if signal.woken.load(Ordering::SeqCst) {
            // An epoch yield: back into the queue before the slot goes back, so that the
            // slot goes to the queued call (this one included) whose tenant has had least
            // for its weight. (Were it queued later, the slot would be free meanwhile and
            // go to whichever call the executor polled first, whatever its tenant.)
            queued = Some(gate.enqueue(tenant));
            drop(slot);
            // Then let the executor's thread poll other tasks once: calls not yet queued
            // would never reach the queue while the thread's calls win their slots back.
            yield_once().await;
            continue;
        }
        drop(slot);
        // A host call is blocked (a clock wait, `poll`): its wall time counts, and it is
        // cut short at the deadline rather than left to sleep on.
        let parked = Instant::now();
        let left = timeout - (ran + blocked);
        tokio::select! {
            biased;
            () = stop.cancelled() => return Err(Stopped::Cancelled),
            () = signal.wait() => {}
            () = tokio::time::sleep(left) => {
                return timed_out(ran, blocked + parked.elapsed(), true);
            }
        }
        blocked += parked.elapsed();
    }
}

/// Is pending once, waking its task at once: the executor polls its other runnable tasks
/// before this one again. (`tokio::task::yield_now` defers the wake until the thread has
/// nothing else to do, while this task may hold a granted slot.)
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Wakes the driving task when the guest call's future is woken, and remembers that it was.
#[derive(Default)]
struct WakeSignal {
    woken: AtomicBool,
    driver: Mutex<Option<Waker>>,
}

impl Wake for WakeSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(driver) = self.driver.lock().expect("wake signal poisoned").take() {
            driver.wake();
        }
    }
}

impl WakeSignal {
    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            *self.driver.lock().expect("wake signal poisoned") = Some(cx.waker().clone());
            if self.woken.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> (FairGate, TenantId) {
        let gate = FairGate::new(1);
        let tenant = gate.tenant("t", 1);
        (gate, tenant)
    }

    #[tokio::test]
    async fn time_queued_behind_others_is_not_charged() {
        let (gate, tenant) = gate();
        let held = gate.acquire(tenant).await;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let stop = CancellationToken::new();
        let answer = run(&gate, tenant, Duration::from_millis(100), &stop, async {
            7
        })
        .await;
        assert_eq!(answer, Ok(7), "300 ms queued is not 100 ms of run time");
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_blocked_host_call_is_cut_at_the_deadline() {
        let (gate, tenant) = gate();
        let stop = CancellationToken::new();
        let started = Instant::now();
        let sleeping = tokio::time::sleep(Duration::from_secs(60));
        let stopped = run(&gate, tenant, Duration::from_millis(200), &stop, sleeping).await;
        let Err(Stopped::Timeout {
            blocked,
            in_host_call,
            ..
        }) = stopped
        else {
            panic!("the sleep must time out: {stopped:?}");
        };
        assert!(in_host_call);
        assert!(blocked >= Duration::from_millis(190), "{blocked:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_yielding_loop_is_charged_its_run_time_and_stopped() {
        let (gate, tenant) = gate();
        let stop = CancellationToken::new();
        let spin = async {
            loop {
                let until = Instant::now() + Duration::from_millis(5);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                // As wasmtime's epoch yield does: wakes its task at once, then is pending.
                yield_once().await;
            }
        };
        let stopped = run(&gate, tenant, Duration::from_millis(100), &stop, spin).await;
        let Err(Stopped::Timeout { ran, blocked, .. }) = stopped else {
            panic!("the loop must time out: {stopped:?}");
        };
        assert!(ran >= Duration::from_millis(100), "{ran:?}");
        assert_eq!(
            blocked,
            Duration::ZERO,
            "an epoch yield is never a blocked host call"
        );
        assert!(gate.used(tenant) >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_cancelled_call_stops_even_while_blocked() {
        let (gate, tenant) = gate();
        let stop = CancellationToken::new();
        let canceller = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stop.cancel();
            })
        };
        let sleeping = tokio::time::sleep(Duration::from_secs(60));
        let stopped = run(&gate, tenant, Duration::from_secs(60), &stop, sleeping).await;
        assert_eq!(stopped, Err(Stopped::Cancelled));
        canceller.await.unwrap();
    }
}
