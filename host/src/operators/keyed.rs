//! What every key-based operator shares: reading `(key, value)` pairs, hash-partitioning
//! them by key, grouping values by key, and reducing groups with one guest call.
//!
//! Keys are compared and hashed by their canonical bytes, so grouping and joining never
//! call a guest.

use std::hash::BuildHasher;

use anyhow::{Result, bail};
use rayon::prelude::*;
use rustc_hash::{FxBuildHasher, FxHashMap};
use sluice_abi::encoding::{self, Encoder};
use sluice_abi::{Batch, Groups, Value};

use crate::dataset::Dataset;
use crate::udf::BoundUdf;

/// The key and value bytes of a pair record (a 2-element tuple or list).
pub fn split_pair(record: &[u8]) -> Result<(&[u8], &[u8])> {
    encoding::pair_parts(record).ok_or_else(|| {
        let shown = Value::decode(record)
            .map_or_else(|_| "undecodable bytes".into(), |value| value.to_json());
        anyhow::anyhow!(
            "record {shown} is not a (key, value) pair: key-based operators need 2-element tuples"
        )
    })
}

/// Appends the pair `(key, value)` (both already encoded) to `out`.
pub fn write_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    Encoder::new(out).tuple_header(2);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends a pair record to `batch`.
pub fn push_pair(batch: &mut Batch, key: &[u8], value: &[u8]) {
    batch.push_with(|out| write_pair(out, key, value));
}

/// The hash of a key's canonical bytes, which every keyed operator partitions by.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// The partition a key belongs to among `partitions`.
pub fn partition_of(key: &[u8], partitions: usize) -> usize {
    (key_hash(key) % partitions as u64) as usize
}

/// Values grouped by key, keys in the order first seen, values in arrival order.
#[derive(Default)]
pub struct KeyGroups<'a> {
    index: FxHashMap<&'a [u8], usize>,
    keys: Vec<&'a [u8]>,
    values: Vec<Vec<&'a [u8]>>,
}

impl<'a> KeyGroups<'a> {
    /// Groups the pairs of `batch`.
    pub fn of_pairs(batch: &'a Batch) -> Result<Self> {
        let mut groups = Self::default();
        groups.add_pairs(batch)?;
        Ok(groups)
    }

    /// Adds the pairs of `batch`.
    pub fn add_pairs(&mut self, batch: &'a Batch) -> Result<()> {
        for record in batch.iter() {
            crate::scheduler::slice::tick()?;
            let (key, value) = split_pair(record)?;
            self.add(key, value);
        }
        Ok(())
    }

    /// Adds one value under `key`.
    pub fn add(&mut self, key: &'a [u8], value: &'a [u8]) {
        let next = self.keys.len();
        let slot = *self.index.entry(key).or_insert(next);
        if slot == next {
            self.keys.push(key);
            self.values.push(Vec::new());
        }
        self.values[slot].push(value);
    }

    /// The values of `key`, if it has any.
    pub fn get(&self, key: &[u8]) -> Option<&[&'a [u8]]> {
        self.index
            .get(key)
            .map(|&slot| self.values[slot].as_slice())
    }

    /// Every key with its values.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &[&'a [u8]])> + '_ {
        self.keys
            .iter()
            .copied()
            .zip(self.values.iter().map(Vec::as_slice))
    }

    /// How many keys there are.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Folds each list of values with `udf` in one guest call, answering one value per list.
/// A list of one value is its own result without a call: Spark never calls a reduce
/// function on a single value.
pub fn fold_lists<'v>(
    udf: &BoundUdf,
    lists: &[Vec<&'v [u8]>],
) -> Result<Vec<std::borrow::Cow<'v, [u8]>>> {
    let mut records = Batch::new();
    let mut group_ends = Vec::new();
    for list in lists.iter().filter(|list| list.len() > 1) {
        list.iter().for_each(|value| records.push_encoded(value));
        group_ends.push(records.len() as u32);
    }
    let folded = if group_ends.is_empty() {
        Batch::new()
    } else {
        udf.aggregate(Groups::from_parts(records, group_ends)?)?
    };
    // `aggregate` checked that there is one result per group.
    let mut results = folded.iter();
    lists
        .iter()
        .map(|list| match list.as_slice() {
            [] => bail!("an empty group has nothing to fold"),
            [only] => Ok(std::borrow::Cow::Borrowed(*only)),
            _ => Ok(std::borrow::Cow::Owned(
                results.next().expect("one result per group").to_vec(),
            )),
        })
        .collect()
}

/// Every key of `groups` with its values folded by `udf`, as pairs.
pub fn reduce_groups(udf: &BoundUdf, groups: &KeyGroups<'_>) -> Result<Batch> {
    let folded = fold_lists(udf, &groups.values)?;
    let mut pairs =
        Batch::with_capacity(groups.key_count(), folded.iter().map(|v| v.len() + 8).sum());
    for (key, value) in groups.keys.iter().zip(&folded) {
        crate::scheduler::slice::tick()?;
        push_pair(&mut pairs, key, value);
    }
    Ok(pairs)
}

/// Hash-partitions pair records by key into `partitions` partitions, keeping the order of
/// records within each source partition and of the source partitions.
pub fn shuffle(input: Vec<Batch>, partitions: usize) -> Result<Dataset> {
    fn key_of(record: &[u8]) -> Result<&[u8]> {
        Ok(split_pair(record)?.0)
    }
    shuffle_by(input, partitions, key_of)
}

/// Hash-partitions records by the bytes `key_of` picks out of each (as [`shuffle`] does
/// by key), so that equal picks meet in one partition.
pub fn shuffle_by(
    input: Vec<Batch>,
    partitions: usize,
    key_of: impl Fn(&[u8]) -> Result<&[u8]> + Sync,
) -> Result<Dataset> {
    let buckets: Vec<Vec<Batch>> = input
        .into_par_iter()
        .map(|partition| {
            let mut buckets = vec![Batch::new(); partitions];
            for record in partition.iter() {
                crate::scheduler::slice::tick()?;
                let key = key_of(record)?;
                buckets[partition_of(key, partitions)].push_encoded(record);
            }
            Ok(buckets)
        })
        .collect::<Result<_>>()?;
    let merged = (0..partitions)
        .into_par_iter()
        .map(|target| {
            let mut merged = Batch::new();
            buckets
                .iter()
                .for_each(|source| merged.extend_from(&source[target]));
            merged
        })
        .collect();
    Ok(Dataset::from_partitions(merged))
}
