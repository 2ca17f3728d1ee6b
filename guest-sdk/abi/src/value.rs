//! The self-describing value model every record is an instance of.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::encoding::{self, Error, tag};

/// One record, or part of one.
///
/// Its encoding (see [`encoding`](crate::encoding)) is exactly what bincode 2's standard
/// configuration writes for this enum, so the variant order is part of the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value: unit, `None`.
    Null,
    /// A boolean.
    Bool(bool),
    /// Every Rust integer type, as long as it fits 64 signed bits.
    Int(i64),
    /// `f32` and `f64`.
    Float(f64),
    /// UTF-8 text (and `char`).
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A sequence of any length (`Vec`, slices, sets).
    List(Vec<Value>),
    /// A fixed-size sequence (tuples, pairs, tuple structs).
    Tuple(Vec<Value>),
    /// Key-value entries, sorted by the encoding of their keys.
    Map(Vec<(Value, Value)>),
    /// Named fields in declaration order (structs; a non-unit enum variant is a one-field
    /// struct named after the variant).
    Struct(Vec<(String, Value)>),
}

impl Value {
    /// Decodes one value that must fill `bytes` exactly, keeping tuples, structs and maps
    /// apart (unlike decoding through serde, where they all look like sequences or maps).
    /// The bytes are first walked without recursion: a value nested deeper than
    /// [`MAX_DEPTH`](encoding::MAX_DEPTH) is an error, and nothing is built.
    pub fn decode(bytes: &[u8]) -> Result<Value, Error> {
        encoding::check_record(bytes)?;
        let mut input = bytes;
        let value = decode_value(&mut input)?;
        encoding::nothing_left_over(input)?;
        Ok(value)
    }

