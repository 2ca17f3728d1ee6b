//! Typed JSON: the one mapping between JSON text and record values, shared by `table`
//! sources (and initial state files), a `queue` source's `batches_file` and the
//! `json_typed` file format (docs/manifest.md, `JSON values`).
//!
//! Plain JSON covers most values: `null`, booleans, strings, integers (`1`) and floats
//! (`1.0`, `1e3`) are themselves, an array is a list and an object is a map with string
//! keys. An object whose only key starts with `$` is a tagged value, for what plain JSON
//! cannot tell apart:
//!
//! | JSON | value |
//! |---|---|
//! | `{"$tuple": [a, b]}` | the tuple `(a, b)` |
//! | `{"$bytes": "<base64>"}` | bytes (standard base64, padded) |
//! | `{"$map": [[k, v], ...]}` | a map with keys of any kind |
//! | `{"$struct": {"name": v, ...}}` | a struct, fields in order |
//! | `{"$float": "NaN"}` (`"inf"`, `"-inf"`) | a float JSON has no number for |
//!
//! [`to_json`] writes every value so that [`parse`] reads it back as the same value.
//! Nesting is bounded by the record depth limit ([`MAX_DEPTH`] lists, tuples, maps and
//! structs inside one another; a tag does not count as a level of its own), checked
//! before each level is built.

use std::fmt::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sluice_abi::Value;
use sluice_abi::encoding::MAX_DEPTH;

/// Reads one value from `text`, which must hold exactly one JSON value.
pub fn parse(text: &str) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Depth is bounded by the record depth limit below, not by serde_json's 128 levels.
    deserializer.disable_recursion_limit();
    let value = Typed { depth: 0 }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// `value` as compact typed JSON, which [`parse`] reads back as the same value.
pub fn to_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
        Value::Int(value) => write!(out, "{value}").expect("writing to a String"),
        // `{:?}` always writes a fraction or an exponent, so the number reads back as a float.
        Value::Float(value) if value.is_finite() => {
            write!(out, "{value:?}").expect("writing to a String")
        }
        Value::Float(value) => {
            let name = if value.is_nan() {
                "NaN"
            } else if *value > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            write!(out, r#"{{"$float":"{name}"}}"#).expect("writing to a String")
        }
        Value::String(text) => write_string(text, out),
        Value::Bytes(bytes) => {
            write!(out, r#"{{"$bytes":"{}"}}"#, BASE64.encode(bytes)).expect("writing to a String")
        }
        Value::List(items) => write_list(items, out),
        Value::Tuple(items) => {
            out.push_str(r#"{"$tuple":"#);
            write_list(items, out);
            out.push('}');
        }
        Value::Map(entries) if plain_object(entries) => {
            write_object(
                entries.iter().map(|(key, value)| match key {
                    Value::String(key) => (key.as_str(), value),
                    _ => unreachable!("plain_object: every key is a string"),
                }),
                out,
            );
        }
        Value::Map(entries) => {
            out.push_str(r#"{"$map":["#);
            for (index, (key, value)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push('[');
                write_value(key, out);
                out.push(',');
                write_value(value, out);
                out.push(']');
            }
            out.push_str("]}");
        }
        Value::Struct(fields) => {
            out.push_str(r#"{"$struct":"#);
            write_object(
                fields.iter().map(|(name, value)| (name.as_str(), value)),
                out,
            );
            out.push('}');
        }
    }
}

/// Whether a map can be written as a plain object: every key a string, and none that
/// could read as a tag.
fn plain_object(entries: &[(Value, Value)]) -> bool {
    entries
        .iter()
        .all(|(key, _)| matches!(key, Value::String(key) if !key.starts_with('$')))
}

fn write_list(items: &[Value], out: &mut String) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_value(item, out);
    }
    out.push(']');
}

fn write_object<'v>(fields: impl Iterator<Item = (&'v str, &'v Value)>, out: &mut String) {
    out.push('{');
    for (index, (name, value)) in fields.enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        write_value(value, out);
    }
    out.push('}');
}

fn write_string(text: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(text).expect("a string always serializes"));
}

/// Reads any value; `depth` is how many lists, tuples, maps and structs it is inside.
#[derive(Clone, Copy)]
struct Typed {
    depth: usize,
}

impl Typed {
    /// The reader of a value one level down, if the limit allows one more level.
    fn inner<E: de::Error>(self) -> Result<Typed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "the value is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Typed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Typed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Typed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
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

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Ok(Value::List(Items(self.inner()?).visit_seq(seq)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Value::Map(Vec::new()));
        };
        let first_value = match first.as_str() {
            "$tuple" => Value::Tuple(map.next_value_seed(Items(inner))?),
            "$map" => Value::Map(map.next_value_seed(Entries(inner))?),
            "$struct" => Value::Struct(map.next_value_seed(Fields(inner))?),
            "$bytes" => {
                let text: String = map.next_value()?;
                Value::Bytes(BASE64.decode(&text).map_err(|error| {
                    de::Error::custom(format!("`$bytes` is not base64: {error}"))
                })?)
            }
            "$float" => Value::Float(match map.next_value::<String>()?.as_str() {
                "NaN" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => {
                    return Err(de::Error::custom(format!(
                        "`$float` is \"{other}\"; it takes \"NaN\", \"inf\" or \"-inf\" (write other floats as numbers)"
                    )));
                }
            }),
            _ => {
                let value = map.next_value_seed(inner)?;
                let mut entries = vec![(Value::String(first), value)];
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((Value::String(key), map.next_value_seed(inner)?));
                }
                if let [(Value::String(key), _)] = entries.as_slice()
                    && key.starts_with('$')
                {
                    return Err(de::Error::custom(format!(
                        "unknown tag `{key}`: an object whose only key starts with `$` is one of $tuple, $bytes, $map, $struct, $float (write a map with such a key as {{\"$map\": [[\"{key}\", ...]]}})"
                    )));
                }
                return Ok(Value::Map(entries));
            }
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "`{first}` is a tag: its object has no other key"
            )));
        }
        Ok(first_value)
    }
}

