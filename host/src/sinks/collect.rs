//! collect: batches kept in memory for the program that runs the job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use sluice_abi::Value;

use super::Sink;
use crate::dataset::Dataset;

type Batches = BTreeMap<String, Vec<(i64, Vec<Value>)>>;

/// What a job's collect sinks have kept: per sink, `(batch time, records)` in batch order.
#[derive(Clone, Default)]
pub struct Collected {
    batches: Arc<Mutex<Batches>>,
}

impl Collected {
    /// The batches the sink called `name` has kept so far.
    pub fn batches(&self, name: &str) -> Vec<(i64, Vec<Value>)> {
        self.batches
            .lock()
            .expect("collected output poisoned")
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn sink(&self, name: &str) -> CollectSink {
        CollectSink {
            name: name.to_owned(),
            collected: self.clone(),
        }
    }
}

pub struct CollectSink {
    name: String,
    collected: Collected,
}

impl Sink for CollectSink {
    fn write(&self, time_ms: i64, data: &Dataset) -> Result<()> {
        let records = data
            .records()
            .map(|record| {
                crate::scheduler::slice::tick()?;
                Ok(Value::decode(record)?)
            })
            .collect::<Result<Vec<_>>>()?;
        self.collected
            .batches
            .lock()
            .expect("collected output poisoned")
            .entry(self.name.clone())
            .or_default()
            .push((time_ms, records));
        Ok(())
    }
}
