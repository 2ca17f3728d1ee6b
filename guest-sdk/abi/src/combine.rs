//! Map-side combining: a fused chain of map, flat-map and filter functions run over a
//! partition, and the `(key, value)` pairs it makes folded by key before they leave the
//! code that made them, as Spark combines in the map task before the shuffle.
//!
//! A [`Combiner`] keeps one combiner per key across any number of [`add`](Combiner::add)s
//! (the chunks of one partition) and hands them all out at [`flush`](Combiner::flush).
//! Each record goes through the chain's steps one at a time ([`OneRecord`]): a step's
//! result waits in one small buffer per step, never gathered into a batch, and goes to
//! the next step by one call through a function pointer ([`Emit`] calls the next adapter
//! itself). The pairs the chain makes wait, key and value, until a thousand or so have
//! been made, and are then folded into their keys' combiners in a loop of their own, the
//! keys of each window of them looked up before any is folded, so that the lookups'
//! cache misses overlap.
//! Guests run it behind the `combine` export; the host runs the same code natively.

use crate::batch::Batch;
use crate::encoding::{Encoder, extend_short, int_value, pair_parts, short_bytes};
use crate::function::{Failure, FoldOneFn, MapOneFn, OneRecord, Progress};
use crate::handoff::{Emit, Made, Record};
use crate::table::{KeptKey, Key, KeyTable, Slot, Spill};

/// How a key's values are folded into its combiner.
#[derive(Debug, Clone, Copy)]
pub struct Merge {
    /// value -> combiner, for a key's first value (combineByKey's `createCombiner`);
    /// `None`: the first value is the combiner (reduceByKey).
    pub create: Option<MapOneFn>,
    /// (combiner, value) -> combiner: a reduce, or a fold when `create` is given.
    pub merge: FoldOneFn,
}

/// Which part of a combining run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Step `n` of the chain (from 0).
    Chain(usize),
    /// Making a key's combiner from its first value.
    Create,
    /// Folding a value into its key's combiner (or taking the record apart as a pair).
    Merge,
}

/// A failed combining run: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The part that failed.
    pub stage: Stage,
    /// The failure, naming the input record it happened on.
    pub failure: Failure,
}

/// Combiners by key, keys in the order first seen.
#[derive(Debug, Default)]
pub struct Combiner {
    /// Each key with its combiner. Short keys (a word's) and combiners (a count) live in
    /// the table's entries, so that finding a key and folding into its combiner touch one
    /// cache line and allocate nothing.
    table: KeyTable<Combined>,
    /// Where a merge or create writes a new combiner that is not an integer.
    merged: Vec<u8>,
    /// The create function's own buffer.
    created: Vec<u8>,
    /// Pairs the chain made, not yet folded into the table.
    pending: Pending,
    /// How many pairs were folded since the table was last emptied: the order of a key
    /// first seen in the next pair waiting is this plus its place among them.
    folded: u32,
    /// The waiting pairs' places, by region of the table ([`Scatter`]).
    scatter: Scatter,
}

/// How many pairs wait before they are folded into the table. Folding them in a loop of
/// its own, rather than each as the chain makes it, lets the processor look up several
/// keys at once: a lookup that misses the cache overlaps the next ones instead of
/// stalling the whole chain (with 10k keys that miss was a fifth of the guest's time).
const FOLD_EVERY: usize = 1024;

/// How many waiting pairs' keys are looked up together, before their values are folded
/// in: the lookups of a window overlap their cache misses (with 160k keys the table is
/// far larger than the cache, and a miss was most of a fold's time).
const LOOK_AHEAD: usize = 64;

/// A table of more buckets than this is folded into region by region: its entries (32
/// bytes each) outgrow the 1 MiB L2 cache of a core, and the pages of its memory the
/// TLB's reach, so that a lookup anywhere in it misses both.
const SCATTER_ABOVE: usize = 1 << 15;

/// The buckets of one region of a large table (64 KiB of entries and 2 KiB of control
/// bytes): the waiting pairs whose keys are looked for in one region are folded
/// one after the other, so the region's control bytes and pages stay in cache from one
/// lookup to the next (the host's `key_tables` and the native reference scatter likewise).
const REGION_BUCKETS: usize = 1 << 11;

/// How many pairs wait before they are folded into a large table: enough for each region
/// to get a run of them.
const FOLD_EVERY_SCATTERED: usize = 1 << 18;

/// Pairs waiting to be folded, in the order made: each key kept in 16 bytes (inline, if
/// short; [`KeptKey`]), each integer value as it is; the bytes of longer keys and of other
/// values in one buffer.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    bytes: Vec<u8>,
    pairs: Vec<PendingPair>,
}

/// A pair waiting to be folded, in 32 bytes: a large table's waiting pairs (up to
/// [`FOLD_EVERY_SCATTERED`]) are moved once by the counting sort that deals them out by
/// region, and read twice before (they were 56 bytes, and the sort about 6% of a word
/// count's time with 160k words).
#[derive(Debug, Clone, Copy)]
struct PendingPair {
    key: KeptKey,
    /// An integer value as it is; else where its canonical bytes start (low half) and end
    /// (high half) in [`Pending::bytes`].
    value: u64,
    /// The input record it was made from.
    index: u32,
    /// Its place among the waiting pairs, in the order made (below [`MAX_PENDING`]), and
    /// the kind of its value above it ([`ENCODED`], [`ENCODED_HERE`]; else an integer).
    place: u32,
}

/// The most pairs that wait: their places take 30 bits of a [`PendingPair`]'s `place`.
/// (A wasm32 guest's memory holds a quarter of it.)
const MAX_PENDING: usize = 1 << 30;
/// A [`PendingPair`]'s value is canonical bytes read from outside (strings checked).
const ENCODED: u32 = 1 << 30;
/// A [`PendingPair`]'s value is canonical bytes this process encoded.
const ENCODED_HERE: u32 = 2 << 30;

