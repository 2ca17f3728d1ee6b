"""The canonical record encoding, in Python.

Every record that crosses the host/guest boundary is one value encoded as the Rust crate
`sluice-abi` encodes it (guest-sdk/abi/src/encoding): a one-byte tag, then the payload,
with lengths and integers as bincode 2 varints (signed ones zig-zagged) and floats as 8
little-endian bytes. The host hashes, groups and joins keys by these bytes, so a key made
in Python must encode exactly as the same key made in Rust: map entries are sorted by
the bytes of their keys, `bool` is tested before `int` (it is a subclass), every NaN has
one bit pattern, and an `int` outside 64 signed bits is refused.

Python values and the record model:

==================  =======================================
record model        Python
==================  =======================================
null                ``None``
bool                ``bool``
int                 ``int`` (64-bit signed)
float               ``float``
string              ``str``
bytes               ``bytes`` (``bytearray``, ``memoryview``)
list                ``list``
tuple               ``tuple`` (pairs are 2-tuples)
map                 ``dict``
struct              :class:`Struct` (a ``dict`` whose order is
                    the fields'), or a dataclass instance
==================  =======================================
"""

import dataclasses
import math
import struct as _struct
import sys

#: The deepest nesting of lists, tuples, maps and structs a record may have (as in Rust).
MAX_DEPTH = 1000

# Encoding and decoding recurse once per level (twice through a comprehension): a record
# at the depth limit must not meet Python's default recursion limit, also of 1000.
if sys.getrecursionlimit() < 5 * MAX_DEPTH:
    sys.setrecursionlimit(5 * MAX_DEPTH)

NULL, BOOL, INT, FLOAT, STRING, BYTES, LIST, TUPLE, MAP, STRUCT = range(10)

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_CANONICAL_NAN = b"\x00\x00\x00\x00\x00\x00\xf8\x7f"
_F64 = _struct.Struct("<d")
_U16 = _struct.Struct("<H")
_U32 = _struct.Struct("<I")
_U64 = _struct.Struct("<Q")


class EncodingError(ValueError):
    """A value the record model cannot hold, or bytes that are not one record."""


class Struct(dict):
    """A record with named fields, in order: what a Rust struct encodes as.

    It is a ``dict`` (``record["name"]``), and its fields are also attributes
    (``record.name``); it encodes as a struct, where a plain ``dict`` encodes as a map.
    """

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this struct has no field `{name}` (it has {list(self)})") from None

    def __repr__(self):
        return f"Struct({dict.__repr__(self)})"


def _write_len(out, value):
    if value <= 250:
        out.append(value)
    elif value <= 0xFFFF:
        out.append(251)
        out += _U16.pack(value)
    elif value <= 0xFFFFFFFF:
        out.append(252)
        out += _U32.pack(value)
    else:
        out.append(253)
        out += _U64.pack(value)


def _type_name(value):
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def encode_into(out, value, depth=0):
    """Appends the canonical encoding of `value` to the bytearray `out`."""
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8")
        out.append(STRING)
        _write_len(out, len(data))
        out += data
    elif value is None:
        out.append(NULL)
    elif kind is bool:
        out.append(BOOL)
        out.append(1 if value else 0)
    elif kind is int:
        if not _I64_MIN <= value <= _I64_MAX:
            raise EncodingError(
                f"a value of Python type `int` ({value}) does not fit the record model's "
                "64-bit signed integers"
            )
        out.append(INT)
        _write_len(out, ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)
    elif kind is float:
        out.append(FLOAT)
        out += _CANONICAL_NAN if math.isnan(value) else _F64.pack(value)
    elif kind is bytes or kind is bytearray or kind is memoryview:
        data = bytes(value)
        out.append(BYTES)
        _write_len(out, len(data))
        out += data
    elif kind is list or kind is tuple:
        _check_depth(depth)
        out.append(LIST if kind is list else TUPLE)
        _write_len(out, len(value))
        for item in value:
            encode_into(out, item, depth + 1)
    elif kind is Struct:
        _check_depth(depth)
        _write_struct(out, value.items(), len(value), depth)
    elif kind is dict:
        _check_depth(depth)
        _write_map(out, value, depth)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _check_depth(depth)
        fields = dataclasses.fields(value)
        _write_struct(out, ((f.name, getattr(value, f.name)) for f in fields), len(fields), depth)
    else:
        # Subclasses of the plain types (an IntEnum, a namedtuple, an OrderedDict) encode
        # as their base, as serde encodes a newtype as what it wraps.
        if isinstance(value, Struct):
            _check_depth(depth)
            return _write_struct(out, value.items(), len(value), depth)
        for base, plain in _PLAIN:
            if isinstance(value, base):
                return encode_into(out, plain(value), depth)
        raise EncodingError(
            f"a value of Python type `{_type_name(value)}` has no place in the record model "
            "(records are None, bool, int, float, str, bytes, list, tuple, dict, "
            "sluice_sdk.Struct or dataclass values)"
        )


_PLAIN = (
    (int, int),
    (float, float),
    (str, str.__str__),
    (bytes, bytes),
    (tuple, tuple),
    (list, list),
    (dict, dict),
)


