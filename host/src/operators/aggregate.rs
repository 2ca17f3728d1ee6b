//! Operators that summarise a batch: count, countByValue and reduce.

use anyhow::Result;
use rayon::prelude::*;
use sluice_abi::encoding::Encoder;
use sluice_abi::{Batch, Groups};

use super::{BatchContext, Operator, key_tables, single};
use crate::dataset::Dataset;
use crate::udf::BoundUdf;

/// count: one record, the number of records in the batch; `0` for an empty batch (as
/// Spark, whose `count` DStream emits 0 rather than nothing).
pub struct Count;

impl Operator for Count {
    fn describe(&self) -> String {
        "count".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        let count = single(inputs)?.len() as i64;
        let mut counted = Batch::new();
        counted.push_with(|out| Encoder::new(out).write_int(count));
        Ok(Dataset::from_partitions(vec![counted]))
    }
}

/// countByValue: one `[value, count]` pair per distinct record. Records are compared by
/// their canonical bytes, so no guest is called. Counting is done per partition in
/// parallel, then merged per hash partition in parallel (Spark: `map((_, 1))
/// .reduceByKey(_ + _)`, whose output is hash-partitioned the same way), each in tables
/// small enough to stay in cache ([`key_tables`]).
pub struct CountByValue;

impl Operator for CountByValue {
    fn describe(&self) -> String {
        "count_by_value".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        key_tables::count_by_value(&single(inputs)?, batch.partitions)
    }
}

/// reduce: one record, every record folded with the UDF; no record for an empty batch
/// (Spark's `reduce` DStream emits nothing when there is nothing to reduce). Each
/// partition is reduced in parallel with one guest call, then the partial results with
/// one more.
pub struct Reduce {
    /// The two-in, one-out function.
    pub udf: BoundUdf,
}

impl Operator for Reduce {
    fn describe(&self) -> String {
        format!("reduce {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        let partials = single(inputs)?
            .into_partitions()
            .into_par_iter()
            .filter(|partition| !partition.is_empty())
            .map(|partition| self.udf.aggregate(Groups::single(partition)))
            .collect::<Result<Vec<Batch>, _>>()?;
        let mut partial_results = Batch::new();
        partials
            .iter()
            .for_each(|partial| partial_results.extend_from(partial));
        let reduced = if partial_results.is_empty() {
            Batch::new()
        } else {
            self.udf.aggregate(Groups::single(partial_results))?
        };
        Ok(Dataset::from_partitions(vec![reduced]))
    }
}
