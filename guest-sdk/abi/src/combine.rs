//! Map-side combining: a fused chain of map, flat-map and filter functions run over a
//! partition, and the `(key, value)` pairs it makes folded by key before they leave the
//! code that made them, as Spark combines in the map task before the shuffle.
//!
//! A [`Combiner`] keeps one combiner per key across any number of [`add`](Combiner::add)s
//! (the chunks of one partition) and hands them all out at [`flush`](Combiner::flush).
//! Each record goes through the chain's steps one at a time ([`OneRecord`]): a step's
//! result waits in one small buffer per step, never gathered into a batch, and a pair is
//! folded into its key's combiner as soon as it is made. Guests run it behind the
//! `combine` export; the host runs the same code natively.

use crate::batch::Batch;
use crate::encoding::{Encoder, extend_short, int_value, pair_parts};
use crate::function::{Failure, FoldOneFn, MapOneFn, OneRecord, Progress};
use crate::handoff::{Emit, Made, Record};
use crate::table::{KeyTable, Slot, Spill, Stored};

/// How a key's values are folded into its combiner.
#[derive(Debug, Clone, Copy)]
pub struct Merge {
    /// value -> combiner, for a key's first value (combineByKey's `createCombiner`);
    /// `None`: the first value is the combiner (reduceByKey).
    pub create: Option<MapOneFn>,
    /// (combiner, value) -> combiner: a reduce, or a fold when `create` is given.
    pub merge: FoldOneFn,
}

/// Which part of a combining run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Step `n` of the chain (from 0).
    Chain(usize),
    /// Making a key's combiner from its first value.
    Create,
    /// Folding a value into its key's combiner (or taking the record apart as a pair).
    Merge,
}

/// A failed combining run: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The part that failed.
    pub stage: Stage,
    /// The failure, naming the input record it happened on.
    pub failure: Failure,
}

/// Combiners by key, keys in the order first seen.
#[derive(Debug, Default)]
pub struct Combiner {
    /// Each key with its combiner. Short keys (a word's) and combiners (a count) live in
    /// the table's entries, so that finding a key and folding into its combiner touch one
    /// cache line and allocate nothing.
    table: KeyTable<Combined>,
    /// Where a merge or create writes a new combiner that is not an integer.
    merged: Vec<u8>,
    /// The create function's own buffer.
    created: Vec<u8>,
}

/// A key's combiner: an integer (a count, a sum) as it is, so that folding a value into
/// it neither decodes nor encodes it, and anything else canonically encoded.
#[derive(Debug, Clone, Copy)]
enum Combined {
    /// An integer, as its little-endian bytes (an entry then needs no 8-byte alignment,
    /// and stays as small as one of encoded bytes).
    Int([u8; 8]),
    /// Any other value's canonical encoding.
    Encoded(Stored),
}

impl Combined {
    /// Keeps `record`, encoding it into `scratch` first unless it is an integer.
    fn new(record: Record<'_>, scratch: &mut Vec<u8>, spill: &mut Spill) -> Self {
        let int = match record {
            Record::Int(int) => Some(int),
            Record::Encoded { bytes, .. } => int_value(bytes),
            Record::Str(_) | Record::Pair(..) => None,
        };
        if let Some(int) = int {
            return Self::Int(int.to_le_bytes());
        }
        scratch.clear();
        record.encode_into(scratch);
        Self::Encoded(Stored::new(scratch, spill))
    }

    /// The combiner as a fold reads it. Encoded ones are read as bytes from outside, with
    /// their strings checked: a key's first value may have come from the host unread.
    #[inline]
    fn record<'a>(&'a self, spill: &'a Spill) -> Record<'a> {
        match self {
            Self::Int(bytes) => Record::Int(i64::from_le_bytes(*bytes)),
            Self::Encoded(stored) => Record::outside(stored.get(spill)),
        }
    }

    /// Replaces the combiner with what a fold made: `made`, or if it was encoded, the
    /// bytes `encoded`.
    #[inline]
    fn replace(&mut self, made: Made, encoded: &[u8], spill: &mut Spill) {
        match (made, self) {
            (Made::Int(int), this) => *this = Self::Int(int.to_le_bytes()),
            (Made::Encoded, Self::Encoded(stored)) => stored.replace(encoded, spill),
            (Made::Encoded, this) => *this = Self::Encoded(Stored::new(encoded, spill)),
        }
    }

    /// An upper bound of the combiner's encoded length.
    fn len(&self, spill: &Spill) -> usize {
        match self {
            Self::Int(_) => 10,
            Self::Encoded(stored) => stored.get(spill).len(),
        }
    }

