//! Record-at-a-time and partition-at-a-time operators: map, flatMap, mapPartitions,
//! filter, glom, repartition, and transform (a sub-pipeline applied to each batch).

use anyhow::{Context, Result, bail};
use sluice_abi::Batch;
use sluice_abi::encoding::Encoder;

use super::{BatchContext, Operator, OperatorState, single};
use crate::dataset::Dataset;
use crate::udf::{BoundUdf, UdfChain};

/// map and mapPartitions: a UDF of the matching kind over each partition.
pub struct MapRecords {
    /// The operator's manifest name (`map`, `map_partitions`).
    pub op: &'static str,
    /// The function.
    pub udf: BoundUdf,
}

impl Operator for MapRecords {
    fn describe(&self) -> String {
        format!("{} {}", self.op, self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        Ok(single(inputs)?.try_map_partitions(|partition| self.udf.records(partition))?)
    }
}

/// flatMap: every record's results, in order.
pub struct FlatMap {
    /// The function.
    pub udf: BoundUdf,
}

impl Operator for FlatMap {
    fn describe(&self) -> String {
        format!("flat_map {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        Ok(single(inputs)?.try_map_partitions(|partition| {
            self.udf
                .flat_map(partition)
                .map(|groups| groups.into_parts().0)
        })?)
    }
}

/// Consecutive map, flatMap and filter steps of one component, fused into one guest call
/// per chunk (see [`UdfChain`]).
pub struct Fused {
    /// The steps' functions, in order.
    pub chain: UdfChain,
}

impl Operator for Fused {
    fn describe(&self) -> String {
        format!("fused {}", self.chain.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        Ok(single(inputs)?.try_map_partitions(|partition| self.chain.run(partition))?)
    }
}

/// filter: keeps the records the UDF says yes to, in order.
pub struct Filter {
    /// The predicate.
    pub udf: BoundUdf,
}

impl Operator for Filter {
    fn describe(&self) -> String {
        format!("filter {}", self.udf.label())
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        Ok(single(inputs)?.try_map_partitions(|partition| self.udf.filter(partition))?)
    }
}

/// glom: each partition becomes one record, the list of its records (as Spark's
/// `glom`, which turns a partition into an array). The list is assembled from the
/// records' bytes without decoding them.
pub struct Glom;

impl Operator for Glom {
    fn describe(&self) -> String {
        "glom".into()
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        let partitions = single(inputs)?
            .into_partitions()
            .into_iter()
            .map(|partition| {
                let mut glommed = Batch::with_capacity(1, partition.data().len() + 10);
                glommed.push_with(|out| {
                    Encoder::new(out).list_header(partition.len());
                    out.extend_from_slice(partition.data());
                });
                glommed
            })
            .collect();
        Ok(Dataset::from_partitions(partitions))
    }
}

/// repartition(n): the same records, in order, spread over `n` partitions.
pub struct Repartition {
    /// How many partitions to make.
    pub partitions: usize,
}

impl Operator for Repartition {
    fn describe(&self) -> String {
        format!("repartition {}", self.partitions)
    }

    fn apply(&self, inputs: Vec<Dataset>, _: &BatchContext) -> Result<Dataset> {
        Ok(Dataset::split(
            single(inputs)?.concatenated(),
            self.partitions,
        ))
    }
}

/// transform: a pipeline of operators applied to each batch's data set, as Spark's
/// `transform(rdd => ...)`. Its first input is the stream's batch; the rest are the
/// batches of the same time of the other streams its steps read (a join's `other`, a
/// union's `with`), in step order: each step takes its own after the pipeline's data.
pub struct Transform {
    /// The steps, applied in order, each with how many other streams it reads.
    steps: Vec<(Box<dyn Operator>, usize)>,
}

impl Transform {
    /// A pipeline whose steps each read the pipeline's data and `others` more streams.
    pub fn new(steps: Vec<(Box<dyn Operator>, usize)>) -> Self {
        Self { steps }
    }

    /// A pipeline of steps that read nothing but the pipeline's data.
    pub fn pipeline(steps: Vec<Box<dyn Operator>>) -> Self {
        Self::new(steps.into_iter().map(|step| (step, 0)).collect())
    }

    /// The stream's batch and every other stream its steps read.
    fn input_count(&self) -> usize {
        1 + self.steps.iter().map(|(_, others)| others).sum::<usize>()
    }
}

impl Operator for Transform {
    fn describe(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|(step, _)| step.describe()).collect();
        format!("transform [{}]", steps.join(", "))
    }

    fn arity(&self) -> Option<usize> {
        Some(self.input_count())
    }

    /// A windowed step inside makes the whole pipeline slide with it.
    fn slide(&self) -> Option<u64> {
        self.steps.iter().find_map(|(step, _)| step.slide())
    }

    fn apply(&self, inputs: Vec<Dataset>, batch: &BatchContext) -> Result<Dataset> {
        let given = inputs.len();
        let wanted = self.input_count();
        if given != wanted {
            bail!(
                "`{}` reads {wanted} input stream(s) but was given {given}: the job's graph is wired wrongly",
                self.describe()
            );
        }
        let mut inputs = inputs.into_iter();
        let data = inputs
            .next()
            .context("a transform has its stream's batch")?;
        self.steps.iter().try_fold(data, |data, (step, others)| {
            let step_inputs = std::iter::once(data)
                .chain(inputs.by_ref().take(*others))
                .collect();
            step.apply(step_inputs, batch)
        })
    }

    /// The state of its stateful step (the composite windowed operators have one).
    fn state(&self) -> Option<&dyn OperatorState> {
        self.steps.iter().find_map(|(step, _)| step.state())
    }
}
