"""Write Sluice user functions (UDFs) in Python, and export them as a WebAssembly component
the Sluice host runs, in the same sandbox and under the same limits as Rust UDFs.

A UDF project is a folder holding ``udf.py`` (and optionally a ``pyproject.toml``)::

    import sluice_sdk

    @sluice_sdk.flat_map
    def tokenize(line):
        return line.lower().split()

    @sluice_sdk.map
    def one(word):
        return (word, 1)

    @sluice_sdk.reduce
    def total(a, b):
        return a + b

``sluice udf build FOLDER`` builds it into ``FOLDER/target/udf.wasm``; a manifest then
refers to a function as ``path/to/udf.wasm#tokenize``. Each decorator names the kind of
the function, as the Rust SDK's ``udfs!`` macro does:

==================  ====================================  =================================
decorator           signature                             serves
==================  ====================================  =================================
``map``             ``f(a) -> b``                         map, key extraction
``flat_map``        ``f(a) -> iterable of b``             flatMap
``filter``          ``f(a) -> bool``                      filter
``map_partition``   ``f(list of a) -> iterable of b``     mapPartitions
``reduce``          ``f(a, a) -> a``                      reduce, reduceByKey, windows
``fold``            ``f(acc, v) -> acc``                  combineByKey's mergeValue
``update_state``    ``f(values, state) -> state``         updateStateByKey (None drops it)
``map_with_state``  ``f(key, value, State) -> record``    mapWithState (None emits nothing)
==================  ====================================  =================================

Records are plain Python values (see :mod:`sluice_sdk.encoding`): pairs are tuples, maps
dicts, structs :class:`Struct` values. Imports and data a module needs belong at its top
level: they run once, at build time, and the component starts from that snapshot.

A function that raises fails the batch with the exception and the index of the record it
was working on (as a Rust panic does), and its instance is discarded; anything printed
goes to the job's log. :func:`batch_time_ms` gives a state function the batch time.
"""

from .encoding import EncodingError, Struct, decode, encode

__all__ = [
    "EncodingError",
    "State",
    "Struct",
    "batch_time_ms",
    "decode",
    "encode",
    "filter",
    "flat_map",
    "fold",
    "map",
    "map_partition",
    "map_with_state",
    "reduce",
    "update_state",
]

#: The kinds, as the WIT contract spells them, by decorator name.
KINDS = {
    "map": "map",
    "flat_map": "flat-map",
    "filter": "filter",
    "map_partition": "map-partition",
    "reduce": "reduce",
    "fold": "fold",
    "update_state": "update-state",
    "map_with_state": "map-with-state",
}


class Function:
    """One exported function: its name, kind (as the WIT spells it) and the Python callable."""

    __slots__ = ("name", "kind", "call")

    def __init__(self, name, kind, call):
        self.name = name
        self.kind = kind
        self.call = call


#: The exported functions, in the order they were declared: a function's index here is
#: the number the host calls it by.
FUNCTIONS = []


def _exporter(decorator):
    kind = KINDS[decorator]

    def export(function):
        name = getattr(function, "__name__", None)
        if not callable(function) or not name:
            raise TypeError(f"@sluice_sdk.{decorator} decorates a function (def name(...)), not {function!r}")
        for known in FUNCTIONS:
            if known.name == name:
                raise ValueError(
                    f"two functions are exported as `{name}` (a {known.kind} and a {kind} function): "
                    "a component's function names must be unique"
                )
        FUNCTIONS.append(Function(name, kind, function))
        return function

    export.__name__ = decorator
    export.__qualname__ = decorator
    export.__doc__ = f"Exports the decorated function as a `{kind}` function, under its Python name."
    return export


map = _exporter("map")
flat_map = _exporter("flat_map")
filter = _exporter("filter")
map_partition = _exporter("map_partition")
reduce = _exporter("reduce")
fold = _exporter("fold")
update_state = _exporter("update_state")
map_with_state = _exporter("map_with_state")

_batch_time = None


def batch_time_ms():
    """The time of the batch a state function runs for, in milliseconds since the epoch.

    Only ``update_state`` and ``map_with_state`` functions are given it (as Spark passes
    their functions a ``Time``); called anywhere else, it raises ``RuntimeError``.
    """
    if _batch_time is None:
        raise RuntimeError(
            "sluice_sdk.batch_time_ms() is only known while an update_state or map_with_state "
            "function runs: the host gives the batch time to those functions alone"
        )
    return _batch_time


def _set_batch_time(time_ms):
    global _batch_time
    _batch_time = time_ms


class State:
    """One key's state, as a ``map_with_state`` function sees it (Spark's ``State``)."""

    __slots__ = ("_value", "_exists", "_timing_out", "_removed")

    def __init__(self, value, exists, timing_out):
        self._value = value
        self._exists = exists
        self._timing_out = timing_out
        self._removed = False

    def exists(self):
        """Whether the key has a state."""
        return self._exists

    def get(self):
        """The key's state, or None if it has none."""
        return self._value if self._exists else None

    def update(self, value):
        """Sets the key's state. Raises, as in Spark, once it was removed in this call or
        while it is timing out."""
        if self._removed:
            raise RuntimeError("cannot update the state after it has been removed")
        if self._timing_out:
            raise RuntimeError("cannot update the state that is timing out")
        self._value = value
        self._exists = True

    def remove(self):
        """Removes the key's state. Raises, as in Spark, once it was removed in this call
        or while it is timing out."""
        if self._removed:
            raise RuntimeError("cannot remove the state that has already been removed")
        if self._timing_out:
            raise RuntimeError("cannot remove the state that is timing out")
        self._removed = True
        self._exists = False
        self._value = None

    def is_timing_out(self):
        """Whether this is the key's last call: it has been idle longer than the operator's
        timeout, and the call brings no value."""
        return self._timing_out

    def __repr__(self):
        shown = repr(self._value) if self._exists else "no state"
        return f"State({shown}{', timing out' if self._timing_out else ''})"

