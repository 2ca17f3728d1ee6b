//! The groups of one window of an event-time aggregation, by key: the keys' encodings
//! side by side in one buffer and an index of them by hash, so that a record finds its
//! group without allocating, and a window's groups go (evicted) all at once.

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};
use sluice_abi::Batch;

/// Groups by key (an encoded value), each with `width` values of its own.
#[derive(Debug, Clone)]
pub(crate) struct KeyTable<T> {
    width: usize,
    /// Every group's key, one after another.
    keys: Batch,
    /// Per group: the group before it whose key has the same hash ([`NONE`]: none).
    same_hash: Vec<usize>,
    /// Per group: its `width` values.
    values: Vec<T>,
    /// By hash: the last group whose key has it (growing it never rehashes a key).
    index: FxHashMap<u64, usize>,
    /// Per group: whether it changed since [`Self::take_changed`].
    changed: Vec<bool>,
    /// The groups marked changed, in the order they were first marked.
    changed_list: Vec<usize>,
}

/// No group.
const NONE: usize = usize::MAX;

/// The hash a [`KeyTable`] files `key` under.
pub(crate) fn hash(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    hasher.finish()
}

impl<T> KeyTable<T> {
    /// An empty table of groups with `width` values each.
    pub(crate) fn new(width: usize) -> Self {
        Self {
            width,
            keys: Batch::new(),
            same_hash: Vec::new(),
            values: Vec::new(),
            index: FxHashMap::default(),
            changed: Vec::new(),
            changed_list: Vec::new(),
        }
    }

    /// How many groups there are.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The bytes its groups take: their keys, values and index entries, from the lengths
    /// of its buffers (the count grows and empties with them; nothing is walked).
    pub(crate) fn bytes(&self) -> usize {
        let per_group = std::mem::size_of::<u32>() // the key's end
            + std::mem::size_of::<usize>() // same_hash
            + std::mem::size_of::<bool>() // changed
            + std::mem::size_of::<(u64, usize)>(); // the index, at most one a group
        self.keys.data().len()
            + self.len() * per_group
            + self.values.len() * std::mem::size_of::<T>()
    }

    /// The key of group `group`.
    pub(crate) fn key(&self, group: usize) -> &[u8] {
        self.keys.get(group)
    }

