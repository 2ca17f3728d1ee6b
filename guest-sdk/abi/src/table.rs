//! A table of values by key, keys being canonically encoded bytes, kept in the order
//! first seen.
//!
//! Short keys (a word's key, up to 15 bytes) live in the table's entries themselves, not
//! behind a pointer into the text they came from, so that finding a key touches one
//! cache line and allocates nothing; longer ones are spilled into a side store. Values
//! of bytes can be kept the same way ([`Stored`]). Map-side combining in the guest
//! ([`crate::combine`]) and the host's keyed operators share it.

use std::hash::{BuildHasher, Hasher};

use hashbrown::{HashTable, hash_table};
use rustc_hash::FxBuildHasher;

use crate::encoding::short_bytes;

/// Values of type `V` by key, keys in the order first seen.
#[derive(Debug)]
pub struct KeyTable<V> {
    /// Each key with its value, found by the hash of the key's bytes.
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
    /// How many keys were seen before this one.
    order: u32,
}

/// The most bytes a [`Stored`] keeps inline.
const INLINE: usize = 15;
/// The length byte of bytes kept in a [`Spill`]: the low four bytes are their index there.
const SPILLED: u8 = u8::MAX;

/// Where a table keeps the bytes too long to keep inline.
#[derive(Debug, Default)]
pub struct Spill(Vec<Vec<u8>>);

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

    fn from_numbers([low, high]: [u64; 2]) -> Self {
        let mut bytes = [0; INLINE + 1];
        bytes[..8].copy_from_slice(&low.to_le_bytes());
        bytes[8..].copy_from_slice(&high.to_le_bytes());
        Self(bytes)
    }

    fn numbers(&self) -> [u64; 2] {
        [
            u64::from_le_bytes(self.0[..8].try_into().expect("8")),
            u64::from_le_bytes(self.0[8..].try_into().expect("8")),
        ]
    }

    /// `bytes`, inline if they fit, else in `spill`.
    pub fn new(bytes: &[u8], spill: &mut Spill) -> Self {
        Self::inline(bytes).unwrap_or_else(|| {
            spill.0.push(bytes.to_vec());
            Self::from_numbers([(spill.0.len() - 1) as u64, u64::from(SPILLED) << 56])
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

    /// Whether these are the bytes `key`, whose inline form (if it has one) is `inline`.
    #[inline]
    fn is(&self, key: &[u8], inline: Option<Stored>, spill: &Spill) -> bool {
        match (inline, self.spilled_index()) {
            (Some(inline), _) => self.numbers() == inline.numbers(),
            (None, Some(index)) => spill.0[index] == key,
            (None, None) => false,
        }
    }

    /// Replaces the bytes; once spilled, they stay in their spilled place.
    #[inline]
    pub fn replace(&mut self, bytes: &[u8], spill: &mut Spill) {
        match self.spilled_index() {
            Some(index) => {
                spill.0[index].clear();
                spill.0[index].extend_from_slice(bytes);
            }
            None => *self = Self::new(bytes, spill),
        }
    }
}

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
    key: &'t [u8],
    inline: Option<Stored>,
    order: u32,
}

impl<'t, V> Vacant<'t, V> {
    /// The table's store of long bytes, to make a [`Stored`] value with.
    pub fn spill(&mut self) -> &mut Spill {
        self.spill
    }

    /// Adds the key with `value`, after every key already there.
    pub fn insert(self, value: V) -> &'t mut V {
        let key = self
            .inline
            .unwrap_or_else(|| Stored::new(self.key, self.spill));
        let entry = Entry {
            key,
            value,
            order: self.order,
        };
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

    /// The place of `key`: its value, or where it goes.
    #[inline]
    pub fn slot<'t>(&'t mut self, key: &'t [u8]) -> Slot<'t, V> {
        let hash = hash_of(key);
        let inline = Stored::inline(key);
        let order = self.entries.len() as u32;
        let Self { entries, spill } = self;
        let found = entries.entry(
            hash,
            |entry| entry.key.is(key, inline, spill),
            |entry| hash_of(entry.key.get(spill)),
        );
        match found {
            hash_table::Entry::Occupied(entry) => Slot::Found {
                value: &mut entry.into_mut().value,
                spill,
            },
            hash_table::Entry::Vacant(entry) => Slot::Vacant(Vacant {
                entry,
                spill,
                key,
                inline,
                order,
            }),
        }
    }

    /// The table's store of long bytes, to read [`Stored`] values with.
    pub fn spill(&self) -> &Spill {
        &self.spill
    }

    /// Every key with its value, keys in the order first seen.
    pub fn in_order(&self) -> impl Iterator<Item = (&[u8], &V)> {
        let mut in_order: Vec<Option<&Entry<V>>> = vec![None; self.len()];
        for entry in &self.entries {
            in_order[entry.order as usize] = Some(entry);
        }
        in_order.into_iter().map(|entry| {
            let entry = entry.expect("one entry per order");
            (entry.key.get(&self.spill), &entry.value)
        })
    }

    /// Empties the table, keeping its room for the next use.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.spill.0.clear();
    }
}

fn hash_of(key: &[u8]) -> u64 {
    let mut hasher = FxBuildHasher.build_hasher();
    hasher.write(key);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(table: &mut KeyTable<i64>, key: &[u8]) {
        match table.slot(key) {
            Slot::Found { value, .. } => *value += 1,
            Slot::Vacant(vacant) => {
                vacant.insert(1);
            }
        }
    }

    fn counts(table: &KeyTable<i64>) -> Vec<(Vec<u8>, i64)> {
        table
            .in_order()
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
    fn stored_bytes_are_kept_inline_or_spilled_and_replaced_in_place() {
        let mut spill = Spill::default();
        let mut short = Stored::new(b"fifteen bytes!!", &mut spill);
        assert_eq!(short.get(&spill), b"fifteen bytes!!");
        assert!(spill.0.is_empty(), "15 bytes stay inline");
        let long = vec![3u8; 100];
        let mut spilled = Stored::new(&long, &mut spill);
        assert_eq!(spilled.get(&spill), &long[..]);
        spilled.replace(b"x", &mut spill);
        assert_eq!(spilled.get(&spill), b"x");
        assert_eq!(spill.0.len(), 1, "a spilled value is replaced where it is");
        short.replace(&long, &mut spill);
        assert_eq!(short.get(&spill), &long[..]);
    }
}
