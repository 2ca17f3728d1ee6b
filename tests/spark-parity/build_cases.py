#!/usr/bin/env python3
"""Builds cases.json and spark-divergences.json from the raw outputs the Spark scripts
wrote into raw/ (run by run.sh; re-run it alone after editing case descriptions). Inputs
and expected outputs are taken from the raw files only, never typed in here."""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = "spark-3.5.9-parity"


def raw(name):
    with open(os.path.join(HERE, "raw", name + ".json")) as f:
        doc = json.load(f)
    return doc, {run["name"]: run for run in doc["runs"]}


def plain(value):
    """The shared README's encoding: tuples become plain arrays."""
    if isinstance(value, dict):
        assert set(value) == {"$tuple"}, value
        return [plain(v) for v in value["$tuple"]]
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def case(test, run, pipeline, *, encoding, ordered, notes, num_batches=None, second_pipeline=None,
         tables=None, snapshots=False, batch_duration=False, spark_run=None):
    n = num_batches or run["num_batches"]
    enc = plain if encoding == "plain" else (lambda v: v)
    c = {"suite": SUITE, "test": test, "value_encoding": encoding, "pipeline": pipeline,
         "inputs": enc(run["inputs"][:n])}
    if second_pipeline is not None:
        c["second_inputs"] = enc(run["second_inputs"][:n])
        c["second_pipeline"] = second_pipeline
    if tables:
        c["tables"] = {name: enc(records) for name, records in tables.items()}
    c.update({"num_batches": n, "input_partitions": 2, "output_batches": list(range(1, n + 1)),
              "expected": enc(run["outputs"][:n])})
    if snapshots:
        c["expected_state_snapshots"] = enc(run["state_snapshots"][:n])
    if batch_duration:
        c["batch_duration_ms"] = run["batch_duration_ms"]
    c["ordered"] = ordered
    c["notes"] = notes
    if spark_run:
        c["spark_run"] = spark_run
    return c


