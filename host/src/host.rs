//! A host: one process running any number of jobs side by side, sharing the WASM
//! runtime (engine, compiled components) but nothing else: each job has its own UDF
//! instances, limits, receivers and sinks, and a failing job stops only itself.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batcher::{self, BatchReport, RunOptions, RunSummary};
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
    pub fn start(&self, job: Job, max_batches: Option<u64>) -> Result<JobHandle> {
        let name = job.config().name.clone();
        let receivers = Receivers::start(&job.config().sources)?;
        let stop = CancellationToken::new();
        let options = RunOptions {
            max_batches,
            stop: stop.clone(),
        };
        let (sender, reports) = mpsc::unbounded_channel();
        let task = tokio::spawn(batcher::run(
            Arc::new(job),
            receivers,
            options,
            move |report| {
                let _ = sender.send(*report);
            },
        ));
        Ok(JobHandle {
            name,
            reports,
            stop,
            task,
        })
    }
}
