//! Record batches: the unit that crosses the host/guest boundary in one call.

use std::ops::Range;

use serde::Serialize;

use crate::encoding::{self, Error};

/// The records of one batch partition, laid out flat: record `i` is
/// `data[ends[i - 1]..ends[i]]` (from 0 for the first), each one canonical value.
///
/// One buffer plus offsets crosses the WASM boundary as two memory copies, where a list of
/// lists would cost an allocation per record (about 3x slower, measured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    /// A batch from its two buffers, checking that the offsets are in order and inside the
    /// data (the buffers may come from a guest, which is not trusted).
    pub fn from_parts(data: Vec<u8>, ends: Vec<u32>) -> Result<Self, Error> {
        check_ends(&ends, data.len(), "record", "byte")?;
        Ok(Self { data, ends })
    }

    /// Checks that every record is one well-formed value nested at most
    /// [`MAX_DEPTH`](encoding::MAX_DEPTH) levels, walking the bytes without recursion: what
    /// records from outside the host's own code (a guest's answer, a log on disk) go
    /// through before anything reads them. The error is the first bad record's index and
    /// what is wrong with it.
    pub fn check_records(&self) -> Result<(), (usize, Error)> {
        self.iter().enumerate().try_for_each(|(index, record)| {
            encoding::check_record(record).map_err(|error| (index, error))
        })
    }

    /// The two buffers, for handing to a guest.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.data, self.ends)
    }

    /// The concatenated record bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Where each record ends in [`data`](Self::data).
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The encoded bytes of record `index`.
    pub fn get(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        &self.data[start..self.ends[index] as usize]
    }

    /// The encoded records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let record = &self.data[start as usize..end as usize];
            start = end;
            record
        })
    }

    /// Appends a record that is already canonically encoded.
    pub fn push_encoded(&mut self, record: &[u8]) {
        self.data.extend_from_slice(record);
        self.close_record();
    }

    /// Encodes `value` and appends it.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        encoding::encode_into(&mut self.data, value)?;
        self.close_record();
        Ok(())
    }

    /// Appends a record written by `write`, which appends one canonical value to the buffer
    /// it is given.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.close_record();
    }

    /// Appends every record of `other`.
    pub fn extend_from(&mut self, other: &Batch) {
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|end| base + end));
    }

    /// The records whose bit is set in `keep` (bit `i % 8` of byte `i / 8`), the layout a
    /// filter function returns. A record past the end of `keep` is dropped: a mask from
    /// a guest must be checked to hold `len().div_ceil(8)` bytes first.
    pub fn select(&self, keep: &[u8]) -> Batch {
        let mut kept = Batch::with_capacity(self.len(), self.data.len());
        for (index, record) in self.iter().enumerate() {
            if keep
                .get(index / 8)
                .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
            {
                kept.push_encoded(record);
            }
        }
        kept
    }

    /// The batch in consecutive pieces of at most `max_records` records and, unless a
    /// single record is larger, `max_bytes` bytes, each with the index of its first record.
    pub fn chunks(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> impl Iterator<Item = (usize, Batch)> + '_ {
        self.chunk_ranges(max_records, max_bytes)
            .map(|records| (records.start, self.slice(records)))
    }

    /// The records of each piece [`chunks`](Self::chunks) makes, without copying them.
    pub fn chunk_ranges(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start == self.len() {
                return None;
            }
            let base = start.checked_sub(1).map_or(0, |i| self.ends[i]);
            let mut end = start + 1;
            while end < self.len()
                && end - start < max_records
                && (self.ends[end] - base) as usize <= max_bytes
            {
                end += 1;
            }
            let first = start;
            start = end;
            Some(first..end)
        })
    }

    /// Records `records` (consecutive) as a batch of their own, copied in two pieces.
    pub fn slice(&self, records: Range<usize>) -> Batch {
        let start_of = |index: usize| index.checked_sub(1).map_or(0, |i| self.ends[i]);
        let (base, end) = (start_of(records.start), start_of(records.end));
        Batch {
            data: self.data[base as usize..end as usize].to_vec(),
            ends: self.ends[records].iter().map(|end| end - base).collect(),
        }
    }

    #[inline]
    fn close_record(&mut self) {
        let end = u32::try_from(self.data.len())
            .expect("a batch partition holds at most 4 GiB of record bytes");
        self.ends.push(end);
    }
}

/// Records split into consecutive groups, for functions that fold each group to one
/// value: group `j` is records `group_ends[j - 1]..group_ends[j]` of `records`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    records: Batch,
    group_ends: Vec<u32>,
}

impl Groups {
    /// Groups from their records and boundaries, checking the boundaries.
    pub fn from_parts(records: Batch, group_ends: Vec<u32>) -> Result<Self, Error> {
        check_ends(&group_ends, records.len(), "group", "record")?;
        Ok(Self {
            records,
            group_ends,
        })
    }

    /// One group holding every record of `records`.
    pub fn single(records: Batch) -> Self {
        let group_ends = vec![records.len() as u32];
        Self {
            records,
            group_ends,
        }
    }

    /// Appends every group of `other`.
    pub fn extend_from(&mut self, other: &Groups) {
        let base = self.records.len() as u32;
        self.records.extend_from(&other.records);
        self.group_ends
            .extend(other.group_ends.iter().map(|end| base + end));
    }

    /// The records and the group boundaries.
    pub fn into_parts(self) -> (Batch, Vec<u32>) {
        (self.records, self.group_ends)
    }

    /// All records, group after group.
    pub fn records(&self) -> &Batch {
        &self.records
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.group_ends.len()
    }

