"""Object stores: structured objects and media blobs by id, verified on every read.

`ObjectStore` holds the shared logic (framing, verification, counting, batching); `DiskObjectStore` keeps
objects in packs and blobs as loose files under `.dsvc/objects`, `MemoryObjectStore` keeps both in dicts for
tests and scratch work. Both pass the same conformance suite.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from dsvc import codec
from dsvc.atomic import write_file
from dsvc.errors import CorruptObject, ObjectMissing
from dsvc.hashing import HEX_SIZE, ObjectId, hash_bytes, iter_chunks
from dsvc.objects import StoredObject, load
from dsvc.store.loose import LooseBlobs
from dsvc.store.packs import (
    ID_DTYPE,
    PackIndex,
    PackReader,
    PendingPack,
    finish_pack,
    merge_entries,
    write_pack,
    write_pack_data,
)

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


def _prefix_bounds(prefix: str) -> tuple[bytes, bytes]:
    """Turn a hex prefix into the lowest and highest full ids that start with it."""
    return bytes.fromhex(prefix.ljust(HEX_SIZE, "0")), bytes.fromhex(prefix.ljust(HEX_SIZE, "f"))


class ObjectStore(ABC):
    """Content-addressed storage of structured objects (framed, verified) and media blobs (raw)."""

    def __init__(self, compression_level: int = codec.DEFAULT_LEVEL) -> None:
        self.level = compression_level
        self.counters = StoreCounters()
        self._batch: dict[ObjectId, bytes] | None = None
        self._batch_bytes = 0

    # -- what each implementation provides -------------------------------------------------------------

    @abstractmethod
    def _read_stored(self, oid: ObjectId) -> bytes | None:
        """Return an object's stored (framed) bytes, or None when absent."""

    @abstractmethod
    def _write_stored(self, entries: dict[ObjectId, bytes]) -> None:
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
        """The framing byte of a stored entry (tells blobs from objects), or None when absent."""
        stored = self._batch.get(oid) if self._batch is not None else None
        if stored is None:
            stored = self._read_stored(oid)
        return None if stored is None else codec.stored_kind(stored)

    @abstractmethod
    def _has_loose(self, oid: ObjectId) -> bool:
        """Tell whether a large blob is stored on its own."""

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

    # -- structured objects ----------------------------------------------------------------------------

    def get(self, oid: ObjectId) -> bytes:
        """Return an object's canonical bytes after checking they hash to its id."""
        return self._load(oid, blob=False)

    def _load(self, oid: ObjectId, blob: bool) -> bytes:
        stored = self._batch.get(oid) if self._batch is not None else None
        if stored is None:
            stored = self._read_stored(oid)
        if stored is None:
            raise ObjectMissing(f"object {oid.hex()} is not in the store")
        return self._verified(oid, stored, blob)

    def _verified(self, oid: ObjectId, stored: bytes, blob: bool) -> bytes:
        """Unframe stored bytes and check their kind and that they hash to their id."""
        try:
            is_blob = codec.stored_kind(stored) in codec.BLOB_HEADERS
        except CorruptObject as exc:
            raise CorruptObject(f"object {oid.hex()} is corrupt: {exc}") from None
        if is_blob != blob:
            raise CorruptObject(f"{oid.hex()} is stored as a {'blob' if is_blob else 'structured object'}")
        self.counters.reads += 1
        try:
            data = codec.unframe(stored)
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
                stored = self._batch[oid] = frame(data, level)
                self._batch_bytes += len(stored)
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

    def _flush(self) -> None:
        pending = self._batch or {}
        if not pending:
            return
        ids = list(pending)
        fresh = {
            oid: pending[oid] for oid, found in zip(ids, self._has_stored(ids), strict=True) if not found
        }
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

    def read_blob(self, oid: ObjectId) -> bytes:
        """Return a blob's bytes, verified against its id."""
        self.counters.blob_reads += 1
        try:
            return self._load(oid, blob=True)
        except ObjectMissing:
            return self._read_loose(oid)

    def copy_blob(self, oid: ObjectId, dest: Path) -> None:
        """Write a blob to dest atomically, verified against its id."""
        self.counters.blob_reads += 1
        try:
            data = self._load(oid, blob=True)
        except ObjectMissing:
            self._copy_loose(oid, dest)
            return
        write_file(dest, data)

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

    # -- verification ----------------------------------------------------------------------------------

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


