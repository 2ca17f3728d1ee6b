"""Scenario 3 in PySpark: transformWith subtract / subtractByKey / intersection and
transform(distinct) over mixed-type records. Same data as scala/SetOps.scala minus the
Python-unhashable lists. Usage: python set_ops.py OUT.json (see ../run.sh)."""

import sys

from common import context, run_case, write

LEFT = [
    [1, 1, 1.0, 2, 2.0, "1", "a", "a", (1, 2), ("k", 1), 2.5],
    [7, 7, 8],
    [],
    [3, 3, 3, "b", "b"],
    [(1, 2), (1, 2.0), (3, 4)],
]
RIGHT = [[1.0, 2, 2, "a", 3], [], [9], [3, 3, "b"], [(1, 2.0)]]
LEFT_PAIRS = [
    [("a", 1), ("a", 1), ("b", 2), (1, "int"), (1.0, "double"), ((1, 2), "tuple"), ("1", "string")],
    [("x", 1)],
    [],
    [("a", 1), ("a", 2), ("c", 3)],
    [((1, 2), "tuple"), ((1, 2.0), "tuple of double")],
]
RIGHT_PAIRS = [[("a", 9), ("a", 8), (1.0, "x")], [], [("x", 0)], [("a", 0), ("a", 0)], [((1, 2.0), "z")]]

sc = context()
runs = [
    run_case(sc, "subtract", lambda l, r: l.transformWith(lambda a, b: a.subtract(b), r), LEFT, RIGHT),
    run_case(sc, "intersection", lambda l, r: l.transformWith(lambda a, b: a.intersection(b), r), LEFT, RIGHT),
    run_case(sc, "subtract_by_key", lambda l, r: l.transformWith(lambda a, b: a.subtractByKey(b), r),
             LEFT_PAIRS, RIGHT_PAIRS),
    run_case(sc, "distinct", lambda l, r: l.transform(lambda a: a.distinct()), LEFT),
]
write(sys.argv[1], sc, runs)
sc.stop()
