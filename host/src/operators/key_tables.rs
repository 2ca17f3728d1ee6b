//! Keys hashed once and scattered by hash into tables small enough to stay in a core's L2
//! cache: how `count_by_value` counts and how the by-key operators merge the partitions'
//! values of each key.
//!
//! A key's hash ([`key_hash`]) picks its target partition, as
//! [`partition_of`](super::keyed::partition_of) does, and one of a few tables within it ([`Spread`]); it is also the key's hash in that
//! table, so each key is hashed once. One table holding every key of a batch (160k words)
//! leaves L2 and each lookup misses the cache; 64 small ones, filled one after the other,
//! do not. A table keeps keys of up to 15 bytes (a word's canonical bytes) in its entries
//! ([`Key`]), so finding one reads no pointer into the records it came from; longer keys are
//! found through a list of the records' own bytes ([`LongKeys`]), never copied.

use anyhow::Result;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rayon::prelude::*;
use sluice_abi::encoding::{Encoder, short_bytes};
use sluice_abi::{Batch, Groups};

use super::keyed::{key_hash, split_pair};
use crate::dataset::Dataset;
use crate::udf::BoundUdf;

/// Tables per source partition, over all target partitions: 64 tables of a batch's 160k
/// distinct words hold 2.5k keys (80 KiB) each.
const TABLES: usize = 64;
/// Records a source partition scatters before counting them into its tables: 16k keys of
/// 24 bytes (384 KiB) stay in L2 beside the table being filled.
const CHUNK: usize = 16 * 1024;

/// Which table a key goes to: its target partition (as
/// [`partition_of`](super::keyed::partition_of) says), then
/// one of `subs` tables of that partition.
#[derive(Debug, Clone, Copy)]
struct Spread {
    targets: u64,
    /// `targets - 1` when it is a power of two, to take the remainder without a division.
    target_mask: Option<u64>,
    /// `subs - 1`: there are a power of two tables per target.
    sub_mask: usize,
}

impl Spread {
    fn new(targets: usize) -> Self {
        let targets = targets.max(1);
        Self {
            targets: targets as u64,
            target_mask: targets.is_power_of_two().then_some(targets as u64 - 1),
            sub_mask: TABLES.div_ceil(targets).next_power_of_two() - 1,
        }
    }

    fn targets(&self) -> usize {
        self.targets as usize
    }

    fn subs(&self) -> usize {
        self.sub_mask + 1
    }

    /// Tables per source partition: `subs` for each target, one target after the other.
    fn tables(&self) -> usize {
        self.targets() * self.subs()
    }

    /// The table of a key of hash `hash`. The table picks from bits that the target does
    /// not (bits 32 and up) and that a table of fewer than 2^32 entries never uses to place
    /// a key ([`table_hash`]).
    #[inline]
    fn table_of(&self, hash: u64) -> usize {
        let target = match self.target_mask {
            Some(mask) => hash & mask,
            None => hash % self.targets,
        };
        target as usize * self.subs() + ((hash >> 32) as usize & self.sub_mask)
    }
}

/// The hash a table places a key by: the key's hash turned so that the bits that chose
/// its target (the low ones, for a power of two) are neither hashbrown's place in the
/// table nor the tag it compares first (the top 7).
#[inline]
fn table_hash(hash: u64) -> u64 {
    hash.rotate_right(8)
}

/// A key as a table holds it: up to 15 bytes inline (the rest zero, the length in the last
/// byte), or, with [`LONG`] in the last byte, the source partition and index of a longer
/// one in [`LongKeys`]. Two inline keys are equal when their numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key([u64; 2]);

/// The last byte of a [`Key`] that is kept in [`LongKeys`].
const LONG: u64 = 0xFF << 56;
/// The most bytes a [`Key`] keeps inline.
const INLINE: usize = 15;

impl Key {
    /// `bytes` inline if they fit, else pushed onto `long` (the long keys of `source`).
    #[inline]
    fn new<'a>(bytes: &'a [u8], source: u32, long: &mut Vec<&'a [u8]>) -> Self {
        if bytes.len() <= INLINE {
            let [low, high] = short_bytes(bytes);
            Key([low, high | (bytes.len() as u64) << 56])
        } else {
            long.push(bytes);
            Key([u64::from(source) << 32 | (long.len() - 1) as u64, LONG])
        }
    }

    fn is_long(&self) -> bool {
        self.0[1] & LONG == LONG
    }

    /// Whether `self` and `other` are the same bytes.
    #[inline]
    fn same(&self, other: &Key, long: &LongKeys<'_, '_>) -> bool {
        *self == *other || (self.is_long() && other.is_long() && long.get(self) == long.get(other))
    }

    /// Appends the key's bytes to `out`.
    #[inline]
    fn write(&self, long: &LongKeys<'_, '_>, out: &mut Vec<u8>) {
        if self.is_long() {
            out.extend_from_slice(long.get(self));
        } else {
            // Two fixed-width stores, then the length: no copy of variable length.
            let end = out.len() + (self.0[1] >> 56) as usize;
            out.extend_from_slice(&self.0[0].to_le_bytes());
            out.extend_from_slice(&(self.0[1] & !LONG).to_le_bytes());
            out.truncate(end);
        }
    }
}

