# grail plain-data codec: the only format crossing between the trusted test harness and the
# candidate (completion) process. Hand-written on purpose: no pickle/marshal/eval/json, and the
# decoder only ever builds exact builtin types, so nothing the candidate sends can run code or
# carry behaviour (custom __eq__, __hash__, __repr__, lazy iteration) into the trusted process.
#
# Value: one tag byte, then
#   N None | T True | F False
#   i int      u32 length + signed big-endian two's complement bytes (length >= 1)
#   f float    8 bytes IEEE-754 big-endian
#   c complex  16 bytes (real, imag)
#   s str      u32 length + UTF-8 (lone surrogates allowed: surrogatepass)
#   b bytes    u32 length + raw bytes
#   l list / t tuple / e set / z frozenset   u32 count + items
#   d dict     u32 count + key, value pairs
#   y type     u8 length + name of one of BUILTIN_TYPES (e.g. a test passing `int`)
#   r remote   u64 handle of an object kept in the candidate process (only where allowed)
# Frame: u32 payload length, then one value. Limits: MAX_FRAME bytes, MAX_DEPTH nesting,
# MAX_ITEMS values per frame. Dict keys and set items must be hashable and distinct.
import struct

MAX_FRAME = 4 << 20
MAX_DEPTH = 64
MAX_ITEMS = 1 << 20

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_C128 = struct.Struct(">dd")


# Builtin types that may cross by name (resolved to this interpreter's own, captured at import,
# before any completion code runs).
BUILTIN_TYPES = {
    kind.__name__: kind
    for kind in (bool, bytearray, bytes, complex, dict, float, frozenset, int, list, object, set, str, tuple, type)
}
_BUILTIN_NAMES = {kind: name for name, kind in BUILTIN_TYPES.items()}
# Exact types encoded as a plain dict (their dict contents), set by the candidate runner to the
# dict subclasses of `collections` that honest solutions return (Counter, OrderedDict,
# defaultdict). Compared with a dict literal they behave as the plain dict does.
DICT_TYPES = ()


class CodecError(Exception):
    """The value cannot be encoded, or the bytes are not a valid frame."""


class Remote(object):
    """An opaque handle to an object living in the candidate process.

    It can only be passed back to the candidate (as an argument) or have attributes set on it
    (forwarded); it has no value here: identity equality, no truth value, no attributes."""

    __slots__ = ("_grail_handle", "_grail_channel")

    def __init__(self, handle, channel=None):
        object.__setattr__(self, "_grail_handle", handle)
        object.__setattr__(self, "_grail_channel", channel)

    def __setattr__(self, name, value):
        channel = object.__getattribute__(self, "_grail_channel")
        if channel is None:
            raise AttributeError("remote object is read-only here")
        channel.set_attribute(self, name, value)

    def __getattr__(self, name):
        # Only called for names the handle itself lacks; dunder probes (copy, pickle, ...) are
        # answered here, other names are read in the candidate and come back as plain data or
        # as another handle.
        channel = object.__getattribute__(self, "_grail_channel")
        if channel is None or name.startswith("__"):
            raise AttributeError(name)
        return channel.get_attribute(self, name)

    def __bool__(self):
        raise TypeError("a candidate object has no truth value in the tests")

    def __repr__(self):
        return "<candidate object #%d>" % object.__getattribute__(self, "_grail_handle")


def encode(value, remote_of=None):
    """Bytes of `value` (exact builtin types only). `remote_of(obj)` may map other objects to a
    handle (the candidate side does this for instances it constructed); otherwise they fail."""
    out = []
    budget = [MAX_ITEMS, MAX_FRAME]
    _encode(value, out, 0, budget, remote_of)
    return b"".join(out)


