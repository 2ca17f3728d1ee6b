//! generator: integers 0, 1, 2, ... at a fixed rate, as Spark's rate source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_abi::Batch;

use super::Intake;

const TICK: Duration = Duration::from_millis(10);

/// The most records a generator keeps waiting for a cut: one second at the highest rate
/// a manifest allows. A longer interval at that rate (or a cut held up) would otherwise
/// fill memory; past this the generator skips ahead, as a source under back-pressure.
pub const MAX_WAITING: u64 = 10_000_000;

/// Appends `rate` records a second, in 10 ms steps, until `limit` records if given. At
/// most [`MAX_WAITING`] records wait for a cut; the records due while the intake is full
/// are not made at all, so the values stay consecutive and no burst follows.
pub async fn receive(rate: u64, limit: Option<u64>, intake: Arc<Intake>) {
    let started = Instant::now();
    let mut schedule = Schedule::new(rate, limit);
    let mut ticker = tokio::time::interval(TICK);
    let mut behind = false;
    loop {
        ticker.tick().await;
        let waiting = intake.waiting() as u64;
        let skipped = schedule.skipped;
        let values = schedule.next(started.elapsed(), MAX_WAITING.saturating_sub(waiting));
        match (schedule.skipped > skipped, behind) {
            (true, false) => tracing::warn!(
                waiting,
                "the generator falls behind its rate: {waiting} records wait for the next batch (the bound is {MAX_WAITING}); the values due meanwhile are not made"
            ),
            (false, true) => tracing::info!("the generator is back at its rate"),
            _ => {}
        }
        behind = schedule.skipped > skipped;
        let count = (values.end - values.start) as usize;
        let mut batch = Batch::with_capacity(count, count * 5);
        for value in values {
            batch.push(&value).expect("integers encode");
        }
        intake.append(batch).await;
        if schedule.is_done() {
            intake.finish();
            return;
        }
    }
}

/// Which values a generator makes at each tick.
struct Schedule {
    rate: u64,
    limit: Option<u64>,
    /// Values made so far (the next value).
    produced: u64,
    /// Values that fell due while there was no room, never made.
    skipped: u64,
}

impl Schedule {
    fn new(rate: u64, limit: Option<u64>) -> Self {
        Self {
            rate,
            limit,
            produced: 0,
            skipped: 0,
        }
    }

    /// The values to make `elapsed` after the start, at most `room` of them.
    fn next(&mut self, elapsed: Duration, room: u64) -> std::ops::Range<u64> {
        let due = elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        let due = u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.skipped);
        let mut target = due.max(self.produced);
        if target - self.produced > room {
            self.skipped += target - self.produced - room;
            target = self.produced + room;
        }
        if let Some(limit) = self.limit {
            target = target.min(limit);
        }
        let values = self.produced..target;
        self.produced = target;
        values
    }

    fn is_done(&self) -> bool {
        self.limit == Some(self.produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_the_values_due_at_the_rate() {
        let mut schedule = Schedule::new(1000, None);
        assert_eq!(schedule.next(Duration::from_millis(10), u64::MAX), 0..10);
        assert_eq!(schedule.next(Duration::from_millis(25), u64::MAX), 10..25);
        assert_eq!(schedule.next(Duration::from_millis(25), u64::MAX), 25..25);
    }

    #[test]
    fn stops_at_the_limit() {
        let mut schedule = Schedule::new(1000, Some(12));
        assert_eq!(schedule.next(Duration::from_millis(10), u64::MAX), 0..10);
        assert!(!schedule.is_done());
        assert_eq!(schedule.next(Duration::from_secs(5), u64::MAX), 10..12);
        assert!(schedule.is_done());
    }

    #[test]
    fn a_full_intake_skips_what_falls_due_and_does_not_catch_up() {
        let mut schedule = Schedule::new(10_000_000, None);
        // Ten seconds at the top rate with room for 1,000 records: only those are made.
        assert_eq!(schedule.next(Duration::from_secs(10), 1000), 0..1000);
        // Once there is room again, the values go on from where they stopped, at the rate.
        assert_eq!(
            schedule.next(Duration::from_secs(10) + Duration::from_millis(1), u64::MAX),
            1000..11_000
        );
    }

    #[test]
    fn the_top_rate_over_a_day_fits_in_the_arithmetic() {
        let mut schedule = Schedule::new(10_000_000, None);
        let values = schedule.next(Duration::from_secs(24 * 3600), MAX_WAITING);
        assert_eq!(values, 0..MAX_WAITING);
    }
}
