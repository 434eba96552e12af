"""Distribution of a version (labels per class, frames per metadata value) and how a diff moves it.

Counting a version reads every frame and label object: O(N). A diff therefore starts from the counts of
its first side (counted once, then cached by the caller under the roots they describe) and applies the
changed frames to a copy, which costs O(changes): the second side's counts are never read in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from dsvc import dataset
from dsvc.diff.frames import FrameChange
from dsvc.hashing import ObjectId
from dsvc.objects import Frame, Labels, load
from dsvc.store import ObjectStore

# A metadata key with more distinct values than this (ids, timestamps, file names) tells nothing about the
# distribution; its counts are dropped, which also bounds the memory of counting.
MAX_VALUES = 64
SCALARS = (str, int, float, bool, type(None))


def value_text(value: Any) -> str:
    """A metadata value as a JSON object key: strings as they are, anything else in JSON form."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


@dataclass
class Counts:
    """Frame and label totals, labels per class and frames per value of each low-cardinality metadata key."""

    frames: int = 0
    labels: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)

    def add(self, frame: Frame | None, labels: Labels | None, sign: int, cap: bool = False) -> None:
        """Count (sign 1) or uncount (sign -1) a frame's metadata and labels; either may be None (unchanged).
        With cap, a key that passes MAX_VALUES is dropped (when counting a whole version)."""
        if frame is not None:
            self.frames += sign
            for key, value in frame.metadata.items():
                if key in self.dropped or not isinstance(value, SCALARS):
                    continue
                values = self.metadata.setdefault(key, {})
                text = value_text(value)
                values[text] = values.get(text, 0) + sign
                if cap and len(values) > MAX_VALUES:
                    self.dropped.add(key)
                    del self.metadata[key]
        if labels is not None:
            self.labels += sign * len(labels.annotations)
            for ann in labels.annotations:
                self.classes[ann.label] = self.classes.get(ann.label, 0) + sign

    def copy(self) -> Counts:
        return Counts.from_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "labels": self.labels,
            "classes": self.classes,
            "metadata": self.metadata,
            "dropped": sorted(self.dropped),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counts:
        return cls(
            int(data["frames"]),
            int(data["labels"]),
            {str(k): int(v) for k, v in data["classes"].items()},
            {str(k): {str(v): int(n) for v, n in vs.items()} for k, vs in data["metadata"].items()},
            set(data["dropped"]),
        )


def count(store: ObjectStore, roots: Mapping[str, ObjectId]) -> Counts:
    """Count a whole version: reads every frame and labels object (O(N)); cache the result."""
    counts = Counts()
    for _, frame, labels in dataset.iter_frames(store, roots):
        counts.add(frame, labels, 1, cap=True)
    return counts


@dataclass(frozen=True)
class Sides:
    """The objects of one changed frame on each side; None where a side lacks it or it did not change."""

    old_frame: Frame | None = None
    new_frame: Frame | None = None
    old_labels: Labels | None = None
    new_labels: Labels | None = None


def read_sides(store: ObjectStore, changes: Sequence[FrameChange]) -> list[Sides]:
    """Read the Frame and Labels objects the changes name, and only those, in one batched lookup."""
    wanted = {oid for c in changes for oid in (*c.frame, *c.labels) if oid is not None}
    found = dict(store.get_many(sorted(wanted)))

    def read(oid: ObjectId | None, kind: type[Frame] | type[Labels]) -> Any:
        return None if oid is None else load(found[oid], kind)

    return [
        Sides(
            read(c.frame[0], Frame),
            read(c.frame[1], Frame),
            read(c.labels[0], Labels),
            read(c.labels[1], Labels),
        )
        for c in changes
    ]


def apply(counts: Counts, changed: Iterable[Sides]) -> Counts:
    """The counts of the second side of a diff, from those of the first and the changed frames' objects."""
    out = counts.copy()
    for sides in changed:
        # Added and removed frames always carry their Frame object, so the frame total follows.
        out.add(sides.old_frame, sides.old_labels, -1)
        out.add(sides.new_frame, sides.new_labels, 1)
    return out


@dataclass(frozen=True)
class Distribution:
    """The counts of both sides of a diff, with from/to views for every class and metadata value."""

    before: Counts
    after: Counts

    def classes(self) -> dict[str, tuple[int, int]]:
        """Labels per class, (from, to), for every class either side has."""
        names = sorted(set(self.before.classes) | set(self.after.classes))
        pairs = {n: (self.before.classes.get(n, 0), self.after.classes.get(n, 0)) for n in names}
        return {n: p for n, p in pairs.items() if p != (0, 0)}

    def metadata(self) -> dict[str, dict[str, tuple[int, int]]]:
        """Frames per metadata value, (from, to), for the keys both sides count."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for key in sorted((set(self.before.metadata) | set(self.after.metadata)) - self.before.dropped):
            old, new = self.before.metadata.get(key, {}), self.after.metadata.get(key, {})
            pairs = {v: (old.get(v, 0), new.get(v, 0)) for v in sorted(set(old) | set(new))}
            out[key] = {v: p for v, p in pairs.items() if p != (0, 0)}
        return out
