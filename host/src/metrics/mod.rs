//! What jobs do, for people and for Prometheus: each job's running totals, duration
//! histograms and last batches, fed once per batch from its [`BatchReport`] (and once per
//! UDF call by the [`StepMeter`]s its steps count on), never per record; encoded as
//! OpenMetrics text for `/metrics`, and read by the web UI ([`crate::ui`]).
//!
//! Names follow Prometheus' conventions: base units (seconds, bytes) in the name,
//! `_total` on counters, HELP on every family, and labels that are identifiers only
//! (`tenant`, `job_name`, `step`, `source`, a failure `reason` from a fixed list): never
//! free text or record data. The job's label is `job_name` (as Flink's reporter names
//! it), not `job`, which Prometheus sets on every series to the scrape job's name.
//! Histograms are per job, not per step, and span 100 µs to 60 s.

mod families;
mod meter;
mod ring;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::batcher::BatchReport;
use crate::job::Job;

pub use meter::{StepMeter, StepTotals};
pub use ring::{BatchEntry, BatchRing, RING_BATCHES};

/// The content type of [`Jobs::encode`]'s answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The upper bounds of the duration histograms' buckets, in seconds: 100 µs to 60 s,
/// finely (×3) up to 100 ms where batches and delays mostly fall, then by decades, so
/// that a scrape of 1000 jobs stays under 5 MB (each bucket is a line per job).
const DURATION_BUCKETS: [f64; 10] = [
    0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0, 10.0, 60.0,
];

/// The most bytes of a job's manifest the UI is shown.
const MANIFEST_BYTES: usize = 64 << 10;

/// Why a job last failed: the `reason` label, from this fixed list (the failure's text
/// goes to the UI only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// A UDF trapped, hit a limit or gave a wrong answer.
    Udf,
    /// A tenant quota refused the job something.
    Quota,
    /// A source could not be opened or read.
    Source,
    /// A sink could not write.
    Sink,
    /// A checkpoint or the write-ahead log could not be written or read.
    Checkpoint,
    /// The job's manifest does not resolve (any more), or breaks a rule of the server.
    Manifest,
    /// Anything else.
    Other,
}

impl FailureReason {
    /// Every reason, in label order.
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Udf,
        FailureReason::Quota,
        FailureReason::Source,
        FailureReason::Sink,
        FailureReason::Checkpoint,
        FailureReason::Manifest,
        FailureReason::Other,
    ];

    /// The reason a label value names, if any.
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == label)
    }

    /// The reason as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Udf => "udf",
            FailureReason::Quota => "quota",
            FailureReason::Source => "source",
            FailureReason::Sink => "sink",
            FailureReason::Checkpoint => "checkpoint",
            FailureReason::Manifest => "manifest",
            FailureReason::Other => "other",
        }
    }

    /// The reason of a job's failure `error`, from the typed errors in its chain (never
    /// from its words): a UDF call's or instantiation's failure
    /// ([`CallError`](crate::runtime::CallError), as a [`UdfError`](crate::udf::UdfError)
    /// or bare; a tenant's instance, memory or call output quota stopping it is a
    /// quota's), else the kind a [`Failing`](crate::failure::Failing) in it says.
    pub fn of(error: &anyhow::Error) -> Self {
        use crate::failure::{FailureKind, kind_of};
        use crate::runtime::{CallError, Limit};
        let call = error.chain().find_map(|cause| {
            cause
                .downcast_ref::<crate::udf::UdfError>()
                .map(|udf| &udf.error)
                .or_else(|| cause.downcast_ref::<CallError>())
        });
        match call {
            Some(CallError::Limit {
                limit:
                    Limit::TenantInstances
                    | Limit::TenantMemory
                    | Limit::CallOutputRecords
                    | Limit::CallOutputBytes,
                ..
            }) => FailureReason::Quota,
            Some(_) => FailureReason::Udf,
            None => match kind_of(error) {
                Some(FailureKind::Udf) => FailureReason::Udf,
                Some(FailureKind::Quota) => FailureReason::Quota,
                Some(FailureKind::Source) => FailureReason::Source,
                Some(FailureKind::Sink) => FailureReason::Sink,
                Some(FailureKind::Checkpoint) => FailureReason::Checkpoint,
                Some(FailureKind::Manifest) => FailureReason::Manifest,
                None => FailureReason::Other,
            },
        }
    }
}

