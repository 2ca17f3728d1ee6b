//! The stateless event-time steps: `event_time`, which reads each record's event time
//! (and feeds the watermark), and `assign_window`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sluice_abi::{Batch, Value};

use super::clock::EventClock;
use super::record;
use super::windows::WindowSpec;
use crate::dataset::Dataset;
use crate::operators::{BatchContext, Operator, OperatorState, single};

/// Where a record's event time is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeField {
    /// A field of a struct (or a string key of a map), by name.
    Named(String),
    /// An element of a tuple or list, by index.
    Index(usize),
}

/// The `event_time` step's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    /// Where the time is.
    pub field: TimeField,
    /// Milliseconds per unit of the field's number (1 for ms, 1000 for seconds).
    pub unit_ms: i64,
    /// The watermark delay, if the step declares a watermark.
    pub delay_ms: Option<i64>,
}

impl TimeSpec {
    /// The event time of `record` in ms; `None` if it is null (such rows fall in no
    /// window).
    pub fn time_of(&self, record: &Value, step: &str) -> Result<Option<i64>> {
        let value = match &self.field {
            TimeField::Named(name) => record::field(record, name, step)?,
            TimeField::Index(index) => match record {
                Value::Tuple(items) | Value::List(items) => {
                    items.get(*index).with_context(|| {
                        format!(
                            "{step}: the record {} has no element {index}",
                            record.to_json()
                        )
                    })?
                }
                other => bail!(
                    "{step}: the event time is element {index}, but the record {} is not a tuple or list",
                    other.to_json()
                ),
            },
        };
        match value {
            Value::Null => Ok(None),
            Value::Int(time) => time.checked_mul(self.unit_ms).map(Some).with_context(|| {
                format!("{step}: the event time {time} overflows as milliseconds")
            }),
            Value::Float(time) => Ok(Some((time * self.unit_ms as f64) as i64)),
            other => bail!(
                "{step}: the event time must be a number (epoch time), not {}",
                other.to_json()
            ),
        }
    }

    /// The field's name, if the time is a named field (a grouping key of that name is
    /// then the event time itself).
    pub fn name(&self) -> Option<&str> {
        match &self.field {
            TimeField::Named(name) => Some(name),
            TimeField::Index(_) => None,
        }
    }
}

/// Decodes every record of a data set.
pub(crate) fn values(data: &Dataset) -> Result<Vec<Value>> {
    data.records()
        .map(|bytes| Value::decode(bytes).context("a record does not decode"))
        .collect()
}

/// One partition of `records`.
pub(crate) fn dataset(records: &[Value]) -> Dataset {
    let mut batch = Batch::with_capacity(records.len(), records.len() * 16);
    records
        .iter()
        .for_each(|record| batch.push_with(|out| record.encode_into(out)));
    Dataset::from_partitions(vec![batch])
}

/// `event_time`: passes records through, reading each one's event time; with a delay,
/// the times feed the job's watermark (Spark's `withWatermark`).
pub struct EventTimeStep {
    /// Where the time is, and the delay.
    pub spec: TimeSpec,
    /// The job's clock.
    pub clock: Arc<EventClock>,
    /// This step's input of the clock, if it has a delay.
    pub input: Option<usize>,
}

impl Operator for EventTimeStep {
    fn describe(&self) -> String {
        format!("event_time {:?}", self.spec.field)
    }

    fn apply(&self, inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        let data = single(inputs)?;
        if let Some(input) = self.input {
            let step = self.describe();
            let mut times = Vec::with_capacity(data.len());
            for bytes in data.records() {
                let record = Value::decode(bytes).context("a record does not decode")?;
                times.extend(self.spec.time_of(&record, &step)?);
            }
            self.clock.observe(input, &times);
        }
        Ok(data)
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        self.input.is_some().then_some(self as &dyn OperatorState)
    }
}

/// The watermark is the step's state: it survives a restart.
impl OperatorState for EventTimeStep {
    fn kind(&self) -> &'static str {
        "event_time"
    }

    fn save(&self) -> Vec<u8> {
        self.clock.save()
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        self.clock.restore(saved)
    }

    fn entries(&self) -> usize {
        1
    }
}

/// `assign_window`: one record per window its event time falls in, with the field
/// `window` = `{start, end}` (ms) added; records with a null time are dropped.
pub struct AssignWindow {
    /// Where the time is.
    pub time: TimeSpec,
    /// The windows.
    pub windows: WindowSpec,
}

impl Operator for AssignWindow {
    fn describe(&self) -> String {
        format!("assign_window {:?}", self.windows)
    }

    fn apply(&self, inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        let step = self.describe();
        let mut out = Vec::new();
        for record in values(&single(inputs)?)? {
            let Some(time) = self.time.time_of(&record, &step)? else {
                continue;
            };
            let mut windows: Vec<_> = self.windows.windows_of(time).collect();
            windows.reverse();
            for window in windows {
                out.push(record::with_field(
                    record.clone(),
                    "window",
                    record::window(window),
                ));
            }
        }
        Ok(dataset(&out))
    }
}