impl Pending {
    /// Takes `pair`, made from input record `index`, apart into its key and value and
    /// keeps them; a record that is not a pair fails.
    #[inline]
    fn hold(&mut self, index: usize, pair: Record<'_>) -> Result<(), Failure> {
        let (key, value) = match pair {
            Record::Pair(key, &value) => Some((key, value)),
            Record::Encoded {
                bytes,
                encoded_here,
            } => pair_parts(bytes).map(|(key, value)| {
                let value = Record::Encoded {
                    bytes: value,
                    encoded_here,
                };
                (key, value)
            }),
            Record::Str(_) | Record::Int(_) => None,
        }
        .ok_or_else(|| not_a_pair(index, pair))?;
        self.push(index, key, value);
        Ok(())
    }

    /// Keeps `key` and `value`, made from input record `index`.
    #[inline]
    fn push(&mut self, index: usize, key: &[u8], value: Record<'_>) {
        let place = self.pairs.len();
        assert!(
            place < MAX_PENDING,
            "a record made more than {MAX_PENDING} pairs to fold"
        );
        let kept = Key::new(key).keep(self.bytes.len() as u32);
        if !kept.is_inline() {
            self.bytes.extend_from_slice(key);
        }
        let start = self.bytes.len() as u64;
        let encoded = |bytes: &Vec<u8>, kind: u32| (start | (bytes.len() as u64) << 32, kind);
        let (value, kind) = match value {
            Record::Int(int) => (int as u64, 0),
            Record::Encoded {
                bytes,
                encoded_here,
            } => match int_value(bytes) {
                Some(int) => (int as u64, 0),
                None => {
                    extend_short(&mut self.bytes, bytes);
                    let kind = if encoded_here { ENCODED_HERE } else { ENCODED };
                    encoded(&self.bytes, kind)
                }
            },
            Record::Str(_) | Record::Pair(..) => {
                value.encode_into(&mut self.bytes);
                encoded(&self.bytes, ENCODED_HERE)
            }
        };
        self.pairs.push(PendingPair {
            key: kept,
            value,
            index: index as u32,
            place: place as u32 | kind,
        });
    }

    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.pairs.clear();
    }
}

impl PendingPair {
    /// The pair's key, its bytes (if not inline) read from `bytes`, the waiting pairs'.
    #[inline]
    fn key<'b>(&self, bytes: &'b [u8]) -> Key<'b> {
        self.key.key(bytes)
    }

    /// Its place among the waiting pairs, in the order made.
    #[inline]
    fn place(&self) -> u32 {
        self.place % MAX_PENDING as u32
    }

    /// The pair's value, read from `bytes` if encoded.
    #[inline]
    fn value<'b>(&self, bytes: &'b [u8]) -> Record<'b> {
        let kind = self.place & !(MAX_PENDING as u32 - 1);
        if kind == 0 {
            return Record::Int(self.value as i64);
        }
        let (start, end) = (self.value as u32 as usize, (self.value >> 32) as usize);
        Record::Encoded {
            bytes: &bytes[start..end],
            encoded_here: kind == ENCODED_HERE,
        }
    }
}

/// A key's combiner, in 12 bytes, so that an entry of the table (key 16 bytes, combiner
/// 12, order 4) is 32 bytes: two to a cache line, never across two. An integer (a count,
/// a sum) is kept as it is, so that folding a value into it neither decodes nor encodes
/// it; any other value canonically encoded, inline up to 11 bytes, else in the table's
/// [`Spill`]. The last byte tells which: the inline length, [`INT`] or [`SPILLED`].
#[derive(Debug, Clone, Copy)]
struct Combined([u8; COMBINED]);

const COMBINED: usize = 12;
/// The last byte of a [`Combined`] integer; its first eight are the integer.
const INT: u8 = u8::MAX - 1;
/// The last byte of a [`Combined`] kept in the [`Spill`]; its first four are the index
/// there.
const SPILLED: u8 = u8::MAX;

impl Combined {
    fn int(int: i64) -> Self {
        let mut bytes = [0; COMBINED];
        bytes[..8].copy_from_slice(&int.to_le_bytes());
        bytes[COMBINED - 1] = INT;
        Self(bytes)
    }

    /// The encoded value `encoded`, inline if it fits (copied without `memory.copy`).
    fn encoded(encoded: &[u8], spill: &mut Spill) -> Self {
        let mut bytes = [0; COMBINED];
        if encoded.len() < COMBINED {
            let [low, high] = short_bytes(encoded);
            bytes[..8].copy_from_slice(&low.to_le_bytes());
            bytes[8..COMBINED - 1].copy_from_slice(&high.to_le_bytes()[..COMBINED - 9]);
            bytes[COMBINED - 1] = encoded.len() as u8;
        } else {
            bytes[..4].copy_from_slice(&spill.push(encoded).to_le_bytes());
            bytes[COMBINED - 1] = SPILLED;
        }
        Self(bytes)
    }

    /// Keeps `record`, encoding it into `scratch` first unless it is an integer.
    fn new(record: Record<'_>, scratch: &mut Vec<u8>, spill: &mut Spill) -> Self {
        let int = match record {
            Record::Int(int) => Some(int),
            Record::Encoded { bytes, .. } => int_value(bytes),
            Record::Str(_) | Record::Pair(..) => None,
        };
        if let Some(int) = int {
            return Self::int(int);
        }
        scratch.clear();
        record.encode_into(scratch);
        Self::encoded(scratch, spill)
    }

    #[inline]
    fn as_int(&self) -> Option<i64> {
        (self.0[COMBINED - 1] == INT)
            .then(|| i64::from_le_bytes(self.0[..8].try_into().expect("8")))
    }

    #[inline]
    fn spilled_index(&self) -> Option<u32> {
        (self.0[COMBINED - 1] == SPILLED)
            .then(|| u32::from_le_bytes(self.0[..4].try_into().expect("4")))
    }

    /// The encoded bytes of a combiner that is not an integer.
    #[inline]
    fn encoded_bytes<'a>(&'a self, spill: &'a Spill) -> &'a [u8] {
        match self.spilled_index() {
            Some(index) => spill.get(index),
            None => &self.0[..usize::from(self.0[COMBINED - 1])],
        }
    }

    /// The combiner as a fold reads it. Encoded ones are read as bytes from outside, with
    /// their strings checked: a key's first value may have come from the host unread.
    #[inline]
    fn record<'a>(&'a self, spill: &'a Spill) -> Record<'a> {
        match self.as_int() {
            Some(int) => Record::Int(int),
            None => Record::outside(self.encoded_bytes(spill)),
        }
    }

