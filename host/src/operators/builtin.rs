//! Operators and functions the host provides itself, for the operators Spark defines in
//! terms of others (countByWindow is `map(_ => 1L).reduceByWindow(_ + _, _ - _)`, ...).

use anyhow::Result;
use serde::de::IgnoredAny;
use sluice_abi::Batch;
use sluice_abi::encoding::Encoder;

use super::keyed::{push_pair, split_pair};
use super::{BatchContext, Operator, single};
use crate::dataset::Dataset;
use crate::udf::BoundUdf;

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn subtract(a: i64, b: i64) -> i64 {
    a - b
}

fn count_is_nonzero((_, count): (IgnoredAny, i64)) -> bool {
    count != 0
}

static COUNTING: &[sluice_abi::NamedFunction] = sluice_abi::functions! {
    reduce add,
    reduce subtract,
    filter count_is_nonzero,
};

/// The native functions that sum counts, take counts back out, and drop zero counts.
pub fn counting() -> [BoundUdf; 3] {
    let [add, subtract, nonzero] = COUNTING else {
        unreachable!("COUNTING lists three functions")
    };
    [add, subtract, nonzero].map(|function| BoundUdf::Native(*function))
}

/// How [`KeyBy`] makes a pair of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairWith {
    /// `(null, record)`: everything under one key.
    NullKey,
    /// `(null, 1)`: a count under one key.
    NullKeyOne,
    /// `(record, 1)`: a count per distinct record.
    One,
}

/// Makes a pair of every record.
pub struct KeyBy(pub PairWith);

impl Operator for KeyBy {
    fn describe(&self) -> String {
        format!("key_by {:?}", self.0)
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        let (mut null, mut one) = (Vec::new(), Vec::new());
        Encoder::new(&mut null).write_null();
        Encoder::new(&mut one).write_int(1);
        single(inputs)?.try_map_partitions(|partition| {
            let mut pairs = Batch::with_capacity(
                partition.len(),
                partition.data().len() + partition.len() * 4,
            );
            for record in partition.iter() {
                match self.0 {
                    PairWith::NullKey => push_pair(&mut pairs, &null, record),
                    PairWith::NullKeyOne => push_pair(&mut pairs, &null, &one),
                    PairWith::One => push_pair(&mut pairs, record, &one),
                }
            }
            Ok(pairs)
        })
    }
}

/// The value of every pair.
pub struct Values;

impl Operator for Values {
    fn describe(&self) -> String {
        "values".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        single(inputs)?.try_map_partitions(|partition| {
            let mut values = Batch::with_capacity(partition.len(), partition.data().len());
            for record in partition.iter() {
                values.push_encoded(split_pair(record)?.1);
            }
            Ok(values)
        })
    }
}
