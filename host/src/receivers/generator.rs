//! generator: integers 0, 1, 2, ... at a fixed rate, as Spark's rate source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_abi::Batch;

use super::Intake;

const TICK: Duration = Duration::from_millis(10);

/// Appends `rate` records a second, in 10 ms steps, until `limit` records if given.
pub async fn receive(rate: u64, limit: Option<u64>, intake: Arc<Intake>) {
    let started = Instant::now();
    let mut produced = 0u64;
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        let due = (started.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        let target = limit.map_or(due, |limit| due.min(limit));
        let mut batch = Batch::with_capacity(
            (target - produced) as usize,
            (target - produced) as usize * 5,
        );
        for value in produced..target {
            batch.push(&value).expect("integers encode");
        }
        produced = target;
        intake.append(&batch);
        if limit == Some(produced) {
            intake.finish();
            return;
        }
    }
}
