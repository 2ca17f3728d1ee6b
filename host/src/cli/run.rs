//! `sluice run`.
//!
//! Stopping follows what services are asked by people and supervisors alike: the first
//! Ctrl-C, SIGTERM (systemd, Kubernetes) or SIGHUP (a closed terminal) finishes the batch
//! in flight and ends the run; the second ends the process at once. Nothing is lost by
//! that: the write-ahead log holds every record received, and the abandoned batch is
//! re-run at the next start.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use sluice::batcher::StopReason;
use sluice::checkpoint::RecoveryOptions;
use sluice::host::Host;
use sluice::runtime::RuntimeConfig;
use sluice::tenancy::HostConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::status::Status;
use super::stderr;
use super::{DATA_LOST, LogFormat};

pub fn run(
    manifest: &Path,
    batches: Option<u64>,
    host_config: Option<&Path>,
    recovery: &RecoveryOptions,
    log: LogFormat,
) -> Result<ExitCode> {
    let tokio = tokio::runtime::Runtime::new()?;
    let outcome = tokio.block_on(async {
        // Listen before loading: a stop asked for while components compile must not kill
        // the process outright.
        let mut signals = StopSignals::listen()?;
        let runtime = match host_config {
            Some(path) => RuntimeConfig::with_host(HostConfig::load(path)?),
            None => RuntimeConfig::default(),
        };
        let host = Host::new(runtime)?;
        let job = host.load(manifest)?;
        let name = job.config().name.clone();
        let tenant = job.tenant().to_owned();
        let progress = job.progress().clone();
        let mut handle = host.start(job, batches, recovery)?;
        let lost = std::mem::take(&mut handle.lost);
        let mut status = Status::new(log);
        status.watch(&name, progress);
        tracing::info!(
            job = name,
            tenant,
            "started; Ctrl-C stops after the batch in flight, a second Ctrl-C at once"
        );
        let mut stopping = false;
        loop {
            tokio::select! {
                report = handle.reports.recv() => match report {
                    Some(report) => status.batch(&report),
                    None => break,
                },
                signal = signals.next() => {
                    if stopping {
                        status.message(&format!(
                            "{}: stopped at once; the batch in flight is re-run at the next start",
                            signal.name
                        ));
                        std::process::exit(128 + signal.number);
                    }
                    stopping = true;
                    status.message(&format!(
                        "{}: stopping after the batch in flight (again to stop at once)",
                        signal.name
                    ));
                    handle.stop();
                }
                () = stderr::lost(), if !stopping => {
                    stopping = true;
                    handle.stop();
                }
            }
        }
        status.finish();
        let summary = handle.finished().await?;
        if let Some(written) = summary.checkpoint {
            status.message(&format!(
                "state checkpoint after batch {} on stopping: {} bytes in {} ms",
                written.number,
                written.bytes,
                written.took.as_millis()
            ));
        }
        let why = match summary.reason {
            StopReason::Drained => "its sources are drained",
            StopReason::BatchLimit => "the batch limit was reached",
            StopReason::Stopped => "it was stopped",
        };
        tracing::info!(
            job = name,
            tenant,
            batches = summary.batches,
            replayed = summary.replayed,
            data_lost = !lost.is_empty(),
            "finished: {why}{}",
            if lost.is_empty() {
                ""
            } else {
                "; DATA WAS LOST at recovery (--accept-data-loss)"
            }
        );
        if stderr::is_lost() {
            // Nobody can read an error message now; the exit code is all that is left.
            return Ok(ExitCode::FAILURE);
        }
        if !lost.is_empty() {
            return Ok(ExitCode::from(DATA_LOST));
        }
        Ok(ExitCode::SUCCESS)
    });
    // A receiver may be blocked reading stdin on a thread of its own: do not wait for it.
    tokio.shutdown_background();
    outcome
}

/// A signal that asks the run to stop.
pub(super) struct StopSignal {
    pub(super) name: &'static str,
    number: i32,
}

/// The signals that stop a run: SIGINT (Ctrl-C), SIGTERM and SIGHUP.
pub(super) struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    pub(super) fn listen() -> Result<Self> {
        let listen = |kind: SignalKind| {
            signal(kind)
                .with_context(|| format!("cannot listen for signal {}", kind.as_raw_value()))
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    pub(super) async fn next(&mut self) -> StopSignal {
        let (name, kind) = tokio::select! {
            _ = self.interrupt.recv() => ("Ctrl-C (SIGINT)", SignalKind::interrupt()),
            _ = self.terminate.recv() => ("SIGTERM", SignalKind::terminate()),
            _ = self.hangup.recv() => ("SIGHUP", SignalKind::hangup()),
        };
        StopSignal {
            name,
            number: kind.as_raw_value(),
        }
    }
}
