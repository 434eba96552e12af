"""Checkout: make the working tree match a set of roots, writing only what differs (DESIGN §7).

Plain files that differ are copied from the store (verified), files the target lacks are removed, and
annotation sources are copied from the render cache or rendered from the target's frames and labels.
Local changes that the checkout would overwrite are refused unless forced. Every path is checked to stay
inside the working tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dsvc import tree, tree_diff
from dsvc.atomic import prune_empty_dirs, sync_filesystem, write_file
from dsvc.dataset import iter_frames
from dsvc.errors import DsvcError, InvalidInput
from dsvc.formats import get_format
from dsvc.hashing import ObjectId
from dsvc.objects import FileEntry, Source
from dsvc.store import ObjectStore
from dsvc.workdir import renders
from dsvc.workdir.index import StatRow
from dsvc.workdir.scan import DSVC_DIR, file_mode
from dsvc.workdir.stage import Progress, SourceSpec, no_progress, owned_paths, source_stamp
from dsvc.workdir.status import Changes


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
    renders = (
        current["sources"] != target["sources"]
        or current["frames"] != target["frames"]
        or (current["labels"] != target["labels"])
    )
    if renders and any(dirty.frames.values()):
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
    folders: set[Path] = set()  # made (or found) by this loop: one mkdir per folder, not per file
    for key, value in progress(sorted(changes.items()), len(changes), "writing files"):
        rel = key.decode()
        dest = safe_path(root, rel)
        if value is None:
            if dest.is_file() or dest.is_symlink():
                dest.unlink()
                prune_empty_dirs(dest.parent, root)
                folders.clear()
            result.removed.append(rel)
            continue
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
    if result.written or result.removed:  # files were written without an fsync each: one sync for all
        sync_filesystem(root)
    _render_sources(store, root, current, target, dirty, force, result, cache)
    return result


def _render_sources(
    store: ObjectStore,
    root: Path,
    current: Mapping[str, ObjectId],
    target: Mapping[str, ObjectId],
    dirty: Changes,
    force: bool,
    result: CheckoutResult,
    cache: Path | None,
) -> None:
    same = all(current[c] == target[c] for c in ("sources", "frames", "labels"))
    if same and not (force and any(dirty.frames.values())):
        return
    old = {s.path: s for s in sources_of(store, current)}
    new = {s.path: s for s in sources_of(store, target)}
    for path, source in new.items():
        fmt = get_format(source.format)
        name = renders.key(store, target, path)
        if cache is not None and name is not None and renders.restore(cache, name, safe_path(root, path)):
            files: Collection[str] = {path}
        else:
            rendered = fmt.render(source, [f for f in iter_frames(store, target) if f[1].source == path])
            if cache is not None and name is not None and set(rendered) == {path}:
                renders.save(cache, name, rendered[path])
            for rel, data in sorted(rendered.items()):
                out = safe_path(root, rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                write_file(out, data)
            files = rendered.keys()
        stale = fmt.owned_paths(path, root, source.media) - set(files)
        for rel in stale:
            safe_path(root, rel).unlink(missing_ok=True)
        result.rendered.append(path)
        spec = SourceSpec(source.path, source.format, source.media)
        result.stamps[path] = source_stamp(root, spec, owned_paths(root, [spec]))
    for path in set(old) - set(new):
        gone = SourceSpec(path, old[path].format, old[path].media)
        for rel in owned_paths(root, [gone]):
            safe_path(root, rel).unlink(missing_ok=True)
        result.stamps[path] = None
