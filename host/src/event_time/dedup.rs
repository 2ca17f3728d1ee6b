//! Deduplication with a watermark (Spark's `dropDuplicates(cols)` after
//! `withWatermark`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use sluice_abi::Value;

use super::clock::EventClock;
use super::late::{LateCollector, LateRows};
use super::record;
use super::step::{EventTimes, dataset, values};
use crate::dataset::Dataset;
use crate::operators::{BatchContext, Operator, OperatorState, single};

/// `dedup`: the first record of each key (the listed fields, or the whole record) is
/// emitted, later ones dropped. With a watermark, a record whose event time is at or
/// before it is late and dropped; keys are evicted by the watermark only when the event
/// time is one of the key fields (otherwise a key is remembered for good, as in Spark).
pub struct Dedup {
    fields: Option<Vec<String>>,
    time: Option<EventTimes>,
    clock: Arc<EventClock>,
    step: usize,
    watermarked: bool,
    /// Whether the event time is a key field, so keys can be evicted.
    evicts: bool,
    /// Key bytes -> event time (ms) of the key's first record.
    seen: Mutex<HashMap<Vec<u8>, Option<i64>>>,
    /// The bytes `seen` holds ([`seen_bytes`] a key), counted as keys come and go.
    bytes: AtomicUsize,
    /// Where the rows dropped as late go, if the step routes them.
    late: Option<Arc<LateRows>>,
}

impl Dedup {
    /// The step `id`, keyed by `fields` (`None`: whole records).
    pub fn new(
        fields: Option<Vec<String>>,
        time: Option<EventTimes>,
        clock: Arc<EventClock>,
        id: String,
    ) -> Self {
        let watermarked = clock.watermarked() && time.is_some();
        let time_is_key = match (&fields, time.as_ref().and_then(EventTimes::name)) {
            (None, _) => true,
            (Some(fields), Some(name)) => fields.iter().any(|field| field == name),
            (Some(_), None) => false,
        };
        let evicts = watermarked && time_is_key;
        let step = clock.register_step(id, evicts);
        Self {
            fields,
            time,
            clock,
            step,
            watermarked,
            evicts,
            seen: Mutex::default(),
            bytes: AtomicUsize::new(0),
            late: None,
        }
    }

