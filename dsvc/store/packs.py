"""Pack files and their sorted indexes: many small objects in one file, found by binary search.

A pack is a header followed by framed objects back to back. Its index lists the ids sorted, with a
256-entry fanout table, offsets and lengths, and ends with the BLAKE3 of everything before it. Indexes are
memory-mapped and searched with numpy, so opening a store costs the same at any size: a local index's
checksum is checked by `fsck` (and every index a remote sends, on arrival), not on each open; a damaged
local index still cannot pass bad bytes off as an object, since every object read is checked against its
id and every entry against the end of its pack.
"""

from __future__ import annotations

import functools
import heapq
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsvc import codec
from dsvc.atomic import Buffer, fsync_dir, fsync_path, naming, start_writeback, temp_name
from dsvc.errors import CorruptObject, UnsupportedFormat
from dsvc.hashing import ID_SIZE, ObjectId, hash_bytes, hasher

PACK_MAGIC = b"DSVCPACK"
INDEX_MAGIC = b"DSVCIDX\0"
PACK_VERSION = 1
PACK_HEADER = struct.Struct("<8sI")
INDEX_HEADER = struct.Struct("<8sII")
FANOUT = 256
ID_DTYPE = np.dtype(f"S{ID_SIZE}")
IDS_OFFSET = INDEX_HEADER.size + 4 * FANOUT  # where an index file's sorted ids start


@dataclass(frozen=True)
class PackIndex:
    """The parsed index of one pack: sorted ids with their offsets and lengths."""

    name: str
    ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    fanout: list[int]  # where each first byte's ids end
    data: bytes | mmap.mmap  # the index file's bytes, which the arrays view

    @classmethod
    def load(cls, path: Path) -> PackIndex:
        """Map a local index file; its size and header are checked, its checksum by `checksum_problem`."""
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise CorruptObject(f"pack index {path.name} is truncated")
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return cls.parse(data, path.stem, checksum=False)

    @classmethod
    def parse(cls, data: bytes | mmap.mmap, name: str, checksum: bool = True) -> PackIndex:
        """Parse and check an index file's bytes (a local file, or one a remote sent)."""
        label = f"{name}.idx"
        if len(data) < IDS_OFFSET + ID_SIZE:
            raise CorruptObject(f"pack index {label} is truncated")
        magic, version, count = INDEX_HEADER.unpack_from(data)
        if magic != INDEX_MAGIC:
            raise CorruptObject(f"pack index {label} is not a dsvc pack index")
        if version > PACK_VERSION:
            raise UnsupportedFormat(
                f"pack index {label} has format {version}; this dsvc reads {PACK_VERSION}"
            )
        expected = IDS_OFFSET + count * (ID_SIZE + 8 + 4) + ID_SIZE
        if len(data) != expected:
            raise CorruptObject(f"pack index {label} is damaged (its size does not match its count)")
        if checksum and (problem := _checksum_problem(data, label)):
            raise CorruptObject(problem)
        fanout = np.frombuffer(data, dtype="<u4", count=FANOUT, offset=INDEX_HEADER.size).tolist()
        ids = np.frombuffer(data, dtype=ID_DTYPE, count=count, offset=IDS_OFFSET)
        pos = IDS_OFFSET + ID_SIZE * count
        offsets = np.frombuffer(data, dtype="<u8", count=count, offset=pos)
        pos += 8 * count
        lengths = np.frombuffer(data, dtype="<u4", count=count, offset=pos)
        return cls(name, ids, offsets, lengths, fanout, data)

    def checksum_problem(self) -> str | None:
        """What is wrong with the index file's checksum, or None: the whole-file check `fsck` makes."""
        return _checksum_problem(self.data, f"{self.name}.idx")

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, oid: bytes) -> int:
        """Return the position of oid in this index, or -1 (a tree walk calls this for every node read:
        plain list and bytes lookups around one numpy search)."""
        first = oid[0]
        lo = self.fanout[first - 1] if first else 0
        hi = self.fanout[first]
        if lo == hi:
            return -1
        pos = lo + int(self.ids[lo:hi].searchsorted(oid))
        start = IDS_OFFSET + ID_SIZE * pos
        return pos if pos < hi and self.data[start : start + ID_SIZE] == oid else -1

    def id_at(self, position: int) -> ObjectId:
        """Return the id at a position, from the file's bytes (numpy would drop trailing NUL bytes)."""
        start = IDS_OFFSET + ID_SIZE * position
        return ObjectId(self.data[start : start + ID_SIZE])

    def find_many(self, wanted: np.ndarray) -> np.ndarray:
        """Return, for an S32 array of ids, each one's position here or -1: one vectorised search."""
        if len(self.ids) == 0:
            return np.full(len(wanted), -1, dtype=np.int64)
        keys = _leading_words(wanted)
        pos = np.minimum(np.searchsorted(self.leading, keys), len(self.ids) - 1)
        hit = self.ids[pos] == wanted
        # Ids that share their first 8 bytes with another (vanishingly rare) may sit past the first of
        # them: those are searched by their whole id.
        shared = np.flatnonzero(~hit & (self.leading[pos] == keys))
        if len(shared):
            exact = np.minimum(np.searchsorted(self.ids, wanted[shared]), len(self.ids) - 1)
            pos[shared] = exact
            hit[shared] = self.ids[exact] == wanted[shared]
        return np.where(hit, pos, -1)

    @functools.cached_property
    def leading(self) -> np.ndarray:
        """Each id's first 8 bytes as a native integer, in id order: searched many times faster than
        the 32-byte strings (numpy compares those byte by byte)."""
        return _leading_words(self.ids)

    def prefix_range(self, low: bytes, high: bytes) -> list[ObjectId]:
        """Return the ids in [low, high]: used to expand abbreviated ids."""
        start = int(np.searchsorted(self.ids, np.array([low], dtype=ID_DTYPE))[0])
        stop = int(np.searchsorted(self.ids, np.array([high], dtype=ID_DTYPE), side="right")[0])
        return [self.id_at(p) for p in range(start, stop)]


