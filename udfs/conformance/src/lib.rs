//! The named functions of `shared/conformance/spark-dstream-functions.json`, as UDFs.
//! Each carries the one-line semantics that file gives it.

use serde::{Deserialize, Serialize};
use sluice_sdk::{State, Value, batch_time_ms, udfs};

/// v -> v + 10
pub fn add_10(v: i64) -> i64 {
    v + 10
}

/// x -> x + 4
pub fn add_4(x: i64) -> i64 {
    x + 4
}

/// x -> x + 8
pub fn add_8(x: i64) -> i64 {
    x + 8
}

/// Identity: the partition's elements as a list.
pub fn array_to_list(items: Vec<Value>) -> Vec<Value> {
    items
}

/// Identity on grouped values.
pub fn iterable_to_list(items: Vec<Value>) -> Vec<Value> {
    items
}

/// Identity on a cogroup value [left values, right values].
pub fn iterables_to_lists(sides: (Vec<Value>, Vec<Value>)) -> (Vec<Value>, Vec<Value>) {
    sides
}

/// Keep x iff x mod 2 == 0.
pub fn is_even(x: i64) -> bool {
    x % 2 == 0
}

/// Numeric narrowing from 64 to 32 bits; the value is unchanged.
pub fn long_to_int(x: i64) -> i32 {
    x as i32
}

/// [key, count] -> [key, count as 32-bit integer].
pub fn value_long_to_int((key, count): (Value, i64)) -> (Value, i32) {
    (key, count as i32)
}

/// x -> [x, 1]
pub fn pair_with_one(x: Value) -> (Value, i64) {
    (x, 1)
}

/// x -> [x, "x"]
pub fn pair_with_x(x: Value) -> (Value, &'static str) {
    (x, "x")
}

/// One record per partition: the sum of its integers.
pub fn partition_sum(items: Vec<i64>) -> [i64; 1] {
    [items.iter().sum()]
}

/// x -> the two records [x, 2x].
pub fn self_and_double(x: i64) -> [i64; 2] {
    [x, 2 * x]
}

/// v -> the two values [v, v + 10].
pub fn self_and_plus_10(v: i64) -> [i64; 2] {
    [v, v + 10]
}

/// The state of `expire_after_two_idle_batches`.
#[derive(Serialize, Deserialize)]
pub struct IdleCounter {
    counter: i64,
    idle: i64,
}

/// updateStateByKey: state is {counter, idle} (both 0 if no old state); let n =
/// sum(new values); if n == 0 then idle += 1 else {counter += n; idle = 0}; if idle == 2
/// the key is dropped, otherwise the updated state is kept.
pub fn expire_after_two_idle_batches(
    values: Vec<i64>,
    state: Option<IdleCounter>,
) -> Option<IdleCounter> {
    let mut state = state.unwrap_or(IdleCounter {
        counter: 0,
        idle: 0,
    });
    let n: i64 = values.iter().sum();
    if n == 0 {
        state.idle += 1;
    } else {
        state.counter += n;
        state.idle = 0;
    }
    (state.idle != 2).then_some(state)
}

/// updateStateByKey: new state = sum(new values) + (old state, or 0).
pub fn running_sum(values: Vec<i64>, state: Option<i64>) -> Option<i64> {
    Some(values.iter().sum::<i64>() + state.unwrap_or(0))
}

/// updateStateByKey: with new values, new state = batch time in ms + (old state or 0);
/// otherwise the old state (or 0).
pub fn add_batch_time_if_values(values: Vec<i64>, state: Option<i64>) -> Option<i64> {
    let old = state.unwrap_or(0);
    Some(if values.is_empty() {
        old
    } else {
        batch_time_ms().expect("state functions run with a batch time") + old
    })
}

/// mapWithState: s = (state or 0) + (value or 0); set the state to s.
fn count_into(value: Option<i64>, state: &mut State<i64>) -> i64 {
    let count = state.get().copied().unwrap_or(0) + value.unwrap_or(0);
    state.update(count);
    count
}

/// mapWithState: count, emit the count.
pub fn running_count_emit_count(
    _key: Value,
    value: Option<i64>,
    state: &mut State<i64>,
) -> Option<i64> {
    Some(count_into(value, state))
}

/// mapWithState: count, emit the key twice over ("a" -> "aa").
pub fn running_count_emit_key_twice(
    key: String,
    value: Option<i64>,
    state: &mut State<i64>,
) -> Option<String> {
    count_into(value, state);
    Some(key.repeat(2))
}

