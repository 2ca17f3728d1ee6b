//! Stream-stream joins with watermarks (Spark's symmetric hash join): both sides keep
//! their rows in state until no future row of the other side can match them, which a
//! window key or a time-range condition tells; outer joins emit a row without a match
//! when it leaves the state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use sluice_abi::Value;

use super::clock::EventClock;
use super::late::{LateCollector, LateRows};
use super::record;
use super::step::{EventTimes, dataset, values};
use crate::dataset::Dataset;
use crate::operators::{BatchContext, JoinKind, Operator, OperatorState, inputs_of};

/// `left time - right time` must fall in this interval (ms; `None` is unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Lower bound, and whether it is included.
    pub lower: Option<(i64, bool)>,
    /// Upper bound, and whether it is included.
    pub upper: Option<(i64, bool)>,
}

impl TimeRange {
    /// Reads `[-5s, 5s]`, `(-inf, -5s)` ...: brackets include a bound, parentheses do not.
    pub fn parse(text: &str) -> Option<TimeRange> {
        let text = text.trim();
        let lower_included = match text.chars().next()? {
            '[' => true,
            '(' => false,
            _ => return None,
        };
        let upper_included = match text.chars().last()? {
            ']' => true,
            ')' => false,
            _ => return None,
        };
        let (lower, upper) = text[1..text.len() - 1].split_once(',')?;
        let bound = |text: &str, included: bool| -> Option<Option<(i64, bool)>> {
            let text = text.trim();
            if matches!(text, "-inf" | "inf" | "+inf") {
                return Some(None);
            }
            let (sign, magnitude) = match text.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, text.strip_prefix('+').unwrap_or(text)),
            };
            let ms = i64::try_from(humantime::parse_duration(magnitude).ok()?.as_millis()).ok()?;
            Some(Some((sign * ms, included)))
        };
        Some(TimeRange {
            lower: bound(lower, lower_included)?,
            upper: bound(upper, upper_included)?,
        })
    }

    fn contains(&self, difference: i64) -> bool {
        let above = self.lower.is_none_or(|(bound, included)| {
            difference > bound || (included && difference == bound)
        });
        let below = self.upper.is_none_or(|(bound, included)| {
            difference < bound || (included && difference == bound)
        });
        above && below
    }
}

/// The `event_join` step's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSpec {
    /// Inner or outer.
    pub kind: JoinKind,
    /// Key fields of this stream's records.
    pub keys: Vec<String>,
    /// Key fields of the other stream's records, equal to `keys` in order.
    pub other_keys: Vec<String>,
    /// The time condition, if any.
    pub time_range: Option<TimeRange>,
}

#[derive(Debug, Clone)]
struct Row {
    record: Value,
    key: Vec<u8>,
    time: Option<i64>,
    /// The end of the window among the key fields, if there is one.
    window_end: Option<i64>,
    matched: bool,
    /// The bytes it counts for in the state: its encoded record, its key and itself.
    bytes: usize,
}

/// `event_join`: emits `{"left": record, "right": record}` for each pair of rows with
/// equal keys (and times in the range), and for outer joins a row without a match (the
/// other side `null`) once the watermark removes it from the state.
pub struct EventJoin {
    spec: JoinSpec,
    times: [Option<EventTimes>; 2],
    clock: Arc<EventClock>,
    step: usize,
    state: Mutex<[Vec<Row>; 2]>,
    /// The bytes the state's rows count for, counted as they come and go.
    bytes: AtomicUsize,
    /// Where the rows of either side dropped as late go, if the step routes them.
    late: Option<Arc<LateRows>>,
}

impl EventJoin {
    /// The step `id`, reading event times with `times` (this stream's, the other's).
    pub fn new(
        spec: JoinSpec,
        times: [Option<EventTimes>; 2],
        clock: Arc<EventClock>,
        id: String,
    ) -> Self {
        let step = clock.register_step(id, true);
        Self {
            spec,
            times,
            clock,
            step,
            state: Mutex::default(),
            bytes: AtomicUsize::new(0),
            late: None,
        }
    }

