//! A table of values by key, keys being canonically encoded bytes, read out in an order
//! the caller gives each key as it adds it (the order first seen, say).
//!
//! Short keys (a word's key, up to 15 bytes) live in the table's entries themselves, not
//! behind a pointer into the text they came from, so that finding a key touches one
//! cache line and allocates nothing; longer ones are spilled into a side store. Values
//! of bytes can be kept the same way ([`Stored`]). Map-side combining in the guest
//! ([`crate::combine`]) and the host's keyed operators share it.

use std::hash::Hasher;

use hashbrown::{HashTable, hash_table};
use rustc_hash::FxHasher;

use crate::encoding::short_bytes;

/// Values of type `V` by key, read out in the order given to each key.
#[derive(Debug)]
pub struct KeyTable<V> {
    /// Each key with its value, found by the key's hash ([`Key`]).
    entries: HashTable<Entry<V>>,
    /// Keys (and values) too long to keep in their entry.
    spill: Spill,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        Self {
            entries: HashTable::new(),
            spill: Spill::default(),
        }
    }
}

/// A key with its value.
#[derive(Debug, Clone, Copy)]
struct Entry<V> {
    key: Stored,
    value: V,
    /// Where the key comes when the table is read out ([`Vacant::insert`]).
    order: u32,
}

/// The most bytes a [`Stored`] keeps inline.
const INLINE: usize = 15;
/// The length byte of bytes kept in a [`Spill`]: the low four bytes are their index there.
const SPILLED: u8 = u8::MAX;

/// Where a table keeps the bytes too long to keep inline.
#[derive(Debug, Default)]
pub struct Spill(Vec<Vec<u8>>);

impl Spill {
    /// Keeps `bytes`, and answers where.
    pub fn push(&mut self, bytes: &[u8]) -> u32 {
        self.0.push(bytes.to_vec());
        (self.0.len() - 1) as u32
    }

    /// The bytes kept at `index`.
    #[inline]
    pub fn get(&self, index: u32) -> &[u8] {
        &self.0[index as usize]
    }

    /// Replaces the bytes kept at `index` with `bytes`.
    pub fn set(&mut self, index: u32, bytes: &[u8]) {
        let kept = &mut self.0[index as usize];
        kept.clear();
        kept.extend_from_slice(bytes);
    }
}

/// Bytes kept by a table: the first 15 bytes hold them (the rest zero) and the last their
/// length when they fit, so that comparing two is comparing two pairs of numbers and
/// storing one copies no run of variable length (see [`short_bytes`]); longer ones are
/// kept in the table's [`Spill`].
#[derive(Debug, Clone, Copy)]
pub struct Stored([u8; INLINE + 1]);

impl Stored {
    /// `bytes` inline, if they fit.
    #[inline]
    fn inline(bytes: &[u8]) -> Option<Self> {
        (bytes.len() <= INLINE).then(|| {
            let [low, high] = short_bytes(bytes);
            Self::from_numbers([low, high | (bytes.len() as u64) << 56])
        })
    }

    #[inline]
    fn from_numbers([low, high]: [u64; 2]) -> Self {
        let mut bytes = [0; INLINE + 1];
        bytes[..8].copy_from_slice(&low.to_le_bytes());
        bytes[8..].copy_from_slice(&high.to_le_bytes());
        Self(bytes)
    }

    #[inline]
    fn numbers(&self) -> [u64; 2] {
        [
            u64::from_le_bytes(self.0[..8].try_into().expect("8")),
            u64::from_le_bytes(self.0[8..].try_into().expect("8")),
        ]
    }

    /// `bytes`, inline if they fit, else in `spill`.
    pub fn new(bytes: &[u8], spill: &mut Spill) -> Self {
        Self::inline(bytes).unwrap_or_else(|| {
            let index = spill.push(bytes);
            Self::from_numbers([u64::from(index), u64::from(SPILLED) << 56])
        })
    }

    fn spilled_index(&self) -> Option<usize> {
        (self.0[INLINE] == SPILLED).then_some(self.numbers()[0] as u32 as usize)
    }

    /// The bytes, read from `spill` if they are kept there.
    #[inline]
    pub fn get<'a>(&'a self, spill: &'a Spill) -> &'a [u8] {
        match self.spilled_index() {
            None => &self.0[..usize::from(self.0[INLINE])],
            Some(index) => &spill.0[index],
        }
    }

