//! Set operations on records, Spark's RDD `distinct`, `subtract`, `intersection` and
//! `subtractByKey`. Records (or keys) are equal when their canonical encodings are, so
//! `1` is not `1.0` and a tuple is not a list, and no guest is called. Both sides are
//! hash-partitioned alike (by whole record, or by key for `subtract_by_key`), then each
//! partition pair is matched in parallel.

use anyhow::Result;
use rayon::prelude::*;
use rustc_hash::FxHashSet;
use sluice_abi::Batch;

use super::keyed::{self, split_pair};
use super::{BatchContext, Operator, inputs_of, single};
use crate::dataset::Dataset;

/// The whole record as its own partitioning key.
fn whole(record: &[u8]) -> Result<&[u8]> {
    Ok(record)
}

/// The two inputs hash-partitioned by whole record, as (left, right) partition pairs.
fn by_record(inputs: Vec<Dataset>, partitions: usize) -> Result<Vec<(Batch, Batch)>> {
    let [left, right] = inputs_of::<2>(inputs)?;
    let left = keyed::shuffle_by(left.into_partitions(), partitions, whole)?;
    let right = keyed::shuffle_by(right.into_partitions(), partitions, whole)?;
    Ok(left
        .into_partitions()
        .into_iter()
        .zip(right.into_partitions())
        .collect())
}

/// Applies `matched` to every partition pair in parallel.
fn each_pair(
    pairs: Vec<(Batch, Batch)>,
    matched: impl Fn(&Batch, &Batch) -> Result<Batch> + Sync + Send,
) -> Result<Dataset> {
    let partitions = pairs
        .into_par_iter()
        .map(|(left, right)| matched(&left, &right))
        .collect::<Result<_>>()?;
    Ok(Dataset::from_partitions(partitions))
}

/// distinct: each record once (Spark: `map((_, null)).reduceByKey((x, _) => x).map(_._1)`),
/// in the order first seen within its hash partition.
pub struct Distinct;

impl Operator for Distinct {
    fn describe(&self) -> String {
        "distinct".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let input = keyed::shuffle_by(single(inputs)?.into_partitions(), batch.partitions, whole)?;
        input.try_map_partitions(|partition| {
            let mut seen = FxHashSet::default();
            let mut out = Batch::new();
            partition
                .iter()
                .filter(|record| seen.insert(*record))
                .for_each(|record| out.push_encoded(record));
            Ok(out)
        })
    }
}

/// subtract: every record of this stream, duplicates included, that equals no record of
/// the other.
pub struct Subtract;

impl Operator for Subtract {
    fn describe(&self) -> String {
        "subtract".into()
    }

    fn arity(&self) -> Option<usize> {
        Some(2)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        each_pair(by_record(inputs, batch.partitions)?, |left, right| {
            let right: FxHashSet<&[u8]> = right.iter().collect();
            let mut out = Batch::new();
            left.iter()
                .filter(|record| !right.contains(record))
                .for_each(|record| out.push_encoded(record));
            Ok(out)
        })
    }
}

/// intersection: each record found in both streams, once (however often either has it).
pub struct Intersection;

impl Operator for Intersection {
    fn describe(&self) -> String {
        "intersection".into()
    }

    fn arity(&self) -> Option<usize> {
        Some(2)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        each_pair(by_record(inputs, batch.partitions)?, |left, right| {
            let right: FxHashSet<&[u8]> = right.iter().collect();
            let mut emitted = FxHashSet::default();
            let mut out = Batch::new();
            left.iter()
                .filter(|record| right.contains(record) && emitted.insert(*record))
                .for_each(|record| out.push_encoded(record));
            Ok(out)
        })
    }
}

/// subtractByKey: every pair of this stream, duplicates included, whose key no pair of
/// the other stream has (the other's values are never looked at).
pub struct SubtractByKey;

impl Operator for SubtractByKey {
    fn describe(&self) -> String {
        "subtract_by_key".into()
    }

