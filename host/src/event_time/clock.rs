//! The job's watermark: per-input maximum event times, combined by a policy into one
//! global watermark that only moves up, and what each batch reports about it.

use std::sync::Mutex;

use anyhow::{Context, Result};

/// How the watermarks of several inputs combine (Spark's `multipleWatermarkPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatermarkPolicy {
    /// The slowest input decides (an input that has seen nothing counts as 0).
    #[default]
    Min,
    /// The fastest input decides.
    Max,
}

/// The job-wide event-time settings (`[event_time]` in a manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeSettings {
    /// How several watermarks combine.
    pub policy: WatermarkPolicy,
    /// Whether a batch without rows still evicts and emits when the watermark moved
    /// (Spark's `noDataMicroBatches.enabled`).
    pub no_data_batches: bool,
}

impl Default for EventTimeSettings {
    fn default() -> Self {
        Self {
            policy: WatermarkPolicy::Min,
            no_data_batches: true,
        }
    }
}

/// Minimum, maximum and mean event time of a batch's rows, in ms (Spark's `eventTime`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeStats {
    /// Earliest event time.
    pub min: i64,
    /// Latest event time.
    pub max: i64,
    /// Mean event time.
    pub avg: f64,
}

/// What one stateful event-time step did in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// `stream/step number`.
    pub id: String,
    /// Rows in its state after the batch.
    pub state_rows: usize,
    /// Late groups (aggregations) or late rows (deduplication) it dropped.
    pub rows_dropped_by_watermark: usize,
    /// Input rows it dropped as late.
    pub late_rows_dropped: usize,
}

/// What a batch did with event time.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// Whether the event-time steps ran: a batch with rows, or an empty batch while the
    /// watermark moved past what the last one evicted (Spark's no-data batch).
    pub ran: bool,
    /// Whether the batch had input rows.
    pub has_data: bool,
    /// The watermark the batch evicted and emitted with, in ms.
    pub watermark_ms: i64,
    /// The event times of its rows, if it had any.
    pub event_time: Option<TimeStats>,
    /// Every stateful event-time step, in graph order.
    pub steps: Vec<StepReport>,
}

#[derive(Debug, Default)]
struct Input {
    delay_ms: i64,
    max_event_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    inputs: Vec<Input>,
    /// Computed after the last batch: what the next batch evicts with.
    global: i64,
    /// What the last batch that ran evicted with.
    evicted_with: i64,
    /// What the batch in progress filters late rows with (the previous batch's).
    late_with: i64,
    running: bool,
    has_data: bool,
    /// Whether some step evicts or emits by the watermark (append or update mode).
    incremental: bool,
    stats: Option<(i64, i64, i128, u64)>,
    steps: Vec<StepReport>,
    last: Option<BatchReport>,
}

/// The watermark of one job, shared by its event-time steps.
#[derive(Debug, Default)]
pub struct EventClock {
    settings: EventTimeSettings,
    state: Mutex<State>,
}