/// What a job can count at all, from its manifest: a scrape leaves out the series of
/// what it never can (a thousand jobs' scrape stays under 5 MB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Can {
    /// A source may skip undecodable records (a Kafka source with `on_decode_error =
    /// "skip"`).
    pub skip_records: bool,
    /// An event-time step may drop late rows.
    pub drop_late_rows: bool,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Being built: its components instantiated, its checkpoint recovered.
    Starting,
    /// Computing batches.
    Running,
    /// Ended without failing.
    Finished,
    /// Stopped by its owner (or by the server stopping), or not started at all.
    Stopped,
    /// Ended on a failure.
    Failed,
}

/// A job's last failure.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Why, from the fixed list.
    pub reason: FailureReason,
    /// When, in seconds since the epoch.
    pub at_seconds: f64,
    /// What happened, as the log says it (tenant text: the UI escapes it).
    pub text: String,
}

/// What a job did, fed by its batches.
#[derive(Debug)]
pub struct JobMetrics {
    tenant: String,
    job: String,
    interval: Duration,
    manifest: String,
    udfs: Vec<(String, String)>,
    sources: Vec<(String, AtomicU64)>,
    steps: Vec<(String, Arc<StepMeter>)>,
    /// The steps that keep state, as `steps` names them.
    stateful: Vec<String>,
    /// What the job can count at all: series it never can are left out of a scrape.
    can: Can,
    state: Mutex<JobState>,
    batches: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
    records_skipped: AtomicU64,
    late_rows: AtomicU64,
    queued: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_micros: AtomicU64,
    checkpoint_bytes: AtomicU64,
    wal_bytes: AtomicU64,
    buffered: AtomicU64,
    processing: Histogram,
    scheduling: Histogram,
    failure: Mutex<Option<Failure>>,
    ring: Mutex<BatchRing>,
}

impl JobMetrics {
    /// The metrics of `job`, running, with nothing done yet.
    pub fn new(job: &Job) -> Self {
        let config = job.config();
        let mut metrics = Self::named(
            job.tenant(),
            &config.name,
            config.batch_interval,
            config.sources.iter().map(|source| source.name.clone()),
            job.step_meters()
                .into_iter()
                .map(|(step, meter)| (step.to_owned(), meter.clone())),
        )
        .with_manifest(&config.manifest);
        metrics.can = Can {
            skip_records: config.sources.iter().any(|source| {
                matches!(&source.kind, crate::manifest::SourceKind::Kafka(kafka)
                    if matches!(kafka.on_decode_error, crate::connectors::kafka::OnDecodeError::Skip))
            }),
            drop_late_rows: config.streams.iter().any(|stream| {
                stream
                    .steps
                    .iter()
                    .any(|step| matches!(step, crate::manifest::StepConfig::EventTime(..)))
            }),
        };
        metrics.stateful = job
            .stateful_steps()
            .iter()
            .map(|step| step.id.to_owned())
            .collect();
        metrics.udfs = job
            .udf_digests()
            .into_iter()
            .map(|(label, digest)| (label.to_owned(), digest.to_owned()))
            .collect();
        metrics
    }

    /// The metrics of job `job` of `tenant` (batches every `interval`), with its sources
    /// and its steps' meters, before it has done anything.
    pub fn named(
        tenant: &str,
        job: &str,
        interval: Duration,
        sources: impl IntoIterator<Item = String>,
        steps: impl IntoIterator<Item = (String, Arc<StepMeter>)>,
    ) -> Self {
        Self {
            tenant: tenant.to_owned(),
            job: job.to_owned(),
            interval,
            manifest: String::new(),
            udfs: Vec::new(),
            sources: sources
                .into_iter()
                .map(|source| (source, AtomicU64::new(0)))
                .collect(),
            steps: steps.into_iter().collect(),
            stateful: Vec::new(),
            can: Can::default(),
            state: Mutex::new(JobState::Running),
            batches: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            records_skipped: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            checkpoint_micros: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            processing: Histogram::new(DURATION_BUCKETS),
            scheduling: Histogram::new(DURATION_BUCKETS),
            failure: Mutex::new(None),
            ring: Mutex::default(),
        }
    }

