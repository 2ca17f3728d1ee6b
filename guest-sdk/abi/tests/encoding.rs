//! The record encoding is bincode 2's encoding of `Value`, is canonical, and round-trips.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sluice_abi::Value;
use sluice_abi::encoding::{
    Encoder, field_value, from_bytes, int_value, pair_parts, skip_value, to_bytes,
};

/// `Value` as bincode sees it: the same variants in the same order.
#[derive(bincode::Encode)]
enum BincodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
    List(Vec<BincodeValue>),
    Tuple(Vec<BincodeValue>),
    Map(Vec<(BincodeValue, BincodeValue)>),
    Struct(Vec<(String, BincodeValue)>),
}

impl From<&Value> for BincodeValue {
    fn from(value: &Value) -> Self {
        let all = |items: &[Value]| items.iter().map(BincodeValue::from).collect();
        match value {
            Value::Null => BincodeValue::Null,
            Value::Bool(v) => BincodeValue::Bool(*v),
            Value::Int(v) => BincodeValue::Int(*v),
            Value::Float(v) => BincodeValue::Float(*v),
            Value::String(v) => BincodeValue::String(v.clone()),
            Value::Bytes(v) => BincodeValue::Bytes(v.clone()),
            Value::List(v) => BincodeValue::List(all(v)),
            Value::Tuple(v) => BincodeValue::Tuple(all(v)),
            Value::Map(v) => {
                BincodeValue::Map(v.iter().map(|(k, v)| (k.into(), v.into())).collect())
            }
            Value::Struct(v) => {
                BincodeValue::Struct(v.iter().map(|(k, v)| (k.clone(), v.into())).collect())
            }
        }
    }
}

fn bincode_bytes(value: &Value) -> Vec<u8> {
    bincode::encode_to_vec(BincodeValue::from(value), bincode::config::standard()).unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Transaction {
    id: u32,
    account: String,
    amount: f64,
    note: Option<String>,
    tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Tick,
    Moved(i32),
    Pair(u8, String),
    Named { x: i64, y: i64 },
}

/// Checks, for one Rust value: serde encoding == Value encoding == bincode's encoding of
/// the Value, decoding gives the Rust value back, and `skip_value` finds its end.
fn check<T>(rust: T, expected: Value)
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let bytes = to_bytes(&rust).unwrap();
    assert_eq!(
        bytes,
        expected.to_bytes(),
        "serde vs Value encoding of {rust:?}"
    );
    assert_eq!(
        bytes,
        bincode_bytes(&expected),
        "Value vs bincode encoding of {rust:?}"
    );
    assert_eq!(from_bytes::<T>(&bytes).unwrap(), rust);
    assert_eq!(Value::decode(&bytes).unwrap(), expected);
    let mut followed = bytes.clone();
    followed.push(0xff);
    assert_eq!(
        skip_value(&followed).unwrap(),
        (bytes.as_slice(), &[0xffu8][..])
    );
}

fn s(text: &str) -> Value {
    Value::String(text.into())
}

#[test]
fn scalars_match_bincode() {
    check((), Value::Null);
    check(true, Value::Bool(true));
    for n in [0i64, -1, 250, 251, 65_536, -70_000, i64::MAX, i64::MIN] {
        check(n, Value::Int(n));
    }
    check(7u8, Value::Int(7));
    check(-2.5f64, Value::Float(-2.5));
    check("wörd".to_string(), s("wörd"));
    check('x', s("x"));
    check(None::<i64>, Value::Null);
    check(Some(3i64), Value::Int(3));
}

#[test]
fn containers_match_bincode() {
    check(
        vec![1i64, 2, 3],
        Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
    );
    check(
        ("a".to_string(), 1i64),
        Value::Tuple(vec![s("a"), Value::Int(1)]),
    );
    check(
        Transaction {
            id: 7,
            account: "acc".into(),
            amount: 12.5,
            note: None,
            tags: vec!["x".into()],
        },
        Value::Struct(vec![
            ("id".into(), Value::Int(7)),
            ("account".into(), s("acc")),
            ("amount".into(), Value::Float(12.5)),
            ("note".into(), Value::Null),
            ("tags".into(), Value::List(vec![s("x")])),
        ]),
    );
    let map: BTreeMap<String, i64> = [("b".to_string(), 2), ("a".to_string(), 1)].into();
    check(
        map,
        Value::Map(vec![(s("a"), Value::Int(1)), (s("b"), Value::Int(2))]),
    );
}

#[test]
fn enums_are_names_or_one_field_structs() {
    check(Event::Tick, s("Tick"));
    check(
        Event::Moved(-4),
        Value::Struct(vec![("Moved".into(), Value::Int(-4))]),
    );
    check(
        Event::Pair(1, "p".into()),
        Value::Struct(vec![(
            "Pair".into(),
            Value::Tuple(vec![Value::Int(1), s("p")]),
        )]),
    );
    check(
        Event::Named { x: 1, y: 2 },
        Value::Struct(vec![(
            "Named".into(),
            Value::Struct(vec![
                ("x".into(), Value::Int(1)),
                ("y".into(), Value::Int(2)),
            ]),
        )]),
    );
}

