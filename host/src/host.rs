//! A host: one process running any number of jobs side by side, sharing the WASM
//! runtime (engine, compiled components) but nothing else: each job has its own UDF
//! instances, limits, receivers and sinks, and a failing job stops only itself.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batcher::{self, BatchReport, Checkpointing, RunOptions, RunSummary};
use crate::checkpoint::{Checkpointer, DirLock, Loss, RecoveryOptions};
use crate::job::Job;
use crate::manifest;
use crate::receivers::Receivers;
use crate::runtime::{Runtime, RuntimeConfig};

/// Runs jobs.
pub struct Host {
    runtime: Arc<Runtime>,
}

/// A running job.
pub struct JobHandle {
    /// The job's name.
    pub name: String,
    /// One report per computed batch.
    pub reports: mpsc::UnboundedReceiver<BatchReport>,
    /// Batches its recovery went on without ([`RecoveryOptions::accept_data_loss`]).
    pub lost: Vec<Loss>,
    stop: CancellationToken,
    task: JoinHandle<Result<RunSummary>>,
}

impl JobHandle {
    /// Asks the job to stop after the batch in flight (see [`RunOptions::stop`]).
    pub fn stop(&self) {
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
        })
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
                    format!("job `{name}` cannot use {}", config.dir.display())
                })?);
                let (checkpointer, recovery) = Checkpointer::open(config, &job, recovery)
                    .with_context(|| {
                        format!("job `{name}` cannot recover from {}", config.dir.display())
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
        let receivers = Receivers::start_recovered(&job.config().sources, wal, &files)?;
        let stop = CancellationToken::new();
        let options = RunOptions {
            max_batches,
            stop: stop.clone(),
        };
        let (sender, reports) = mpsc::unbounded_channel();
        let run = batcher::run(
            Arc::new(job),
            receivers,
            checkpointing,
            options,
            move |report| {
                let _ = sender.send(report.clone());
            },
        );
        let task = tokio::spawn(async move {
            let summary = run.await;
            // The checkpoint directory is this run's until the run has ended.
            drop(lock);
            summary
        });
        Ok(JobHandle {
            name,
            reports,
            lost,
            stop,
            task,
        })
    }
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
