//! Reading any `T: Deserialize` from canonical record bytes, borrowing strings and bytes
//! from the input where the type allows it.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::walk::{is_whole_flat, read_tag, skip, unknown_tag};
use super::{Error, nothing_left_over, tag, varint};

/// Checks that `record` is exactly one well-formed value nested at most
/// [`MAX_DEPTH`](super::MAX_DEPTH) levels, without building anything and without
/// recursion: what every record from outside the host's own code goes through first.
#[inline]
pub fn check_record(record: &[u8]) -> Result<(), Error> {
    if is_whole_flat(record) {
        return Ok(());
    }
    let (_, rest) = skip_value(record)?;
    nothing_left_over(rest)
}

/// Decodes one value that must fill `bytes` exactly.
pub fn from_bytes<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    decode_whole(Decoder::new(bytes))
}

/// [`from_bytes`] for bytes this crate's [`Encoder`](super::Encoder) wrote in this
/// process: it writes strings only from `&str`s, so theirs are valid UTF-8 and are not
/// checked again (what a fused chain passes from one step to the next).
pub(crate) fn from_encoded_bytes<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<T, Error> {
    decode_whole(Decoder::encoded_here(bytes))
}

fn decode_whole<'de, T: de::Deserialize<'de>>(mut decoder: Decoder<'de>) -> Result<T, Error> {
    let value = T::deserialize(&mut decoder)?;
    nothing_left_over(decoder.input)?;
    Ok(value)
}

/// Splits the first encoded value off `input`, returning it and the rest. This is how the
/// host walks a record (say, to take the key of a pair) without decoding it. The value is
/// walked without recursion, and one nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH)
/// is an error.
pub fn skip_value(input: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let mut rest = input;
    skip(&mut rest)?;
    Ok(input.split_at(input.len() - rest.len()))
}

/// The two elements of a pair: a record that is a tuple or list of exactly two values.
/// `None` if the record is anything else. This is how the host reads the key of a
/// `(key, value)` record without decoding it.
pub fn pair_parts(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut input = record;
    if !matches!(read_tag(&mut input).ok()?, tag::TUPLE | tag::LIST)
        || varint::read_u64(&mut input).ok()? != 2
    {
        return None;
    }
    let (first, second) = skip_value(input).ok()?;
    let (second, rest) = skip_value(second).ok()?;
    rest.is_empty().then_some((first, second))
}

/// The encoded value of field `name` of a record that is a struct (or a map with string
/// keys, as a UDF's struct arrives), without decoding the record: how the host reads a
/// field of every record of a batch. `None` if the record is neither, has no such field,
/// or is malformed.
pub fn field_value<'a>(record: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut input = record;
    let is_map = match read_tag(&mut input).ok()? {
        tag::STRUCT => false,
        tag::MAP => true,
        _ => return None,
    };
    for _ in 0..varint::read_len(&mut input).ok()? {
        // Names are compared as bytes: equal bytes are equal text, whatever their UTF-8.
        let read_name = |input: &mut &'a [u8]| -> Option<bool> {
            let len = varint::read_len(input).ok()?;
            Some(varint::take(input, len).ok()? == name.as_bytes())
        };
        let matches = if is_map {
            let (key, rest) = skip_value(input).ok()?;
            input = rest;
            let mut key = key;
            read_tag(&mut key).ok()? == tag::STRING && read_name(&mut key)?
        } else {
            read_name(&mut input)?
        };
        let (value, rest) = skip_value(input).ok()?;
        if matches {
            return Some(value);
        }
        input = rest;
    }
    None
}

/// The integer `value` is the encoding of, if it is one: how the host reads a number
/// field (an event time, say) without a decoder.
#[inline]
pub fn int_value(value: &[u8]) -> Option<i64> {
    let (&tag::INT, mut rest) = value.split_first()? else {
        return None;
    };
    let int = varint::read_i64(&mut rest).ok()?;
    rest.is_empty().then_some(int)
}

/// The state inside a state cell record (a list of no element or one), without decoding
/// it: `Some(None)` for an empty cell, `None` if the record is not a cell.
pub fn cell_parts(record: &[u8]) -> Option<Option<&[u8]>> {
    let mut input = record;
    if read_tag(&mut input).ok()? != tag::LIST {
        return None;
    }
    match varint::read_u64(&mut input).ok()? {
        0 => input.is_empty().then_some(None),
        1 => {
            let (state, rest) = skip_value(input).ok()?;
            rest.is_empty().then_some(Some(state))
        }
        _ => None,
    }
}

#[inline]
pub(crate) fn read_str<'de>(input: &mut &'de [u8]) -> Result<&'de str, Error> {
    let len = varint::read_len(input)?;
    utf8(varint::take(input, len)?)
}