    /// Appends the combiner's canonical encoding to `out`.
    fn encode_into(&self, spill: &Spill, out: &mut Vec<u8>) {
        match self {
            Self::Int(bytes) => Encoder::new(out).write_int(i64::from_le_bytes(*bytes)),
            Self::Encoded(stored) => extend_short(out, stored.get(spill)),
        }
    }
}

impl Combiner {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Runs `chain` (map, flat-map and filter functions) over every record of `input` and
    /// folds the `(key, value)` pairs it makes into the table with `merge`. A failure names
    /// the index in `input` of the record it happened on. On an error the table is left
    /// part-way and should be dropped (or [`clear`](Self::clear)ed).
    pub fn add(&mut self, chain: &[OneRecord], merge: Merge, input: &Batch) -> Result<(), Failed> {
        let progress = Progress::start();
        let mut buffers = vec![Vec::new(); chain.len()];
        for (index, record) in input.iter().enumerate() {
            progress.at(index);
            self.feed(
                chain,
                0,
                &mut buffers,
                index,
                Record::outside(record),
                merge,
            )?;
        }
        Ok(())
    }

    /// Runs `record`, the result of steps before `step` for input record `index`, through
    /// the rest of the chain, `chain`, and into the table.
    fn feed(
        &mut self,
        chain: &[OneRecord],
        step: usize,
        buffers: &mut [Vec<u8>],
        index: usize,
        record: Record<'_>,
        merge: Merge,
    ) -> Result<(), Failed> {
        let Some((function, rest)) = chain.split_first() else {
            return self.insert(index, record, merge);
        };
        let (out, later) = buffers.split_first_mut().expect("one buffer per step");
        let failed = |failure| Failed {
            stage: Stage::Chain(step),
            failure,
        };
        let mut pass_on = |made: Record<'_>| self.feed(rest, step + 1, later, index, made, merge);
        match *function {
            OneRecord::Filter(run) => {
                if run(index, record).map_err(failed)? {
                    pass_on(record)
                } else {
                    Ok(())
                }
            }
            OneRecord::Map(run) => emitting(|emit| run(index, record, out, emit), pass_on, failed),
            OneRecord::FlatMap(run) => {
                emitting(|emit| run(index, record, out, emit), pass_on, failed)
            }
            OneRecord::Fold(_) | OneRecord::None => Err(failed(Failure::new(
                "only map, flat-map and filter functions run in a chain",
            ))),
        }
    }

    /// Folds one `(key, value)` pair, made from input record `index`, into the table.
    fn insert(&mut self, index: usize, pair: Record<'_>, merge: Merge) -> Result<(), Failed> {
        let failed = |stage| move |failure| Failed { stage, failure };
        let (key, value) = match pair {
            Record::Pair(key, &value) => Some((key, value)),
            Record::Encoded {
                bytes,
                encoded_here,
            } => pair_parts(bytes).map(|(key, value)| {
                let value = Record::Encoded {
                    bytes: value,
                    encoded_here,
                };
                (key, value)
            }),
            Record::Str(_) | Record::Int(_) => None,
        }
        .ok_or_else(|| failed(Stage::Merge)(not_a_pair(index, pair)))?;
        let Self {
            table,
            merged,
            created,
        } = self;
        let mut vacant = match table.slot(key) {
            Slot::Found {
                value: combiner,
                spill,
            } => {
                let current = combiner.record(spill);
                let made =
                    (merge.merge)(index, current, value, merged).map_err(failed(Stage::Merge))?;
                combiner.replace(made, merged, spill);
                return Ok(());
            }
            Slot::Vacant(vacant) => vacant,
        };
        let combiner = match merge.create {
            Some(create) => {
                let mut made = None;
                create(index, value, created, &mut |combiner| {
                    made = Some(Combined::new(combiner, merged, vacant.spill()));
                    Ok(())
                })
                .map_err(failed(Stage::Create))?;
                made.expect("a map function makes one record")
            }
            None => Combined::new(value, merged, vacant.spill()),
        };
        vacant.insert(combiner);
        Ok(())
    }