/// mapWithState: count, emit [key, count].
pub fn running_count_emit_key_and_count(
    key: Value,
    value: Option<i64>,
    state: &mut State<i64>,
) -> Option<(Value, i64)> {
    let count = count_into(value, state);
    Some((key, count))
}

/// mapWithState: count, emit nothing.
pub fn running_count_emit_nothing(
    _key: Value,
    value: Option<i64>,
    state: &mut State<i64>,
) -> Option<i64> {
    count_into(value, state);
    None
}

/// mapWithState: if the key has a state, remove it and emit the key; otherwise set the
/// state to the record's value and emit nothing.
pub fn toggle_state_emit_removed_key(
    key: Value,
    value: Option<i64>,
    state: &mut State<i64>,
) -> Option<Value> {
    if state.exists() {
        state.remove();
        Some(key)
    } else {
        state.update(value.unwrap_or(0));
        None
    }
}

/// mapWithState (Spark parity vectors): on data, c = (state or 0) + value, the state set
/// to c and `[key, value, c]` emitted; on a timeout call, `[key, "timeout", state]`.
pub fn count_or_timeout(
    key: Value,
    value: Option<i64>,
    state: &mut State<i64>,
) -> Option<(Value, Value, i64)> {
    if state.is_timing_out() {
        let last = state.get().copied().unwrap_or(0);
        return Some((key, Value::String("timeout".into()), last));
    }
    let value = value.unwrap_or(0);
    let count = state.get().copied().unwrap_or(0) + value;
    state.update(count);
    Some((key, Value::Int(value), count))
}

/// (a, b) -> a + b over nullable integers: a null side is left out; null if both are.
pub fn sum_ignoring_null(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (one, other) => one.or(other),
    }
}

/// {counter, idle} -> counter
pub fn state_counter(state: IdleCounter) -> i64 {
    state.counter
}

/// (a, b) -> a - b
pub fn subtract(a: i64, b: i64) -> i64 {
    a - b
}

/// (a, b) -> a + b
pub fn sum(a: i64, b: i64) -> i64 {
    a + b
}

/// A collection of integers -> its distinct elements, ascending.
pub fn to_set(items: Vec<i64>) -> Vec<i64> {
    let mut set = items;
    set.sort_unstable();
    set.dedup();
    set
}

/// An integer as its decimal string.
pub fn to_string(x: i64) -> String {
    x.to_string()
}

/// Keep a [key, value] pair iff value != 0.
pub fn value_nonzero((_, value): (Value, i64)) -> bool {
    value != 0
}

/// The stateless steps of `shared/conformance/structured/` (records are structs of the
/// case's columns): `record` with field `name` set to `value`.
/// (A struct reaches a guest as a map with string keys.)
fn with_field(record: Value, name: &str, value: Value) -> Value {
    let mut fields = fields(record);
    match fields.iter_mut().find(|(field, _)| field == name) {
        Some((_, slot)) => *slot = value,
        None => fields.push((name.to_owned(), value)),
    }
    Value::Struct(fields)
}

