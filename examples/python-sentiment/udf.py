"""Tweet sentiment, as in the classic PySpark Streaming tutorial: each line is scored from
a word list, and the positive and negative lines are counted per window.

    sluice udf build examples/python-sentiment
    sluice run examples/python-sentiment/job.toml
"""

import sluice_sdk

# The word lists are read at module top level, so they are part of the component's
# pre-initialised snapshot, not loaded again by every instance.
POSITIVE = frozenset(
    "good great love loved lovely happy excellent awesome nice fun best wonderful amazing "
    "like enjoy enjoyed win glad fantastic beautiful brilliant cool".split()
)
NEGATIVE = frozenset(
    "bad terrible hate hated awful sad worst boring poor angry ugly annoying broken fail "
    "failed disappointing horrible slow lost wrong".split()
)
STRIP = str.maketrans("", "", ".,;:!?\"'()#@")


@sluice_sdk.map
def score(tweet):
    """(label, 1): positive or negative by the sum of its words' scores, else neutral."""
    words = tweet.translate(STRIP).lower().split()
    total = sum(1 for w in words if w in POSITIVE) - sum(1 for w in words if w in NEGATIVE)
    label = "positive" if total > 0 else "negative" if total < 0 else "neutral"
    return (label, 1)


@sluice_sdk.filter
def has_opinion(pair):
    return pair[0] != "neutral"


@sluice_sdk.reduce
def add(a, b):
    return a + b


@sluice_sdk.reduce
def subtract(a, b):
    return a - b
