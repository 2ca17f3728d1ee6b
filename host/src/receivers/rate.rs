//! Backpressure and rate limits, as Spark Streaming's `spark.streaming.backpressure.*`
//! and `maxRatePerPartition`: after every batch a PID controller estimates the rate the
//! job can process, from its processing time and scheduling delay, and a source takes at
//! most that many records per second of batch interval (split over its partitions by
//! how much each has waiting), never more than `max_rate` per partition.

use std::sync::Mutex;
use std::time::Duration;

/// How a source limits what it takes per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// The job's batch interval: a rate becomes records per batch through it.
    pub batch_interval: Duration,
    /// Whether the rate follows what the job can process (Spark's
    /// `spark.streaming.backpressure.enabled`).
    pub backpressure: bool,
    /// Records per second the first batches take, before the estimator has a rate
    /// (Spark's `spark.streaming.backpressure.initialRate`).
    pub initial_rate: Option<u64>,
    /// The most records per second per partition, whatever the estimate (Spark's
    /// `spark.streaming.kafka.maxRatePerPartition`).
    pub max_rate: Option<u64>,
}

/// A PID controller that estimates the rate (records per second) a job can process.
///
/// This is Spark Streaming's `PIDRateEstimator`, with its defaults: proportional gain
/// 1.0, integral gain 0.2, derivative gain 0.0 and a minimum rate of 100 records/s. The
/// error is the difference between the rate last set and the rate the last batch was
/// processed at; the integral term is the backlog, the scheduling delay times the
/// processing rate, per batch interval: records that wait because earlier batches were slow.
#[derive(Debug, Clone)]
pub struct PidRateEstimator {
    batch_interval_ms: f64,
    proportional: f64,
    integral: f64,
    derivative: f64,
    min_rate: f64,
    latest: Option<Latest>,
}

/// What the estimator set last.
#[derive(Debug, Clone, Copy)]
struct Latest {
    time_ms: i64,
    rate: f64,
    error: f64,
    /// Whether `rate` is only the first batch's processing rate (not yet published).
    first: bool,
}

impl PidRateEstimator {
    /// Spark's default gains and minimum rate.
    pub const PROPORTIONAL: f64 = 1.0;
    /// Spark's default integral gain.
    pub const INTEGRAL: f64 = 0.2;
    /// Spark's default derivative gain.
    pub const DERIVATIVE: f64 = 0.0;
    /// Spark's default minimum rate, in records per second.
    pub const MIN_RATE: f64 = 100.0;

    /// An estimator for batches every `batch_interval`, with Spark's defaults.
    pub fn new(batch_interval: Duration) -> Self {
        Self::with_gains(
            batch_interval,
            Self::PROPORTIONAL,
            Self::INTEGRAL,
            Self::DERIVATIVE,
            Self::MIN_RATE,
        )
    }

    /// An estimator with these gains and minimum rate.
    pub fn with_gains(
        batch_interval: Duration,
        proportional: f64,
        integral: f64,
        derivative: f64,
        min_rate: f64,
    ) -> Self {
        Self {
            batch_interval_ms: batch_interval.as_secs_f64() * 1000.0,
            proportional,
            integral,
            derivative,
            min_rate,
            latest: None,
        }
    }

    /// The new rate after the batch of time `time_ms` (its end), which held `records`,
    /// took `processing` to compute and waited `scheduling_delay` to start. `None` when
    /// it says nothing (no records, no time, an older batch) and after the first batch,
    /// whose processing rate only starts the controller.
    pub fn compute(
        &mut self,
        time_ms: i64,
        records: u64,
        processing: Duration,
        scheduling_delay: Duration,
    ) -> Option<f64> {
        let processing_ms = processing.as_secs_f64() * 1000.0;
        if records == 0
            || processing_ms <= 0.0
            || self.latest.is_some_and(|latest| time_ms <= latest.time_ms)
        {
            return None;
        }
        let processing_rate = records as f64 / processing_ms * 1000.0;
        let Some(latest) = self.latest else {
            self.latest = Some(Latest {
                time_ms,
                rate: processing_rate,
                error: 0.0,
                first: true,
            });
            return None;
        };
        let since_update_s = (time_ms - latest.time_ms) as f64 / 1000.0;
        let error = latest.rate - processing_rate;
        let backlog_error =
            scheduling_delay.as_secs_f64() * 1000.0 * processing_rate / self.batch_interval_ms;
        let error_change = (error - latest.error) / since_update_s;
        let rate = (latest.rate
            - self.proportional * error
            - self.integral * backlog_error
            - self.derivative * error_change)
            .max(self.min_rate);
        self.latest = Some(Latest {
            time_ms,
            rate,
            error,
            first: false,
        });
        Some(rate)
    }