    /// The metrics of a job that is not running (stopped, failed, or not built yet), as
    /// far as its `config` tells: its sources but no steps.
    pub fn of_config(config: &crate::manifest::JobConfig, state: JobState) -> Self {
        Self::named(
            config.tenant.as_deref().unwrap_or_default(),
            &config.name,
            config.batch_interval,
            config.sources.iter().map(|source| source.name.clone()),
            [],
        )
        .with_manifest(&config.manifest)
        .in_state(state)
    }

    /// The same, showing `manifest` (its first 64 KiB).
    pub fn with_manifest(mut self, manifest: &str) -> Self {
        let mut end = manifest.len().min(MANIFEST_BYTES);
        while !manifest.is_char_boundary(end) {
            end -= 1;
        }
        self.manifest = manifest[..end].to_owned();
        self
    }

    /// The same, in `state`.
    pub fn in_state(self, state: JobState) -> Self {
        self.set_state(state);
        self
    }

    /// The same, with `failure` its last failure.
    pub fn with_failure(self, failure: Option<Failure>) -> Self {
        *self.failure.lock().expect("failure poisoned") = failure;
        self
    }

    /// The same, with `can` saying what it can count.
    pub fn with_can(mut self, can: Can) -> Self {
        self.can = can;
        self
    }