    /// Routes the rows of either side dropped as late to `late` (this stream's first).
    pub fn with_late_rows(mut self, late: Arc<LateRows>) -> Self {
        self.late = Some(late);
        self
    }

    /// The row of `record` (`encoded_len` bytes encoded) on `side`.
    fn row(
        &self,
        side: usize,
        record: Value,
        encoded_len: usize,
        time: Option<i64>,
        step: &str,
    ) -> Result<Row> {
        let keys = if side == 0 {
            &self.spec.keys
        } else {
            &self.spec.other_keys
        };
        let mut key = Vec::with_capacity(keys.len());
        let mut window_end = None;
        for name in keys {
            let value = record::field(&record, name, step)?;
            if let Some(Value::Int(end)) = value.field("end") {
                window_end = Some(*end);
            }
            key.push(value.clone());
        }
        let key = Value::Tuple(key).to_bytes();
        Ok(Row {
            bytes: encoded_len + key.len() + std::mem::size_of::<Row>(),
            key,
            record,
            time,
            window_end,
            matched: false,
        })
    }

    /// The event times of `records` of `side`.
    fn times_of(&self, side: usize, records: &[Value], step: &str) -> Result<Vec<Option<i64>>> {
        match &self.times[side] {
            Some(time) => time.times(&dataset(records), step),
            None => Ok(vec![None; records.len()]),
        }
    }

    fn pair(&self, left: &Row, right: &Row) -> bool {
        left.key == right.key
            && self
                .spec
                .time_range
                .is_none_or(|range| match (left.time, right.time) {
                    (Some(l), Some(r)) => range.contains(l - r),
                    _ => false,
                })
    }

    /// Whether no future row of the other side (all later than `watermark`) can match
    /// `row` of `side`.
    fn expired(&self, side: usize, row: &Row, watermark: i64) -> bool {
        if row.window_end.is_some_and(|end| end <= watermark) {
            return true;
        }
        let (Some(range), Some(time)) = (self.spec.time_range, row.time) else {
            return false;
        };
        // Left: a future right time r > W must satisfy r <= left - lower; right: a future
        // left time l > W must satisfy l <= right + upper.
        let latest_match = if side == 0 {
            range.lower.map(|(lower, _)| time - lower)
        } else {
            range.upper.map(|(upper, _)| time + upper)
        };
        latest_match.is_some_and(|latest| latest <= watermark)
    }

    fn output(left: Option<&Value>, right: Option<&Value>) -> Value {
        let side = |value: Option<&Value>| value.cloned().unwrap_or(Value::Null);
        record::record(vec![("left", side(left)), ("right", side(right))])
    }

    fn keeps_unmatched(&self, side: usize) -> bool {
        matches!(
            (self.spec.kind, side),
            (JoinKind::FullOuter, _) | (JoinKind::LeftOuter, 0) | (JoinKind::RightOuter, 1)
        )
    }
}

impl Operator for EventJoin {
    fn describe(&self) -> String {
        format!(
            "event_join {:?} on {:?} = {:?}",
            self.spec.kind, self.spec.keys, self.spec.other_keys
        )
    }

    fn arity(&self) -> Option<usize> {
        Some(2)
    }