    /// The rate last published, if any.
    pub fn rate(&self) -> Option<f64> {
        self.latest
            .filter(|latest| !latest.first)
            .map(|latest| latest.rate)
    }
}

/// What a source may take per batch: [`RateConfig`] with its estimator.
#[derive(Debug)]
pub struct RateLimit {
    config: RateConfig,
    estimator: Option<Mutex<PidRateEstimator>>,
}

impl RateLimit {
    /// The limit `config` sets.
    pub fn new(config: RateConfig) -> Self {
        Self {
            config,
            estimator: config
                .backpressure
                .then(|| Mutex::new(PidRateEstimator::new(config.batch_interval))),
        }
    }

    /// A batch of `records` from this source completed: updates the estimate (with
    /// backpressure on). Returns the new rate, if the estimate changed.
    pub fn completed(
        &self,
        time_ms: i64,
        records: u64,
        processing: Duration,
        scheduling_delay: Duration,
    ) -> Option<f64> {
        self.estimator.as_ref().and_then(|estimator| {
            estimator.lock().expect("rate estimator poisoned").compute(
                time_ms,
                records,
                processing,
                scheduling_delay,
            )
        })
    }

    /// The records per second the whole source may take now, if limited by the estimate
    /// (or, before it has one, by `initial_rate`).
    pub fn rate(&self) -> Option<f64> {
        let estimated = self
            .estimator
            .as_ref()
            .and_then(|estimator| estimator.lock().expect("rate estimator poisoned").rate());
        estimated.or(self
            .config
            .initial_rate
            .filter(|_| self.config.backpressure)
            .map(|rate| rate as f64))
    }