/// The items of a list or a tuple, each one level down.
struct Items(Typed);

impl<'de> DeserializeSeed<'de> for Items {
    type Value = Vec<Value>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<Value>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self.0)? {
            items.push(item);
        }
        Ok(items)
    }
}

/// The entries of a `$map`: `[key, value]` arrays.
struct Entries(Typed);

impl<'de> DeserializeSeed<'de> for Entries {
    type Value = Vec<(Value, Value)>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<(Value, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [key, value] arrays")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element_seed(Items(self.0))? {
            let [key, value]: [Value; 2] = entry.try_into().map_err(|entry: Vec<Value>| {
                de::Error::custom(format!(
                    "a `$map` entry has {} elements, not 2 ([key, value])",
                    entry.len()
                ))
            })?;
            entries.push((key, value));
        }
        Ok(entries)
    }
}

/// The fields of a `$struct`: an object, fields in order.
struct Fields(Typed);

impl<'de> DeserializeSeed<'de> for Fields {
    type Value = Vec<(String, Value)>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            fields.push((name, map.next_value_seed(self.0)?));
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    fn read(text: &str) -> Value {
        parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn plain_json_and_tags_read_as_documented() {
        assert_eq!(read("null"), Value::Null);
        assert_eq!(read("1"), Value::Int(1));
        assert_eq!(read("1.0"), Value::Float(1.0));
        assert_eq!(
            read("[1, \"a\"]"),
            Value::List(vec![Value::Int(1), text("a")])
        );
        assert_eq!(
            read(r#"{"$tuple": ["k", [null]]}"#),
            Value::Tuple(vec![text("k"), Value::List(vec![Value::Null])])
        );
        assert_eq!(read(r#"{"$bytes": "AAH/"}"#), Value::Bytes(vec![0, 1, 255]));
        assert_eq!(
            read(r#"{"$map": [[1, "one"]]}"#),
            Value::Map(vec![(Value::Int(1), text("one"))])
        );
        assert_eq!(
            read(r#"{"$struct": {"b": 1, "a": 2}}"#),
            Value::Struct(vec![
                ("b".into(), Value::Int(1)),
                ("a".into(), Value::Int(2))
            ])
        );
        assert!(read(r#"{"$float": "NaN"}"#).to_bytes() == Value::Float(f64::NAN).to_bytes());
        assert_eq!(
            read(r#"{"a": 1, "$b": 2}"#),
            Value::Map(vec![
                (text("a"), Value::Int(1)),
                (text("$b"), Value::Int(2))
            ])
        );
    }

    #[test]
    fn a_tuple_key_from_json_meets_the_same_key_from_a_udf() {
        let from_json = read(r#"{"$tuple": ["a", 1]}"#).to_bytes();
        let from_udf = Value::Tuple(vec![text("a"), Value::Int(1)]).to_bytes();
        assert_eq!(from_json, from_udf);
        assert_ne!(read(r#"["a", 1]"#).to_bytes(), from_udf);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            (r#"{"$tupel": [1]}"#, "unknown tag `$tupel`"),
            (r#"{"$bytes": "not base64!"}"#, "not base64"),
            (r#"{"$tuple": [1], "x": 2}"#, "its object has no other key"),
            (r#"{"$map": [[1, 2, 3]]}"#, "3 elements, not 2"),
            (r#"{"$float": "1.5"}"#, "\"NaN\", \"inf\" or \"-inf\""),
            ("18446744073709551615", "does not fit 64 signed bits"),
            ("[1] [2]", "trailing characters"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn nesting_is_bounded_by_the_record_depth_limit_tags_included() {
        let lists = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let tuples =
            |depth: usize| format!("{}1{}", r#"{"$tuple":["#.repeat(depth), "]}".repeat(depth));
        for nested in [lists, tuples] {
            let at_limit = parse(&nested(MAX_DEPTH)).unwrap();
            assert!(Value::decode(&at_limit.to_bytes()).is_ok());
            let error = parse(&nested(MAX_DEPTH + 1)).unwrap_err().to_string();
            assert!(error.contains("deeper than 1000 levels"), "{error}");
        }
    }

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            any::<String>().prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Tuple),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..3)
                    .prop_map(Value::Map),
                proptest::collection::vec(("[$a-z]{0,3}", inner), 0..3).prop_map(Value::Struct),
            ]
        })
    }

    proptest! {
        /// What `to_json` writes reads back as the same value: the same canonical bytes
        /// (maps are compared as the engine sees them, sorted by key).
        #[test]
        fn every_value_reads_back_as_itself(value in values()) {
            let canonical = Value::decode(&value.to_bytes()).unwrap();
            let text = to_json(&canonical);
            let read = parse(&text).unwrap();
            prop_assert_eq!(read.to_bytes(), canonical.to_bytes(), "{}", text);
        }
    }
}
