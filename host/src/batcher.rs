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
use crate::failure::{Failing, FailureKind};
use crate::job::{BatchStats, Job};
use crate::receivers::{Completed, Receivers};

/// When a run ends besides on error.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this many new batches. Batches re-run from the log after a restart do
    /// not count: they were cut by an earlier run.
    pub max_batches: Option<u64>,
    /// Cancelled to stop. The batch being computed finishes either way. A job with a
    /// checkpoint directory then ends: batches already cut, and records received since,
    /// are in the write-ahead log and are computed at the next start. A job without one
    /// has nothing else that would keep them, so it cuts what its receivers hold into a
    /// last batch and computes every batch already cut before it ends.
    pub stop: CancellationToken,
    /// How far after the interval's multiples the batch times fall ([`phase_of`]; zero:
    /// Spark's times).
    pub phase: Duration,
}

/// The phase of job `name`'s batch times in a host that runs several jobs: a fraction of
/// `interval` (to the millisecond) drawn from the SHA-256 of the name, so that the same
/// job always has the same batch times, and a host's jobs do not all cut and compute at
/// the same instant. With Spark's aligned times every job's batch falls due at once: at
/// 1000 jobs and a 1 s interval, the last of them waits for the other 999 to be computed
/// (hundreds of milliseconds on 2 cores), whatever each costs.
pub fn phase_of(name: &str, interval: Duration) -> Duration {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let draw = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let interval_ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(draw % interval_ms)
}

/// What one computed batch reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// The name of the job that computed it.
    pub job: Arc<str>,
    /// The tenant the job runs for.
    pub tenant: Arc<str>,
    /// The batch number: 1 for the job's first batch (counting from before a restart).
    pub number: u64,
    /// The batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// How long the batch waited after its time before it started computing.
    pub scheduling_delay: Duration,
    /// How many batches were cut and waiting behind it when it started computing.
    pub queued: usize,
    /// What computing it did.
    pub stats: BatchStats,
    /// Whether it was a batch cut before a restart, computed again from the log.
    pub replayed: bool,
    /// Records its sources passed over because they could not be decoded
    /// (`on_decode_error = "skip"`); 0 for a re-run batch.
    pub skipped: u64,
    /// The state checkpoint written after it, if one was.
    pub checkpoint: Option<checkpoint::Written>,
    /// The records each source brought, in source order.
    pub source_records: Vec<u64>,
    /// The bytes the job's write-ahead log holds on disk after it, if it has one.
    pub wal_bytes: Option<u64>,
    /// The records the job's receivers held for the next batch when it was done.
    pub buffered_records: u64,
    /// Input rows its event-time steps dropped as late.
    pub late_rows: u64,
    /// What its event-time steps did (the watermark they used, the rows' event times,
    /// each stateful step's state and drops), if the job has them and they ran.
    pub event_time: Option<crate::event_time::BatchReport>,
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
    /// Stopped by force ([`Job::force_stop`]): the batch in flight was abandoned, and is
    /// re-run from the write-ahead log at the next start.
    Forced,
}

/// How a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// New batches processed (cut by this run).
    pub batches: u64,
    /// Batches cut before a restart and re-run from the log.
    pub replayed: u64,
    /// Why it ended.
    pub reason: StopReason,
    /// The state checkpoint written as the run stopped, if one was.
    pub checkpoint: Option<checkpoint::Written>,
}

