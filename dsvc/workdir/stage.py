"""Staging: turn the working tree into the column maps a commit records (DESIGN §7).

Plain files go into the `files` map as blobs; annotation sources are parsed into `frames`, `labels` and
`sources`. The stat cache means an unchanged file costs one `stat` and is never read; a changed source is
parsed again, and only frames and labels whose content changed produce new objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from dsvc import codec, tree
from dsvc.errors import InvalidInput
from dsvc.formats import FrameRecord, get_format
from dsvc.hashing import ObjectId, hash_bytes, hash_file
from dsvc.objects import FileEntry, Frame, Labels, Media, Source
from dsvc.store import ObjectStore
from dsvc.workdir.index import Index, StatEntry
from dsvc.workdir.scan import ScannedFile, scan

COLUMNS = ("files", "frames", "labels", "sources")

T = TypeVar("T")


class Progress(Protocol):
    """Something that wraps an iterable to show how far it got (a progress bar on a terminal)."""

    def __call__(self, items: Iterable[T], total: int | None, label: str) -> Iterable[T]: ...


def no_progress(items: Iterable[T], total: int | None, label: str) -> Iterable[T]:
    """The default progress reporter: none."""
    return items


@dataclass(frozen=True)
class SourceSpec:
    """A registered annotation source (from `.dsvc/config`)."""

    path: str
    format: str
    media: str


@dataclass
class FileState:
    """A working-tree file resolved to its blob: from the cache (not read) or hashed now."""

    scanned: ScannedFile
    blob: ObjectId
    hashed: bool


@dataclass
class StageResult:
    """What staging found and wrote; `roots` are the new column roots."""

    roots: dict[str, ObjectId]
    files_read: int = 0
    files_reused: int = 0
    sources_parsed: list[str] = field(default_factory=list)
    external_media: int = 0
    stats: list[tuple[str, int, int, int, ObjectId]] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    stamps: dict[str, bytes | None] = field(default_factory=dict)


def empty_roots() -> dict[str, ObjectId]:
    """Roots of an empty dataset (the empty node is stored by whoever commits them)."""
    return dict.fromkeys(COLUMNS, tree.EMPTY.id)


def owned_paths(root: Path, specs: Iterable[SourceSpec]) -> frozenset[str]:
    """Files that sources render, which are therefore not tracked as plain files."""
    owned: set[str] = set()
    for spec in specs:
        owned |= get_format(spec.format).owned_paths(spec.path, root, spec.media)
        owned.add(spec.path)
    return frozenset(owned)


def resolve_files(
    root: Path, scanned: Iterable[ScannedFile], cache: Mapping[str, StatEntry], store: ObjectStore | None
) -> Iterator[FileState]:
    """Give each scanned file its blob id: cached when its stat is trusted, else read (and stored)."""
    for found in scanned:
        entry = cache.get(found.path)
        if entry is not None and entry.matches(found.size, found.mtime_ns, found.ino):
            yield FileState(found, entry.blob, False)
        elif store is None:
            yield FileState(found, hash_file(root / found.path), True)
        else:
            yield FileState(found, store.put_blob_file(root / found.path)[0], True)


def source_stamp(root: Path, spec: SourceSpec, owned: Iterable[str]) -> bytes:
    """A fingerprint of a source's registration and the stat data of every file it owns."""
    parts: list[object] = [spec.path, spec.format, spec.media]
    for rel in sorted(owned):
        try:
            st = (root / rel).stat()
        except FileNotFoundError:
            parts.append([rel, None])
            continue
        parts.append([rel, st.st_size, st.st_mtime_ns, st.st_ino])
    return hash_bytes(codec.encode(parts))


def tracked_under(store: ObjectStore, files_root: ObjectId, path: str) -> list[str]:
    """The paths of the files map that are path itself or under path/ (a file or a folder)."""
    key = path.encode()
    # [key, key + "0") holds key and key + "/..." ("0" is the byte after "/"), and a few siblings to skip
    return [
        k.decode()
        for k, _ in tree.items(store, files_root, key, key + b"0")
        if k == key or k.startswith(key + b"/")
    ]


def _in_scope(path: str, under: list[str] | None) -> bool:
    return under is None or any(path == u or path.startswith(u.rstrip("/") + "/") or not u for u in under)


