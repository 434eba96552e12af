"""The on-disk object store: packs under `objects/packs`, large blobs under `objects/loose` (DESIGN §5)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dsvc import codec
from dsvc.atomic import Buffer
from dsvc.errors import ObjectMissing
from dsvc.hashing import ObjectId
from dsvc.store.loose import LooseBlobs
from dsvc.store.objectstore import MAX_IN_FLIGHT, MAX_PACKS, SMALL_PACK, ObjectStore
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

RECENT_PACKS = 4  # packs of the latest hits, searched first


class DiskObjectStore(ObjectStore):
    """Packs under `objects/packs`, loose blobs under `objects/loose`; see DESIGN §5."""

    def __init__(self, root: Path, compression_level: int = codec.DEFAULT_LEVEL) -> None:
        super().__init__(compression_level)
        self.root = root
        self.pack_dir = root / "packs"
        self.loose = LooseBlobs(root / "loose", root / "tmp")
        self._packs: dict[str, PackReader] = {}
        self._recent: list[str] = []
        # Packs of the current batch: written by a background thread while the caller goes on reading and
        # hashing (on two cores the copy then costs little time), durable and visible when the batch ends.
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: list[tuple[Future[PendingPack], Mapping[ObjectId, Buffer]]] = []
        self._pending: list[PendingPack] = []

    @classmethod
    def create(cls, root: Path, compression_level: int = codec.DEFAULT_LEVEL) -> DiskObjectStore:
        for sub in ("packs", "loose", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return cls(root, compression_level)

    def shared_root(self) -> Path | None:
        return self.root if self._batch is None else None

    def remove_temporaries(self) -> int:
        """Delete half-written packs and blobs a killed writer left; call only with the writer lock held.
        Return how many were removed."""
        leftovers = [*self.pack_dir.glob(".*.tmp-*"), *(self.root / "tmp").glob("*")]
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

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
        """The pack holding oid and its position there, looking again for new packs on a miss.

        The packs of the last few hits are searched first: a walk of a tree reads nodes written together (a
        build writes in key order), so with dozens of packs this saves most of the searches."""
        for name in self._recent:  # by name: a pack's reader changes when its batch ends or it is merged
            recent = self._packs.get(name)
            position = -1 if recent is None else recent.index.find(oid)
            if recent is not None and position >= 0:
                return recent, position
        for readers in (list(self._packs.values()), None):
            for reader in readers if readers is not None else self._refresh():
                position = reader.index.find(oid)
                if position >= 0:
                    self._recent = [reader.index.name, *self._recent[: RECENT_PACKS - 1]]
                    return reader, position
        return None

    def _locate_many(self, oids: list[ObjectId]) -> list[tuple[PackReader, int] | None]:
        """Where each id is packed (None when not), with one vectorised search per pack."""
        wanted = np.array(oids, dtype=ID_DTYPE)
        where: list[tuple[PackReader, int] | None] = [None] * len(oids)
        missing = np.ones(len(oids), dtype=bool)
        for reader in self.packs():
            todo = np.flatnonzero(missing)  # each pack is searched for what no earlier one held
            if not len(todo):
                break
            positions = reader.index.find_many(wanted[todo])
            for i, position in zip(todo[positions >= 0], positions[positions >= 0], strict=True):
                where[i] = (reader, int(position))
            missing[todo[positions >= 0]] = False
        return where

    def get_many(self, oids: list[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
        """Locate all ids with one search per pack, then read them in the order given."""
        if not oids or self._batch is not None:
            yield from super().get_many(oids)
            return
        for oid, found in zip(oids, self._locate_many(oids), strict=True):
            if found is None:
                raise ObjectMissing(f"object {oid.hex()} is not in the store")
            yield oid, bytes(self._verified(oid, found[0].view_at(found[1]), blob=False))

    def stored_many(self, oids: list[ObjectId]) -> Iterator[tuple[ObjectId, Buffer]]:
        """Stored bytes of many objects and blobs, located with one search per pack; packed ones are
        views of their pack, not copies."""
        if not oids or self._batch is not None:
            yield from super().stored_many(oids)
            return
        for oid, found in zip(oids, self._locate_many(oids), strict=True):
            yield oid, found[0].view_at(found[1]) if found is not None else self.stored_bytes(oid)

    def _read_stored(self, oid: ObjectId) -> bytes | None:
        stored = self._lend_stored(oid)
        return None if stored is None else bytes(stored)

    def _lend_stored(self, oid: ObjectId) -> Buffer | None:
        """A view of the mapped pack; bytes while the pack is still being written."""
        for _, entries in self._in_flight:
            if oid in entries:
                return entries[oid]
        found = self._locate(oid)
        return None if found is None else found[0].view_at(found[1])

    def _write_stored(self, entries: Mapping[ObjectId, Buffer]) -> None:
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
        located = self._locate_many(oids) if oids else []
        return [
            found is not None or any(oid in entries for _, entries in self._in_flight)
            for oid, found in zip(oids, located, strict=True)
        ]

    def index_problems(self) -> Iterator[tuple[str, str]]:
        for reader in self.packs():
            problem = reader.index.checksum_problem()
            if problem is not None:
                yield f"{reader.index.name}.idx", problem

    def iter_stored(self) -> Iterator[tuple[ObjectId, bytes]]:
        for reader in self.packs():
            yield from reader.iter_entries()

    def _find_stored_prefix(self, low: bytes, high: bytes) -> list[ObjectId]:
        return [oid for reader in self.packs() for oid in reader.index.prefix_range(low, high)]

    def _stored_header(self, oid: ObjectId) -> int | None:
        pending = self._batch_kind(oid)
        if pending is not None:
            return pending
        for _, entries in self._in_flight:
            if oid in entries:
                return codec.stored_kind(entries[oid])
        found = self._locate(oid)
        return None if found is None else found[0].header_at(found[1])

    def _has_loose(self, oid: ObjectId) -> bool:
        return self.loose.contains(oid)

    def _has_loose_many(self, oids: list[ObjectId]) -> list[bool]:
        return self.loose.contains_many(oids)

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

    def _wait_for_writes(self) -> None:
        while self._in_flight:
            self._harvest(wait=True)

    def _end_batch(self, commit: bool) -> None:
        assert self._writer is not None
        try:
            self._wait_for_writes()
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
