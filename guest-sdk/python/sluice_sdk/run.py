"""The batch adapters: each runs one exported function over a whole batch (its records as
bytes and ends) and answers with bytes and ends, as the Rust SDK's adapters in
guest-sdk/abi/src/function.rs and state.rs do, with the same rules and messages.

They need nothing of the component, so they also run under a plain CPython (tests).
"""

import sluice_sdk

from .encoding import EncodingError, canonical, decode_batch, encode_into


class Refused(Exception):
    """The call fails without fault of the function's code: a record that cannot be
    decoded, a result that cannot be encoded, a function called as the wrong kind."""

    def __init__(self, message, record_index=None):
        super().__init__(message)
        self.message = message
        self.record_index = record_index


class Raised(Exception):
    """The function's own code raised `error` while working on record `record_index`."""

    def __init__(self, error, record_index, step=None):
        super().__init__(str(error))
        self.error = error
        self.record_index = record_index
        self.step = step

    def describe(self):
        """The exception and where in udf.py it was raised, in one line."""
        error = self.error
        where = ""
        frame = error.__traceback__
        # The innermost frame: a loop, since a RecursionError's traceback is very long.
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        if frame is not None:
            code = frame.tb_frame.f_code
            where = f" (at {_shown(code.co_filename)}:{frame.tb_lineno}, in `{code.co_name}`)"
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if self.step is not None:
            text = f"in `{self.step}`: {text}"
        return text + where