/// The keys too long to keep inline, of each source partition from `first` on, borrowed
/// from its records.
struct LongKeys<'s, 'a> {
    first: u32,
    sources: &'s [Vec<&'a [u8]>],
}

impl<'s, 'a> LongKeys<'s, 'a> {
    /// The long keys of every source partition.
    fn of_all(sources: &'s [Vec<&'a [u8]>]) -> Self {
        Self { first: 0, sources }
    }

    /// The long keys of source partition `source`.
    fn of_one(source: u32, keys: &'s Vec<&'a [u8]>) -> Self {
        Self {
            first: source,
            sources: std::slice::from_ref(keys),
        }
    }

    fn get(&self, key: &Key) -> &'a [u8] {
        let source = (key.0[0] >> 32) as u32 - self.first;
        self.sources[source as usize][key.0[0] as u32 as usize]
    }
}

/// A key with its count.
struct Counted {
    hash: u64,
    key: Key,
    count: i64,
}

/// Adds `count` to the count of `key` in `table`.
#[inline]
fn add_count(table: &mut HashTable<Counted>, hash: u64, key: Key, count: i64, long: &LongKeys) {
    match table.entry(
        table_hash(hash),
        |counted| counted.key.same(&key, long),
        |counted| table_hash(counted.hash),
    ) {
        Entry::Occupied(mut occupied) => occupied.get_mut().count += count,
        Entry::Vacant(vacant) => {
            vacant.insert(Counted { hash, key, count });
        }
    }
}

/// What one source partition made of its records: a `T` per [`Spread`] table (a table of
/// counts, a list of pairs), and its long keys.
struct Scattered<'a, T> {
    tables: Vec<T>,
    long: Vec<&'a [u8]>,
}

/// For each target partition, each source's tables of it, in the order of the sources.
type ByTarget<T> = Vec<Vec<std::vec::IntoIter<T>>>;

/// Each source's tables regrouped by target partition (each source has `spread.subs()`
/// tables of each target, one target after the other); and the long keys of every source,
/// for [`LongKeys::of_all`].
fn by_target<'a, T>(
    sources: Vec<Scattered<'a, T>>,
    spread: Spread,
) -> (ByTarget<T>, Vec<Vec<&'a [u8]>>) {
    let mut long = Vec::with_capacity(sources.len());
    let mut by_target: ByTarget<T> = (0..spread.targets()).map(|_| Vec::new()).collect();
    for source in sources {
        let mut tables = source.tables.into_iter();
        for target in &mut by_target {
            target.push(
                tables
                    .by_ref()
                    .take(spread.subs())
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
        }
        long.push(source.long);
    }
    (by_target, long)
}

/// Counts the records of `partition` (source `source`) into `spread.tables()` tables: a
/// chunk of records at a time is scattered into buffers by table first, then each buffer
/// is counted into its table, so that one small table is filled at a time and the
/// lookups of a buffer, none waiting for another, overlap their cache misses.
fn count_source(
    source: u32,
    partition: &Batch,
    spread: Spread,
) -> Result<Scattered<'_, HashTable<Counted>>> {
    let mut tables: Vec<HashTable<Counted>> =
        (0..spread.tables()).map(|_| HashTable::new()).collect();
    let mut scattered: Vec<Vec<(u64, Key)>> = (0..spread.tables())
        .map(|_| Vec::with_capacity(2 * CHUNK / spread.tables()))
        .collect();
    let mut long = Vec::new();
    let mut records = partition.iter();
    loop {
        let mut taken = 0;
        for record in records.by_ref().take(CHUNK) {
            crate::scheduler::slice::tick()?;
            let hash = key_hash(record);
            let key = Key::new(record, source, &mut long);
            scattered[spread.table_of(hash)].push((hash, key));
            taken += 1;
        }
        let long_keys = LongKeys::of_one(source, &long);
        for (keys, table) in scattered.iter_mut().zip(&mut tables) {
            for (hash, key) in keys.drain(..) {
                add_count(table, hash, key, 1, &long_keys);
            }
        }
        if taken < CHUNK {
            return Ok(Scattered { tables, long });
        }
    }
}

