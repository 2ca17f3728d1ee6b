//! What one step of a job has done since the job started, counted by the engine as it
//! goes: the step's records, time, state entries and state bytes once per batch (its
//! stores count their bytes as they change, so reading them walks nothing), its UDF calls
//! and guest memory once per call. Plain atomics, so that counting costs a batch or a
//! call a few relaxed adds and a scrape reads them without stopping either.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The running totals of one step (and of its UDFs' instance pools).
#[derive(Debug, Default)]
pub struct StepMeter {
    records: AtomicU64,
    micros: AtomicU64,
    udf_calls: AtomicU64,
    udf_failures: AtomicU64,
    udf_micros: AtomicU64,
    udf_memory: AtomicI64,
    state_entries: AtomicU64,
    state_bytes: AtomicU64,
}

/// A step's totals, as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepTotals {
    /// Records the step put out.
    pub records: u64,
    /// Time spent computing it, in microseconds.
    pub micros: u64,
    /// Calls into its UDFs.
    pub udf_calls: u64,
    /// Calls that failed (a trap, a limit, a refused answer).
    pub udf_failures: u64,
    /// Time spent in its UDF calls, in microseconds.
    pub udf_micros: u64,
    /// The guest memory its UDF instances hold now, in bytes.
    pub udf_memory_bytes: u64,
    /// The entries its state holds after the last batch (keys of a state store, records
    /// of a window); 0 for a step without state.
    pub state_entries: u64,
    /// The bytes its state holds after the last batch (keys, states, records).
    pub state_bytes: u64,
}

impl StepMeter {
    /// The step computed one batch: `records` out, in `took`.
    pub fn step(&self, records: usize, took: Duration) {
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// One UDF call ended after `took`, `failed` or not.
    pub fn call(&self, took: Duration, failed: bool) {
        self.udf_calls.fetch_add(1, Ordering::Relaxed);
        self.udf_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if failed {
            self.udf_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The step's UDF instances now hold `change` bytes more (or fewer) guest memory.
    pub fn memory(&self, change: i64) {
        if change != 0 {
            self.udf_memory.fetch_add(change, Ordering::Relaxed);
        }
    }

    /// The step's state holds `entries` in `bytes` after a batch.
    pub fn state(&self, entries: usize, bytes: usize) {
        self.state_entries.store(entries as u64, Ordering::Relaxed);
        self.state_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn totals(&self) -> StepTotals {
        StepTotals {
            records: self.records.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
            udf_calls: self.udf_calls.load(Ordering::Relaxed),
            udf_failures: self.udf_failures.load(Ordering::Relaxed),
            udf_micros: self.udf_micros.load(Ordering::Relaxed),
            udf_memory_bytes: self.udf_memory.load(Ordering::Relaxed).max(0) as u64,
            state_entries: self.state_entries.load(Ordering::Relaxed),
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_adds_up_steps_calls_and_memory() {
        let meter = StepMeter::default();
        meter.step(10, Duration::from_micros(250));
        meter.step(5, Duration::from_micros(50));
        meter.call(Duration::from_micros(40), false);
        meter.call(Duration::from_micros(60), true);
        meter.memory(1 << 20);
        meter.memory(-(1 << 19));
        meter.state(7, 420);
        meter.state(5, 300);
        assert_eq!(
            meter.totals(),
            StepTotals {
                records: 15,
                micros: 300,
                udf_calls: 2,
                udf_failures: 1,
                udf_micros: 100,
                udf_memory_bytes: 1 << 19,
                state_entries: 5,
                state_bytes: 300,
            }
        );
    }
}
