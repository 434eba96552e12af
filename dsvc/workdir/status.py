"""What differs: the staged state against HEAD, and the working tree against the staged state.

Both report plain files and frames. A frame counts as modified when its frame object (media, metadata) or
its labels differ; between two root sets the diff engine (`dsvc.diff`) says which frames. The working-tree
side reads only files whose stat changed, and parses sources only when one of their files changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsvc import tree
from dsvc.diff.frames import diff_frames
from dsvc.hashing import ObjectId
from dsvc.store import ObjectStore
from dsvc.workdir.index import Index
from dsvc.workdir.scan import scan
from dsvc.workdir.stage import (
    SourceSpec,
    file_entries,
    owned_paths,
    parse_sources,
    resolve_files,
    source_stamp,
)


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
    for change in tree.diff(store, a["files"], b["files"]):
        changes.files[_kind(change.old, change.new)].append(change.key.decode())
    for frame in diff_frames(store, a, b):
        changes.frames[frame.kind].append(frame.id)
    return changes


def worktree_changes(
    store: ObjectStore, index: Index, root: Path, specs: list[SourceSpec], staged: Mapping[str, ObjectId]
) -> Changes:
    """The changes from the staged state to the working tree; stores nothing."""
    changes = Changes()
    owned = owned_paths(root, specs)
    files = list(resolve_files(root, scan(root, None, owned), index.stat_entries(), None))
    present = file_entries(files)
    for key, value in tree.items(store, staged["files"]):
        now = present.pop(key.decode(), None)
        if now is None:
            changes.files["removed"].append(key.decode())
        elif now != value:
            changes.files["modified"].append(key.decode())
    changes.files["added"] = sorted(present)
    staged_sources = {key.decode() for key, _ in tree.items(store, staged["sources"])}
    stale = [s for s in specs if index.source_stamp(s.path) != source_stamp(root, s, owned_paths(root, [s]))]
    if not stale and staged_sources == {s.path for s in specs}:
        return changes
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
    return changes