    fn apply(&self, inputs: Vec<Dataset>, _batch: &BatchContext) -> Result<Dataset> {
        let [left, right] = inputs_of::<2>(inputs)?;
        let Some((late_with, evict_with)) = self.clock.watermarks() else {
            return Ok(Dataset::default());
        };
        let step = self.describe();
        let watermarked = self.clock.watermarked();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut late = 0;
        let (mut added, mut removed) = (0, 0);
        let mut routed = LateCollector::new(self.late.as_deref());
        // Rows are numbered across both sides, this stream's first.
        let mut positions = 0..;
        for (side, data) in [left, right].into_iter().enumerate() {
            let records = values(&data)?;
            let times = self.times_of(side, &records, &step)?;
            for ((record, time), encoded) in records.into_iter().zip(times).zip(data.records()) {
                crate::scheduler::slice::tick()?;
                let position = positions.next().expect("unbounded");
                let mut row = self.row(side, record, encoded.len(), time, &step)?;
                let is_late = watermarked
                    && (row.time.is_some_and(|time| time <= late_with)
                        || row.window_end.is_some_and(|end| end <= late_with));
                if is_late {
                    routed.dropped(position, encoded);
                    late += 1;
                    continue;
                }
                for other in state[1 - side].iter_mut() {
                    crate::scheduler::slice::tick()?;
                    let (l, r) = if side == 0 {
                        (&row, &*other)
                    } else {
                        (&*other, &row)
                    };
                    if self.pair(l, r) {
                        out.push(Self::output(Some(&l.record), Some(&r.record)));
                        other.matched = true;
                        row.matched = true;
                    }
                }
                added += row.bytes;
                state[side].push(row);
            }
        }
        if watermarked {
            for side in 0..2 {
                let rows = std::mem::take(&mut state[side]);
                let (gone, kept): (Vec<Row>, Vec<Row>) = rows
                    .into_iter()
                    .partition(|row| self.expired(side, row, evict_with));
                state[side] = kept;
                removed += gone.iter().map(|row| row.bytes).sum::<usize>();
                for row in gone.iter().filter(|row| !row.matched) {
                    crate::scheduler::slice::tick()?;
                    if self.keeps_unmatched(side) {
                        let record = Some(&row.record);
                        out.push(if side == 0 {
                            Self::output(record, None)
                        } else {
                            Self::output(None, record)
                        });
                    }
                }
            }
        }
        let bytes = self.bytes.load(Ordering::Relaxed) + added - removed;
        self.bytes.store(bytes, Ordering::Relaxed);
        self.clock
            .report(self.step, state[0].len() + state[1].len(), late, late);
        routed.finish(self.late.as_deref());
        Ok(dataset(&out))
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(self)
    }
}

