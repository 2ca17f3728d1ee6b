"""Functions for the Python UDF tests (tests/python_udfs.rs): guests that misbehave in
every way a Python function can, composite keys for a job that joins them with keys from
Rust and from a table, and a step also found in udfs/python/conformance, so that a chain
can be split across two components."""

import sys

import sluice_sdk


@sluice_sdk.map
def raise_at_two(x):
    if x == 2:
        raise ValueError("two is not welcome here")
    return x


@sluice_sdk.map
def loop_forever(x):
    while True:
        x += 1


@sluice_sdk.map
def hoard_memory_at_two(x):
    hoard = []
    while x == 2:
        hoard.append(bytearray(1 << 20))
    return x


@sluice_sdk.map
def allocate_past_the_address_space_at_two(x):
    """Python refuses this with a MemoryError itself, before asking to grow its memory."""
    if x == 2:
        return len([None] * (1 << 29))
    return x


@sluice_sdk.map
def recurse_deeply(x):
    sys.setrecursionlimit(10**6)

    def down(depth):
        return down(depth + 1) + 1

    return down(0)


class _Nested:
    def __init__(self, inner):
        self.inner = inner

    def __repr__(self):
        return f"N({self.inner!r})"


@sluice_sdk.map
def recurse_through_repr_at_two(x):
    """Recursion through a built-in (`repr`) runs on the WebAssembly call stack, which a
    raised recursion limit lets it exhaust."""
    sys.setrecursionlimit(10**6)
    if x != 2:
        return x
    nested = None
    for _ in range(200_000):
        nested = _Nested(nested)
    return len(repr(nested))


@sluice_sdk.map
def return_set(x):
    return {x}


@sluice_sdk.map
def return_object(x):
    return object()


@sluice_sdk.map
def return_huge_int(x):
    return 2**63 + x


@sluice_sdk.map
def batch_time_outside_state(x):
    return sluice_sdk.batch_time_ms()


@sluice_sdk.flat_map
def self_and_double(x):
    return [x, 2 * x]


@sluice_sdk.map
def keyed_by_length(word):
    """word -> ((word, length), "python"): a composite key, made as udfs/wordcount's
    function of the same name makes it in Rust."""
    return ((word, len(word)), "python")


@sluice_sdk.flat_map
def words(line):
    return line.split()


@sluice_sdk.fold
def count_into(count, value):
    return count + 1


@sluice_sdk.map
def sum_and_count_of(value):
    """combine_by_key's create: a value's combiner, (sum, count)."""
    return (value, 1)


@sluice_sdk.fold
def add_to_sum_and_count(combiner, value):
    """combine_by_key's merge_value: a value folded into a combiner."""
    return (combiner[0] + value, combiner[1] + 1)


@sluice_sdk.reduce
def merge_sums_and_counts(a, b):
    """combine_by_key's merge_combiners."""
    return (a[0] + b[0], a[1] + b[1])
