//! A batch's data set: its records split into partitions, each processed on its own core.

use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;
use sluice_abi::Batch;

use crate::event_time::RecordTimes;

/// The records of one stream for one batch, in partitions, with their event times once an
/// `event_time` step read them.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    partitions: Vec<Batch>,
    /// Each record's event time, as a step read it. A data set of other records is made
    /// anew (there is no way to change a data set's records), without them.
    event_times: Option<Arc<RecordTimes>>,
}

/// Data sets are equal when their records are: event times are read from them.
impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        self.partitions == other.partitions
    }
}

impl Eq for Dataset {}

/// The bytes the records of `partitions` take in memory, with their offsets (a pass over
/// the partitions, not their records).
pub fn partitions_bytes(partitions: &[Batch]) -> usize {
    partitions
        .iter()
        .map(|partition| partition.data().len() + partition.len() * 4)
        .sum()
}

impl Dataset {
    /// A data set made of these partitions.
    pub fn from_partitions(partitions: Vec<Batch>) -> Self {
        Self {
            partitions,
            event_times: None,
        }
    }

    /// The same records, carrying `times`: each record's event time, in order.
    pub fn with_event_times(self, times: RecordTimes) -> Self {
        debug_assert_eq!(times.len(), self.len(), "a time per record");
        Self {
            event_times: Some(Arc::new(times)),
            ..self
        }
    }

    /// Each record's event time, if a step read them into this data set.
    pub fn event_times(&self) -> Option<&RecordTimes> {
        self.event_times.as_deref()
    }

    /// Splits `records` into `partitions` contiguous slices of near-equal size (slice `i`
    /// holds records `floor(i * n / p)..floor((i + 1) * n / p)`, as Spark slices a local
    /// collection).
    pub fn split(records: Batch, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        if partitions == 1 {
            return Self::from_partitions(vec![records]);
        }
        let n = records.len();
        let slices = (0..partitions)
            .map(|i| records.slice(i * n / partitions..(i + 1) * n / partitions))
            .collect();
        Self::from_partitions(slices)
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Batch] {
        &self.partitions
    }

    /// The partitions, by value.
    pub fn into_partitions(self) -> Vec<Batch> {
        self.partitions
    }

    /// How many records there are in all.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(Batch::len).sum()
    }

    /// The bytes its records take in memory, with their offsets.
    pub fn bytes(&self) -> usize {
        partitions_bytes(&self.partitions)
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record, partition after partition.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.partitions.iter().flat_map(Batch::iter)
    }

    /// All records in one partition, in order.
    pub fn concatenated(&self) -> Batch {
        let mut all = Batch::with_capacity(
            self.len(),
            self.partitions.iter().map(|p| p.data().len()).sum(),
        );
        self.partitions
            .iter()
            .for_each(|partition| all.extend_from(partition));
        all
    }

    /// Applies `f` to every partition in parallel, keeping partition order.
    pub fn try_map_partitions<E: Send>(
        self,
        f: impl Fn(Batch) -> Result<Batch, E> + Sync + Send,
    ) -> Result<Dataset, E> {
        let partitions = self
            .partitions
            .into_par_iter()
            .map(f)
            .collect::<Result<Vec<_>, E>>()?;
        Ok(Self::from_partitions(partitions))
    }
}
