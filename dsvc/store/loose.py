"""Loose media blobs: one raw, read-only file per blob under `ab/cd/<id>`, named by the BLAKE3 of its bytes.

Only blobs too large for packs live here (see objectstore). They are kept raw so checkout can copy them.
Storing a file streams it once: read, hash and write in the same pass, in constant memory, with the
kernel's writeback started chunk by chunk. Inside a batch the files are fsynced and renamed into place
when the batch ends, so no file appears under its id before its bytes are durable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from dsvc.atomic import fsync_dir, fsync_path, naming, start_writeback, write_all
from dsvc.errors import CorruptObject, ObjectMissing
from dsvc.hashing import CHUNK, HEX_SIZE, ObjectId, hasher, iter_chunks


class LooseBlobs:
    """The folder of loose blobs, with deferred durability for batches."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp
        self._known_dirs: set[str] = set()
        self._pending: dict[ObjectId, Path] | None = None

    def path(self, oid: bytes) -> Path:
        hexid = oid.hex()
        return self.root / hexid[:2] / hexid[2:4] / hexid

    def contains(self, oid: bytes) -> bool:
        return (self._pending is not None and oid in self._pending) or self.path(oid).is_file()

    def contains_many(self, oids: Sequence[bytes]) -> list[bool]:
        """`contains` for many ids, listing each folder on their paths once instead of looking for
        each file: checking 20k blobs against a store with few large ones takes a few listings."""
        listed: dict[str, set[str]] = {}

        def names(folder: str) -> set[str]:
            if folder not in listed:
                try:
                    listed[folder] = set(os.listdir(os.path.join(self.root, folder)))
                except (FileNotFoundError, NotADirectoryError):
                    listed[folder] = set()
            return listed[folder]

        found = []
        for oid in oids:
            hexid = oid.hex()
            top, sub = hexid[:2], hexid[2:4]
            maybe = top in names("") and sub in names(top) and hexid in names(os.path.join(top, sub))
            found.append(self.contains(oid) if maybe or self._pending else False)
        return found

    def _source(self, oid: bytes) -> Path:
        """Where a blob's bytes are now: its final place, or its temporary file inside a batch."""
        pending = self._pending.get(ObjectId(oid)) if self._pending is not None else None
        return pending or self.path(oid)

    def begin(self) -> None:
        self._pending = {}

    def end(self, commit: bool) -> None:
        """Finish a batch: flush all new files with one sync, then rename them into place."""
        pending, self._pending = self._pending or {}, None
        if not pending:
            return
        if not commit:
            for tmp in pending.values():
                tmp.unlink(missing_ok=True)
            return
        folders = set()
        for oid, tmp in pending.items():
            fsync_path(tmp)
            self._install(tmp, oid)
            folders.add(self.path(oid).parent)
        for folder in folders:
            fsync_dir(folder)

    def _install(self, tmp: Path, oid: ObjectId) -> None:
        dest = self.path(oid)
        folder = dest.parent
        key = str(folder)
        if key not in self._known_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(key)
        os.replace(tmp, dest)

    def put_stream(self, chunks: Iterator[bytes]) -> tuple[ObjectId, int]:
        """Store a stream of bytes; return its id and size. Existing blobs are not written again."""
        tmp = self.tmp / f"blob-{secrets.token_hex(8)}"
        h = hasher(threaded=True)
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            for chunk in chunks:
                h.update(chunk)
                write_all(fd, chunk)
                start_writeback(fd, size, len(chunk))
                size += len(chunk)
            if self._pending is None:
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise naming(exc, self.tmp) from None
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        oid = ObjectId(h.digest())
        if self.contains(oid):
            tmp.unlink()
        elif self._pending is not None:
            self._pending[oid] = tmp
        else:
            self._install(tmp, oid)
            fsync_dir(self.path(oid).parent)
        return oid, size

    def read(self, oid: ObjectId) -> bytes:
        """Return a blob's bytes after checking they hash to its id."""
        try:
            data = self._source(oid).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"blob {oid.hex()} is not in the store") from None
        h = hasher()
        h.update(data)
        if h.digest() != oid:
            raise CorruptObject(f"blob {oid.hex()} is corrupt: its bytes do not hash to its id")
        return data

    def copy_to(self, oid: ObjectId, dest: Path) -> None:
        """Copy a blob to dest through a temporary file, verifying its hash on the way."""
        src = self._source(oid)
        tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
        h = hasher()
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                for chunk in iter_chunks(fin, CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            if not src.exists():
                raise ObjectMissing(f"blob {oid.hex()} is not in the store") from None
            raise
        if h.digest() != oid:
            tmp.unlink(missing_ok=True)
            raise CorruptObject(f"blob {oid.hex()} is corrupt: its bytes do not hash to its id")
        os.replace(tmp, dest)

    def iter_ids(self) -> Iterator[ObjectId]:
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            for second in sorted(first.iterdir()):
                for entry in sorted(second.iterdir()):
                    if len(entry.name) == HEX_SIZE:
                        yield ObjectId(bytes.fromhex(entry.name))

    def find_prefix(self, prefix: str) -> list[ObjectId]:
        """Return the blobs whose hex id starts with prefix (at least 4 digits)."""
        folder = self.root / prefix[:2] / prefix[2:4]
        if not folder.is_dir():
            return []
        return [ObjectId(bytes.fromhex(e.name)) for e in folder.iterdir() if e.name.startswith(prefix)]