/// `[record, count]` pairs, one per distinct record of `input`, hash-partitioned by record
/// into `targets` partitions (what `count_by_value` answers).
pub fn count_by_value(input: &Dataset, targets: usize) -> Result<Dataset> {
    let spread = Spread::new(targets);
    let counted = input
        .partitions()
        .par_iter()
        .enumerate()
        .map(|(source, partition)| count_source(source as u32, partition, spread))
        .collect::<Result<Vec<_>>>()?;
    let (by_target, long) = by_target(counted, spread);
    let long = LongKeys::of_all(&long);
    let partitions = by_target
        .into_par_iter()
        .map(|mut sources| {
            let mut merged = Vec::with_capacity(spread.subs());
            let mut keys = 0;
            for _ in 0..spread.subs() {
                let mut into = sources
                    .iter_mut()
                    .map(|tables| tables.next().expect("subs"));
                let mut table = into.next().unwrap_or_default();
                for from in into {
                    for Counted { hash, key, count } in from {
                        crate::scheduler::slice::tick()?;
                        add_count(&mut table, hash, key, count, &long);
                    }
                }
                keys += table.len();
                merged.push(table);
            }
            let mut pairs = Batch::with_capacity(keys, keys * 16);
            for counted in merged.iter().flatten() {
                crate::scheduler::slice::tick()?;
                pairs.push_with(|out| {
                    Encoder::new(out).tuple_header(2);
                    counted.key.write(&long, out);
                    Encoder::new(out).write_int(counted.count);
                });
            }
            Ok(pairs)
        })
        .collect::<Result<_>>()?;
    Ok(Dataset::from_partitions(partitions))
}

/// A pair as the merge finds it: its key, and where its value is.
struct Pair {
    hash: u64,
    key: Key,
    value: ValueAt,
}

/// Where a pair's value is: record `record` of source partition `source`, from byte
/// `start` on.
#[derive(Clone, Copy)]
struct ValueAt {
    source: u32,
    record: u32,
    start: u32,
}

impl ValueAt {
    fn get<'a>(&self, sources: &'a [Batch]) -> &'a [u8] {
        &sources[self.source as usize].get(self.record as usize)[self.start as usize..]
    }
}

/// The pairs of `partition` (source `source`), each under its table of `spread`.
fn scatter_pairs(
    source: u32,
    partition: &Batch,
    spread: Spread,
) -> Result<Scattered<'_, Vec<Pair>>> {
    // Hashes spread evenly: room for an eighth more than a table's share.
    let share = partition.len() / spread.tables();
    let mut tables: Vec<Vec<Pair>> = (0..spread.tables())
        .map(|_| Vec::with_capacity(share + share / 8 + 16))
        .collect();
    let mut long = Vec::new();
    for (index, record) in partition.iter().enumerate() {
        crate::scheduler::slice::tick()?;
        let (key, value) = split_pair(record)?;
        let hash = key_hash(key);
        let value = ValueAt {
            source,
            record: index as u32,
            start: (record.len() - value.len()) as u32,
        };
        let key = Key::new(key, source, &mut long);
        tables[spread.table_of(hash)].push(Pair { hash, key, value });
    }
    Ok(Scattered { tables, long })
}

/// The values of each key of the pairs of `sources` folded with `udf` (a reduce, or
/// combineByKey's `merge_combiners`), as `(key, value)` pairs hash-partitioned by key into
/// `targets` partitions: the reduce side of the by-key operators.
///
/// A key's values are folded in the order of their partitions, then of their records, with
/// one guest call per target partition; a key with one value is its own result, without a
/// call (Spark never calls a reduce function on a single value).
pub fn reduce_by_key(udf: &BoundUdf, sources: Vec<Batch>, targets: usize) -> Result<Dataset> {
    let spread = Spread::new(targets);
    let scattered = sources
        .par_iter()
        .enumerate()
        .map(|(source, partition)| scatter_pairs(source as u32, partition, spread))
        .collect::<Result<Vec<_>>>()?;
    let (by_target, long) = by_target(scattered, spread);
    let long = LongKeys::of_all(&long);
    let partitions = by_target
        .into_par_iter()
        .map(|mut pairs| {
            let groups = group_target(&mut pairs, spread.subs(), &long)?;
            groups.reduce(udf, &sources, &long)
        })
        .collect::<Result<_>>()?;
    Ok(Dataset::from_partitions(partitions))
}