def build():
    mws_doc, mws = raw("map_with_state_timeout")
    _, tr = raw("transform_other")
    _, so = raw("set_ops")
    _, nt = raw("nulls_tuple_keys")
    _, py_so = raw("pyspark_set_ops")
    _, py_nt = raw("pyspark_nulls_tuple_keys")
    cases, divergent = [], []

    unordered = " [unordered: each output batch compared as a multiset]"
    for name, what in [
        ("four_keys_time_out_together",
         "Keys a, b, c, d last seen at batches 2, 3, 5 and 7, then silence. Spark calls the function "
         "for all four timeouts together at batch 10, its first state checkpoint batch; until then the "
         "idle keys stay in the state snapshots. Nothing happens at the checks of batches 20 and 30."),
        ("revived_and_recent_keys",
         "c (seen at 1 only) and a (seen at 1 and 6) time out at batch 10; b, idle from 1 but updated at "
         "8 just before the check, gets no timeout call there; e (only at 9) is too recent at 10. a starts "
         "again from no state at 11. At 20, b, e, a (11) and g (17: time(17) < time(20) - 1 s, the "
         "boundary) time out together; f (18) is too recent and times out at 30."),
    ]:
        run = mws[name]
        cases.append(case(
            "mapWithState timeout - " + name.replace("_", " "), run,
            [{"op": "map", "fn": "pair_with_one"},
             {"op": "mapWithState", "fn": "count_or_timeout", "initial_state": None,
              "timeout_ms": run["timeout_ms"], "timeout_check_every": 10}],
            encoding="plain", ordered=False, snapshots=True, batch_duration=True,
            spark_run={k: run[k] for k in ("zero_time_ms", "first_batch_time_ms",
                                             "state_checkpoint_interval_ms", "checkpointed_batches")},
            notes=what + " Spark removes idle keys (and makes their timeout call) only on the batches where "
            "it checkpoints the mapWithState RDD (full scan), every 10 batch intervals by default: Spark "
            "checkpointed this run at batches %s. Timeout rule: a key last updated at batch u times out at "
            "check batch t iff time(u) < time(t) - timeout, i.e. u <= t - 3 here. Script: "
            "scala/MapWithStateTimeout.scala (spark-shell)." % run["checkpointed_batches"] + unordered))

    static = tr["transform_join_static"]["static"]
    cases.append(case(
        "transform - join with a static data set", tr["transform_join_static"],
        [{"op": "map", "fn": "pair_with_one"},
         {"op": "transform", "batch_pipeline": [{"op": "join", "other": "static"}]}],
        encoding="plain", ordered=False, tables={"static": static},
        notes="Spark: stream.map((_, 1)).transform(rdd => rdd.join(staticRdd)). Every batch is joined with "
        "the same static pairs; the static key a has two values, so each a record yields two outputs. "
        "Script: scala/TransformOther.scala." + unordered))
    cases.append(case(
        "transform - join with the other stream", tr["transform_join_other_stream"],
        [{"op": "map", "fn": "pair_with_one"},
         {"op": "transform", "batch_pipeline": [{"op": "join", "other": "second"}]}],
        second_pipeline=[{"op": "map", "fn": "pair_with_x"}],
        encoding="plain", ordered=False,
        notes="Spark: left.map((_, 1)).transformWith(right.map((_, \"x\")), (a, b) => a.join(b)) (Spark's "
        "transform cannot name another DStream; transformWith is how a per-batch function sees one). "
        "Each left batch meets the right batch of the same time; batch 4 has b twice on the right. "
        "Script: scala/TransformOther.scala." + unordered))
    cases.append(case(
        "transform - map then union with the other stream", tr["transform_map_union_other_stream"],
        [{"op": "transform", "batch_pipeline": [{"op": "map", "fn": "add_4"},
                                                {"op": "union", "other": "second"}]}],
        second_pipeline=[], encoding="plain", ordered=True,
        notes="Spark: left.transformWith(right, (a, b) => a.map(_ + 4).union(b)). RDD.union keeps the left "
        "records first, then the right ones, each in partition order, so the order is checked. "
        "Script: scala/TransformOther.scala. [ordered: each output batch compared as a list]"))
    cases.append(case(
        "transform - union with the other stream then join with a static data set",
        tr["transform_union_other_stream_then_join_static"],
        [{"op": "map", "fn": "pair_with_one"},
         {"op": "transform", "batch_pipeline": [{"op": "union", "other": "second"},
                                                {"op": "join", "other": "static"}]}],
        second_pipeline=[{"op": "map", "fn": "pair_with_one"}], tables={"static": static},
        encoding="plain", ordered=False,
        notes="Spark: left.map((_, 1)).transformWith(right.map((_, 1)), (a, b) => a.union(b).join(staticRdd)). "
        "Script: scala/TransformOther.scala." + unordered))

    set_note = (" Records mix Int 1 and Double 1.0, 2 and 2.0, the string \"1\", a tuple (1, 2) and a List(1, 2): "
                "Spark (Scala) keeps every one of them apart, because its hash maps compare top-level records with "
                "Java equals (Integer(1) is not Double(1.0)) and a Tuple2 is not a List. This is canonical-encoding "
                "equality. Batch 5 of the run is left out here (see spark-divergences.json: Scala equates numbers "
                "nested in tuples and lists). PySpark gives different answers for batch 1 (Python: 1 == 1.0): %s. "
                "Script: scala/SetOps.scala; PySpark: pyspark/set_ops.py.")
    for test, run_name, pipeline, second, what in [
        ("transformWith - subtract", "subtract", [{"op": "transformWith", "batch_op": "subtract"}], [],
         "Spark: left.transformWith(right, (a, b) => a.subtract(b)): every left record equal to no right "
         "record, duplicates kept (batch 1: 1 twice; batch 2: 7 twice)."),
        ("transformWith - intersection", "intersection", [{"op": "transformWith", "batch_op": "intersection"}], [],
         "Spark: left.transformWith(right, (a, b) => a.intersection(b)): each record found on both sides, "
         "once (batch 4: 3 three times on the left and twice on the right gives one 3)."),
        ("transformWith - subtract_by_key", "subtract_by_key",
         [{"op": "transformWith", "batch_op": "subtract_by_key"}], [],
         "Spark: left.transformWith(right, (a, b) => a.subtractByKey(b)): the left pairs whose key is absent on "
         "the right, duplicates kept; the key 1 (Int) survives a right key 1.0, the tuple key (1, 2) survives a "
         "right List(1, 2) key."),
        ("transform - distinct", "distinct", [{"op": "transform", "batch_pipeline": [{"op": "distinct"}]}], None,
         "Spark: stream.transform(_.distinct()): each record once."),
    ]:
        run = so[run_name]
        py = py_so[run_name]["outputs"][0]
        cases.append(case(test, run, pipeline, second_pipeline=second, encoding="typed", ordered=False,
                          num_batches=4, notes=what + set_note % json.dumps(py) + unordered))
        if run_name == "distinct":
            cases.append(case("distinct (step of its own)", run, [{"op": "distinct"}], encoding="typed",
                              ordered=False, num_batches=4,
                              notes="The same Spark run as 'transform - distinct' (Spark has no DStream.distinct; "
                              "the step stands for transform(_.distinct())). " + what + set_note % json.dumps(py)
                              + unordered))
        divergent.append(case(test + " (nested numbers)", run, pipeline, second_pipeline=second,
                              encoding="typed", ordered=False,
                              notes="All 5 batches of the Spark run. Batch 5: Scala's == (used by Tuple2 and List "
                              "equality, with ## hashes) equates numbers across types inside tuples and lists, so "
                              "(1, 2) equals (1, 2.0) and List(1, 2) equals List(1.0, 2.0), and Spark keeps "
                              "whichever came first. Sluice compares canonical encodings (issue 12 point 3) and "
                              "does not follow this. PySpark (lists left out, unhashable) gave: %s. Script: "
                              "scala/SetOps.scala." % json.dumps(py_so[run_name]["outputs"]) + unordered))

    nulls_note = (" Keys are tuples (\"a\", 1), a nested tuple ((\"a\", 1), \"x\"), a List(\"a\", 1) (batch 2: a key "
                  "of its own, not the tuple), and null; values are Option[Int] (None is JSON null). PySpark "
                  "(pyspark/nulls_tuple_keys.py, without the list key) gave the same records for the rest: %s. "
                  "Script: scala/NullsTupleKeys.scala.")
    cases.append(case(
        "reduceByKey - tuple keys and null values", nt["reduce_by_key_tuple_keys_none_values"],
        [{"op": "reduceByKey", "fn": "sum_ignoring_null"}], encoding="typed", ordered=False,
        notes="Spark: stream.reduceByKey(sumIgnoringNone): a key whose values are all None keeps None (b, 1); "
        "the null key is a key like any other." + nulls_note
        % json.dumps(py_nt["reduce_by_key_tuple_keys_none_values"]["outputs"]) + unordered))
    cases.append(case(
        "countByValue - records holding null", nt["count_by_value_records_with_none"],
        [{"op": "countByValue"}], encoding="typed", ordered=False,
        notes="Spark: stream.countByValue(): [record, count] where records hold tuples and null; the two "
        "[(\"b\", 1), null] records count 2." + nulls_note
        % json.dumps(py_nt["count_by_value_records_with_none"]["outputs"]) + unordered))
    cases.append(case(
        "transform - distinct over records holding null", nt["distinct_records_with_null"],
        [{"op": "transform", "batch_pipeline": [{"op": "distinct"}]}], encoding="typed", ordered=False,
        notes="Spark: stream.transform(_.distinct()) over null, (null, 1), List(null), (\"a\", null), (null, null), "
        "0, \"\" and List(): null, 0 and \"\" stay three records; the empty list stays one. PySpark (without the "
        "lists) gave: %s. Script: scala/NullsTupleKeys.scala."
        % json.dumps(py_nt["distinct_records_with_null"]["outputs"]) + unordered))

    meta = {k: v for k, v in mws_doc.items() if k != "runs"}
    for c in cases + divergent:
        c["spark"] = meta
    return cases, divergent


def main():
    cases, divergent = build()
    for name, data in [("cases.json", cases), ("spark-divergences.json", divergent)]:
        with open(os.path.join(HERE, name), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(f"{name}: {len(data)} cases")


if __name__ == "__main__":
    main()
