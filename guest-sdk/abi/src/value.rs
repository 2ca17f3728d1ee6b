//! The self-describing value model every record is an instance of.

use std::cell::Cell;
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
        if input.is_empty() {
            Ok(value)
        } else {
            Err(Error::new(format!(
                "{} bytes left over after the value",
                input.len()
            )))
        }
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
fn write_json(value: &Value, out: &mut String) {
    use std::fmt::Write;
    let list = |items: &[Value], out: &mut String| {
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json(item, out);
        }
        out.push(']');
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
        Value::Int(value) => write!(out, "{value}").expect("writing to a String"),
        Value::Float(value) if value.is_finite() => {
            write!(out, "{value:?}").expect("writing to a String")
        }
        Value::Float(_) => out.push_str("null"),
        Value::String(text) => write_json_string(text, out),
        Value::Bytes(bytes) => list(
            &bytes
                .iter()
                .map(|&b| Value::Int(b.into()))
                .collect::<Vec<_>>(),
            out,
        ),
        Value::List(items) | Value::Tuple(items) => list(items, out),
        Value::Map(entries) if entries.iter().all(|(k, _)| matches!(k, Value::String(_))) => {
            write_json_object(
                entries.iter().map(|(key, value)| match key {
                    Value::String(key) => (key.as_str(), value),
                    _ => unreachable!("checked above: every key is a string"),
                }),
                out,
            )
        }
        Value::Map(entries) => list(
            &entries
                .iter()
                .map(|(key, value)| Value::Tuple(vec![key.clone(), value.clone()]))
                .collect::<Vec<_>>(),
            out,
        ),
        Value::Struct(fields) => write_json_object(
            fields.iter().map(|(name, value)| (name.as_str(), value)),
            out,
        ),
    }
}

fn write_json_object<'v>(fields: impl Iterator<Item = (&'v str, &'v Value)>, out: &mut String) {
    out.push('{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(name, out);
        out.push(':');
        write_json(value, out);
    }
    out.push('}');
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
}