/// The values of each key of the pairs of `partition` folded with `udf`, as pairs: the map
/// side of reduceByKey, as [`reduce_by_key`] into one partition.
pub fn reduce_partition(udf: &BoundUdf, partition: Batch) -> Result<Batch> {
    let mut reduced = reduce_by_key(udf, vec![partition], 1)?.into_partitions();
    Ok(reduced.pop().unwrap_or_default())
}

/// No value: the end of a list of [`Listed`] values.
const END: u32 = u32::MAX;

/// A value in its key's list.
struct Listed {
    value: ValueAt,
    next: u32,
}

/// A key's values: the first and last of its list in [`TargetGroups::values`].
struct Group {
    key: Key,
    first: u32,
    last: u32,
    len: u32,
}

/// A key as a grouping table holds it: its hash, and its group.
struct Grouped {
    hash: u64,
    key: Key,
    group: u32,
}

/// One target partition's values, grouped by key.
struct TargetGroups {
    groups: Vec<Group>,
    values: Vec<Listed>,
}

/// Groups the pairs of one target partition (`pairs`: each source's lists, one per table
/// of the target), table by table, keys in the order first seen within a table.
fn group_target(
    pairs: &mut [std::vec::IntoIter<Vec<Pair>>],
    subs: usize,
    long: &LongKeys,
) -> Result<TargetGroups> {
    let mut grouped = TargetGroups {
        groups: Vec::new(),
        values: Vec::new(),
    };
    let mut table: HashTable<Grouped> = HashTable::new();
    for _ in 0..subs {
        table.clear();
        for source in pairs.iter_mut() {
            for Pair { hash, key, value } in source.next().expect("a list per table") {
                crate::scheduler::slice::tick()?;
                let listed = grouped.values.len() as u32;
                grouped.values.push(Listed { value, next: END });
                match table.entry(
                    table_hash(hash),
                    |entry| entry.key.same(&key, long),
                    |entry| table_hash(entry.hash),
                ) {
                    Entry::Occupied(entry) => {
                        let group = &mut grouped.groups[entry.get().group as usize];
                        grouped.values[group.last as usize].next = listed;
                        group.last = listed;
                        group.len += 1;
                    }
                    Entry::Vacant(entry) => {
                        let group = grouped.groups.len() as u32;
                        entry.insert(Grouped { hash, key, group });
                        grouped.groups.push(Group {
                            key,
                            first: listed,
                            last: listed,
                            len: 1,
                        });
                    }
                }
            }
        }
    }
    Ok(grouped)
}

