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
from dsvc.atomic import write_file
from dsvc.hashing import ID_SIZE, ObjectId, hash_bytes
from dsvc.store import ObjectStore
from dsvc.workdir.index import RACY_NS
from dsvc.workdir.stage import SourceSpec, owned_paths, source_stamp

FOLDER = "renders"
KEPT = 8  # entries: a few versions' worth of each source
LEVEL = 1  # zstd: JSON shrinks ~4x at several hundred MB/s; higher levels cost more than they save


def key(store: ObjectStore, roots: Mapping[str, ObjectId], path: str) -> str | None:
    """The entry name of a source's file in a version (None: the version has no such source)."""
    source = tree.get(store, roots["sources"], path.encode())
    if source is None:
        return None
    return hash_bytes(codec.encode([source, roots["frames"], roots["labels"]])).hex()


def load(folder: Path, name: str) -> bytes | None:
    """The bytes of an entry, verified; None when it is missing or damaged."""
    try:
        stored = (folder / name).read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = zstandard.ZstdDecompressor().decompress(stored[ID_SIZE:])
    except zstandard.ZstdError:
        return None
    return data if hash_bytes(data) == stored[:ID_SIZE] else None


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