    /// Whether these are the bytes of `key`.
    #[inline]
    fn is(&self, key: &Key<'_>, spill: &Spill) -> bool {
        match key.inline {
            // Two compares of one number each: a compare of both pairs at once goes
            // through the shadow stack in a WASM guest (two 8-byte stores reloaded as one
            // 16-byte load, a store-forwarding stall on every probe).
            Some(inline) => {
                let ([a, b], [c, d]) = (self.numbers(), inline.numbers());
                a == c && b == d
            }
            None => self
                .spilled_index()
                .is_some_and(|index| spill.0[index] == key.bytes),
        }
    }

    /// The hash of these bytes, as [`Key::new`] works it out.
    fn hash(&self, spill: &Spill) -> u64 {
        match self.spilled_index() {
            None => hash_inline(self.numbers()),
            Some(index) => hash_bytes(&spill.0[index]),
        }
    }
}

/// A key to look up in a [`KeyTable`]: its bytes, with its inline form and hash worked
/// out once.
#[derive(Debug, Clone, Copy)]
pub struct Key<'k> {
    bytes: &'k [u8],
    /// The key inline, if it fits.
    inline: Option<Stored>,
    hash: u64,
}

impl<'k> Key<'k> {
    /// The key `bytes`. A key that fits inline is hashed from its two inline numbers,
    /// not byte by byte.
    #[inline]
    pub fn new(bytes: &'k [u8]) -> Self {
        let inline = Stored::inline(bytes);
        let hash = match inline {
            Some(inline) => hash_inline(inline.numbers()),
            None => hash_bytes(bytes),
        };
        Self {
            bytes,
            inline,
            hash,
        }
    }

    /// The key without its bytes, in 16 bytes, to look it up again later
    /// ([`KeptKey::key`]) without working its inline form and hash out again. `at` is
    /// where the keeper keeps the key's bytes, if it is too long to keep inline.
    #[inline]
    pub fn keep(&self, at: u32) -> KeptKey {
        match self.inline {
            Some(inline) => KeptKey(inline.numbers()),
            None => KeptKey([
                u64::from(at) | (self.hash as u32 as u64) << 32,
                self.bytes.len() as u64 | u64::from(SPILLED) << 56,
            ]),
        }
    }
}

/// A [`Key`] kept without its bytes ([`Key::keep`]), in 16 bytes, so that a caller's list
/// of keys waiting to be looked up is cheap to move: a key that fits inline is kept as
/// its table entry keeps it (its hash is worked out again from its two numbers when
/// needed: two multiplications); a longer one as where its bytes are kept (the low four
/// bytes), their hash (the next four: see [`hash_bytes`]) and their length (with a
/// `SPILLED` length byte).
#[derive(Debug, Clone, Copy)]
pub struct KeptKey([u64; 2]);

impl KeptKey {
    /// Whether the key is kept whole (else its bytes must be kept beside it).
    #[inline]
    pub fn is_inline(&self) -> bool {
        (self.0[1] >> 56) as u8 != SPILLED
    }

    /// The key's hash, as [`Key::new`] worked it out.
    #[inline]
    pub fn hash(&self) -> u64 {
        match self.is_inline() {
            true => hash_inline(self.0),
            false => spread(self.0[0] >> 32),
        }
    }

    /// The key again, its bytes (if it was too long to keep inline) read from `kept`,
    /// the buffer they were kept in at the place given to [`Key::keep`].
    #[inline]
    pub fn key<'k>(&self, kept: &'k [u8]) -> Key<'k> {
        let hash = self.hash();
        match self.is_inline() {
            true => Key {
                bytes: &[],
                inline: Some(Stored::from_numbers(self.0)),
                hash,
            },
            false => {
                let start = self.0[0] as u32 as usize;
                let length = (self.0[1] & ((1 << 56) - 1)) as usize;
                Key {
                    bytes: &kept[start..start + length],
                    inline: None,
                    hash,
                }
            }
        }
    }
}

/// Where a [`KeyTable`] found a key: its place in the table, good until the table
/// grows.
#[derive(Debug, Clone, Copy)]
pub struct Found(usize);

/// A key's place in a [`KeyTable`].
pub enum Slot<'t, V> {
    /// The key is in the table with this value.
    Found {
        /// The key's value.
        value: &'t mut V,
        /// The table's store of long bytes, for values that are [`Stored`].
        spill: &'t mut Spill,
    },
    /// The key is not in the table yet.
    Vacant(Vacant<'t, V>),
}

