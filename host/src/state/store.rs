//! The state store: every key's state for one stateful operator, held by the host and
//! hash-partitioned by key exactly as the pairs that update it, so that each partition is
//! updated on its own core.

use std::sync::Mutex;

use anyhow::{Context, Result};
use bincode::{Decode, Encode};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use sluice_abi::Batch;
use sluice_abi::encoding::{Encoder, cell_parts};

use crate::checkpoint::codec::{self, SavedBatch};
use crate::operators::OperatorState;
use crate::operators::keyed::{partition_of, push_pair, split_pair};
use crate::udf::BoundUdf;

/// One key's state: its canonical encoding, and the batch time it was last updated at
/// (what mapWithState's timeout measures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The encoded state.
    pub state: Box<[u8]>,
    /// Batch time of the last update, in milliseconds.
    pub updated_ms: i64,
}

/// One partition's keys and states.
pub type KeyStates = FxHashMap<Box<[u8]>, Entry>;

/// The states of one operator, with the initial state it starts from.
pub struct StateStore {
    kind: &'static str,
    partitions: Mutex<Vec<KeyStates>>,
    /// `(key, state)` pairs to load at the first batch, unless a checkpoint came first.
    initial: Mutex<Option<Batch>>,
}

impl StateStore {
    /// An empty store for an operator of `kind` that starts from the `initial` pairs.
    pub fn new(kind: &'static str, initial: Option<Batch>) -> Self {
        Self {
            kind,
            partitions: Mutex::new(Vec::new()),
            initial: Mutex::new(initial),
        }
    }

    /// Runs `update` on every partition in parallel, after loading the initial state (at
    /// the first batch) and spreading the keys over `partitions` if that changed.
    pub fn update<T: Send>(
        &self,
        partitions: usize,
        time_ms: i64,
        update: impl Fn(usize, &mut KeyStates) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let mut stored = self.partitions.lock().expect("state store poisoned");
        if stored.len() != partitions {
            *stored = spread(std::mem::take(&mut *stored), partitions);
        }
        if let Some(initial) = self.initial.lock().expect("state store poisoned").take() {
            for record in initial.iter() {
                let (key, state) = split_pair(record).context("in the initial state")?;
                stored[partition_of(key, partitions)].insert(
                    key.into(),
                    Entry {
                        state: state.into(),
                        updated_ms: time_ms,
                    },
                );
            }
        }
        stored
            .par_iter_mut()
            .enumerate()
            .map(|(partition, states)| update(partition, states))
            .collect()
    }

    /// Every `(key, state)` pair, one batch per partition.
    pub fn pairs(&self) -> Vec<Batch> {
        self.partitions
            .lock()
            .expect("state store poisoned")
            .par_iter()
            .map(|states| {
                let mut pairs = Batch::with_capacity(states.len(), 0);
                for (key, entry) in states {
                    push_pair(&mut pairs, key, &entry.state);
                }
                pairs
            })
            .collect()
    }
}

/// Moves every key to its partition among `partitions`.
fn spread(stored: Vec<KeyStates>, partitions: usize) -> Vec<KeyStates> {
    let mut spread = vec![KeyStates::default(); partitions];
    for (key, entry) in stored.into_iter().flatten() {
        spread[partition_of(&key, partitions)].insert(key, entry);
    }
    spread
}

/// A partition as saved: three columns.
#[derive(Encode, Decode)]
struct SavedPartition {
    keys: SavedBatch,
    states: SavedBatch,
    updated_ms: Vec<i64>,
}

impl OperatorState for StateStore {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn save(&self) -> Vec<u8> {
        let stored = self.partitions.lock().expect("state store poisoned");
        let saved: Vec<SavedPartition> = stored
            .par_iter()
            .map(|states| {
                let mut keys = Batch::with_capacity(states.len(), 0);
                let mut values = Batch::with_capacity(states.len(), 0);
                let mut updated_ms = Vec::with_capacity(states.len());
                for (key, entry) in states {
                    keys.push_encoded(key);
                    values.push_encoded(&entry.state);
                    updated_ms.push(entry.updated_ms);
                }
                SavedPartition {
                    keys: SavedBatch::from(keys),
                    states: SavedBatch::from(values),
                    updated_ms,
                }
            })
            .collect();
        codec::encode(&saved)
    }

    fn restore(&self, saved: &[u8]) -> Result<()> {
        let saved: Vec<SavedPartition> = codec::decode(saved)?;
        let restored = saved
            .into_par_iter()
            .map(|partition| {
                let keys = partition.keys.into_batch()?;
                let states = partition.states.into_batch()?;
                anyhow::ensure!(
                    keys.len() == states.len() && keys.len() == partition.updated_ms.len(),
                    "a saved state partition has {} keys but {} states",
                    keys.len(),
                    states.len()
                );
                Ok(keys
                    .iter()
                    .zip(states.iter())
                    .zip(partition.updated_ms)
                    .map(|((key, state), updated_ms)| {
                        (
                            Box::from(key),
                            Entry {
                                state: state.into(),
                                updated_ms,
                            },
                        )
                    })
                    .collect::<KeyStates>())
            })
            .collect::<Result<Vec<_>>>()?;
        *self.partitions.lock().expect("state store poisoned") = restored;
        // A restored store already holds whatever the initial state became.
        self.initial.lock().expect("state store poisoned").take();
        Ok(())
    }

    fn entries(&self) -> usize {
        self.partitions
            .lock()
            .expect("state store poisoned")
            .iter()
            .map(KeyStates::len)
            .sum()
    }
}

/// Sets `key`'s state, reusing its entry when it has one (no allocation for a key whose
/// state did not change).
pub fn set_state(states: &mut KeyStates, key: &[u8], state: &[u8], time_ms: i64) {
    match states.get_mut(key) {
        Some(entry) => {
            if *entry.state != *state {
                entry.state = state.into();
            }
            entry.updated_ms = time_ms;
        }
        None => {
            states.insert(
                key.into(),
                Entry {
                    state: state.into(),
                    updated_ms: time_ms,
                },
            );
        }
    }
}

/// The state inside a state cell `udf` returned (`None`: the key has none).
pub fn read_cell<'c>(udf: &BoundUdf, cell: &'c [u8]) -> Result<Option<&'c [u8]>> {
    cell_parts(cell).with_context(|| {
        format!(
            "UDF `{}` returned something other than a state cell",
            udf.label()
        )
    })
}

/// Appends a state cell holding `state` (or none) to `out`.
pub fn write_cell(out: &mut Vec<u8>, state: Option<&[u8]>) {
    Encoder::new(out).list_header(usize::from(state.is_some()));
    out.extend_from_slice(state.unwrap_or_default());
}
