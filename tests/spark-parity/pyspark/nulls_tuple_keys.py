"""Scenario 4 in PySpark: reduceByKey over tuple / None / nested-tuple keys with None
values, countByValue, and distinct over records holding None. Same data as
scala/NullsTupleKeys.scala minus the (unhashable) list key and list records.
Usage: python nulls_tuple_keys.py OUT.json (see ../run.sh)."""

import sys

from common import context, run_case, write

PAIRS = [
    [(("a", 1), 1), (("a", 1), None), (("a", 2), 5), (("b", 1), None), (("b", 1), None),
     ((("a", 1), "x"), 2), (None, 7), (None, None), (("a", 1), 10)],
    [(("a", 1), None), (("a", 1), 4)],
    [],
]
WITH_NONE = [[None, None, (None, 1), (None, 1), ("a", None), (None, None), 0, ""], [None, (None, None)]]


def sum_ignoring_none(x, y):
    if x is None:
        return y
    return x if y is None else x + y


sc = context()
runs = [
    run_case(sc, "reduce_by_key_tuple_keys_none_values", lambda l, r: l.reduceByKey(sum_ignoring_none), PAIRS),
    run_case(sc, "count_by_value_records_with_none", lambda l, r: l.countByValue(), PAIRS),
    run_case(sc, "distinct_records_with_null", lambda l, r: l.transform(lambda a: a.distinct()), WITH_NONE),
]
write(sys.argv[1], sc, runs)
sc.stop()
