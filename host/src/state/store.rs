//! The state store: every key's state for one stateful operator, held by the host and
//! hash-partitioned by key exactly as the pairs that update it, so that each partition is
//! updated on its own core.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// One partition's keys and states, with the bytes they take counted as they change
/// (keys, states and update times: [`entry_bytes`]), so that metrics and quotas read the
/// state's size without walking it.
#[derive(Debug, Default, Clone)]
pub struct KeyStates {
    map: FxHashMap<Box<[u8]>, Entry>,
    /// Shared, so that the entries [`KeyStates::iter_mut`] lends out at once can each
    /// count their changes; only the holder of `&mut KeyStates` changes it, so a load and
    /// a store are enough (an atomic only to keep the partitions `Sync` for rayon).
    bytes: Count,
}

/// A byte count that one thread changes at a time.
#[derive(Debug, Default)]
struct Count(AtomicUsize);

impl Count {
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }
}

impl Clone for Count {
    fn clone(&self) -> Self {
        Self(AtomicUsize::new(self.get()))
    }
}

/// The bytes one key's entry counts for: its key, its state and its update time.
pub fn entry_bytes(key: &[u8], state: &[u8]) -> usize {
    key.len() + state.len() + std::mem::size_of::<i64>()
}

impl KeyStates {
    /// How many keys have a state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key has a state.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bytes its keys and states take, as counted.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// `key`'s entry.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Whether `key` has a state.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Every key with its entry, in the map's order.
    pub fn iter(&self) -> impl Iterator<Item = (&Box<[u8]>, &Entry)> {
        self.map.iter()
    }

    /// Every key with its entry to update, in the map's order (that of [`KeyStates::iter`]).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Box<[u8]>, EntryMut<'_>)> {
        let bytes = &self.bytes;
        self.map
            .iter_mut()
            .map(move |(key, entry)| (key, EntryMut { entry, bytes }))
    }

    /// Sets `key`'s state, reusing its entry when it has one (no allocation for a key whose
    /// state did not change).
    pub fn set(&mut self, key: &[u8], state: &[u8], time_ms: i64) {
        match self.map.get_mut(key) {
            Some(entry) => EntryMut {
                entry,
                bytes: &self.bytes,
            }
            .set(state, time_ms),
            None => self.insert(
                key.into(),
                Entry {
                    state: state.into(),
                    updated_ms: time_ms,
                },
            ),
        }
    }

    /// Puts `entry` in as `key`'s.
    fn insert(&mut self, key: Box<[u8]>, entry: Entry) {
        let key_len = key.len();
        let added = entry_bytes(&key, &entry.state);
        let removed = self.map.insert(key, entry).map_or(0, |old| {
            key_len + old.state.len() + std::mem::size_of::<i64>()
        });
        self.bytes.set(self.bytes.get() + added - removed);
    }

    /// Drops `key`'s state.
    pub fn remove(&mut self, key: &[u8]) {
        if let Some((key, entry)) = self.map.remove_entry(key) {
            self.bytes
                .set(self.bytes.get() - entry_bytes(&key, &entry.state));
        }
    }
}

/// A key's entry, lent by [`KeyStates::iter_mut`]: changing its state counts the change.
pub struct EntryMut<'a> {
    entry: &'a mut Entry,
    bytes: &'a Count,
}

impl EntryMut<'_> {
    /// Sets the state (reusing it if it did not change) and its update time.
    pub fn set(self, state: &[u8], time_ms: i64) {
        if *self.entry.state != *state {
            self.bytes
                .set(self.bytes.get() + state.len() - self.entry.state.len());
            self.entry.state = state.into();
        }
        self.entry.updated_ms = time_ms;
    }
}

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
                for (key, entry) in states.iter() {
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
    for (key, entry) in stored.into_iter().flat_map(|states| states.map) {
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
                for (key, entry) in states.iter() {
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
                let mut restored = KeyStates::default();
                for ((key, state), updated_ms) in
                    keys.iter().zip(states.iter()).zip(partition.updated_ms)
                {
                    restored.insert(
                        key.into(),
                        Entry {
                            state: state.into(),
                            updated_ms,
                        },
                    );
                }
                Ok(restored)
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

    fn bytes(&self) -> usize {
        self.partitions
            .lock()
            .expect("state store poisoned")
            .iter()
            .map(KeyStates::bytes)
            .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of `states` counted afresh, entry by entry.
    fn recounted(states: &KeyStates) -> usize {
        states
            .iter()
            .map(|(key, entry)| entry_bytes(key, &entry.state))
            .sum()
    }

    #[test]
    fn the_running_byte_count_matches_a_recount_through_sets_updates_and_removes() {
        let mut states = KeyStates::default();
        let mut seed = 7u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for step in 0..5_000i64 {
            let key = format!("key{}", next(300)).into_bytes();
            let state = vec![b's'; next(40) as usize];
            match next(4) {
                0 => states.remove(&key),
                1 => {
                    for (_, entry) in states.iter_mut().filter(|_| next(3) == 0) {
                        entry.set(&state, step);
                    }
                }
                _ => states.set(&key, &state, step),
            }
            assert_eq!(states.bytes(), recounted(&states), "after step {step}");
        }
        assert!(states.len() > 100 && states.bytes() > 0);
    }

    #[test]
    fn a_store_counts_its_bytes_through_a_spread_and_a_restore() {
        let mut initial = Batch::new();
        for key in 0..50i64 {
            push_pair(
                &mut initial,
                &sluice_abi::encoding::to_bytes(&key).unwrap(),
                &sluice_abi::encoding::to_bytes(&format!("state of {key}")).unwrap(),
            );
        }
        let store = StateStore::new("update_state_by_key", Some(initial));
        let recount = |store: &StateStore| {
            let partitions = store.partitions.lock().unwrap();
            partitions.iter().map(recounted).sum::<usize>()
        };
        store
            .update(2, 0, |_, states| {
                let key = states.iter().next().map(|(key, _)| key.clone());
                if let Some(key) = key {
                    states.remove(&key);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(store.entries(), 48);
        assert_eq!(store.bytes(), recount(&store));
        store.update(3, 1, |_, _| Ok(())).unwrap();
        assert_eq!(store.bytes(), recount(&store), "spread over 3 partitions");
        let saved = store.save();
        let restored = StateStore::new("update_state_by_key", None);
        restored.restore(&saved).unwrap();
        assert_eq!(restored.bytes(), store.bytes());
        assert_eq!(restored.entries(), 48);
    }
}
