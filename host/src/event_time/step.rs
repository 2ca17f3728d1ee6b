//! The stateless event-time steps: `event_time`, which reads each record's event time
//! (and feeds the watermark), and `assign_window`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use sluice_abi::encoding::{field_value, int_value};
use sluice_abi::{Batch, Value};

use super::clock::EventClock;
use super::record;
use super::windows::WindowSpec;
use crate::dataset::Dataset;
use crate::operators::{BatchContext, Operator, OperatorState, single};
use crate::udf::BoundUdf;

/// Where a record's event time is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeField {
    /// A field of a struct (or a string key of a map), by name.
    Named(String),
    /// An element of a tuple or list, by index.
    Index(usize),
    /// What a map UDF (named by its label) returns for the record: epoch milliseconds.
    Udf(String),
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
    /// window). A UDF's times are read a batch at a time, by [`EventTimes::times`].
    pub fn time_of(&self, record: &Value, step: &str) -> Result<Option<i64>> {
        let value = match &self.field {
            TimeField::Udf(label) => {
                bail!("{step}: the event time comes from `{label}`, which runs on whole batches")
            }
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
            Value::Int(time) => self.millis(*time, step).map(Some),
            Value::Float(time) => Ok(Some((time * self.unit_ms as f64) as i64)),
            other => bail!(
                "{step}: the event time must be a number (epoch time), not {}",
                other.to_json()
            ),
        }
    }

    fn millis(&self, time: i64, step: &str) -> Result<i64> {
        time.checked_mul(self.unit_ms)
            .with_context(|| format!("{step}: the event time {time} overflows as milliseconds"))
    }

    /// The field's name, if the time is a named field (a grouping key of that name is
    /// then the event time itself).
    pub fn name(&self) -> Option<&str> {
        match &self.field {
            TimeField::Named(name) => Some(name),
            TimeField::Index(_) | TimeField::Udf(_) => None,
        }
    }
}

/// How a step reads its records' event times: where they are, and the bound function
/// when a UDF gives them.
#[derive(Clone)]
pub struct EventTimes {
    /// Where the time is, its unit and the delay.
    pub spec: TimeSpec,
    /// The map function giving each record's time, for [`TimeField::Udf`].
    pub udf: Option<BoundUdf>,
}

impl EventTimes {
    /// The times built in: read from each record.
    pub fn read(spec: TimeSpec) -> Self {
        Self { spec, udf: None }
    }

    /// The event time (ms, `None` for null) of each record of `data`: those `data`
    /// carries if a step read them the same way; else a named field is read without
    /// decoding the record (the partitions in parallel), and a UDF is called once for the
    /// batch.
    pub fn times(&self, data: &Dataset, step: &str) -> Result<Vec<Option<i64>>> {
        if let Some(times) = self.carried(data) {
            return Ok(times.to_vec());
        }
        let Some(udf) = &self.udf else {
            let partitions = data
                .partitions()
                .par_iter()
                .map(|partition| {
                    partition
                        .iter()
                        .map(|record| {
                            crate::scheduler::slice::tick()?;
                            self.time_in(record, step)
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(partitions.concat());
        };
        let answers = udf.records(data.concatenated())?;
        answers
            .iter()
            .zip(data.records())
            .enumerate()
            .map(|(index, (answer, record))| {
                crate::scheduler::slice::tick()?;
                match Value::decode(answer).context("a UDF result does not decode")? {
                    Value::Null => Ok(None),
                    Value::Int(time) => self.spec.millis(time, step).map(Some),
                    other => bail!(
                        "{step}: the event-time function `{}` returned {} for record {index} of the batch ({}); it must return epoch milliseconds as an integer (or null for no time)",
                        udf.label(),
                        other.to_json(),
                        shown(record)
                    ),
                }
            })
            .collect()
    }

    /// The event times `data` carries, if a step read them as these are read.
    pub(crate) fn carried<'d>(&self, data: &'d Dataset) -> Option<&'d [Option<i64>]> {
        let carried = data.event_times()?;
        (carried.field == self.spec.field && carried.unit_ms == self.spec.unit_ms)
            .then_some(carried.times.as_slice())
    }

    /// The event time of one encoded record (not for a UDF's times).
    pub(crate) fn time_in(&self, record: &[u8], step: &str) -> Result<Option<i64>> {
        if let TimeField::Named(name) = &self.spec.field
            && let Some(value) = field_value(record, name)
            && let Some(time) = int_value(value)
        {
            return self.spec.millis(time, step).map(Some);
        }
        let record = Value::decode(record).context("a record does not decode")?;
        self.spec.time_of(&record, step)
    }

    /// The field's name, if the time is a named field.
    pub fn name(&self) -> Option<&str> {
        self.spec.name()
    }
}

/// Each record's event time as an `event_time` step read it, carried with the records
/// ([`Dataset::with_event_times`]), so that the steps after it that read times the same
/// way neither read them again nor call a UDF for them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTimes {
    field: TimeField,
    unit_ms: i64,
    times: Vec<Option<i64>>,
}

impl RecordTimes {
    /// `times`, one per record in order, read as `spec` says.
    pub fn new(spec: &TimeSpec, times: Vec<Option<i64>>) -> Self {
        Self {
            field: spec.field.clone(),
            unit_ms: spec.unit_ms,
            times,
        }
    }

