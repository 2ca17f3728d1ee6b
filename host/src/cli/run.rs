//! `sluice run`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use sluice::batcher::StopReason;
use sluice::checkpoint::RecoveryOptions;
use sluice::host::Host;
use sluice::runtime::RuntimeConfig;

use super::status::Status;
use super::{DATA_LOST, LogFormat};

pub fn run(
    manifest: &Path,
    batches: Option<u64>,
    recovery: &RecoveryOptions,
    log: LogFormat,
) -> Result<ExitCode> {
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(async {
        let host = Host::new(RuntimeConfig::default())?;
        let job = host.load(manifest)?;
        let name = job.config().name.clone();
        let mut handle = host.start(job, batches, recovery)?;
        let lost = std::mem::take(&mut handle.lost);
        let mut status = Status::new(log);
        tracing::info!(
            job = name,
            "started; Ctrl-C stops after the batch in flight"
        );
        let mut interrupted = false;
        loop {
            tokio::select! {
                report = handle.reports.recv() => match report {
                    Some(report) => status.batch(&report),
                    None => break,
                },
                _ = tokio::signal::ctrl_c(), if !interrupted => {
                    interrupted = true;
                    status.message("stopping: finishing the batch in flight");
                    handle.stop();
                }
            }
        }
        status.finish();
        let summary = handle.finished().await?;
        let why = match summary.reason {
            StopReason::Drained => "its sources are drained",
            StopReason::BatchLimit => "the batch limit was reached",
            StopReason::Stopped => "it was stopped",
        };
        tracing::info!(
            job = name,
            batches = summary.batches,
            data_lost = !lost.is_empty(),
            "finished: {why}{}",
            if lost.is_empty() {
                ""
            } else {
                "; DATA WAS LOST at recovery (--accept-data-loss)"
            }
        );
        if !lost.is_empty() {
            return Ok(ExitCode::from(DATA_LOST));
        }
        Ok(ExitCode::SUCCESS)
    })
}