impl EventClock {
    /// A clock with no input yet (watermark 0).
    pub fn new(settings: EventTimeSettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an input with a watermark delay; returns its index for [`Self::observe`].
    pub fn register_input(&self, delay_ms: i64) -> usize {
        let mut state = self.lock();
        state.inputs.push(Input {
            delay_ms,
            max_event_ms: None,
        });
        state.inputs.len() - 1
    }

    /// Whether any input has a watermark.
    pub fn watermarked(&self) -> bool {
        !self.lock().inputs.is_empty()
    }

    /// Adds a stateful step to the batch reports; `incremental` if it evicts or emits by
    /// the watermark (so that an empty batch must run when the watermark moves). Returns
    /// its index for [`Self::report`].
    pub fn register_step(&self, id: String, incremental: bool) -> usize {
        let mut state = self.lock();
        state.incremental |= incremental;
        state.steps.push(StepReport {
            id,
            state_rows: 0,
            rows_dropped_by_watermark: 0,
            late_rows_dropped: 0,
        });
        state.steps.len() - 1
    }

    /// Starts a batch; decides whether event-time steps run in it.
    pub fn begin(&self, has_data: bool) {
        let no_data_batches = self.settings.no_data_batches;
        let mut state = self.lock();
        let due = no_data_batches && state.incremental && state.global > state.evicted_with;
        state.running = has_data || due;
        state.has_data = has_data;
        state.stats = None;
        if state.running {
            state.late_with = state.evicted_with;
            state.evicted_with = state.global;
        }
        for step in &mut state.steps {
            step.rows_dropped_by_watermark = 0;
            step.late_rows_dropped = 0;
        }
    }

    /// The watermark the next batch evicts and emits with, if the job has one: what the
    /// write-ahead log keeps with the batch, so that a re-run uses it again.
    pub fn next_watermark(&self) -> Option<i64> {
        let state = self.lock();
        (!state.inputs.is_empty()).then_some(state.global)
    }

    /// Has the next batch, a re-run, use `watermark_ms`: the one its first run used. The
    /// inputs' own watermarks start from "no data yet" after a restart, so the one
    /// computed from the data re-run since the checkpoint may be lower (an input with no
    /// rows re-run counts as 0 under the min policy), and the batch would drop and emit
    /// otherwise than it did. The watermark never goes down.
    pub fn rerun_with(&self, watermark_ms: i64) {
        let mut state = self.lock();
        state.global = state.global.max(watermark_ms);
    }

    /// `(late, evict)`: the watermark the running batch drops late rows with (the
    /// previous batch's) and the one it evicts and emits with; `None` if event-time steps
    /// do not run in this batch.
    pub fn watermarks(&self) -> Option<(i64, i64)> {
        let state = self.lock();
        state
            .running
            .then_some((state.late_with, state.evicted_with))
    }

    /// Notes the event times input `input` saw in this batch.
    pub fn observe(&self, input: usize, times: &[i64]) {
        if times.is_empty() {
            return;
        }
        let mut state = self.lock();
        let max = times.iter().copied().max().expect("not empty");
        let slot = &mut state.inputs[input].max_event_ms;
        *slot = Some(slot.map_or(max, |seen| seen.max(max)));
        let min = times.iter().copied().min().expect("not empty");
        let sum: i128 = times.iter().map(|&t| i128::from(t)).sum();
        let count = times.len() as u64;
        state.stats = Some(match state.stats {
            None => (min, max, sum, count),
            Some((a, b, s, n)) => (a.min(min), b.max(max), s + sum, n + count),
        });
    }

    /// Records what step `step` did in this batch.
    pub fn report(
        &self,
        step: usize,
        state_rows: usize,
        dropped_groups: usize,
        dropped_rows: usize,
    ) {
        let mut state = self.lock();
        let report = &mut state.steps[step];
        report.state_rows = state_rows;
        report.rows_dropped_by_watermark = dropped_groups;
        report.late_rows_dropped = dropped_rows;
    }

    /// Ends the batch: the watermark the next batch uses is computed from every input's
    /// latest event time (never going down).
    pub fn end(&self) {
        let policy = self.settings.policy;
        let mut state = self.lock();
        let per_input = state.inputs.iter().map(|input| {
            input
                .max_event_ms
                .map_or(0, |max| max.saturating_sub(input.delay_ms).max(0))
        });
        let combined = match policy {
            WatermarkPolicy::Min => per_input.min(),
            WatermarkPolicy::Max => per_input.max(),
        };
        if let Some(combined) = combined {
            state.global = state.global.max(combined);
        }
        let report = BatchReport {
            ran: state.running,
            has_data: state.has_data,
            watermark_ms: state.evicted_with,
            event_time: state.stats.map(|(min, max, sum, count)| TimeStats {
                min,
                max,
                avg: sum as f64 / count as f64,
            }),
            steps: state.steps.clone(),
        };
        state.last = Some(report);
    }

    /// The report of the last batch.
    pub fn last_report(&self) -> Option<BatchReport> {
        self.lock().last.clone()
    }

    /// The watermarks to checkpoint: the next batch's and the last evicting batch's.
    pub(crate) fn save(&self) -> Vec<u8> {
        let state = self.lock();
        [state.global, state.evicted_with]
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect()
    }

    /// Restores checkpointed watermarks. As in Spark, each input starts again from "no
    /// data yet"; the global watermark never goes down.
    pub(crate) fn restore(&self, saved: &[u8]) -> Result<()> {
        let value = |at: usize| -> Result<i64> {
            let bytes = saved
                .get(at..at + 8)
                .context("the checkpointed watermark is cut short")?;
            Ok(i64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        };
        let (global, evicted_with) = (value(0)?, value(8)?);
        anyhow::ensure!(
            saved.len() == 16,
            "the checkpointed watermark has {} bytes, 16 expected",
            saved.len()
        );
        let mut state = self.lock();
        state.global = state.global.max(global);
        state.evicted_with = evicted_with;
        state
            .inputs
            .iter_mut()
            .for_each(|input| input.max_event_ms = None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(policy: WatermarkPolicy) -> EventClock {
        EventClock::new(EventTimeSettings {
            policy,
            no_data_batches: true,
        })
    }

    fn batch(clock: &EventClock, input: usize, times: &[i64]) -> i64 {
        clock.begin(!times.is_empty());
        clock.observe(input, times);
        clock.end();
        clock.last_report().unwrap().watermark_ms
    }

    #[test]
    fn a_batch_uses_the_watermark_of_the_data_before_it() {
        let clock = clock(WatermarkPolicy::Min);
        let input = clock.register_input(10_000);
        assert_eq!(batch(&clock, input, &[15_000]), 0);
        assert_eq!(batch(&clock, input, &[10_000, 14_000]), 5_000);
        assert_eq!(batch(&clock, input, &[25_000]), 5_000);
        assert_eq!(batch(&clock, input, &[1_000]), 15_000);
    }

    #[test]
    fn min_waits_for_every_input_and_max_does_not() {
        for (policy, expected) in [(WatermarkPolicy::Min, 0), (WatermarkPolicy::Max, 10_000)] {
            let clock = clock(policy);
            let first = clock.register_input(10_000);
            clock.register_input(5_000);
            batch(&clock, first, &[20_000]);
            assert_eq!(batch(&clock, first, &[1_000]), expected, "{policy:?}");
        }
    }

    #[test]
    fn a_restart_forgets_inputs_but_never_lowers_the_watermark() {
        let clock = clock(WatermarkPolicy::Min);
        let input = clock.register_input(0);
        batch(&clock, input, &[50_000]);
        let saved = clock.save();
        let restarted = self::clock(WatermarkPolicy::Min);
        let input = restarted.register_input(0);
        restarted.restore(&saved).unwrap();
        assert_eq!(batch(&restarted, input, &[10_000]), 50_000);
        assert_eq!(batch(&restarted, input, &[]), 50_000);
        assert!(restarted.restore(&saved[..9]).is_err());
    }

    #[test]
    fn a_rerun_uses_the_logged_watermark_where_recomputing_would_lower_it() {
        let first = clock(WatermarkPolicy::Min);
        let (a, b) = (first.register_input(5_000), first.register_input(5_000));
        first.begin(true);
        first.observe(a, &[10_000]);
        first.observe(b, &[50_000]);
        first.end();
        let saved = first.save();
        // After the checkpoint, only `a` has rows: with `b`'s 45 s, the min moves to 35 s.
        let logged = first.next_watermark();
        assert_eq!(batch(&first, a, &[40_000]), 5_000);
        let used = first.next_watermark();
        assert_eq!(batch(&first, a, &[36_000]), 35_000);

        let restarted = clock(WatermarkPolicy::Min);
        let a = restarted.register_input(5_000);
        restarted.register_input(5_000);
        restarted.restore(&saved).unwrap();
        restarted.rerun_with(logged.unwrap());
        assert_eq!(batch(&restarted, a, &[40_000]), 5_000);
        assert_eq!(
            restarted.next_watermark(),
            Some(5_000),
            "`b` counts as 0 after the restart"
        );
        restarted.rerun_with(used.unwrap());
        assert_eq!(batch(&restarted, a, &[36_000]), 35_000);
        restarted.rerun_with(0);
        assert_eq!(restarted.next_watermark(), Some(35_000), "never goes down");
        assert_eq!(clock(WatermarkPolicy::Min).next_watermark(), None);
    }

    #[test]
    fn an_empty_batch_runs_only_when_the_watermark_moved() {
        let clock = clock(WatermarkPolicy::Min);
        let input = clock.register_input(10_000);
        clock.register_step("s/1".into(), true);
        batch(&clock, input, &[15_000]);
        clock.begin(false);
        assert_eq!(clock.watermarks(), Some((0, 5_000)));
        clock.end();
        clock.begin(false);
        assert_eq!(clock.watermarks(), None);
        clock.end();
    }
}