    /// How many records each partition may give the next batch, given how many each has
    /// `waiting` (Spark's `maxMessagesPerPartition`): the rate is split in proportion to
    /// what waits, capped by `max_rate` per partition, for one batch interval, and at
    /// least one record a partition with any waiting. `None`: no limit.
    pub fn per_partition(&self, waiting: &[usize]) -> Option<Vec<usize>> {
        let seconds = self.config.batch_interval.as_secs_f64();
        let max_rate = self.config.max_rate.map(|rate| rate as f64);
        let per_second: Vec<f64> = match self.rate() {
            Some(rate) => {
                let total: usize = waiting.iter().sum();
                waiting
                    .iter()
                    .map(|&lag| {
                        let share = if total == 0 {
                            0.0
                        } else {
                            lag as f64 / total as f64 * rate
                        };
                        max_rate.map_or(share, |max| share.min(max))
                    })
                    .collect()
            }
            None => {
                let max = max_rate?;
                vec![max; waiting.len()]
            }
        };
        Some(
            per_second
                .into_iter()
                .map(|rate| ((rate * seconds) as usize).max(1))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_first_batch_only_starts_the_controller() {
        let mut estimator = PidRateEstimator::new(SECOND);
        assert_eq!(estimator.compute(1000, 1000, ms(500), ms(0)), None);
        assert_eq!(estimator.rate(), None);
        // Processing at the rate set, without delay: the rate stays.
        assert_eq!(estimator.compute(2000, 1000, ms(500), ms(0)), Some(2000.0));
    }

    #[test]
    fn batches_that_say_nothing_change_nothing() {
        let mut estimator = PidRateEstimator::new(SECOND);
        assert_eq!(estimator.compute(1000, 0, ms(500), ms(0)), None);
        assert_eq!(estimator.compute(1000, 10, ms(0), ms(0)), None);
        estimator.compute(1000, 1000, ms(500), ms(0));
        assert_eq!(
            estimator.compute(1000, 1000, ms(100), ms(0)),
            None,
            "not newer"
        );
        assert_eq!(estimator.compute(500, 1000, ms(100), ms(0)), None, "older");
    }

    #[test]
    fn a_slower_batch_lowers_the_rate_and_a_delay_lowers_it_more() {
        // As Spark's PIDRateEstimatorSuite: with only the proportional term the rate
        // follows the processing rate; the integral term takes off the backlog.
        let mut estimator = PidRateEstimator::with_gains(SECOND, 1.0, 0.0, 0.0, 10.0);
        estimator.compute(1000, 1000, ms(500), ms(0));
        assert_eq!(estimator.compute(2000, 1000, ms(1000), ms(0)), Some(1000.0));
        let mut with_backlog = PidRateEstimator::new(SECOND);
        with_backlog.compute(1000, 1000, ms(500), ms(0));
        // 1000 records/s processed, 500 ms delay: 0.2 * 500 records of backlog off.
        assert_eq!(
            with_backlog.compute(2000, 1000, ms(1000), ms(500)),
            Some(1000.0 - 0.2 * 500.0)
        );
    }

    #[test]
    fn the_rate_never_goes_below_the_minimum() {
        let mut estimator = PidRateEstimator::new(SECOND);
        estimator.compute(1000, 10, ms(1000), ms(0));
        assert_eq!(
            estimator.compute(2000, 10, ms(10_000), ms(100_000)),
            Some(PidRateEstimator::MIN_RATE)
        );
    }

    #[test]
    fn the_rate_converges_to_a_jobs_capacity() {
        // A job that processes 5000 records/s, fed whatever the rate allows from a
        // backlog that never ends: the rate settles at its capacity, the delay at zero.
        let capacity = 5000.0;
        let interval = ms(100);
        let mut estimator = PidRateEstimator::new(interval);
        let mut rate: f64 = 100_000.0;
        let mut delay_ms = 0.0f64;
        for batch in 1..200i64 {
            let records = (rate * 0.1) as u64;
            let processing_ms = records as f64 / capacity * 1000.0;
            let time_ms = batch * 100;
            if let Some(new) = estimator.compute(
                time_ms,
                records,
                Duration::from_secs_f64(processing_ms / 1000.0),
                Duration::from_secs_f64(delay_ms / 1000.0),
            ) {
                rate = new;
            }
            delay_ms = (delay_ms + processing_ms - 100.0).max(0.0);
        }
        assert!(
            (rate - capacity).abs() / capacity < 0.05,
            "settled at {rate} records/s for a capacity of {capacity}"
        );
        assert!(
            delay_ms < 100.0,
            "the delay stays under an interval: {delay_ms} ms"
        );
    }

    fn limit(backpressure: bool, initial_rate: Option<u64>, max_rate: Option<u64>) -> RateLimit {
        RateLimit::new(RateConfig {
            batch_interval: ms(500),
            backpressure,
            initial_rate,
            max_rate,
        })
    }

    #[test]
    fn without_limits_a_source_takes_everything() {
        assert_eq!(limit(false, None, None).per_partition(&[10, 20]), None);
        assert_eq!(limit(true, None, None).per_partition(&[10, 20]), None);
        // The initial rate is part of backpressure, as in Spark.
        assert_eq!(limit(false, Some(10), None).per_partition(&[10, 20]), None);
    }

    #[test]
    fn max_rate_caps_each_partition_for_one_interval() {
        assert_eq!(
            limit(false, None, Some(100)).per_partition(&[10, 2000]),
            Some(vec![50, 50])
        );
    }

    #[test]
    fn the_initial_rate_then_the_estimate_split_by_what_waits() {
        let limit = limit(true, Some(1000), Some(600));
        // 1000/s for half a second, split 1:3, the second partition capped at 600/s.
        assert_eq!(limit.per_partition(&[100, 300]), Some(vec![125, 300]));
        assert_eq!(limit.completed(500, 400, ms(100), ms(0)), None);
        assert_eq!(limit.completed(1000, 400, ms(400), ms(0)), Some(1000.0));
        assert_eq!(limit.per_partition(&[0, 50]), Some(vec![1, 300]));
    }
}
