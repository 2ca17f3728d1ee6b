//! Records passed from one step of a fused chain to the next.
//!
//! A step's result is usually a string or a number (a word, a count): those are handed
//! to the next step as they are, borrowed, never encoded and decoded again. Any other
//! result (a tuple, a struct) is encoded into the step's buffer, and the next step
//! decodes it, as a batch would carry it. Both read back as the same values: the scalar
//! path follows the canonical decoder's rules (an `Option` reads a value as `Some`, an
//! integer fits any integer type it is in range of).

use std::fmt;

use serde::de::{self, IntoDeserializer, Visitor};
use serde::ser::{self, Impossible, Serialize};

use crate::batch::Batch;
use crate::combine::{Downstream, Pending};
use crate::encoding::{self, Decoder, Encoder, Error};
use crate::function::Failure;
use crate::value::Value;

/// One record as a step of a fused chain receives it.
#[derive(Debug, Clone, Copy)]
pub enum Record<'r> {
    /// Canonical bytes.
    Encoded {
        /// The bytes.
        bytes: &'r [u8],
        /// Whether this crate's encoder wrote them in this process (an earlier step's
        /// result), so that their strings need no UTF-8 check; bytes from elsewhere (the
        /// host, a guest's input) are checked as they are decoded.
        encoded_here: bool,
    },
    /// A string an earlier step made.
    Str(&'r str),
    /// An integer an earlier step made.
    Int(i64),
    /// A pair an earlier step made: its first element (a key) encoded, and its second.
    Pair(&'r [u8], &'r Record<'r>),
}

impl<'r> Record<'r> {
    /// Bytes from outside: their strings are checked as they are decoded.
    pub fn outside(bytes: &'r [u8]) -> Self {
        Self::Encoded {
            bytes,
            encoded_here: false,
        }
    }

    /// The record as a value of `A`.
    ///
    /// Always inlined, with the decoder out of line: a handed-over string or integer (a
    /// word, a count) is then read in a few instructions where the step's adapter reads
    /// it, rather than through a call per record that also carries the decoder.
    #[inline(always)]
    pub fn decode<A: de::Deserialize<'r>>(self) -> Result<A, Error> {
        match self {
            Record::Encoded {
                bytes,
                encoded_here,
            } => decode_encoded(bytes, encoded_here),
            Record::Str(text) => A::deserialize(Handed(text)),
            Record::Int(int) => A::deserialize(Handed(int)),
            pair @ Record::Pair(..) => A::deserialize(Handed(pair)),
        }
    }

    /// Appends the record's canonical encoding to `out`.
    pub fn encode_into(self, out: &mut Vec<u8>) {
        match self {
            Record::Encoded { bytes, .. } => out.extend_from_slice(bytes),
            Record::Str(text) => encoding::encode_into(out, text).expect("a string encodes"),
            Record::Int(int) => Encoder::new(out).write_int(int),
            Record::Pair(key, value) => {
                Encoder::new(out).tuple_header(2);
                out.extend_from_slice(key);
                value.encode_into(out);
            }
        }
    }

    /// The record as JSON, for messages.
    pub fn to_json(self) -> String {
        match self {
            Record::Encoded { bytes, .. } => {
                Value::decode(bytes).map_or_else(|_| "undecodable bytes".into(), |v| v.to_json())
            }
            Record::Str(text) => Value::String(text.to_owned()).to_json(),
            Record::Int(int) => int.to_string(),
            pair @ Record::Pair(..) => {
                let mut bytes = Vec::new();
                pair.encode_into(&mut bytes);
                Record::outside(&bytes).to_json()
            }
        }
    }
}

/// [`Record::decode`] of canonical bytes.
#[inline(never)]
fn decode_encoded<'r, A: de::Deserialize<'r>>(
    bytes: &'r [u8],
    encoded_here: bool,
) -> Result<A, Error> {
    if encoded_here {
        encoding::from_encoded_bytes(bytes)
    } else {
        encoding::from_bytes(bytes)
    }
}