    /// Appends this value's canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let encoder = encoding::Encoder::new(out);
        match self {
            Value::Null => encoder.write_null(),
            Value::Int(value) => encoder.write_int(*value),
            Value::Bool(_) | Value::Float(_) | Value::String(_) | Value::Bytes(_) => {
                encoding::encode_into(out, self).expect("scalars always encode")
            }
            Value::List(items) => {
                encoder.list_header(items.len());
                items.iter().for_each(|item| item.encode_into(out));
            }
            Value::Tuple(items) => {
                encoder.tuple_header(items.len());
                items.iter().for_each(|item| item.encode_into(out));
            }
            Value::Map(entries) => {
                let mut encoded: Vec<(Vec<u8>, &Value)> = entries
                    .iter()
                    .map(|(key, value)| (key.to_bytes(), value))
                    .collect();
                encoded.sort_by(|a, b| a.0.cmp(&b.0));
                encoded.dedup_by(|later, earlier| later.0 == earlier.0);
                out.push(tag::MAP);
                encoding::write_len(out, encoded.len());
                for (key, value) in encoded {
                    out.extend_from_slice(&key);
                    value.encode_into(out);
                }
            }
            Value::Struct(fields) => {
                out.push(tag::STRUCT);
                encoding::write_len(out, fields.len());
                for (name, value) in fields {
                    encoding::write_len(out, name.len());
                    out.extend_from_slice(name.as_bytes());
                    value.encode_into(out);
                }
            }
        }
    }

    /// This value's canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// The value of the field `name`, if this is a struct (or a map with string keys) that has one.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value),
            Value::Map(entries) => entries
                .iter()
                .find(|(key, _)| matches!(key, Value::String(key) if key == name))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// Appends the compact JSON text of the value `record` encodes to `out`: the text
    /// `Value::decode(record)?.to_json()` gives, written in one walk over the encoding,
    /// without building the value (what a sink of JSON lines writes every record through).
    /// A record that is not exactly one well-formed value nested at most
    /// [`MAX_DEPTH`](encoding::MAX_DEPTH) levels is an error, with part of its text
    /// written.
    pub fn write_json_of(record: &[u8], out: &mut String) -> Result<(), Error> {
        let mut input = record;
        write_encoded_json(&mut input, 0, out)?;
        encoding::nothing_left_over(input)
    }

    /// Compact JSON text for this value (see the `Serialize` impl for the mapping).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }

    /// The text a record shows as in `print` output and text files: a string as itself,
    /// anything else as compact JSON.
    pub fn to_display_text(&self) -> String {
        match self {
            Value::String(text) => text.clone(),
            other => other.to_json(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

fn decode_value(input: &mut &[u8]) -> Result<Value, Error> {
    let (first, rest) = encoding::skip_value(input)?;
    *input = rest;
    let mut bytes = &first[1..];
    let items = |bytes: &mut &[u8]| -> Result<Vec<Value>, Error> {
        (0..encoding::read_len(bytes)?)
            .map(|_| decode_value(bytes))
            .collect()
    };
    Ok(match first[0] {
        tag::LIST => Value::List(items(&mut bytes)?),
        tag::TUPLE => Value::Tuple(items(&mut bytes)?),
        tag::MAP => Value::Map(
            (0..encoding::read_len(&mut bytes)?)
                .map(|_| Ok((decode_value(&mut bytes)?, decode_value(&mut bytes)?)))
                .collect::<Result<_, Error>>()?,
        ),
        tag::STRUCT => Value::Struct(
            (0..encoding::read_len(&mut bytes)?)
                .map(|_| {
                    let name = encoding::read_str(&mut bytes)?.to_owned();
                    Ok((name, decode_value(&mut bytes)?))
                })
                .collect::<Result<_, Error>>()?,
        ),
        _ => encoding::from_bytes(first)?,
    })
}

/// Writes JSON by hand rather than through serde_json so that guests need no JSON crate;
/// the `Serialize` impl below gives the same shape to any serde format.
/// [`write_encoded_json`] writes the same text straight from a value's encoding.
fn write_json(value: &Value, out: &mut String) {
    let written: Result<(), Infallible> = match value {
        Value::Null => {
            out.push_str("null");
            Ok(())
        }
        Value::Bool(value) => {
            write_json_bool(*value, out);
            Ok(())
        }
        Value::Int(value) => {
            write_json_int(*value, out);
            Ok(())
        }
        Value::Float(value) => {
            write_json_float(*value, out);
            Ok(())
        }
        Value::String(text) => {
            write_json_string(text, out);
            Ok(())
        }
        Value::Bytes(bytes) => {
            write_json_bytes(bytes, out);
            Ok(())
        }
        Value::List(items) | Value::Tuple(items) => {
            write_json_seq(JSON_LIST, items.len(), out, |i, out| {
                write_json(&items[i], out);
                Ok(())
            })
        }
        Value::Map(entries) if entries.iter().all(|(k, _)| matches!(k, Value::String(_))) => {
            write_json_seq(JSON_OBJECT, entries.len(), out, |i, out| {
                let (Value::String(key), value) = &entries[i] else {
                    unreachable!("checked above: every key is a string")
                };
                write_json_field(key, out);
                write_json(value, out);
                Ok(())
            })
        }
        Value::Map(entries) => write_json_seq(JSON_LIST, entries.len(), out, |i, out| {
            let (key, value) = &entries[i];
            write_json_seq(JSON_LIST, 2, out, |half, out| {
                write_json(if half == 0 { key } else { value }, out);
                Ok(())
            })
        }),
        Value::Struct(fields) => write_json_seq(JSON_OBJECT, fields.len(), out, |i, out| {
            let (name, value) = &fields[i];
            write_json_field(name, out);
            write_json(value, out);
            Ok(())
        }),
    };
    written.unwrap_or_else(|never| match never {})
}

/// Writes the JSON of the value at the start of `input` (inside `depth` containers) and
/// moves `input` past it: the text [`write_json`] writes for the decoded value, in one
/// walk over the encoding, which checks it as [`encoding::check_record`] does (known tags,
/// lengths inside the input, UTF-8 text, at most [`MAX_DEPTH`](encoding::MAX_DEPTH)
/// containers deep).
fn write_encoded_json(input: &mut &[u8], depth: usize, out: &mut String) -> Result<(), Error> {
    match encoding::read_tag(input)? {
        tag::NULL => out.push_str("null"),
        tag::BOOL => match encoding::take(input, 1)?[0] {
            0 => write_json_bool(false, out),
            1 => write_json_bool(true, out),
            other => return Err(Error::new(format!("byte {other} is not a boolean"))),
        },
        tag::INT => write_json_int(encoding::read_i64(input)?, out),
        tag::FLOAT => {
            let bytes = encoding::take(input, 8)?;
            write_json_float(f64::from_le_bytes(bytes.try_into().expect("8 bytes")), out)
        }
        tag::STRING => write_json_string(encoding::read_str(input)?, out),
        tag::BYTES => {
            let len = encoding::read_len(input)?;
            write_json_bytes(encoding::take(input, len)?, out)
        }
        container @ (tag::LIST | tag::TUPLE | tag::MAP | tag::STRUCT) => {
            if depth == encoding::MAX_DEPTH {
                return Err(encoding::too_deep());
            }
            let count = encoding::read_len(input)?;
            let depth = depth + 1;
            match container {
                tag::STRUCT => write_json_seq(JSON_OBJECT, count, out, |_, out| {
                    write_json_field(encoding::read_str(input)?, out);
                    write_encoded_json(input, depth, out)
                })?,
                tag::MAP => write_encoded_json_map(input, count, depth, out)?,
                _ => write_json_seq(JSON_LIST, count, out, |_, out| {
                    write_encoded_json(input, depth, out)
                })?,
            }
        }
        other => return Err(encoding::unknown_tag(other)),
    }
    Ok(())
}

/// [`write_encoded_json`] for the `count` entries of a map, its keys and values inside
/// `depth` containers: an object while every key is a string, else (written again from
/// the first entry) a list of `[key, value]` pairs.
fn write_encoded_json_map(
    input: &mut &[u8],
    count: usize,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    let (entries, written) = (*input, out.len());
    // `Err(None)`: a key that is not a string.
    let as_object = write_json_seq(JSON_OBJECT, count, out, |_, out| {
        if input.first() != Some(&tag::STRING) {
            return Err(None);
        }
        *input = &input[1..];
        write_json_field(encoding::read_str(input)?, out);
        Ok(write_encoded_json(input, depth, out)?)
    });
    match as_object {
        Ok(()) => Ok(()),
        Err(Some(error)) => Err(error),
        Err(None) => {
            *input = entries;
            out.truncate(written);
            write_json_seq(JSON_LIST, count, out, |_, out| {
                write_json_seq(JSON_LIST, 2, out, |_, out| {
                    write_encoded_json(input, depth, out)
                })
            })
        }
    }
}

/// The brackets of a JSON array and of an object.
const JSON_LIST: [char; 2] = ['[', ']'];
const JSON_OBJECT: [char; 2] = ['{', '}'];

/// Writes `count` comma-separated items, each by `item`, between `brackets`.
fn write_json_seq<E>(
    [open, close]: [char; 2],
    count: usize,
    out: &mut String,
    mut item: impl FnMut(usize, &mut String) -> Result<(), E>,
) -> Result<(), E> {
    out.push(open);
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        item(i, out)?;
    }
    out.push(close);
    Ok(())
}

/// Writes an object field's name and the colon before its value.
fn write_json_field(name: &str, out: &mut String) {
    write_json_string(name, out);
    out.push(':');
}

fn write_json_bool(value: bool, out: &mut String) {
    out.push_str(if value { "true" } else { "false" });
}

fn write_json_int(value: i64, out: &mut String) {
    use std::fmt::Write;
    write!(out, "{value}").expect("writing to a String");
}

/// A finite float in Rust's shortest round-trip form; NaN and the infinities, which JSON
/// has no numbers for, as `null`.
fn write_json_float(value: f64, out: &mut String) {
    use std::fmt::Write;
    if value.is_finite() {
        write!(out, "{value:?}").expect("writing to a String");
    } else {
        out.push_str("null");
    }
}

/// Bytes as a list of numbers.
fn write_json_bytes(bytes: &[u8], out: &mut String) {
    let written: Result<(), Infallible> = write_json_seq(JSON_LIST, bytes.len(), out, |i, out| {
        write_json_int(bytes[i].into(), out);
        Ok(())
    });
    written.unwrap_or_else(|never| match never {})
}

fn write_json_string(text: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                write!(out, "\\u{:04x}", u32::from(c)).expect("writing to a String")
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON-like view of a value: maps with string keys and structs become objects, other
/// maps lists of `[key, value]` pairs, tuples and bytes lists. Encoding a `Value` through
/// this impl therefore loses the struct/map distinction: use [`Value::encode_into`] for
/// exact encoding.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(value) => serializer.serialize_bool(*value),
            Value::Int(value) => serializer.serialize_i64(*value),
            Value::Float(value) => serializer.serialize_f64(*value),
            Value::String(text) => serializer.serialize_str(text),
            Value::Bytes(bytes) => serializer.serialize_bytes(bytes),
            Value::List(items) | Value::Tuple(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                items
                    .iter()
                    .try_for_each(|item| seq.serialize_element(item))?;
                seq.end()
            }
            Value::Map(entries) if entries.iter().all(|(k, _)| matches!(k, Value::String(_))) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                entries
                    .iter()
                    .try_for_each(|(key, value)| map.serialize_entry(key, value))?;
                map.end()
            }
            Value::Map(entries) => {
                let mut seq = serializer.serialize_seq(Some(entries.len()))?;
                entries
                    .iter()
                    .try_for_each(|entry| seq.serialize_element(&(&entry.0, &entry.1)))?;
                seq.end()
            }
            Value::Struct(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                fields
                    .iter()
                    .try_for_each(|(name, value)| map.serialize_entry(name, value))?;
                map.end()
            }
        }
    }
}