def _encode(value, out, depth, budget, remote_of):
    if depth > MAX_DEPTH:
        raise CodecError("nested deeper than %d" % MAX_DEPTH)
    budget[0] -= 1
    if budget[0] < 0:
        raise CodecError("more than %d values" % MAX_ITEMS)
    kind = type(value)
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if value else b"F")
    elif kind is int:
        _charge(budget, int.bit_length(value) // 8)
        raw = int.to_bytes(value, (int.bit_length(value) + 8) // 8, "big", signed=True)
        _charge(budget, len(raw))
        out.append(b"i" + _U32.pack(len(raw)) + raw)
    elif kind is float:
        out.append(b"f" + _F64.pack(value))
    elif kind is complex:
        out.append(b"c" + _C128.pack(value.real, value.imag))
    elif kind is str:
        _charge(budget, str.__len__(value))  # at least one byte per character
        raw = str.encode(value, "utf-8", "surrogatepass")
        _charge(budget, len(raw))
        out.append(b"s" + _U32.pack(len(raw)) + raw)
    elif kind is bytes:
        _charge(budget, len(value))
        out.append(b"b" + _U32.pack(len(value)) + value)
    elif kind is list or kind is tuple or kind is set or kind is frozenset:
        tag = {list: b"l", tuple: b"t", set: b"e", frozenset: b"z"}[kind]
        items = list(kind.__iter__(value))
        out.append(tag + _U32.pack(len(items)))
        for item in items:
            _encode(item, out, depth + 1, budget, remote_of)
    elif kind is dict or kind in DICT_TYPES:
        pairs = list(dict.items(value))
        out.append(b"d" + _U32.pack(len(pairs)))
        for key, item in pairs:
            _encode(key, out, depth + 1, budget, remote_of)
            _encode(item, out, depth + 1, budget, remote_of)
    elif kind is type and value in _BUILTIN_NAMES:
        name = _BUILTIN_NAMES[value].encode("ascii")
        out.append(b"y" + bytes((len(name),)) + name)
    elif kind is Remote:
        out.append(b"r" + _U64.pack(object.__getattribute__(value, "_grail_handle")))
    else:
        handle = remote_of(value) if remote_of is not None else None
        if handle is None:
            raise CodecError("not plain data: %s" % _type_name(value))
        out.append(b"r" + _U64.pack(handle))
    _charge(budget, 8)


def _charge(budget, size):
    budget[1] -= size
    if budget[1] < 0:
        raise CodecError("larger than %d bytes" % MAX_FRAME)


def _type_name(value):
    try:
        return str(type.__getattribute__(type(value), "__qualname__"))[:80]
    except BaseException:
        return "?"


def decode(data, make_remote=None):
    """The value in `data` (the whole of it). `make_remote(handle)` builds remote handles; when
    it is None a remote tag is an error."""
    if type(data) is not bytes:
        raise CodecError("frame is not bytes")
    state = [0, MAX_ITEMS]
    value = _decode(data, state, 0, make_remote)
    if state[0] != len(data):
        raise CodecError("%d trailing bytes" % (len(data) - state[0]))
    return value


def _take(data, state, size):
    start = state[0]
    end = start + size
    if end > len(data):
        raise CodecError("truncated")
    state[0] = end
    return data[start:end]


def _decode(data, state, depth, make_remote):
    if depth > MAX_DEPTH:
        raise CodecError("nested deeper than %d" % MAX_DEPTH)
    state[1] -= 1
    if state[1] < 0:
        raise CodecError("more than %d values" % MAX_ITEMS)
    tag = _take(data, state, 1)
    if tag == b"N":
        return None
    if tag == b"T":
        return True
    if tag == b"F":
        return False
    if tag == b"i":
        size = _U32.unpack(_take(data, state, 4))[0]
        if size == 0:
            raise CodecError("empty int")
        return int.from_bytes(_take(data, state, size), "big", signed=True)
    if tag == b"f":
        return _F64.unpack(_take(data, state, 8))[0]
    if tag == b"c":
        real, imag = _C128.unpack(_take(data, state, 16))
        return complex(real, imag)
    if tag == b"s":
        size = _U32.unpack(_take(data, state, 4))[0]
        try:
            return _take(data, state, size).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise CodecError("invalid UTF-8") from None
    if tag == b"b":
        size = _U32.unpack(_take(data, state, 4))[0]
        return _take(data, state, size)
    if tag in (b"l", b"t", b"e", b"z", b"d"):
        count = _U32.unpack(_take(data, state, 4))[0]
        if count > len(data) - state[0]:
            raise CodecError("count larger than the frame")
        if tag == b"d":
            result = {}
            for _ in range(count):
                key = _decode(data, state, depth + 1, make_remote)
                item = _decode(data, state, depth + 1, make_remote)
                try:
                    if key in result:
                        raise CodecError("duplicate dict key")
                    result[key] = item
                except TypeError:
                    raise CodecError("unhashable dict key") from None
            return result
        items = [_decode(data, state, depth + 1, make_remote) for _ in range(count)]
        if tag == b"l":
            return items
        if tag == b"t":
            return tuple(items)
        try:
            result = set(items) if tag == b"e" else frozenset(items)
        except TypeError:
            raise CodecError("unhashable set item") from None
        if len(result) != count:
            raise CodecError("duplicate set items")
        return result
    if tag == b"y":
        size = _take(data, state, 1)[0]
        name = _take(data, state, size)
        kind = BUILTIN_TYPES.get(name.decode("ascii", "replace"))
        if kind is None:
            raise CodecError("unknown builtin type")
        return kind
    if tag == b"r":
        handle = _U64.unpack(_take(data, state, 8))[0]
        if make_remote is None:
            raise CodecError("candidate object where only plain data is allowed")
        return make_remote(handle)
    raise CodecError("unknown tag %r" % tag)


def frame(payload):
    if len(payload) > MAX_FRAME:
        raise CodecError("larger than %d bytes" % MAX_FRAME)
    return _U32.pack(len(payload)) + payload