impl TargetGroups {
    /// The values of the list that starts at `first`, in order.
    fn list(&self, first: u32) -> impl Iterator<Item = ValueAt> + '_ {
        std::iter::successors(Some(first), |&at| {
            Some(self.values[at as usize].next).filter(|&next| next != END)
        })
        .map(|at| self.values[at as usize].value)
    }

    /// Each key with its values folded by `udf`, as pairs.
    fn reduce(&self, udf: &BoundUdf, sources: &[Batch], long: &LongKeys) -> Result<Batch> {
        let mut folding = Batch::new();
        let mut group_ends = Vec::new();
        for group in self.groups.iter().filter(|group| group.len > 1) {
            for value in self.list(group.first) {
                folding.push_encoded(value.get(sources));
            }
            group_ends.push(folding.len() as u32);
        }
        let folded = if group_ends.is_empty() {
            Batch::new()
        } else {
            udf.aggregate(Groups::from_parts(folding, group_ends)?)?
        };
        // `aggregate` checked that there is one result per group.
        let mut results = folded.iter();
        let bytes = folded.data().len() + self.groups.len() * 24;
        let mut pairs = Batch::with_capacity(self.groups.len(), bytes);
        for group in &self.groups {
            crate::scheduler::slice::tick()?;
            let value = match group.len {
                1 => self.values[group.first as usize].value.get(sources),
                _ => results.next().expect("one result per group"),
            };
            pairs.push_with(|out| {
                Encoder::new(out).tuple_header(2);
                group.key.write(long, out);
                out.extend_from_slice(value);
            });
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sluice_abi::encoding::from_bytes;

    use super::*;
    use crate::operators::builtin::counting;
    use crate::operators::keyed::partition_of;

    /// A small deterministic generator (xorshift), so that a failure repeats.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as usize
        }
    }

    /// Encoded keys of every length from 0 to 40 bytes of text: short ones kept inline,
    /// long ones not, some differing only in their last byte.
    fn vocabulary(random: &mut Random, words: usize) -> Vec<Vec<u8>> {
        (0..words)
            .map(|word| {
                let len = random.below(41);
                let mut text: String = (0..len)
                    .map(|_| char::from(b'a' + random.below(3) as u8))
                    .collect();
                text.push_str(&word.to_string());
                let mut key = Batch::new();
                match word % 3 {
                    0 => key.push(&text),
                    1 => key.push(&(text, word as i64)),
                    _ => key.push(&(word as i64)),
                }
                .unwrap();
                key.get(0).to_vec()
            })
            .collect()
    }

    /// Where each key of a data set of pairs is, checking that it is in its partition and
    /// only once.
    fn pairs_by_key(output: &Dataset, targets: usize) -> HashMap<Vec<u8>, Vec<u8>> {
        assert_eq!(output.partitions().len(), targets);
        let mut found = HashMap::new();
        for (target, partition) in output.partitions().iter().enumerate() {
            for record in partition.iter() {
                let (key, value) = split_pair(record).unwrap();
                assert_eq!(partition_of(key, targets), target, "a key in its partition");
                let again = found.insert(key.to_vec(), value.to_vec());
                assert!(again.is_none(), "each key once");
            }
        }
        found
    }

    #[test]
    fn counts_are_a_plain_map_s_and_each_key_is_in_its_hash_partition() {
        let mut random = Random(0x5eed);
        for (sources, targets, words, records) in [
            (1, 1, 10, 100),
            (2, 2, 3000, 50_000),
            (3, 3, 200, 40_000),
            (4, 8, 20_000, 70_000),
            (2, 200, 500, 5_000),
        ] {
            let vocabulary = vocabulary(&mut random, words);
            let mut expected: HashMap<Vec<u8>, i64> = HashMap::new();
            let partitions = (0..sources)
                .map(|_| {
                    let mut partition = Batch::new();
                    for _ in 0..records / sources {
                        let key = &vocabulary[random.below(words)];
                        partition.push_encoded(key);
                        *expected.entry(key.clone()).or_default() += 1;
                    }
                    partition
                })
                .collect();
            let counted = count_by_value(&Dataset::from_partitions(partitions), targets).unwrap();
            let counts: HashMap<Vec<u8>, i64> = pairs_by_key(&counted, targets)
                .into_iter()
                .map(|(key, count)| (key, from_bytes(&count).unwrap()))
                .collect();
            assert_eq!(counts, expected, "{sources} sources, {targets} targets");
        }
    }

    #[test]
    fn each_key_s_values_are_folded_in_arrival_order_into_its_hash_partition() {
        let [_, subtract, _] = counting();
        let mut random = Random(0xfeed);
        for (sources, targets, words, records) in
            [(1, 1, 5, 20), (2, 2, 3000, 20_000), (3, 5, 40, 3000)]
        {
            let vocabulary = vocabulary(&mut random, words);
            let mut values: HashMap<Vec<u8>, Vec<i64>> = HashMap::new();
            let partitions = (0..sources)
                .map(|_| {
                    let mut partition = Batch::new();
                    for _ in 0..records / sources {
                        let key = &vocabulary[random.below(words)];
                        let value = random.below(1000) as i64;
                        partition.push_with(|out| {
                            Encoder::new(out).tuple_header(2);
                            out.extend_from_slice(key);
                            Encoder::new(out).write_int(value);
                        });
                        values.entry(key.clone()).or_default().push(value);
                    }
                    partition
                })
                .collect();
            let reduced = reduce_by_key(&subtract, partitions, targets).unwrap();
            let folded: HashMap<Vec<u8>, i64> = pairs_by_key(&reduced, targets)
                .into_iter()
                .map(|(key, value)| (key, from_bytes(&value).unwrap()))
                .collect();
            let expected: HashMap<Vec<u8>, i64> = values
                .into_iter()
                .map(|(key, values)| {
                    let first = values[0];
                    (key, values[1..].iter().fold(first, |a, b| a - b))
                })
                .collect();
            assert_eq!(folded, expected, "{sources} sources, {targets} targets");
        }
    }

    #[test]
    fn a_record_that_is_not_a_pair_is_named() {
        let [add, ..] = counting();
        let mut partition = Batch::new();
        partition.push(&("a", 1)).unwrap();
        partition.push(&"alone").unwrap();
        let error = reduce_by_key(&add, vec![partition], 2).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"alone\" is not a (key, value) pair"),
            "{error}"
        );
    }
}
