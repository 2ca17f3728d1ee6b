"""The component's exports: the `udf` world of wit/udf.wit, served by the adapters of
:mod:`sluice_sdk.run` for the functions ``udf.py`` exported.

A function that raises is reported to the host (``report-panic``, with its record index)
and the instance then aborts, as a Rust guest does on a panic: the host discards an
instance that trapped, so no half-updated module state outlives the failure. A refusal
(a result that cannot be encoded, a record of the wrong shape) is an ordinary failure.
"""

import os

import sluice_sdk
import wit_world
from componentize_py_types import Err
from wit_world.imports import diagnostics, types

from . import run

_KINDS = {
    "map": types.Kind.MAP,
    "flat-map": types.Kind.FLAT_MAP,
    "filter": types.Kind.FILTER,
    "map-partition": types.Kind.MAP_PARTITION,
    "reduce": types.Kind.REDUCE,
    "fold": types.Kind.FOLD,
    "update-state": types.Kind.UPDATE_STATE,
    "map-with-state": types.Kind.MAP_WITH_STATE,
}


def _serve(adapter, *args):
    try:
        return adapter(*args)
    except run.Refused as refused:
        raise Err(types.Failure(refused.message, refused.record_index)) from None
    except run.Raised as raised:
        diagnostics.report_panic(raised.describe(), raised.record_index)
    except Exception as error:
        # The SDK's own code ran out of something (memory, stack) between user calls.
        diagnostics.report_panic(run.Raised(error, None).describe(), None)
    os.abort()


def _batch(output):
    return types.Batch(bytes(output.data), output.ends)


class WitWorld(wit_world.WitWorld):
    """The exports of the `udf` world."""

    def functions(self):
        return [types.FunctionInfo(f.name, _KINDS[f.kind]) for f in sluice_sdk.FUNCTIONS]

    def map(self, function, input):
        return _batch(_serve(run.run_map, function, input.data, input.ends))

    def flat_map(self, function, input):
        output, group_ends = _serve(run.run_flat_map, function, input.data, input.ends)
        return types.Groups(_batch(output), group_ends)

    def filter(self, function, input):
        return _serve(run.run_filter, function, input.data, input.ends)

    def map_partition(self, function, input):
        return _batch(_serve(run.run_map_partition, function, input.data, input.ends))

    def chain(self, functions, input):
        return _batch(_serve(run.run_chain, functions, input.data, input.ends))

    def aggregate(self, function, input):
        records = input.records
        return _batch(_serve(run.run_aggregate, function, records.data, records.ends, input.group_ends))

    def update_state(self, function, batch_time, input):
        records = input.records
        output = _serve(run.run_update_state, function, batch_time, records.data, records.ends, input.group_ends)
        return _batch(output)

    def map_with_state(self, function, batch_time, input):
        records = input.records
        output, group_ends = _serve(
            run.run_map_with_state, function, batch_time, records.data, records.ends, input.group_ends
        )
        return types.Groups(_batch(output), group_ends)