    /// The same, with `steps` (named as among its steps) the ones that keep state.
    pub fn with_stateful(mut self, steps: impl IntoIterator<Item = String>) -> Self {
        self.stateful = steps.into_iter().collect();
        self
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The tenant it runs for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Counts one computed batch (the first counts the batches before it too).
    pub fn record(&self, report: &BatchReport) {
        let add = |counter: &AtomicU64, value: u64| {
            counter.fetch_add(value, Ordering::Relaxed);
        };
        let stats = &report.stats;
        // The batches before the first this run computes are those its checkpoint holds
        // (none for a fresh job): counted from there, `sluice_batches_total` goes on over a
        // restart that recovers rather than falling back to zero.
        if self.batches.fetch_add(1, Ordering::Relaxed) == 0 {
            add(&self.batches, report.number.saturating_sub(1));
        }
        add(&self.records_in, stats.records_in as u64);
        add(&self.records_out, stats.records_out as u64);
        add(&self.records_skipped, report.skipped);
        add(&self.late_rows, report.late_rows);
        self.queued.store(report.queued as u64, Ordering::Relaxed);
        self.buffered
            .store(report.buffered_records, Ordering::Relaxed);
        if let Some(bytes) = report.wal_bytes {
            self.wal_bytes.store(bytes, Ordering::Relaxed);
        }
        for ((_, counter), records) in self.sources.iter().zip(&report.source_records) {
            add(counter, *records);
        }
        if let Some(written) = &report.checkpoint {
            add(&self.checkpoints, 1);
            add(&self.checkpoint_micros, written.took.as_micros() as u64);
            add(&self.checkpoint_bytes, written.bytes);
        }
        let processing_us = stats.processing.as_micros() as u64;
        let scheduling_us = report.scheduling_delay.as_micros() as u64;
        self.processing.observe(seconds(processing_us));
        self.scheduling.observe(seconds(scheduling_us));
        self.ring
            .lock()
            .expect("batch ring poisoned")
            .push(BatchEntry {
                number: report.number,
                time_ms: report.time_ms,
                records_in: stats.records_in as u64,
                records_out: stats.records_out as u64,
                scheduling_us,
                processing_us,
                replayed: report.replayed,
            });
    }

    /// The job ended: failed on `failure`, else finished.
    pub fn ended(&self, failure: Option<&anyhow::Error>) {
        match failure {
            Some(error) => {
                self.failed(FailureReason::of(error), format!("{error:#}"));
            }
            None => self.set_state(JobState::Finished),
        }
    }

    /// Notes a failure of the job now (it may be restarted), and returns it.
    pub fn failed(&self, reason: FailureReason, text: String) -> Failure {
        // To the millisecond, as a registry keeps it over a server's restart.
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let at_seconds = at_ms as f64 / 1e3;
        let failure = Failure {
            reason,
            at_seconds,
            text,
        };
        *self.failure.lock().expect("failure poisoned") = Some(failure.clone());
        self.set_state(JobState::Failed);
        failure
    }

    /// Moves the job to `state`.
    pub fn set_state(&self, state: JobState) {
        *self.state.lock().expect("state poisoned") = state;
    }

    /// Where the job is.
    pub fn state(&self) -> JobState {
        *self.state.lock().expect("state poisoned")
    }

    /// The last `count` batches, oldest first.
    pub fn batches(&self, count: usize) -> Vec<BatchEntry> {
        self.ring.lock().expect("batch ring poisoned").last(count)
    }

    /// The job at a glance, for the job list.
    pub fn summary(&self) -> JobSummary {
        let ring = self.ring.lock().expect("batch ring poisoned");
        let last = ring.last(1).first().copied();
        let recent = ring.last(10);
        let interval_ms = self.interval.as_millis() as u64;
        let input_rate = (!recent.is_empty()).then(|| {
            let records: u64 = recent.iter().map(|entry| entry.records_in).sum();
            records as f64 / (recent.len() as f64 * self.interval.as_secs_f64().max(1e-3))
        });
        JobSummary {
            job: self.job.clone(),
            tenant: self.tenant.clone(),
            state: self.state(),
            interval_ms,
            batches: self.batches.load(Ordering::Relaxed),
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            input_rate,
            last_processing_us: last.map(|entry| entry.processing_us),
            last_scheduling_us: last.map(|entry| entry.scheduling_us),
            processing_p50_us: ring.quantile(0.5, |entry| entry.processing_us),
            processing_p99_us: ring.quantile(0.99, |entry| entry.processing_us),
            scheduling_p50_us: ring.quantile(0.5, |entry| entry.scheduling_us),
            scheduling_p99_us: ring.quantile(0.99, |entry| entry.scheduling_us),
            failure: self.failure.lock().expect("failure poisoned").clone(),
        }
    }

    /// The job in full, for its page.
    pub fn detail(&self) -> JobDetail {
        JobDetail {
            summary: self.summary(),
            steps: self
                .steps
                .iter()
                .map(|(step, meter)| StepView {
                    step: step.clone(),
                    totals: meter.totals(),
                })
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(source, records)| SourceView {
                    source: source.clone(),
                    records_in: records.load(Ordering::Relaxed),
                })
                .collect(),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoint_bytes: self.checkpoint_bytes.load(Ordering::Relaxed),
            checkpoint_seconds: seconds(self.checkpoint_micros.load(Ordering::Relaxed)),
            late_rows_dropped: self.late_rows.load(Ordering::Relaxed),
            wal_bytes: self.wal_bytes.load(Ordering::Relaxed),
            buffered_records: self.buffered.load(Ordering::Relaxed),
            udfs: self
                .udfs
                .iter()
                .map(|(label, digest)| UdfView {
                    label: label.clone(),
                    sha256: digest.clone(),
                })
                .collect(),
            manifest: self.manifest.clone(),
        }
    }
}

