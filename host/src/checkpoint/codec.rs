//! How checkpointed things are encoded: bincode 2 (standard configuration), and batches
//! as their two buffers, checked on the way back in.
//!
//! Decoding is bounded by what is decoded: a value never takes more memory than 32 times
//! its encoding, so the limit bincode checks before each allocation follows from the
//! length of the bytes (a log record by its frame, a checkpoint by its file, a step's
//! state by its bytes in the checkpoint), and a corrupt length cannot ask for more.

use anyhow::{Context, Result};
use bincode::{Decode, Encode};
use sluice_abi::Batch;

/// How many bytes of memory a decoded value may take per byte of its encoding. The most
/// any saved type needs is 24 (a list of empty strings or lists: 24 bytes of `Vec` per
/// byte of length); everything bincode claims for a value counts, so 32 leaves room.
const EXPANSION: usize = 32;

/// Encodes `value`.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, bincode::config::standard())
        .expect("encoding into a Vec cannot fail")
}

/// Decodes a `T` that must fill `bytes` exactly, allocating at most about 32 times
/// `bytes.len()` on the way.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T> {
    let needed = bytes.len().saturating_mul(EXPANSION);
    // bincode's limit is a type parameter: take the smallest of a few steps (each 4 times
    // the one before) that admits `needed`.
    macro_rules! within_smallest_step {
        ($($shift:literal)+) => {
            $(if needed <= 1 << $shift {
                return decode_within::<T, { 1 << $shift }>(bytes);
            })+
        };
    }
    within_smallest_step!(12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44 46);
    anyhow::bail!("{} bytes are more than a saved value may hold", bytes.len())
}

fn decode_within<T: Decode<()>, const LIMIT: usize>(bytes: &[u8]) -> Result<T> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, read) = bincode::decode_from_slice(bytes, config)?;
    anyhow::ensure!(
        read == bytes.len(),
        "{} bytes are left over after the saved value",
        bytes.len() - read
    );
    Ok(value)
}

/// A batch as saved: its record bytes and record ends.
#[derive(Debug, Clone, Default, Encode, Decode)]
pub struct SavedBatch {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl From<Batch> for SavedBatch {
    fn from(batch: Batch) -> Self {
        let (data, ends) = batch.into_parts();
        Self { data, ends }
    }
}

impl From<&Batch> for SavedBatch {
    fn from(batch: &Batch) -> Self {
        Self {
            data: batch.data().to_vec(),
            ends: batch.ends().to_vec(),
        }
    }
}

impl SavedBatch {
    /// The batch again, its offsets and records checked (well formed, nested at most
    /// `MAX_DEPTH` levels) before anything reads them.
    pub fn into_batch(self) -> Result<Batch> {
        let batch =
            Batch::from_parts(self.data, self.ends).context("a saved batch is malformed")?;
        batch.check_records().map_err(|(index, error)| {
            anyhow::anyhow!("record {index} of a saved batch is refused: {error}")
        })?;
        Ok(batch)
    }

    /// Saves every batch of `batches`.
    pub fn all(batches: &[Batch]) -> Vec<SavedBatch> {
        batches.iter().map(SavedBatch::from).collect()
    }

    /// Restores every batch of `saved`.
    pub fn restore_all(saved: Vec<SavedBatch>) -> Result<Vec<Batch>> {
        saved.into_iter().map(SavedBatch::into_batch).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_expanding_saved_shapes_decode_within_the_limit() {
        let empty_lists = vec![Vec::<u8>::new(); 1000];
        assert_eq!(
            decode::<Vec<Vec<u8>>>(&encode(&empty_lists)).unwrap(),
            empty_lists
        );
        let pairs = vec![(String::new(), String::new()); 1000];
        assert_eq!(
            decode::<Vec<(String, String)>>(&encode(&pairs)).unwrap(),
            pairs
        );
        let positions = vec![None::<u64>; 1000];
        assert_eq!(
            decode::<Vec<Option<u64>>>(&encode(&positions)).unwrap(),
            positions
        );
    }

    #[test]
    fn a_corrupt_length_cannot_ask_for_more_than_the_bytes_allow() {
        // A list of 2^40 bytes announced in 9 bytes.
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let error = decode::<Vec<u8>>(&bytes).unwrap_err().to_string();
        assert!(error.contains("LimitExceeded"), "{error}");
    }
}