    /// The group of `key` (whose [`hash`] is `hash`), if there is one.
    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let mut group = *self.index.get(&hash)?;
        while self.key(group) != key {
            group = self.same_hash[group];
            if group == NONE {
                return None;
            }
        }
        Some(group)
    }

    /// Adds the group of `key` (which must have none yet), with its `width` `values`;
    /// returns its number (groups are numbered in the order they came).
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        values: impl IntoIterator<Item = T>,
    ) -> usize {
        let group = self.len();
        self.keys.push_encoded(key);
        self.same_hash
            .push(self.index.insert(hash, group).unwrap_or(NONE));
        let before = self.values.len();
        self.values.extend(values);
        debug_assert_eq!(
            self.values.len() - before,
            self.width,
            "a group has `width` values"
        );
        self.changed.push(false);
        group
    }

    /// Drops every group, keeping the memory for the next ones.
    pub(crate) fn clear(&mut self) {
        let (mut keys, mut ends) = std::mem::take(&mut self.keys).into_parts();
        keys.clear();
        ends.clear();
        self.keys = Batch::from_parts(keys, ends).expect("no records is a batch");
        self.same_hash.clear();
        self.values.clear();
        self.index.clear();
        self.changed.clear();
        self.changed_list.clear();
    }

    /// The values of group `group`.
    pub(crate) fn values(&self, group: usize) -> &[T] {
        &self.values[group * self.width..(group + 1) * self.width]
    }

    /// The values of group `group`, to change.
    pub(crate) fn values_mut(&mut self, group: usize) -> &mut [T] {
        &mut self.values[group * self.width..(group + 1) * self.width]
    }

    /// Every group's values, group after group, to change.
    pub(crate) fn all_values_mut(&mut self) -> impl Iterator<Item = &mut [T]> {
        // `chunks_exact_mut` refuses a width of 0; groups of no values have nothing to give.
        self.values.chunks_exact_mut(self.width.max(1))
    }

    /// Every group, as `(key, values)`, in the order they came.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&[u8], &[T])> {
        (0..self.len()).map(|group| (self.key(group), self.values(group)))
    }

    /// Notes that group `group` changed.
    pub(crate) fn mark_changed(&mut self, group: usize) {
        if !std::mem::replace(&mut self.changed[group], true) {
            self.changed_list.push(group);
        }
    }

    /// The groups that changed since the last call, in the order they were first marked;
    /// clears the marks.
    pub(crate) fn take_changed(&mut self) -> Vec<usize> {
        let changed = std::mem::take(&mut self.changed_list);
        changed
            .iter()
            .for_each(|&group| self.changed[group] = false);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> KeyTable<i64> {
        let mut table = KeyTable::new(2);
        for (n, key) in keys.iter().enumerate() {
            let key = key.as_bytes();
            assert_eq!(table.find(hash(key), key), None);
            let n = n as i64;
            table.insert(hash(key), key, [n, -n]);
        }
        table
    }

    #[test]
    fn groups_are_found_by_key_and_keep_their_values() {
        let keys: Vec<String> = (0..1000).map(|n| format!("key {n}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut table = table(&keys);
        assert_eq!(table.len(), 1000);
        for (n, key) in keys.iter().enumerate() {
            let group = table.find(hash(key.as_bytes()), key.as_bytes()).unwrap();
            assert_eq!(group, n);
            assert_eq!(table.key(group), key.as_bytes());
            assert_eq!(table.values(group), [n as i64, -(n as i64)]);
        }
        table.values_mut(3)[1] = 7;
        assert_eq!(table.values(3), [3, 7]);
        assert_eq!(table.find(hash(b"key 1000"), b"key 1000"), None);
        // An empty key is a key like any other.
        table.insert(hash(b""), b"", [9, 9]);
        assert_eq!(table.find(hash(b""), b""), Some(1000));
        assert_eq!(table.groups().nth(1000), Some((&b""[..], &[9, 9][..])));
        table.all_values_mut().for_each(|values| values[0] = 0);
        assert!(table.groups().all(|(_, values)| values[0] == 0));
    }

    #[test]
    fn keys_with_one_hash_are_told_apart_by_their_bytes() {
        let mut table = KeyTable::new(1);
        table.insert(1, b"a", [1]);
        table.insert(1, b"b", [2]);
        assert_eq!(table.find(1, b"a"), Some(0));
        assert_eq!(table.find(1, b"b"), Some(1));
        assert_eq!(table.find(1, b"c"), None);
        assert_eq!(table.find(2, b"a"), None);
    }

    #[test]
    fn changed_groups_are_given_once_each_in_the_order_they_changed() {
        let mut table = table(&["a", "b", "c"]);
        table.mark_changed(2);
        table.mark_changed(0);
        table.mark_changed(2);
        assert_eq!(table.take_changed(), [2, 0]);
        assert_eq!(table.take_changed(), Vec::<usize>::new());
        table.mark_changed(2);
        assert_eq!(table.take_changed(), [2]);
    }

    #[test]
    fn a_cleared_table_is_empty_and_takes_new_groups() {
        let mut table = table(&["a", "b"]);
        table.mark_changed(1);
        table.clear();
        assert_eq!(table.len(), 0);
        assert_eq!(table.find(hash(b"a"), b"a"), None);
        assert_eq!(table.take_changed(), Vec::<usize>::new());
        assert_eq!(table.insert(hash(b"b"), b"b", [5, 6]), 0);
        assert_eq!(table.find(hash(b"b"), b"b"), Some(0));
        assert_eq!(
            table.groups().collect::<Vec<_>>(),
            [(&b"b"[..], &[5, 6][..])]
        );
        table.mark_changed(0);
        assert_eq!(table.take_changed(), [0]);
    }

    #[test]
    fn groups_of_no_values_are_kept_by_key() {
        let mut table: KeyTable<i64> = KeyTable::new(0);
        table.insert(hash(b"a"), b"a", []);
        table.insert(hash(b"b"), b"b", []);
        assert_eq!(table.find(hash(b"b"), b"b"), Some(1));
        assert_eq!(table.values(1), [] as [i64; 0]);
        assert_eq!(table.all_values_mut().count(), 0);
    }

    #[test]
    fn the_byte_count_matches_a_recount_of_the_groups() {
        let recount = |table: &KeyTable<i64>| {
            let per_group = 4 + std::mem::size_of::<usize>() + 1 + 16;
            table
                .groups()
                .map(|(key, values)| key.len() + per_group + values.len() * 8)
                .sum::<usize>()
        };
        let mut table = KeyTable::new(2);
        for word in ["a", "bb", "ccc", "a", "dddd"] {
            let key = sluice_abi::encoding::to_bytes(word).unwrap();
            if table.find(hash(&key), &key).is_none() {
                table.insert(hash(&key), &key, [1, 2]);
            }
            assert_eq!(table.bytes(), recount(&table), "after {word}");
        }
        assert_eq!(table.len(), 4);
        table.clear();
        assert_eq!(table.bytes(), 0);
    }
}
