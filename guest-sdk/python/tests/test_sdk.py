"""Unit tests of the Python guest SDK's adapters and encoding, under a plain CPython:
`python3 -m unittest discover guest-sdk/python/tests` (tests/python_udfs.rs runs them)."""

import dataclasses
import math
import unittest

import sluice_sdk
from sluice_sdk import Struct, run
from sluice_sdk.encoding import EncodingError, decode, encode


@sluice_sdk.map
def double(x):
    return 2 * x


@sluice_sdk.flat_map
def words(line):
    return line.split()


@sluice_sdk.filter
def is_even(x):
    return x % 2 == 0


@sluice_sdk.reduce
def add(a, b):
    return a + b


@sluice_sdk.fold
def collect(accumulator, value):
    return accumulator + [value]


@sluice_sdk.update_state
def running_total(values, state):
    total = (state or 0) + sum(values)
    return None if total == 0 else total


@sluice_sdk.map_with_state
def count_and_stamp(key, value, state):
    if state.is_timing_out():
        return (key, "timeout", state.get())
    state.update((state.get() or 0) + value)
    return (key, state.get(), sluice_sdk.batch_time_ms())


@sluice_sdk.map
def fail_on_three(x):
    if x == 3:
        raise ZeroDivisionError("three")
    return x


@sluice_sdk.map
def as_set(x):
    return {x}


@sluice_sdk.flat_map
def text_not_list(x):
    return "abc"


@sluice_sdk.map_partition
def partition_total(records):
    return [sum(records)]


def index(name):
    return next(i for i, f in enumerate(sluice_sdk.FUNCTIONS) if f.name == name)


def batch(values):
    data, ends = bytearray(), []
    for value in values:
        data += encode(value)
        ends.append(len(data))
    return bytes(data), ends


def groups(groups):
    values = [value for group in groups for value in group]
    data, ends = batch(values)
    group_ends, at = [], 0
    for group in groups:
        at += len(group)
        group_ends.append(at)
    return data, ends, group_ends


def values(output):
    return run.decode_batch(bytes(output.data), output.ends)