/// Both sides' rows, with whether each has matched.
impl OperatorState for EventJoin {
    fn kind(&self) -> &'static str {
        "event_join"
    }

    fn save(&self) -> Vec<u8> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let side = |rows: &[Row]| {
            Value::List(
                rows.iter()
                    .map(|row| Value::Tuple(vec![row.record.clone(), Value::Bool(row.matched)]))
                    .collect(),
            )
        };
        Value::Tuple(vec![side(&state[0]), side(&state[1])]).to_bytes()
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let Value::Tuple(sides) = Value::decode(saved)? else {
            bail!("the checkpointed join state is not a tuple")
        };
        let step = self.describe();
        let mut restored: [Vec<Row>; 2] = Default::default();
        for (side, rows) in sides.into_iter().enumerate().take(2) {
            let Value::List(rows) = rows else {
                bail!("a checkpointed join side is not a list")
            };
            let mut records = Vec::with_capacity(rows.len());
            let mut matched = Vec::with_capacity(rows.len());
            for row in rows {
                let Value::Tuple(parts) = row else {
                    bail!("a checkpointed join row is not a tuple")
                };
                let [record, Value::Bool(was_matched)] = <[Value; 2]>::try_from(parts)
                    .map_err(|_| anyhow::anyhow!("a checkpointed join row is malformed"))?
                else {
                    bail!("a checkpointed join row is malformed")
                };
                records.push(record);
                matched.push(was_matched);
            }
            let times = self.times_of(side, &records, &step)?;
            for ((record, time), was_matched) in records.into_iter().zip(times).zip(matched) {
                let encoded_len = record.to_bytes().len();
                let mut row = self.row(side, record, encoded_len, time, &step)?;
                row.matched = was_matched;
                restored[side].push(row);
            }
        }
        let bytes = restored.iter().flatten().map(|row| row.bytes).sum();
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = restored;
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn entries(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state[0].len() + state[1].len()
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_time::{EventTimeSettings, LateStream, TimeField, TimeSpec};

    fn row(key: &str, seconds: i64) -> Value {
        record::record(vec![
            ("k", Value::String(key.into())),
            ("t", Value::Int(seconds)),
        ])
    }

    #[test]
    fn late_rows_of_either_side_are_routed_and_matched_ones_are_not() {
        let clock = Arc::new(EventClock::new(EventTimeSettings::default()));
        let inputs = [clock.register_input(0), clock.register_input(0)];
        let time = EventTimes::read(TimeSpec {
            field: TimeField::Named("t".into()),
            unit_ms: 1000,
            delay_ms: Some(0),
        });
        let spec = JoinSpec {
            kind: JoinKind::Inner,
            keys: vec!["k".into()],
            other_keys: vec!["k".into()],
            time_range: TimeRange::parse("[-5s, 5s]"),
        };
        let late = Arc::new(LateRows::default());
        let join = EventJoin::new(
            spec,
            [Some(time.clone()), Some(time)],
            clock.clone(),
            "s/2".into(),
        )
        .with_late_rows(late.clone());
        let stream = LateStream {
            rows: late,
            step: "s/2".into(),
        };
        let context = BatchContext {
            time_ms: 0,
            partitions: 1,
            number: 1,
        };
        let batch = |left: &[Value], right: &[Value]| -> (usize, Vec<Value>) {
            clock.begin(!left.is_empty() || !right.is_empty());
            for (input, rows) in inputs.into_iter().zip([left, right]) {
                let times: Vec<i64> = rows
                    .iter()
                    .map(|row| match row.field("t") {
                        Some(Value::Int(seconds)) => seconds * 1000,
                        _ => unreachable!(),
                    })
                    .collect();
                clock.observe(input, &times);
            }
            let out = join
                .apply(vec![dataset(left), dataset(right)], &context)
                .unwrap();
            clock.end();
            let routed = values(&stream.apply(Vec::new(), &context).unwrap()).unwrap();
            (out.len(), routed)
        };
        assert_eq!(batch(&[row("a", 10)], &[row("a", 10)]), (1, Vec::new()));
        batch(&[], &[]);
        // Watermark 10 s: 9 s (left) and 4 s (right) are late; 12 s matches the right 10 s.
        let (pairs, routed) = batch(&[row("a", 9), row("a", 12)], &[row("b", 4)]);
        assert_eq!((pairs, routed), (1, vec![row("a", 9), row("b", 4)]));
        assert_eq!(clock.last_report().unwrap().steps[0].late_rows_dropped, 2);
        // The state's bytes, counted as rows came and went, are those of its rows now,
        // and a restore counts the same.
        let recounted = |join: &EventJoin| -> usize {
            let state = join.state.lock().unwrap();
            let row_bytes = |row: &Row| {
                row.record.to_bytes().len() + row.key.len() + std::mem::size_of::<Row>()
            };
            state.iter().flatten().map(row_bytes).sum()
        };
        assert_eq!(join.bytes(), recounted(&join));
        batch(&[row("c", 30)], &[]);
        batch(&[], &[]);
        assert_eq!(join.bytes(), recounted(&join), "after evictions");
        assert!(join.entries() > 0);
        let again = EventJoin::new(
            join.spec.clone(),
            join.times.clone(),
            clock.clone(),
            "s/3".into(),
        );
        again.restore(&join.save()).unwrap();
        assert_eq!(again.bytes(), join.bytes());
    }

    #[test]
    fn time_ranges_read_with_their_bounds() {
        let range = TimeRange::parse("[-5s, 5s]").unwrap();
        assert!(range.contains(-5_000) && range.contains(5_000) && !range.contains(5_001));
        let range = TimeRange::parse("(-inf, -5s)").unwrap();
        assert!(range.contains(-100_000) && !range.contains(-5_000));
        assert!(TimeRange::parse("[1s, 2s").is_none());
        assert!(TimeRange::parse("[x, 2s]").is_none());
    }
}
