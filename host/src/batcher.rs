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

use crate::checkpoint::{self, Checkpointer, Recovery};
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
    /// The batch number: 1 for the job's first batch (counting from before a restart).
    pub number: u64,
    /// The batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// How long the batch waited after its time before it started computing.
    pub scheduling_delay: Duration,
    /// What computing it did.
    pub stats: BatchStats,
    /// Whether it was a batch cut before a restart, computed again from the log.
    pub replayed: bool,
    /// The state checkpoint written after it, if one was.
    pub checkpoint: Option<checkpoint::Written>,
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
    logged: checkpoint::Cut,
    inputs: Vec<Batch>,
    last: bool,
}

/// A job's checkpointing, and what its recovery found.
pub struct Checkpointing {
    /// The job's checkpointer.
    pub checkpointer: Arc<Checkpointer>,
    /// What to re-run and where to resume.
    pub recovery: Recovery,
}

/// Runs `job` on `receivers` until drained, stopped, the batch limit, or a failed batch,
/// calling `report` after every batch. With `checkpointing`, first re-runs the batches
/// cut before a restart, then resumes the receivers where they were.
pub async fn run(
    job: Arc<Job>,
    receivers: Receivers,
    checkpointing: Option<Checkpointing>,
    options: RunOptions,
    mut report: impl FnMut(&BatchReport) + Send,
) -> Result<RunSummary> {
    let interval = job.config().batch_interval;
    let mut processed = 0;
    let mut first_number = 1;
    let checkpointer = match checkpointing {
        Some(Checkpointing {
            checkpointer,
            recovery,
        }) => {
            for (cut, logged) in recovery.replay {
                let inputs = receivers.replay(&cut, logged);
                let (stats, written) =
                    compute(&job, Some(&checkpointer), cut.clone(), inputs).await?;
                processed += 1;
                report(&BatchReport {
                    number: cut.number,
                    time_ms: cut.time_ms,
                    scheduling_delay: Duration::ZERO,
                    stats,
                    replayed: true,
                    checkpoint: written,
                });
            }
            receivers.resume(&recovery.positions, recovery.pending);
            first_number = recovery.next_number;
            Some(checkpointer)
        }
        None => None,
    };
    let (cuts, mut pending) = mpsc::unbounded_channel();
    let cutter = tokio::spawn(cut_batches(
        receivers,
        interval,
        first_number,
        cuts,
        options.stop.clone(),
    ));
    let reason = loop {
        let Some(cut) = pending.recv().await else {
            break StopReason::Stopped;
        };
        let cut = cut?;
        let time_ms = cut.logged.time_ms;
        let scheduling_delay = Duration::from_millis((now_ms() - time_ms).max(0) as u64);
        let number = cut.logged.number;
        let (stats, written) = compute(&job, checkpointer.as_ref(), cut.logged, cut.inputs).await?;
        processed += 1;
        report(&BatchReport {
            number,
            time_ms,
            scheduling_delay,
            stats,
            replayed: false,
            checkpoint: written,
        });
        if cut.last {
            break if options.stop.is_cancelled() {
                StopReason::Stopped
            } else {
                StopReason::Drained
            };
        }
        if options.max_batches == Some(processed) {
            break StopReason::BatchLimit;
        }
    };
    cutter.abort();
    Ok(RunSummary {
        batches: processed,
        reason,
    })
}

/// Computes one batch off the async threads, then tells the checkpointer it is complete.
async fn compute(
    job: &Arc<Job>,
    checkpointer: Option<&Arc<Checkpointer>>,
    cut: checkpoint::Cut,
    inputs: Vec<Batch>,
) -> Result<(BatchStats, Option<checkpoint::Written>)> {
    let job = job.clone();
    let checkpointer = checkpointer.cloned();
    tokio::task::spawn_blocking(move || {
        let stats = job.process(cut.time_ms, inputs)?;
        let written = match checkpointer {
            Some(checkpointer) => checkpointer
                .completed(&job, &cut)
                .context("the batch was computed but its checkpoint could not be written")?,
            None => None,
        };
        Ok((stats, written))
    })
    .await
    .context("the batch computation panicked")?
}

async fn cut_batches(
    receivers: Receivers,
    interval: Duration,
    first_number: u64,
    cuts: mpsc::UnboundedSender<Result<Cut>>,
    stop: CancellationToken,
) {
    let interval_ms = interval.as_millis().max(1) as i64;
    let mut number = first_number;
    loop {
        let now = now_ms();
        let time_ms = (now / interval_ms + 1) * interval_ms;
        let stopping = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis((time_ms - now) as u64)) => false,
            () = stop.cancelled() => true,
        };
        let cut = receivers.cut_batch(number, time_ms);
        number += 1;
        let last = stopping || receivers.all_drained();
        let failed = cut.is_err();
        let cut = cut.map(|(logged, inputs)| Cut {
            logged,
            inputs,
            last,
        });
        if cuts.send(cut).is_err() || last || failed {
            return;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
