"""An object store in dicts: for tests and throwaway work, with the on-disk store's behaviour."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from dsvc import codec
from dsvc.atomic import Buffer, write_file
from dsvc.errors import CorruptObject, ObjectMissing
from dsvc.hashing import ObjectId, hash_bytes
from dsvc.store.objectstore import ObjectStore


class MemoryObjectStore(ObjectStore):
    """An object store in dicts: for tests and throwaway work, same behaviour as on disk."""

    def __init__(self, compression_level: int = codec.DEFAULT_LEVEL) -> None:
        super().__init__(compression_level)
        self.objects: dict[ObjectId, bytes] = {}
        self.blobs: dict[ObjectId, bytes] = {}
        self._pending_blobs: dict[ObjectId, bytes] | None = None

    def _read_stored(self, oid: ObjectId) -> bytes | None:
        return self.objects.get(oid)

    def _write_stored(self, entries: Mapping[ObjectId, Buffer]) -> None:
        self.objects.update((oid, bytes(stored)) for oid, stored in entries.items())  # not views

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

    def _wait_for_writes(self) -> None:
        return  # writes are done when _write_stored returns

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
