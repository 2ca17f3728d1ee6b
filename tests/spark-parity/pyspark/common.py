"""Shared helpers for the PySpark parity scripts: run DStreams over exact batches, collect
every batch's output, and write it as JSON with the typed mapping of ../README.md."""

import json
import os
import platform
import sys
import time

from pyspark import SparkConf, SparkContext, __version__
from pyspark.streaming import StreamingContext

BATCH_SECONDS = 0.5


def typed(value):
    """tuple -> {"$tuple": [...]}, list -> array, None -> null; numbers keep int/float."""
    if isinstance(value, tuple):
        return {"$tuple": [typed(v) for v in value]}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"no JSON mapping for {type(value)}: {value!r}")


def context():
    conf = SparkConf().setMaster("local[2]").setAppName("sluice-parity")
    conf.set("spark.driver.memory", "1g").set("spark.ui.enabled", "false")
    sc = SparkContext(conf=conf)
    sc.setLogLevel("WARN")
    return sc


def run_case(sc, name, build, inputs, second_inputs=(), num_batches=None):
    """Feeds `inputs` (and `second_inputs`) one batch per interval (queueStream, 2 slices
    each), applies `build(left, right)`, and returns the per-batch outputs."""
    num_batches = num_batches or len(inputs)
    ssc = StreamingContext(sc, BATCH_SECONDS)

    def queue(batches):
        padded = list(batches) + [[]] * (num_batches - len(batches))
        return ssc.queueStream([sc.parallelize(b, 2) for b in padded], oneAtATime=True)

    outputs = {}
    build(queue(inputs), queue(second_inputs)).foreachRDD(
        lambda t, rdd: outputs.__setitem__(t, rdd.collect())
    )
    ssc.start()
    deadline = time.time() + 120
    while len(outputs) < num_batches:
        if time.time() > deadline:
            sys.exit(f"{name}: timed out")
        time.sleep(0.05)
    ssc.stop(stopSparkContext=False, stopGraceFully=False)
    times = sorted(outputs)[:num_batches]
    return {
        "name": name,
        "batch_duration_ms": int(BATCH_SECONDS * 1000),
        "num_batches": num_batches,
        "inputs": typed(list(inputs)),
        "second_inputs": typed(list(second_inputs)),
        "outputs": [typed(outputs[t]) for t in times],
    }


def write(path, sc, runs):
    doc = {
        "spark_version": __version__,
        "python_version": platform.python_version(),
        "java_version": sc._jvm.java.lang.System.getProperty("java.version"),
        "master": sc.master,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as out:
        json.dump(doc, out)
        out.write("\n")