/// A job at a glance (`GET /v1/overview`).
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Its name.
    pub job: String,
    /// Its tenant.
    pub tenant: String,
    /// Where it is.
    pub state: JobState,
    /// Its batch interval, in milliseconds.
    pub interval_ms: u64,
    /// Batches computed (after a restart that recovered, counted on from the batches its
    /// checkpoint holds).
    pub batches: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Records in per second over its last 10 batches.
    pub input_rate: Option<f64>,
    /// Its last batch's processing time, in microseconds.
    pub last_processing_us: Option<u64>,
    /// Its last batch's scheduling delay, in microseconds.
    pub last_scheduling_us: Option<u64>,
    /// The median processing time over its last batches (at most 1000).
    pub processing_p50_us: Option<u64>,
    /// The 99th percentile of it.
    pub processing_p99_us: Option<u64>,
    /// The median scheduling delay over its last batches.
    pub scheduling_p50_us: Option<u64>,
    /// The 99th percentile of it.
    pub scheduling_p99_us: Option<u64>,
    /// Its last failure.
    pub failure: Option<Failure>,
}

/// A job in full (`GET /v1/jobs/{job}/overview`).
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    /// What the job list shows.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Each step's totals.
    pub steps: Vec<StepView>,
    /// Each source's records.
    pub sources: Vec<SourceView>,
    /// State checkpoints written.
    pub checkpoints: u64,
    /// Their bytes.
    pub checkpoint_bytes: u64,
    /// The time spent writing them.
    pub checkpoint_seconds: f64,
    /// Late rows its event-time steps dropped.
    pub late_rows_dropped: u64,
    /// The bytes its write-ahead log holds on disk (0 without a checkpoint directory).
    pub wal_bytes: u64,
    /// The records its receivers held for the next batch, as its last batch ended.
    pub buffered_records: u64,
    /// Its UDFs and their components' SHA-256.
    pub udfs: Vec<UdfView>,
    /// Its manifest (at most 64 KiB).
    pub manifest: String,
}

/// One step's totals.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// `stream/step number`.
    pub step: String,
    /// What it did.
    #[serde(flatten)]
    pub totals: StepTotals,
}

/// One source's records.
#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    /// Its name.
    pub source: String,
    /// The records it brought.
    pub records_in: u64,
}

/// One UDF and its component's digest.
#[derive(Debug, Clone, Serialize)]
pub struct UdfView {
    /// As the manifest names it.
    pub label: String,
    /// The component's SHA-256.
    pub sha256: String,
}

/// Every job's metrics in one process.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: RwLock<Vec<Arc<JobMetrics>>>,
}

impl Jobs {
    /// Adds a job's metrics. They replace those of an earlier run of the same tenant's
    /// job of that name (a restart or a redeploy on `sluice serve`), keeping its last
    /// failure: that is still the job's last failure.
    pub fn add(&self, metrics: JobMetrics) -> Arc<JobMetrics> {
        let mut jobs = self.jobs.write().expect("jobs poisoned");
        if let Some(earlier) = jobs
            .iter()
            .position(|job| job.tenant == metrics.tenant && job.job == metrics.job)
        {
            let earlier = jobs.remove(earlier);
            *metrics.failure.lock().expect("failure poisoned") =
                earlier.failure.lock().expect("failure poisoned").clone();
        }
        let metrics = Arc::new(metrics);
        jobs.push(metrics.clone());
        metrics
    }

    /// The metrics of `tenant`'s job `name`, added as `make` makes them if it has none.
    pub fn find_or_add(
        &self,
        tenant: &str,
        name: &str,
        make: impl FnOnce() -> JobMetrics,
    ) -> Arc<JobMetrics> {
        let mut jobs = self.jobs.write().expect("jobs poisoned");
        if let Some(metrics) = jobs
            .iter()
            .find(|job| job.tenant == tenant && job.job == name)
        {
            return metrics.clone();
        }
        let metrics = Arc::new(make());
        jobs.push(metrics.clone());
        metrics
    }

    /// Forgets the metrics of `tenant`'s job `name` (a deleted job).
    pub fn remove(&self, tenant: &str, name: &str) {
        self.jobs
            .write()
            .expect("jobs poisoned")
            .retain(|job| !(job.tenant == tenant && job.job == name));
    }

