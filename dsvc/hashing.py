"""Object ids: 32-byte BLAKE3 digests, their hex forms, and streaming file hashing (b3sum-compatible)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO, NewType

import blake3

from dsvc.errors import BadRevision

ObjectId = NewType("ObjectId", bytes)

ID_SIZE = 32
HEX_SIZE = 2 * ID_SIZE
MIN_PREFIX = 4
CHUNK = 1 << 20
# Threads only pay off for buffers of many MB (DESIGN §3): small files hash faster on one thread.
THREADED_FROM = 16 << 20


def hash_bytes(data: bytes | memoryview) -> ObjectId:
    """Return the id of an in-memory buffer."""
    threads = blake3.blake3.AUTO if len(data) >= THREADED_FROM else 1
    return ObjectId(blake3.blake3(data, max_threads=threads).digest())


def hasher(threaded: bool = False) -> blake3.blake3:
    """Return an incremental hasher; threaded only pays off when chunks are many MB."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO if threaded else 1)


def iter_chunks(handle: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """Yield a file's bytes in fixed-size chunks so no file is ever read whole into memory."""
    while chunk := handle.read(size):
        yield chunk


def hash_file(path: str | os.PathLike[str]) -> ObjectId:
    """Return the id of a file, streaming it in constant memory; equals `b3sum FILE`."""
    with open(path, "rb") as handle:
        large = os.fstat(handle.fileno()).st_size >= THREADED_FROM
        h = blake3.blake3(max_threads=blake3.blake3.AUTO if large else 1)
        for chunk in iter_chunks(handle, THREADED_FROM if large else CHUNK):
            h.update(chunk)
    return ObjectId(h.digest())


def to_hex(oid: bytes) -> str:
    """Return the lowercase hex form of an id."""
    return oid.hex()


def from_hex(text: str) -> ObjectId:
    """Parse a full 64-character hex id."""
    if len(text) != HEX_SIZE:
        raise BadRevision(f"not a full object id: {text!r}")
    try:
        return ObjectId(bytes.fromhex(text))
    except ValueError:
        raise BadRevision(f"not a hex object id: {text!r}") from None


def is_hex_prefix(text: str) -> bool:
    """Tell whether text can be an abbreviated id (4 to 64 hex digits)."""
    return MIN_PREFIX <= len(text) <= HEX_SIZE and all(c in "0123456789abcdef" for c in text.lower())


def short(oid: bytes, length: int = 12) -> str:
    """Return the abbreviated hex form used in human-readable output."""
    return oid.hex()[:length]