    /// Replaces the combiner with what a fold made: `made`, or if it was encoded, the
    /// bytes `encoded` (in the combiner's place in the spill, if it had one).
    #[inline]
    fn replace(&mut self, made: Made, encoded: &[u8], spill: &mut Spill) {
        match (made, self.spilled_index()) {
            (Made::Int(int), _) => *self = Self::int(int),
            (Made::Encoded, Some(index)) => spill.set(index, encoded),
            (Made::Encoded, None) => *self = Self::encoded(encoded, spill),
        }
    }

    /// An upper bound of the combiner's encoded length.
    fn len(&self, spill: &Spill) -> usize {
        match self.as_int() {
            Some(_) => 10,
            None => self.encoded_bytes(spill).len(),
        }
    }

    /// Appends the combiner's canonical encoding to `out`.
    fn encode_into(&self, spill: &Spill, out: &mut Vec<u8>) {
        match self.as_int() {
            Some(int) => Encoder::new(out).write_int(int),
            None => extend_short(out, self.encoded_bytes(spill)),
        }
    }
}

impl Combiner {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Runs `chain` (map, flat-map and filter functions) over every record of `input` and
    /// folds the `(key, value)` pairs it makes into the table with `merge`. A failure names
    /// the index in `input` of the record it happened on. On an error the table is left
    /// part-way and should be dropped (or [`clear`](Self::clear)ed).
    pub fn add(&mut self, chain: &[OneRecord], merge: Merge, input: &Batch) -> Result<(), Failed> {
        let progress = Progress::start();
        let mut links = Link::chain(chain);
        let mut failed = None;
        let mut fold_every = self.fold_every();
        for (index, record) in input.iter().enumerate() {
            progress.at(index);
            let fed = Downstream::new(&mut links, index, &mut self.pending, &mut failed)
                .send(Record::outside(record));
            if self.pending.len() >= fold_every || fed.is_err() {
                // Pairs of earlier records first: a failure among them came first.
                self.fold_pending(merge, &progress)?;
                if fed.is_err() {
                    return Err(failed.expect("a failure in the chain is kept"));
                }
                fold_every = self.fold_every();
            }
        }
        self.fold_pending(merge, &progress)
    }

    /// How many pairs wait before they are folded, for the table as large as it is now.
    fn fold_every(&self) -> usize {
        if self.table.buckets() > SCATTER_ABOVE {
            FOLD_EVERY_SCATTERED
        } else {
            FOLD_EVERY
        }
    }

    /// Folds the waiting pairs into the table and lets them go (also on a failure). Each
    /// key's values are folded in the order made, and a key first seen takes the order of
    /// its first pair among all the pairs since the table was emptied. A large table is
    /// folded into region by region ([`Scatter`]); either way the failure answered is that
    /// of the first pair, in the order made, whose fold fails.
    fn fold_pending(&mut self, merge: Merge, progress: &Progress) -> Result<(), Failed> {
        let Self {
            table,
            merged,
            created,
            pending,
            folded,
            scatter,
        } = self;
        // An add whose last record made no pair, or whose pairs were all folded as it went.
        if pending.len() == 0 {
            return Ok(());
        }
        let waiting = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        if folded.checked_add(waiting).is_none() {
            *folded = table.renumber();
        }
        let mut folding = Folding {
            table,
            merged,
            created,
            bytes: &pending.bytes,
            first_order: *folded,
            merge,
            progress,
        };
        let result = if folding.table.buckets() > SCATTER_ABOVE {
            scatter.fold(&pending.pairs, &mut folding)
        } else {
            folding
                .fold(&pending.pairs, usize::MAX)
                .map_err(|(_, failed)| failed)
        };
        *folded = folded.saturating_add(waiting);
        pending.clear();
        result
    }

    /// Every key with its combiner as a `(key, combiner)` pair, keys in the order first
    /// seen; the table is left empty.
    pub fn flush(&mut self) -> Batch {
        let spill = self.table.spill();
        let in_order = self.table.in_order();
        let bytes = in_order
            .iter()
            .map(|(key, combiner)| 2 + key.len() + combiner.len(spill))
            .sum();
        let mut pairs = Batch::with_capacity(self.len(), bytes);
        for (key, combiner) in in_order.iter() {
            pairs.push_with(|out| {
                Encoder::new(out).tuple_header(2);
                extend_short(out, key);
                combiner.encode_into(spill, out);
            });
        }
        self.clear();
        pairs
    }

    /// Empties the table, keeping its room for the next partition.
    pub fn clear(&mut self) {
        self.table.clear();
        self.pending.clear();
        self.folded = 0;
    }
}

/// What folding waiting pairs into a [`Combiner`]'s table works with.
struct Folding<'f> {
    table: &'f mut KeyTable<Combined>,
    merged: &'f mut Vec<u8>,
    created: &'f mut Vec<u8>,
    /// The waiting pairs' bytes ([`Pending::bytes`]).
    bytes: &'f [u8],
    /// The order of a key first seen in the first waiting pair.
    first_order: u32,
    merge: Merge,
    progress: &'f Progress,
}

impl Folding<'_> {
    /// Folds `pairs` (in the order made) up to the first made at place `stop` or later,
    /// and stops at the first that fails, answering its place.
    #[inline(never)]
    fn fold(&mut self, pairs: &[PendingPair], stop: usize) -> Result<(), (usize, Failed)> {
        // No search while nothing has failed (a search's reads all miss, in a large
        // table's run of pairs dealt out of a call's).
        let before_stop = match pairs.last() {
            Some(last) if (last.place() as usize) < stop => pairs.len(),
            _ => pairs.partition_point(|pair| (pair.place() as usize) < stop),
        };
        let mut found = [None; LOOK_AHEAD];
        for window in pairs[..before_stop].chunks(LOOK_AHEAD) {
            // Look the window's keys up first, in a loop that does nothing else: their
            // lookups do not wait on each other, so the processor overlaps their cache
            // misses, and the folds below go straight to the entries found.
            for (found, pair) in found.iter_mut().zip(window) {
                *found = self.table.find(&pair.key(self.bytes));
            }
            for (&found, pair) in found.iter().zip(window) {
                let index = pair.index as usize;
                self.progress.at(index);
                let slot = self.table.slot(pair.key(self.bytes), found);
                let value = pair.value(self.bytes);
                let order = self.first_order.saturating_add(pair.place());
                fold(
                    slot,
                    self.merged,
                    self.created,
                    index,
                    value,
                    order,
                    self.merge,
                )
                .map_err(|failed| (pair.place() as usize, failed))?;
            }
        }
        Ok(())
    }
}

