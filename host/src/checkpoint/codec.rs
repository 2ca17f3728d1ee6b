//! How checkpointed things are encoded: bincode 2 (standard configuration, with a size
//! limit so that a corrupt length cannot ask for a huge allocation), and batches as their
//! two buffers, checked on the way back in.

use anyhow::{Context, Result};
use bincode::{Decode, Encode};
use sluice_abi::Batch;

/// The largest single encoded item a checkpoint may hold.
const LIMIT: usize = 1 << 34;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes `value`.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, config()).expect("encoding into a Vec cannot fail")
}

/// Decodes a `T` that must fill `bytes` exactly.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T> {
    let (value, read) = bincode::decode_from_slice(bytes, config())?;
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