/// Where a key not yet in a [`KeyTable`] goes.
pub struct Vacant<'t, V> {
    entry: hash_table::VacantEntry<'t, Entry<V>>,
    spill: &'t mut Spill,
    key: Key<'t>,
}

impl<'t, V> Vacant<'t, V> {
    /// The table's store of long bytes, to make a [`Stored`] value with.
    pub fn spill(&mut self) -> &mut Spill {
        self.spill
    }

    /// Adds the key with `value`. [`in_order`](KeyTable::in_order) reads keys out by
    /// increasing `order`; a key's `order` should be unique (such as the number of values
    /// seen before the key's first).
    pub fn insert(self, value: V, order: u32) -> &'t mut V {
        let key = self
            .key
            .inline
            .unwrap_or_else(|| Stored::new(self.key.bytes, self.spill));
        let entry = Entry { key, value, order };
        &mut self.entry.insert(entry).into_mut().value
    }
}

impl<V> KeyTable<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where the table holds `key`, if it does.
    #[inline]
    pub fn find(&self, key: &Key<'_>) -> Option<Found> {
        self.entries
            .find_bucket_index(key.hash, |entry| entry.key.is(key, &self.spill))
            .map(Found)
    }

    /// The place of `key`: its value, or where it goes. `found` is where an earlier
    /// [`find`](Self::find) found it, if it did: then the key is not looked up again
    /// (unless the table has moved it since).
    #[inline(always)]
    pub fn slot<'t>(&'t mut self, key: Key<'t>, found: Option<Found>) -> Slot<'t, V> {
        let Self { entries, spill } = self;
        let still_there = |Found(bucket)| {
            entries
                .get_bucket(bucket)
                .is_some_and(|entry| entry.key.is(&key, spill))
                .then_some(bucket)
        };
        if let Some(bucket) = found.and_then(still_there) {
            let entry = entries.get_bucket_mut(bucket).expect("the key is there");
            return Slot::Found {
                value: &mut entry.value,
                spill,
            };
        }
        let found = entries.entry(
            key.hash,
            |entry| entry.key.is(&key, spill),
            |entry| entry.key.hash(spill),
        );
        match found {
            hash_table::Entry::Occupied(entry) => Slot::Found {
                value: &mut entry.into_mut().value,
                spill,
            },
            hash_table::Entry::Vacant(entry) => Slot::Vacant(Vacant { entry, spill, key }),
        }
    }

    /// The table's store of long bytes, to read [`Stored`] values with.
    pub fn spill(&self) -> &Spill {
        &self.spill
    }

    /// Every key with its value, by increasing order (see [`Vacant::insert`]), copied out
    /// of the table.
    ///
    /// The entries are sorted by a radix sort of their places, then copied out in that
    /// order in a loop that does nothing else: the copies' loads do not wait on each
    /// other, so their cache misses overlap (a large table is read all over), and what the
    /// caller then does with each key reads one array from start to end.
    pub fn in_order(&self) -> InOrder<'_, V>
    where
        V: Copy,
    {
        let mut places: Vec<(u32, &Entry<V>)> = self
            .entries
            .iter()
            .map(|entry| (entry.order, entry))
            .collect();
        sort_by_order(&mut places);
        InOrder {
            entries: places.into_iter().map(|(_, entry)| *entry).collect(),
            spill: &self.spill,
        }
    }

    /// Numbers the keys' orders 0, 1, 2... keeping the order they come in, and answers
    /// the next free one: for a caller whose numbers would run out.
    pub fn renumber(&mut self) -> u32 {
        let mut orders: Vec<(u32, ())> =
            self.entries.iter().map(|entry| (entry.order, ())).collect();
        sort_by_order(&mut orders);
        for entry in self.entries.iter_mut() {
            entry.order = orders.partition_point(|&(order, ())| order < entry.order) as u32;
        }
        self.len() as u32
    }

    /// How many buckets the table has now (a power of two): how large a region of
    /// memory its lookups spread over.
    pub fn buckets(&self) -> usize {
        self.entries.num_buckets()
    }

    /// The table's buckets cut into runs of `buckets_each` (a power of two; fewer if the
    /// table has fewer), as [`Regions::of`] places keys in them. Valid until the table
    /// grows.
    pub fn regions(&self, buckets_each: usize) -> Regions {
        let buckets = self.buckets();
        Regions {
            mask: buckets - 1,
            shift: buckets_each.min(buckets).trailing_zeros(),
        }
    }

    /// Empties the table, keeping its room for the next use.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.spill.0.clear();
    }
}