    /// The jobs `tenant` may see (every job for `None`), in the order they were added.
    pub fn visible(&self, tenant: Option<&str>) -> Vec<Arc<JobMetrics>> {
        self.jobs
            .read()
            .expect("jobs poisoned")
            .iter()
            .filter(|job| tenant.is_none_or(|tenant| job.tenant == tenant))
            .cloned()
            .collect()
    }

    /// Job `name` of the jobs `tenant` may see.
    pub fn find(&self, tenant: Option<&str>, name: &str) -> Option<Arc<JobMetrics>> {
        self.visible(tenant).into_iter().find(|job| job.job == name)
    }

    /// The metrics of the jobs `tenant` may see, as OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn encode(&self, tenant: Option<&str>) -> String {
        families::encode(&self.visible(tenant))
    }
}

/// A job's summary in words, as `sluice run` ends with it: `20 batches, 1000 records in,
/// 990 out; processing time p50 1.20 ms, p99 3.40 ms; scheduling delay p50 0.30 ms, p99
/// 1.10 ms` (over the last 1000 batches, if there were more).
pub fn describe(summary: &JobSummary) -> String {
    let ms = |micros: Option<u64>| format!("{:.2} ms", micros.unwrap_or(0) as f64 / 1e3);
    let mut text = format!(
        "{} batches, {} records in, {} out",
        summary.batches, summary.records_in, summary.records_out
    );
    if summary.batches > 0 {
        text += &format!(
            "; processing time p50 {}, p99 {}; scheduling delay p50 {}, p99 {}",
            ms(summary.processing_p50_us),
            ms(summary.processing_p99_us),
            ms(summary.scheduling_p50_us),
            ms(summary.scheduling_p99_us)
        );
        if summary.batches > RING_BATCHES as u64 {
            text += &format!(" (over the last {RING_BATCHES} batches)");
        }
    }
    text
}

