"""Checkout: make the working tree match a set of roots, writing only what differs (DESIGN §7).

Plain files that differ are copied from the store (verified), files the target lacks are removed, and
annotation sources are copied from the render cache or rendered from the target's frames and labels.
Local changes that the checkout would overwrite are refused unless forced. Every path is checked to stay
inside the working tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dsvc import tree, tree_diff
from dsvc.atomic import prune_empty_dirs, sync_filesystem, write_file
from dsvc.dataset import iter_frames
from dsvc.errors import DsvcError, InvalidInput
from dsvc.formats import get_format
from dsvc.gcpause import paused_gc
from dsvc.hashing import ObjectId
from dsvc.objects import FileEntry, Source
from dsvc.store import DiskObjectStore, ObjectStore
from dsvc.workdir import renders
from dsvc.workdir.apart import Apart
from dsvc.workdir.index import StatRow
from dsvc.workdir.scan import DSVC_DIR, file_mode
from dsvc.workdir.stage import Progress, SourceSpec, no_progress, owned_paths, source_stamp
from dsvc.workdir.status import Changes

# Files to write from which a checkout renders its annotation sources in a second process meanwhile: a
# chosen threshold, not tuned (starting the process with its imports took 0.28-0.35 s here).
RENDER_APART_FROM = 2000


@dataclass
class CheckoutResult:
    """What a checkout wrote, for the stat cache and the report."""

    written: list[StatRow] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rendered: list[str] = field(default_factory=list)
    stamps: dict[str, bytes | None] = field(default_factory=dict)


def safe_path(root: Path, rel: str) -> Path:
    """Resolve a stored relative path inside the working tree, refusing anything that would escape it."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ".." in parts or (parts and parts[0] == DSVC_DIR) or "\\" in rel:
        raise InvalidInput("refusing to write outside the working tree", path=rel)
    return root.joinpath(*parts)


def sources_of(store: ObjectStore, roots: Mapping[str, ObjectId]) -> list[Source]:
    return [store.get_object(ObjectId(v), Source) for _, v in tree.items(store, roots["sources"])]


def _conflicts(
    store: ObjectStore,
    current: Mapping[str, ObjectId],
    target: Mapping[str, ObjectId],
    dirty: Changes,
    changes: Mapping[bytes, bytes | None],
) -> list[str]:
    touched = {key.decode() for key in changes}
    local = {p for kind in ("modified", "removed") for p in dirty.files[kind]}
    untracked = set(dirty.files["added"])
    found = sorted((touched & local) | {p for p in untracked if tree.get(store, target["files"], p.encode())})
    if _sources_differ(current, target) and any(dirty.frames.values()):
        found.append("annotation sources (frames changed locally)")
    return found


def checkout(
    store: ObjectStore,
    root: Path,
    current: Mapping[str, ObjectId],
    target: Mapping[str, ObjectId],
    dirty: Changes,
    force: bool = False,
    fetch_blobs: Callable[[list[ObjectId]], object] | None = None,
    progress: Progress = no_progress,
    cache: Path | None = None,
) -> CheckoutResult:
    """Bring the working tree from current to target; refuse to lose local changes unless forced.

    `fetch_blobs` is given, once, the blobs to write that the store lacks (a clone without media gets
    exactly the media of the files it writes). `cache` is the render cache folder (`renders`): sources
    found there are copied, the others rendered and kept there."""
    changes = {c.key: c.new for c in tree_diff.diff(store, current["files"], target["files"])}
    if not force:
        conflicts = _conflicts(store, current, target, dirty, changes)
        if conflicts:
            listed = ", ".join(conflicts[:5]) + (
                f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
            )
            raise DsvcError(f"local changes would be overwritten: {listed} (commit them, or use --force)")
    result = CheckoutResult()
    if force:  # also restore tracked files that were changed or deleted locally
        for path in (*dirty.files["modified"], *dirty.files["removed"]):
            changes.setdefault(path.encode(), tree.get(store, target["files"], path.encode()))
    if fetch_blobs is not None:
        blobs = [FileEntry.from_bytes(v).blob for v in changes.values() if v is not None]
        unique = list(dict.fromkeys(blobs))
        missing = [b for b, here in zip(unique, store.has_blobs(unique), strict=True) if not here]
        if missing:
            fetch_blobs(missing)
    new_sources = _sources_to_render(store, current, target, dirty, force)
    ordered = sorted(changes.items())
    for key, value in ordered:  # removals first: no folder vanishes under a render
        if value is None:
            rel = key.decode()
            dest = safe_path(root, rel)
            if dest.is_file() or dest.is_symlink():
                dest.unlink()
                prune_empty_dirs(dest.parent, root)
            result.removed.append(rel)
    writes = [(key, value) for key, value in ordered if value is not None]
    apart = len(writes) >= RENDER_APART_FROM
    with _rendering(store, root, target, new_sources, cache, apart) as rendered:
        _write_files(store, root, writes, result, progress)
        if result.written or result.removed:  # files were written without an fsync each: one sync for all
            sync_filesystem(root)
        if new_sources is not None:
            _finish_sources(store, root, current, new_sources, rendered(), result)
    return result