/// A [`KeyTable`]'s keys with their values, by increasing order ([`KeyTable::in_order`]).
#[derive(Debug)]
pub struct InOrder<'t, V> {
    entries: Vec<Entry<V>>,
    spill: &'t Spill,
}

impl<V> InOrder<'_, V> {
    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each key with its value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries
            .iter()
            .map(|entry| (entry.key.get(self.spill), &entry.value))
    }
}

/// How many bits of an order each pass of [`sort_by_order`] sorts by.
const DIGIT_BITS: u32 = 8;

/// Sorts `items` by their orders (the first of each), keeping items of one order in the
/// order they come: a radix sort, least significant digit first, with as many passes as
/// the largest order has digits (three for orders under 16M, where a table's keys' orders
/// are the places of their first pairs). A comparison sort of a large table's 160k keys
/// took about as long as the copying out.
fn sort_by_order<T: Copy>(items: &mut Vec<(u32, T)>) {
    const DIGITS: usize = 1 << DIGIT_BITS;
    let Some(&first) = items.first() else {
        return;
    };
    let most = items.iter().map(|&(order, _)| order).max().unwrap_or(0);
    let mut sorted = vec![first; items.len()];
    let mut counts = [0usize; DIGITS];
    let mut shift = 0;
    while shift < u32::BITS && (shift == 0 || most >> shift != 0) {
        let digit = |order: u32| (order >> shift) as usize % DIGITS;
        counts.fill(0);
        for &(order, _) in items.iter() {
            counts[digit(order)] += 1;
        }
        let mut start = 0;
        for count in &mut counts {
            (*count, start) = (start, start + *count);
        }
        for &item in items.iter() {
            let next = &mut counts[digit(item.0)];
            sorted[*next] = item;
            *next += 1;
        }
        std::mem::swap(items, &mut sorted);
        shift += DIGIT_BITS;
    }
}

/// A [`KeyTable`]'s buckets cut into runs of equal length: a key is looked for first in
/// the bucket its hash picks (hashbrown's probe starts at the hash's low bits, as a
/// `usize`), so the lookups of keys of one run touch one small part of the table's
/// memory, however large the table.
#[derive(Debug, Clone, Copy)]
pub struct Regions {
    mask: usize,
    shift: u32,
}

impl Regions {
    /// How many runs there are.
    pub fn count(&self) -> usize {
        (self.mask >> self.shift) + 1
    }

    /// The run where `key`'s lookup starts.
    #[inline]
    pub fn of(&self, key: &KeptKey) -> usize {
        (key.hash() as usize & self.mask) >> self.shift
    }
}

/// The hash of a key kept inline, from its two numbers (see [`Stored`]).
#[inline]
fn hash_inline([low, high]: [u64; 2]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write_u64(low);
    hasher.write_u64(high);
    hasher.finish()
}

/// The hash of a key too long to keep inline: 32 bits of hash, [spread](spread) over 64,
/// so that a [`KeptKey`] keeps it whole in four bytes. (A table looks a key up by the
/// hash's low bits and tells keys of one bucket group apart by its top seven, on a 32-bit
/// guest by those of its low 32 bits.)
fn hash_bytes(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    let hash = hasher.finish();
    spread((hash ^ hash >> 32) as u32 as u64)
}

