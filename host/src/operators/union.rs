//! union: several streams' records as one stream.

use anyhow::Result;

use super::{BatchContext, Operator};
use crate::dataset::Dataset;

/// union: the partitions of every input, inputs in order, so that the records of the
/// first input come first (Spark's `UnionRDD` concatenates its parents' partitions).
pub struct Union;

impl Operator for Union {
    fn describe(&self) -> String {
        "union".into()
    }

    fn arity(&self) -> Option<usize> {
        None
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        Ok(Dataset::from_partitions(
            inputs
                .into_iter()
                .flat_map(Dataset::into_partitions)
                .collect(),
        ))
    }
}
