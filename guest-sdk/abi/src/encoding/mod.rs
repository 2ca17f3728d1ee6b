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

pub(crate) use de::read_str;
pub(crate) use varint::read_len;
pub(crate) use walk::too_deep;

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
