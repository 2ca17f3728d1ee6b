//! The batcher: every batch interval it cuts what the receivers hold into a batch, and
//! hands the batches, in order, to the job.
//!
//! As in Spark, the batch time is the end of the interval, on multiples of the interval
//! since the epoch; cutting keeps time while a slow batch is computed, so a batch that
//! takes longer than the interval makes the next ones wait (their scheduling delay is
//! measured and reported).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sluice_abi::Batch;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::job::{BatchStats, Job};
use crate::receivers::Receivers;

/// When a run ends besides on error.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
    /// Cancelled to stop: the batch being computed finishes, the records received so
    /// far are cut into a last batch and computed too, then the run ends.
    pub stop: CancellationToken,
}

/// What one computed batch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// 1 for the first batch of the run.
    pub number: u64,
    /// The batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// How long the batch waited after its time before it started computing.
    pub scheduling_delay: Duration,
    /// What computing it did.
    pub stats: BatchStats,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every source is bounded and all of its records were processed.
    Drained,
    /// `max_batches` were processed.
    BatchLimit,
    /// Stopped from outside (Ctrl-C).
    Stopped,
}

/// How a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Batches processed.
    pub batches: u64,
    /// Why it ended.
    pub reason: StopReason,
}

struct Cut {
    time_ms: i64,
    inputs: Vec<Batch>,
    last: bool,
}

/// Runs `job` on `receivers` until drained, stopped, the batch limit, or a failed batch,
/// calling `report` after every batch.
pub async fn run(
    job: Arc<Job>,
    receivers: Receivers,
    options: RunOptions,
    mut report: impl FnMut(&BatchReport) + Send,
) -> Result<RunSummary> {
    let interval = job.config().batch_interval;
    let (cuts, mut pending) = mpsc::unbounded_channel();
    let cutter = tokio::spawn(cut_batches(receivers, interval, cuts, options.stop.clone()));
    let mut number = 0;
    let reason = loop {
        let Some(cut) = pending.recv().await else {
            break StopReason::Stopped;
        };
        let scheduling_delay = Duration::from_millis((now_ms() - cut.time_ms).max(0) as u64);
        let computing = job.clone();
        let stats = tokio::task::spawn_blocking(move || computing.process(cut.time_ms, cut.inputs))
            .await
            .context("the batch computation panicked")??;
        number += 1;
        report(&BatchReport {
            number,
            time_ms: cut.time_ms,
            scheduling_delay,
            stats,
        });
        if cut.last {
            break if options.stop.is_cancelled() {
                StopReason::Stopped
            } else {
                StopReason::Drained
            };
        }
        if options.max_batches == Some(number) {
            break StopReason::BatchLimit;
        }
    };
    cutter.abort();
    Ok(RunSummary {
        batches: number,
        reason,
    })
}

async fn cut_batches(
    receivers: Receivers,
    interval: Duration,
    cuts: mpsc::UnboundedSender<Cut>,
    stop: CancellationToken,
) {
    let interval_ms = interval.as_millis().max(1) as i64;
    loop {
        let now = now_ms();
        let time_ms = (now / interval_ms + 1) * interval_ms;
        let stopping = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis((time_ms - now) as u64)) => false,
            () = stop.cancelled() => true,
        };
        let inputs = receivers.cut();
        let last = stopping || receivers.all_drained();
        if cuts
            .send(Cut {
                time_ms,
                inputs,
                last,
            })
            .is_err()
            || last
        {
            return;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
