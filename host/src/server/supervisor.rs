//! The supervisor: runs each admitted job on the host, keeps its state and last batch
//! reports for the API, and restarts a failed job after a growing delay until it fails
//! too often (see [`RestartPolicy`]); then it stays failed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batcher::{BatchReport, StopReason};
use crate::checkpoint::RecoveryOptions;
use crate::host::Host;
use crate::job::Job;
use crate::manifest::JobConfig;
use crate::metrics::{self, Failure, FailureReason, JobMetrics, Jobs};

use super::config::RestartPolicy;
use super::registry::{Desired, FailureRow, Registry};

/// Batch reports kept per job.
pub const KEPT_REPORTS: usize = 100;

/// A job's tenant and name.
pub type JobKey = (String, String);

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Its components are being instantiated and its checkpoint recovered.
    Starting,
    /// Computing batches.
    Running,
    /// Failed; waiting to be started again.
    Restarting,
    /// Stopped by its tenant, or by the server stopping.
    Stopped,
    /// Its bounded sources were drained.
    Finished,
    /// Failed more often than the restart policy allows.
    Failed,
}

/// One batch, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportView {
    /// The batch number.
    pub number: u64,
    /// The batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// Records the sources brought.
    pub records_in: usize,
    /// Records delivered to sinks.
    pub records_out: usize,
    /// Time spent computing it, in milliseconds.
    pub processing_ms: u64,
    /// How long it waited after its time, in milliseconds.
    pub scheduling_delay_ms: u64,
    /// Whether it was re-run from the log after a restart.
    pub replayed: bool,
}

impl From<&BatchReport> for ReportView {
    fn from(report: &BatchReport) -> Self {
        Self {
            number: report.number,
            time_ms: report.time_ms,
            records_in: report.stats.records_in,
            records_out: report.stats.records_out,
            processing_ms: report.stats.processing.as_millis() as u64,
            scheduling_delay_ms: report.scheduling_delay.as_millis() as u64,
            replayed: report.replayed,
        }
    }
}

/// A job's status, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// Where it is.
    pub state: JobState,
    /// The last failure, if any.
    pub failure: Option<String>,
    /// Restarts after failures since it was submitted or started.
    pub restarts: u32,
    /// Its last batches, oldest first.
    pub reports: VecDeque<ReportView>,
}

/// One supervised job.
struct Supervised {
    status: Mutex<JobStatus>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Runs the server's jobs.
pub struct Supervisor {
    host: Arc<Host>,
    registry: Arc<Registry>,
    policy: RestartPolicy,
    jobs: Mutex<HashMap<JobKey, Arc<Supervised>>>,
    metrics: Arc<Jobs>,
}

impl Supervisor {
    /// A supervisor running jobs on `host`, keeping their desired state in `registry`.
    pub fn new(host: Arc<Host>, registry: Arc<Registry>, policy: RestartPolicy) -> Self {
        Self {
            host,
            registry,
            policy,
            jobs: Mutex::new(HashMap::new()),
            metrics: Arc::default(),
        }
    }

    /// The metrics of every job the server knows, of every tenant: running or not.
    pub fn metrics(&self) -> &Arc<Jobs> {
        &self.metrics
    }