class MemoryObjectStore(ObjectStore):
    """An object store in dicts: for tests and throwaway work, same behaviour as on disk."""

    def __init__(self, compression_level: int = codec.DEFAULT_LEVEL) -> None:
        super().__init__(compression_level)
        self.objects: dict[ObjectId, bytes] = {}
        self.blobs: dict[ObjectId, bytes] = {}
        self._pending_blobs: dict[ObjectId, bytes] | None = None

    def _read_stored(self, oid: ObjectId) -> bytes | None:
        return self.objects.get(oid)

    def _write_stored(self, entries: dict[ObjectId, bytes]) -> None:
        self.objects.update(entries)

    def _has_stored(self, oids: list[ObjectId]) -> list[bool]:
        return [oid in self.objects for oid in oids]

    def iter_stored(self) -> Iterator[tuple[ObjectId, bytes]]:
        yield from sorted(self.objects.items())

    def _find_stored_prefix(self, low: bytes, high: bytes) -> list[ObjectId]:
        return [oid for oid in self.objects if low <= oid <= high]

    def _has_loose(self, oid: ObjectId) -> bool:
        return oid in self.blobs or (self._pending_blobs is not None and oid in self._pending_blobs)

    def _put_blob_chunks(self, chunks: Iterator[bytes]) -> tuple[ObjectId, int]:
        data = b"".join(chunks)
        oid = hash_bytes(data)
        (self.blobs if self._pending_blobs is None else self._pending_blobs).setdefault(oid, data)
        return oid, len(data)

    def _begin_batch(self) -> None:
        self._pending_blobs = {}

    def _end_batch(self, commit: bool) -> None:
        if commit and self._pending_blobs:
            self.blobs.update(self._pending_blobs)
        self._pending_blobs = None

    def _read_loose(self, oid: ObjectId) -> bytes:
        data = self.blobs.get(oid)
        if data is None and self._pending_blobs is not None:
            data = self._pending_blobs.get(oid)
        if data is None:
            raise ObjectMissing(f"blob {oid.hex()} is not in the store")
        if hash_bytes(data) != oid:
            raise CorruptObject(f"blob {oid.hex()} is corrupt: its bytes do not hash to its id")
        return data

    def _copy_loose(self, oid: ObjectId, dest: Path) -> None:
        write_file(dest, self._read_loose(oid))

    def _iter_loose(self) -> Iterator[ObjectId]:
        yield from sorted(self.blobs)

    def _find_blob_prefix(self, prefix: str) -> list[ObjectId]:
        return [oid for oid in self.blobs if oid.hex().startswith(prefix)]


