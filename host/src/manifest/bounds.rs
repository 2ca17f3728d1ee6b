//! The range of every number, size and duration a manifest may hold.
//!
//! `sluice check` refuses a value outside its range, so that nothing a manifest says can
//! overflow a computation, hang or exhaust memory once the job runs. `docs/manifest.md`
//! lists the same ranges (a test below keeps the two in step).

use std::fmt;
use std::time::Duration;

/// The inclusive range of the values one manifest key may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds<T> {
    /// The smallest value allowed.
    pub min: T,
    /// The largest value allowed.
    pub max: T,
}

impl<T: Quantity> Bounds<T> {
    /// Whether `value` is in the range.
    pub fn contains(&self, value: T) -> bool {
        self.min <= value && value <= self.max
    }
}

impl<T: Quantity> fmt::Display for Bounds<T> {
    /// As error messages and docs/manifest.md write it: `from 10ms to 24h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from {} to {}", self.min.show(), self.max.show())
    }
}

/// A kind of value a manifest key holds, shown as a manifest would write it.
pub trait Quantity: Copy + Ord {
    /// The value as a manifest would write it (`10ms`, `4GiB`, `10_000`).
    fn show(self) -> String;
}

/// A count (of records, batches, partitions ...). Counts from 10,000 up are grouped by
/// thousands with `_`, as TOML allows.
impl Quantity for u64 {
    fn show(self) -> String {
        let digits = self.to_string();
        if self < 10_000 {
            return digits;
        }
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                grouped.push('_');
            }
            grouped.push(digit);
        }
        grouped
    }
}

