"""The render cache: bytes of single-file annotation sources, kept so a checkout copies them back instead
of rendering every frame and label again (DESIGN §7 renders a source from frames and labels; at 100k
frames that is tens of seconds, a copy well under one).

An entry is the exact file a version's frames and labels were parsed from (kept by `add`) or rendered to
(by a checkout), named by a key of the source object and the frames and labels roots it describes, and
holding the BLAKE3 of its bytes: an entry that does not verify is a miss, never an error, since the
frames and labels can always render the file again. It is local state: never pushed, not in clones,
and only the newest few are kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import zstandard

from dsvc import codec, tree
from dsvc.atomic import fsync_dir, start_writeback, temporary_file, write_all, write_file
from dsvc.hashing import ID_SIZE, ObjectId, hash_bytes, hasher
from dsvc.store import ObjectStore
from dsvc.workdir.index import RACY_NS
from dsvc.workdir.stage import SourceSpec, owned_paths, source_stamp

FOLDER = "renders"
VERSION = 1  # in every key: a dsvc whose renders differ starts from an empty cache
KEPT = 8  # entries: a few versions' worth of each source
CHUNK = 8 << 20  # bytes decompressed, hashed and written at a time
LEVEL = 1  # zstd: JSON shrinks ~4x at several hundred MB/s; higher levels cost more than they save


def key(store: ObjectStore, roots: Mapping[str, ObjectId], path: str) -> str | None:
    """The entry name of a source's file in a version (None: the version has no such source)."""
    source = tree.get(store, roots["sources"], path.encode())
    if source is None:
        return None
    return hash_bytes(codec.encode([VERSION, source, roots["frames"], roots["labels"]])).hex()


def restore(folder: Path, name: str, dest: Path, mode: int = 0o644) -> bool:
    """Write an entry's bytes to dest (temporary name, fsync, rename; its folder made if needed),
    streaming and hashing them and starting the disk's writeback as they come, so the fsync finds
    little left; False, with dest untouched, when the entry is missing or damaged."""
    try:
        handle = open(folder / name, "rb")  # noqa: SIM115 (the with below closes it)
    except FileNotFoundError:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hasher(threaded=True)
    with handle, temporary_file(dest, mode) as (fd, tmp):
        want = handle.read(ID_SIZE)
        written = 0
        try:
            for chunk in zstandard.ZstdDecompressor().read_to_iter(handle, write_size=CHUNK):
                h.update(chunk)
                write_all(fd, chunk)
                start_writeback(fd, written, len(chunk))
                written += len(chunk)
            intact = h.digest() == want
        except zstandard.ZstdError:
            intact = False
        if intact:
            os.fsync(fd)
    if not intact:
        tmp.unlink()
        return False
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return True


def save(folder: Path, name: str, data: bytes) -> None:
    """Keep data under name, dropping the oldest entries past KEPT. Not fsynced: a torn entry fails
    its hash and is a miss."""
    folder.mkdir(exist_ok=True)
    packed = hash_bytes(data) + zstandard.ZstdCompressor(level=LEVEL, threads=-1).compress(data)
    write_file(folder / name, packed, durable=False)
    entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[KEPT:]:
        old.unlink(missing_ok=True)


def keep_parsed(folder: Path, root: Path, spec: SourceSpec, name: str, stamp: bytes, since_ns: int) -> bool:
    """Keep a source file that `add` just parsed, if it provably still holds the parsed bytes: its stat
    fingerprint is the one recorded before parsing (`stamp`), and its mtime is older than the moment
    the add began, so no write since (not even one within a timestamp tick) can have changed it."""
    if owned_paths(root, [spec]) != {spec.path}:
        return False  # sources of many files are rendered
    full = root / spec.path
    try:
        data = full.read_bytes()
        mtime_ns = os.stat(full).st_mtime_ns
    except OSError:
        return False
    if mtime_ns >= since_ns - RACY_NS or source_stamp(root, spec, [spec.path]) != stamp:
        return False
    save(folder, name, data)
    return True