/// Where a step of a fused chain sends each record it makes: the chain's later steps and
/// its table of combiners, called directly (not through a closure), or a function of the
/// caller's.
pub struct Emit<'e>(To<'e>);

enum To<'e> {
    /// The rest of a combining chain: its pairs wait to be folded.
    Pairs(Downstream<'e, Pending>),
    /// The rest of a chain whose records are gathered into a batch.
    Records(Downstream<'e, Batch>),
    /// A function of the caller's.
    Each(&'e mut dyn FnMut(Record<'_>) -> Result<(), Failure>),
}

impl<'e> Emit<'e> {
    /// An emitter that calls `each` with every record.
    pub fn each(each: &'e mut dyn FnMut(Record<'_>) -> Result<(), Failure>) -> Self {
        Self(To::Each(each))
    }

    /// An emitter that runs every record through the rest of a combining chain.
    pub(crate) fn pairs(downstream: Downstream<'e, Pending>) -> Self {
        Self(To::Pairs(downstream))
    }

    /// An emitter that runs every record through the rest of a chain into a batch.
    pub(crate) fn records(downstream: Downstream<'e, Batch>) -> Self {
        Self(To::Records(downstream))
    }

    /// Sends `record` on. An error is the failure of whatever took the record (a later
    /// step's, which its emitter keeps; the caller passes it back as it is).
    #[inline]
    pub fn send(&mut self, record: Record<'_>) -> Result<(), Failure> {
        match &mut self.0 {
            To::Pairs(downstream) => downstream.send(record),
            To::Records(downstream) => downstream.send(record),
            To::Each(each) => each(record),
        }
    }
}

/// Sends `result`, made from input record `index`, to `emit`: a string or an integer as
/// it is, a pair as its encoded key and its value (an integer as it is), anything else
/// encoded into `out` first.
#[inline]
pub fn hand_over<B: Serialize + ?Sized>(
    index: usize,
    result: &B,
    out: &mut Vec<u8>,
    emit: &mut Emit<'_>,
) -> Result<(), Failure> {
    let mut later = None;
    match result.serialize(Probe {
        emit: &mut *emit,
        later: &mut later,
        out: &mut *out,
    }) {
        Ok(()) => Ok(()),
        Err(Refusal::Later) => Err(later.expect("a later step's failure is kept")),
        Err(Refusal::Encode) => {
            out.clear();
            encoding::encode_into(out, result)
                .map_err(|error| Failure::unencodable(index, error))?;
            emit.send(Record::Encoded {
                bytes: out,
                encoded_here: true,
            })
        }
    }
}

/// What [`keep`] kept of a function's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// An integer, as it is.
    Int(i64),
    /// Anything else, encoded into the buffer `keep` was given.
    Encoded,
}

/// Keeps `result`, made from input record `index` (a reduce's or fold's new combiner):
/// an integer as it is, without encoding it, anything else encoded into `out`.
#[inline]
pub fn keep<B: Serialize + ?Sized>(
    index: usize,
    result: &B,
    out: &mut Vec<u8>,
) -> Result<Made, Failure> {
    if let Ok(int) = result.serialize(IntProbe) {
        return Ok(Made::Int(int));
    }
    out.clear();
    encoding::encode_into(out, result).map_err(|error| Failure::unencodable(index, error))?;
    Ok(Made::Encoded)
}

/// Why a probe did not take a result.
#[derive(Debug)]
enum Refusal {
    /// The result is not of a form the probe takes: it is encoded instead.
    Encode,
    /// A later step failed (its failure is in [`Probe::later`]).
    Later,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not handed over")
    }
}

impl std::error::Error for Refusal {}

impl ser::Error for Refusal {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Refusal::Encode
    }
}