    /// Starts supervising `config` as the job `key` (stopping an earlier run of it first,
    /// after its batch in flight). The receiver learns whether its first start succeeded
    /// (instances made, checkpoint recovered), or why not.
    pub async fn start(
        self: &Arc<Self>,
        key: JobKey,
        config: JobConfig,
        recovery: RecoveryOptions,
    ) -> oneshot::Receiver<Result<(), String>> {
        self.stop(&key).await;
        self.metrics
            .find_or_add(&key.0, &key.1, || {
                JobMetrics::of_config(&config, metrics::JobState::Starting)
                    .with_failure(self.recorded_failure(&key))
            })
            .set_state(metrics::JobState::Starting);
        let (started, first_start) = oneshot::channel();
        let supervised = Arc::new(Supervised {
            status: Mutex::new(JobStatus {
                state: JobState::Starting,
                failure: None,
                restarts: 0,
                reports: VecDeque::new(),
            }),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(self.clone().supervise(
            key.clone(),
            config,
            recovery,
            supervised.clone(),
            started,
        ));
        *supervised.task.lock().expect("job poisoned") = Some(task);
        self.jobs
            .lock()
            .expect("jobs poisoned")
            .insert(key, supervised);
        first_start
    }

    /// Starts `config` as the job `key` as [`Supervisor::start`] does, but when its first
    /// start fails it is stopped rather than restarted, and the error returned.
    pub async fn start_checked(
        self: &Arc<Self>,
        key: JobKey,
        config: JobConfig,
        recovery: RecoveryOptions,
    ) -> Result<(), String> {
        let first_start = self.start(key.clone(), config, recovery).await;
        let outcome = first_start
            .await
            .unwrap_or_else(|_| Err("the job ended before it started".into()));
        if outcome.is_err() {
            self.stop(&key).await;
        }
        outcome
    }

    /// Records a job that is not running (stopped or failed before this start), with its
    /// `manifest` as registered and its last failure as the registry kept it.
    pub fn record(&self, key: JobKey, manifest: &str, state: JobState, failure: Option<String>) {
        let shown = match state {
            JobState::Failed => metrics::JobState::Failed,
            _ => metrics::JobState::Stopped,
        };
        self.metrics.add(
            resting_metrics(&key, manifest)
                .in_state(shown)
                .with_failure(self.recorded_failure(&key)),
        );
        let supervised = Arc::new(Supervised {
            status: Mutex::new(JobStatus {
                state,
                failure,
                restarts: 0,
                reports: VecDeque::new(),
            }),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        self.jobs
            .lock()
            .expect("jobs poisoned")
            .insert(key, supervised);
    }

    /// Notes a failure of job `key` for `reason`: in its metrics, and in the registry, so
    /// that the server's next start shows it too.
    pub fn note_failure(&self, key: &JobKey, reason: FailureReason, text: String) {
        let Some(metrics) = self.metrics.find(Some(&key.0), &key.1) else {
            return;
        };
        let failure = metrics.failed(reason, text);
        let row = FailureRow {
            reason: reason.as_str().to_owned(),
            at_ms: (failure.at_seconds * 1e3).round() as i64,
            text: failure.text,
        };
        if let Err(error) = self.registry.set_last_failure(&key.0, &key.1, &row) {
            let (tenant, job) = (&key.0, &key.1);
            tracing::error!(tenant, job, "cannot record the failure: {error:#}");
        }
    }

    /// Job `key`'s last failure as the registry kept it.
    fn recorded_failure(&self, key: &JobKey) -> Option<Failure> {
        match self.registry.last_failure(&key.0, &key.1) {
            Ok(row) => row.map(|row| Failure {
                reason: FailureReason::parse(&row.reason).unwrap_or(FailureReason::Other),
                at_seconds: row.at_ms as f64 / 1e3,
                text: row.text,
            }),
            Err(error) => {
                let (tenant, job) = (&key.0, &key.1);
                tracing::error!(tenant, job, "cannot read the last failure: {error:#}");
                None
            }
        }
    }

    /// The status of job `key`.
    pub fn status(&self, key: &JobKey) -> Option<JobStatus> {
        let supervised = self.jobs.lock().expect("jobs poisoned").get(key)?.clone();
        let status = supervised.status.lock().expect("job poisoned").clone();
        Some(status)
    }

    /// Stops job `key` after its batch in flight, and waits for it to end.
    pub async fn stop(&self, key: &JobKey) {
        let supervised = self.jobs.lock().expect("jobs poisoned").get(key).cloned();
        if let Some(supervised) = supervised {
            stop_and_wait(&supervised).await;
        }
    }

    /// Stops job `key` and forgets it.
    pub async fn remove(&self, key: &JobKey) {
        self.stop(key).await;
        self.jobs.lock().expect("jobs poisoned").remove(key);
        self.metrics.remove(&key.0, &key.1);
    }

    /// Stops every job, waiting at most `limit` for them to end; returns the jobs that
    /// had not ended by then.
    pub async fn stop_all(&self, limit: Duration) -> Vec<JobKey> {
        let jobs: Vec<_> = self
            .jobs
            .lock()
            .expect("jobs poisoned")
            .iter()
            .map(|(key, supervised)| (key.clone(), supervised.clone()))
            .collect();
        for (_, supervised) in &jobs {
            supervised.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + limit;
        let mut late = Vec::new();
        for (key, supervised) in jobs {
            let task = supervised.task.lock().expect("job poisoned").take();
            if let Some(task) = task
                && tokio::time::timeout_at(deadline, task).await.is_err()
            {
                late.push(key);
            }
        }
        late
    }

    async fn supervise(
        self: Arc<Self>,
        key: JobKey,
        config: JobConfig,
        recovery: RecoveryOptions,
        supervised: Arc<Supervised>,
        started: oneshot::Sender<Result<(), String>>,
    ) {
        let mut started = Some(started);
        let (tenant, name) = (&key.0, &key.1);
        let mut failures: VecDeque<Instant> = VecDeque::new();
        loop {
            supervised.set_state(JobState::Starting);
            let outcome = self
                .run_once(&config, &recovery, &supervised, &mut started)
                .await;
            let set_shown = |state| {
                if let Some(metrics) = self.metrics.find(Some(tenant), name) {
                    metrics.set_state(state);
                }
            };
            let stopped = supervised.stop.is_cancelled();
            let error = match outcome {
                Ok(StopReason::Drained | StopReason::BatchLimit) if !stopped => {
                    tracing::info!(tenant, job = name, "finished: its sources are drained");
                    set_shown(metrics::JobState::Finished);
                    supervised.set_state(JobState::Finished);
                    return;
                }
                Ok(_) => {
                    set_shown(metrics::JobState::Stopped);
                    supervised.set_state(JobState::Stopped);
                    return;
                }
                // Tenants see their manifest as `job.toml` and their files by their paths,
                // not where the server keeps them.
                Err(error) => {
                    let reason = FailureReason::of(&error);
                    let error = format!("{error:#}").replace(
                        &config.file.display().to_string(),
                        super::admission::MANIFEST_NAME,
                    );
                    let error = match &config.hosted {
                        Some(hosted) => error.replace(&format!("{}/", hosted.files.display()), ""),
                        None => error,
                    };
                    self.note_failure(&key, reason, error.clone());
                    error
                }
            };
            tracing::warn!(tenant, job = name, "failed: {error}");
            if stopped {
                set_shown(metrics::JobState::Stopped);
                supervised.fail(JobState::Stopped, error);
                return;
            }
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|failed| now.duration_since(*failed) > self.policy.interval)
            {
                failures.pop_front();
            }
            let Some(delay) = self.policy.delay(failures.len() as u32) else {
                let error = format!(
                    "{error} (failed {} times within {}: not restarted again; start it once \
                     the cause is fixed)",
                    failures.len(),
                    humantime::format_duration(self.policy.interval)
                );
                tracing::error!(tenant, job = name, "{error}");
                if let Err(registry) =
                    self.registry
                        .set_desired(tenant, name, Desired::Failed, Some(&error))
                {
                    tracing::error!(
                        tenant,
                        job = name,
                        "cannot record the failure: {registry:#}"
                    );
                }
                supervised.fail(JobState::Failed, error);
                return;
            };
            supervised.fail(JobState::Restarting, error);
            tracing::info!(
                tenant,
                job = name,
                delay_ms = delay.as_millis() as u64,
                "restarting after a delay"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = supervised.stop.cancelled() => {
                    set_shown(metrics::JobState::Stopped);
                    supervised.set_state(JobState::Stopped);
                    return;
                }
            }
            supervised.status.lock().expect("job poisoned").restarts += 1;
        }
    }

    /// Builds and runs the job until it ends or is stopped.
    async fn run_once(
        &self,
        config: &JobConfig,
        recovery: &RecoveryOptions,
        supervised: &Supervised,
        started: &mut Option<oneshot::Sender<Result<(), String>>>,
    ) -> anyhow::Result<StopReason> {
        let host = self.host.clone();
        let (tenant, name) = (
            config.tenant.clone().unwrap_or_default(),
            config.name.clone(),
        );
        let (config, recovery) = (config.clone(), recovery.clone());
        let jobs = self.metrics.clone();
        // Instantiating components and recovering state block.
        let handle = tokio::task::spawn_blocking(move || {
            let job = Job::build(config, host.runtime())?;
            let metrics = jobs.add(JobMetrics::new(&job));
            Ok((host.start(job, None, &recovery)?, metrics))
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|handle| handle);
        if let Some(started) = started.take() {
            let _ = started.send(
                handle
                    .as_ref()
                    .map(|_| ())
                    .map_err(|error| format!("{error:#}")),
            );
        }
        let (mut handle, metrics) = handle?;
        supervised.set_state(JobState::Running);
        tracing::info!(tenant, job = name, "running");
        let mut stopping = false;
        loop {
            tokio::select! {
                report = handle.reports.recv() => match report {
                    Some(report) => {
                        metrics.record(&report);
                        supervised.report(&report);
                    }
                    None => break,
                },
                () = supervised.stop.cancelled(), if !stopping => {
                    stopping = true;
                    handle.stop();
                }
            }
        }
        Ok(handle.finished().await?.reason)
    }
}

/// The metrics of job `key`, which is not running, from its `manifest` as registered: the
/// batch interval and sources it names (nothing in it is resolved or checked).
fn resting_metrics(key: &JobKey, manifest: &str) -> JobMetrics {
    let table: toml::Table = manifest.parse().unwrap_or_default();
    let interval = table
        .get("batch_interval")
        .and_then(toml::Value::as_str)
        .and_then(|interval| humantime::parse_duration(interval).ok())
        .unwrap_or_default();
    let sources = table
        .get("sources")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|source| Some(source.get("name")?.as_str()?.to_owned()));
    JobMetrics::named(&key.0, &key.1, interval, sources, []).with_manifest(manifest)
}

async fn stop_and_wait(supervised: &Supervised) {
    supervised.stop.cancel();
    let task = supervised.task.lock().expect("job poisoned").take();
    if let Some(task) = task {
        let _ = task.await;
    }
}

impl Supervised {
    fn set_state(&self, state: JobState) {
        self.status.lock().expect("job poisoned").state = state;
    }

    fn fail(&self, state: JobState, error: String) {
        let mut status = self.status.lock().expect("job poisoned");
        status.state = state;
        status.failure = Some(error);
    }

    fn report(&self, report: &BatchReport) {
        let mut status = self.status.lock().expect("job poisoned");
        if status.reports.len() == KEPT_REPORTS {
            status.reports.pop_front();
        }
        status.reports.push_back(ReportView::from(report));
    }
}