struct Cut {
    logged: checkpoint::Cut,
    inputs: Vec<Batch>,
    skipped: u64,
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
    let (job_name, tenant): (Arc<str>, Arc<str>) =
        (job.config().name.as_str().into(), job.tenant().into());
    let mut summary = RunSummary {
        batches: 0,
        replayed: 0,
        reason: StopReason::Stopped,
        checkpoint: None,
    };
    // The last batch computed, while no state checkpoint covers it.
    let mut unsaved: Option<checkpoint::Cut> = None;
    let mut first_number = 1;
    let mut continues_after_ms = None;
    let buffered = receivers.buffered();
    let checkpointer = match checkpointing {
        Some(Checkpointing {
            checkpointer,
            recovery,
        }) => {
            for (cut, logged) in recovery.replay {
                let watermark = recovery.watermarks.get(&cut.number).copied();
                if options.stop.is_cancelled() {
                    // The rest stays in the log, to be re-run at the next start.
                    summary.checkpoint = checkpoint_last(&job, &checkpointer, unsaved).await?;
                    return Ok(summary);
                }
                let inputs = receivers.replay(&cut, logged)?;
                let source_records = records_of(&inputs);
                let computed =
                    compute(&job, Some(&checkpointer), (cut.clone(), watermark), inputs).await;
                let Some(Computed {
                    stats,
                    written,
                    wal_bytes,
                }) = unless_forced(&job, computed)?
                else {
                    summary.reason = StopReason::Forced;
                    return Ok(summary);
                };
                summary.replayed += 1;
                unsaved = written.is_none().then(|| cut.clone());
                report(&BatchReport {
                    job: job_name.clone(),
                    tenant: tenant.clone(),
                    number: cut.number,
                    time_ms: cut.time_ms,
                    scheduling_delay: Duration::ZERO,
                    queued: 0,
                    stats,
                    replayed: true,
                    skipped: 0,
                    checkpoint: written,
                    source_records,
                    wal_bytes,
                    buffered_records: buffered.records(),
                    late_rows: late_rows(&job),
                    event_time: job.event_time_report().filter(|report| report.ran),
                });
            }
            receivers.resume(&recovery.positions, &recovery.ranges, recovery.pending);
            first_number = recovery.next_number;
            continues_after_ms = recovery.continues_after_ms;
            Some(checkpointer)
        }
        None => None,
    };
    if options.max_batches == Some(0) {
        summary.reason = StopReason::BatchLimit;
        return Ok(summary);
    }
    // A checkpointed job stops right after the batch in flight; one without a checkpoint
    // has its cutter cut one last batch on a stop and computes every batch before it.
    let cutter_stop = if checkpointer.is_some() {
        CancellationToken::new()
    } else {
        options.stop.clone()
    };
    // At most `max_queued_batches` cut batches wait; then the cutter waits too.
    let (cuts, mut pending) = mpsc::channel(job.config().max_queued_batches);
    let completion = receivers.completion();
    let cutter = tokio::spawn(cut_batches(
        receivers,
        (interval, options.phase),
        (first_number, continues_after_ms),
        cuts,
        cutter_stop,
    ));
    summary.reason = loop {
        let cut = tokio::select! {
            biased;
            () = options.stop.cancelled(), if checkpointer.is_some() => break StopReason::Stopped,
            cut = pending.recv() => cut,
        };
        let Some(cut) = cut else {
            break StopReason::Stopped;
        };
        if job.is_force_stopped() {
            break StopReason::Forced;
        }
        let cut = cut?;
        let time_ms = cut.logged.time_ms;
        let scheduling_delay = since(time_ms);
        let number = cut.logged.number;
        let skipped = cut.skipped;
        let queued = pending.len();
        let logged = cut.logged.clone();
        let source_records = records_of(&cut.inputs);
        let computed = compute(&job, checkpointer.as_ref(), (cut.logged, None), cut.inputs).await;
        let Some(Computed {
            stats,
            written,
            wal_bytes,
        }) = unless_forced(&job, computed)?
        else {
            break StopReason::Forced;
        };
        completion.completed(
            &logged,
            &Completed {
                time_ms,
                processing: stats.processing,
                scheduling_delay,
            },
        );
        summary.batches += 1;
        unsaved = written.is_none().then_some(logged);
        report(&BatchReport {
            job: job_name.clone(),
            tenant: tenant.clone(),
            number,
            time_ms,
            scheduling_delay,
            queued,
            stats,
            replayed: false,
            skipped,
            checkpoint: written,
            source_records,
            wal_bytes,
            buffered_records: buffered.records(),
            late_rows: late_rows(&job),
            event_time: job.event_time_report().filter(|report| report.ran),
        });
        if cut.last {
            break if options.stop.is_cancelled() {
                StopReason::Stopped
            } else {
                StopReason::Drained
            };
        }
        if options.max_batches == Some(summary.batches) {
            break StopReason::BatchLimit;
        }
    };
    // The cutter ends at its next wait once `pending` is gone. A cut in flight is let
    // finish rather than abandoned half-written: the log is this run's until it ends.
    drop(pending);
    cutter.await.context("the batch cutter panicked")?;
    if summary.reason == StopReason::Stopped
        && let Some(checkpointer) = &checkpointer
    {
        summary.checkpoint = checkpoint_last(&job, checkpointer, unsaved).await?;
    }
    Ok(summary)
}