/// Reads any self-describing input (JSON, TOML, a record): sequences become lists and
/// maps become maps.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Int(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        i64::try_from(value)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {value} does not fit 64 signed bits")))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_bytes<E>(self, value: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(value.to_vec()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let _level = Nesting::enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let _level = Nesting::enter()?;
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

thread_local! {
    /// How many sequences and maps the values being deserialized on this thread are inside.
    static NESTING: Cell<usize> = const { Cell::new(0) };
}

/// One level of a value being deserialized from any serde format (JSON, TOML, records):
/// refused past [`MAX_DEPTH`](encoding::MAX_DEPTH), before the level is built, so that no
/// input of any format can build a value deeper than the limit, whose recursive code
/// (drop included) could then overflow the stack.
struct Nesting;

impl Nesting {
    fn enter<E: de::Error>() -> Result<Self, E> {
        NESTING.with(|depth| {
            if depth.get() >= encoding::MAX_DEPTH {
                return Err(E::custom(encoding::too_deep()));
            }
            depth.set(depth.get() + 1);
            Ok(Nesting)
        })
    }
}

impl Drop for Nesting {
    fn drop(&mut self) {
        NESTING.with(|depth| depth.set(depth.get() - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::MAX_DEPTH;

    /// `depth` lists inside one another around an integer, as bytes.
    fn nested_bytes(depth: usize) -> Vec<u8> {
        let mut bytes = [encoding::tag::LIST, 1].repeat(depth);
        bytes.extend_from_slice(&[encoding::tag::INT, 2]);
        bytes
    }

    /// Runs `check` on a thread with the 2 MiB stack tokio and rayon workers have.
    fn on_a_worker_stack(check: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(check)
            .unwrap()
            .join()
            .expect("the check passed without overflowing a 2 MiB stack");
    }

    #[test]
    fn a_value_at_the_limit_survives_everything_recursive_on_a_worker_stack() {
        on_a_worker_stack(|| {
            let bytes = nested_bytes(MAX_DEPTH);
            let value = Value::decode(&bytes).expect("the limit itself is accepted");
            let typed: Value = encoding::from_bytes(&bytes).expect("through serde too");
            let copy = value.clone();
            assert_eq!(copy, value);
            assert_eq!(typed, value);
            assert_eq!(value.to_bytes(), bytes, "re-encodes to the same bytes");
            let json = value.to_json();
            assert_eq!(json.len(), 2 * MAX_DEPTH + 1);
            assert_eq!(value.to_display_text(), json);
            assert!(format!("{value:?}").starts_with("List([List(["));
            assert_eq!(encoding::to_bytes(&value).unwrap(), bytes);
            drop(copy);
            drop(typed);
        });
    }

    #[test]
    fn one_level_past_the_limit_is_refused_before_a_value_is_built() {
        on_a_worker_stack(|| {
            for depth in [MAX_DEPTH + 1, 10_000, 1_000_000] {
                let bytes = nested_bytes(depth);
                let error = Value::decode(&bytes).unwrap_err();
                assert!(
                    error.to_string().contains("deeper than 1000 levels"),
                    "{error}"
                );
                let error = encoding::from_bytes::<Value>(&bytes).unwrap_err();
                assert!(
                    error.to_string().contains("deeper than 1000 levels"),
                    "{error}"
                );
                assert!(encoding::skip_value(&bytes).is_err());
                assert!(encoding::check_record(&bytes).is_err());
            }
        });
    }

    #[test]
    fn deserializing_from_any_format_stops_at_the_limit() {
        let json = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        on_a_worker_stack(move || {
            let too_deep = json(MAX_DEPTH + 1);
            let mut deserializer = serde_json::Deserializer::from_str(&too_deep);
            deserializer.disable_recursion_limit();
            let error = Value::deserialize(&mut deserializer).unwrap_err();
            assert!(
                error.to_string().contains("deeper than 1000 levels"),
                "{error}"
            );
            let at_limit = json(MAX_DEPTH);
            let mut deserializer = serde_json::Deserializer::from_str(&at_limit);
            deserializer.disable_recursion_limit();
            let value = Value::deserialize(&mut deserializer).unwrap();
            assert_eq!(value.to_json(), at_limit);
            assert_eq!(
                NESTING.with(Cell::get),
                0,
                "every level is left, on success and on error"
            );
        });
    }

    /// The next of a xorshift sequence.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Values of every kind, `depth` containers deep at most, from `seed`: the edges of
    /// numbers, text needing escapes and not ASCII, maps with and without string keys.
    fn random_value(seed: &mut u64, depth: usize) -> Value {
        const TEXTS: &[&str] = &[
            "",
            "word",
            "quote \" and \\ backslash",
            "lines\nand\r\ttabs",
            "\u{1}\u{1f}\u{7f}",
            "é",
            "日本語",
            "emoji 🦀",
            "/slash",
            "\u{2028}",
        ];
        const FLOATS: &[f64] = &[
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1,
            1e300,
            -1e-300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            123456789.125,
        ];
        const INTS: &[i64] = &[0, 1, -1, 63, 64, -65, 1 << 40, i64::MIN, i64::MAX];
        let kinds = if depth == 0 { 6 } else { 11 };
        let pick = next(seed);
        let count = (next(seed) % 4) as usize;
        let text = TEXTS[(pick >> 8) as usize % TEXTS.len()].to_owned();
        match pick % kinds {
            0 => Value::Null,
            1 => Value::Bool(pick & 256 != 0),
            2 => Value::Int(INTS[(pick >> 8) as usize % INTS.len()]),
            3 => Value::Float(FLOATS[(pick >> 8) as usize % FLOATS.len()]),
            4 => Value::String(text),
            5 => Value::Bytes((0..count).map(|i| (pick >> (8 * i)) as u8).collect()),
            6 => Value::List((0..count).map(|_| random_value(seed, depth - 1)).collect()),
            7 => Value::Tuple((0..count).map(|_| random_value(seed, depth - 1)).collect()),
            8 => Value::Map(
                (0..count)
                    .map(|_| {
                        let key = Value::String(format!("{text}{}", next(seed) % 5));
                        (key, random_value(seed, depth - 1))
                    })
                    .collect(),
            ),
            9 => Value::Map(
                (0..count)
                    .map(|_| (random_value(seed, 0), random_value(seed, depth - 1)))
                    .collect(),
            ),
            _ => Value::Struct(
                (0..count)
                    .map(|i| (format!("{text}{i}"), random_value(seed, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn json_written_from_the_encoding_is_the_decoded_values_json() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let bytes = random_value(&mut seed, 4).to_bytes();
            let decoded = Value::decode(&bytes).unwrap();
            let mut written = String::from("kept ");
            Value::write_json_of(&bytes, &mut written).unwrap();
            assert_eq!(
                written,
                format!("kept {}", decoded.to_json()),
                "{decoded:?}"
            );
        }
    }

    #[test]
    fn json_keeps_its_mapping() {
        let text = |value: Value| {
            let (mut written, bytes) = (String::new(), value.to_bytes());
            Value::write_json_of(&bytes, &mut written).unwrap();
            assert_eq!(written, Value::decode(&bytes).unwrap().to_json());
            written
        };
        let string = |text: &str| Value::String(text.to_owned());
        assert_eq!(
            text(Value::Struct(vec![
                ("a\"b".into(), string("x\\y\n\u{1}é")),
                (
                    "f".into(),
                    Value::Tuple(vec![Value::Float(1.0), Value::Float(f64::NAN)])
                ),
                (
                    "g".into(),
                    Value::List(vec![Value::Float(f64::NEG_INFINITY), Value::Null])
                ),
                ("h".into(), Value::Bytes(vec![0, 255])),
            ])),
            r#"{"a\"b":"x\\y\n\u0001é","f":[1.0,null],"g":[null,null],"h":[0,255]}"#
        );
        assert_eq!(
            text(Value::Map(vec![
                (string("k"), Value::Int(-3)),
                (string("j"), Value::Bool(true))
            ])),
            r#"{"j":true,"k":-3}"#,
            "string keys make an object, in the encoding's order"
        );
        assert_eq!(
            text(Value::Map(vec![
                (string("b"), Value::Int(1)),
                (Value::Int(2), string("c"))
            ])),
            r#"[[2,"c"],["b",1]]"#,
            "any other key makes a list of pairs, from the first entry"
        );
        assert_eq!(text(Value::Map(vec![])), "{}");
        assert_eq!(text(Value::Float(1e300)), "1e300");
    }

    #[test]
    fn json_is_refused_for_records_a_check_refuses() {
        let mut written = String::new();
        for bad in [
            &[][..],
            &[encoding::tag::INT, 1, 0],
            &[encoding::tag::BOOL, 2],
            &[encoding::tag::STRING, 2, b'a'],
            &[encoding::tag::STRING, 1, 0xff],
            &[encoding::tag::LIST, 2, encoding::tag::NULL],
            &[encoding::tag::MAP, 1, encoding::tag::STRING, 1, b'a'],
            &[42],
        ] {
            assert!(encoding::check_record(bad).is_err() || Value::decode(bad).is_err());
            assert!(Value::write_json_of(bad, &mut written).is_err(), "{bad:?}");
        }
        on_a_worker_stack(|| {
            let mut written = String::new();
            Value::write_json_of(&nested_bytes(MAX_DEPTH), &mut written).unwrap();
            let error = Value::write_json_of(&nested_bytes(MAX_DEPTH + 1), &mut written);
            assert!(error.unwrap_err().to_string().contains("deeper than 1000"));
        });
    }
}
