//! Writing any `T: Serialize` as canonical record bytes.

use serde::ser::{self, Serialize};

use super::{CANONICAL_NAN, Error, tag, varint};

/// Appends the canonical encoding of `value` to `out`. On error `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let start = out.len();
    value.serialize(Encoder { out }).inspect_err(|_| {
        out.truncate(start);
    })
}

/// The canonical encoding of `value`.
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    encode_into(&mut out, value)?;
    Ok(out)
}

/// A serde serializer that appends one canonical value to a byte vector.
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// An encoder that appends to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Appends `bytes`, which must already be one canonical value (for example a record
    /// taken from a batch), without re-encoding it.
    pub fn raw(self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes the header of a tuple of `len` elements; the caller appends the elements.
    pub fn tuple_header(self, len: usize) {
        self.out.push(tag::TUPLE);
        varint::write_u64(self.out, len as u64);
    }

    /// Writes the header of a list of `len` elements; the caller appends the elements.
    pub fn list_header(self, len: usize) {
        self.out.push(tag::LIST);
        varint::write_u64(self.out, len as u64);
    }

    /// Writes the header of a struct of `len` fields; the caller appends each field as
    /// [`Self::field_name`] then its value.
    pub fn struct_header(self, len: usize) {
        self.out.push(tag::STRUCT);
        varint::write_u64(self.out, len as u64);
    }

    /// Writes the name of a struct's field (its value follows).
    pub fn field_name(self, name: &str) {
        Self::write_str(self.out, name);
    }

    /// Writes an `Int`.
    pub fn write_int(self, value: i64) {
        self.out.push(tag::INT);
        varint::write_i64(self.out, value);
    }

    /// Writes `Null`.
    pub fn write_null(self) {
        self.out.push(tag::NULL);
    }

    fn write_str(out: &mut Vec<u8>, text: &str) {
        varint::write_u64(out, text.len() as u64);
        super::extend_short(out, text.as_bytes());
    }

    /// Opens a one-field struct named after an enum variant, the form every non-unit
    /// variant takes (as `{"Variant": content}` does in JSON).
    fn open_variant(self, variant: &str) -> Self {
        self.out.extend_from_slice(&[tag::STRUCT, 1]);
        Self::write_str(self.out, variant);
        self
    }

    fn int(self, value: i64) -> Result<(), Error> {
        self.out.push(tag::INT);
        varint::write_i64(self.out, value);
        Ok(())
    }

    fn sequence(self, tag: u8, len: Option<usize>) -> SeqEncoder<'a> {
        let start = self.out.len();
        if let Some(len) = len {
            self.out.push(tag);
            varint::write_u64(self.out, len as u64);
        }
        SeqEncoder {
            out: self.out,
            tag,
            declared: len,
            start,
            count: 0,
        }
    }

    fn structure(self, len: usize) -> StructEncoder<'a> {
        self.out.push(tag::STRUCT);
        varint::write_u64(self.out, len as u64);
        StructEncoder {
            out: self.out,
            declared: len,
            count: 0,
        }
    }
}

fn out_of_range(what: impl std::fmt::Display) -> Error {
    Error::new(format!(
        "integer {what} does not fit the record model's 64-bit signed integers"
    ))
}