def _write_files(
    store: ObjectStore,
    root: Path,
    writes: list[tuple[bytes, bytes]],
    result: CheckoutResult,
    progress: Progress,
) -> None:
    folders: set[Path] = set()  # made (or found) here: one mkdir per folder, not per file
    for key, value in progress(writes, len(writes), "writing files"):
        rel = key.decode()
        dest = safe_path(root, rel)
        entry = FileEntry.from_bytes(value)
        if dest.parent not in folders:
            dest.parent.mkdir(parents=True, exist_ok=True)
            folders.add(dest.parent)
        store.copy_blob(entry.blob, dest)
        st = dest.stat()
        if file_mode(st.st_mode) != entry.mode:  # new files are not executable: only these need it
            os.chmod(dest, entry.mode)
            st = dest.stat()
        result.written.append((rel, st.st_size, st.st_mtime_ns, st.st_ino, entry.blob, file_mode(st.st_mode)))


def _sources_to_render(
    store: ObjectStore,
    current: Mapping[str, ObjectId],
    target: Mapping[str, ObjectId],
    dirty: Changes,
    force: bool,
) -> dict[str, Source] | None:
    """The target's sources by path, when their files must be written again (None: they stand)."""
    if not _sources_differ(current, target) and not (force and any(dirty.frames.values())):
        return None
    return {s.path: s for s in sources_of(store, target)}


def _sources_differ(current: Mapping[str, ObjectId], target: Mapping[str, ObjectId]) -> bool:
    """Whether the annotation sources render differently: they are rendered from these columns."""
    return any(current[c] != target[c] for c in ("sources", "frames", "labels"))


@contextmanager
def _rendering(
    store: ObjectStore,
    root: Path,
    target: Mapping[str, ObjectId],
    sources: Mapping[str, Source] | None,
    cache: Path | None,
    apart: bool,
) -> Iterator[Callable[[], dict[str, Collection[str]]]]:
    """Write the sources' files while the caller writes the plain files; yields what returns the files
    written per source. Apart, a second process renders: rendering is pure Python, and in a thread it
    would wait on the GIL the file writes keep taking back (on two cores, a checkout of 50k frames went
    from 14-17 s to 9-11 s). Only a store another process can open whole can be read apart."""
    shared = store.shared_root()
    if sources is None or not apart or shared is None:
        yield lambda: _render_all(store, root, target, sources or {}, cache)
        return
    with Apart(_render_apart, shared, store.level, root, dict(target), dict(sources), cache) as job:
        yield job.result


def _render_apart(
    objects: Path,
    level: int,
    root: Path,
    target: dict[str, ObjectId],
    sources: dict[str, Source],
    cache: Path | None,
) -> dict[str, Collection[str]]:
    """`_render_all` in a process of its own, on its own reader of the store."""
    with paused_gc():
        return _render_all(DiskObjectStore(objects, level), root, target, sources, cache)


def _render_all(
    store: ObjectStore,
    root: Path,
    target: Mapping[str, ObjectId],
    sources: Mapping[str, Source],
    cache: Path | None,
) -> dict[str, Collection[str]]:
    """Write each source's files, copied from the render cache or rendered (and kept there); return the
    files written per source."""
    written: dict[str, Collection[str]] = {}
    for path, source in sources.items():
        fmt = get_format(source.format)
        name = renders.key(store, target, path)
        if cache is not None and name is not None and renders.restore(cache, name, safe_path(root, path)):
            written[path] = [path]
            continue
        rendered = fmt.render(source, [f for f in iter_frames(store, target) if f[1].source == path])
        if cache is not None and name is not None and set(rendered) == {path}:
            renders.save(cache, name, rendered[path])
        for rel, data in sorted(rendered.items()):
            out = safe_path(root, rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_file(out, data)
        written[path] = list(rendered)
    return written


def _finish_sources(
    store: ObjectStore,
    root: Path,
    current: Mapping[str, ObjectId],
    new: Mapping[str, Source],
    written: Mapping[str, Collection[str]],
    result: CheckoutResult,
) -> None:
    """Remove what the sources no longer render, and record each source's stamp."""
    old = {s.path: s for s in sources_of(store, current)}
    for path, source in new.items():
        fmt = get_format(source.format)
        for rel in fmt.owned_paths(path, root, source.media) - set(written[path]):
            safe_path(root, rel).unlink(missing_ok=True)
        result.rendered.append(path)
        spec = SourceSpec(source.path, source.format, source.media)
        result.stamps[path] = source_stamp(root, spec, owned_paths(root, [spec]))
    for path in set(old) - set(new):
        gone = SourceSpec(path, old[path].format, old[path].media)
        for rel in owned_paths(root, [gone]):
            safe_path(root, rel).unlink(missing_ok=True)
        result.stamps[path] = None
