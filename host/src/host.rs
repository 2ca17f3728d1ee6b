//! A host: one process running any number of jobs side by side, sharing the WASM
//! runtime (engine, compiled components) but nothing else: each job has its own UDF
//! instances, limits, receivers and sinks, and a failing job stops only itself.
//!
//! A stop asks the batch in flight to finish; if the job has not ended [`STOP_GRACE`]
//! later, its guest calls are cancelled and the batch is abandoned: it stays in the
//! write-ahead log, to be re-run at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batcher::{self, BatchReport, Checkpointing, RunOptions, RunSummary};
use crate::beneath::JobFiles;
use crate::checkpoint::{Checkpointer, DirLock, Loss, RecoveryOptions};
use crate::failure::{Failing, FailureKind};
use crate::job::Job;
use crate::manifest;
use crate::receivers::Receivers;
use crate::runtime::{Runtime, RuntimeConfig};

/// How long a stopped job may take to finish its batch in flight before it is stopped by
/// force.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs jobs.
pub struct Host {
    runtime: Arc<Runtime>,
    /// Whether each job's batch times get a phase of their own ([`batcher::phase_of`]).
    phased: bool,
}

/// A running job.
pub struct JobHandle {
    /// The job's name.
    pub name: String,
    /// The tenant the job runs for.
    pub tenant: String,
    /// One report per computed batch; the channel closes when the run ends.
    pub reports: mpsc::UnboundedReceiver<BatchReport>,
    /// Batches its recovery went on without ([`RecoveryOptions::accept_data_loss`]).
    pub lost: Vec<Loss>,
    stop: CancellationToken,
    job: Arc<Job>,
    task: JoinHandle<Result<RunSummary>>,
}

impl JobHandle {
    /// Asks the job to stop after the batch in flight (see [`RunOptions::stop`]); if it
    /// has not ended [`STOP_GRACE`] later, it is stopped by force ([`JobHandle::force_stop`]).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops the job at once: its guest calls, running or queued, are cancelled and the
    /// batch in flight is abandoned, to be re-run from the write-ahead log at the next
    /// start (a job without a checkpoint directory loses it). The run ends with
    /// [`StopReason::Forced`](crate::batcher::StopReason::Forced).
    pub fn force_stop(&self) {
        self.job.force_stop();
        self.stop.cancel();
    }

    /// Waits for the job to end; an error is the job's failure.
    pub async fn finished(self) -> Result<RunSummary> {
        self.task.await?
    }
}

impl Host {
    /// A host with its own WASM runtime.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        Ok(Self {
            runtime: Runtime::new(config)?,
            phased: false,
        })
    }

    /// Gives the batch times of each job started from now on a phase of its own within
    /// its interval ([`batcher::phase_of`]), for a host that runs several jobs: their
    /// batches then fall due spread over the interval rather than all at once. Without it
    /// batch times are Spark's, multiples of the interval.
    pub fn with_batch_phases(mut self) -> Self {
        self.phased = true;
        self
    }

    /// The WASM runtime the jobs share.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Loads, checks and builds the job of the manifest at `path`.
    pub fn load(&self, path: &Path) -> Result<Job> {
        let config = manifest::load(path, &self.runtime)?;
        Job::build(config, &self.runtime)
    }

    /// Starts `job`: its receivers and its batch loop, on the current tokio runtime.
    /// A job with a checkpoint directory first recovers from it, as `recovery` allows.
    pub fn start(
        &self,
        job: Job,
        max_batches: Option<u64>,
        recovery: &RecoveryOptions,
    ) -> Result<JobHandle> {
        let name = job.config().name.clone();
        let mut lock = None;
        let checkpointing = match &job.config().checkpoint {
            Some(config) => {
                lock = Some(DirLock::acquire(&config.dir).with_context(|| {
                    Failing::new(
                        FailureKind::Checkpoint,
                        format!("job `{name}` cannot use {}", config.dir.display()),
                    )
                })?);
                let (checkpointer, recovery) = Checkpointer::open(config, &job, recovery)
                    .with_context(|| {
                        Failing::new(
                            FailureKind::Checkpoint,
                            format!("job `{name}` cannot recover from {}", config.dir.display()),
                        )
                    })?;
                log_recovery(&name, job.tenant(), &recovery);
                Some(Checkpointing {
                    checkpointer: Arc::new(checkpointer),
                    recovery,
                })
            }
            None => None,
        };
        let lost = checkpointing
            .as_ref()
            .map_or_else(Vec::new, |checkpointing| {
                checkpointing.recovery.lost.clone()
            });
        let wal = checkpointing
            .as_ref()
            .map(|checkpointing| checkpointing.checkpointer.wal());
        let files = checkpointing
            .as_ref()
            .map_or_else(Default::default, |checkpointing| {
                checkpointing.recovery.files.clone()
            });
        // The tenant's directory its sources read files beneath (sinks open their own).
        let opened = JobFiles::of(job.config()).with_context(|| {
            Failing::new(
                FailureKind::Source,
                format!("job `{}` cannot open its tenant's files", job.config().name),
            )
        })?;
        let receivers = Receivers::start_recovered(
            &job.config().sources,
            wal,
            &files,
            Some(Arc::new(job.another_held_count())),
            &opened,
        )?;
        let stop = CancellationToken::new();
        let options = RunOptions {
            max_batches,
            stop: stop.clone(),
            phase: if self.phased {
                batcher::phase_of(&name, job.config().batch_interval)
            } else {
                Duration::ZERO
            },
        };
        let (sender, reports) = mpsc::unbounded_channel();
        let job = Arc::new(job);
        let tenant = job.tenant().to_owned();
        let run = batcher::run(
            job.clone(),
            receivers,
            checkpointing,
            options,
            move |report| {
                let _ = sender.send(report.clone());
            },
        );
        let task = tokio::spawn({
            let (job, stop) = (job.clone(), stop.clone());
            async move {
                let mut run = std::pin::pin!(run);
                let summary = tokio::select! {
                    summary = &mut run => summary,
                    () = grace_over(&stop) => {
                        if !job.is_force_stopped() {
                            tracing::warn!(
                                job = job.config().name,
                                tenant = job.tenant(),
                                "the batch in flight did not finish within {} s of the stop: \
                                 stopping by force",
                                STOP_GRACE.as_secs()
                            );
                            job.force_stop();
                        }
                        run.await
                    }
                };
                // The checkpoint directory is this run's until the run has ended.
                drop(lock);
                summary
            }
        });
        Ok(JobHandle {
            name,
            tenant,
            reports,
            lost,
            stop,
            job,
            task,
        })
    }
}