/// A probe's serializer methods for every integer type: each calls the probe's `int`,
/// which refuses a value out of `i64`'s range (the encoder then names the error).
macro_rules! take_integers {
    ($ok:ty) => {
        fn serialize_i8(self, value: i8) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_i16(self, value: i16) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_i32(self, value: i32) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_i64(self, value: i64) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_i128(self, value: i128) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_u8(self, value: u8) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_u16(self, value: u16) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_u32(self, value: u32) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_u64(self, value: u64) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_u128(self, value: u128) -> Result<$ok, Refusal> {
            self.int(value)
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<$ok, Refusal> {
            value.serialize(self)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            value: &T,
        ) -> Result<$ok, Refusal> {
            value.serialize(self)
        }
    };
}

/// A probe's serializer methods for the forms no probe takes: each refuses before
/// writing anything, and the value is encoded instead.
macro_rules! refuse_the_rest {
    ($ok:ty) => {
        fn serialize_bool(self, _: bool) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_f32(self, _: f32) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_f64(self, _: f64) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_char(self, _: char) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_none(self) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_unit(self) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<$ok, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Impossible<$ok, Refusal>, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<$ok, Refusal>, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<$ok, Refusal>, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Impossible<$ok, Refusal>, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<$ok, Refusal>, Refusal> {
            Err(Refusal::Encode)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<$ok, Refusal>, Refusal> {
            Err(Refusal::Encode)
        }
        fn is_human_readable(&self) -> bool {
            false
        }
    };
}

/// A serializer that takes an integer, of any integer type in `i64`'s range and inside
/// any `Some` or newtype (as the encoder writes it: an `Int`), and refuses anything else.
struct IntProbe;

impl IntProbe {
    #[inline]
    fn int(self, value: impl TryInto<i64>) -> Result<i64, Refusal> {
        value.try_into().map_err(|_| Refusal::Encode)
    }
}

impl ser::Serializer for IntProbe {
    type Ok = i64;
    type Error = Refusal;
    type SerializeSeq = Impossible<i64, Refusal>;
    type SerializeTuple = Impossible<i64, Refusal>;
    type SerializeTupleStruct = Impossible<i64, Refusal>;
    type SerializeTupleVariant = Impossible<i64, Refusal>;
    type SerializeMap = Impossible<i64, Refusal>;
    type SerializeStruct = Impossible<i64, Refusal>;
    type SerializeStructVariant = Impossible<i64, Refusal>;

    take_integers!(i64);

    fn serialize_str(self, _: &str) -> Result<i64, Refusal> {
        Err(Refusal::Encode)
    }
    fn serialize_tuple(self, _: usize) -> Result<Impossible<i64, Refusal>, Refusal> {
        Err(Refusal::Encode)
    }

    refuse_the_rest!(i64);
}

/// A serializer that hands a string or an integer straight to the next step, and a pair
/// as its encoded first element and its second (an integer as it is), and refuses
/// anything else before writing it.
struct Probe<'p, 'e> {
    emit: &'p mut Emit<'e>,
    later: &'p mut Option<Failure>,
    /// Where a pair's elements are encoded.
    out: &'p mut Vec<u8>,
}

impl Probe<'_, '_> {
    #[inline]
    fn send(self, record: Record<'_>) -> Result<(), Refusal> {
        send(self.emit, self.later, record)
    }

    #[inline]
    fn int(self, value: impl TryInto<i64>) -> Result<(), Refusal> {
        let int = IntProbe.int(value)?;
        self.send(Record::Int(int))
    }
}

#[inline]
fn send(
    emit: &mut Emit<'_>,
    later: &mut Option<Failure>,
    record: Record<'_>,
) -> Result<(), Refusal> {
    emit.send(record).map_err(|failure| {
        *later = Some(failure);
        Refusal::Later
    })
}

/// A pair's elements as [`Probe`] takes them: the first encoded into its buffer, the
/// second kept as it is if it is an integer, else encoded after the first.
struct PairProbe<'p, 'e> {
    probe: Probe<'p, 'e>,
    /// How many elements have been given.
    elements: usize,
    /// Where the first element ends in the buffer.
    key_end: usize,
    /// The second element, if it is an integer.
    int: Option<i64>,
}

impl ser::SerializeTuple for PairProbe<'_, '_> {
    type Ok = ();
    type Error = Refusal;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, element: &T) -> Result<(), Refusal> {
        let out = &mut *self.probe.out;
        // An element that cannot be encoded, or more than two: the whole pair is encoded
        // again, which names the error.
        match self.elements {
            0 => {
                encoding::encode_into(out, element).map_err(|_| Refusal::Encode)?;
                self.key_end = out.len();
            }
            1 => match element.serialize(IntProbe) {
                Ok(int) => self.int = Some(int),
                Err(_) => encoding::encode_into(out, element).map_err(|_| Refusal::Encode)?,
            },
            _ => return Err(Refusal::Encode),
        }
        self.elements += 1;
        Ok(())
    }

    #[inline]
    fn end(self) -> Result<(), Refusal> {
        if self.elements != 2 {
            return Err(Refusal::Encode);
        }
        let Probe { emit, later, out } = self.probe;
        let (key, value) = out.split_at(self.key_end);
        let value = match self.int {
            Some(int) => Record::Int(int),
            None => Record::Encoded {
                bytes: value,
                encoded_here: true,
            },
        };
        send(emit, later, Record::Pair(key, &value))
    }
}

impl<'p, 'e> ser::Serializer for Probe<'p, 'e> {
    type Ok = ();
    type Error = Refusal;
    type SerializeSeq = Impossible<(), Refusal>;
    type SerializeTuple = PairProbe<'p, 'e>;
    type SerializeTupleStruct = Impossible<(), Refusal>;
    type SerializeTupleVariant = Impossible<(), Refusal>;
    type SerializeMap = Impossible<(), Refusal>;
    type SerializeStruct = Impossible<(), Refusal>;
    type SerializeStructVariant = Impossible<(), Refusal>;

    take_integers!(());

    #[inline]
    fn serialize_str(self, value: &str) -> Result<(), Refusal> {
        self.send(Record::Str(value))
    }
    fn serialize_tuple(self, len: usize) -> Result<PairProbe<'p, 'e>, Refusal> {
        if len != 2 {
            return Err(Refusal::Encode);
        }
        self.out.clear();
        Ok(PairProbe {
            probe: self,
            elements: 0,
            key_end: 0,
            int: None,
        })
    }

    refuse_the_rest!(());
}

/// A string, integer or pair handed over, read as the canonical decoder reads its
/// encoding. A record known to be a string or an integer is read through its own
/// [`Handing`], so that reading a word or a count is not a match over every form.
struct Handed<H>(H);

/// What is handed over, as [`Handed`] reads it.
trait Handing<'de>: Copy {
    /// Gives the value to `visitor` (serde's `deserialize_any`).
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error>;

    /// Gives the value to `visitor` as an enum: only a string is one (a unit variant).
    fn visit_enum<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let _ = visitor;
        Err(Error::new(
            "an enum must be encoded as its variant name or a one-field struct",
        ))
    }
}