    /// How many records have a time (or none) here.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// Decodes every record of a data set.
pub(crate) fn values(data: &Dataset) -> Result<Vec<Value>> {
    data.records()
        .map(|bytes| {
            crate::scheduler::slice::tick()?;
            Value::decode(bytes).context("a record does not decode")
        })
        .collect()
}

/// An encoded record as JSON, for messages.
fn shown(record: &[u8]) -> String {
    Value::decode(record).map_or_else(|_| "(undecodable)".to_owned(), |record| record.to_json())
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
    pub times: EventTimes,
    /// The job's clock.
    pub clock: Arc<EventClock>,
    /// This step's input of the clock, if it has a delay.
    pub input: Option<usize>,
}

impl Operator for EventTimeStep {
    fn describe(&self) -> String {
        format!("event_time {:?}", self.times.spec.field)
    }

    fn apply(&self, inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        let data = single(inputs)?;
        let Some(input) = self.input else {
            return Ok(data);
        };
        let step = self.describe();
        let times = self.times.times(&data, &step)?;
        let observed: Vec<i64> = times.iter().flatten().copied().collect();
        self.clock.observe(input, &observed);
        Ok(data.with_event_times(RecordTimes::new(&self.times.spec, times)))
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

    /// The watermark: one time.
    fn bytes(&self) -> usize {
        std::mem::size_of::<i64>()
    }
}

/// `assign_window`: one record per window its event time falls in, with the field
/// `window` = `{start, end}` (ms) added; records with a null time are dropped.
pub struct AssignWindow {
    /// Where the time is.
    pub time: EventTimes,
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
        let data = single(inputs)?;
        let times = self.time.times(&data, &step)?;
        for (record, time) in values(&data)?.into_iter().zip(times) {
            crate::scheduler::slice::tick()?;
            let Some(time) = time else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_time::EventTimeSettings;

    fn seconds(field: &str) -> TimeSpec {
        TimeSpec {
            field: TimeField::Named(field.into()),
            unit_ms: 1000,
            delay_ms: Some(0),
        }
    }

    #[test]
    fn the_times_an_event_time_step_read_travel_with_its_records_only() {
        let clock = Arc::new(EventClock::new(EventTimeSettings::default()));
        let step = EventTimeStep {
            times: EventTimes::read(seconds("t")),
            input: Some(clock.register_input(0)),
            clock: clock.clone(),
        };
        let records = [
            record::record(vec![("t", Value::Int(2)), ("u", Value::Int(5))]),
            record::record(vec![("t", Value::Null), ("u", Value::Int(6))]),
        ];
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        clock.begin(true);
        let out = step.apply(vec![dataset(&records)], &context).unwrap();
        clock.end();
        let by_t = EventTimes::read(seconds("t"));
        assert_eq!(by_t.carried(&out), Some(&[Some(2000), None][..]));
        assert_eq!(by_t.times(&out, "s").unwrap(), [Some(2000), None]);
        // Times read another way (another field, another unit) are read from the records.
        let by_u = EventTimes::read(seconds("u"));
        assert_eq!(by_u.carried(&out), None);
        assert_eq!(by_u.times(&out, "s").unwrap(), [Some(5000), Some(6000)]);
        let in_ms = EventTimes::read(TimeSpec {
            unit_ms: 1,
            ..seconds("t")
        });
        assert_eq!(in_ms.times(&out, "s").unwrap(), [Some(2), None]);
        // Records made anew carry none.
        let again = Dataset::from_partitions(out.clone().into_partitions());
        assert_eq!(by_t.carried(&again), None);
        assert_eq!(again, out);
    }
}
