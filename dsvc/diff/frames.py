"""Frame-level diff of two versions (DESIGN §8): which frames were added, removed or modified, and in what.

A version is its column roots. The `frames` and `labels` maps are diffed with `tree_diff.diff`, which skips
equal subtrees, and the two change streams (both in key order) are merged, so the cost follows the number
of changed frames, not the dataset size, and nothing is held in memory but the current frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dsvc import codec, tree, tree_diff
from dsvc.hashing import ObjectId
from dsvc.objects import Frame
from dsvc.store import ObjectStore

Kind = Literal["added", "removed", "modified"]
ASPECTS = ("media", "metadata", "labels")
Pair = tuple[ObjectId | None, ObjectId | None]


@dataclass(frozen=True)
class FrameChange:
    """One changed frame: its kind, which of media, metadata and labels differ (modified frames only),
    and the ids of its Frame and Labels objects on each side (None where a side has none, and both None
    for a column that did not change), so callers read exactly the objects they need."""

    id: str
    kind: Kind
    changes: tuple[str, ...] = ()
    frame: Pair = (None, None)
    labels: Pair = (None, None)


@dataclass(frozen=True)
class Summary:
    """Frame counts of a diff: what changed, what did not, and how many frames both sides have."""

    added: int
    removed: int
    modified: int
    unchanged: int
    overlap: int


def _id(value: bytes | None) -> ObjectId | None:
    return None if value is None else ObjectId(value)


def _frame_aspects(store: ObjectStore, old: ObjectId, new: ObjectId) -> tuple[str, ...]:
    """Which of media and metadata differ between two Frame objects (the source path counts as metadata)."""
    a, b = store.get_object(old, Frame), store.get_object(new, Frame)
    found = []
    if a.media != b.media:
        found.append("media")
    # Encoded, since Python equality takes 1, 1.0 and True for one value where the stored bytes differ.
    if _encoded(a.metadata) != _encoded(b.metadata) or a.source != b.source:
        found.append("metadata")
    return tuple(found)


def _encoded(metadata: Mapping[str, Any]) -> bytes:
    return codec.encode(codec.canonical(dict(metadata)))


def _merged(
    frames: Iterator[tree_diff.Change], labels: Iterator[tree_diff.Change]
) -> Iterator[tuple[bytes, tree_diff.Change | None, tree_diff.Change | None]]:
    """Join two key-ordered change streams on the key."""
    f, lab = next(frames, None), next(labels, None)
    while f is not None or lab is not None:
        if lab is None or (f is not None and f.key < lab.key):
            assert f is not None
            yield f.key, f, None
            f = next(frames, None)
        elif f is None or lab.key < f.key:
            yield lab.key, None, lab
            lab = next(labels, None)
        else:
            yield f.key, f, lab
            f, lab = next(frames, None), next(labels, None)


def diff_frames(
    store: ObjectStore, a: Mapping[str, ObjectId], b: Mapping[str, ObjectId]
) -> Iterator[FrameChange]:
    """Yield every frame that differs from root set a to root set b, in frame id order."""
    streams = tree_diff.diff(store, a["frames"], b["frames"]), tree_diff.diff(store, a["labels"], b["labels"])
    for key, frame, labels in _merged(*streams):
        pair: Pair = (None, None) if frame is None else (_id(frame.old), _id(frame.new))
        label_pair: Pair = (None, None) if labels is None else (_id(labels.old), _id(labels.new))
        if frame is not None and frame.old is None:
            yield FrameChange(key.decode(), "added", (), pair, label_pair)
        elif frame is not None and frame.new is None:
            yield FrameChange(key.decode(), "removed", (), pair, label_pair)
        else:
            old, new = pair
            aspects = () if old is None or new is None else _frame_aspects(store, old, new)
            if labels is not None:
                aspects = (*aspects, "labels")
            yield FrameChange(key.decode(), "modified", aspects, pair, label_pair)


def frame_change(
    store: ObjectStore, a: Mapping[str, ObjectId], b: Mapping[str, ObjectId], frame_id: str
) -> FrameChange | None:
    """How one frame changed from a to b (None if it did not): four lookups, O(log N) each."""
    key = frame_id.encode()
    old, new = _id(tree.get(store, a["frames"], key)), _id(tree.get(store, b["frames"], key))
    old_labels, new_labels = _id(tree.get(store, a["labels"], key)), _id(tree.get(store, b["labels"], key))
    labels: Pair = (old_labels, new_labels) if old_labels != new_labels else (None, None)
    frame: Pair = (old, new) if old != new else (None, None)
    if old is None and new is None:
        return None
    if old is None:
        return FrameChange(frame_id, "added", (), frame, labels)
    if new is None:
        return FrameChange(frame_id, "removed", (), frame, labels)
    aspects = _frame_aspects(store, old, new) if old != new else ()
    if old_labels != new_labels:
        aspects = (*aspects, "labels")
    return FrameChange(frame_id, "modified", aspects, frame, labels) if aspects else None


def summarize(store: ObjectStore, a: Mapping[str, ObjectId], kinds: Mapping[str, int]) -> Summary:
    """Complete the counts of added, removed and modified frames with the size of side a (its root count)."""
    before = tree.length(store, a["frames"])
    added, removed, modified = kinds.get("added", 0), kinds.get("removed", 0), kinds.get("modified", 0)
    return Summary(added, removed, modified, before - removed - modified, before - removed)


def overlap(store: ObjectStore, a: Mapping[str, ObjectId], b: Mapping[str, ObjectId]) -> Iterator[str]:
    """Yield the ids of the frames both versions have, in order: a merge of the two key streams, in
    constant memory (the output itself is as long as the dataset)."""
    left, right = tree.items(store, a["frames"]), tree.items(store, b["frames"])
    x, y = next(left, None), next(right, None)
    while x is not None and y is not None:
        if x[0] == y[0]:
            yield x[0].decode()
            x, y = next(left, None), next(right, None)
        elif x[0] < y[0]:
            x = next(left, None)
        else:
            y = next(right, None)