#[test]
fn equal_values_give_equal_bytes_whatever_their_build_order() {
    let forward: HashMap<String, i64> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    let backward: HashMap<String, i64> = (0..50).rev().map(|i| (format!("k{i}"), i)).collect();
    assert_eq!(to_bytes(&forward).unwrap(), to_bytes(&backward).unwrap());
    assert_eq!(to_bytes(&f64::NAN).unwrap(), to_bytes(&-f64::NAN).unwrap());
    assert_eq!(to_bytes(&5u16).unwrap(), to_bytes(&5i64).unwrap());
}

#[test]
fn pairs_are_split_without_decoding() {
    let pair = to_bytes(&("key", vec![1i64, 2])).unwrap();
    let (key, value) = pair_parts(&pair).unwrap();
    assert_eq!(
        (
            from_bytes::<&str>(key).unwrap(),
            from_bytes::<Vec<i64>>(value).unwrap()
        ),
        ("key", vec![1, 2])
    );
    assert!(
        pair_parts(&to_bytes(&vec!["a", "b"]).unwrap()).is_some(),
        "a 2-element list is a pair"
    );
    assert!(pair_parts(&to_bytes(&("a", 1i64, 2i64)).unwrap()).is_none());
    assert!(pair_parts(&to_bytes("ab").unwrap()).is_none());
    assert!(
        pair_parts(&pair[..pair.len() - 1]).is_none(),
        "a truncated pair is not one"
    );
}

#[test]
fn fields_are_found_without_decoding() {
    let record = Value::Struct(vec![("k".into(), s("a")), ("t".into(), Value::Int(-7))]);
    let bytes = record.to_bytes();
    assert_eq!(
        field_value(&bytes, "t"),
        Some(&Value::Int(-7).to_bytes()[..])
    );
    assert_eq!(field_value(&bytes, "k"), Some(&s("a").to_bytes()[..]));
    assert_eq!(field_value(&bytes, "v"), None);
    // A struct a UDF returned arrives as a map with string keys.
    let map = Value::Map(vec![(s("t"), Value::Int(3)), (Value::Int(1), s("t"))]);
    assert_eq!(
        field_value(&map.to_bytes(), "t"),
        Some(&Value::Int(3).to_bytes()[..])
    );
    assert_eq!(field_value(&Value::Int(1).to_bytes(), "t"), None);
    assert_eq!(field_value(&bytes[..bytes.len() - 1], "t"), None);
    // A struct written field by field is the struct's encoding.
    let mut written = Vec::new();
    Encoder::new(&mut written).struct_header(2);
    for (name, value) in [("k", s("a")), ("t", Value::Int(-7))] {
        Encoder::new(&mut written).field_name(name);
        value.encode_into(&mut written);
    }
    assert_eq!(written, bytes);
}

#[test]
fn integers_are_read_without_a_decoder() {
    for int in [0, -7, 250, 251, -70_000, i64::MAX, i64::MIN] {
        assert_eq!(int_value(&Value::Int(int).to_bytes()), Some(int));
    }
    let seven = Value::Int(7).to_bytes();
    assert_eq!(int_value(&seven[..seven.len() - 1]), None);
    assert_eq!(int_value(&[seven.as_slice(), &[0]].concat()), None);
    assert_eq!(int_value(&Value::Float(7.0).to_bytes()), None);
    assert_eq!(int_value(&s("7").to_bytes()), None);
    assert_eq!(int_value(&[]), None);
    let wide = Value::Int(1 << 40).to_bytes();
    assert_eq!(int_value(&wide[..wide.len() - 1]), None);
}

#[test]
fn strings_are_borrowed_from_the_record() {
    let bytes = to_bytes(&("key", "value")).unwrap();
    let (key, value): (&str, &str) = from_bytes(&bytes).unwrap();
    assert_eq!((key, value), ("key", "value"));
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let bytes = to_bytes(&vec!["alpha".to_string(), "beta".to_string()]).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            from_bytes::<Vec<String>>(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
        assert!(Value::decode(&bytes[..cut]).is_err());
    }
    assert!(
        Value::decode(&[42])
            .unwrap_err()
            .to_string()
            .contains("not a value tag")
    );
    assert!(from_bytes::<i64>(&to_bytes("text").unwrap()).is_err());
    assert!(to_bytes(&u64::MAX).is_err());
}

#[test]
fn json_rendering() {
    let value = Value::Tuple(vec![
        s("a\"b"),
        Value::Float(1.0),
        Value::List(vec![Value::Null, Value::Bool(false)]),
    ]);
    assert_eq!(value.to_json(), r#"["a\"b",1.0,[null,false]]"#);
    assert_eq!(value.to_json(), serde_json::to_string(&value).unwrap());
    assert_eq!(s("plain").to_display_text(), "plain");
    let parsed: Value = serde_json::from_str(r#"{"w": [1, "x"]}"#).unwrap();
    assert_eq!(
        parsed.field("w"),
        Some(&Value::List(vec![Value::Int(1), s("x")]))
    );
}