def stage(
    store: ObjectStore,
    index: Index,
    root: Path,
    specs: list[SourceSpec],
    base: Mapping[str, ObjectId],
    under: list[str] | None = None,
    require_media: bool = False,
    progress: Progress = no_progress,
) -> StageResult:
    """Stage the working tree (or the paths under `under`) on top of base roots; call inside store.batch().

    `progress` wraps the files as they are resolved, so a caller can show a bar."""
    result = StageResult(roots=dict(base))
    cache = index.stat_entries()
    owned = owned_paths(root, specs)
    scanned = list(scan(root, under, owned))
    for path in under or ():
        if not (root / path).exists() and not tracked_under(store, base["files"], path):
            raise InvalidInput("matches no file in the working tree or in the staged state", path=path)
    files = list(resolve_files(root, progress(scanned, len(scanned), "reading files"), cache, store))
    for state in files:
        if state.hashed:
            result.files_read += 1
            s = state.scanned
            result.stats.append((s.path, s.size, s.mtime_ns, s.ino, state.blob))
        else:
            result.files_reused += 1
    result.roots["files"] = _stage_files(store, base["files"], files, under, owned, result)
    stamps = {spec.path: source_stamp(root, spec, owned_paths(root, [spec])) for spec in specs}
    changed = [
        s
        for s in specs
        if _in_scope(s.path, under) and (require_media or index.source_stamp(s.path) != stamps[s.path])
    ]
    old_sources = {key.decode() for key, _ in tree.items(store, base["sources"])}
    if changed or old_sources != {s.path for s in specs}:
        store.drain()  # the media's write buffers are freed before the parse takes its memory
        blobs = {f.scanned.path: (f.blob, f.scanned.size) for f in files}
        _stage_sources(store, root, specs, blobs, require_media, result)
        result.sources_parsed = [s.path for s in specs]
        result.stamps = dict(stamps)
        result.stamps.update({gone: None for gone in old_sources - {s.path for s in specs}})
    return result


def _stage_files(
    store: ObjectStore,
    base_root: ObjectId,
    files: list[FileState],
    under: list[str] | None,
    owned: frozenset[str],
    result: StageResult,
) -> ObjectId:
    present = file_entries(files)
    edits: list[tuple[bytes, bytes | None]] = []
    for key, value in tree.items(store, base_root):
        path = key.decode()
        if path in owned:  # a path that became a source's file is no longer a plain file
            edits.append((key, None))
            continue
        if not _in_scope(path, under):
            continue
        now = present.pop(path, None)
        if now is None:
            edits.append((key, None))
            result.forget.append(path)
        elif now != value:
            edits.append((key, now))
    edits += [(path.encode(), value) for path, value in present.items()]
    return tree.apply(store, base_root, edits)


def file_entries(files: Iterable[FileState]) -> dict[str, bytes]:
    """The `files` map value each resolved working-tree file would have, by path."""
    return {f.scanned.path: FileEntry(f.blob, f.scanned.mode, f.scanned.size).to_bytes() for f in files}


def frame_of(
    record: FrameRecord, source: str, blobs: Mapping[str, tuple[ObjectId, int]]
) -> tuple[Frame, int]:
    """Build a Frame from a parsed record; media not in the working tree become external references."""
    media = []
    external = 0
    for path in record.media:
        found = blobs.get(path)
        if found is None:
            external += 1
            media.append(Media(path, None, None, record.url))
        else:
            media.append(Media(path, found[0], found[1], None))
    if not record.media and record.url:
        external += 1
    return Frame(tuple(media), record.metadata, source), external


@dataclass(frozen=True)
class ParsedFrames:
    """Every source parsed: frame id -> (frame, labels, source path), sorted by id, plus the sources."""

    frames: dict[str, tuple[Frame, Labels, str]]
    sources: list[Source]
    external_media: int


def parse_sources(
    root: Path,
    specs: list[SourceSpec],
    blobs: Mapping[str, tuple[ObjectId, int]],
    require_media: bool = False,
) -> ParsedFrames:
    """Parse every source into typed frames and labels; frame ids must be unique across sources."""
    frames: dict[str, tuple[Frame, Labels, str]] = {}
    sources = []
    external = 0
    for spec in sorted(specs, key=lambda s: s.path):
        parsed = get_format(spec.format).parse(spec.path, spec.media, root)
        sources.append(Source(spec.path, spec.format, spec.media, parsed.metadata))
        for record in parsed.frames:
            if record.id in frames:
                raise InvalidInput(
                    f"frame {record.id!r} is also named by {frames[record.id][2]}", path=spec.path
                )
            frame, missing = frame_of(record, spec.path, blobs)
            if (missing or record.absent) and require_media:
                raise InvalidInput(
                    f"media of frame {record.id!r} not found under {spec.media}/", path=spec.path
                )
            external += missing
            frames[record.id] = (frame, record.labels, spec.path)
    return ParsedFrames(dict(sorted(frames.items())), sources, external)


def _stage_sources(
    store: ObjectStore,
    root: Path,
    specs: list[SourceSpec],
    blobs: Mapping[str, tuple[ObjectId, int]],
    require_media: bool,
    result: StageResult,
) -> None:
    parsed = parse_sources(root, specs, blobs, require_media)
    result.external_media = parsed.external_media
    ids = []
    for fid in list(parsed.frames):
        # Dropped once put: then only the batch holds a frame's objects, until its next pack is written.
        frame, labels, _ = parsed.frames.pop(fid)
        ids.append((fid.encode(), store.put_object(frame), store.put_object(labels)))
    result.roots["frames"] = tree.build(store, ((k, f) for k, f, _ in ids))
    result.roots["labels"] = tree.build(store, ((k, lab) for k, _, lab in ids))
    result.roots["sources"] = tree.build(
        store, ((s.path.encode(), store.put_object(s)) for s in parsed.sources)
    )


def labels_of(store: ObjectStore, labels_root: ObjectId, frame_id: str) -> Labels:
    """The labels of one frame (none when it has no entry)."""
    value = tree.get(store, labels_root, frame_id.encode())
    return Labels(()) if value is None else store.get_object(ObjectId(value), Labels)