/// A duration, in the largest unit it is a whole number of (days only past one: `24h`
/// reads better than `1d`).
impl Quantity for Duration {
    fn show(self) -> String {
        const UNITS: [(&str, u128); 6] = [
            ("d", 86_400_000_000_000),
            ("h", 3_600_000_000_000),
            ("min", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("ns", 1),
        ];
        let nanos = self.as_nanos();
        let (unit, size) = UNITS
            .into_iter()
            .find(|(unit, size)| {
                nanos.is_multiple_of(*size) && nanos >= *size && (*unit != "d" || nanos > *size)
            })
            .unwrap_or(("s", 1_000_000_000));
        format!("{}{unit}", nanos / size)
    }
}

/// A number of bytes, as a size key holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

/// In the largest binary unit the size is a whole number of.
impl Quantity for Bytes {
    fn show(self) -> String {
        const UNITS: [(&str, u64); 4] = [
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
            ("B", 1),
        ];
        let (unit, size) = UNITS
            .into_iter()
            .find(|(_, size)| self.0.is_multiple_of(*size) && self.0 >= *size)
            .unwrap_or(("B", 1));
        format!("{}{unit}", self.0 / size)
    }
}

const fn counts(min: u64, max: u64) -> Bounds<u64> {
    Bounds { min, max }
}

const fn durations(min: Duration, max: Duration) -> Bounds<Duration> {
    Bounds { min, max }
}

const fn sizes(min: u64, max: u64) -> Bounds<Bytes> {
    Bounds {
        min: Bytes(min),
        max: Bytes(max),
    }
}

const MIB: u64 = 1 << 20;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// `batch_interval`: a batch every 10 ms at most often (the batcher's resolution), once
/// a day at least.
pub const BATCH_INTERVAL: Bounds<Duration> =
    durations(Duration::from_millis(10), Duration::from_secs(DAY));

/// `partitions`, and `partitions` of a `repartition` step: each partition is a task and a
/// data set of its own in every step, so a few per core is what helps.
pub const PARTITIONS: Bounds<u64> = counts(1, 1024);

/// `[limits] memory`: a wasm32 guest cannot address more than 4 GiB.
pub const MEMORY: Bounds<Bytes> = sizes(MIB, 4 << 30);

/// `[limits] call_timeout`.
pub const CALL_TIMEOUT: Bounds<Duration> =
    durations(Duration::from_millis(10), Duration::from_secs(HOUR));

/// `[limits] output`: guest stdout+stderr kept per call (failure messages are capped
/// alike, so the floor keeps them readable).
pub const OUTPUT: Bounds<Bytes> = sizes(1 << 10, 64 * MIB);

/// `[limits] transfer`: the most bytes one UDF call may pass from the guest to the host.
pub const TRANSFER: Bounds<Bytes> = sizes(MIB, 1 << 30);

/// `[checkpoint] every`, in batches: the log keeps every batch since the older of the
/// two newest checkpoints, and a restart re-runs up to this many.
pub const CHECKPOINT_EVERY: Bounds<u64> = counts(1, 10_000);

/// `max_queued_batches`: cut batches waiting to be computed, each holding its records.
pub const MAX_QUEUED_BATCHES: Bounds<u64> = counts(1, 10_000);

/// `port` of a socket source.
pub const PORT: Bounds<u64> = counts(1, 65_535);

/// `lines_per_batch` of a file source.
pub const LINES_PER_BATCH: Bounds<u64> = counts(1, 10_000_000);

/// `rate` of a generator source, in records per second.
pub const GENERATOR_RATE: Bounds<u64> = counts(1, 10_000_000);

/// `limit` of a generator source, in records: any count a TOML integer can hold.
pub const GENERATOR_LIMIT: Bounds<u64> = counts(1, i64::MAX as u64);

/// `window` and `slide` of a window step, in batch intervals: a window keeps a partial
/// result (or the records) of every batch it spans.
pub const WINDOW_BATCHES: Bounds<u64> = counts(1, 10_000);

/// `timeout` of a `map_with_state` step.
pub const STATE_TIMEOUT: Bounds<Duration> =
    durations(Duration::from_millis(10), Duration::from_secs(366 * DAY));

/// `timeout_check_every` of a `map_with_state` step, in batches.
pub const TIMEOUT_CHECK_EVERY: Bounds<u64> = counts(1, 10_000);

/// Event-time `window`, `slide` and `session_gap` (`assign_window`, `event_aggregate`):
/// at least a millisecond, at most a leap year, so that window ends cannot overflow.
pub const EVENT_SPAN: Bounds<Duration> =
    durations(Duration::from_millis(1), Duration::from_secs(366 * DAY));

/// `delay` (`event_time`) and `offset` (event-time windows): none to a leap year.
pub const EVENT_DELAY: Bounds<Duration> = durations(Duration::ZERO, Duration::from_secs(366 * DAY));

/// `max_file_age` of a directory source: how long its log remembers a file.
pub const MAX_FILE_AGE: Bounds<Duration> =
    durations(Duration::from_secs(1), Duration::from_secs(3660 * DAY));

/// `max_file_age` of a directory source when the manifest does not say (Spark's default).
pub const MAX_FILE_AGE_DEFAULT: Duration = Duration::from_secs(7 * DAY);

/// `max_records_per_partition` of a Kafka source, per batch.
pub const MAX_RECORDS_PER_PARTITION: Bounds<u64> = counts(1, 100_000_000);

/// `initial_rate` and `max_rate` of a Kafka source, in records per second.
pub const RATE: Bounds<u64> = counts(1, 100_000_000);

/// `num` of a print sink, in records per batch.
pub const PRINT_NUM: Bounds<u64> = counts(1, 1_000_000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_show_as_a_manifest_writes_them() {
        assert_eq!(BATCH_INTERVAL.to_string(), "from 10ms to 24h");
        assert_eq!(Duration::from_secs(2 * DAY).show(), "2d");
        assert_eq!(Duration::ZERO.show(), "0s");
        assert_eq!(CALL_TIMEOUT.to_string(), "from 10ms to 1h");
        assert_eq!(STATE_TIMEOUT.to_string(), "from 10ms to 366d");
        assert_eq!(Duration::from_micros(1500).show(), "1500000ns");
        assert_eq!(Duration::from_secs(90).show(), "90s");
        assert_eq!(MEMORY.to_string(), "from 1MiB to 4GiB");
        assert_eq!(OUTPUT.to_string(), "from 1KiB to 64MiB");
        assert_eq!(Bytes(1536).show(), "1536B");
        assert_eq!(Bytes(0).show(), "0B");
        assert_eq!(PARTITIONS.to_string(), "from 1 to 1024");
        assert_eq!(GENERATOR_RATE.to_string(), "from 1 to 10_000_000");
        assert_eq!(PORT.to_string(), "from 1 to 65_535");
        assert_eq!(GENERATOR_LIMIT.max.show(), "9_223_372_036_854_775_807");
        assert_eq!(WINDOW_BATCHES.max.show(), "10_000");
    }

    #[test]
    fn docs_give_every_range() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/manifest.md"))
                .unwrap();
        let rows = [
            ("`batch_interval`", BATCH_INTERVAL.to_string()),
            (
                "`partitions` (top level, and of a `repartition` step)",
                PARTITIONS.to_string(),
            ),
            ("`[limits] memory`", MEMORY.to_string()),
            ("`[limits] call_timeout`", CALL_TIMEOUT.to_string()),
            ("`[limits] output`", OUTPUT.to_string()),
            ("`[limits] transfer`", TRANSFER.to_string()),
            ("`[checkpoint] every`", CHECKPOINT_EVERY.to_string()),
            ("`max_queued_batches`", MAX_QUEUED_BATCHES.to_string()),
            ("`port` (socket source)", PORT.to_string()),
            (
                "`lines_per_batch` (file source)",
                LINES_PER_BATCH.to_string(),
            ),
            ("`rate` (generator source)", GENERATOR_RATE.to_string()),
            ("`limit` (generator source)", GENERATOR_LIMIT.to_string()),
            (
                "`window`, `slide` (window steps)",
                format!("{WINDOW_BATCHES} batch intervals"),
            ),
            ("`timeout` (`map_with_state`)", STATE_TIMEOUT.to_string()),
            (
                "`timeout_check_every` (`map_with_state`)",
                TIMEOUT_CHECK_EVERY.to_string(),
            ),
            ("`num` (print sink)", PRINT_NUM.to_string()),
            (
                "`max_file_age` (directory source)",
                MAX_FILE_AGE.to_string(),
            ),
            (
                "`initial_rate`, `max_rate` (kafka source)",
                RATE.to_string(),
            ),
            (
                "`max_records_per_partition` (kafka source)",
                MAX_RECORDS_PER_PARTITION.to_string(),
            ),
            (
                "`window`, `slide`, `session_gap` (event-time steps)",
                EVENT_SPAN.to_string(),
            ),
            (
                "`delay` (`event_time`), `offset` (event-time windows)",
                EVENT_DELAY.to_string(),
            ),
            (
                "the manifest itself",
                format!(
                    "a regular file of at most {} MiB",
                    super::super::MAX_MANIFEST_BYTES >> 20
                ),
            ),
        ];
        for (key, range) in rows {
            let row = format!("| {key} | {range} |");
            assert!(
                docs.contains(&row),
                "docs/manifest.md lacks the row `{row}`"
            );
        }
    }

    #[test]
    fn ranges_are_inclusive() {
        assert!(PARTITIONS.contains(1) && PARTITIONS.contains(1024));
        assert!(!PARTITIONS.contains(0) && !PARTITIONS.contains(1025));
        assert!(MEMORY.contains(Bytes(4 << 30)) && !MEMORY.contains(Bytes((4 << 30) + 1)));
        assert!(!MEMORY.contains(Bytes(0)));
    }
}
