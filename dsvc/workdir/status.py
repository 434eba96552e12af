"""What differs: the staged state against HEAD, and the working tree against the staged state.

Both report plain files and frames. A frame counts as modified when its frame object (media, metadata) or
its labels differ; between two root sets the diff engine (`dsvc.diff`) says which frames. The working-tree
side reads only files whose stat changed, and parses sources only when one of their files changed. When
the stat cache describes the staged files map (`Index.described`), a status where every file's stat
matches its entry is one scan and one comparison, without reading the map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsvc import tree, tree_diff
from dsvc.diff.frames import diff_frames
from dsvc.hashing import ObjectId
from dsvc.objects import FileEntry
from dsvc.store import ObjectStore
from dsvc.workdir.index import Index, StatRow
from dsvc.workdir.scan import ScannedFile, Stat, scan_stats
from dsvc.workdir.stage import (
    FileState,
    SourceSpec,
    file_entries,
    owned_paths,
    parse_sources,
    resolve_files,
    source_stamp,
)

# Past this fraction of a map's entries (and this many), one walk of the files map is cheaper than a
# lookup per file (a walk decodes every entry once, a lookup a few nodes).
WALK_FRACTION = 1 / 32
MIN_LOOKUPS = 64
# The inode and mtime of a stat entry for a file that differs from the map: no file has them.
NO_STAT = -1


@dataclass
class Changes:
    """Paths and frame ids, by kind of change."""

    files: dict[str, list[str]] = field(default_factory=lambda: {"added": [], "modified": [], "removed": []})
    frames: dict[str, list[str]] = field(default_factory=lambda: {"added": [], "modified": [], "removed": []})

    @property
    def empty(self) -> bool:
        return not any(self.files.values()) and not any(self.frames.values())

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "frames": self.frames}


def _kind(old: bytes | None, new: bytes | None) -> str:
    return "added" if old is None else "removed" if new is None else "modified"


def compare_roots(store: ObjectStore, a: Mapping[str, ObjectId], b: Mapping[str, ObjectId]) -> Changes:
    """The changes from root set a to root set b (e.g. HEAD to staged)."""
    changes = Changes()
    for change in tree_diff.diff(store, a["files"], b["files"]):
        changes.files[_kind(change.old, change.new)].append(change.key.decode())
    for frame in diff_frames(store, a, b):
        changes.frames[frame.kind].append(frame.id)
    return changes


@dataclass
class Worktree:
    """The working tree against the staged state, and stat entries learned on the way that a writer may
    record: with `complete`, every entry of the staged files map (the cache then describes the map,
    whatever it held), else entries of files found unchanged after all (a cache that described the map
    still does, and trusts them next time)."""

    changes: Changes
    rows: list[StatRow] = field(default_factory=list)
    complete: bool = False


def worktree_changes(
    store: ObjectStore,
    index: Index,
    root: Path,
    specs: list[SourceSpec],
    staged: Mapping[str, ObjectId],
    paths: list[str] | None = None,
) -> Worktree:
    """The changes from the staged state to the working tree (only at the given paths, files there or
    under them, if given: what a checkout would touch; unless they are too many to look up one by one);
    stores nothing."""
    if paths is not None and not _few(len(paths), tree.length(store, staged["files"])):
        paths = None
    owned = owned_paths(root, specs)
    found = dict(scan_stats(root, paths, owned))
    if paths is not None:
        missing = [p for p in paths if p not in owned and p not in found]
        result = _look_up(store, index, root, found, staged["files"], list(found), missing)
    else:
        quick = _quick_files(store, index, root, found, staged["files"])
        result = _walk_files(store, index, root, found, staged["files"]) if quick is None else quick
    changes = result.changes
    staged_sources = {key.decode() for key, _ in tree.items(store, staged["sources"])}
    stale = [s for s in specs if index.source_stamp(s.path) != source_stamp(root, s, owned_paths(root, [s]))]
    if not stale and staged_sources == {s.path for s in specs}:
        return result
    if paths is not None:  # frames name media anywhere in the tree
        found = dict(scan_stats(root, None, owned))
    files = _resolve(root, index, found)
    parsed = parse_sources(root, specs, {f.scanned.path: (f.blob, f.scanned.size) for f in files})
    now_frames = {fid.encode(): (frame.id, labels.id) for fid, (frame, labels, _) in parsed.frames.items()}
    labels = dict(tree.items(store, staged["labels"]))
    for key, frame_id in tree.items(store, staged["frames"]):
        current = now_frames.pop(key, None)
        if current is None:
            changes.frames["removed"].append(key.decode())
        elif current != (frame_id, labels.get(key)):
            changes.frames["modified"].append(key.decode())
    changes.frames["added"] = sorted(k.decode() for k in now_frames)
    return result


def _few(lookups: int, entries: int) -> bool:
    """Whether looking paths up one by one is cheaper than walking a map of this many entries."""
    return lookups <= max(WALK_FRACTION * entries, MIN_LOOKUPS)


def _resolve(root: Path, index: Index, found: Mapping[str, Stat]) -> list[FileState]:
    """Every scanned file with its blob id, from the stat cache or hashed."""
    scanned = (ScannedFile(path, *st) for path, st in found.items())
    return list(resolve_files(root, scanned, index.stat_entries(), None))


def _quick_files(
    store: ObjectStore, index: Index, root: Path, found: Mapping[str, Stat], files_root: ObjectId
) -> Worktree | None:
    """The file changes when the stat cache describes the staged files map: a file whose stat equals
    its entry's is unchanged without reading the map; the others are resolved as staging would (hashed
    unless only the mode is unknown) and looked up one by one.
    None when the cache describes another map, or when so much changed that walking the map is cheaper."""
    if index.described() != files_root:
        return None
    cached = index.quick_stats()
    if cached == found:
        return Worktree(Changes())
    differ = [path for path, st in found.items() if cached.get(path) != st]
    gone = [path for path in cached if path not in found]
    if not _few(len(differ) + len(gone), len(cached)):
        return None
    return _look_up(store, index, root, found, files_root, differ, gone)


def _look_up(
    store: ObjectStore,
    index: Index,
    root: Path,
    found: Mapping[str, Stat],
    files_root: ObjectId,
    present: list[str],
    missing: list[str],
) -> Worktree:
    """The changes of some files, each looked up in the files map: present ones are resolved as staging
    would (hashed unless their stat entry is trusted), missing ones are removed if the map has them."""
    result = Worktree(Changes())
    files = result.changes.files
    scanned = [ScannedFile(path, *found[path]) for path in present]
    for state in resolve_files(root, scanned, index.entries(present), None):
        s = state.scanned
        value = tree.get(store, files_root, s.path.encode())
        if value is None:
            files["added"].append(s.path)
        elif value != FileEntry(state.blob, s.mode, s.size).to_bytes():
            files["modified"].append(s.path)
        else:
            result.rows.append((s.path, s.size, s.mtime_ns, s.ino, state.blob, s.mode))
    files["removed"] = [p for p in missing if tree.get(store, files_root, p.encode()) is not None]
    for kind in ("added", "modified", "removed"):
        files[kind].sort()
    return result


def _walk_files(
    store: ObjectStore, index: Index, root: Path, found: Mapping[str, Stat], files_root: ObjectId
) -> Worktree:
    """The file changes by walking the staged files map, with the stat entries that describe it: a file
    that differs (or is gone) gets an entry no stat matches, so the next quick status looks at it again."""
    changes = Changes()
    files = {f.scanned.path: f for f in _resolve(root, index, found)}
    present = file_entries(files.values())
    rows: list[StatRow] = []
    for key, value in tree.items(store, files_root):
        path = key.decode()
        now = present.pop(path, None)
        if now is not None and now == value:
            s = files[path].scanned
            rows.append((path, s.size, s.mtime_ns, s.ino, files[path].blob, s.mode))
            continue
        changes.files["removed" if now is None else "modified"].append(path)
        entry = FileEntry.from_bytes(value)
        rows.append((path, entry.size, NO_STAT, NO_STAT, entry.blob, entry.mode))
    changes.files["added"] = sorted(present)
    return Worktree(changes, rows, complete=True)
