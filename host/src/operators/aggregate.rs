//! Operators that summarise a batch: count, countByValue and reduce.

use std::hash::BuildHasher;

use anyhow::Result;
use rayon::prelude::*;
use rustc_hash::{FxBuildHasher, FxHashMap};
use sluice_abi::encoding::Encoder;
use sluice_abi::{Batch, Groups};

use super::{BatchContext, Operator, single};
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
/// .reduceByKey(_ + _)`, whose output is hash-partitioned the same way).
pub struct CountByValue;

impl Operator for CountByValue {
    fn describe(&self) -> String {
        "count_by_value".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let input = single(inputs)?;
        let partial: Vec<FxHashMap<&[u8], i64>> = input
            .partitions()
            .par_iter()
            .map(|partition| {
                let mut counts = FxHashMap::default();
                for record in partition.iter() {
                    crate::scheduler::slice::tick()?;
                    *counts.entry(record).or_insert(0) += 1;
                }
                Ok(counts)
            })
            .collect::<Result<_>>()?;
        let targets = batch.partitions.max(1);
        let hasher = FxBuildHasher;
        let partitions = (0..targets)
            .into_par_iter()
            .map(|target| {
                let mut merged: FxHashMap<&[u8], i64> = FxHashMap::default();
                for counts in &partial {
                    for (record, count) in counts {
                        crate::scheduler::slice::tick()?;
                        if hasher.hash_one(record) as usize % targets == target {
                            *merged.entry(record).or_insert(0) += count;
                        }
                    }
                }
                let mut pairs = Batch::with_capacity(merged.len(), merged.len() * 16);
                for (record, count) in merged {
                    crate::scheduler::slice::tick()?;
                    pairs.push_with(|out| {
                        Encoder::new(out).tuple_header(2);
                        out.extend_from_slice(record);
                        Encoder::new(out).write_int(count);
                    });
                }
                Ok(pairs)
            })
            .collect::<Result<_>>()?;
        Ok(Dataset::from_partitions(partitions))
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