def _shown(filename):
    """A source file as the author knows it: componentize-py mounts each search path as a
    numbered root (`/0/udf.py`), which is left out."""
    parts = filename.split("/", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "" and parts[1].isdigit() else filename


def lookup(index, accepted):
    """Exported function number `index`, which must be of one of the `accepted` kinds."""
    functions = sluice_sdk.FUNCTIONS
    if not 0 <= index < len(functions):
        raise Refused(f"this component has no function number {index} (it has {len(functions)})")
    function = functions[index]
    if function.kind not in accepted:
        raise Refused(
            f"function `{function.name}` is a {function.kind} function, called as a {accepted[0]} function"
        )
    return function


class Output:
    """Records being written: their bytes back to back, and where each ends."""

    __slots__ = ("data", "ends")

    def __init__(self):
        self.data = bytearray()
        self.ends = []

    def push(self, value, record_index):
        """Appends `value`, refused naming the input record it answers."""
        start = len(self.data)
        try:
            encode_into(self.data, value)
        except EncodingError as error:
            del self.data[start:]
            raise Refused(_unencodable(record_index, error), record_index) from None
        except RecursionError:
            del self.data[start:]
            raise Refused(
                _unencodable(record_index, "it is nested too deeply for the encoder"), record_index
            ) from None
        self.ends.append(len(self.data))


def _unencodable(record_index, error):
    if record_index is None:
        return f"a result cannot be encoded: {error}"
    return f"the function's result for record {record_index} cannot be encoded: {error}"


def records(data, ends):
    """The batch's records, decoded."""
    try:
        return decode_batch(data, ends)
    except EncodingError as error:
        raise Refused(f"a record of the batch cannot be decoded: {error}") from None


def _call(function, record_index, *args):
    try:
        return function(*args)
    except Exception as error:
        raise Raised(error, record_index) from None


def _items(result, function, record_index):
    if result is None or isinstance(result, (str, bytes, dict)):
        what = "None" if result is None else f"a {type(result).__name__}"
        raise Refused(
            f"`{function.name}` returned {what} for record {record_index}: a {function.kind} "
            "function returns a list (or any iterable) of records",
            record_index,
        )
    try:
        return iter(result)
    except TypeError:
        raise Refused(
            f"`{function.name}` returned a value of Python type `{type(result).__name__}` for record "
            f"{record_index}, which is not iterable: a {function.kind} function returns a list of records",
            record_index,
        ) from None


def map_values(function, values):
    """A map function's result for each of `values`."""
    call = function.call
    results = []
    append = results.append
    index = 0
    try:
        for index, value in enumerate(values):
            append(call(value))
    except Exception as error:
        raise Raised(error, index) from None
    return results


def flat_map_values(function, values):
    """A flat-map function's results for each of `values`, as one list per value."""
    call = function.call
    groups = []
    for index, value in enumerate(values):
        items = _items(_call(call, index, value), function, index)
        try:
            groups.append(list(items))
        except Exception as error:
            raise Raised(error, index) from None
    return groups


def filter_bitmap(function, values):
    """Bit i % 8 of byte i / 8 set where a filter keeps value i."""
    call = function.call
    keep = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if _call(call, index, value):
            keep[index >> 3] |= 1 << (index & 7)
    return bytes(keep)


def run_map(index, data, ends):
    """The `map` export."""
    function = lookup(index, ["map"])
    output = Output()
    for record_index, result in enumerate(map_values(function, records(data, ends))):
        output.push(result, record_index)
    return output


def run_flat_map(index, data, ends):
    """The `flat-map` export: the records and each input record's group end."""
    function = lookup(index, ["flat-map"])
    output = Output()
    group_ends = []
    for record_index, items in enumerate(flat_map_values(function, records(data, ends))):
        for item in items:
            output.push(item, record_index)
        group_ends.append(len(output.ends))
    return output, group_ends


def run_filter(index, data, ends):
    """The `filter` export."""
    return filter_bitmap(lookup(index, ["filter"]), records(data, ends))


def run_map_partition(index, data, ends):
    """The `map-partition` export."""
    function = lookup(index, ["map-partition"])
    values = records(data, ends)
    output = Output()
    result = _call(function.call, None, values)
    for item in _items(result, function, None):
        output.push(item, None)
    return output


def run_chain(indices, data, ends):
    """The `chain` export: map, flat-map and filter functions one after the other, each
    one's results the next one's input, as they would read back in another component.
    A failure after the first step names its function, without a record index (that of
    the step's own input would mislead)."""
    values = records(data, ends)
    output = Output()
    if not indices:
        output.data += data
        output.ends.extend(ends)
        return output
    for step, index in enumerate(indices):
        function = lookup(index, ["map", "flat-map", "filter"])
        last = step + 1 == len(indices)
        try:
            if function.kind == "map":
                results = [[result] for result in map_values(function, values)]
            elif function.kind == "flat-map":
                results = flat_map_values(function, values)
            else:
                keep = filter_bitmap(function, values)
                results = [[value] if keep[i >> 3] >> (i & 7) & 1 else [] for i, value in enumerate(values)]
            if last:
                for record_index, items in enumerate(results):
                    for item in items:
                        output.push(item, record_index)
            else:
                values = _canonical_results(results)
        except Refused as refused:
            raise Refused(
                f"in `{function.name}`: {refused.message}", refused.record_index if step == 0 else None
            ) from None
        except Raised as raised:
            raise Raised(raised.error, raised.record_index if step == 0 else None, function.name) from None
    return output


def _canonical_results(results):
    """A step's results as the next step would read them from another component's
    answer (plain scalars are their own round trip, so they skip it)."""
    values = []
    for record_index, items in enumerate(results):
        for item in items:
            try:
                values.append(canonical(item))
            except (EncodingError, RecursionError) as error:
                raise Refused(_unencodable(record_index, error), record_index) from None
    return values


def _groups(data, ends, group_ends):
    values = records(data, ends)
    start = 0
    for group, end in enumerate(group_ends):
        if end < start or end > len(values):
            raise Refused(f"group {group} ends at record {end}, out of order or past the batch")
        yield group, start, values[start:end]
        start = end


def run_aggregate(index, data, ends, group_ends):
    """The `aggregate` export, for reduce and fold functions: each group folded left to
    right, its first record the initial accumulator."""
    function = lookup(index, ["reduce", "fold"])
    call = function.call
    output = Output()
    for group, first, values in _groups(data, ends, group_ends):
        if not values:
            raise Refused(f"group {group} is empty: there is nothing to fold")
        accumulator = values[0]
        for offset in range(1, len(values)):
            accumulator = _call(call, first + offset, accumulator, values[offset])
        output.push(accumulator, first)
    return output


def _state_cell(cell, record_index):
    if type(cell) is not list or len(cell) > 1:
        size = f"{len(cell)} elements" if type(cell) is list else f"a {type(cell).__name__}"
        raise Refused(
            f"record {record_index} is a state cell of {size}; a cell is a list of at most one",
            record_index,
        )
    return cell


def run_update_state(index, time_ms, data, ends, group_ends):
    """The `update-state` export: each group [state cell, new values...] of one key gives
    the key's new state cell (empty: the key is dropped)."""
    function = lookup(index, ["update-state"])
    call = function.call
    output = Output()
    sluice_sdk._set_batch_time(time_ms)
    try:
        for group, first, values in _groups(data, ends, group_ends):
            if not values:
                raise Refused(f"group {group} has no state cell")
            cell = _state_cell(values[0], first)
            new = _call(call, first, values[1:], cell[0] if cell else None)
            output.push([] if new is None else [new], first)
    finally:
        sluice_sdk._set_batch_time(None)
    return output


def run_map_with_state(index, time_ms, data, ends, group_ends):
    """The `map-with-state` export: for each group [key, (state cell, timing out),
    values...], the function runs once per value in order (once without a value when the
    key is timing out); result group j is [new state cell, emitted records...]."""
    function = lookup(index, ["map-with-state"])
    call = function.call
    output = Output()
    result_ends = []
    sluice_sdk._set_batch_time(time_ms)
    try:
        for group, first, values in _groups(data, ends, group_ends):
            if len(values) < 2:
                raise Refused(f"group {group} lacks its key or its state header")
            key, header = values[0], values[1]
            if type(header) not in (tuple, list) or len(header) != 2 or type(header[1]) is not bool:
                raise Refused(
                    f"record {first + 1} is no state header (a pair of a state cell and a bool)", first + 1
                )
            cell = _state_cell(header[0], first + 1)
            timing_out = header[1]
            state = sluice_sdk.State(cell[0] if cell else None, bool(cell), timing_out)
            emitted = []
            calls = [(None, first)] if timing_out else []
            calls += [(value, first + 2 + offset) for offset, value in enumerate(values[2:])]
            for value, record_index in calls:
                state._removed = False
                record = _call(call, record_index, key, value, state)
                if record is not None:
                    emitted.append(record)
            current = [] if timing_out or not state.exists() else [state.get()]
            output.push(current, first)
            for record in emitted:
                output.push(record, first)
            result_ends.append(len(output.ends))
    finally:
        sluice_sdk._set_batch_time(None)
    return output, result_ends