/// Refuses jobs that would run side by side in one host under one name, or on one
/// checkpoint directory (whose log and state only one run may own). Each job is given as
/// `(its manifest, its job)`.
pub fn check_apart(jobs: &[(&Path, &Job)]) -> Result<()> {
    let places: Vec<(&Path, &str, Option<PathBuf>)> = jobs
        .iter()
        .map(|(manifest, job)| {
            let dir = job
                .config()
                .checkpoint
                .as_ref()
                .map(|config| place(&config.dir));
            (*manifest, job.config().name.as_str(), dir)
        })
        .collect();
    check_places(&places)
}

/// [`check_apart`] on `(manifest, job name, checkpoint directory)`.
fn check_places(jobs: &[(&Path, &str, Option<PathBuf>)]) -> Result<()> {
    for (index, (manifest, name, dir)) in jobs.iter().enumerate() {
        for (other_manifest, other_name, other_dir) in &jobs[..index] {
            if name == other_name {
                bail!(
                    "{} and {} both name their job `{name}`: jobs that run together need \
                     names of their own (the logs tell them apart by name)",
                    other_manifest.display(),
                    manifest.display()
                );
            }
            if let (Some(dir), Some(other_dir)) = (dir, other_dir)
                && dir == other_dir
            {
                bail!(
                    "jobs `{other_name}` ({}) and `{name}` ({}) both use checkpoint directory \
                     {}: give each job its own `[checkpoint] dir`",
                    other_manifest.display(),
                    manifest.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

/// Where `dir` is, for comparing: resolved through symbolic links once it exists.
fn place(dir: &Path) -> PathBuf {
    dir.canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_owned())
}

/// Completes [`STOP_GRACE`] after `stop` is cancelled.
async fn grace_over(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(STOP_GRACE).await;
}

fn log_recovery(job: &str, tenant: &str, recovery: &crate::checkpoint::Recovery) {
    if let Some(instance) = recovery.made_instance {
        tracing::info!(
            job,
            tenant,
            %instance,
            "first start in this checkpoint directory"
        );
    }
    for note in &recovery.notes {
        tracing::warn!(job, tenant, "{note}");
    }
    for loss in &recovery.lost {
        tracing::error!(job, tenant, "data lost (--accept-data-loss): {loss}");
    }
    if let Some((number, time_ms)) = recovery.restored {
        tracing::info!(
            job,
            tenant,
            batch = number,
            time_ms,
            restore_ms = recovery.restore_time.as_millis() as u64,
            "restored the state checkpoint"
        );
    }
    if !recovery.replay.is_empty() {
        tracing::info!(
            job,
            tenant,
            batches = recovery.replay.len(),
            "re-running the batches cut before the restart"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_on_one_checkpoint_directory_are_refused_naming_both() {
        let dir = |path: &str| Some(PathBuf::from(path));
        let (a, b) = (Path::new("a.toml"), Path::new("b.toml"));
        check_places(&[(a, "one", dir("/c/one")), (b, "two", dir("/c/two"))]).unwrap();
        check_places(&[(a, "one", None), (b, "two", None)]).unwrap();
        let error = check_places(&[(a, "one", dir("/c/x")), (b, "two", dir("/c/x"))])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "jobs `one` (a.toml) and `two` (b.toml) both use checkpoint directory /c/x"
            ),
            "{error}"
        );
        let error = check_places(&[(a, "one", None), (b, "one", None)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a.toml and b.toml both name their job `one`"),
            "{error}"
        );
    }

    #[test]
    fn a_directory_is_the_same_place_by_any_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("x")).unwrap();
        assert_eq!(
            place(&root.path().join("x")),
            place(&root.path().join("x/../x/."))
        );
    }
}
