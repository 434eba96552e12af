"""Canonical msgpack encoding and zstd framing: one byte string per value, whatever produced it.

Canonical rules (DESIGN §3): maps sorted by their encoded keys, minimal integer widths, floats always
float64, strings UTF-8, bytes as msgpack bin. Decoding then re-encoding gives the same bytes, so ids are
stable. Framing is a one-byte header (raw or zstd) before the payload; the id never depends on it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import msgpack
import zstandard

from dsvc.errors import CorruptObject

RAW = 0
ZSTD = 1
# The same two framings for file blobs kept in packs, so a pack entry says whether it is a blob.
BLOB_RAW = 2
BLOB_ZSTD = 3
BLOB_HEADERS = frozenset((BLOB_RAW, BLOB_ZSTD))
HEADER_SIZE = 2
# Leading bytes of formats that are already compressed: zstd would only burn time on them.
_COMPRESSED_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG",
    b"GIF8",
    b"RIFF",
    b"\x1a\x45\xdf\xa3",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"\x28\xb5\x2f\xfd",
    b"BZh",
    b"\xfd7zXZ",
    b"%PDF",
    b"OggS",
    b"fLaC",
    b"ID3",
)
DEFAULT_LEVEL = 3
# Tree nodes are stored raw: they are rewritten on every edit, zstd saves only a third of their few bytes
# (mostly random ids), and compressing plus decompressing cost a fifth of an apply (docs/architecture.md).
NODE_LEVEL = 0
# Objects larger than this are refused on decode, bounding what untrusted bytes can make us allocate.
MAX_OBJECT_SIZE = 1 << 30
# Below this size zstd's frame header costs more than it saves.
MIN_COMPRESS = 64
# Blobs of unknown type are probed with this many leading bytes before the whole is compressed.
PROBE = 4096

_local = threading.local()


_PLAIN = frozenset((str, int, bool, bytes, type(None)))
MAX_KEY_ORDERS = 4096
_STRING_KEY_ORDERS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def canonical(value: Any) -> Any:
    """Return value with every map sorted by encoded key and NaN refused, ready for `encode`."""
    kind = type(value)
    if kind in _PLAIN:  # exact types first: this runs for every value of every metadata map
        return value
    if kind is float:
        if value != value:
            raise ValueError("NaN cannot be stored")
        return value
    if kind is list or kind is tuple:
        return [canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in _key_order(tuple(value))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("NaN cannot be stored")
    return value


def _key_order(keys: tuple[Any, ...]) -> tuple[Any, ...]:
    """Map keys sorted by their encoding. A hundred thousand frames' metadata share a few key sets, so
    the orders of string keys are remembered (other keys may equal one another yet encode differently:
    1, 1.0 and True)."""
    order = _STRING_KEY_ORDERS.get(keys)
    if order is None:
        order = tuple(sorted(keys, key=_packb))
        if all(type(k) is str for k in keys):
            if len(_STRING_KEY_ORDERS) >= MAX_KEY_ORDERS:
                _STRING_KEY_ORDERS.clear()
            _STRING_KEY_ORDERS[keys] = order
    return order


def _packb(value: Any) -> bytes:
    packer = _local.__dict__.get("packer")
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, use_single_float=False, autoreset=True)
    return packer.pack(value)  # type: ignore[no-any-return]


def encode(value: Any) -> bytes:
    """Encode an already canonical value (see `canonical`) to msgpack bytes."""
    try:
        return _packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot encode value: {exc}") from None


def array_header(length: int) -> bytes:
    """The msgpack header of an array of `length` items: followed by their encodings, an encoded array."""
    return msgpack.Packer().pack_array_header(length)  # type: ignore[no-any-return]


def element_spans(data: bytes) -> list[tuple[int, int]]:
    """The byte range of each element of an encoded array, found without decoding the elements (msgpack
    skips them in C), so two encodings can be compared field by field; malformed input raises
    CorruptObject."""
    unpacker = msgpack.Unpacker(max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        count = unpacker.read_array_header()
        spans = []
        start = unpacker.tell()
        for _ in range(count):
            unpacker.skip()
            end = unpacker.tell()
            spans.append((start, end))
            start = end
    except (ValueError, msgpack.OutOfData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CorruptObject(f"undecodable object: {exc or type(exc).__name__}") from None
    return spans


def decode(data: bytes | memoryview) -> Any:
    """Decode msgpack bytes (arrays become tuples, ready for frozen objects); malformed input raises
    CorruptObject."""
    try:
        return msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise CorruptObject(f"undecodable object: {exc}") from None


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor  # type: ignore[no-any-return]


def _header(kind: int) -> bytes:
    # The framing byte and its complement: a single damaged byte cannot turn an object into a blob or
    # back (both would still hash right), because the two bytes would no longer agree.
    return bytes((kind, kind ^ 0xFF))


def stored_kind(stored: bytes | memoryview) -> int:
    """The framing kind of stored bytes (RAW, ZSTD, BLOB_RAW, BLOB_ZSTD); damage raises CorruptObject."""
    if len(stored) < HEADER_SIZE or stored[0] ^ stored[1] != 0xFF:
        raise CorruptObject("damaged object header")
    return stored[0]


def frame(data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """Frame bytes for storage: zstd when it saves space, raw otherwise."""
    return frame_many([(data, level, False)])[0]


def frame_blob(data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """Frame a file blob for a pack: raw for already-compressed media (recognised by magic or by media
    container atoms, or by a sample that does not shrink), zstd when that saves space."""
    return frame_many([(data, level, True)])[0]


def frame_many(items: list[tuple[bytes, int, bool]]) -> list[bytes]:
    """Frame many (data, level, is_blob) entries, the rules of `frame` and `frame_blob` in one place, with
    one zstd call per level for all of them: the calls release the GIL and use every core, where a call
    per object spends more on the call than on compressing a 2 KB label object."""
    framed: list[bytes | None] = [None] * len(items)
    wanted: dict[int, list[int]] = {}  # level -> entries to compress
    probes: dict[int, list[int]] = {}  # level -> large blobs of unknown type, to probe first
    for i, (data, level, blob) in enumerate(items):
        if level == 0 or len(data) < MIN_COMPRESS or (blob and _looks_compressed(data)):
            framed[i] = _header(BLOB_RAW if blob else RAW) + data
        elif blob and len(data) >= 4 * PROBE:
            probes.setdefault(level, []).append(i)
        else:
            wanted.setdefault(level, []).append(i)
    for level, indices in probes.items():
        sampled = _compress_all(level, [items[i][0][:PROBE] for i in indices])
        for i, sample in zip(indices, sampled, strict=True):
            if len(sample) > 0.9 * PROBE:
                framed[i] = _header(BLOB_RAW) + items[i][0]
            else:
                wanted.setdefault(level, []).append(i)
    for level, indices in wanted.items():
        for i, packed in zip(indices, _compress_all(level, [items[i][0] for i in indices]), strict=True):
            data, _, blob = items[i]
            if len(packed) < len(data):
                framed[i] = _header(BLOB_ZSTD if blob else ZSTD) + packed
            else:
                framed[i] = _header(BLOB_RAW if blob else RAW) + data
    return framed  # type: ignore[return-value]


def _compress_all(level: int, chunks: list[bytes | bytearray | memoryview]) -> list[Any]:
    """Compress each chunk as its own frame, in one call that runs on every core (buffers, not bytes:
    framing copies them once, with the header)."""
    if len(chunks) < 2:
        return [_compressor(level).compress(c) for c in chunks]
    packed = _compressor(level).multi_compress_to_buffer(chunks, threads=-1)
    return [packed[i] for i in range(len(packed))]


def _looks_compressed(data: bytes) -> bool:
    """Already-compressed media, by magic bytes or media container atoms."""
    return data.startswith(_COMPRESSED_MAGIC) or data[4:8] == b"ftyp"


def unframe(stored: bytes | memoryview, max_size: int = MAX_OBJECT_SIZE) -> bytes:
    """Undo `frame` or `frame_blob`; a bad header, a damaged zstd frame or an oversized payload raises
    CorruptObject."""
    data = unframe_view(stored, max_size)
    return data if isinstance(data, bytes) else bytes(data)


def unframe_view(stored: bytes | memoryview, max_size: int = MAX_OBJECT_SIZE) -> bytes | memoryview:
    """`unframe` that lends a raw payload as a view of stored instead of copying it (a checkout writes
    media straight from the mapped pack)."""
    header = stored_kind(stored)
    body = memoryview(stored)[HEADER_SIZE:]
    if header in (RAW, BLOB_RAW):
        return body
    if header in (ZSTD, BLOB_ZSTD):
        try:
            params = zstandard.get_frame_parameters(body)
            if params.content_size > max_size:
                raise CorruptObject(
                    f"object of {params.content_size} bytes exceeds the {max_size}-byte limit"
                )
            return _decompressor().decompress(body, max_output_size=max_size)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"damaged compressed object: {exc}") from None
    raise CorruptObject(f"unknown object framing {header}")
