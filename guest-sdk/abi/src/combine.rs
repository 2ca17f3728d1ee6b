//! Map-side combining: `(key, value)` pairs folded by key before they leave the code that
//! made them, as Spark combines in the map task before the shuffle.
//!
//! A [`Combiner`] keeps one combiner per key across any number of [`add`](Combiner::add)s
//! (the chunks of one partition) and hands them all out at [`flush`](Combiner::flush). Each
//! `add` folds its chunk with one call of the merge function over every key the chunk
//! touched, so the per-call cost of the batch adapters is paid per chunk, not per pair.
//! Guests run it behind the `combine` export; the host runs the same code natively.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::batch::{Batch, Groups};
use crate::encoding::{Encoder, pair_parts};
use crate::function::{Failure, GroupsFn, RecordsFn};
use crate::value::Value;

/// How a key's values are folded into its combiner.
#[derive(Debug, Clone, Copy)]
pub struct Merge {
    /// value -> combiner, for a key's first value (combineByKey's `createCombiner`);
    /// `None`: the first value is the combiner (reduceByKey).
    pub create: Option<RecordsFn>,
    /// (combiner, value) -> combiner over groups `[combiner, values...]`: a reduce, or a
    /// fold when `create` is given.
    pub merge: GroupsFn,
}

/// Combiners by key, keys in the order first seen.
#[derive(Debug, Default)]
pub struct Combiner {
    /// Slot numbers, found by the hash of their key's bytes.
    slots: HashTable<u32>,
    /// The key of slot `i`, canonically encoded.
    keys: Batch,
    /// The combiner of slot `i`, encoded; empty (no valid encoding is) until it has one.
    combiners: Vec<Vec<u8>>,
    /// Per slot, its group in the chunk being added (`u32::MAX`: none); kept between
    /// chunks, so that a chunk costs what it touches, not what the table holds.
    group_of: Vec<u32>,
}

impl Combiner {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.combiners.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.combiners.is_empty()
    }

    /// Folds the `(key, value)` records of `pairs` into the table with `merge`. On an error
    /// the table is left part-way and should be dropped (or [`clear`](Self::clear)ed).
    pub fn add(&mut self, pairs: &Batch, merge: Merge) -> Result<(), Failure> {
        // The slot of each pair, then the pairs regrouped by slot (in the order the chunk
        // first touched each slot) with a counting sort: no allocation per key.
        let mut slot_of = Vec::with_capacity(pairs.len());
        let mut values = Vec::with_capacity(pairs.len());
        for record in pairs.iter() {
            let (key, value) = pair_parts(record).ok_or_else(|| not_a_pair(record))?;
            slot_of.push(self.slot(key));
            values.push(value);
        }
        self.group_of.resize(self.combiners.len(), u32::MAX);
        let local = &mut self.group_of;
        let mut touched: Vec<u32> = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        for &slot in &slot_of {
            let group = &mut local[slot as usize];
            if *group == u32::MAX {
                *group = touched.len() as u32;
                touched.push(slot);
                counts.push(0);
            }
            counts[*group as usize] += 1;
        }
        let mut starts = Vec::with_capacity(counts.len() + 1);
        starts.push(0u32);
        for count in &counts {
            starts.push(starts.last().copied().unwrap_or(0) + count);
        }
        let mut order = vec![0u32; slot_of.len()];
        let mut next = starts.clone();
        for (pair, &slot) in slot_of.iter().enumerate() {
            let group = local[slot as usize] as usize;
            order[next[group] as usize] = pair as u32;
            next[group] += 1;
        }
        for &slot in &touched {
            local[slot as usize] = u32::MAX;
        }
        let group_values =
            |group: usize| order[starts[group] as usize..starts[group + 1] as usize].iter();

        // Keys new to the table take their combiner from their first value.
        let mut created = None;
        if let Some(create) = merge.create {
            let mut firsts = Batch::new();
            for (group, &slot) in touched.iter().enumerate() {
                if self.combiners[slot as usize].is_empty() {
                    firsts.push_encoded(values[order[starts[group] as usize] as usize]);
                }
            }
            if !firsts.is_empty() {
                let made = create(&firsts)?;
                owed(made.len(), firsts.len(), "combiners")?;
                created = Some(made);
            }
        }
        let mut made = created.as_ref().map(|made| made.iter());

        // One group [combiner, values...] per touched key that has something to fold.
        let mut records = Batch::with_capacity(pairs.len() + touched.len(), pairs.data().len());
        let mut group_ends = Vec::new();
        let mut folded = Vec::new();
        for (group, &slot) in touched.iter().enumerate() {
            let combiner = &mut self.combiners[slot as usize];
            let mut rest = group_values(group);
            let head: &[u8] = if !combiner.is_empty() {
                combiner
            } else if let Some(made) = made.as_mut() {
                rest.next();
                made.next().expect("one combiner per new key")
            } else {
                values[*rest.next().expect("a group is never empty") as usize]
            };
            if rest.len() == 0 {
                if combiner.is_empty() {
                    *combiner = head.to_vec();
                }
                continue;
            }
            records.push_encoded(head);
            rest.for_each(|&pair| records.push_encoded(values[pair as usize]));
            group_ends.push(records.len() as u32);
            folded.push(slot);
        }
        if folded.is_empty() {
            return Ok(());
        }
        let groups = Groups::from_parts(records, group_ends).expect("group ends are in order");
        let results = (merge.merge)(&groups).map_err(|failure| Failure {
            record_index: None,
            ..failure
        })?;
        owed(results.len(), folded.len(), "results")?;
        for (slot, result) in folded.iter().zip(results.iter()) {
            let combiner = &mut self.combiners[*slot as usize];
            combiner.clear();
            combiner.extend_from_slice(result);
        }
        Ok(())
    }

    /// Every key with its combiner as a `(key, combiner)` pair, keys in the order first
    /// seen; the table is left empty.
    pub fn flush(&mut self) -> Batch {
        let mut pairs = Batch::with_capacity(
            self.len(),
            self.keys.data().len() + self.combiners.iter().map(|c| c.len() + 1).sum::<usize>(),
        );
        for (key, combiner) in self.keys.iter().zip(&self.combiners) {
            pairs.push_with(|out| {
                Encoder::new(out).tuple_header(2);
                out.extend_from_slice(key);
                out.extend_from_slice(combiner);
            });
        }
        self.clear();
        pairs
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.keys = Batch::new();
        self.combiners.clear();
        self.group_of.clear();
    }

    /// The slot of `key`, made if the key is new.
    fn slot(&mut self, key: &[u8]) -> u32 {
        let hash = hash_of(key);
        let keys = &self.keys;
        if let Some(&slot) = self
            .slots
            .find(hash, |&slot| keys.get(slot as usize) == key)
        {
            return slot;
        }
        let slot = self.combiners.len() as u32;
        self.keys.push_encoded(key);
        self.combiners.push(Vec::new());
        let keys = &self.keys;
        self.slots
            .insert_unique(hash, slot, |&slot| hash_of(keys.get(slot as usize)));
        slot
    }
}

