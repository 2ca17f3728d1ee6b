"""The named functions of `shared/conformance/spark-dstream-functions.json`, in Python: the
same functions as udfs/conformance (Rust), so that the conformance cases run through both.
Each carries the one-line semantics that file gives it."""

import builtins

import sluice_sdk
from sluice_sdk import Struct


def _int32(x):
    """Numeric narrowing from 64 to 32 bits, wrapping as Rust's `as i32` does."""
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


@sluice_sdk.map
def add_10(v):
    return v + 10


@sluice_sdk.map
def add_4(x):
    return x + 4


@sluice_sdk.map
def add_8(x):
    return x + 8


@sluice_sdk.map
def array_to_list(items):
    return list(items)


@sluice_sdk.map
def iterable_to_list(items):
    return list(items)


@sluice_sdk.map
def iterables_to_lists(sides):
    left, right = sides
    return (list(left), list(right))


@sluice_sdk.filter
def is_even(x):
    return x % 2 == 0


@sluice_sdk.map
def long_to_int(x):
    return _int32(x)


@sluice_sdk.map
def value_long_to_int(pair):
    key, count = pair
    return (key, _int32(count))


@sluice_sdk.map
def pair_with_one(x):
    return (x, 1)


@sluice_sdk.map
def pair_with_x(x):
    return (x, "x")


@sluice_sdk.map_partition
def partition_sum(items):
    return [builtins.sum(items)]


@sluice_sdk.flat_map
def self_and_double(x):
    return [x, 2 * x]


@sluice_sdk.flat_map
def self_and_plus_10(v):
    return [v, v + 10]


@sluice_sdk.map
def state_counter(state):
    return state["counter"]


@sluice_sdk.reduce
def subtract(a, b):
    return a - b


@sluice_sdk.reduce
def sum(a, b):  # the cases' name for it: Python's own is `builtins.sum` in this module
    return a + b


@sluice_sdk.reduce
def sum_ignoring_null(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@sluice_sdk.map
def to_set(items):
    return sorted(set(items))


@sluice_sdk.map
def to_string(x):
    return str(x)


@sluice_sdk.filter
def value_nonzero(pair):
    return pair[1] != 0


@sluice_sdk.update_state
def expire_after_two_idle_batches(values, state):
    """state is {counter, idle} (both 0 if no old state); n = sum(values); if n == 0 then
    idle += 1 else counter += n, idle = 0; the key is dropped when idle reaches 2."""
    counter, idle = (state["counter"], state["idle"]) if state is not None else (0, 0)
    n = builtins.sum(values)
    if n == 0:
        idle += 1
    else:
        counter += n
        idle = 0
    return None if idle == 2 else Struct(counter=counter, idle=idle)


@sluice_sdk.update_state
def running_sum(values, state):
    return builtins.sum(values) + (state or 0)


@sluice_sdk.update_state
def add_batch_time_if_values(values, state):
    old = state or 0
    return sluice_sdk.batch_time_ms() + old if values else old


def _count_into(value, state):
    count = (state.get() or 0) + (value or 0)
    state.update(count)
    return count


@sluice_sdk.map_with_state
def running_count_emit_count(key, value, state):
    return _count_into(value, state)


@sluice_sdk.map_with_state
def running_count_emit_key_twice(key, value, state):
    _count_into(value, state)
    return key * 2


@sluice_sdk.map_with_state
def running_count_emit_key_and_count(key, value, state):
    return (key, _count_into(value, state))


@sluice_sdk.map_with_state
def running_count_emit_nothing(key, value, state):
    _count_into(value, state)
    return None


@sluice_sdk.map_with_state
def toggle_state_emit_removed_key(key, value, state):
    if state.exists():
        state.remove()
        return key
    state.update(value or 0)
    return None


@sluice_sdk.map_with_state
def count_or_timeout(key, value, state):
    if state.is_timing_out():
        return (key, "timeout", state.get() or 0)
    value = value or 0
    count = (state.get() or 0) + value
    state.update(count)
    return (key, value, count)


# The stateless steps of shared/conformance/structured/ (records are structs of the case's
# columns; a struct reaches a guest as a Struct, or a dict with string keys).


def _fields(record):
    return Struct(record) if isinstance(record, dict) else Struct()


def _with_field(record, name, value):
    fields = _fields(record)
    fields[name] = value
    return fields


def _scaled(record, name, factor, add):
    value = record.get(name) if isinstance(record, dict) else None
    return value * factor + add if type(value) is int else None


@sluice_sdk.map
def derive_key_value(record):
    return _with_field(record, "key", record.get("value") if isinstance(record, dict) else None)


@sluice_sdk.map
def derive_value_plus_1(record):
    return _with_field(record, "value_plus_1", _scaled(record, "value", 1, 1))


@sluice_sdk.map
def derive_left_value_double(record):
    return _with_field(record, "leftValue", _scaled(record, "value", 2, 0))


@sluice_sdk.map
def derive_right_value_triple(record):
    return _with_field(record, "rightValue", _scaled(record, "value", 3, 0))


@sluice_sdk.map
def derive_left_value_key_double(record):
    return _with_field(record, "leftValue", _scaled(record, "leftKey", 2, 0))


@sluice_sdk.map
def derive_right_value_key_triple(record):
    return _with_field(record, "rightValue", _scaled(record, "rightKey", 3, 0))


@sluice_sdk.flat_map
def explode_value_words(record):
    fields = _fields(record)
    text = fields.pop("value", None)
    if type(text) is not str:
        return []
    return [_with_field(fields, "sessionId", word) for word in text.split(" ")]


@sluice_sdk.flat_map
def value_self_and_plus_one(record):
    return [record, _with_field(record, "value", _scaled(record, "value", 1, 1))]


@sluice_sdk.map
def session_gap_by_word(record):
    word = record.get("sessionId") if isinstance(record, dict) else None
    return {"hello": 1_000, "structured": 0, "world": -10_000}.get(word, 10_000)
