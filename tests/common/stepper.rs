//! A job driven batch by batch by a test, not by the clock, with its checkpoint: a
//! restart is a new [`Stepper`] on the same checkpoint directory.

use sluice::checkpoint::Checkpointer;
use sluice::event_time::BatchReport;
use sluice::job::Job;
use sluice::manifest::JobConfig;
use sluice::receivers::Receivers;
use sluice::runtime::Runtime;
use sluice_abi::Value;

/// A running job with its checkpoint, cut batch by batch.
pub struct Stepper {
    job: Job,
    checkpointer: Checkpointer,
    receivers: Receivers,
    next: u64,
    interval_ms: i64,
}

impl Stepper {
    /// Builds the job and recovers it from its checkpoint directory (a restart, when it
    /// holds one), re-running what the log holds after the last state checkpoint.
    pub fn start(config: &JobConfig, runtime: &Runtime) -> Result<Self, String> {
        let started = || -> anyhow::Result<Self> {
            let job = Job::build(config.clone(), runtime)?;
            let checkpoint = config
                .checkpoint
                .as_ref()
                .expect("the job has a checkpoint");
            let (checkpointer, recovery) =
                Checkpointer::open(checkpoint, &job, &Default::default())?;
            let receivers = Receivers::start_logged(&config.sources, Some(checkpointer.wal()))?;
            for (cut, logged) in recovery.replay {
                job.process(cut.time_ms, receivers.replay(&cut, logged)?)?;
                checkpointer.completed(&job, &cut)?;
            }
            receivers.resume(&recovery.positions, &recovery.ranges, recovery.pending);
            Ok(Self {
                job,
                checkpointer,
                receivers,
                next: recovery.next_number,
                interval_ms: i64::try_from(config.batch_interval.as_millis())?,
            })
        };
        started().map_err(|e| format!("cannot start the job: {e:#}"))
    }

    /// Cuts and computes the next batch: what sink `sink` got, and the event-time report.
    pub fn batch(&mut self, sink: &str) -> anyhow::Result<(Vec<Value>, BatchReport)> {
        let number = self.next;
        self.next += 1;
        let (cut, inputs) = self
            .receivers
            .cut_batch(number, number as i64 * self.interval_ms)?;
        self.job.process(cut.time_ms, inputs)?;
        self.checkpointer.completed(&self.job, &cut)?;
        let records = self
            .job
            .collected()
            .batches(sink)
            .into_iter()
            .find(|(time, _)| *time == cut.time_ms)
            .map(|(_, records)| records)
            .unwrap_or_default();
        let report = self.job.event_time_report().expect("a batch ran");
        Ok((records, report))
    }
}
