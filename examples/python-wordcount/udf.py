"""Word count in Python: the same job as examples/wordcount, with Python UDFs.

    sluice udf build examples/python-wordcount
    sluice run examples/python-wordcount/job.toml
"""

import sluice_sdk

# Built once, at build time: module-level data is part of the component's snapshot.
PUNCTUATION = str.maketrans("", "", ".,;:!?\"'()[]")


@sluice_sdk.flat_map
def tokenize(line):
    """A line's words, lower-cased, without punctuation."""
    return line.translate(PUNCTUATION).lower().split()


@sluice_sdk.filter
def is_long_word(word):
    return len(word) > 3


@sluice_sdk.map
def with_one(word):
    return (word, 1)


@sluice_sdk.reduce
def add(a, b):
    return a + b