    /// Whether there is no group.
    pub fn is_empty(&self) -> bool {
        self.group_ends.is_empty()
    }

    /// The group record `record` is in (the number of groups if it is in none).
    pub fn group_of(&self, record: usize) -> usize {
        self.group_ends
            .partition_point(|&end| end as usize <= record)
    }

    /// The range of record indices in group `index`.
    pub fn group(&self, index: usize) -> std::ops::Range<usize> {
        let start = index
            .checked_sub(1)
            .map_or(0, |i| self.group_ends[i] as usize);
        start..self.group_ends[index] as usize
    }
}

/// Checks that `ends` never go back and stay within `limit` (offsets from an untrusted
/// guest must not index out of bounds).
fn check_ends(ends: &[u32], limit: usize, item: &str, unit: &str) -> Result<(), Error> {
    let mut previous = 0u32;
    for (index, &end) in ends.iter().enumerate() {
        if end < previous || end as usize > limit {
            return Err(Error::new(format!(
                "{item} {index} ends at {unit} {end}, outside 0..={limit} or before the previous {item}"
            )));
        }
        previous = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_offsets_outside_the_data() {
        assert!(Batch::from_parts(vec![0; 4], vec![2, 5]).is_err());
        assert!(Batch::from_parts(vec![0; 4], vec![3, 2]).is_err());
        assert_eq!(Batch::from_parts(vec![0; 4], vec![2, 4]).unwrap().len(), 2);
    }

    #[test]
    fn check_records_names_the_first_bad_one() {
        let mut batch = Batch::new();
        batch.push(&1i64).unwrap();
        batch.push_with(|out| out.extend_from_slice(&[6, 1, 6, 1]));
        batch.push_with(|out| out.push(42));
        let (index, error) = batch.check_records().unwrap_err();
        assert_eq!(index, 1, "{error}");
        let mut deep = Batch::new();
        deep.push_with(|out| {
            out.extend_from_slice(&[6, 1].repeat(encoding::MAX_DEPTH + 1));
            out.push(0);
        });
        let (index, error) = deep.check_records().unwrap_err();
        assert_eq!(index, 0);
        assert!(
            error.to_string().contains("deeper than 1000 levels"),
            "{error}"
        );
        deep.push(&"fine").unwrap();
        assert!(
            Batch::from_parts(vec![0], vec![1])
                .unwrap()
                .check_records()
                .is_ok()
        );
    }

    #[test]
    fn group_of_finds_the_group_holding_a_record() {
        let mut records = Batch::new();
        (0..5i64).for_each(|n| records.push(&n).unwrap());
        let groups = Groups::from_parts(records, vec![0, 2, 2, 5]).unwrap();
        let found: Vec<usize> = (0..6).map(|record| groups.group_of(record)).collect();
        assert_eq!(found, [1, 1, 3, 3, 3, 4]);
    }

    #[test]
    fn select_keeps_the_records_whose_bit_is_set() {
        let mut batch = Batch::new();
        (0..10i64).for_each(|n| batch.push(&n).unwrap());
        let kept = batch.select(&[0b0000_0101, 0b0000_0010]);
        let values: Vec<i64> = kept
            .iter()
            .map(|r| crate::encoding::from_bytes(r).unwrap())
            .collect();
        assert_eq!(values, vec![0, 2, 9]);
    }

    #[test]
    fn a_slice_holds_the_records_of_its_range() {
        let mut batch = Batch::new();
        ["a", "bb", "", "cccc"]
            .iter()
            .for_each(|text| batch.push(text).unwrap());
        let records = |batch: &Batch| -> Vec<String> {
            batch
                .iter()
                .map(|r| crate::encoding::from_bytes(r).unwrap())
                .collect()
        };
        assert_eq!(records(&batch.slice(1..3)), ["bb", ""]);
        assert_eq!(records(&batch.slice(0..4)), records(&batch));
        assert_eq!(records(&batch.slice(3..4)), ["cccc"]);
        assert!(batch.slice(2..2).is_empty());
        assert_eq!(batch.slice(4..4), Batch::new());
    }

    #[test]
    fn chunks_cover_every_record_once_within_the_bounds() {
        let mut batch = Batch::new();
        (0..1000i64).for_each(|n| batch.push(&n).unwrap());
        let chunks: Vec<(usize, Batch)> = batch.chunks(64, 100).collect();
        assert!(
            chunks
                .iter()
                .all(|(_, chunk)| chunk.len() <= 64 && chunk.data().len() <= 100)
        );
        let mut joined = Batch::new();
        for (first, chunk) in &chunks {
            assert_eq!(*first, joined.len());
            joined.extend_from(chunk);
        }
        assert_eq!(joined, batch);
        let mut big = Batch::new();
        big.push(&"x".repeat(500)).unwrap();
        big.push(&"y").unwrap();
        assert_eq!(
            big.chunks(64, 100)
                .map(|(_, c)| c.len())
                .collect::<Vec<_>>(),
            [1, 1],
            "an oversized record is a chunk of its own"
        );
    }

    #[test]
    fn extend_from_shifts_the_offsets() {
        let mut left = Batch::new();
        left.push("a").unwrap();
        let mut right = Batch::new();
        right.push("bb").unwrap();
        right.push("ccc").unwrap();
        left.extend_from(&right);
        let texts: Vec<String> = left
            .iter()
            .map(|r| crate::encoding::from_bytes(r).unwrap())
            .collect();
        assert_eq!(texts, ["a", "bb", "ccc"]);
    }
}