/// `bytes` as text, checked to be UTF-8. Text that is all ASCII (most keys and words)
/// is checked 16 bytes at a time, with 8-byte loads: the standard check goes a machine
/// word (4 bytes in a WASM guest) at a time.
#[inline]
fn utf8(bytes: &[u8]) -> Result<&str, Error> {
    if is_ascii(bytes) {
        // SAFETY: `is_ascii` found every byte below 0x80, and ASCII bytes are valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(not_utf8)
}

#[cold]
fn not_utf8(error: std::str::Utf8Error) -> Error {
    Error::new(format!("a string is not valid UTF-8: {error}"))
}

/// Whether every byte of `bytes` is below 0x80.
#[inline]
fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut blocks = bytes.chunks_exact(16);
    let mut high = 0;
    for block in &mut blocks {
        let (low, top) = block.split_at(8);
        high |= u64::from_le_bytes(low.try_into().expect("8 bytes"))
            | u64::from_le_bytes(top.try_into().expect("8 bytes"));
    }
    let [low, top] = super::short_bytes(blocks.remainder());
    (high | low | top) & HIGH_BITS == 0
}

/// A serde deserializer over the canonical encoding.
pub struct Decoder<'de> {
    input: &'de [u8],
    /// The input's strings are known to be valid UTF-8 (see [`from_encoded_bytes`]).
    utf8_checked: bool,
}

impl<'de> Decoder<'de> {
    /// A decoder reading values from the front of `input`.
    pub fn new(input: &'de [u8]) -> Self {
        Self {
            input,
            utf8_checked: false,
        }
    }

    /// A decoder of bytes [`from_encoded_bytes`] would read.
    pub(crate) fn encoded_here(input: &'de [u8]) -> Self {
        Self {
            input,
            utf8_checked: true,
        }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.input.is_empty()
    }

    fn read_str(&mut self) -> Result<&'de str, Error> {
        if !self.utf8_checked {
            return read_str(&mut self.input);
        }
        let len = varint::read_len(&mut self.input)?;
        let bytes = varint::take(&mut self.input, len)?;
        // SAFETY: `utf8_checked` is set only for bytes this crate's encoder wrote, which
        // writes a string's bytes only from a `&str` (see `from_encoded_bytes`).
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    fn peek_tag(&self) -> Result<u8, Error> {
        self.input
            .first()
            .copied()
            .ok_or_else(|| Error::new("record ends where a value should start"))
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match read_tag(&mut self.input)? {
            tag::NULL => visitor.visit_unit(),
            tag::BOOL => match varint::take(&mut self.input, 1)?[0] {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                other => Err(Error::new(format!("byte {other} is not a boolean"))),
            },
            tag::INT => visitor.visit_i64(varint::read_i64(&mut self.input)?),
            tag::FLOAT => {
                let bytes = varint::take(&mut self.input, 8)?;
                visitor.visit_f64(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
            }
            tag::STRING => visitor.visit_borrowed_str(self.read_str()?),
            tag::BYTES => {
                let len = varint::read_len(&mut self.input)?;
                visitor.visit_borrowed_bytes(varint::take(&mut self.input, len)?)
            }
            tag::LIST | tag::TUPLE => {
                let remaining = varint::read_len(&mut self.input)?;
                visitor.visit_seq(Elements {
                    decoder: self,
                    remaining,
                })
            }
            tag::MAP => {
                let remaining = varint::read_len(&mut self.input)?;
                visitor.visit_map(Entries {
                    decoder: self,
                    remaining,
                })
            }
            tag::STRUCT => {
                let remaining = varint::read_len(&mut self.input)?;
                visitor.visit_map(Fields {
                    decoder: self,
                    remaining,
                })
            }
            other => Err(unknown_tag(other)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek_tag()? == tag::NULL {
            self.input = &self.input[1..];
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match read_tag(&mut self.input)? {
            tag::STRING => visitor.visit_enum(self.read_str()?.into_deserializer()),
            tag::STRUCT if varint::read_u64(&mut self.input)? == 1 => visitor.visit_enum(self),
            _ => Err(Error::new(
                "an enum must be encoded as its variant name or a one-field struct",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        skip(&mut self.input)?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Elements<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    remaining: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(&mut *self.decoder).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

struct Entries<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    remaining: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(&mut *self.decoder).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.decoder)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

/// A struct's fields, whose names are bare strings rather than tagged values.
struct Fields<'a, 'de> {
    decoder: &'a mut Decoder<'de>,
    remaining: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let name = self.decoder.read_str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.decoder)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining)
    }
}

/// A one-field struct read as an enum: the field name is the variant, its value the content.
impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name = self.read_str()?;
        let variant = seed.deserialize(de::value::BorrowedStrDeserializer::<Error>::new(name))?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}