/// The records of each source's part of a batch.
fn records_of(inputs: &[Batch]) -> Vec<u64> {
    inputs.iter().map(|input| input.len() as u64).collect()
}

/// The input rows the job's event-time steps dropped as late in the batch just computed.
fn late_rows(job: &Job) -> u64 {
    job.event_time_report()
        .filter(|report| report.ran)
        .map_or(0, |report| {
            report
                .steps
                .iter()
                .map(|step| step.late_rows_dropped as u64)
                .sum()
        })
}

/// A batch's computation, `None` if it failed because the job was stopped by force: the
/// batch is then abandoned (its state changes are never checkpointed, and the log re-runs
/// it at the next start), which is no failure of the job.
fn unless_forced<T>(job: &Job, computed: Result<T>) -> Result<Option<T>> {
    match computed {
        Err(_) if job.is_force_stopped() => Ok(None),
        computed => computed.map(Some),
    }
}

/// On a stop, checkpoints the state after `unsaved`, the last batch computed, if no
/// checkpoint covers it yet: the next start then restores it instead of re-running the
/// batches since the last regular checkpoint.
async fn checkpoint_last(
    job: &Arc<Job>,
    checkpointer: &Arc<Checkpointer>,
    unsaved: Option<checkpoint::Cut>,
) -> Result<Option<checkpoint::Written>> {
    let Some(cut) = unsaved else {
        return Ok(None);
    };
    let (job, checkpointer) = (job.clone(), checkpointer.clone());
    tokio::task::spawn_blocking(move || checkpointer.checkpoint(&job, &cut))
        .await
        .context("writing the last state checkpoint panicked")?
        .context(Failing::new(
            FailureKind::Checkpoint,
            "the run stopped, but its last state checkpoint could not be written",
        ))
        .map(Some)
}

/// What computing one batch gave.
struct Computed {
    stats: BatchStats,
    /// The state checkpoint written after it, if one was due.
    written: Option<checkpoint::Written>,
    /// The bytes the job's write-ahead log holds on disk after it, if it has one: read on
    /// the crew, since the log's lock may be held for as long as a slow disk takes to cut.
    wal_bytes: Option<u64>,
}

/// Computes one batch on a crew of the host's threads, off the async ones, then tells the
/// checkpointer it is complete. A re-run batch comes with the event-time watermark its
/// first run logged, if it got that far.
async fn compute(
    job: &Arc<Job>,
    checkpointer: Option<&Arc<Checkpointer>>,
    (cut, logged_watermark): (checkpoint::Cut, Option<i64>),
    inputs: Vec<Batch>,
) -> Result<Computed> {
    let checkpointer = checkpointer.cloned();
    job.on_crew(move |job| {
        let progress = job.progress();
        progress.begin(cut.number, cut.time_ms);
        let computed = settle_watermark(job, checkpointer.as_deref(), &cut, logged_watermark)
            .and_then(|()| job.process(cut.time_ms, inputs))
            .and_then(|stats| {
                progress.checkpoint();
                let (written, wal_bytes) = match checkpointer {
                    Some(checkpointer) => (
                        checkpointer.completed(job, &cut).context(Failing::new(
                            FailureKind::Checkpoint,
                            "the batch was computed but its checkpoint could not be written",
                        ))?,
                        Some(checkpointer.wal_bytes()),
                    ),
                    None => (None, None),
                };
                Ok(Computed {
                    stats,
                    written,
                    wal_bytes,
                })
            });
        progress.end();
        computed
    })
    .await
    .context("the batch computation did not finish")?
}