/// The named fields of a struct, or of a map with string keys.
fn fields(record: Value) -> Vec<(String, Value)> {
    match record {
        Value::Struct(fields) => fields,
        Value::Map(entries) => entries
            .into_iter()
            .filter_map(|(key, value)| match key {
                Value::String(key) => Some((key, value)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Integer field `name` of `record` times `factor` plus `add` (null if it is no integer).
fn scaled(record: &Value, name: &str, factor: i64, add: i64) -> Value {
    match record.field(name) {
        Some(Value::Int(value)) => Value::Int(value * factor + add),
        _ => Value::Null,
    }
}

/// derive key = value
pub fn derive_key_value(record: Value) -> Value {
    let value = record.field("value").cloned().unwrap_or(Value::Null);
    with_field(record, "key", value)
}

/// derive value_plus_1 = value + 1
pub fn derive_value_plus_1(record: Value) -> Value {
    let value = scaled(&record, "value", 1, 1);
    with_field(record, "value_plus_1", value)
}

/// derive leftValue = value * 2
pub fn derive_left_value_double(record: Value) -> Value {
    let value = scaled(&record, "value", 2, 0);
    with_field(record, "leftValue", value)
}

/// derive rightValue = value * 3
pub fn derive_right_value_triple(record: Value) -> Value {
    let value = scaled(&record, "value", 3, 0);
    with_field(record, "rightValue", value)
}

/// derive leftValue = leftKey * 2
pub fn derive_left_value_key_double(record: Value) -> Value {
    let value = scaled(&record, "leftKey", 2, 0);
    with_field(record, "leftValue", value)
}

/// derive rightValue = rightKey * 3
pub fn derive_right_value_key_triple(record: Value) -> Value {
    let value = scaled(&record, "rightKey", 3, 0);
    with_field(record, "rightValue", value)
}

/// explode_split value on " " as sessionId: one record per word, `value` dropped.
pub fn explode_value_words(record: Value) -> Vec<Value> {
    let fields = fields(record);
    let text = match fields.iter().find(|(name, _)| name == "value") {
        Some((_, Value::String(text))) => text.clone(),
        _ => return Vec::new(),
    };
    let rest: Vec<(String, Value)> = fields
        .into_iter()
        .filter(|(name, _)| name != "value")
        .collect();
    text.split(' ')
        .map(|word| {
            with_field(
                Value::Struct(rest.clone()),
                "sessionId",
                Value::String(word.to_owned()),
            )
        })
        .collect()
}

/// flat_map self_and_plus_one on `value`: the record, and the record with value + 1.
pub fn value_self_and_plus_one(record: Value) -> Vec<Value> {
    let next = scaled(&record, "value", 1, 1);
    vec![record.clone(), with_field(record, "value", next)]
}

/// The session gap (ms) of a record of the dynamic-gap case, by its `sessionId`: hello 1 s,
/// structured 0 (dropped), world -10 s (dropped), anything else 10 s.
pub fn session_gap_by_word(record: Value) -> i64 {
    match record.field("sessionId") {
        Some(Value::String(word)) if word == "hello" => 1_000,
        Some(Value::String(word)) if word == "structured" => 0,
        Some(Value::String(word)) if word == "world" => -10_000,
        _ => 10_000,
    }
}

/// A record's event time for an `event_time` step's `udf`: its `seconds` field as epoch
/// milliseconds; none when it has no integer `seconds`.
pub fn event_ms_of_seconds(record: Value) -> Option<i64> {
    match record.field("seconds") {
        Some(Value::Int(seconds)) => Some(seconds * 1000),
        _ => None,
    }
}

/// A record's event time for an `event_time` step's `udf`: its `t` field, in epoch
/// milliseconds already (the extractor of the `event_time` bench); none when it has no
/// integer `t`.
pub fn event_ms_of_t(record: Value) -> Option<i64> {
    match record.field("t") {
        Some(Value::Int(ms)) => Some(*ms),
        _ => None,
    }
}

/// A broken event-time function: the time as text, which an `event_time` step refuses.
pub fn event_time_as_text(record: Value) -> String {
    record
        .field("seconds")
        .map_or_else(String::new, Value::to_json)
}

/// The longer of two strings (the first of equal ones): a reduce over text.
pub fn longer(a: String, b: String) -> String {
    if b.len() > a.len() { b } else { a }
}

/// (words so far, a string) -> the words with the string appended: a fold whose
/// accumulator differs from its values.
pub fn append_word(mut words: Vec<String>, word: String) -> Vec<String> {
    words.push(word);
    words
}

udfs! {
    map event_ms_of_seconds,
    map event_ms_of_t,
    map event_time_as_text,
    reduce longer,
    fold append_word,
    map derive_key_value,
    map derive_value_plus_1,
    map derive_left_value_double,
    map derive_right_value_triple,
    map derive_left_value_key_double,
    map derive_right_value_key_triple,
    flat_map explode_value_words,
    flat_map value_self_and_plus_one,
    map session_gap_by_word,
    map add_10,
    map add_4,
    map add_8,
    map array_to_list,
    map iterable_to_list,
    map iterables_to_lists,
    filter is_even,
    map long_to_int,
    map value_long_to_int,
    map pair_with_one,
    map pair_with_x,
    map_partition partition_sum,
    flat_map self_and_double,
    flat_map self_and_plus_10,
    map state_counter,
    reduce subtract,
    reduce sum,
    reduce sum_ignoring_null,
    map to_set,
    map to_string,
    filter value_nonzero,
    update_state expire_after_two_idle_batches,
    update_state running_sum,
    update_state add_batch_time_if_values,
    map_with_state running_count_emit_count,
    map_with_state running_count_emit_key_twice,
    map_with_state running_count_emit_key_and_count,
    map_with_state running_count_emit_nothing,
    map_with_state toggle_state_emit_removed_key,
    map_with_state count_or_timeout,
}