fn hash_of(key: &[u8]) -> u64 {
    let mut hasher = FxBuildHasher.build_hasher();
    hasher.write(key);
    hasher.finish()
}

fn not_a_pair(record: &[u8]) -> Failure {
    let shown = Value::decode(record).map_or_else(|_| "undecodable bytes".into(), |v| v.to_json());
    Failure::new(format!(
        "record {shown} is not a (key, value) pair: combining by key needs 2-element tuples"
    ))
}

/// A function must answer once per input: the adapters always do, so this only guards
/// against a hand-written table entry.
fn owed(got: usize, owed: usize, what: &str) -> Result<(), Failure> {
    if got == owed {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "gave {got} {what} for {owed} keys, where exactly {owed} are owed"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(a: i64, b: i64) -> i64 {
        a + b
    }

    fn pairs(items: &[(&str, i64)]) -> Batch {
        let mut batch = Batch::new();
        items.iter().for_each(|pair| batch.push(pair).unwrap());
        batch
    }

    fn decoded(batch: &Batch) -> Vec<(String, i64)> {
        batch
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect()
    }

    const SUM: Merge = Merge {
        create: None,
        merge: |groups| crate::function::reduce(groups, sum),
    };

    #[test]
    fn folds_across_adds_and_flushes_keys_in_first_seen_order() {
        let mut table = Combiner::new();
        table
            .add(&pairs(&[("b", 1), ("a", 2), ("b", 3)]), SUM)
            .unwrap();
        table.add(&pairs(&[("c", 5), ("a", 1)]), SUM).unwrap();
        table.add(&pairs(&[("b", 10)]), SUM).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(
            decoded(&table.flush()),
            [("b".into(), 14), ("a".into(), 3), ("c".into(), 5)]
        );
        assert!(table.is_empty(), "a flush empties the table");
        table.add(&pairs(&[("a", 7)]), SUM).unwrap();
        assert_eq!(decoded(&table.flush()), [("a".into(), 7)]);
    }

    #[test]
    fn creates_a_combiner_from_each_key_s_first_value_only() {
        fn count_and_sum(value: i64) -> (i64, i64) {
            (1, value)
        }
        fn add(combiner: (i64, i64), value: i64) -> (i64, i64) {
            (combiner.0 + 1, combiner.1 + value)
        }
        let merge = Merge {
            create: Some(|batch| crate::function::map(batch, count_and_sum)),
            merge: |groups| crate::function::fold(groups, add),
        };
        let mut table = Combiner::new();
        table
            .add(&pairs(&[("a", 2), ("b", 5), ("a", 4)]), merge)
            .unwrap();
        table.add(&pairs(&[("b", 1)]), merge).unwrap();
        let flushed: Vec<(String, (i64, i64))> = table
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(flushed, [("a".into(), (2, 6)), ("b".into(), (2, 6))]);
    }

    #[test]
    fn a_record_that_is_not_a_pair_is_named() {
        let mut batch = Batch::new();
        batch.push("lonely").unwrap();
        let failure = Combiner::new().add(&batch, SUM).unwrap_err();
        assert!(
            failure
                .message
                .contains("\"lonely\" is not a (key, value) pair"),
            "{failure}"
        );
    }

    #[test]
    fn a_failing_merge_names_no_record_of_the_input() {
        let failing = Merge {
            create: None,
            merge: |_| Err(Failure::at(0, "in `sum`: overflow".into())),
        };
        let failure = Combiner::new()
            .add(&pairs(&[("a", 1), ("a", 2)]), failing)
            .unwrap_err();
        assert_eq!(failure.record_index, None);
        assert!(failure.message.contains("overflow"));
    }
}
