//! A job's operator graph: sources, the steps of every stream, and the streams the sinks
//! read, computed once per batch in dependency order.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_abi::NamedFunction;

use crate::dataset::Dataset;
use crate::manifest::{JobConfig, StepConfig, UdfRef};
use crate::operators::{self, BatchContext, Operator};
use crate::runtime::{InstancePool, Runtime};
use crate::udf::BoundUdf;

struct Node {
    /// `stream `name` step N (op ...)`, for errors.
    describe: String,
    inputs: Vec<usize>,
    /// `None` for a source, whose data the batch brings.
    operator: Option<Box<dyn Operator>>,
}

/// The operators of one job, wired together.
pub struct JobGraph {
    nodes: Vec<Node>,
    /// The node each sink reads, in sink order.
    sink_inputs: Vec<usize>,
    /// How many times each node's output is read (by nodes and sinks).
    readers: Vec<usize>,
}

impl JobGraph {
    /// Builds the operators of `config`, with a pool of UDF instances per UDF step; or,
    /// given `natives`, with each UDF reference bound to the native function of the same
    /// name instead (to measure the WASM boundary against the same code in-process).
    pub fn build(
        config: &JobConfig,
        runtime: &Runtime,
        natives: Option<&[NamedFunction]>,
    ) -> Result<Self> {
        let mut builder = Builder {
            config,
            runtime,
            natives,
            nodes: Vec::new(),
            streams: HashMap::new(),
        };
        for source in &config.sources {
            let id = builder.push(format!("source `{}`", source.name), vec![], None);
            builder.streams.insert(source.name.clone(), id);
        }
        for stream in &config.streams {
            let mut current = builder.streams[&stream.from];
            for (index, step) in stream.steps.iter().enumerate() {
                let owner = format!(
                    "job `{}`, stream `{}` step {}",
                    config.name,
                    stream.name,
                    index + 1
                );
                let operator = builder.operator(step, &owner)?;
                let mut inputs = vec![current];
                if let StepConfig::Union(others) = step {
                    inputs.extend(others.iter().map(|name| builder.streams[name]));
                }
                current = builder.push(
                    format!("{owner} ({})", operator.describe()),
                    inputs,
                    Some(operator),
                );
            }
            builder.streams.insert(stream.name.clone(), current);
        }
        let sink_inputs: Vec<usize> = config
            .sinks
            .iter()
            .map(|sink| builder.streams[&sink.from])
            .collect();
        let mut readers = vec![0; builder.nodes.len()];
        builder
            .nodes
            .iter()
            .flat_map(|node| &node.inputs)
            .chain(&sink_inputs)
            .for_each(|&input| readers[input] += 1);
        Ok(Self {
            nodes: builder.nodes,
            sink_inputs,
            readers,
        })
    }

    /// Computes one batch from the sources' data sets (in source order) and returns the
    /// data set of each sink (in sink order). Each node is computed once, and only if
    /// something reads it; a data set read once is moved rather than copied.
    pub fn compute(&self, sources: Vec<Dataset>, batch: &BatchContext) -> Result<Vec<Dataset>> {
        let mut outputs: Vec<Option<Dataset>> = Vec::with_capacity(self.nodes.len());
        let mut unread = self.readers.clone();
        let mut sources = sources.into_iter();
        for (id, node) in self.nodes.iter().enumerate() {
            let output = match &node.operator {
                None => sources.next().context("the batch lacks a source's data")?,
                Some(_) if unread[id] == 0 => Dataset::default(),
                Some(operator) => {
                    let inputs = node
                        .inputs
                        .iter()
                        .map(|&input| take(&mut outputs, &mut unread, input))
                        .collect();
                    operator
                        .apply(inputs, batch)
                        .with_context(|| node.describe.clone())?
                }
            };
            outputs.push(Some(output));
        }
        Ok(self
            .sink_inputs
            .iter()
            .map(|&input| take(&mut outputs, &mut unread, input))
            .collect())
    }
}

/// The output of node `id` for one more reader: moved out for the last one, cloned before.
fn take(outputs: &mut [Option<Dataset>], unread: &mut [usize], id: usize) -> Dataset {
    unread[id] -= 1;
    if unread[id] == 0 {
        outputs[id]
            .take()
            .expect("a node's output is read at most as often as it has readers")
    } else {
        outputs[id]
            .clone()
            .expect("a node's output is read at most as often as it has readers")
    }
}

struct Builder<'a> {
    config: &'a JobConfig,
    runtime: &'a Runtime,
    natives: Option<&'a [NamedFunction]>,
    nodes: Vec<Node>,
    streams: HashMap<String, usize>,
}

impl Builder<'_> {
    fn push(
        &mut self,
        describe: String,
        inputs: Vec<usize>,
        operator: Option<Box<dyn Operator>>,
    ) -> usize {
        self.nodes.push(Node {
            describe,
            inputs,
            operator,
        });
        self.nodes.len() - 1
    }

    fn operator(&self, step: &StepConfig, owner: &str) -> Result<Box<dyn Operator>> {
        Ok(match step {
            StepConfig::Map(udf) => Box::new(operators::MapRecords {
                op: "map",
                udf: self.bind(udf, owner)?,
            }),
            StepConfig::FlatMap(udf) => Box::new(operators::MapRecords {
                op: "flat_map",
                udf: self.bind(udf, owner)?,
            }),
            StepConfig::MapPartitions(udf) => Box::new(operators::MapRecords {
                op: "map_partitions",
                udf: self.bind(udf, owner)?,
            }),
            StepConfig::Filter(udf) => Box::new(operators::Filter {
                udf: self.bind(udf, owner)?,
            }),
            StepConfig::Reduce(udf) => Box::new(operators::Reduce {
                udf: self.bind(udf, owner)?,
            }),
            StepConfig::Glom => Box::new(operators::Glom),
            StepConfig::Repartition(partitions) => Box::new(operators::Repartition {
                partitions: *partitions,
            }),
            StepConfig::Union(_) => Box::new(operators::Union),
            StepConfig::Count => Box::new(operators::Count),
            StepConfig::CountByValue => Box::new(operators::CountByValue),
            StepConfig::Transform(steps) => Box::new(operators::Transform {
                steps: steps
                    .iter()
                    .map(|step| self.operator(step, owner))
                    .collect::<Result<_>>()?,
            }),
        })
    }

    /// A pool of instances of the UDF's component for this step alone, so that no two
    /// operators (or jobs) share guest memory.
    fn bind(&self, udf: &UdfRef, owner: &str) -> Result<BoundUdf> {
        if let Some(natives) = self.natives {
            let native = natives
                .iter()
                .find(|native| native.name == udf.function && native.function.kind() == udf.kind)
                .with_context(|| format!("no native {} function `{}`", udf.kind, udf.function))?;
            return Ok(BoundUdf::Native(*native));
        }
        let component = self.runtime.load(&udf.component)?;
        let (index, kind) = component.function_index(&udf.function).with_context(|| {
            format!(
                "{} no longer exports `{}`",
                udf.component.display(),
                udf.function
            )
        })?;
        let warm = self.config.partitions.min(rayon::current_num_threads());
        let pool = InstancePool::new(
            component,
            format!("{owner} ({})", udf.label),
            self.config.limits,
            warm,
        )?;
        Ok(BoundUdf::Wasm {
            pool: Arc::new(pool),
            index,
            kind,
            label: udf.label.clone(),
        })
    }
}
