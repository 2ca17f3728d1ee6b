//! The canonical record encoding, as a serde data format.
//!
//! Every record that crosses the host/guest boundary is one [`Value`](crate::Value) encoded
//! the way bincode 2's standard configuration encodes that enum: a one-byte tag (the variant
//! index as a varint), then the payload, with lengths and integers as varints (signed ones
//! zig-zagged) and floats as 8 little-endian bytes. The serializer here writes those exact
//! bytes straight from any `T: Serialize`, and the deserializer reads any `T: Deserialize`
//! straight from them, so a UDF never builds an intermediate value tree.
//!
//! The encoding is canonical: equal values give equal bytes. Map entries are sorted by
//! the bytes of their keys, every integer type becomes an `Int`, and NaN has one bit pattern.
//! That is what lets the host hash, group and join keys without decoding them.

mod de;
mod ser;
mod varint;
mod walk;

pub use de::{
    Decoder, cell_parts, check_record, field_value, from_bytes, int_value, pair_parts, skip_value,
};
pub use ser::{Encoder, encode_into, to_bytes};
pub use walk::MAX_DEPTH;

pub(crate) use de::{from_encoded_bytes, read_str};

pub(crate) use varint::{read_i64, read_len, take};
pub(crate) use walk::{read_tag, too_deep, unknown_tag};

/// Up to 16 bytes as the low bytes of two numbers (low half first), the rest zero. A
/// WASM guest compiles a copy of variable length to `memory.copy`, which wasmtime runs as
/// a call out of the guest's code that costs more than copying a word; this reads `bytes`
/// with loads of fixed width (two overlapping ones) instead, and without 128-bit shifts,
/// which WASM has no instruction for. Natively too, a call to `memcpy` per key costs more
/// than the rest of keeping a key inline (the host's key tables).
#[inline]
pub fn short_bytes(bytes: &[u8]) -> [u64; 2] {
    let len = bytes.len();
    debug_assert!(len <= 16);
    let read8 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
    let read4 = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")));
    match len {
        0 => [0, 0],
        1..=3 => [
            u64::from(bytes[0])
                | u64::from(bytes[len / 2]) << (8 * (len / 2))
                | u64::from(bytes[len - 1]) << (8 * (len - 1)),
            0,
        ],
        4..=7 => [read4(0) | read4(len - 4) << (8 * (len - 4)), 0],
        // The last 8 bytes, shifted down past the ones the first 8 hold.
        _ => [
            read8(0),
            read8(len - 8)
                .checked_shr(8 * (16 - len) as u32)
                .unwrap_or(0),
        ],
    }
}

/// Appends `bytes` to `out`, a short run without `memory.copy` (see [`short_bytes`]).
#[inline]
pub(crate) fn extend_short(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() > 16 {
        out.extend_from_slice(bytes);
        return;
    }
    let end = out.len() + bytes.len();
    let [low, high] = short_bytes(bytes);
    let mut block = [0; 16];
    block[..8].copy_from_slice(&low.to_le_bytes());
    block[8..].copy_from_slice(&high.to_le_bytes());
    out.extend_from_slice(&block);
    out.truncate(end);
}

/// Appends a length (or count) as a varint.
pub(crate) fn write_len(out: &mut Vec<u8>, len: usize) {
    varint::write_u64(out, len as u64);
}

use std::fmt;

/// The one-byte tags that open each encoded value, in [`Value`](crate::Value)'s variant order.
pub(crate) mod tag {
    pub const NULL: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const FLOAT: u8 = 3;
    pub const STRING: u8 = 4;
    pub const BYTES: u8 = 5;
    pub const LIST: u8 = 6;
    pub const TUPLE: u8 = 7;
    pub const MAP: u8 = 8;
    pub const STRUCT: u8 = 9;
}

/// A value that could not be encoded or decoded, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `Ok` if `rest`, what follows a value that should fill its record, is empty; else the
/// error that says how many bytes were left over.
#[inline]
pub(crate) fn nothing_left_over(rest: &[u8]) -> Result<(), Error> {
    match rest.len() {
        0 => Ok(()),
        left => Err(Error::new(format!(
            "{left} bytes left over after the value"
        ))),
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }
}

/// The bit pattern every NaN is written with, so that NaN keys compare equal.
pub(crate) const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_checked_for_utf8_at_every_length_and_position() {
        let decode = |bytes: &[u8]| {
            let mut record = vec![tag::STRING];
            write_len(&mut record, bytes.len());
            record.extend_from_slice(bytes);
            from_bytes::<&str>(&record).map(str::to_owned)
        };
        for len in 0..=40 {
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(
                decode(&ascii).unwrap().as_bytes(),
                ascii,
                "{len} ASCII bytes"
            );
            for at in 0..len {
                for bad in [0x80, 0xff] {
                    let mut broken = ascii.clone();
                    broken[at] = bad;
                    let error = decode(&broken).unwrap_err();
                    assert!(
                        error.to_string().contains("not valid UTF-8"),
                        "byte {bad:#x} at {at} of {len}: {error}"
                    );
                }
                let mut text = String::from_utf8(ascii.clone()).unwrap();
                text.replace_range(at..at + 1, "é");
                assert_eq!(decode(text.as_bytes()).unwrap(), text, "é at {at} of {len}");
            }
        }
    }

    #[test]
    fn short_runs_are_appended_whole_at_every_length() {
        let source: Vec<u8> = (1..=20).collect();
        for len in 0..=source.len() {
            let mut out = vec![0xee];
            extend_short(&mut out, &source[..len]);
            assert_eq!(out[1..], source[..len], "{len} bytes");
            if len <= 16 {
                let [low, high] = short_bytes(&source[..len]);
                let number = [low.to_le_bytes(), high.to_le_bytes()].concat();
                assert_eq!(number[..len], source[..len], "{len} bytes");
                assert!(number[len..].iter().all(|&byte| byte == 0), "{len} bytes");
            }
        }
    }
}