/// Microseconds as seconds.
fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::BatchStats;

    fn report(number: u64, processing_us: u64, scheduling_us: u64) -> BatchReport {
        BatchReport {
            job: "wc".into(),
            tenant: "acme".into(),
            number,
            time_ms: number as i64 * 100,
            scheduling_delay: Duration::from_micros(scheduling_us),
            queued: 2,
            stats: BatchStats {
                records_in: 10,
                records_out: 4,
                processing: Duration::from_micros(processing_us),
            },
            replayed: false,
            skipped: 1,
            checkpoint: None,
            source_records: vec![6, 4],
            wal_bytes: Some(4096 + number),
            buffered_records: 17,
            late_rows: 0,
            event_time: None,
        }
    }

    fn job() -> JobMetrics {
        let meter = Arc::new(StepMeter::default());
        meter.call(Duration::from_micros(30), false);
        let state = Arc::new(StepMeter::default());
        state.state(3, 120);
        JobMetrics::named(
            "acme",
            "wc",
            Duration::from_millis(100),
            ["a".to_owned(), "b".to_owned()],
            [
                ("counts/1".to_owned(), meter),
                ("counts/2".to_owned(), state),
            ],
        )
        .with_stateful(["counts/2".to_owned()])
        .with_can(Can {
            skip_records: true,
            drop_late_rows: true,
        })
    }

    #[test]
    fn batches_feed_the_families_once_each() {
        let jobs = Jobs::default();
        let metrics = jobs.add(job());
        for number in 1..=3 {
            metrics.record(&report(number, 250 * number, 40));
        }
        let text = jobs.encode(None);
        for line in [
            "sluice_batches_total{tenant=\"acme\",job_name=\"wc\"} 3",
            "sluice_records_in_total{tenant=\"acme\",job_name=\"wc\"} 30",
            "sluice_records_out_total{tenant=\"acme\",job_name=\"wc\"} 12",
            "sluice_records_skipped_total{tenant=\"acme\",job_name=\"wc\"} 3",
            "sluice_batches_queued{tenant=\"acme\",job_name=\"wc\"} 2",
            "sluice_source_records_in_total{tenant=\"acme\",job_name=\"wc\",source=\"b\"} 12",
            "sluice_udf_calls_total{tenant=\"acme\",job_name=\"wc\",step=\"counts/1\"} 1",
            "sluice_batch_processing_seconds_count{tenant=\"acme\",job_name=\"wc\"} 3",
            // 250 µs in the 300 µs bucket; 500 and 750 µs in the 1 ms one.
            "sluice_batch_processing_seconds_bucket{le=\"0.0003\",tenant=\"acme\",job_name=\"wc\"} 1",
            "sluice_batch_processing_seconds_bucket{le=\"0.001\",tenant=\"acme\",job_name=\"wc\"} 3",
            "sluice_job_up{tenant=\"acme\",job_name=\"wc\"} 1",
            "sluice_wal_bytes{tenant=\"acme\",job_name=\"wc\"} 4099",
            "sluice_receiver_buffered_records{tenant=\"acme\",job_name=\"wc\"} 17",
            "sluice_state_entries{tenant=\"acme\",job_name=\"wc\",step=\"counts/2\"} 3",
            "sluice_state_bytes{tenant=\"acme\",job_name=\"wc\",step=\"counts/2\"} 120",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(
            !text.contains(
                "sluice_state_entries{tenant=\"acme\",job_name=\"wc\",step=\"counts/1\"}"
            ),
            "a step without state has no state series"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(metrics.batches(2)[1].number, 3);
    }

    #[test]
    fn a_job_that_recovered_counts_its_batches_on_from_its_checkpoint() {
        let metrics = job();
        for number in 41..=43 {
            metrics.record(&report(number, 100, 10));
        }
        assert_eq!(metrics.summary().batches, 43);
        assert_eq!(metrics.summary().records_in, 30, "records count this run's");
    }

    #[test]
    fn a_failure_is_labelled_by_its_reason_and_its_text_kept_for_the_ui() {
        let jobs = Jobs::default();
        let metrics = jobs.add(job());
        let error = anyhow::anyhow!("disk full <b>")
            .context(crate::failure::Failing::new(
                crate::failure::FailureKind::Sink,
                "sink `out` could not write",
            ))
            .context("job `wc` failed on the batch of time 100 ms");
        metrics.ended(Some(&error));
        assert_eq!(metrics.state(), JobState::Failed);
        let text = jobs.encode(None);
        assert!(
            text.contains(
                "sluice_job_last_failure_timestamp_seconds{tenant=\"acme\",job_name=\"wc\",reason=\"sink\"}"
            ),
            "{text}"
        );
        assert!(!text.contains("disk full"), "no free text in a label");
        let failure = metrics.summary().failure.unwrap();
        assert!(failure.text.contains("disk full <b>"));
        assert!(text.contains("sluice_job_up{tenant=\"acme\",job_name=\"wc\"} 0"));
    }

    #[test]
    fn a_failure_is_classified_by_its_typed_errors_never_by_its_words() {
        use crate::failure::{Failing, FailureKind};
        use crate::runtime::{CallError, Limit};
        let limit = |limit| CallError::Limit {
            limit,
            message: "checkpoint sink quota".into(),
            record_index: None,
        };
        let udf = |error| crate::udf::UdfError {
            udf: "f#g".into(),
            error,
        };
        let cases = [
            (
                anyhow::Error::new(limit(Limit::TenantInstances)).context("cannot build"),
                FailureReason::Quota,
            ),
            (
                anyhow::Error::new(udf(limit(Limit::CallOutputBytes))),
                FailureReason::Quota,
            ),
            (
                anyhow::Error::new(udf(limit(Limit::Memory))).context("the sink quota"),
                FailureReason::Udf,
            ),
            (
                anyhow::anyhow!("disk full")
                    .context(Failing::new(FailureKind::Checkpoint, "cannot sync"))
                    .context("a quota of a sink"),
                FailureReason::Checkpoint,
            ),
            (
                Failing::quota("over `max_jobs`").context("job `j` failed"),
                FailureReason::Quota,
            ),
            // At a job's build: its components, an initial state's file, a tenant it
            // names that the host does not have.
            (
                anyhow::anyhow!("not a component")
                    .context(Failing::new(FailureKind::Udf, "cannot build job `j`")),
                FailureReason::Udf,
            ),
            (
                crate::failure::context_of_kind(
                    anyhow::anyhow!("no such file").context(Failing::new(
                        FailureKind::Source,
                        "cannot load the initial state",
                    )),
                    FailureKind::Udf,
                    "cannot build job `j`",
                ),
                FailureReason::Source,
            ),
            (
                anyhow::Error::new(Failing::new(FailureKind::Manifest, "no tenant `t`")),
                FailureReason::Manifest,
            ),
            (
                anyhow::anyhow!("sink `out`: quota of the checkpoint write-ahead log"),
                FailureReason::Other,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(FailureReason::of(&error), reason, "{error:#}");
        }
    }

    #[test]
    fn every_reason_reads_back_from_its_label() {
        for reason in FailureReason::ALL {
            assert_eq!(FailureReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(FailureReason::parse("disk full"), None);
    }

    #[test]
    fn a_job_that_is_not_running_keeps_its_state_and_last_failure() {
        let jobs = Jobs::default();
        let failure = Failure {
            reason: FailureReason::Udf,
            at_seconds: 1_700_000_000.5,
            text: "three is not allowed".into(),
        };
        jobs.add(
            JobMetrics::named("acme", "wc", Duration::from_millis(20), [], [])
                .in_state(JobState::Stopped)
                .with_failure(Some(failure)),
        );
        let text = jobs.encode(None);
        assert!(text.contains("sluice_job_up{tenant=\"acme\",job_name=\"wc\"} 0"));
        let at = text
            .lines()
            .find_map(|line| {
                line.strip_prefix(
                    "sluice_job_last_failure_timestamp_seconds{tenant=\"acme\",job_name=\"wc\",reason=\"udf\"} ",
                )
            })
            .unwrap_or_else(|| panic!("no failure series in {text}"));
        assert_eq!(at.parse::<f64>().unwrap(), 1_700_000_000.5);
        // Started again, it runs with its last failure kept; finishing does not fail it.
        let again = jobs.find_or_add("acme", "wc", || unreachable!("it has metrics"));
        again.set_state(JobState::Running);
        let rebuilt = jobs.add(job());
        assert_eq!(rebuilt.state(), JobState::Running);
        rebuilt.ended(None);
        let summary = rebuilt.summary();
        assert_eq!(summary.state, JobState::Finished);
        assert_eq!(summary.failure.unwrap().text, "three is not allowed");
        assert_eq!(jobs.visible(None).len(), 1);
    }

    #[test]
    fn a_tenant_sees_only_its_own_jobs() {
        let jobs = Jobs::default();
        jobs.add(job());
        jobs.add(JobMetrics::named(
            "other",
            "secret",
            Duration::from_secs(1),
            [],
            [],
        ));
        assert!(jobs.encode(Some("acme")).contains("job_name=\"wc\""));
        assert!(!jobs.encode(Some("acme")).contains("secret"));
        assert!(jobs.find(Some("acme"), "secret").is_none());
        assert!(jobs.find(None, "secret").is_some());
        assert_eq!(jobs.visible(Some("nobody")).len(), 0);
    }

    #[test]
    fn the_summary_gives_percentiles_of_the_last_batches() {
        let metrics = job();
        for number in 1..=100 {
            metrics.record(&report(number, number * 1000, number * 10));
        }
        let summary = metrics.summary();
        assert_eq!(summary.processing_p50_us, Some(50_000));
        assert_eq!(summary.processing_p99_us, Some(99_000));
        assert_eq!(summary.scheduling_p99_us, Some(990));
        assert_eq!(
            describe(&summary),
            "100 batches, 1000 records in, 400 out; processing time p50 50.00 ms, p99 \
             99.00 ms; scheduling delay p50 0.50 ms, p99 0.99 ms"
        );
        assert_eq!(summary.input_rate, Some(100.0));
    }
}
