//! `sluice run`: one or more jobs in one process, on one host (one WASM runtime and guest
//! scheduler), each job with its own checkpoint directory.
//!
//! Stopping follows what services are asked by people and supervisors alike: the first
//! Ctrl-C, SIGTERM (systemd, Kubernetes) or SIGHUP (a closed terminal) asks every job to
//! finish its batch in flight and end (a job whose batch has not finished 2 s later is
//! stopped by force); the second stops every job by force at once and ends the process.
//! Nothing is lost by that: the write-ahead log holds every record received, and an
//! abandoned batch is re-run at the next start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sluice::batcher::{BatchReport, StopReason};
use sluice::checkpoint::RecoveryOptions;
use sluice::host::{self, Host, JobHandle};
use sluice::metrics::{JobMetrics, Jobs};
use sluice::runtime::RuntimeConfig;
use sluice::tenancy::HostConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::status::Status;
use super::stderr;
use super::{DATA_LOST, LogFormat};

/// How long the jobs stopped by force on a second signal may take to end before the
/// process exits without them.
const FORCED_EXIT_WAIT: Duration = Duration::from_secs(1);

/// `--ui`: the web UI and Prometheus metrics of the run's jobs.
#[derive(clap::Args, Debug, Clone)]
pub struct UiOptions {
    /// Serve the web UI (at /) and Prometheus metrics (at /metrics) of the jobs on this
    /// address, e.g. 127.0.0.1:4040 (port 0: any free port, logged).
    #[arg(long, value_name = "ADDRESS")]
    ui: Option<SocketAddr>,
    /// Keep serving the UI after the jobs end (a run bounded by --batches, or drained),
    /// until SIGTERM or Ctrl-C: for a last scrape.
    #[arg(long, requires = "ui")]
    ui_linger: bool,
    /// The token the UI and /metrics ask for (a login cookie, or `Authorization: Bearer`);
    /// needed to serve on an address other than loopback.
    #[arg(
        long,
        env = "SLUICE_UI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        requires = "ui"
    )]
    ui_token: Option<String>,
}

impl UiOptions {
    /// Starts serving the UI of `jobs`, if asked to, and says where.
    async fn serve(&self, jobs: &Arc<Jobs>) -> Result<Option<SocketAddr>> {
        let Some(address) = self.ui else {
            return Ok(None);
        };
        sluice::ui::check_address(address, self.ui_token.is_some())?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve the UI on {address} (--ui)"))?;
        let address = listener.local_addr()?;
        let router = sluice::ui::router(jobs.clone(), sluice::ui::TokenGate(self.ui_token.clone()));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!("the UI server stopped: {error}");
            }
        });
        Ok(Some(address))
    }
}

pub fn run(
    manifests: &[PathBuf],
    batches: Option<u64>,
    host_config: Option<&Path>,
    recovery: &RecoveryOptions,
    log: LogFormat,
    ui: &UiOptions,
) -> Result<ExitCode> {
    let tokio = tokio::runtime::Runtime::new()?;
    let outcome = tokio.block_on(async {
        // Listen before loading: a stop asked for while components compile must not kill
        // the process outright.
        let mut signals = StopSignals::listen()?;
        let metrics = Arc::new(Jobs::default());
        let served = ui.serve(&metrics).await?;
        if let Some(address) = served {
            tracing::info!(
                address = %address,
                "web UI at http://{address}/, Prometheus metrics at http://{address}/metrics"
            );
        }
        let runtime = match host_config {
            Some(path) => RuntimeConfig::with_host(HostConfig::load(path)?),
            None => RuntimeConfig::default(),
        };
        let host = Host::new(runtime)?;
        // One job keeps Spark's batch times; several spread theirs over the interval.
        let host = if manifests.len() > 1 {
            host.with_batch_phases()
        } else {
            host
        };
        let mut jobs = Vec::with_capacity(manifests.len());
        for manifest in manifests {
            let job = host
                .load(manifest)
                .with_context(|| format!("cannot load {}", manifest.display()))?;
            jobs.push(job);
        }
        let named: Vec<_> = manifests.iter().map(PathBuf::as_path).zip(&jobs).collect();
        host::check_apart(&named)?;
        let mut status = Status::new(log);
        let mut running = Vec::with_capacity(jobs.len());
        for job in jobs {
            let progress = job.progress().clone();
            let job_metrics = metrics.add(JobMetrics::new(&job));
            let handle = match host.start(job, batches, recovery) {
                Ok(handle) => handle,
                Err(error) => {
                    // The jobs started before it end as on Ctrl-C, and the run fails.
                    handles(&running).for_each(JobHandle::stop);
                    let mut ending = Ending::default();
                    while let Some((index, report)) = next_report(&mut running).await {
                        match report {
                            Some(report) => running[index].batch(&report, &mut status),
                            None => running[index].finish(&mut status, &mut ending).await,
                        }
                    }
                    job_metrics.ended(Some(&error));
                    return Err(error);
                }
            };
            status.watch(&handle.name, progress);
            tracing::info!(
                job = handle.name,
                tenant = handle.tenant,
                "started; Ctrl-C stops after the batch in flight, a second Ctrl-C at once"
            );
            running.push(Running::new(handle, job_metrics));
        }
        let mut ending = Ending::default();
        let mut stopping = false;
        let mut forced: Option<(StopSignal, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                next = next_report(&mut running) => match next {
                    Some((index, Some(report))) => running[index].batch(&report, &mut status),
                    Some((index, None)) => running[index].finish(&mut status, &mut ending).await,
                    None => break,
                },
                signal = signals.next(), if forced.is_none() => {
                    if stopping {
                        status.message(&format!(
                            "{}: stopped at once; the batches in flight are re-run at the next start",
                            signal.name
                        ));
                        handles(&running).for_each(JobHandle::force_stop);
                        forced = Some((signal, tokio::time::Instant::now() + FORCED_EXIT_WAIT));
                        continue;
                    }
                    stopping = true;
                    status.message(&format!(
                        "{}: stopping after the batch in flight (again to stop at once)",
                        signal.name
                    ));
                    handles(&running).for_each(JobHandle::stop);
                }
                () = tokio::time::sleep_until(forced.as_ref().map_or_else(
                    tokio::time::Instant::now, |(_, deadline)| *deadline
                )), if forced.is_some() => break,
                () = stderr::lost(), if !stopping => {
                    stopping = true;
                    handles(&running).for_each(JobHandle::stop);
                }
            }
        }
        status.finish();
        for job in &running {
            summarize(&job.metrics);
        }
        if let Some(address) = served.filter(|_| ui.ui_linger && !stopping && forced.is_none()) {
            tracing::info!(
                address = %address,
                "the jobs ended; the web UI and metrics stay up until SIGTERM or Ctrl-C (--ui-linger)"
            );
            signals.next().await;
        }
        if let Some((signal, _)) = forced {
            return Ok(ExitCode::from(128 + signal.number as u8));
        }
        if stderr::is_lost() {
            // Nobody can read an error message now; the exit code is all that is left.
            return Ok(ExitCode::FAILURE);
        }
        Ok(ending.code())
    });
    // A receiver may be blocked reading stdin on a thread of its own, and a job stopped by
    // force on a second signal may not have ended: do not wait for them.
    tokio.shutdown_background();
    outcome
}

