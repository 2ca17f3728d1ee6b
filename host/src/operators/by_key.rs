//! Per-key operators on pair streams: reduceByKey, groupByKey, combineByKey, mapValues
//! and flatMapValues.

use anyhow::Result;
use rayon::prelude::*;
use sluice_abi::encoding::Encoder;
use sluice_abi::{Batch, Groups};

use super::keyed::{self, KeyGroups, push_pair, split_pair};
use super::{BatchContext, Operator, key_tables, single};
use crate::dataset::Dataset;
use crate::udf::{BoundUdf, CombiningChain};

/// reduceByKey: one `(key, value)` per key, its values folded with the UDF. As Spark,
/// values are first combined within each partition (one guest call per partition), then
/// hash-partitioned by key and combined again.
pub struct ReduceByKey {
    /// The reduce function.
    pub udf: BoundUdf,
}

impl ReduceByKey {
    /// Reduces the pairs of `input` by key into `partitions` hash partitions.
    pub fn reduce(udf: &BoundUdf, input: Dataset, partitions: usize) -> Result<Dataset> {
        let combined = input
            .into_partitions()
            .into_par_iter()
            .map(|partition| key_tables::reduce_partition(udf, partition))
            .collect::<Result<Vec<_>>>()?;
        key_tables::reduce_by_key(udf, combined, partitions)
    }
}

impl Operator for ReduceByKey {
    fn describe(&self) -> String {
        format!("reduce_by_key {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        Self::reduce(&self.udf, single(inputs)?, batch.partitions)
    }
}

/// A chain of one component's map, flatMap and filter steps followed by its reduceByKey
/// or combineByKey: each partition goes through the chain and is combined by key inside
/// the same call (see [`CombiningChain`]); the partitions' combiners are then
/// hash-partitioned by key and merged, as [`ReduceByKey`] and [`CombineByKey`] do.
pub struct CombinedByKey {
    /// The chain and the map-side combining.
    pub chain: CombiningChain,
    /// (combiner, combiner) -> combiner: the reduce function, or combineByKey's
    /// `merge_combiners`.
    pub merge_combiners: BoundUdf,
}

impl Operator for CombinedByKey {
    fn describe(&self) -> String {
        format!(
            "combined {} then by key {}",
            self.chain.label(),
            self.merge_combiners.label()
        )
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let combined = single(inputs)?
            .into_partitions()
            .into_par_iter()
            .map(|partition| Ok(self.chain.run(partition)?))
            .collect::<Result<Vec<_>>>()?;
        key_tables::reduce_by_key(&self.merge_combiners, combined, batch.partitions)
    }
}

/// groupByKey: one `(key, [values])` per key, values in arrival order.
pub struct GroupByKey;

impl GroupByKey {
    /// Groups the pairs of `input` by key into `partitions` hash partitions.
    pub fn group(input: Dataset, partitions: usize) -> Result<Dataset> {
        keyed::shuffle(input.into_partitions(), partitions)?.try_map_partitions(|partition| {
            Ok(Self::write_groups(&KeyGroups::of_pairs(&partition)?))
        })
    }

    /// `(key, [values])` records, one per key of `groups`.
    pub fn write_groups(groups: &KeyGroups<'_>) -> Batch {
        let mut grouped = Batch::new();
        for (key, values) in groups.iter() {
            grouped.push_with(|out| {
                Encoder::new(out).tuple_header(2);
                out.extend_from_slice(key);
                Encoder::new(out).list_header(values.len());
                values.iter().for_each(|value| out.extend_from_slice(value));
            });
        }
        grouped
    }
}

impl Operator for GroupByKey {
    fn describe(&self) -> String {
        "group_by_key".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        Self::group(single(inputs)?, batch.partitions)
    }
}

/// combineByKey: per key, the first value of each partition becomes a combiner
/// (`create`), the partition's other values are folded into it (`merge_value`), and the
/// partitions' combiners are merged (`merge_combiners`), as Spark's `combineByKey`.
pub struct CombineByKey {
    /// value -> combiner (a map function).
    pub create: BoundUdf,
    /// (combiner, value) -> combiner (a fold function).
    pub merge_value: BoundUdf,
    /// (combiner, combiner) -> combiner (a reduce function).
    pub merge_combiners: BoundUdf,
}

impl CombineByKey {
    fn combine_partition(&self, partition: &Batch) -> Result<Batch> {
        let groups = KeyGroups::of_pairs(partition)?;
        let mut firsts = Batch::with_capacity(groups.key_count(), partition.data().len() / 2);
        groups
            .iter()
            .for_each(|(_, values)| firsts.push_encoded(values[0]));
        let created = self.create.records(firsts)?;
        let lists: Vec<Vec<&[u8]>> = groups
            .iter()
            .zip(created.iter())
            .map(|((_, values), combiner)| {
                std::iter::once(combiner)
                    .chain(values[1..].iter().copied())
                    .collect()
            })
            .collect();
        let combined = keyed::fold_lists(&self.merge_value, &lists)?;
        let mut pairs = Batch::with_capacity(groups.key_count(), partition.data().len());
        for ((key, _), combiner) in groups.iter().zip(&combined) {
            push_pair(&mut pairs, key, combiner);
        }
        Ok(pairs)
    }
}

impl Operator for CombineByKey {
    fn describe(&self) -> String {
        format!(
            "combine_by_key {} {} {}",
            self.create.label(),
            self.merge_value.label(),
            self.merge_combiners.label()
        )
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let combined = single(inputs)?
            .into_partitions()
            .into_par_iter()
            .map(|partition| self.combine_partition(&partition))
            .collect::<Result<Vec<_>>>()?;
        key_tables::reduce_by_key(&self.merge_combiners, combined, batch.partitions)
    }
}

/// mapValues: `(key, f(value))` for every pair; keys and partitioning stay.
pub struct MapValues {
    /// The map function, applied to values.
    pub udf: BoundUdf,
}

impl Operator for MapValues {
    fn describe(&self) -> String {
        format!("map_values {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        single(inputs)?.try_map_partitions(|partition| {
            let (keys, values) = unzip(&partition)?;
            let mapped = self.udf.records(values)?;
            let mut pairs = Batch::with_capacity(partition.len(), partition.data().len());
            for (key, value) in keys.iter().zip(mapped.iter()) {
                push_pair(&mut pairs, key, value);
            }
            Ok(pairs)
        })
    }
}

/// flatMapValues: `(key, v)` for every `v` of `f(value)`, in order.
pub struct FlatMapValues {
    /// The flat-map function, applied to values.
    pub udf: BoundUdf,
}

impl Operator for FlatMapValues {
    fn describe(&self) -> String {
        format!("flat_map_values {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        single(inputs)?.try_map_partitions(|partition| {
            let (keys, values) = unzip(&partition)?;
            let results: Groups = self.udf.flat_map(values)?;
            let mut pairs = Batch::with_capacity(results.records().len(), partition.data().len());
            for (index, key) in keys.iter().enumerate() {
                for record in results.group(index) {
                    push_pair(&mut pairs, key, results.records().get(record));
                }
            }
            Ok(pairs)
        })
    }
}

/// The keys of a partition's pairs, and their values as a batch.
fn unzip(partition: &Batch) -> Result<(Vec<&[u8]>, Batch)> {
    let mut keys = Vec::with_capacity(partition.len());
    let mut values = Batch::with_capacity(partition.len(), partition.data().len());
    for record in partition.iter() {
        let (key, value) = split_pair(record)?;
        keys.push(key);
        values.push_encoded(value);
    }
    Ok((keys, values))
}
