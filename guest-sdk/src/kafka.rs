//! The record a Kafka source with `metadata = true` gives each function.

use serde::{Deserialize, Serialize};
use sluice_abi::Value;

/// One Kafka record with where it came from, as a source with `metadata = true` makes it:
/// take it as a function's input (`fn f(record: KafkaRecord<String, String>) -> ...`).
///
/// `K` and `V` are the key and value as the source's `key_format` and `value_format`
/// decode them (`String` for `string`, a serde type or [`Value`] for `json`, `Value` with
/// `Value::Bytes` for `bytes`). A record without a key (or a source without
/// `key_format`) has `key: None`; a tombstone has `value: None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaRecord<K = Value, V = Value> {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// Its key.
    pub key: Option<K>,
    /// Its value.
    pub value: Option<V>,
    /// Its headers in order, each a name and its bytes (`Value::Bytes`, or `Value::Null`
    /// for a header without a value).
    pub headers: Vec<(String, Value)>,
}