/// A job of the run, until it ends (its metrics, after).
struct Running {
    handle: Option<JobHandle>,
    metrics: Arc<JobMetrics>,
}

impl Running {
    fn new(handle: JobHandle, metrics: Arc<JobMetrics>) -> Self {
        Self {
            handle: Some(handle),
            metrics,
        }
    }

    /// Counts and shows a batch the job computed.
    fn batch(&self, report: &BatchReport, status: &mut Status) {
        self.metrics.record(report);
        status.batch(report);
    }

    /// Waits for the job, whose reports have ended, and says how it ended.
    async fn finish(&mut self, status: &mut Status, ending: &mut Ending) {
        let Some(mut handle) = self.handle.take() else {
            return;
        };
        let (name, tenant) = (handle.name.clone(), handle.tenant.clone());
        let lost = std::mem::take(&mut handle.lost);
        let finished = handle.finished().await;
        self.metrics.ended(finished.as_ref().err());
        let summary = match finished {
            Ok(summary) => summary,
            Err(error) => {
                ending.failed = true;
                tracing::error!(job = name, tenant, "failed: {error:#}");
                return;
            }
        };
        if let Some(written) = summary.checkpoint {
            status.message(&format!(
                "state checkpoint after batch {} on stopping: {} bytes in {} ms",
                written.number,
                written.bytes,
                written.took.as_millis()
            ));
        }
        if matches!(summary.reason, StopReason::Stopped | StopReason::Forced) {
            self.metrics.set_state(sluice::metrics::JobState::Stopped);
        }
        let why = match summary.reason {
            StopReason::Drained => "its sources are drained",
            StopReason::BatchLimit => "the batch limit was reached",
            StopReason::Stopped => "it was stopped",
            StopReason::Forced => {
                "it was stopped by force: its batch in flight is re-run at the next start"
            }
        };
        ending.lost |= !lost.is_empty();
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
    }
}

/// Logs what a job did: its batches, records, and the spread of its processing times
/// and scheduling delays.
fn summarize(metrics: &JobMetrics) {
    let summary = metrics.summary();
    let micros = |value: Option<u64>| value.unwrap_or(0);
    tracing::info!(
        job = summary.job,
        tenant = summary.tenant,
        batches = summary.batches,
        records_in = summary.records_in,
        records_out = summary.records_out,
        processing_p50_us = micros(summary.processing_p50_us),
        processing_p99_us = micros(summary.processing_p99_us),
        scheduling_p50_us = micros(summary.scheduling_p50_us),
        scheduling_p99_us = micros(summary.scheduling_p99_us),
        "summary: {}",
        sluice::metrics::describe(&summary)
    );
}

/// How the jobs that ended went, for the exit code.
#[derive(Default)]
struct Ending {
    /// A job failed.
    failed: bool,
    /// A job's recovery went on without batches (`--accept-data-loss`).
    lost: bool,
}

impl Ending {
    /// The worst: a failed job, then lost data.
    fn code(&self) -> ExitCode {
        if self.failed {
            ExitCode::FAILURE
        } else if self.lost {
            ExitCode::from(DATA_LOST)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// The handles of the jobs still running.
fn handles(running: &[Running]) -> impl Iterator<Item = &JobHandle> {
    running.iter().filter_map(|job| job.handle.as_ref())
}

/// The next report of any running job (`None` in it: that job's reports have ended), or
/// `None` once no job runs.
async fn next_report(running: &mut [Running]) -> Option<(usize, Option<BatchReport>)> {
    std::future::poll_fn(|context| {
        let mut any = false;
        for (index, job) in running.iter_mut().enumerate() {
            let Some(handle) = &mut job.handle else {
                continue;
            };
            any = true;
            if let std::task::Poll::Ready(report) = handle.reports.poll_recv(context) {
                return std::task::Poll::Ready(Some((index, report)));
            }
        }
        if any {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(None)
        }
    })
    .await
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