/// 32 bits of hash (the low half of `hash`) as a 64-bit one: twice over.
#[inline]
fn spread(hash: u64) -> u64 {
    (hash & u64::from(u32::MAX)) | (hash << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(table: &mut KeyTable<i64>, key: &[u8]) {
        let order = table.len() as u32;
        match table.slot(Key::new(key), None) {
            Slot::Found { value, .. } => *value += 1,
            Slot::Vacant(vacant) => {
                vacant.insert(1, order);
            }
        }
    }

    fn counts(table: &KeyTable<i64>) -> Vec<(Vec<u8>, i64)> {
        table
            .in_order()
            .iter()
            .map(|(key, &count)| (key.to_vec(), count))
            .collect()
    }

    #[test]
    fn keys_come_out_in_the_order_first_seen() {
        let mut table = KeyTable::new();
        for key in ["b", "a", "b", "", "c", "a", "b"] {
            count(&mut table, key.as_bytes());
        }
        assert_eq!(table.len(), 4);
        assert_eq!(
            counts(&table),
            [
                (b"b".to_vec(), 3),
                (b"a".to_vec(), 2),
                (b"".to_vec(), 1),
                (b"c".to_vec(), 1)
            ]
        );
        table.clear();
        assert!(table.is_empty());
        count(&mut table, b"z");
        assert_eq!(counts(&table), [(b"z".to_vec(), 1)]);
    }

    #[test]
    fn many_keys_keep_the_order_given_when_numbered_again() {
        // Sparse orders of every size, given out of order: numbered 0, 1, 2... in the
        // same order, read out the same before and after.
        let mut table = KeyTable::new();
        for n in 0..3000u32 {
            let order = (n.wrapping_mul(2_654_435_761) >> 4) | 1 << 27;
            match table.slot(Key::new(&n.to_le_bytes()), None) {
                Slot::Vacant(vacant) => *vacant.insert(0, order) += i64::from(n),
                Slot::Found { .. } => panic!("{n} is new"),
            };
        }
        let before = counts(&table);
        assert_eq!(table.renumber(), 3000);
        assert_eq!(counts(&table), before);
        let mut orders: Vec<u32> = table.entries.iter().map(|entry| entry.order).collect();
        orders.sort_unstable();
        assert!(
            orders.into_iter().eq(0..3000),
            "numbered from 0 without gaps"
        );
    }

    #[test]
    fn keys_come_out_by_the_order_given_and_keep_it_when_numbered_again() {
        let mut table = KeyTable::new();
        for (key, order) in [("c", 900), ("a", 5), ("b", u32::MAX)] {
            match table.slot(Key::new(key.as_bytes()), None) {
                Slot::Vacant(vacant) => *vacant.insert(0, order) += 1,
                Slot::Found { .. } => panic!("{key} is new"),
            };
        }
        let expected = [(b"a".to_vec(), 1), (b"c".to_vec(), 1), (b"b".to_vec(), 1)];
        assert_eq!(counts(&table), expected);
        assert_eq!(table.renumber(), 3, "the next free order");
        assert_eq!(counts(&table), expected);
        count(&mut table, b"z");
        assert_eq!(counts(&table).last(), Some(&(b"z".to_vec(), 1)));
    }

    #[test]
    fn orders_are_sorted_by_every_digit_they_have_keeping_ties_in_place() {
        // Orders of one digit, of three (a partition's pairs) and of four (up to the
        // largest), scrambled, some repeated: sorted as a stable comparison sort does.
        let mut seed = 0x9e37_79b9u32;
        for most in [200, 5_000_000, u32::MAX] {
            let items: Vec<(u32, usize)> = (0..20_000)
                .map(|at| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let order = match at % 1000 {
                        0 => most,
                        1 => 0,
                        _ => seed % most,
                    };
                    (order, at)
                })
                .collect();
            let mut sorted = items.clone();
            sort_by_order(&mut sorted);
            let mut expected = items;
            expected.sort_by_key(|&(order, _)| order);
            assert_eq!(sorted, expected, "orders up to {most}");
        }
        let mut none: Vec<(u32, ())> = Vec::new();
        sort_by_order(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn keys_of_every_length_are_told_apart_inline_or_spilled() {
        // Keys that share their first 15 bytes, or differ only in length or in a zero
        // byte at the end, are different keys.
        let long = [7u8; 40];
        let keys: Vec<&[u8]> = vec![
            &long[..14],
            &long[..15],
            &long[..16],
            &long[..40],
            b"ab",
            b"ab\0",
            b"\0",
            b"",
        ];
        let mut table = KeyTable::new();
        for _ in 0..2 {
            keys.iter().for_each(|key| count(&mut table, key));
        }
        let expected: Vec<(Vec<u8>, i64)> = keys.iter().map(|key| (key.to_vec(), 2)).collect();
        assert_eq!(counts(&table), expected);
    }

    #[test]
    fn many_keys_of_every_length_are_found_again_as_the_table_grows() {
        // Inline keys are hashed from their numbers and spilled ones from their bytes,
        // when looked up and when the table grows: both must agree.
        let keys: Vec<Vec<u8>> = (0..3000u32)
            .map(|n| {
                let length = n as usize % 41;
                (0..length)
                    .map(|at| (n >> (at % 4 * 8)) as u8 ^ at as u8)
                    .collect()
            })
            .collect();
        let mut expected: Vec<(Vec<u8>, i64)> = Vec::new();
        let mut table = KeyTable::new();
        for round in 0..2 {
            for key in &keys {
                count(&mut table, key);
                match expected.iter_mut().find(|(seen, _)| seen == key) {
                    Some((_, count)) => *count += 1,
                    None => expected.push((key.clone(), 1)),
                }
            }
            assert_eq!(counts(&table), expected, "round {round}");
        }
    }

    #[test]
    fn kept_keys_give_back_their_bytes_and_hash_at_every_length() {
        // Keys kept in 16 bytes, long ones as a place in a buffer of the keeper's (here
        // after other bytes), found again in a table by the key they give back.
        let keys: Vec<Vec<u8>> = (0..200u32)
            .map(|n| {
                (0..n as usize % 60)
                    .map(|at| (n as usize * 31 + at) as u8)
                    .collect()
            })
            .collect();
        let mut buffer = b"other bytes".to_vec();
        let mut kept = Vec::new();
        let mut table = KeyTable::new();
        for key in &keys {
            let looked_up = Key::new(key);
            let keeping = looked_up.keep(buffer.len() as u32);
            assert_eq!(keeping.is_inline(), key.len() <= INLINE);
            if !keeping.is_inline() {
                buffer.extend_from_slice(key);
            }
            assert_eq!(keeping.hash(), looked_up.hash, "{key:?}");
            kept.push(keeping);
            count(&mut table, key);
        }
        assert_eq!(size_of::<KeptKey>(), 16);
        for (key, kept) in keys.iter().zip(&kept) {
            let again = kept.key(&buffer);
            assert_eq!(again.hash, Key::new(key).hash);
            assert_eq!(again.inline.is_some(), key.len() <= INLINE);
            match table.slot(again, None) {
                Slot::Found { value, .. } => {
                    let times = keys.iter().filter(|other| *other == key).count();
                    assert_eq!(*value, times as i64, "{key:?}");
                }
                Slot::Vacant(_) => panic!("{key:?} is in the table"),
            }
        }
    }

    #[test]
    fn a_key_found_earlier_is_folded_in_place_even_after_the_table_grew() {
        let mut table = KeyTable::new();
        count(&mut table, b"early");
        count(&mut table, b"a key long enough to be spilled");
        let found = table.find(&Key::new(b"early"));
        let spilled = table.find(&Key::new(b"a key long enough to be spilled"));
        assert!(found.is_some() && spilled.is_some());
        assert!(table.find(&Key::new(b"absent")).is_none());
        for n in 0..1000u32 {
            count(&mut table, &n.to_le_bytes());
        }
        for (key, found) in [
            (&b"early"[..], found),
            (b"a key long enough to be spilled", spilled),
        ] {
            match table.slot(Key::new(key), found) {
                Slot::Found { value, .. } => *value += 10,
                Slot::Vacant(_) => panic!("{key:?} is in the table"),
            }
        }
        // A place found for another key is not taken for this one.
        let other = table.find(&Key::new(&7u32.to_le_bytes()));
        match table.slot(Key::new(b"new"), other) {
            Slot::Found { .. } => panic!("`new` is not in the table"),
            Slot::Vacant(vacant) => {
                vacant.insert(5, 1002);
            }
        }
        let counts = counts(&table);
        assert_eq!(counts[0], (b"early".to_vec(), 11));
        assert_eq!(counts[1], (b"a key long enough to be spilled".to_vec(), 11));
        assert_eq!(counts.last(), Some(&(b"new".to_vec(), 5)));
        assert_eq!(table.len(), 1003);
    }

    #[test]
    fn stored_bytes_are_kept_inline_or_spilled_and_replaced_in_place() {
        let mut spill = Spill::default();
        let short = Stored::new(b"fifteen bytes!!", &mut spill);
        assert_eq!(short.get(&spill), b"fifteen bytes!!");
        assert!(spill.0.is_empty(), "15 bytes stay inline");
        let long = vec![3u8; 100];
        let spilled = Stored::new(&long, &mut spill);
        assert_eq!(spilled.get(&spill), &long[..]);
        spill.set(0, b"x");
        assert_eq!(spilled.get(&spill), b"x");
        assert_eq!(spill.0.len(), 1, "a spilled value is replaced where it is");
    }
}