impl<'a> ser::Serializer for Encoder<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = SeqEncoder<'a>;
    type SerializeTuple = SeqEncoder<'a>;
    type SerializeTupleStruct = SeqEncoder<'a>;
    type SerializeTupleVariant = SeqEncoder<'a>;
    type SerializeMap = MapEncoder<'a>;
    type SerializeStruct = StructEncoder<'a>;
    type SerializeStructVariant = StructEncoder<'a>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, value: bool) -> Result<(), Error> {
        self.out.extend_from_slice(&[tag::BOOL, u8::from(value)]);
        Ok(())
    }

    fn serialize_i8(self, value: i8) -> Result<(), Error> {
        self.int(value.into())
    }

    fn serialize_i16(self, value: i16) -> Result<(), Error> {
        self.int(value.into())
    }

    fn serialize_i32(self, value: i32) -> Result<(), Error> {
        self.int(value.into())
    }

    fn serialize_i64(self, value: i64) -> Result<(), Error> {
        self.int(value)
    }

    fn serialize_i128(self, value: i128) -> Result<(), Error> {
        self.int(i64::try_from(value).map_err(|_| out_of_range(value))?)
    }

    fn serialize_u8(self, value: u8) -> Result<(), Error> {
        self.int(value.into())
    }

    fn serialize_u16(self, value: u16) -> Result<(), Error> {
        self.int(value.into())
    }

    fn serialize_u32(self, value: u32) -> Result<(), Error> {
        self.int(value.into())
    }

    fn serialize_u64(self, value: u64) -> Result<(), Error> {
        self.int(i64::try_from(value).map_err(|_| out_of_range(value))?)
    }

    fn serialize_u128(self, value: u128) -> Result<(), Error> {
        self.int(i64::try_from(value).map_err(|_| out_of_range(value))?)
    }

    fn serialize_f32(self, value: f32) -> Result<(), Error> {
        self.serialize_f64(value.into())
    }

    fn serialize_f64(self, value: f64) -> Result<(), Error> {
        let bits = if value.is_nan() {
            CANONICAL_NAN
        } else {
            value.to_bits()
        };
        self.out.push(tag::FLOAT);
        self.out.extend_from_slice(&bits.to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, value: char) -> Result<(), Error> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<(), Error> {
        let bytes = value.as_bytes();
        if bytes.len() > 16 {
            self.out.push(tag::STRING);
            Self::write_str(self.out, value);
            return Ok(());
        }
        // A word: its tag, one-byte length and bytes in one append of fixed width (one
        // check of the room left, and no `memory.copy` in a WASM guest).
        let [low, high] = super::short_bytes(bytes);
        let mut block = [0; 18];
        block[0] = tag::STRING;
        block[1] = bytes.len() as u8;
        block[2..10].copy_from_slice(&low.to_le_bytes());
        block[10..].copy_from_slice(&high.to_le_bytes());
        let end = self.out.len() + 2 + bytes.len();
        self.out.extend_from_slice(&block);
        self.out.truncate(end);
        Ok(())
    }

    fn serialize_bytes(self, value: &[u8]) -> Result<(), Error> {
        self.out.push(tag::BYTES);
        varint::write_u64(self.out, value.len() as u64);
        super::extend_short(self.out, value);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push(tag::NULL);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self.open_variant(variant))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqEncoder<'a>, Error> {
        Ok(self.sequence(tag::LIST, len))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqEncoder<'a>, Error> {
        Ok(self.sequence(tag::TUPLE, Some(len)))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqEncoder<'a>, Error> {
        Ok(self.sequence(tag::TUPLE, Some(len)))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqEncoder<'a>, Error> {
        Ok(self.open_variant(variant).sequence(tag::TUPLE, Some(len)))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapEncoder<'a>, Error> {
        let start = self.out.len();
        Ok(MapEncoder {
            out: self.out,
            start,
            entries: Vec::new(),
            pending_key: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<StructEncoder<'a>, Error> {
        Ok(self.structure(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructEncoder<'a>, Error> {
        Ok(self.open_variant(variant).structure(len))
    }
}

/// Writes the elements of a list or tuple. A list of unknown length gets its header
/// inserted in front of the elements once they are counted.
pub struct SeqEncoder<'a> {
    out: &'a mut Vec<u8>,
    tag: u8,
    declared: Option<usize>,
    start: usize,
    count: usize,
}

impl SeqEncoder<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.count += 1;
        value.serialize(Encoder { out: self.out })
    }

    fn finish(self) -> Result<(), Error> {
        match self.declared {
            Some(declared) if declared != self.count => Err(Error::new(format!(
                "a sequence declared {declared} elements but wrote {}",
                self.count
            ))),
            Some(_) => Ok(()),
            None => {
                let mut header = vec![self.tag];
                varint::write_u64(&mut header, self.count as u64);
                self.out.splice(self.start..self.start, header);
                Ok(())
            }
        }
    }
}

impl ser::SerializeSeq for SeqEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for SeqEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// Writes map entries, then sorts them by the bytes of their keys so that equal maps
/// encode equally whatever order they were built in.
pub struct MapEncoder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    /// (key start, value start, entry end), as offsets into `out`.
    entries: Vec<(usize, usize, usize)>,
    pending_key: Option<(usize, usize)>,
}

impl ser::SerializeMap for MapEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let key_start = self.out.len();
        key.serialize(Encoder { out: self.out })?;
        self.pending_key = Some((key_start, self.out.len()));
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let (key_start, value_start) = self
            .pending_key
            .take()
            .ok_or_else(|| Error::new("a map value was written before its key"))?;
        value.serialize(Encoder { out: self.out })?;
        self.entries.push((key_start, value_start, self.out.len()));
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        let body = self.out.split_off(self.start);
        let key = |&(key_start, value_start, _): &(usize, usize, usize)| {
            &body[key_start - self.start..value_start - self.start]
        };
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| key(a).cmp(key(b)));
        if entries
            .windows(2)
            .any(|pair| key(&pair[0]) == key(&pair[1]))
        {
            return Err(Error::new("a map has the same key twice"));
        }
        self.out.push(tag::MAP);
        varint::write_u64(self.out, entries.len() as u64);
        for (key_start, _, end) in entries {
            self.out
                .extend_from_slice(&body[key_start - self.start..end - self.start]);
        }
        Ok(())
    }
}

/// Writes struct fields as (name, value) pairs in declaration order.
pub struct StructEncoder<'a> {
    out: &'a mut Vec<u8>,
    declared: usize,
    count: usize,
}

impl StructEncoder<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        self.count += 1;
        Encoder::write_str(self.out, name);
        value.serialize(Encoder { out: self.out })
    }

    fn finish(self) -> Result<(), Error> {
        if self.count == self.declared {
            Ok(())
        } else {
            Err(Error::new(format!(
                "a struct declared {} fields but wrote {}",
                self.declared, self.count
            )))
        }
    }
}

impl ser::SerializeStruct for StructEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(name, value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for StructEncoder<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(name, value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{from_bytes, tag, write_len};

    #[test]
    fn strings_are_encoded_as_tag_length_and_bytes_at_every_length() {
        let text: String = (0..300)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        for len in 0..=text.len() {
            let mut out = vec![0xee];
            encode_into(&mut out, &text[..len]).unwrap();
            let mut expected = vec![0xee, tag::STRING];
            write_len(&mut expected, len);
            expected.extend_from_slice(&text.as_bytes()[..len]);
            assert_eq!(out, expected, "{len} bytes");
            assert_eq!(from_bytes::<&str>(&out[1..]).unwrap(), &text[..len]);
        }
    }
}