    /// Routes the rows dropped as late to `late`.
    pub fn with_late_rows(mut self, late: Arc<LateRows>) -> Self {
        self.late = Some(late);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Option<i64>>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Operator for Dedup {
    fn describe(&self) -> String {
        match &self.fields {
            Some(fields) => format!("dedup by {fields:?}"),
            None => "dedup".to_owned(),
        }
    }

    fn apply(&self, inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        let data = single(inputs)?;
        let Some((late_with, evict_with)) = self.clock.watermarks() else {
            return Ok(Dataset::default());
        };
        let step = self.describe();
        let mut seen = self.lock();
        let mut out = Vec::new();
        let mut late = 0;
        let mut added = 0;
        let mut routed = LateCollector::new(self.late.as_deref());
        let records = values(&data)?;
        let times = match (&self.time, self.watermarked) {
            (Some(time), true) => time.times(&data, &step)?,
            _ => vec![None; records.len()],
        };
        let rows = records.into_iter().zip(times).zip(data.records());
        for (position, ((record, time), encoded)) in rows.enumerate() {
            crate::scheduler::slice::tick()?;
            if time.is_some_and(|time| time <= late_with) {
                late += 1;
                routed.dropped(position, encoded);
                continue;
            }
            let key = match &self.fields {
                Some(fields) => Value::Tuple(
                    fields
                        .iter()
                        .map(|field| record::field(&record, field, &step).cloned())
                        .collect::<Result<_>>()?,
                ),
                None => record.clone(),
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(key.to_bytes()) {
                added += seen_bytes(slot.key());
                slot.insert(time);
                out.push(record);
            }
        }
        let mut evicted = 0;
        if self.evicts {
            seen.retain(|key, time| {
                let keep = time.is_none_or(|time| time > evict_with);
                if !keep {
                    evicted += seen_bytes(key);
                }
                keep
            });
        }
        let bytes = self.bytes.load(Ordering::Relaxed) + added - evicted;
        self.bytes.store(bytes, Ordering::Relaxed);
        self.clock.report(self.step, seen.len(), late, late);
        routed.finish(self.late.as_deref());
        Ok(dataset(&out))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

/// The bytes a key seen counts for: the key and its event time.
fn seen_bytes(key: &[u8]) -> usize {
    key.len() + std::mem::size_of::<Option<i64>>()
}

/// The keys seen, with their event times.
impl OperatorState for Dedup {
    fn kind(&self) -> &'static str {
        "dedup"
    }

    fn save(&self) -> Vec<u8> {
        let entries = self
            .lock()
            .iter()
            .map(|(key, time)| {
                Value::Tuple(vec![
                    Value::Bytes(key.clone()),
                    time.map_or(Value::Null, Value::Int),
                ])
            })
            .collect();
        Value::List(entries).to_bytes()
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let Value::List(entries) = Value::decode(saved)? else {
            bail!("the checkpointed deduplication state is not a list")
        };
        let mut restored = HashMap::with_capacity(entries.len());
        for entry in entries {
            match entry {
                Value::Tuple(parts) => match parts.as_slice() {
                    [Value::Bytes(key), Value::Int(time)] => {
                        restored.insert(key.clone(), Some(*time));
                    }
                    [Value::Bytes(key), Value::Null] => {
                        restored.insert(key.clone(), None);
                    }
                    _ => bail!("a checkpointed deduplication key is malformed"),
                },
                _ => bail!("a checkpointed deduplication key is not a tuple"),
            }
        }
        let mut seen = self.lock();
        *seen = restored;
        let bytes = seen.keys().map(|key| seen_bytes(key)).sum();
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn entries(&self) -> usize {
        self.lock().len()
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_time::{EventTimeSettings, TimeField, TimeSpec};

    fn dedup(fields: &[&str]) -> (Arc<EventClock>, Dedup, usize) {
        let clock = Arc::new(EventClock::new(EventTimeSettings::default()));
        let input = clock.register_input(1_000);
        let time = TimeSpec {
            field: TimeField::Named("t".into()),
            unit_ms: 1000,
            delay_ms: Some(1_000),
        };
        let fields = Some(fields.iter().map(|f| f.to_string()).collect());
        let dedup = Dedup::new(
            fields,
            Some(EventTimes::read(time)),
            clock.clone(),
            "s/1".into(),
        );
        (clock, dedup, input)
    }

    fn batch(clock: &EventClock, dedup: &Dedup, input: usize, rows: &[(i64, i64)]) -> usize {
        let records: Vec<Value> = rows
            .iter()
            .map(|(id, t)| record::record(vec![("id", Value::Int(*id)), ("t", Value::Int(*t))]))
            .collect();
        clock.begin(!records.is_empty());
        clock.observe(
            input,
            &rows.iter().map(|(_, t)| t * 1000).collect::<Vec<_>>(),
        );
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        let out = dedup.apply(vec![dataset(&records)], &context).unwrap();
        clock.end();
        out.len()
    }

    #[test]
    fn keys_are_evicted_only_when_the_event_time_is_one_of_them() {
        let (clock, by_time, input) = dedup(&["id", "t"]);
        assert_eq!(
            batch(&clock, &by_time, input, &[(1, 1), (1, 1), (2, 10)]),
            2
        );
        batch(&clock, &by_time, input, &[]);
        assert_eq!(by_time.entries(), 1);
        // At or before the watermark (9 s): late, dropped even though the key is new.
        assert_eq!(batch(&clock, &by_time, input, &[(3, 9)]), 0);
        let (clock, by_id, input) = dedup(&["id"]);
        batch(&clock, &by_id, input, &[(1, 1), (2, 10)]);
        batch(&clock, &by_id, input, &[]);
        assert_eq!(by_id.entries(), 2);
        assert_eq!(batch(&clock, &by_id, input, &[(1, 20), (3, 20)]), 1);
        let saved = by_id.save();
        let (_, restored, _) = dedup(&["id"]);
        restored.restore(&saved).unwrap();
        assert_eq!(restored.entries(), 3);
        assert_eq!(restored.bytes(), by_id.bytes());
    }

    /// The bytes of `dedup`'s keys counted afresh, key by key.
    fn recounted(dedup: &Dedup) -> usize {
        dedup.lock().keys().map(|key| seen_bytes(key)).sum()
    }

    #[test]
    fn the_running_byte_count_matches_a_recount_as_keys_come_and_are_evicted() {
        let (clock, by_time, input) = dedup(&["id", "t"]);
        for (t, rows) in [
            (1, vec![(1, 1), (1, 1), (22, 10)]),
            (2, vec![]),
            (3, vec![(333, 12), (4, 30)]),
            (4, vec![(5, 40)]),
            (5, vec![]),
        ] {
            batch(&clock, &by_time, input, &rows);
            assert_eq!(by_time.bytes(), recounted(&by_time), "batch {t}");
        }
        assert!(by_time.entries() >= 1 && by_time.bytes() > 0);
    }

    #[test]
    fn late_rows_are_routed_and_duplicates_are_not() {
        let (clock, dedup, input) = dedup(&["id", "t"]);
        let late = Arc::new(LateRows::default());
        let dedup = dedup.with_late_rows(late.clone());
        let stream = crate::event_time::LateStream {
            rows: late,
            step: "s/1".into(),
        };
        batch(&clock, &dedup, input, &[(1, 10)]);
        batch(&clock, &dedup, input, &[]);
        // Watermark 9 s: (2, 9) is late, (1, 10) a duplicate, (3, 10) new.
        assert_eq!(batch(&clock, &dedup, input, &[(2, 9), (1, 10), (3, 10)]), 1);
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        let routed = values(&stream.apply(Vec::new(), &context).unwrap()).unwrap();
        assert_eq!(
            routed,
            [record::record(vec![
                ("id", Value::Int(2)),
                ("t", Value::Int(9))
            ])]
        );
    }
}
