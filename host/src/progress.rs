//! What a job's batch in flight is doing: one record per job that the engine updates as
//! the batch moves through its steps, and that anyone may read at any time (the status
//! line of `sluice run`, metrics) to say "batch 12 running 4.2 s in `counts` step 2,
//! wc#slow".
//!
//! The engine writes it from the batch's own thread at every step, so it is a handful of
//! atomics, never a lock: a reader can neither slow a batch down nor be stalled by one
//! stuck in a guest call. A reader checks that the batch number did not change while it
//! read, so it never mixes two batches.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

/// `doing`: the batch has started but entered no step yet.
const STARTING: usize = usize::MAX;
/// `doing`: the steps are done and the sinks are written.
const SINKS: usize = usize::MAX - 1;
/// `doing`: the batch is computed and its checkpoint is written.
const CHECKPOINT: usize = usize::MAX - 2;

/// The batch in flight of one job.
#[derive(Debug)]
pub struct BatchProgress {
    /// What `started_us` counts from.
    origin: Instant,
    /// The number of the batch in flight; 0 when none is.
    number: AtomicU64,
    /// Its batch time, in milliseconds since the epoch.
    time_ms: AtomicI64,
    /// When it started computing, in microseconds since `origin`.
    started_us: AtomicU64,
    /// The index in `steps` of the step it computes, or one of the constants above.
    doing: AtomicUsize,
    /// How a reader names each step, by index.
    steps: Vec<String>,
}

/// What the batch in flight is doing, as read from [`BatchProgress::in_flight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight<'a> {
    /// Its number.
    pub number: u64,
    /// Its batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// How long it has been computing.
    pub running: Duration,
    /// Where it is.
    pub doing: Doing<'a>,
}

/// Where a batch in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing<'a> {
    /// Started, before its first step.
    Starting,
    /// In a step, named as the job's graph names it (`` `counts` step 2, wc#slow ``).
    Step(&'a str),
    /// Writing its results to the sinks.
    Sinks,
    /// Writing its checkpoint.
    Checkpoint,
}

impl std::fmt::Display for Doing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Doing::Starting => f.write_str("starting"),
            Doing::Step(step) => write!(f, "in {step}"),
            Doing::Sinks => f.write_str("writing its sinks"),
            Doing::Checkpoint => f.write_str("writing its checkpoint"),
        }
    }
}

impl BatchProgress {
    /// A record for a job whose steps are named `steps` (indexed as [`step`](Self::step)
    /// is called), with no batch in flight.
    pub fn new(steps: Vec<String>) -> Self {
        Self {
            origin: Instant::now(),
            number: AtomicU64::new(0),
            time_ms: AtomicI64::new(0),
            started_us: AtomicU64::new(0),
            doing: AtomicUsize::new(STARTING),
            steps,
        }
    }

    /// Batch `number` (of time `time_ms`) starts computing.
    pub fn begin(&self, number: u64, time_ms: i64) {
        // Cleared first, so that a reader never pairs the old number with the new fields
        // (a sequence lock, with the number as its sequence).
        self.number.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        self.time_ms.store(time_ms, Ordering::Relaxed);
        self.started_us
            .store(self.origin.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.doing.store(STARTING, Ordering::Relaxed);
        self.number.store(number, Ordering::Release);
    }

    /// The batch in flight enters step `index`.
    pub fn step(&self, index: usize) {
        self.doing.store(index, Ordering::Release);
    }

    /// The batch in flight writes its sinks.
    pub fn sinks(&self) {
        self.doing.store(SINKS, Ordering::Release);
    }

    /// The batch in flight writes its checkpoint.
    pub fn checkpoint(&self) {
        self.doing.store(CHECKPOINT, Ordering::Release);
    }

    /// The batch in flight is done (or failed).
    pub fn end(&self) {
        self.number.store(0, Ordering::Release);
    }

    /// The batch in flight, if there is one.
    pub fn in_flight(&self) -> Option<InFlight<'_>> {
        loop {
            let number = self.number.load(Ordering::Acquire);
            if number == 0 {
                return None;
            }
            let time_ms = self.time_ms.load(Ordering::Relaxed);
            let started_us = self.started_us.load(Ordering::Relaxed);
            let doing = self.doing.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.number.load(Ordering::Relaxed) != number {
                continue;
            }
            let now_us = self.origin.elapsed().as_micros() as u64;
            return Some(InFlight {
                number,
                time_ms,
                running: Duration::from_micros(now_us.saturating_sub(started_us)),
                doing: match doing {
                    STARTING => Doing::Starting,
                    SINKS => Doing::Sinks,
                    CHECKPOINT => Doing::Checkpoint,
                    index => self
                        .steps
                        .get(index)
                        .map_or(Doing::Starting, |step| Doing::Step(step)),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_followed_through_its_steps_and_forgotten_when_done() {
        let progress = BatchProgress::new(vec!["source".into(), "`counts` step 1, wc#slow".into()]);
        assert_eq!(progress.in_flight(), None);
        progress.begin(12, 4_000);
        let started = progress.in_flight().unwrap();
        assert_eq!((started.number, started.time_ms), (12, 4_000));
        assert_eq!(started.doing, Doing::Starting);
        progress.step(1);
        std::thread::sleep(Duration::from_millis(5));
        let stepping = progress.in_flight().unwrap();
        assert_eq!(stepping.doing, Doing::Step("`counts` step 1, wc#slow"));
        assert!(stepping.running >= Duration::from_millis(5));
        assert_eq!(stepping.doing.to_string(), "in `counts` step 1, wc#slow");
        progress.sinks();
        assert_eq!(progress.in_flight().unwrap().doing, Doing::Sinks);
        progress.checkpoint();
        assert_eq!(progress.in_flight().unwrap().doing, Doing::Checkpoint);
        progress.end();
        assert_eq!(progress.in_flight(), None);
        progress.begin(13, 5_000);
        let next = progress.in_flight().unwrap();
        assert_eq!((next.number, next.doing), (13, Doing::Starting));
        assert!(next.running < stepping.running + Duration::from_secs(1));
    }

    #[test]
    fn a_reader_never_mixes_two_batches() {
        let progress = std::sync::Arc::new(BatchProgress::new(vec!["a".into()]));
        let writer = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for number in 1..20_000u64 {
                    progress.begin(number, number as i64 * 1_000);
                    progress.step(0);
                    progress.end();
                }
            })
        };
        while !writer.is_finished() {
            if let Some(batch) = progress.in_flight() {
                assert_eq!(batch.time_ms, batch.number as i64 * 1_000);
            }
        }
        writer.join().unwrap();
    }
}
