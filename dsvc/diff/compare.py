"""A comparison of two versions: their roots and the store that holds both, with everything a diff reports.

Both sides are root sets, so a commit and the working tree (staged into a scratch store by the caller) are
compared the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

from dsvc.dataset import READ_BATCH
from dsvc.diff.distribution import Counts, Distribution, Sides, apply, read_sides
from dsvc.diff.frames import FrameChange, Summary, diff_frames, overlap, summarize
from dsvc.diff.labels import LabelChange, label_changes
from dsvc.hashing import ObjectId
from dsvc.objects import Labels
from dsvc.store import ObjectStore


@dataclass(frozen=True)
class FrameDetail:
    """A changed frame with its objects on both sides and, for modified labels, the label-level changes."""

    change: FrameChange
    sides: Sides
    labels: tuple[LabelChange, ...]


def details(store: ObjectStore, changes: Sequence[FrameChange]) -> list[FrameDetail]:
    """Read changed frames' objects (one batched lookup) and match the labels of those whose labels
    changed."""
    out = []
    for change, sides in zip(changes, read_sides(store, changes), strict=True):
        found: tuple[LabelChange, ...] = ()
        if "labels" in change.changes:
            found = tuple(label_changes(sides.old_labels or Labels(()), sides.new_labels or Labels(())))
        out.append(FrameDetail(change, sides, found))
    return out


@dataclass(frozen=True)
class Comparison:
    """Two versions to compare; `before`/`after` are their column roots, ids their commits (None for the
    working tree)."""

    store: ObjectStore
    before: Mapping[str, ObjectId]
    after: Mapping[str, ObjectId]
    before_id: ObjectId | None
    after_id: ObjectId | None

    def frames(self) -> Iterator[FrameChange]:
        """The changed frames, streamed in id order: O(changes) node reads."""
        return diff_frames(self.store, self.before, self.after)

    def overlap(self) -> Iterator[str]:
        """The ids of the frames both sides have."""
        return overlap(self.store, self.before, self.after)

    def details(self) -> Iterator[FrameDetail]:
        """The changed frames with their objects and label-level changes (reads only changed objects)."""
        changes = self.frames()
        while chunk := list(islice(changes, READ_BATCH)):
            yield from details(self.store, chunk)

    def summary(self, details: list[FrameDetail]) -> Summary:
        return summarize(self.store, self.before, Counter(d.change.kind for d in details))

    def distribution(self, before: Counts, details: list[FrameDetail]) -> Distribution:
        """Both sides' counts, from the first side's (see distribution.py) and the changed frames."""
        return Distribution(before, apply(before, (d.sides for d in details)))