    fn arity(&self) -> Option<usize> {
        Some(2)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let [left, right] = inputs_of::<2>(inputs)?;
        let left = keyed::shuffle(left.into_partitions(), batch.partitions)?;
        let right = keyed::shuffle(right.into_partitions(), batch.partitions)?;
        let pairs = left
            .into_partitions()
            .into_iter()
            .zip(right.into_partitions())
            .collect();
        each_pair(pairs, |left, right| {
            let keys = right
                .iter()
                .map(|pair| Ok(split_pair(pair)?.0))
                .collect::<Result<FxHashSet<&[u8]>>>()?;
            let mut out = Batch::new();
            for pair in left.iter() {
                if !keys.contains(split_pair(pair)?.0) {
                    out.push_encoded(pair);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use sluice_abi::Value;

    use super::*;

    fn batch(partitions: usize) -> BatchContext {
        BatchContext {
            time_ms: 1000,
            partitions,
            number: 1,
        }
    }

    fn data(values: &[Value], partitions: usize) -> Dataset {
        let mut records = Batch::new();
        values
            .iter()
            .for_each(|value| records.push_with(|out| value.encode_into(out)));
        Dataset::split(records, partitions)
    }

    /// The output's records, sorted by their JSON text (partitioning decides the order).
    fn sorted(output: Dataset) -> Vec<String> {
        let mut records: Vec<String> = output
            .records()
            .map(|record| Value::decode(record).unwrap().to_json())
            .collect();
        records.sort();
        records
    }

    fn text(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    fn pair(key: &str, value: i64) -> Value {
        Value::Tuple(vec![text(key), Value::Int(value)])
    }

    /// The operator's output for the two sides, each in 2 partitions, over 3 partitions.
    fn run(operator: &dyn Operator, left: &[Value], right: &[Value]) -> Vec<String> {
        let output = operator
            .apply(vec![data(left, 2), data(right, 2)], &batch(3))
            .unwrap();
        assert_eq!(output.partitions().len(), 3);
        sorted(output)
    }

    #[test]
    fn subtract_keeps_left_duplicates_that_equal_no_right_record() {
        let left = [
            text("a"),
            text("b"),
            text("b"),
            Value::Int(1),
            Value::Float(1.0),
        ];
        let right = [text("a"), Value::Int(1), Value::Int(7)];
        assert_eq!(run(&Subtract, &left, &right), ["\"b\"", "\"b\"", "1.0"]);
    }

    #[test]
    fn intersection_emits_each_common_record_once() {
        let left = [text("a"), text("a"), text("b"), pair("k", 1), Value::Int(2)];
        let right = [
            text("a"),
            text("a"),
            pair("k", 1),
            Value::List(vec![text("k"), Value::Int(1)]),
            Value::Float(2.0),
        ];
        assert_eq!(run(&Intersection, &left, &right), ["\"a\"", "[\"k\",1]"]);
        assert!(run(&Intersection, &left, &[]).is_empty());
    }

    #[test]
    fn distinct_emits_each_record_once_and_tells_tuples_from_lists() {
        let input = [
            text("a"),
            text("a"),
            pair("k", 1),
            pair("k", 1),
            Value::List(vec![text("k"), Value::Int(1)]),
            Value::Int(1),
            Value::Float(1.0),
        ];
        let output = Distinct.apply(vec![data(&input, 2)], &batch(3)).unwrap();
        let output: Vec<Vec<u8>> = output.records().map(<[u8]>::to_vec).collect();
        assert_eq!(output.len(), 5);
        let unique: FxHashSet<&Vec<u8>> = output.iter().collect();
        assert_eq!(unique.len(), 5);
    }

    #[test]
    fn subtract_by_key_keeps_left_pairs_whose_key_the_right_lacks() {
        let left = [pair("a", 1), pair("b", 2), pair("b", 3), pair("c", 4)];
        let right = [pair("a", 9), pair("d", 9)];
        assert_eq!(
            run(&SubtractByKey, &left, &right),
            ["[\"b\",2]", "[\"b\",3]", "[\"c\",4]"]
        );
        let error = SubtractByKey
            .apply(vec![data(&left, 1), data(&[Value::Int(1)], 1)], &batch(1))
            .unwrap_err();
        assert!(format!("{error:#}").contains("not a (key, value) pair"));
    }

    #[test]
    fn a_wrong_input_count_is_an_error_not_a_panic() {
        for operator in [&Subtract as &dyn Operator, &Intersection, &SubtractByKey] {
            let error = operator.apply(vec![data(&[], 1)], &batch(1)).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("takes 2 input stream(s) but was given 1")
            );
        }
        let error = Distinct.apply(vec![], &batch(1)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("takes 1 input stream(s) but was given 0")
        );
    }
}
