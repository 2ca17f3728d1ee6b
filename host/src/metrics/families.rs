//! The metric families, encoded at each scrape from the jobs' running totals: one
//! descriptor (HELP, TYPE, UNIT) per family, then a sample per job (or per job and step,
//! source or failure reason).

use std::fmt::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::{FailureReason, JobMetrics, JobState, StepTotals, seconds};

/// The metrics of `jobs` as OpenMetrics text.
pub(super) fn encode(jobs: &[Arc<JobMetrics>]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(jobs.to_vec())));
    let mut text = String::with_capacity(1024 + jobs.len() * 4096);
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

#[derive(Debug)]
struct Families(Vec<Arc<JobMetrics>>);

/// A sample's value.
enum Value {
    Counter(u64),
    Seconds(f64),
    Gauge(i64),
}

impl Families {
    /// A family with one sample per job.
    fn per_job(
        &self,
        encoder: &mut DescriptorEncoder,
        descriptor: (&str, &str, Option<Unit>),
        value: impl Fn(&JobMetrics) -> Value,
    ) -> Result<(), Error> {
        self.jobs_where(encoder, descriptor, |_| true, value)
    }

    /// A family with one sample per job that `includes`.
    fn jobs_where(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, unit): (&str, &str, Option<Unit>),
        includes: impl Fn(&JobMetrics) -> bool,
        value: impl Fn(&JobMetrics) -> Value,
    ) -> Result<(), Error> {
        let Some(first) = self.0.first() else {
            return Ok(());
        };
        let kind = metric_type(&value(first));
        let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for job in self.0.iter().filter(|job| includes(job)) {
            let labels = [
                ("tenant", job.tenant.as_str()),
                ("job_name", job.job.as_str()),
            ];
            encode_value(value(job), family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A family with one sample per step of each job.
    fn per_step(
        &self,
        encoder: &mut DescriptorEncoder,
        descriptor: (&str, &str, Option<Unit>),
        value: impl Fn(&StepTotals) -> Value,
    ) -> Result<(), Error> {
        self.steps_where(encoder, descriptor, |_, _| true, value)
    }

    /// A family with one sample per step that keeps state, of each job.
    fn per_stateful_step(
        &self,
        encoder: &mut DescriptorEncoder,
        descriptor: (&str, &str, Option<Unit>),
        value: impl Fn(&StepTotals) -> Value,
    ) -> Result<(), Error> {
        let stateful = |job: &JobMetrics, step: &str| job.stateful.iter().any(|id| id == step);
        self.steps_where(encoder, descriptor, stateful, value)
    }

    /// A family with one sample per step of each job that `includes`.
    fn steps_where(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, unit): (&str, &str, Option<Unit>),
        includes: impl Fn(&JobMetrics, &str) -> bool,
        value: impl Fn(&StepTotals) -> Value,
    ) -> Result<(), Error> {
        let kind = metric_type(&value(&StepTotals::default()));
        let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for job in &self.0 {
            for (step, meter) in job.steps.iter().filter(|(step, _)| includes(job, step)) {
                let labels = [
                    ("tenant", job.tenant.as_str()),
                    ("job_name", job.job.as_str()),
                    ("step", step.as_str()),
                ];
                encode_value(value(&meter.totals()), family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let e = &mut encoder;
        self.per_job(
            e,
            (
                "sluice_job_up",
                "Whether the job runs (1) or has ended (0).",
                None,
            ),
            |job| Value::Gauge((job.state() == JobState::Running).into()),
        )?;
        self.per_job(
            e,
            (
                "sluice_batches",
                "Batches computed (after a recovery, on from those its checkpoint holds).",
                None,
            ),
            |job| Value::Counter(load(&job.batches)),
        )?;
        self.per_job(
            e,
            (
                "sluice_records_in",
                "Records the job's sources brought.",
                None,
            ),
            |job| Value::Counter(load(&job.records_in)),
        )?;
        self.per_job(
            e,
            (
                "sluice_records_out",
                "Records delivered to the job's sinks.",
                None,
            ),
            |job| Value::Counter(load(&job.records_out)),
        )?;
        self.jobs_where(
            e,
            (
                "sluice_records_skipped",
                "Records the job's sources passed over as undecodable (jobs that may skip).",
                None,
            ),
            |job| job.can.skip_records,
            |job| Value::Counter(load(&job.records_skipped)),
        )?;
        self.jobs_where(
            e,
            (
                "sluice_late_rows_dropped",
                "Input rows the job's event-time steps dropped as late (jobs with event time).",
                None,
            ),
            |job| job.can.drop_late_rows,
            |job| Value::Counter(load(&job.late_rows)),
        )?;
        self.per_job(
            e,
            (
                "sluice_batches_queued",
                "Batches cut and waiting behind the one computing, at its start.",
                None,
            ),
            |job| Value::Gauge(load(&job.queued) as i64),
        )?;
        self.per_job(
            e,
            ("sluice_checkpoints", "State checkpoints written.", None),
            |job| Value::Counter(load(&job.checkpoints)),
        )?;
        self.per_job(
            e,
            (
                "sluice_checkpoint_write",
                "Time spent saving and writing state checkpoints.",
                Some(Unit::Seconds),
            ),
            |job| Value::Seconds(seconds(load(&job.checkpoint_micros))),
        )?;
        self.per_job(
            e,
            (
                "sluice_checkpoint_written",
                "Bytes of state checkpoints written.",
                Some(Unit::Bytes),
            ),
            |job| Value::Counter(load(&job.checkpoint_bytes)),
        )?;
        self.per_job(
            e,
            (
                "sluice_wal",
                "Bytes the job's write-ahead log holds on disk (0 without a checkpoint directory).",
                Some(Unit::Bytes),
            ),
            |job| Value::Gauge(load(&job.wal_bytes) as i64),
        )?;
        self.per_job(
            e,
            (
                "sluice_receiver_buffered_records",
                "Records the job's receivers held for the next batch as its last batch ended.",
                None,
            ),
            |job| Value::Gauge(load(&job.buffered) as i64),
        )?;
        self.histograms(e)?;
        self.sources(e)?;
        self.per_step(
            e,
            ("sluice_step_records_out", "Records a step put out.", None),
            |step| Value::Counter(step.records),
        )?;
        self.per_step(
            e,
            (
                "sluice_step_processing",
                "Time spent computing a step.",
                Some(Unit::Seconds),
            ),
            |step| Value::Seconds(seconds(step.micros)),
        )?;
        self.per_step(
            e,
            ("sluice_udf_calls", "Calls into a step's UDFs.", None),
            |step| Value::Counter(step.udf_calls),
        )?;
        self.per_step(
            e,
            (
                "sluice_udf_failures",
                "Calls into a step's UDFs that failed (trap, limit, wrong answer).",
                None,
            ),
            |step| Value::Counter(step.udf_failures),
        )?;
        self.per_step(
            e,
            (
                "sluice_udf_call",
                "Time spent in calls into a step's UDFs.",
                Some(Unit::Seconds),
            ),
            |step| Value::Seconds(seconds(step.udf_micros)),
        )?;
        self.per_step(
            e,
            (
                "sluice_udf_memory",
                "Guest memory a step's UDF instances hold.",
                Some(Unit::Bytes),
            ),
            |step| Value::Gauge(step.udf_memory_bytes as i64),
        )?;
        self.per_stateful_step(
            e,
            (
                "sluice_state_entries",
                "Entries a stateful step's state holds (keys, or a window's records) after the last batch.",
                None,
            ),
            |step| Value::Gauge(step.state_entries as i64),
        )?;
        self.per_stateful_step(
            e,
            (
                "sluice_state",
                "Bytes a stateful step's state holds (keys, states, records) after the last batch.",
                Some(Unit::Bytes),
            ),
            |step| Value::Gauge(step.state_bytes as i64),
        )?;
        self.failures(e)
    }
}

impl Families {
    fn histograms(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        type Pick = fn(&JobMetrics) -> &prometheus_client::metrics::histogram::Histogram;
        let families: [(&str, &str, Pick); 2] = [
            (
                "sluice_batch_processing",
                "Time computing a batch and writing its sinks and checkpoint.",
                |job| &job.processing,
            ),
            (
                "sluice_scheduling_delay",
                "Time a batch waited after its batch time before it started computing.",
                |job| &job.scheduling,
            ),
        ];
        for (name, help, pick) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for job in &self.0 {
                let labels = [
                    ("tenant", job.tenant.as_str()),
                    ("job_name", job.job.as_str()),
                ];
                pick(job).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn sources(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(
            "sluice_source_records_in",
            "Records a source brought.",
            None,
            MetricType::Counter,
        )?;
        for job in &self.0 {
            for (source, records) in &job.sources {
                let labels = [
                    ("tenant", job.tenant.as_str()),
                    ("job_name", job.job.as_str()),
                    ("source", source.as_str()),
                ];
                ConstCounter::new(records.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn failures(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(
            "sluice_job_last_failure_timestamp",
            "When the job last failed, by reason (the failure's text is in the UI).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for job in &self.0 {
            let failure = job.failure.lock().expect("failure poisoned").clone();
            let Some(failure) = failure else { continue };
            debug_assert!(FailureReason::ALL.contains(&failure.reason));
            let labels = [
                ("tenant", job.tenant.as_str()),
                ("job_name", job.job.as_str()),
                ("reason", failure.reason.as_str()),
            ];
            ConstGauge::new(failure.at_seconds).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn metric_type(value: &Value) -> MetricType {
    match value {
        Value::Counter(_) | Value::Seconds(_) => MetricType::Counter,
        Value::Gauge(_) => MetricType::Gauge,
    }
}

fn encode_value(
    value: Value,
    encoder: prometheus_client::encoding::MetricEncoder,
) -> Result<(), Error> {
    match value {
        Value::Counter(value) => ConstCounter::new(value).encode(encoder),
        Value::Seconds(value) => ConstCounter::new(value).encode(encoder),
        Value::Gauge(value) => ConstGauge::new(value).encode(encoder),
    }
}