/// Settles the event-time watermark batch `cut` computes with: a re-run one uses the one
/// its first run `logged` (recomputing it from the data re-run since the checkpoint could
/// lower it); any other is logged, if the job has a log and a watermark, before the
/// batch's output reaches a sink.
fn settle_watermark(
    job: &Job,
    checkpointer: Option<&Checkpointer>,
    cut: &checkpoint::Cut,
    logged: Option<i64>,
) -> Result<()> {
    let clock = job.event_clock();
    if let Some(watermark_ms) = logged {
        clock.rerun_with(watermark_ms);
        return Ok(());
    }
    match (checkpointer, clock.next_watermark()) {
        (Some(checkpointer), Some(watermark_ms)) => checkpointer
            .log_watermark(cut.number, watermark_ms)
            .context(Failing::new(
                FailureKind::Checkpoint,
                "the batch's watermark could not be logged",
            )),
        _ => Ok(()),
    }
}

/// Cuts a batch every interval until stopped, drained, or nobody takes the cuts any more.
/// Batch times are consecutive multiples of the interval (plus `phase`, in a host running
/// several jobs: [`phase_of`]), whatever the cut, the log or the computation cost: the
/// first is the next interval boundary (or, taking over from a run that just stopped, one
/// interval after `continues_after_ms`, its last), and each later one follows
/// the one before by exactly one interval, never read from the clock again. As with
/// Spark's timer, a lagging job makes its batches wait (in `cuts`, whose bound then holds
/// the cutter back), not skip times.
///
/// A cut writes (and syncs) the write-ahead log, so it runs on a blocking thread: on the
/// async threads, a hundred jobs' cuts on a slow disk would stall every other task of the
/// runtime (the server's API among them).
async fn cut_batches(
    receivers: Receivers,
    (interval, phase): (Duration, Duration),
    (first_number, continues_after_ms): (u64, Option<i64>),
    cuts: mpsc::Sender<Result<Cut>>,
    stop: CancellationToken,
) {
    let receivers = Arc::new(receivers);
    let interval_ms = interval.as_millis().max(1) as i64;
    let phase_ms = phase.as_millis() as i64 % interval_ms;
    let mut number = first_number;
    let mut time_ms = match continues_after_ms {
        Some(last_ms) => last_ms + interval_ms,
        None => ((now_ms() - phase_ms) / interval_ms + 1) * interval_ms + phase_ms,
    };
    loop {
        let wait = Duration::from_millis((time_ms - now_ms()).max(0) as u64);
        let stopping = tokio::select! {
            biased;
            () = cuts.closed() => return,
            () = stop.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        };
        let cut = {
            let receivers = receivers.clone();
            tokio::task::spawn_blocking(move || cut_one(&receivers, number, time_ms, stopping))
                .await
                .unwrap_or_else(|panicked| {
                    Err(anyhow::anyhow!("cutting a batch panicked: {panicked}"))
                })
        };
        number += 1;
        time_ms += interval_ms;
        let (last, failed) = (cut.as_ref().is_ok_and(|cut| cut.last), cut.is_err());
        if cuts.send(cut).await.is_err() || last || failed {
            return;
        }
    }
}

/// Cuts batch `number` of time `time_ms`; the last if `stopping` or every source is drained.
fn cut_one(receivers: &Receivers, number: u64, time_ms: i64, stopping: bool) -> Result<Cut> {
    let (logged, inputs) = receivers.cut_batch(number, time_ms)?;
    Ok(Cut {
        logged,
        inputs,
        skipped: receivers.skipped(),
        last: stopping || receivers.all_drained(),
    })
}

/// How long ago batch time `time_ms` was, to the microsecond (zero if still ahead).
fn since(time_ms: i64) -> Duration {
    let time = UNIX_EPOCH + Duration::from_millis(time_ms.max(0) as u64);
    SystemTime::now().duration_since(time).unwrap_or_default()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_has_the_same_phase_every_time_within_its_interval_and_jobs_spread() {
        let second = Duration::from_secs(1);
        assert_eq!(phase_of("j1", second), phase_of("j1", second));
        let phases: std::collections::BTreeSet<Duration> = (0..100)
            .map(|job| phase_of(&format!("j{job}"), second))
            .collect();
        assert!(phases.iter().all(|phase| *phase < second));
        assert!(phases.len() > 90, "100 jobs share {} phases", phases.len());
        assert!(
            phases.first().unwrap() < &Duration::from_millis(100)
                && phases.last().unwrap() > &Duration::from_millis(900),
            "spread over the interval: {phases:?}"
        );
        assert_eq!(phase_of("j1", Duration::from_millis(1)), Duration::ZERO);
    }
}
