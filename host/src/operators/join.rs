//! Two-stream operators: cogroup and the joins. Both sides are hash-partitioned by key
//! the same way, then each partition pair is matched in parallel.

use anyhow::Result;
use rayon::prelude::*;
use sluice_abi::Batch;
use sluice_abi::encoding::Encoder;

use super::keyed::{self, KeyGroups};
use super::{BatchContext, Operator, inputs_of};
use crate::dataset::Dataset;

/// The two inputs co-partitioned by key, as (left, right) partition pairs.
fn co_partition(inputs: Vec<Dataset>, partitions: usize) -> Result<Vec<(Batch, Batch)>> {
    let [left, right] = inputs_of::<2>(inputs)?;
    let left = keyed::shuffle(left.into_partitions(), partitions)?.into_partitions();
    let right = keyed::shuffle(right.into_partitions(), partitions)?.into_partitions();
    Ok(left.into_iter().zip(right).collect())
}

/// Matches keys of one partition pair: calls `emit` once per key present on either side
/// (left keys first, in the order first seen, then right-only keys) with both value lists.
fn match_keys(
    left: &Batch,
    right: &Batch,
    mut emit: impl FnMut(&[u8], &[&[u8]], &[&[u8]]),
) -> Result<()> {
    let left_groups = KeyGroups::of_pairs(left)?;
    let right_groups = KeyGroups::of_pairs(right)?;
    for (key, values) in left_groups.iter() {
        crate::scheduler::slice::tick()?;
        emit(key, values, right_groups.get(key).unwrap_or_default());
    }
    for (key, values) in right_groups
        .iter()
        .filter(|(key, _)| left_groups.get(key).is_none())
    {
        crate::scheduler::slice::tick()?;
        emit(key, &[], values);
    }
    Ok(())
}

/// cogroup: `(key, [[left values], [right values]])` for every key of either side.
pub struct Cogroup;

impl Operator for Cogroup {
    fn describe(&self) -> String {
        "cogroup".into()
    }

    fn arity(&self) -> Option<usize> {
        Some(2)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let partitions = co_partition(inputs, batch.partitions)?
            .into_par_iter()
            .map(|(left, right)| {
                let mut out = Batch::with_capacity(
                    left.len() + right.len(),
                    left.data().len() + right.data().len(),
                );
                match_keys(&left, &right, |key, lefts, rights| {
                    out.push_with(|bytes| {
                        Encoder::new(bytes).tuple_header(2);
                        bytes.extend_from_slice(key);
                        Encoder::new(bytes).tuple_header(2);
                        for side in [lefts, rights] {
                            Encoder::new(bytes).list_header(side.len());
                            side.iter().for_each(|value| bytes.extend_from_slice(value));
                        }
                    })
                })?;
                Ok(out)
            })
            .collect::<Result<_>>()?;
        Ok(Dataset::from_partitions(partitions))
    }
}

/// Which keys a join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Keys on both sides.
    Inner,
    /// Every left key; a missing right value is null.
    LeftOuter,
    /// Every right key; a missing left value is null.
    RightOuter,
    /// Every key; a missing value on either side is null.
    FullOuter,
}

/// join and the outer joins: `(key, [left, right])` for every pair of values with the same
/// key; outer joins pair an unmatched value with null (Spark's `None`).
pub struct Join {
    /// Which keys are kept.
    pub kind: JoinKind,
}

impl Operator for Join {
    fn describe(&self) -> String {
        match self.kind {
            JoinKind::Inner => "join",
            JoinKind::LeftOuter => "left_outer_join",
            JoinKind::RightOuter => "right_outer_join",
            JoinKind::FullOuter => "full_outer_join",
        }
        .into()
    }

    fn arity(&self) -> Option<usize> {
        Some(2)
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let mut null = Vec::new();
        Encoder::new(&mut null).write_null();
        let null = [null.as_slice()];
        let (keep_left, keep_right) = match self.kind {
            JoinKind::Inner => (false, false),
            JoinKind::LeftOuter => (true, false),
            JoinKind::RightOuter => (false, true),
            JoinKind::FullOuter => (true, true),
        };
        let partitions = co_partition(inputs, batch.partitions)?
            .into_par_iter()
            .map(|(left, right)| {
                let mut out = Batch::with_capacity(
                    left.len().max(right.len()),
                    left.data().len() + right.data().len(),
                );
                match_keys(&left, &right, |key, lefts, rights| {
                    let lefts = if lefts.is_empty() && keep_right {
                        &null[..]
                    } else {
                        lefts
                    };
                    let rights = if rights.is_empty() && keep_left {
                        &null[..]
                    } else {
                        rights
                    };
                    for l in lefts {
                        for r in rights {
                            out.push_with(|bytes| {
                                Encoder::new(bytes).tuple_header(2);
                                bytes.extend_from_slice(key);
                                Encoder::new(bytes).tuple_header(2);
                                bytes.extend_from_slice(l);
                                bytes.extend_from_slice(r);
                            });
                        }
                    }
                })?;
                Ok(out)
            })
            .collect::<Result<_>>()?;
        Ok(Dataset::from_partitions(partitions))
    }
}