/// The waiting pairs dealt out by the region of the table where their keys are looked
/// for ([`KeyTable::regions`]), in the order made within each region, so that they can be
/// folded region by region: the lookups of a region's pairs then find its part of the
/// table (control bytes, entries, their pages' TLB entries) in cache, where lookups all
/// over a table of 160k keys (10 MB) missed on nearly every one.
#[derive(Debug, Default)]
struct Scatter {
    /// Where each region's run of `pairs` ends.
    ends: Vec<u32>,
    /// The waiting pairs, region by region.
    pairs: Vec<PendingPair>,
}

impl Scatter {
    /// Folds `pairs` region by region. A key's pairs all fall in one region, so its
    /// values are still folded in the order made; since the table is dropped after a
    /// failure, the other regions are folded on, each up to the earliest failing pair
    /// found so far, to answer the failure of the first pair in the order made.
    fn fold(&mut self, pairs: &[PendingPair], folding: &mut Folding<'_>) -> Result<(), Failed> {
        let regions = folding.table.regions(REGION_BUCKETS);
        // A counting sort: each region's count, then where its run ends, then the pairs
        // dealt out (each run's end moving to the next run's start).
        self.ends.clear();
        self.ends.resize(regions.count() + 1, 0);
        for pair in pairs {
            self.ends[regions.of(&pair.key) + 1] += 1;
        }
        for region in 1..self.ends.len() {
            self.ends[region] += self.ends[region - 1];
        }
        self.pairs.clear();
        self.pairs.resize(pairs.len(), pairs[0]);
        for pair in pairs {
            let next = &mut self.ends[regions.of(&pair.key)];
            self.pairs[*next as usize] = *pair;
            *next += 1;
        }
        let mut first: Option<(usize, Failed)> = None;
        let mut start = 0;
        for &end in &self.ends[..regions.count()] {
            let region = &self.pairs[start as usize..end as usize];
            start = end;
            let stop = first.as_ref().map_or(usize::MAX, |&(place, _)| place);
            if let Err(failed) = folding.fold(region, stop) {
                first = Some(failed);
            }
        }
        first.map_or(Ok(()), |(_, failed)| Err(failed))
    }
}

/// Folds `value`, made from input record `index`, into the combiner in `slot`, or makes
/// it the combiner of a new key of `order`; `merged` and `created` are the functions'
/// buffers.
#[inline(always)]
fn fold(
    slot: Slot<'_, Combined>,
    merged: &mut Vec<u8>,
    created: &mut Vec<u8>,
    index: usize,
    value: Record<'_>,
    order: u32,
    merge: Merge,
) -> Result<(), Failed> {
    let failed = |stage| move |failure| Failed { stage, failure };
    let mut vacant = match slot {
        Slot::Found {
            value: combiner,
            spill,
        } => {
            let current = combiner.record(spill);
            let made =
                (merge.merge)(index, current, value, merged).map_err(failed(Stage::Merge))?;
            combiner.replace(made, merged, spill);
            return Ok(());
        }
        Slot::Vacant(vacant) => vacant,
    };
    let combiner = match merge.create {
        Some(create) => {
            let mut made = None;
            let mut take = |combiner: Record<'_>| {
                made = Some(Combined::new(combiner, merged, vacant.spill()));
                Ok(())
            };
            create(index, value, created, &mut Emit::each(&mut take))
                .map_err(failed(Stage::Create))?;
            made.expect("a map function makes one record")
        }
        None => Combined::new(value, merged, vacant.spill()),
    };
    vacant.insert(combiner, order);
    Ok(())
}