    /// Every key with its combiner as a `(key, combiner)` pair, keys in the order first
    /// seen; the table is left empty.
    pub fn flush(&mut self) -> Batch {
        let spill = self.table.spill();
        let bytes = self
            .table
            .in_order()
            .map(|(key, combiner)| 2 + key.len() + combiner.len(spill))
            .sum();
        let mut pairs = Batch::with_capacity(self.len(), bytes);
        for (key, combiner) in self.table.in_order() {
            pairs.push_with(|out| {
                Encoder::new(out).tuple_header(2);
                extend_short(out, key);
                combiner.encode_into(spill, out);
            });
        }
        self.clear();
        pairs
    }

    /// Empties the table, keeping its room for the next partition.
    pub fn clear(&mut self) {
        self.table.clear();
    }
}

/// Runs `run`, a step that sends its results to the emitter it is given, with `pass_on`
/// as that emitter: a later step's failure passes back through the step as a bare
/// marker, and is kept here as it was; the step's own failures are named by `failed`.
fn emitting<'p>(
    run: impl FnOnce(&mut Emit<'_>) -> Result<(), Failure>,
    mut pass_on: impl FnMut(Record<'_>) -> Result<(), Failed> + 'p,
    failed: impl FnOnce(Failure) -> Failed,
) -> Result<(), Failed> {
    let mut failed_later = None;
    let ran = run(&mut |made| {
        pass_on(made).map_err(|later| {
            failed_later = Some(later);
            Failure::new(String::new())
        })
    });
    match (ran, failed_later) {
        (_, Some(later)) => Err(later),
        (ran, None) => ran.map_err(failed),
    }
}

#[cold]
fn not_a_pair(index: usize, record: Record<'_>) -> Failure {
    let shown = record.to_json();
    Failure::at(
        index,
        format!(
            "the chain made {shown} of record {index}, which is not a (key, value) pair: \
             combining by key needs 2-element tuples"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::{NamedFunction, fold_one};

    fn sum(a: i64, b: i64) -> i64 {
        a + b
    }

    fn pairs<K: serde::Serialize>(items: &[(K, i64)]) -> Batch {
        let mut batch = Batch::new();
        items.iter().for_each(|pair| batch.push(pair).unwrap());
        batch
    }

    fn decoded<K: serde::de::DeserializeOwned>(batch: &Batch) -> Vec<(K, i64)> {
        batch
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect()
    }

    const SUM: Merge = Merge {
        create: None,
        merge: |index, combiner, value, out| fold_one(index, combiner, value, out, sum),
    };

    fn words(line: &str) -> Vec<&str> {
        line.split(' ').collect()
    }
    fn is_long(word: &str) -> bool {
        word.len() > 2
    }
    fn with_one(word: &str) -> (&str, i64) {
        (word, 1)
    }
    fn no_zeros(number: i64) -> i64 {
        assert!(number != 0, "zero");
        number
    }
    const WORD_COUNT: &[NamedFunction] = crate::functions! {
        flat_map words,
        filter is_long,
        map with_one,
        map no_zeros,
    };

    fn chain(table: &[NamedFunction], steps: &[usize]) -> Vec<OneRecord> {
        steps.iter().map(|&step| table[step].one_record).collect()
    }

    fn lines(lines: &[&str]) -> Batch {
        let mut batch = Batch::new();
        lines.iter().for_each(|line| batch.push(line).unwrap());
        batch
    }

    #[test]
    fn folds_across_adds_and_flushes_keys_in_first_seen_order() {
        let mut table = Combiner::new();
        table
            .add(&[], SUM, &pairs(&[("b", 1), ("a", 2), ("b", 3)]))
            .unwrap();
        table.add(&[], SUM, &pairs(&[("c", 5), ("a", 1)])).unwrap();
        table.add(&[], SUM, &pairs(&[("b", 10)])).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(
            decoded::<String>(&table.flush()),
            [("b".into(), 14), ("a".into(), 3), ("c".into(), 5)]
        );
        assert!(table.is_empty(), "a flush empties the table");
        table.add(&[], SUM, &pairs(&[("a", 7)])).unwrap();
        assert_eq!(decoded::<String>(&table.flush()), [("a".into(), 7)]);
    }

    #[test]
    fn runs_a_chain_record_by_record_into_the_table() {
        let mut table = Combiner::new();
        let chain = chain(WORD_COUNT, &[0, 1, 2]);
        table
            .add(&chain, SUM, &lines(&["the river the gate", "a river"]))
            .unwrap();
        assert_eq!(
            decoded::<String>(&table.flush()),
            [("the".into(), 2), ("river".into(), 2), ("gate".into(), 1)]
        );
    }

    #[test]
    fn keys_and_combiners_too_long_to_keep_inline_are_kept_whole() {
        let long = "a key of far more than fifteen bytes";
        let huge = i64::MAX / 3;
        let items = [(long, huge), ("short", 1), (long, huge), ("short", 2)];
        let mut table = Combiner::new();
        table.add(&[], SUM, &pairs(&items)).unwrap();
        table.add(&[], SUM, &pairs(&items[..1])).unwrap();
        assert_eq!(
            decoded::<String>(&table.flush()),
            [(long.into(), 3 * huge), ("short".into(), 3)]
        );
        let composite = ((long, 7), "more");
        table
            .add(&[], SUM, &pairs(&[(composite, 1), (composite, 1)]))
            .unwrap();
        assert_eq!(
            decoded::<((String, i64), String)>(&table.flush()),
            [(((long.into(), 7), "more".into()), 2)]
        );
    }

    #[test]
    fn creates_a_combiner_from_each_key_s_first_value_only() {
        fn count_and_sum(value: i64) -> (i64, i64) {
            (1, value)
        }
        fn add(combiner: (i64, i64), value: i64) -> (i64, i64) {
            (combiner.0 + 1, combiner.1 + value)
        }
        let merge = Merge {
            create: Some(|index, value, out, emit| {
                crate::function::map_one(index, value, out, emit, count_and_sum)
            }),
            merge: |index, combiner, value, out| fold_one(index, combiner, value, out, add),
        };
        let mut table = Combiner::new();
        table
            .add(&[], merge, &pairs(&[("a", 2), ("b", 5), ("a", 4)]))
            .unwrap();
        table.add(&[], merge, &pairs(&[("b", 1)])).unwrap();
        let flushed: Vec<(String, (i64, i64))> = table
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(flushed, [("a".into(), (2, 6)), ("b".into(), (2, 6))]);
    }

    #[test]
    fn a_combiner_that_stops_being_an_integer_is_kept_encoded() {
        use crate::Value;
        fn add(a: Value, b: Value) -> Value {
            match (a, b) {
                (Value::Int(a), Value::Int(b)) => Value::Int(a + b),
                (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => {
                    Value::Float(a as f64 + b)
                }
                (a, b) => panic!("{a:?} + {b:?}"),
            }
        }
        let merge = Merge {
            create: None,
            merge: |index, combiner, value, out| fold_one(index, combiner, value, out, add),
        };
        let mut batch = Batch::new();
        for pair in [("k", Value::Int(1)), ("k", Value::Float(0.5))] {
            batch.push(&pair).unwrap();
        }
        batch.push(&("k", i64::MIN)).unwrap();
        batch.push(&("n", i64::MIN)).unwrap();
        batch.push(&("n", 300)).unwrap();
        let mut table = Combiner::new();
        table.add(&[], merge, &batch).unwrap();
        let flushed: Vec<(String, Value)> = table
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(
            flushed,
            [
                ("k".into(), Value::Float(1.5 + i64::MIN as f64)),
                ("n".into(), Value::Int(i64::MIN + 300))
            ]
        );
    }

    #[test]
    fn a_failure_names_its_stage_and_the_input_record() {
        let mut words = lines(&["fine", "also fine"]);
        words.push(&7).unwrap();
        let failed = Combiner::new()
            .add(&chain(WORD_COUNT, &[2]), SUM, &words)
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Chain(0));
        assert_eq!(failed.failure.record_index, Some(2));
        assert!(
            failed.failure.message.contains("record 2 (7)"),
            "{failed:?}"
        );

        let failed = Combiner::new()
            .add(
                &chain(WORD_COUNT, &[0, 3]),
                SUM,
                &lines(&["ok", "two words"]),
            )
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Chain(1), "the later step is named");
        assert_eq!(failed.failure.record_index, Some(0));
    }

    #[test]
    fn a_record_that_is_not_a_pair_is_named() {
        let failed = Combiner::new()
            .add(&[], SUM, &lines(&["lonely"]))
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        assert_eq!(failed.failure.record_index, Some(0));
        assert!(
            failed
                .failure
                .message
                .contains("\"lonely\" of record 0, which is not a (key, value) pair"),
            "{failed:?}"
        );
    }

    #[test]
    fn a_failing_merge_names_its_stage_and_record() {
        let failing = Merge {
            create: None,
            merge: |index, _, _, _| Err(Failure::at(index, "overflow".into())),
        };
        let failed = Combiner::new()
            .add(&[], failing, &pairs(&[("a", 1), ("b", 1), ("a", 2)]))
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        assert_eq!(failed.failure.record_index, Some(2));
    }
}