class Adapters(unittest.TestCase):
    def test_every_kind_is_exported_under_its_python_name(self):
        kinds = {f.name: f.kind for f in sluice_sdk.FUNCTIONS}
        self.assertEqual(kinds["double"], "map")
        self.assertEqual(kinds["words"], "flat-map")
        self.assertEqual(kinds["collect"], "fold")
        self.assertEqual(kinds["count_and_stamp"], "map-with-state")
        self.assertEqual(double(4), 8, "the decorator leaves the function callable")

    def test_a_name_exported_twice_is_refused(self):
        with self.assertRaisesRegex(ValueError, "two functions are exported as `double`"):

            @sluice_sdk.filter
            def double(x):
                return True

    def test_record_kinds(self):
        self.assertEqual(values(run.run_map(index("double"), *batch([1, 2]))), [2, 4])
        output, ends = run.run_flat_map(index("words"), *batch(["a b", "", "c"]))
        self.assertEqual((values(output), ends), (["a", "b", "c"], [2, 2, 3]))
        self.assertEqual(run.run_filter(index("is_even"), *batch(list(range(10)))), bytes([0b01010101, 0b01]))
        self.assertEqual(values(run.run_map_partition(index("partition_total"), *batch([1, 2, 3]))), [6])

    def test_a_chain_runs_each_step_on_the_last_ones_results(self):
        chain = [index("words"), index("double"), index("double")]
        self.assertEqual(values(run.run_chain(chain, *batch(["ab c"]))), ["abababab", "cccc"])
        chain = [index("double"), index("is_even"), index("fail_on_three")]
        self.assertEqual(values(run.run_chain(chain, *batch([1, 2]))), [2, 4])

    def test_a_failure_in_a_later_step_names_it_without_an_index(self):
        chain = [index("double"), index("fail_on_three")]
        with self.assertRaises(run.Raised) as raised:
            run.run_chain([index("fail_on_three"), index("double")], *batch([1, 3]))
        self.assertEqual(raised.exception.record_index, 1)
        self.assertIn("ZeroDivisionError: three (at ", raised.exception.describe())
        with self.assertRaises(run.Refused) as refused:
            run.run_chain([index("double"), index("as_set")], *batch([1]))
        self.assertIsNone(refused.exception.record_index)
        self.assertIn("in `as_set`: ", refused.exception.message)
        self.assertEqual(values(run.run_chain(chain, *batch([1, 2]))), [2, 4])

    def test_aggregate_serves_reduce_and_fold(self):
        data, ends, group_ends = groups([[1, 2, 3], [10]])
        self.assertEqual(values(run.run_aggregate(index("add"), data, ends, group_ends)), [6, 10])
        data, ends, group_ends = groups([[[], "a", "b"], [["z"]]])
        self.assertEqual(values(run.run_aggregate(index("collect"), data, ends, group_ends)), [["a", "b"], ["z"]])
        with self.assertRaisesRegex(run.Refused, "is a map function, called as a reduce function"):
            run.run_aggregate(index("double"), data, ends, group_ends)

    def test_update_state_keeps_drops_and_starts_states(self):
        data, ends, group_ends = groups([[[5], 1, 2], [[], 4], [[3], -3]])
        self.assertEqual(values(run.run_update_state(index("running_total"), 0, data, ends, group_ends)), [[8], [4], []])

    def test_map_with_state_runs_once_per_value_and_once_when_timing_out(self):
        data, ends, group_ends = groups([["k", ([1], False), 2, 3], ["t", ([7], True)]])
        output, result_ends = run.run_map_with_state(index("count_and_stamp"), 1000, data, ends, group_ends)
        self.assertEqual(values(output), [[6], ("k", 3, 1000), ("k", 6, 1000), [], ("t", "timeout", 7)])
        self.assertEqual(result_ends, [3, 5])

    def test_batch_time_is_only_known_in_state_functions(self):
        with self.assertRaisesRegex(RuntimeError, "only known while an update_state or map_with_state"):
            sluice_sdk.batch_time_ms()

    def test_state_refuses_what_spark_refuses(self):
        state = sluice_sdk.State(1, True, False)
        state.remove()
        self.assertFalse(state.exists())
        with self.assertRaisesRegex(RuntimeError, "after it has been removed"):
            state.update(2)
        timing_out = sluice_sdk.State(1, True, True)
        with self.assertRaisesRegex(RuntimeError, "timing out"):
            timing_out.update(2)

    def test_results_that_cannot_be_encoded_name_their_python_type_and_record(self):
        with self.assertRaises(run.Refused) as refused:
            run.run_map(index("as_set"), *batch([1, 2]))
        self.assertEqual(refused.exception.record_index, 0)
        self.assertIn("Python type `set`", refused.exception.message)
        with self.assertRaisesRegex(run.Refused, "returned a str for record 0"):
            run.run_flat_map(index("text_not_list"), *batch([1]))


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Encoding(unittest.TestCase):
    def test_bool_is_not_int_and_ints_stay_in_64_bits(self):
        self.assertEqual(encode(True), bytes([1, 1]))
        self.assertEqual(encode(1), bytes([2, 2]))
        self.assertEqual(encode(-(2**63)), bytes([2, 253]) + b"\xff" * 8)
        for huge in (2**63, -(2**63) - 1):
            with self.assertRaisesRegex(EncodingError, "Python type `int`"):
                encode(huge)
        for bad, name in (({1}, "set"), (object(), "object"), (1j, "complex")):
            with self.assertRaisesRegex(EncodingError, f"Python type `{name}`"):
                encode(bad)

    def test_maps_are_ordered_by_their_keys_bytes(self):
        self.assertEqual(encode({"b": 1, "a": 2}), encode({"a": 2, "b": 1}))
        self.assertEqual(encode({300: 0, 2: 0})[2:4], bytes([2, 4]), "2 (zig-zag 4) sorts first")

    def test_every_value_round_trips(self):
        corpus = [
            None, False, 0, -1, 250, 251, 65536, 2**40, 1.5, -0.0, math.inf, "", "héllo",
            b"\x00\xff", [1, [2]], (1, "a"), {"k": (None,)}, Struct(b=1, a=2), [[[]]],
        ]
        for value in corpus:
            self.assertEqual(decode(encode(value)), value)
        self.assertEqual(encode(Point(1, 2)), encode(Struct(x=1, y=2)))
        self.assertEqual(list(decode(encode(Struct(b=1, a=2)))), ["b", "a"], "fields keep their order")
        self.assertTrue(math.isnan(decode(encode(math.nan))))

    def test_nesting_past_the_limit_is_refused(self):
        deep = []
        for _ in range(1001):
            deep = [deep]
        with self.assertRaisesRegex(EncodingError, "deeper than 1000 levels"):
            encode(deep)


if __name__ == "__main__":
    unittest.main()
