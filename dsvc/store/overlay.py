"""A scratch store over a real one: reads fall through to the base, writes stay in memory.

It lets the working tree be staged into column roots (to diff it like any commit) without writing a single
object into the repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dsvc.hashing import ObjectId
from dsvc.store.memory import MemoryObjectStore
from dsvc.store.objectstore import ObjectStore


class OverlayObjectStore(MemoryObjectStore):
    """New objects and blobs in dicts, everything else read (verified) from the base store."""

    def __init__(self, base: ObjectStore) -> None:
        super().__init__(base.level)
        self.base = base

    def _read_stored(self, oid: ObjectId) -> bytes | None:
        mine = self.objects.get(oid)
        return mine if mine is not None else self.base._read_stored(oid)

    def _has_stored(self, oids: list[ObjectId]) -> list[bool]:
        theirs = self.base._has_stored(oids)
        return [oid in self.objects or found for oid, found in zip(oids, theirs, strict=True)]

    def _find_stored_prefix(self, low: bytes, high: bytes) -> list[ObjectId]:
        return sorted({*super()._find_stored_prefix(low, high), *self.base._find_stored_prefix(low, high)})

    def _has_loose(self, oid: ObjectId) -> bool:
        return super()._has_loose(oid) or self.base._has_loose(oid)

    def _read_loose(self, oid: ObjectId) -> bytes:
        return super()._read_loose(oid) if super()._has_loose(oid) else self.base._read_loose(oid)

    def _copy_loose(self, oid: ObjectId, dest: Path) -> None:
        if super()._has_loose(oid):
            super()._copy_loose(oid, dest)
        else:
            self.base._copy_loose(oid, dest)

    def _find_blob_prefix(self, prefix: str) -> list[ObjectId]:
        return sorted({*super()._find_blob_prefix(prefix), *self.base._find_blob_prefix(prefix)})

    def iter_stored(self) -> Iterator[tuple[ObjectId, bytes]]:
        """Only the overlay's own objects: the base's are not part of the scratch work."""
        yield from super().iter_stored()