impl<'de> Handing<'de> for &'de str {
    #[inline]
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self)
    }

    fn visit_enum<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_enum(self.into_deserializer())
    }
}

impl<'de> Handing<'de> for i64 {
    #[inline]
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(self)
    }
}

impl<'de> Handing<'de> for Record<'de> {
    #[inline]
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Record::Str(text) => text.visit(visitor),
            Record::Int(int) => int.visit(visitor),
            Record::Pair(key, value) => visit_pair(key, *value, visitor),
            Record::Encoded { .. } => unreachable!("encoded records are read by the decoder"),
        }
    }

    fn visit_enum<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Record::Str(text) => text.visit_enum(visitor),
            _ => Err(Error::new(
                "an enum must be encoded as its variant name or a one-field struct",
            )),
        }
    }
}

impl<'de, H: Handing<'de>> de::Deserializer<'de> for Handed<H> {
    type Error = Error;

    #[inline]
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.visit(visitor)
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
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
        self.0.visit_enum(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
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

/// A pair handed over, read as a sequence of its two elements. Out of line, so that a
/// step's reading of a handed-over string or integer stays small enough to be inlined.
#[inline(never)]
fn visit_pair<'de, V: Visitor<'de>>(
    key: &'de [u8],
    value: Record<'de>,
    visitor: V,
) -> Result<V::Value, Error> {
    let mut elements = PairElements {
        key: Some(key),
        value: Some(value),
    };
    let pair = visitor.visit_seq(&mut elements)?;
    if elements.value.is_some() {
        return Err(Error::new("1 element left over in a pair"));
    }
    Ok(pair)
}

/// The two elements of a pair handed over.
struct PairElements<'r> {
    key: Option<&'r [u8]>,
    value: Option<Record<'r>>,
}

