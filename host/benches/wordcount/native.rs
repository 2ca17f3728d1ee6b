//! The native reference: a plain Rust word count of text in memory, as fast as the issue
//! describes (issue 14: 92 M words/s at 10k distinct words, 31-36 M at 160k, on 2 cores).
//!
//! The same tokenizer as the UDFs (`wordcount::tokenize`), 2 threads, each counting half
//! of the lines. Each word is hashed once; the hash picks one of `PARTITIONS` tables and
//! its place in that table. A thread tokenizes a chunk of words into one buffer per table
//! first, then counts each buffer into its table, so that only one small table (about
//! 2.5k keys, 80 KiB, at 160k distinct words) is touched at a time and it stays in L2,
//! where one table of all keys does not. The tables hold words of up to 15 bytes inline
//! (no pointer to chase, compared as 16 bytes). Then the threads' tables are merged, each
//! thread merging half of the partitions.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxBuildHasher;

/// Tables per thread.
const PARTITIONS: usize = 64;
/// Words buffered before they are counted: 16k words of 32 bytes, 512 KiB, in L2 too.
const CHUNK_WORDS: usize = 16 * 1024;

/// A word as the tables hold it.
#[derive(Clone, PartialEq, Eq)]
enum Key {
    /// Up to 15 bytes, then zeros, then the length in the last byte.
    Inline(InlineWord),
    Heap(Box<str>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(align(8))]
struct InlineWord([u8; 16]);

impl Key {
    fn new(word: &str) -> Self {
        let bytes = word.as_bytes();
        let length = bytes.len();
        if length >= 16 {
            return Key::Heap(word.into());
        }
        // Fixed-width loads, overlapping, rather than a copy of `length` bytes: a call to
        // memcpy per word costs more than the rest of making the key.
        let load = |at: usize, width: usize| {
            let mut word = [0; 8];
            word[..width].copy_from_slice(&bytes[at..at + width]);
            u64::from_le_bytes(word)
        };
        let (low, high) = match length {
            8.. => {
                let tail = load(length - 8, 8).checked_shr(8 * (16 - length) as u32);
                (load(0, 8), tail.unwrap_or(0))
            }
            4.. => (load(0, 4) | load(length - 4, 4) << (8 * (length - 4)), 0),
            1.. => (
                load(0, 1)
                    | load(length / 2, 1) << (8 * (length / 2))
                    | load(length - 1, 1) << (8 * (length - 1)),
                0,
            ),
            0 => (0, 0),
        };
        let mut inline = [0; 16];
        inline[..8].copy_from_slice(&low.to_le_bytes());
        inline[8..].copy_from_slice(&(high | (length as u64) << 56).to_le_bytes());
        Key::Inline(InlineWord(inline))
    }

    fn as_str(&self) -> &str {
        match self {
            Key::Inline(InlineWord(bytes)) => {
                std::str::from_utf8(&bytes[..bytes[15] as usize]).expect("made from a str")
            }
            Key::Heap(word) => word,
        }
    }
}

struct Counted {
    key: Key,
    count: u64,
}

fn hash(word: &str) -> u64 {
    FxBuildHasher.hash_one(word)
}

/// The table of a hash: bits that hashbrown uses neither for the place in a table (the
/// low bits) nor for the tag it compares first (the top 7).
fn partition(hash: u64) -> usize {
    (hash >> 32) as usize % PARTITIONS
}

/// Adds `count` to `key`'s count in `table`.
fn add(table: &mut HashTable<Counted>, hash: u64, key: Key, count: u64) {
    match table.entry(
        hash,
        |counted| counted.key == key,
        |counted| self::hash(counted.key.as_str()),
    ) {
        Entry::Occupied(mut occupied) => occupied.get_mut().count += count,
        Entry::Vacant(vacant) => {
            vacant.insert(Counted { key, count });
        }
    }
}

/// Word counts, in `PARTITIONS` tables.
pub struct Counts(Vec<HashTable<Counted>>);

impl Counts {
    /// The number of distinct words.
    pub fn len(&self) -> usize {
        self.0.iter().map(HashTable::len).sum()
    }

    /// Every word with its count.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0
            .iter()
            .flatten()
            .map(|counted| (counted.key.as_str(), counted.count))
    }
}

/// Counts the words of `text` on 2 threads.
pub fn count(text: &str) -> Counts {
    let middle = text[..text.len() / 2].rfind('\n').map_or(0, |at| at + 1);
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| count_lines(&text[..middle]));
        let second = count_lines(&text[middle..]);
        (first.join().unwrap(), second)
    });
    let mut merged = first;
    std::thread::scope(|scope| {
        let (into_low, into_high) = merged.split_at_mut(PARTITIONS / 2);
        let mut from = second.into_iter();
        let from_low: Vec<_> = from.by_ref().take(PARTITIONS / 2).collect();
        let from_high: Vec<_> = from.collect();
        scope.spawn(|| merge(into_low, from_low));
        merge(into_high, from_high);
    });
    Counts(merged)
}

/// Adds the counts of `from` into `into`, partition by partition.
fn merge(into: &mut [HashTable<Counted>], from: Vec<HashTable<Counted>>) {
    for (into, from) in into.iter_mut().zip(from) {
        for Counted { key, count } in from {
            add(into, hash(key.as_str()), key, count);
        }
    }
}

/// One thread's counts of the words of `lines`.
fn count_lines(lines: &str) -> Vec<HashTable<Counted>> {
    let mut tables: Vec<HashTable<Counted>> = (0..PARTITIONS).map(|_| HashTable::new()).collect();
    let mut buffers: Vec<Vec<(u64, Key)>> = (0..PARTITIONS)
        .map(|_| Vec::with_capacity(2 * CHUNK_WORDS / PARTITIONS))
        .collect();
    let mut buffered = 0;
    for line in lines.lines() {
        for word in wordcount::tokenize(line) {
            let hash = hash(&word);
            buffers[partition(hash)].push((hash, Key::new(&word)));
            buffered += 1;
        }
        if buffered >= CHUNK_WORDS {
            count_buffers(&mut buffers, &mut tables);
            buffered = 0;
        }
    }
    count_buffers(&mut buffers, &mut tables);
    tables
}

/// Empties each buffer into its table.
fn count_buffers(buffers: &mut [Vec<(u64, Key)>], tables: &mut [HashTable<Counted>]) {
    for (buffer, table) in buffers.iter_mut().zip(tables) {
        for (hash, key) in buffer.drain(..) {
            add(table, hash, key, 1);
        }
    }
}