class DiskObjectStore(ObjectStore):
    """Packs under `objects/packs`, loose blobs under `objects/loose`; see DESIGN §5."""

    def __init__(self, root: Path, compression_level: int = codec.DEFAULT_LEVEL) -> None:
        super().__init__(compression_level)
        self.root = root
        self.pack_dir = root / "packs"
        self.loose = LooseBlobs(root / "loose", root / "tmp")
        self._packs: dict[str, PackReader] = {}
        # Packs of the current batch: written by a background thread while the caller goes on reading and
        # hashing (on two cores the copy then costs little time), durable and visible when the batch ends.
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: list[tuple[Future[PendingPack], dict[ObjectId, bytes]]] = []
        self._pending: list[PendingPack] = []

    @classmethod
    def create(cls, root: Path, compression_level: int = codec.DEFAULT_LEVEL) -> DiskObjectStore:
        for sub in ("packs", "loose", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return cls(root, compression_level)

    def packs(self) -> list[PackReader]:
        """Return the readers of every pack, including packs other processes wrote since the last look."""
        self._refresh()
        return list(self._packs.values())

    def _refresh(self) -> list[PackReader]:
        """Open packs that appeared since the last look (and forget merged-away ones); return the new."""
        present = {p.stem for p in self.pack_dir.glob("pack-*.idx")} | {p.index.name for p in self._pending}
        for gone in set(self._packs) - present:  # merged away by another process's repack
            del self._packs[gone]
        return [self._open(name) for name in sorted(present - set(self._packs))]

    def _locate(self, oid: ObjectId) -> tuple[PackReader, int] | None:
        """The pack holding oid and its position there, looking again for new packs on a miss."""
        for readers in (list(self._packs.values()), None):
            for reader in readers if readers is not None else self._refresh():
                position = reader.index.find(oid)
                if position >= 0:
                    return reader, position
        return None

    def get_many(self, oids: list[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        """Locate all ids with one search per pack, then read them in the order given."""
        if not oids or self._batch is not None:
            yield from super().get_many(oids)
            return
        wanted = np.array(oids, dtype=ID_DTYPE)
        where: list[tuple[PackReader, int] | None] = [None] * len(oids)
        missing = np.ones(len(oids), dtype=bool)
        for reader in self.packs():
            if not missing.any():
                break
            positions = reader.index.find_many(wanted)
            for i in np.nonzero(missing & (positions >= 0))[0]:
                where[i] = (reader, int(positions[i]))
            missing &= positions < 0
        for oid, found in zip(oids, where, strict=True):
            if found is None:
                raise ObjectMissing(f"object {oid.hex()} is not in the store")
            yield oid, self._verified(oid, found[0].read_at(found[1]), blob=False)

    def _read_stored(self, oid: ObjectId) -> bytes | None:
        for _, entries in self._in_flight:
            if oid in entries:
                return entries[oid]
        found = self._locate(oid)
        return None if found is None else found[0].read_at(found[1])

    def _write_stored(self, entries: dict[ObjectId, bytes]) -> None:
        if self._batch is None:
            self._open(write_pack(self.pack_dir, sorted(entries.items())))
            if len(self._packs) > MAX_PACKS:
                self.repack()
            return
        assert self._writer is not None
        while len(self._in_flight) >= MAX_IN_FLIGHT:  # bound the memory the writer may hold
            self._harvest(wait=True)
        self._in_flight.append(
            (self._writer.submit(write_pack_data, self.pack_dir, sorted(entries.items())), entries)
        )
        self._harvest(wait=False)

    def _harvest(self, wait: bool) -> None:
        """Make packs the writer finished readable from disk and drop their entries from memory."""
        while self._in_flight and (wait or self._in_flight[0][0].done()):
            future, _ = self._in_flight[0]
            pending = future.result()
            self._in_flight.pop(0)
            self._pending.append(pending)
            self._packs[pending.index.name] = PackReader(pending.tmp, pending.index)
            wait = False

    def _open(self, name: str) -> PackReader:
        reader = PackReader(self.pack_dir / f"{name}.pack", PackIndex.load(self.pack_dir / f"{name}.idx"))
        self._packs[name] = reader
        return reader

    def repack(self, small: int = SMALL_PACK) -> int:
        """Merge every pack smaller than `small` bytes into one; return how many packs were merged.

        The merged pack is durable before the old ones are deleted, so a crash leaves duplicates at worst.
        Callers hold the writer lock; readers that still map an old pack keep reading it.
        """
        readers = [r for r in self.packs() if r.path.stat().st_size < small]
        if len(readers) < 2:
            return 0
        merged = write_pack(self.pack_dir, merge_entries(readers))
        for reader in readers:
            if reader.index.name != merged:
                del self._packs[reader.index.name]
                (self.pack_dir / f"{reader.index.name}.idx").unlink()
                reader.path.unlink()
        self._open(merged)
        return len(readers)

    def _has_stored(self, oids: list[ObjectId]) -> list[bool]:
        if not oids:
            return []
        wanted = np.array(oids, dtype=ID_DTYPE)
        found = np.array([any(oid in entries for _, entries in self._in_flight) for oid in oids], dtype=bool)
        for readers in (list(self._packs.values()), None):
            for reader in readers if readers is not None else self._refresh():
                found |= reader.index.find_many(wanted) >= 0
            if found.all():
                break
        return [bool(f) for f in found]

    def iter_stored(self) -> Iterator[tuple[ObjectId, bytes]]:
        for reader in self.packs():
            yield from reader.iter_entries()

    def _find_stored_prefix(self, low: bytes, high: bytes) -> list[ObjectId]:
        return [oid for reader in self.packs() for oid in reader.index.prefix_range(low, high)]

    def _stored_header(self, oid: ObjectId) -> int | None:
        if self._batch is not None and oid in self._batch:
            return codec.stored_kind(self._batch[oid])
        for _, entries in self._in_flight:
            if oid in entries:
                return codec.stored_kind(entries[oid])
        found = self._locate(oid)
        return None if found is None else found[0].header_at(found[1])

    def _has_loose(self, oid: ObjectId) -> bool:
        return self.loose.contains(oid)

    def _put_blob_chunks(self, chunks: Iterator[bytes]) -> tuple[ObjectId, int]:
        return self.loose.put_stream(chunks)

    def _read_loose(self, oid: ObjectId) -> bytes:
        return self.loose.read(oid)

    def _copy_loose(self, oid: ObjectId, dest: Path) -> None:
        self.loose.copy_to(oid, dest)

    def _iter_loose(self) -> Iterator[ObjectId]:
        return self.loose.iter_ids()

    def _find_blob_prefix(self, prefix: str) -> list[ObjectId]:
        return self.loose.find_prefix(prefix)

    def _begin_batch(self) -> None:
        self.loose.begin()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsvc-pack-writer")

    def _end_batch(self, commit: bool) -> None:
        assert self._writer is not None
        try:
            while self._in_flight:
                self._harvest(wait=True)
        except BaseException:
            commit = False
            raise
        finally:
            self._writer.shutdown(wait=True)
            self._writer = None
            for future, _ in self._in_flight:
                if future.done() and future.exception() is None:
                    self._pending.append(future.result())
            self._in_flight = []
            self._settle(commit)

    def _settle(self, commit: bool) -> None:
        """Finish (or drop) the batch's packs, then its loose blobs."""
        pending, self._pending = self._pending, []
        for pack in pending:
            if commit:
                self._packs[pack.index.name].close()
                self._open(finish_pack(pack))  # the reader now maps the pack under its final name
            else:
                self._packs.pop(pack.index.name, None)
                pack.tmp.unlink(missing_ok=True)
        self.loose.end(commit)
        if commit and len(self._packs) > MAX_PACKS:
            self.repack()