def _leading_words(ids: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each of an array of ids, big-endian, as native unsigned integers: ordered
    as the ids are."""
    return np.ascontiguousarray(ids).view(">u8").reshape(-1, ID_SIZE // 8)[:, 0].astype(np.uint64)


def _checksum_problem(data: bytes | mmap.mmap, label: str) -> str | None:
    body = memoryview(data)[:-ID_SIZE]
    try:
        intact = hash_bytes(body) == data[-ID_SIZE:]
    finally:
        body.release()
    return None if intact else f"pack index {label} is damaged (checksum mismatch)"


class PackReader:
    """Random access to the objects of one pack through a read-only memory map."""

    def __init__(self, pack_path: Path, index: PackIndex) -> None:
        self.path = pack_path
        self.index = index
        with open(pack_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < PACK_HEADER.size:
                raise CorruptObject(f"pack {pack_path.name} is truncated")
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._size = size
        magic, version = PACK_HEADER.unpack_from(self._map)
        if magic != PACK_MAGIC:
            raise CorruptObject(f"pack {pack_path.name} is not a dsvc pack")
        if version > PACK_VERSION:
            raise UnsupportedFormat(
                f"pack {pack_path.name} has format {version}; this dsvc reads {PACK_VERSION}"
            )

    def read_at(self, position: int) -> bytes:
        """Return the stored (framed) bytes of the object at an index position."""
        offset, end = self._span(position)
        return self._map[offset:end]

    def view_at(self, position: int) -> memoryview:
        """The stored bytes at an index position as a view of the mapped pack, not a copy: a push
        writes them straight out again. The pack cannot be closed while a view is alive."""
        offset, end = self._span(position)
        return memoryview(self._map)[offset:end]

    def _span(self, position: int) -> tuple[int, int]:
        offset = int(self.index.offsets[position])
        end = offset + int(self.index.lengths[position])
        if end > self._size:
            raise CorruptObject(f"pack index {self.index.name} points past the end of its pack")
        return offset, end

    def header_at(self, position: int) -> int:
        """The framing kind of the entry at a position, without copying the entry."""
        offset = int(self.index.offsets[position])
        return codec.stored_kind(self._map[offset : offset + codec.HEADER_SIZE])

    def iter_entries(self) -> Iterator[tuple[ObjectId, bytes]]:
        """Yield every (id, stored bytes) pair, for verification."""
        for position in range(len(self.index)):
            yield self.index.id_at(position), self.read_at(position)

    def close(self) -> None:
        self._map.close()


WRITEBACK_EVERY = 8 << 20


@dataclass
class PendingPack:
    """A pack whose bytes are written (writeback started) but not yet durable, named or visible."""

    folder: Path
    tmp: Path
    index: PackIndex


def write_pack_data(folder: Path, entries: Iterable[tuple[ObjectId, Buffer]]) -> PendingPack:
    """Write (id, stored bytes) pairs, sorted by id and unique, to a temporary pack; `finish_pack` makes it
    durable and visible. Entries stream straight to disk, in memory bounded by the index."""
    name_hash = hasher()
    id_list: list[bytes] = []
    offset_list: list[int] = []
    length_list: list[int] = []
    pack_tmp = temp_name(folder / "new.pack")
    try:
        with open(pack_tmp, "wb") as handle:
            handle.write(PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION))
            offset = synced = PACK_HEADER.size
            for oid, stored in entries:
                if id_list and oid <= id_list[-1]:
                    raise ValueError("pack entries must be sorted by id and unique")
                name_hash.update(oid)
                id_list.append(oid)
                offset_list.append(offset)
                length_list.append(len(stored))
                handle.write(stored)
                offset += len(stored)
                if offset - synced >= WRITEBACK_EVERY:
                    handle.flush()
                    start_writeback(handle.fileno(), synced, offset - synced)
                    synced = offset
            handle.flush()
            start_writeback(handle.fileno(), synced, offset - synced)
    except OSError as exc:
        pack_tmp.unlink(missing_ok=True)
        raise naming(exc, folder) from None
    except BaseException:
        pack_tmp.unlink(missing_ok=True)
        raise
    index = build_index(id_list, offset_list, length_list, f"pack-{name_hash.hexdigest()}")
    return PendingPack(folder, pack_tmp, index)


def build_index(id_list: list[bytes], offset_list: list[int], length_list: list[int], name: str) -> PackIndex:
    """The index of a pack's entries (ids sorted), with the bytes of its file, checksum included."""
    ids = np.array(id_list, dtype=ID_DTYPE)
    offsets = np.array(offset_list, dtype="<u8")
    lengths = np.array(length_list, dtype="<u4")
    first_bytes = np.array([oid[0] for oid in id_list], dtype=np.uint8)
    fanout = np.cumsum(np.bincount(first_bytes, minlength=FANOUT)).astype("<u4")
    body = b"".join(
        (
            INDEX_HEADER.pack(INDEX_MAGIC, PACK_VERSION, len(id_list)),
            fanout.tobytes(),
            ids.tobytes(),
            offsets.tobytes(),
            lengths.tobytes(),
        )
    )
    return PackIndex(name, ids, offsets, lengths, fanout.tolist(), body + hash_bytes(body))


def pack_bytes(
    entries: list[tuple[ObjectId, Buffer]], prefix: str = "pack"
) -> tuple[str, list[Buffer], bytes]:
    """Lay out a whole pack from (id, stored bytes) pairs sorted by id: (name, the pack's bytes in
    parts, index file). The parts are the header and the entries themselves, so views into local packs
    reach the remote without being copied into one buffer first.

    The name is `<prefix>-` and the BLAKE3 of the sorted ids, as for packs written to disk."""
    name_hash = hasher()
    offsets, lengths, offset = [], [], PACK_HEADER.size
    for oid, stored in entries:
        name_hash.update(oid)
        offsets.append(offset)
        lengths.append(len(stored))
        offset += len(stored)
    name = f"{prefix}-{name_hash.hexdigest()}"
    index = build_index([oid for oid, _ in entries], offsets, lengths, name)
    parts = [PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION), *(stored for _, stored in entries)]
    return name, parts, bytes(index.data)


def finish_pack(pending: PendingPack) -> str:
    """Make a pending pack durable, then write its index: readers find packs by their index, so a crash
    never exposes an index without its pack. Return the pack's name."""
    folder, name = pending.folder, pending.index.name
    fsync_path(pending.tmp)
    index_tmp = temp_name(folder / "new.idx")
    try:
        with open(index_tmp, "wb") as handle:
            handle.write(pending.index.data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        index_tmp.unlink(missing_ok=True)
        raise naming(exc, folder) from None
    os.replace(pending.tmp, folder / f"{name}.pack")
    os.replace(index_tmp, folder / f"{name}.idx")
    fsync_dir(folder)
    return name


def write_pack(folder: Path, entries: Iterable[tuple[ObjectId, Buffer]]) -> str:
    """Write entries as a new durable, visible pack; return its name."""
    return finish_pack(write_pack_data(folder, entries))


def merge_entries(readers: list[PackReader]) -> Iterator[tuple[ObjectId, bytes]]:
    """Yield the entries of several packs in id order, each id once: the input of a repack."""
    last = None
    for oid, stored in heapq.merge(*(r.iter_entries() for r in readers), key=lambda entry: entry[0]):
        if oid != last:
            last = oid
            yield oid, stored