def _check_depth(depth):
    if depth >= MAX_DEPTH:
        raise EncodingError(f"a value is nested deeper than {MAX_DEPTH} levels")


def _write_struct(out, fields, count, depth):
    out.append(STRUCT)
    _write_len(out, count)
    for name, field in fields:
        if type(name) is not str:
            raise EncodingError(f"a struct field is named by a `{_type_name(name)}`, not a str")
        data = name.encode("utf-8")
        _write_len(out, len(data))
        out += data
        encode_into(out, field, depth + 1)


def _write_map(out, value, depth):
    entries = []
    for key, item in value.items():
        encoded = bytearray()
        encode_into(encoded, key, depth + 1)
        entries.append((bytes(encoded), item))
    entries.sort(key=lambda entry: entry[0])
    for earlier, later in zip(entries, entries[1:]):
        if earlier[0] == later[0]:
            raise EncodingError("a map has the same key twice (keys that encode alike, such as two NaNs)")
    out.append(MAP)
    _write_len(out, len(entries))
    for key, item in entries:
        out += key
        encode_into(out, item, depth + 1)


def encode(value):
    """The canonical encoding of `value`, as bytes."""
    out = bytearray()
    encode_into(out, value)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data, at=0):
        self.data = data
        self.at = at

    def length(self):
        data, at = self.data, self.at
        if at >= len(data):
            raise EncodingError("record ends inside a length or integer")
        first = data[at]
        if first <= 250:
            self.at = at + 1
            return first
        width = {251: 2, 252: 4, 253: 8}.get(first)
        if width is None:
            raise EncodingError(f"invalid varint marker byte {first}")
        if at + 1 + width > len(data):
            raise EncodingError("record ends inside a length or integer")
        self.at = at + 1 + width
        return int.from_bytes(data[at + 1 : at + 1 + width], "little")

    def take(self, count):
        at = self.at
        if at + count > len(self.data):
            raise EncodingError(f"record ends early: {count} bytes expected, {len(self.data) - at} left")
        self.at = at + count
        return self.data[at : at + count]

    def text(self):
        raw = self.take(self.length())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise EncodingError(f"a string is not UTF-8: {error}") from None

    def value(self, depth=0):
        if self.at >= len(self.data):
            raise EncodingError("record ends where a value should start")
        tag = self.data[self.at]
        self.at += 1
        if tag == STRING:
            return self.text()
        if tag == INT:
            raw = self.length()
            return (raw >> 1) ^ -(raw & 1)
        if tag == NULL:
            return None
        if tag == BOOL:
            byte = self.take(1)[0]
            if byte > 1:
                raise EncodingError(f"invalid bool byte {byte}")
            return byte == 1
        if tag == FLOAT:
            return _F64.unpack(self.take(8))[0]
        if tag == BYTES:
            return bytes(self.take(self.length()))
        if tag > STRUCT:
            raise EncodingError(f"invalid value tag {tag}")
        if depth >= MAX_DEPTH:
            raise EncodingError(f"a record is nested deeper than {MAX_DEPTH} levels")
        count = self.length()
        if tag == LIST:
            return [self.value(depth + 1) for _ in range(count)]
        if tag == TUPLE:
            return tuple(self.value(depth + 1) for _ in range(count))
        if tag == MAP:
            entries = {}
            for _ in range(count):
                key = self.value(depth + 1)
                try:
                    entries[key] = self.value(depth + 1)
                except TypeError:
                    raise EncodingError(
                        f"a map's key is a `{_type_name(key)}`, which cannot be a key of a Python dict"
                    ) from None
            return entries
        fields = Struct()
        for _ in range(count):
            name = self.text()
            fields[name] = self.value(depth + 1)
        return fields


def decode(data):
    """The value `data` (one whole record) encodes."""
    reader = _Reader(memoryview(data))
    value = reader.value()
    if reader.at != len(data):
        raise EncodingError(f"{len(data) - reader.at} bytes left over after the value")
    return value


def decode_batch(data, ends):
    """The records of a batch (its data and where each record ends), decoded."""
    view = memoryview(data)
    values = []
    append = values.append
    start = 0
    for end in ends:
        # Short strings, the commonest records, without a reader: tag, one-byte length.
        if end - start >= 2 and data[start] == STRING and data[start + 1] == end - start - 2:
            try:
                append(str(view[start + 2 : end], "utf-8"))
            except UnicodeDecodeError as error:
                raise EncodingError(f"a string is not UTF-8: {error}") from None
            start = end
            continue
        reader = _Reader(view[:end], start)
        append(reader.value())
        if reader.at != end:
            raise EncodingError(f"record {len(values) - 1} has {end - reader.at} bytes left over")
        start = end
    return values


_IMMUTABLE = frozenset((str, bool, float, bytes, type(None)))


def canonical(value):
    """`value` as it reads back after encoding (a dataclass as a Struct, a bytearray as
    bytes, ...), without the round trip for plain scalars, which read back as themselves."""
    kind = type(value)
    if kind in _IMMUTABLE or (kind is int and _I64_MIN <= value <= _I64_MAX):
        return value
    return decode(encode(value))