impl<'de> de::SeqAccess<'de> for &mut PairElements<'de> {
    type Error = Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if let Some(key) = self.key.take() {
            return decode_element(seed, key, true).map(Some);
        }
        match self.value.take() {
            None => Ok(None),
            Some(Record::Encoded {
                bytes,
                encoded_here,
            }) => decode_element(seed, bytes, encoded_here).map(Some),
            Some(handed) => seed.deserialize(Handed(handed)).map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.key.is_some()) + usize::from(self.value.is_some()))
    }
}

fn decode_element<'de, T: de::DeserializeSeed<'de>>(
    seed: T,
    bytes: &'de [u8],
    encoded_here: bool,
) -> Result<T::Value, Error> {
    let mut decoder = if encoded_here {
        Decoder::encoded_here(bytes)
    } else {
        Decoder::new(bytes)
    };
    let value = seed.deserialize(&mut decoder)?;
    if decoder.is_done() {
        Ok(value)
    } else {
        Err(Error::new("bytes left over after a pair's element"))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// What `value` reads back as through the step-to-step handoff, and through its
    /// encoding.
    fn both_ways<B: Serialize, A: for<'a> de::Deserialize<'a> + PartialEq + fmt::Debug>(
        value: B,
    ) -> (Result<A, String>, Result<A, String>) {
        let mut out = Vec::new();
        let mut handed = None;
        let mut take = |record: Record<'_>| {
            handed = Some(record.decode::<A>().map_err(|error| error.to_string()));
            Ok(())
        };
        hand_over(0, &value, &mut out, &mut Emit::each(&mut take)).unwrap();
        let encoded = encoding::to_bytes(&value).unwrap();
        let decoded = encoding::from_bytes::<A>(&encoded).map_err(|error| error.to_string());
        (handed.unwrap(), decoded)
    }

    #[test]
    fn handed_over_results_read_back_as_their_encoding_does() {
        let (handed, decoded) = both_ways::<_, String>(Cow::Borrowed("word"));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, Option<String>>("word");
        assert_eq!(handed, Ok(Some("word".into())));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, u8>(300u32);
        assert!(handed.is_err() && decoded.is_err(), "{handed:?}");
        let (handed, decoded) = both_ways::<_, i64>(Some(7u64));
        assert_eq!((handed, decoded), (Ok(7), Ok(7)));
        let (handed, decoded) = both_ways::<_, (String, i64)>(("pair", 1));
        assert_eq!(handed, Ok(("pair".into(), 1)));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, Option<Vec<Value>>>((("k", 2), "v"));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, Value>(("k", 0.5));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, (String, i64, i64)>(("three", 1, 2));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, (String,)>(("pair", 1));
        assert!(handed.is_err() && decoded.is_err(), "{handed:?}");
        let (handed, decoded) = both_ways::<_, Value>(-3i16);
        assert_eq!((handed, decoded), (Ok(Value::Int(-3)), Ok(Value::Int(-3))));

        #[derive(Debug, PartialEq, serde::Deserialize)]
        enum Weather {
            Rain,
            Sun,
        }
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Count(i64);
        let (handed, decoded) = both_ways::<_, Weather>("Sun");
        assert_eq!(handed, Ok(Weather::Sun));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, Weather>("Snow");
        assert!(handed.is_err() && decoded.is_err(), "{handed:?}");
        let (handed, decoded) = both_ways::<_, Weather>(1);
        assert!(handed.is_err() && decoded.is_err(), "{handed:?}");
        let (handed, decoded) = both_ways::<_, Option<Count>>(4);
        assert_eq!(handed, Ok(Some(Count(4))));
        assert_eq!(handed, decoded);
        let (handed, decoded) = both_ways::<_, i64>("4");
        assert!(handed.is_err() && decoded.is_err(), "{handed:?}");
        let (handed, decoded) = both_ways::<_, String>(4);
        assert!(handed.is_err() && decoded.is_err(), "{handed:?}");
    }

    #[test]
    fn a_string_or_integer_is_handed_over_without_encoding() {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for value in [Value::String("w".into()), Value::Int(5), Value::Float(0.5)] {
            let mut take = |record: Record<'_>| {
                seen.push(format!("{record:?}"));
                Ok(())
            };
            hand_over(0, &value, &mut out, &mut Emit::each(&mut take)).unwrap();
        }
        assert_eq!(seen[0], "Str(\"w\")");
        assert_eq!(seen[1], "Int(5)");
        assert!(seen[2].starts_with("Encoded"), "{}", seen[2]);
    }

    #[test]
    fn a_pair_s_integer_value_and_a_kept_integer_are_not_encoded() {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for value in [Value::Int(-300), Value::Float(0.5)] {
            let mut take = |record: Record<'_>| {
                let Record::Pair(key, value) = record else {
                    panic!("{record:?} is not a pair");
                };
                assert_eq!(key, encoding::to_bytes("key").unwrap());
                seen.push(format!("{value:?}"));
                Ok(())
            };
            hand_over(0, &("key", &value), &mut out, &mut Emit::each(&mut take)).unwrap();
        }
        assert_eq!(seen[0], "Int(-300)");
        assert!(seen[1].starts_with("Encoded"), "{}", seen[1]);

        assert_eq!(keep(0, &Some(7u8), &mut out), Ok(Made::Int(7)));
        assert_eq!(keep(0, &(1, 2), &mut out), Ok(Made::Encoded));
        assert_eq!(out, encoding::to_bytes(&(1, 2)).unwrap());
        let error = encoding::to_bytes(&u64::MAX).unwrap_err();
        assert_eq!(
            keep(5, &u64::MAX, &mut out),
            Err(Failure::unencodable(5, error)),
            "an integer out of range fails as its encoding does"
        );
    }

    #[test]
    fn a_pair_that_cannot_be_encoded_fails_as_its_encoding_does() {
        let mut take = |_: Record<'_>| Ok(());
        let failure = hand_over(
            4,
            &("key", u64::MAX),
            &mut Vec::new(),
            &mut Emit::each(&mut take),
        )
        .unwrap_err();
        let error = encoding::to_bytes(&("key", u64::MAX)).unwrap_err();
        assert_eq!(failure, Failure::unencodable(4, error));
    }

    #[test]
    fn a_later_step_s_failure_comes_back_as_it_was() {
        let mut fail = |_: Record<'_>| Err(Failure::at(3, "later".into()));
        let failure =
            hand_over(3, "word", &mut Vec::new(), &mut Emit::each(&mut fail)).unwrap_err();
        assert_eq!(failure, Failure::at(3, "later".into()));
    }
}