/// Where the records a chain's last step makes go: its [`Downstream`]s are built for one
/// kind of tail, so that handing a record to it is a direct call, not a match.
pub(crate) trait Tail: Sized {
    /// Takes `record`, made from input record `index`.
    fn take(&mut self, index: usize, record: Record<'_>) -> Result<(), Failure>;

    /// The emitter that sends a step's records to `downstream`.
    fn emit(downstream: Downstream<'_, Self>) -> Emit<'_>;
}

/// Taken apart into pairs that wait to be folded.
impl Tail for Pending {
    #[inline]
    fn take(&mut self, index: usize, record: Record<'_>) -> Result<(), Failure> {
        self.hold(index, record)
    }

    #[inline]
    fn emit(downstream: Downstream<'_, Self>) -> Emit<'_> {
        Emit::pairs(downstream)
    }
}

/// Appended to a batch as they are: a chain that does not combine
/// ([`chain::run`](crate::chain::run)).
impl Tail for Batch {
    #[inline]
    fn take(&mut self, _index: usize, record: Record<'_>) -> Result<(), Failure> {
        self.push_with(|out| record.encode_into(out));
        Ok(())
    }

    #[inline]
    fn emit(downstream: Downstream<'_, Self>) -> Emit<'_> {
        Emit::records(downstream)
    }
}

/// A step of a chain, with the buffer its results are encoded into when they must be.
/// A chain's links are made once per call, not per record.
pub(crate) struct Link {
    step: OneRecord,
    out: Vec<u8>,
    /// The step's number in the chain, from 0, for its failures.
    number: usize,
}

impl Link {
    /// The links of the chain `steps`.
    pub(crate) fn chain(steps: &[OneRecord]) -> Vec<Link> {
        steps
            .iter()
            .enumerate()
            .map(|(number, &step)| Link {
                step,
                out: Vec::new(),
                number,
            })
            .collect()
    }
}

/// The rest of a chain, from one of its steps on, for one input record: the later steps,
/// then the tail. A step's emitter holds the downstream of the step after it: a slice of
/// the links and three pointers, so that handing a record on builds nothing else.
pub(crate) struct Downstream<'d, T> {
    links: &'d mut [Link],
    /// The input record the records sent here were made from.
    index: usize,
    tail: &'d mut T,
    /// The first failure, named by its step; the steps before it see a bare marker.
    failed: &'d mut Option<Failed>,
}

impl<'d, T: Tail> Downstream<'d, T> {
    /// The whole chain `links` for input record `index`, its records going to `tail`, its
    /// first failure kept in `failed`.
    #[inline]
    pub(crate) fn new(
        links: &'d mut [Link],
        index: usize,
        tail: &'d mut T,
        failed: &'d mut Option<Failed>,
    ) -> Self {
        Self {
            links,
            index,
            tail,
            failed,
        }
    }

    /// Runs `record` through the steps and hands what it becomes to the tail. The steps'
    /// adapters call this for each record they make (through [`Emit::send`]), so a
    /// record passes from step to step by one call through a function pointer each.
    #[inline]
    pub(crate) fn send(&mut self, record: Record<'_>) -> Result<(), Failure> {
        let index = self.index;
        let Some((link, links)) = self.links.split_first_mut() else {
            return (self.tail.take(index, record))
                .map_err(|failure| fail(self.failed, Stage::Merge, failure));
        };
        let mut next = T::emit(Downstream {
            links,
            index,
            tail: &mut *self.tail,
            failed: &mut *self.failed,
        });
        let ran = match link.step {
            OneRecord::Filter(run) => match run(index, record) {
                Ok(true) => next.send(record),
                Ok(false) => Ok(()),
                Err(failure) => Err(failure),
            },
            OneRecord::Map(run) | OneRecord::FlatMap(run) => {
                run(index, record, &mut link.out, &mut next)
            }
            OneRecord::Fold(_) | OneRecord::None => Err(Failure::new(
                "only map, flat-map and filter functions run in a chain",
            )),
        };
        ran.map_err(|failure| fail(self.failed, Stage::Chain(link.number), failure))
    }
}

/// Keeps `failure` of `stage` in `failed` unless a later step's failure came first, and
/// answers the marker the steps before pass back.
#[cold]
fn fail(failed: &mut Option<Failed>, stage: Stage, failure: Failure) -> Failure {
    failed.get_or_insert(Failed { stage, failure });
    Failure::new(String::new())
}

#[cold]
fn not_a_pair(index: usize, record: Record<'_>) -> Failure {
    let shown = record.to_json();
    Failure::at(
        index,
        format!(
            "the chain made {shown} of record {index}, which is not a (key, value) pair: \
             combining by key needs 2-element tuples"
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::function::{NamedFunction, fold_one};

    fn sum(a: i64, b: i64) -> i64 {
        a + b
    }

    fn pairs<K: serde::Serialize>(items: &[(K, i64)]) -> Batch {
        let mut batch = Batch::new();
        items.iter().for_each(|pair| batch.push(pair).unwrap());
        batch
    }

    /// Each key of `items` with the sum of its values, keys in the order first seen.
    fn sums_in_first_seen_order(items: &[(String, i64)]) -> Vec<(String, i64)> {
        let mut sums: Vec<(String, i64)> = Vec::new();
        for (key, value) in items {
            match sums.iter_mut().find(|(seen, _)| seen == key) {
                Some((_, sum)) => *sum += value,
                None => sums.push((key.clone(), *value)),
            }
        }
        sums
    }

    fn decoded<K: serde::de::DeserializeOwned>(batch: &Batch) -> Vec<(K, i64)> {
        batch
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect()
    }

    const SUM: Merge = Merge {
        create: None,
        merge: |index, combiner, value, out| fold_one(index, combiner, value, out, sum),
    };

    // The word count's steps, which `chain`'s tests run too.
    pub(crate) fn words(line: &str) -> Vec<&str> {
        line.split(' ').collect()
    }
    pub(crate) fn is_long(word: &str) -> bool {
        word.len() > 2
    }
    pub(crate) fn with_one(word: &str) -> (&str, i64) {
        (word, 1)
    }
    fn no_zeros(number: i64) -> i64 {
        assert!(number != 0, "zero");
        number
    }
    const WORD_COUNT: &[NamedFunction] = crate::functions! {
        flat_map words,
        filter is_long,
        map with_one,
        map no_zeros,
    };

    fn chain(table: &[NamedFunction], steps: &[usize]) -> Vec<OneRecord> {
        steps.iter().map(|&step| table[step].one_record).collect()
    }

    fn lines(lines: &[&str]) -> Batch {
        let mut batch = Batch::new();
        lines.iter().for_each(|line| batch.push(line).unwrap());
        batch
    }

    #[test]
    fn folds_across_adds_and_flushes_keys_in_first_seen_order() {
        let mut table = Combiner::new();
        table
            .add(&[], SUM, &pairs(&[("b", 1), ("a", 2), ("b", 3)]))
            .unwrap();
        table.add(&[], SUM, &pairs(&[("c", 5), ("a", 1)])).unwrap();
        table.add(&[], SUM, &pairs(&[("b", 10)])).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(
            decoded::<String>(&table.flush()),
            [("b".into(), 14), ("a".into(), 3), ("c".into(), 5)]
        );
        assert!(table.is_empty(), "a flush empties the table");
        table.add(&[], SUM, &pairs(&[("a", 7)])).unwrap();
        assert_eq!(decoded::<String>(&table.flush()), [("a".into(), 7)]);
    }

    #[test]
    fn runs_a_chain_record_by_record_into_the_table() {
        let mut table = Combiner::new();
        let chain = chain(WORD_COUNT, &[0, 1, 2]);
        table
            .add(&chain, SUM, &lines(&["the river the gate", "a river"]))
            .unwrap();
        assert_eq!(
            decoded::<String>(&table.flush()),
            [("the".into(), 2), ("river".into(), 2), ("gate".into(), 1)]
        );
    }

    #[test]
    fn keys_and_combiners_too_long_to_keep_inline_are_kept_whole() {
        let long = "a key of far more than fifteen bytes";
        let huge = i64::MAX / 3;
        let items = [(long, huge), ("short", 1), (long, huge), ("short", 2)];
        let mut table = Combiner::new();
        table.add(&[], SUM, &pairs(&items)).unwrap();
        table.add(&[], SUM, &pairs(&items[..1])).unwrap();
        assert_eq!(
            decoded::<String>(&table.flush()),
            [(long.into(), 3 * huge), ("short".into(), 3)]
        );
        let composite = ((long, 7), "more");
        table
            .add(&[], SUM, &pairs(&[(composite, 1), (composite, 1)]))
            .unwrap();
        assert_eq!(
            decoded::<((String, i64), String)>(&table.flush()),
            [(((long.into(), 7), "more".into()), 2)]
        );
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
            create: Some(|index, value, out, emit| {
                crate::function::map_one(index, value, out, emit, count_and_sum)
            }),
            merge: |index, combiner, value, out| fold_one(index, combiner, value, out, add),
        };
        let mut table = Combiner::new();
        table
            .add(&[], merge, &pairs(&[("a", 2), ("b", 5), ("a", 4)]))
            .unwrap();
        table.add(&[], merge, &pairs(&[("b", 1)])).unwrap();
        let flushed: Vec<(String, (i64, i64))> = table
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(flushed, [("a".into(), (2, 6)), ("b".into(), (2, 6))]);
    }

    #[test]
    fn a_combiner_that_stops_being_an_integer_is_kept_encoded() {
        use crate::Value;
        fn add(a: Value, b: Value) -> Value {
            match (a, b) {
                (Value::Int(a), Value::Int(b)) => Value::Int(a + b),
                (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => {
                    Value::Float(a as f64 + b)
                }
                (a, b) => panic!("{a:?} + {b:?}"),
            }
        }
        let merge = Merge {
            create: None,
            merge: |index, combiner, value, out| fold_one(index, combiner, value, out, add),
        };
        let mut batch = Batch::new();
        for pair in [("k", Value::Int(1)), ("k", Value::Float(0.5))] {
            batch.push(&pair).unwrap();
        }
        batch.push(&("k", i64::MIN)).unwrap();
        batch.push(&("n", i64::MIN)).unwrap();
        batch.push(&("n", 300)).unwrap();
        let mut table = Combiner::new();
        table.add(&[], merge, &batch).unwrap();
        let flushed: Vec<(String, Value)> = table
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(
            flushed,
            [
                ("k".into(), Value::Float(1.5 + i64::MIN as f64)),
                ("n".into(), Value::Int(i64::MIN + 300))
            ]
        );
    }

    #[test]
    fn a_failure_names_its_stage_and_the_input_record() {
        let mut words = lines(&["fine", "also fine"]);
        words.push(&7).unwrap();
        let failed = Combiner::new()
            .add(&chain(WORD_COUNT, &[2]), SUM, &words)
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Chain(0));
        assert_eq!(failed.failure.record_index, Some(2));
        assert!(
            failed.failure.message.contains("record 2 (7)"),
            "{failed:?}"
        );

        let failed = Combiner::new()
            .add(
                &chain(WORD_COUNT, &[0, 3]),
                SUM,
                &lines(&["ok", "two words"]),
            )
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Chain(1), "the later step is named");
        assert_eq!(failed.failure.record_index, Some(0));
    }

    #[test]
    fn pairs_wait_to_be_folded_across_many_folds_in_the_order_made() {
        let items: Vec<(String, i64)> = (0..3 * FOLD_EVERY + 5)
            .map(|n| (format!("key {}", (n * 7) % 11), n as i64))
            .collect();
        let expected = sums_in_first_seen_order(&items);
        let mut table = Combiner::new();
        table.add(&[], SUM, &pairs(&items)).unwrap();
        assert_eq!(decoded::<String>(&table.flush()), expected);
    }

    #[test]
    fn keys_new_and_repeated_within_one_look_ahead_are_folded_in_order() {
        // Windows of looked-up keys in which a key is new and then repeated (found by
        // neither lookup), and in which the table grows, many times over.
        let items: Vec<(String, i64)> = (0..5 * FOLD_EVERY)
            .map(|n| (format!("k{}", (n / 3) % (2 * FOLD_EVERY)), n as i64))
            .collect();
        let expected = sums_in_first_seen_order(&items);
        let mut table = Combiner::new();
        table
            .add(&[], SUM, &pairs(&items[..FOLD_EVERY + 7]))
            .unwrap();
        table
            .add(&[], SUM, &pairs(&items[FOLD_EVERY + 7..]))
            .unwrap();
        assert_eq!(decoded::<String>(&table.flush()), expected);
    }

    #[test]
    fn a_failure_within_a_look_ahead_names_its_record() {
        let checked = Merge {
            create: None,
            merge: |index, combiner, value, out| match value {
                Record::Int(i64::MAX) => Err(Failure::at(index, "overflows".into())),
                _ => fold_one(index, combiner, value, out, sum),
            },
        };
        let mut items: Vec<(String, i64)> = (0..LOOK_AHEAD as i64 * 3)
            .map(|n| (format!("k{}", n % 5), 1))
            .collect();
        let at = LOOK_AHEAD + LOOK_AHEAD / 2;
        items[at].1 = i64::MAX;
        items[at + 1].1 = i64::MAX;
        let failed = Combiner::new()
            .add(&[], checked, &pairs(&items))
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        // Records `at` and `at + 1`, of two keys counted before, both overflow, in the
        // middle of one window of lookups: the first is named.
        assert_eq!(failed.failure.record_index, Some(at as u32), "{failed:?}");
        assert!(failed.failure.message.contains("overflows"), "{failed:?}");
    }

    #[test]
    fn a_failure_of_an_earlier_record_s_fold_comes_before_a_later_one_in_the_chain() {
        let failing = Merge {
            create: None,
            merge: |index, _, _, _| Err(Failure::at(index, "overflow".into())),
        };
        // Record 1 repeats record 0's word, so its fold fails; record 2, a number, fails
        // in the chain before the pairs of records 0 and 1 are folded.
        let mut words = lines(&["one", "one"]);
        words.push(&7).unwrap();
        let failed = Combiner::new()
            .add(&chain(WORD_COUNT, &[2]), failing, &words)
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        assert_eq!(failed.failure.record_index, Some(1));
    }

    #[test]
    fn a_chain_of_several_steps_fanning_out_folds_what_its_steps_make_in_order() {
        // Two flat-maps (the second making none, one or two pieces of each word), a
        // filter and a map: every piece reaches the table in the order the steps make
        // them batch by batch, whichever step's buffer it passed through.
        fn pieces(word: &str) -> Vec<&str> {
            match word.len() {
                0 => vec![],
                1..=3 => vec![word],
                length => vec![&word[..length / 2], &word[length / 2..]],
            }
        }
        fn not_a(piece: &str) -> bool {
            piece != "a"
        }
        fn by_first_letter(piece: &str) -> (String, String) {
            (piece[..1].to_owned(), piece.to_owned())
        }
        fn joined(a: String, b: String) -> String {
            format!("{a},{b}")
        }
        const STEPS: &[NamedFunction] = crate::functions! {
            flat_map words,
            flat_map pieces,
            filter not_a,
            map by_first_letter,
        };
        let merge = Merge {
            create: None,
            merge: |index, combiner, value, out| fold_one(index, combiner, value, out, joined),
        };
        let input = lines(&[
            "the river  a gate",
            "",
            "streams flow a sluice",
            "gates and rivers",
        ]);

        let mut stepped = input.clone();
        for step in STEPS {
            stepped = match step.function {
                crate::Function::Map(run) => run(&stepped).unwrap(),
                crate::Function::FlatMap(run) => run(&stepped).unwrap().into_parts().0,
                crate::Function::Filter(run) => stepped.select(&run(&stepped).unwrap()),
                _ => unreachable!("the steps are record functions"),
            };
        }
        let mut expected: Vec<(String, String)> = Vec::new();
        for record in stepped.iter() {
            let (key, piece): (String, String) = crate::encoding::from_bytes(record).unwrap();
            match expected.iter_mut().find(|(seen, _)| *seen == key) {
                Some((_, all)) => *all = joined(all.clone(), piece),
                None => expected.push((key, piece)),
            }
        }
        assert_eq!(expected[0], ("t".into(), "the,te,tes".into()));

        let mut table = Combiner::new();
        table
            .add(&chain(STEPS, &[0, 1, 2, 3]), merge, &input)
            .unwrap();
        let folded: Vec<(String, String)> = table
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(folded, expected);
    }

    #[test]
    fn a_record_that_is_not_a_pair_is_named() {
        let failed = Combiner::new()
            .add(&[], SUM, &lines(&["lonely"]))
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        assert_eq!(failed.failure.record_index, Some(0));
        assert!(
            failed
                .failure
                .message
                .contains("\"lonely\" of record 0, which is not a (key, value) pair"),
            "{failed:?}"
        );
    }

    /// A reduce whose result depends on the order its values come in.
    fn in_order(a: i64, b: i64) -> i64 {
        a.wrapping_mul(31).wrapping_add(b)
    }

    const IN_ORDER: Merge = Merge {
        create: None,
        merge: |index, combiner, value, out| fold_one(index, combiner, value, out, in_order),
    };

    /// Each key of `items` with its values folded by [`in_order`], keys in the order first
    /// seen.
    fn folded_in_order(items: &[(String, i64)]) -> Vec<(String, i64)> {
        let mut folded: Vec<(String, i64)> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = Default::default();
        for (key, value) in items {
            match at.get(key) {
                Some(&place) => folded[place].1 = in_order(folded[place].1, *value),
                None => {
                    at.insert(key.clone(), folded.len());
                    folded.push((key.clone(), *value));
                }
            }
        }
        folded
    }

    /// A combiner whose table has grown past [`SCATTER_ABOVE`] buckets and then been
    /// emptied, so that its folds go region by region from the first.
    fn scattering() -> Combiner {
        let mut combiner = Combiner::new();
        let keys: Vec<(u32, i64)> = (0..SCATTER_ABOVE as u32).map(|n| (n, 1)).collect();
        combiner.add(&[], SUM, &pairs(&keys)).unwrap();
        assert!(combiner.table.buckets() > SCATTER_ABOVE);
        combiner.clear();
        combiner
    }

    /// The region where `key`'s lookup starts in `combiner`'s table.
    fn region_of(combiner: &Combiner, key: &str) -> usize {
        let bytes = crate::encoding::to_bytes(&key).unwrap();
        let regions = combiner.table.regions(REGION_BUCKETS);
        regions.of(&Key::new(&bytes).keep(0))
    }

    #[test]
    fn a_large_table_folded_region_by_region_folds_each_key_s_values_in_order() {
        // Many keys, repeated in a scrambled order, some of them 16 bytes or longer (not
        // inline), folded by a reduce that tells orders apart, across adds of many sizes,
        // as the table grows past the size it is scattered from and after.
        let items: Vec<(String, i64)> = (0..6 * SCATTER_ABOVE)
            .map(|n| {
                let key = (n * 7919) % (2 * SCATTER_ABOVE);
                let key = match key % 5 {
                    0 => format!("a key long enough to spill {key}"),
                    _ => format!("k{key}"),
                };
                (key, n as i64)
            })
            .collect();
        let expected = folded_in_order(&items);
        for mut combiner in [Combiner::new(), scattering()] {
            let mut at = 0;
            for size in [1, 7, FOLD_EVERY - 1, 3 * FOLD_EVERY, 50_000]
                .iter()
                .cycle()
            {
                let end = (at + size).min(items.len());
                combiner
                    .add(&[], IN_ORDER, &pairs(&items[at..end]))
                    .unwrap();
                at = end;
                if at == items.len() {
                    break;
                }
            }
            assert!(combiner.table.buckets() > SCATTER_ABOVE);
            assert_eq!(decoded::<String>(&combiner.flush()), expected);
        }
    }

    #[test]
    fn keys_of_one_region_are_folded_in_order_and_flushed_in_the_order_first_seen() {
        // Keys that share a region of the table (so are folded in one run, after keys of
        // other regions first seen later), interleaved with keys of other regions.
        let mut combiner = scattering();
        let keys: Vec<String> = (0..20_000).map(|n| format!("w{n}")).collect();
        let region = region_of(&combiner, &keys[0]);
        let (same, other): (Vec<&String>, Vec<&String>) = keys
            .iter()
            .partition(|key| region_of(&combiner, key) == region);
        assert!(same.len() >= 3, "{} keys share a region", same.len());
        let mut items = Vec::new();
        for round in 0..3 {
            for (n, key) in same.iter().enumerate() {
                items.push(((*key).clone(), (round * 100 + n) as i64));
                items.push((other[(round * 7 + n) % other.len()].clone(), n as i64));
            }
        }
        combiner.add(&[], IN_ORDER, &pairs(&items)).unwrap();
        assert_eq!(
            decoded::<String>(&combiner.flush()),
            folded_in_order(&items)
        );
    }

    #[test]
    fn a_large_table_takes_adds_that_leave_no_pair_waiting() {
        // No record at all, and pairs that fill the waiting pairs exactly (folded inside
        // the add, none left for its last fold).
        let mut combiner = scattering();
        combiner.add(&[], SUM, &Batch::new()).unwrap();
        let keys: Vec<(u32, i64)> = (0..FOLD_EVERY_SCATTERED as u32)
            .map(|n| (n % 7, 1))
            .collect();
        combiner.add(&[], SUM, &pairs(&keys)).unwrap();
        combiner.add(&[], SUM, &Batch::new()).unwrap();
        let counts = decoded::<u32>(&combiner.flush());
        assert_eq!(counts.len(), 7);
        assert_eq!(
            counts.iter().map(|&(_, count)| count).sum::<i64>(),
            FOLD_EVERY_SCATTERED as i64
        );
    }

    #[test]
    fn a_failure_in_a_large_table_names_the_first_failing_record_of_any_region() {
        let checked = Merge {
            create: None,
            merge: |index, combiner, value, out| match value {
                Record::Int(i64::MAX) => Err(Failure::at(index, "overflows".into())),
                _ => fold_one(index, combiner, value, out, sum),
            },
        };
        let combiner = scattering();
        // Two keys of two regions, whichever fails first in the order made is named,
        // whether its region is folded before the other's or after.
        let keys: Vec<String> = (0..1000).map(|n| format!("w{n}")).collect();
        let (early, late) = keys
            .iter()
            .flat_map(|a| keys.iter().map(move |b| (a, b)))
            .find(|(a, b)| region_of(&combiner, a) < region_of(&combiner, b))
            .expect("two keys of different regions");
        for (first, second) in [(early, late), (late, early)] {
            let mut items: Vec<(String, i64)> = vec![(first.clone(), 1), (second.clone(), 1)];
            items.extend((0..100).map(|n| (format!("x{n}"), 1)));
            items.push((first.clone(), i64::MAX));
            items.push((second.clone(), i64::MAX));
            items.push((first.clone(), i64::MAX));
            let failed = scattering().add(&[], checked, &pairs(&items)).unwrap_err();
            assert_eq!(failed.stage, Stage::Merge);
            assert_eq!(failed.failure.record_index, Some(102), "{failed:?}");
        }

        // A failing fold of an earlier record still comes before a later record's chain
        // failure, in whichever region it is.
        let mut words = lines(&["one", "two"]);
        words.push(&7).unwrap();
        let failing = Merge {
            create: None,
            merge: |index, _, _, _| Err(Failure::at(index, "overflow".into())),
        };
        let mut combiner = scattering();
        combiner
            .add(&chain(WORD_COUNT, &[2]), failing, &lines(&["two", "one"]))
            .unwrap();
        let failed = combiner
            .add(&chain(WORD_COUNT, &[2]), failing, &words)
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        assert_eq!(failed.failure.record_index, Some(0));
    }

    #[test]
    fn keys_keep_the_order_first_seen_when_the_count_of_pairs_would_run_out() {
        let mut combiner = Combiner::new();
        combiner
            .add(&[], SUM, &pairs(&[("b", 1), ("a", 1)]))
            .unwrap();
        // As if 4G pairs had been folded: the keys' orders are numbered again from 0.
        combiner.folded = u32::MAX - 1;
        let more = [("c", 1), ("a", 1), ("d", 1), ("e", 1), ("f", 1)];
        combiner.add(&[], SUM, &pairs(&more)).unwrap();
        assert_eq!(
            decoded::<String>(&combiner.flush()),
            [
                ("b".into(), 1),
                ("a".into(), 2),
                ("c".into(), 1),
                ("d".into(), 1),
                ("e".into(), 1),
                ("f".into(), 1)
            ]
        );
    }

    #[test]
    fn a_combiner_grows_from_inline_to_spilled_and_is_replaced_in_place() {
        fn concat(a: String, b: String) -> String {
            a + &b
        }
        let merge = Merge {
            create: None,
            merge: |index, combiner, value, out| fold_one(index, combiner, value, out, concat),
        };
        // Encoded in 3 bytes (inline), then in 12 and more (spilled, replaced in place).
        let parts = ["a", "bcdefghij", "klmnop", "q", "r"];
        let mut batch = Batch::new();
        parts
            .iter()
            .for_each(|part| batch.push(&("k", part)).unwrap());
        let mut combiner = Combiner::new();
        combiner.add(&[], merge, &batch).unwrap();
        let flushed: Vec<(String, String)> = combiner
            .flush()
            .iter()
            .map(|record| crate::encoding::from_bytes(record).unwrap())
            .collect();
        assert_eq!(flushed, [("k".into(), parts.concat())]);
        assert_eq!(size_of::<Combined>(), 12, "an entry is 32 bytes");
        assert_eq!(size_of::<PendingPair>(), 32);
    }

    #[test]
    fn a_failing_merge_names_its_stage_and_record() {
        let failing = Merge {
            create: None,
            merge: |index, _, _, _| Err(Failure::at(index, "overflow".into())),
        };
        let failed = Combiner::new()
            .add(&[], failing, &pairs(&[("a", 1), ("b", 1), ("a", 2)]))
            .unwrap_err();
        assert_eq!(failed.stage, Stage::Merge);
        assert_eq!(failed.failure.record_index, Some(2));
    }
}
