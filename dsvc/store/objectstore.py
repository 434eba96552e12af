"""Object stores: structured objects and media blobs by id, verified on every read.

`ObjectStore` holds the shared logic (framing, verification, counting, batching); `DiskObjectStore`
(store/disk.py) keeps objects and small blobs in packs and large blobs as loose files under
`.dsvc/objects`, `MemoryObjectStore` (store/memory.py) keeps them in dicts for tests and scratch work.
Both pass the same conformance suite.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, overload

from dsvc import codec
from dsvc.atomic import Buffer, place_file
from dsvc.errors import CorruptObject, ObjectMissing
from dsvc.hashing import HEX_SIZE, ObjectId, hash_bytes, iter_chunks
from dsvc.objects import StoredObject, load

T = TypeVar("T", bound=StoredObject)

# A batch's objects are written out as one pack once they pass this size (DESIGN §10: packs of ~64 MiB).
PACK_TARGET = 64 << 20
# Past this many packs, packs smaller than SMALL_PACK are merged into one, so lookups stay a few searches.
MAX_PACKS = 32
SMALL_PACK = 16 << 20
PACKED_BLOB_MAX = 1 << 20
MAX_IN_FLIGHT = 2
LARGE_CHUNK = 2 << 20


@dataclass
class StoreCounters:
    """How many objects a piece of work touched: the unit the complexity tests assert on."""

    reads: int = 0
    writes: int = 0
    blob_reads: int = 0
    blob_writes: int = 0

    def reset(self) -> None:
        self.reads = self.writes = self.blob_reads = self.blob_writes = 0


def _kind_error(oid: ObjectId, is_blob: bool) -> CorruptObject:
    return CorruptObject(f"{oid.hex()} is stored as a {'blob' if is_blob else 'structured object'}")


def _prefix_bounds(prefix: str) -> tuple[bytes, bytes]:
    """Turn a hex prefix into the lowest and highest full ids that start with it."""
    return bytes.fromhex(prefix.ljust(HEX_SIZE, "0")), bytes.fromhex(prefix.ljust(HEX_SIZE, "f"))


class ObjectStore(ABC):
    """Content-addressed storage of structured objects (framed, verified) and media blobs (raw)."""

    def __init__(self, compression_level: int = codec.DEFAULT_LEVEL) -> None:
        self.level = compression_level
        self.counters = StoreCounters()
        # A batch's objects before they are written: (bytes, zstd level, is a blob). They are framed
        # (compressed) only when written, after the ones already stored have been dropped.
        self._batch: dict[ObjectId, tuple[bytes, int, bool]] | None = None
        self._batch_bytes = 0

    # -- what each implementation provides -------------------------------------------------------------

    @abstractmethod
    def _read_stored(self, oid: ObjectId) -> bytes | None:
        """Return an object's stored (framed) bytes, or None when absent."""

    def _lend_stored(self, oid: ObjectId) -> Buffer | None:
        """`_read_stored`, as a view where the store can lend its bytes without a copy."""
        return self._read_stored(oid)

    @abstractmethod
    def _write_stored(self, entries: Mapping[ObjectId, Buffer]) -> None:
        """Durably store new objects (none of which exist yet)."""

    @abstractmethod
    def _has_stored(self, oids: list[ObjectId]) -> list[bool]:
        """Tell, for each id, whether a structured object with it is stored."""

    @abstractmethod
    def iter_stored(self) -> Iterator[tuple[ObjectId, bytes]]:
        """Yield every stored object as (id, stored bytes), for fsck."""

    @abstractmethod
    def _find_stored_prefix(self, low: bytes, high: bytes) -> list[ObjectId]:
        """Return stored object ids between low and high inclusive."""

    def _stored_header(self, oid: ObjectId) -> int | None:
        """The framing kind of a stored entry (tells blobs from objects), or None when absent."""
        pending = self._batch_kind(oid)
        if pending is not None:
            return pending
        stored = self._lend_stored(oid)
        return None if stored is None else codec.stored_kind(stored)

    def _batch_kind(self, oid: ObjectId) -> int | None:
        entry = self._batch.get(oid) if self._batch is not None else None
        return None if entry is None else codec.BLOB_RAW if entry[2] else codec.RAW

    @abstractmethod
    def _has_loose(self, oid: ObjectId) -> bool:
        """Tell whether a large blob is stored on its own."""

    def _has_loose_many(self, oids: list[ObjectId]) -> list[bool]:
        """`_has_loose` for many ids (a store that can answer them together overrides this)."""
        return [self._has_loose(oid) for oid in oids]

    @abstractmethod
    def _put_blob_chunks(self, chunks: Iterator[bytes]) -> tuple[ObjectId, int]:
        """Store a large blob on its own from a stream of chunks; return (id, size)."""

    @abstractmethod
    def _read_loose(self, oid: ObjectId) -> bytes:
        """Return a large blob's bytes, verified against its id."""

    @abstractmethod
    def _copy_loose(self, oid: ObjectId, dest: Path) -> None:
        """Write a large blob to dest atomically, verified against its id."""

    @abstractmethod
    def _iter_loose(self) -> Iterator[ObjectId]:
        """Yield the id of every large blob stored on its own."""

    @abstractmethod
    def _find_blob_prefix(self, prefix: str) -> list[ObjectId]:
        """Return the ids of blobs stored on their own that start with a hex prefix."""

    @abstractmethod
    def _begin_batch(self) -> None:
        """Start deferring durability until the batch ends."""

    @abstractmethod
    def _end_batch(self, commit: bool) -> None:
        """Make a batch's packs and blobs durable and visible (or drop them)."""

    @abstractmethod
    def _wait_for_writes(self) -> None:
        """Wait until packs handed to a background writer are written."""

    # -- structured objects ----------------------------------------------------------------------------

    def get(self, oid: ObjectId) -> bytes:
        """Return an object's canonical bytes after checking they hash to its id."""
        return self._load(oid, blob=False)

    @overload
    def _load(self, oid: ObjectId, blob: bool, lend: Literal[False] = False) -> bytes: ...
    @overload
    def _load(self, oid: ObjectId, blob: bool, lend: bool) -> Buffer: ...

    def _load(self, oid: ObjectId, blob: bool, lend: bool = False) -> Buffer:
        """An object's verified bytes; lent (a view of the stored bytes where the store can lend them,
        valid while the store is open) when the caller only writes them out."""
        entry = self._batch.get(oid) if self._batch is not None else None
        if entry is not None:  # bytes this process hashed a moment ago
            if entry[2] != blob:
                raise _kind_error(oid, entry[2])
            self.counters.reads += 1
            return entry[0]
        stored = self._lend_stored(oid)
        if stored is None:
            raise ObjectMissing(f"object {oid.hex()} is not in the store")
        data = self._verified(oid, stored, blob)
        return data if lend or isinstance(data, bytes) else bytes(data)

    def _verified(self, oid: ObjectId, stored: Buffer, blob: bool) -> Buffer:
        """Unframe stored bytes and check their kind and that they hash to their id; a raw payload is
        a view of stored, not a copy."""
        try:
            is_blob = codec.stored_kind(stored) in codec.BLOB_HEADERS
        except CorruptObject as exc:
            raise CorruptObject(f"object {oid.hex()} is corrupt: {exc}") from None
        if is_blob != blob:
            raise _kind_error(oid, is_blob)
        self.counters.reads += 1
        try:
            data = codec.unframe_view(stored)
        except CorruptObject as exc:
            raise CorruptObject(f"object {oid.hex()} is corrupt: {exc}") from None
        if hash_bytes(data) != oid:
            raise CorruptObject(f"object {oid.hex()} is corrupt: its bytes do not hash to its id")
        return data

    def get_object(self, oid: ObjectId, expect: type[T]) -> T:
        """Return a typed object; a wrong kind or malformed bytes raise CorruptObject."""
        try:
            return load(self.get(oid), expect)
        except CorruptObject as exc:
            raise CorruptObject(f"object {oid.hex()}: {exc}") from None

    def put(self, data: bytes, level: int | None = None) -> ObjectId:
        """Store canonical object bytes and return their id; storing twice is harmless.

        `level` overrides the store's zstd level for objects on a hot path."""
        return self._put(hash_bytes(data), data, self.level if level is None else level)

    def _put(self, oid: ObjectId, data: bytes, level: int, blob: bool = False) -> ObjectId:
        frame = codec.frame_blob if blob else codec.frame
        if self._batch is not None:
            if oid not in self._batch:
                self._batch[oid] = (data, level, blob)
                self._batch_bytes += len(data)
                if self._batch_bytes >= PACK_TARGET:
                    self._flush()
            return oid
        if not self._has_stored([oid])[0]:
            self._write_stored({oid: frame(data, level)})
            self.counters.writes += 1
        return oid

    def put_object(self, obj: StoredObject, level: int | None = None) -> ObjectId:
        return self._put(obj.id, obj.encoded, self.level if level is None else level)

    def contains(self, oid: ObjectId) -> bool:
        """Tell whether an object or a blob with this id is stored."""
        if self._batch is not None and oid in self._batch:
            return True
        return self._has_stored([oid])[0] or self.has_blob(oid)

    def contains_many(self, oids: Iterable[ObjectId]) -> list[bool]:
        """Tell, for many structured object ids at once, which are stored: one vectorised lookup."""
        wanted = list(oids)
        found = self._has_stored(wanted)
        if self._batch is not None:
            found = [f or oid in self._batch for f, oid in zip(found, wanted, strict=True)]
        return found

    def find_prefix(self, prefix: str) -> list[ObjectId]:
        """Return every object or blob id starting with a hex prefix."""
        prefix = prefix.lower()
        low, high = _prefix_bounds(prefix)
        found = set(self._find_stored_prefix(low, high)) | set(self._find_blob_prefix(prefix))
        if self._batch is not None:
            found |= {oid for oid in self._batch if oid.hex().startswith(prefix)}
        return sorted(found)

    def shared_root(self) -> Path | None:
        """Where another process can open this store and read all it holds; None when it cannot (a store
        in memory, or a batch not yet visible)."""
        return None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write inside into as few packs as possible, made durable when the block ends.

        If the block raises, objects not yet flushed are dropped; flushed packs are harmless (unreferenced).
        """
        if self._batch is not None:
            yield
            return
        self._batch, self._batch_bytes = {}, 0
        self._begin_batch()
        committed = False
        try:
            yield
            self._flush()
            committed = True
        finally:
            self._batch = None
            self._end_batch(committed)

    def drain(self) -> None:
        """Inside a batch, write out what it holds in memory and wait for the writes, so that the memory
        is free before a large allocation (parsing a source after reading the media); durability still
        waits for the batch's end."""
        if self._batch is not None:
            self._flush()
            self._wait_for_writes()

    def _flush(self) -> None:
        pending = self._batch or {}
        if not pending:
            return
        ids = list(pending)
        new = [oid for oid, found in zip(ids, self._has_stored(ids), strict=True) if not found]
        fresh = dict(zip(new, codec.frame_many([pending[oid] for oid in new]), strict=True))
        if fresh:
            self._write_stored(fresh)
            self.counters.writes += len(fresh)
        pending.clear()
        self._batch_bytes = 0

    # -- blobs -----------------------------------------------------------------------------------------

    # Blobs up to PACKED_BLOB_MAX go into packs like objects (creating one file per 20 KB image cost 10x
    # the read and hash of it); larger ones are stored on their own, raw, streamed in constant memory.

    def put_blob(self, data: bytes) -> ObjectId:
        """Store an in-memory blob."""
        self.counters.blob_writes += 1
        if len(data) <= PACKED_BLOB_MAX:
            return self._put(hash_bytes(data), data, self.level, blob=True)
        return self._put_blob_chunks(iter([data]))[0]

    def put_blob_file(self, path: Path) -> tuple[ObjectId, int]:
        """Store a file as a blob in one pass over its bytes; return (id, size)."""
        self.counters.blob_writes += 1
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size <= PACKED_BLOB_MAX:
                data = handle.read()
                return self._put(hash_bytes(data), data, self.level, blob=True), len(data)
            return self._put_blob_chunks(iter_chunks(handle, LARGE_CHUNK))

    def has_blob(self, oid: ObjectId) -> bool:
        """Tell whether a blob (packed or on its own) is stored."""
        return self._stored_header(oid) in codec.BLOB_HEADERS or self._has_loose(oid)

    def has_blobs(self, oids: list[ObjectId]) -> list[bool]:
        """`has_blob` for many ids: packed ones found with one vectorised lookup, the rest looked for
        on their own (large blobs)."""
        found = self.contains_many(oids)
        loose = iter(self._has_loose_many([oid for oid, here in zip(oids, found, strict=True) if not here]))
        return [here or next(loose) for here in found]

    def read_blob(self, oid: ObjectId) -> bytes:
        """Return a blob's bytes, verified against its id."""
        self.counters.blob_reads += 1
        try:
            return self._load(oid, blob=True)
        except ObjectMissing:
            return self._read_loose(oid)

    def copy_blob(self, oid: ObjectId, dest: Path) -> None:
        """Write a blob to dest, verified against its id before any byte is written (see `place_file`).
        Not fsynced (as loose copies are not): a checkout syncs the file system once after writing all
        its files."""
        self.counters.blob_reads += 1
        try:
            data = self._load(oid, blob=True, lend=True)
        except ObjectMissing:
            self._copy_loose(oid, dest)
            return
        place_file(dest, data)

    def get_many(self, oids: list[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        """Yield (id, verified bytes) for many objects, in the order given; one vectorised lookup."""
        for oid in oids:
            yield oid, self.get(oid)

    def iter_blobs(self) -> Iterator[ObjectId]:
        """Yield the id of every stored blob."""
        for oid, stored in self.iter_stored():
            if stored[0] in codec.BLOB_HEADERS:
                yield oid
        yield from self._iter_loose()

    # -- stored bytes, for remotes ----------------------------------------------------------------------

    def stored_bytes(self, oid: ObjectId) -> bytes:
        """An object's or blob's framed bytes as a pack holds them (a loose blob is framed raw), so a push
        copies what is stored instead of compressing it again."""
        entry = self._batch.get(oid) if self._batch is not None else None
        if entry is not None:
            return (codec.frame_blob if entry[2] else codec.frame)(entry[0], entry[1])
        stored = self._read_stored(oid)
        if stored is not None:
            return bytes(stored)
        if self._has_loose(oid):
            return codec.frame_blob(self._read_loose(oid), 0)
        raise ObjectMissing(f"object {oid.hex()} is not in the store")

    def stored_many(self, oids: list[ObjectId]) -> Iterator[tuple[ObjectId, Buffer]]:
        """`stored_bytes` for many ids, in the order given."""
        for oid in oids:
            yield oid, self.stored_bytes(oid)

    def put_stored(self, entries: Mapping[ObjectId, Buffer]) -> int:
        """Store framed entries that the caller has verified against their ids (a fetch); entries already
        stored are skipped. Inside a batch they become visible when it ends. Return how many were new."""
        ids = list(entries)
        fresh = {
            oid: entries[oid] for oid, found in zip(ids, self.contains_many(ids), strict=True) if not found
        }
        if fresh:
            self._write_stored(fresh)
            self.counters.writes += len(fresh)
        return len(fresh)

    # -- verification ----------------------------------------------------------------------------------

    def index_problems(self) -> Iterator[tuple[str, str]]:
        """Check the store's own index files, which reads trust; yield (file, problem). Stores that keep
        no index files have nothing to check."""
        return iter(())

    def verify(self) -> Iterator[tuple[ObjectId, str]]:
        """Check every stored object and blob; yield (id, problem) for each bad one."""
        for oid, stored in self.iter_stored():
            try:
                data = codec.unframe(stored)
            except CorruptObject as exc:
                yield oid, str(exc)
                continue
            if hash_bytes(data) != oid:
                yield oid, "bytes do not hash to the id"
        for oid in self._iter_loose():
            try:
                self._read_loose(oid)
            except CorruptObject:
                yield oid, "blob bytes do not hash to the id"
