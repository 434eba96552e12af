"""Label-level diff of one frame: which annotations were added, removed, moved or resized, changed class
or changed attributes (DESIGN §8).

Annotations are matched by id where both sides have one (ids are unique per source, so an id is the
identity of a label across versions); the rest are matched greedily, best box overlap first: same class
first, then, at a stricter overlap, a different class (a class change). Only matched pairs can be moved,
resized or re-classed; everything unmatched is added or removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dsvc.model import Annotation, BBox
from dsvc.objects import Labels

LabelKind = Literal["added", "removed", "moved", "resized", "reshaped", "class_changed", "attributes_changed"]
LABEL_KINDS: tuple[LabelKind, ...] = (
    "added",
    "removed",
    "moved",
    "resized",
    "reshaped",
    "class_changed",
    "attributes_changed",
)
# Least box IoU for two id-less annotations of one class to be the same label, and of different classes
# (a class change is only believed when the boxes nearly coincide).
SAME_CLASS_IOU = 0.3
OTHER_CLASS_IOU = 0.7


@dataclass(frozen=True)
class LabelChange:
    """One change to one annotation. `old`/`new` are the annotation on each side (None when added or
    removed); `iou` is the box overlap of a matched pair whose box changed."""

    kind: LabelKind
    old: Annotation | None
    new: Annotation | None
    iou: float | None = None


def box_iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes; two empty boxes at one place overlap fully."""
    ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = ix * iy if ix > 0 and iy > 0 else 0.0
    union = a.w * a.h + b.w * b.h - inter
    if union > 0:
        return inter / union
    return 1.0 if (a.x, a.y, a.w, a.h) == (b.x, b.y, b.w, b.h) else 0.0


def _iou(a: Annotation, b: Annotation) -> float:
    """Box IoU; an annotation without a box overlaps fully another without one, and nothing else."""
    if a.bbox is None or b.bbox is None:
        return 1.0 if a.bbox is None and b.bbox is None else 0.0
    return box_iou(a.bbox, b.bbox)


def _greedy(
    a: Sequence[Annotation], b: Sequence[Annotation], left: list[int], right: list[int]
) -> list[tuple[int, int]]:
    """Pair unmatched annotations by descending IoU: same class above SAME_CLASS_IOU, then different
    classes above OTHER_CLASS_IOU. Two annotations that both have ids are never paired (different ids
    are different labels)."""
    scored = [(_iou(a[i], b[j]), i, j) for i in left for j in right if a[i].id is None or b[j].id is None]
    pairs: list[tuple[int, int]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for same, least in ((True, SAME_CLASS_IOU), (False, OTHER_CLASS_IOU)):
        candidates = sorted(
            ((-iou, i, j) for iou, i, j in scored if iou >= least and (a[i].label == b[j].label) == same)
        )
        for _, i, j in candidates:
            if i not in used_a and j not in used_b:
                pairs.append((i, j))
                used_a.add(i)
                used_b.add(j)
    return pairs


def _geometry(ann: Annotation) -> tuple[object, ...]:
    return (ann.polygon, ann.mask, ann.keypoints, ann.area)


def _pair_changes(old: Annotation, new: Annotation) -> list[LabelChange]:
    """What differs in one matched pair: box (moved if only its position changed, else resized), other
    geometry (reshaped), class, and the rest (crowd flag, score, extra attributes)."""
    out = []
    if old.bbox != new.bbox and old.bbox is not None and new.bbox is not None:
        same_size = (old.bbox.w, old.bbox.h) == (new.bbox.w, new.bbox.h)
        out.append(LabelChange("moved" if same_size else "resized", old, new, box_iou(old.bbox, new.bbox)))
    elif old.bbox != new.bbox or _geometry(old) != _geometry(new):
        out.append(LabelChange("reshaped", old, new))
    if old.label != new.label:
        out.append(LabelChange("class_changed", old, new))
    if (old.iscrowd, old.score, dict(old.attributes)) != (new.iscrowd, new.score, dict(new.attributes)):
        out.append(LabelChange("attributes_changed", old, new))
    return out


def label_changes(a: Labels, b: Labels) -> list[LabelChange]:
    """Every change from one frame's labels to another's: removed, then matched pairs in the new order,
    then added."""
    old, new = a.annotations, b.annotations
    by_id = {ann.id: j for j, ann in enumerate(new) if ann.id is not None}
    pairs = [(i, by_id[ann.id]) for i, ann in enumerate(old) if ann.id is not None and ann.id in by_id]
    matched_a, matched_b = {i for i, _ in pairs}, {j for _, j in pairs}
    pairs += _greedy(
        old,
        new,
        [i for i in range(len(old)) if i not in matched_a],
        [j for j in range(len(new)) if j not in matched_b],
    )
    matched_a, matched_b = {i for i, _ in pairs}, {j for _, j in pairs}
    out = [LabelChange("removed", ann, None) for i, ann in enumerate(old) if i not in matched_a]
    for i, j in sorted(pairs, key=lambda p: p[1]):
        if old[i] != new[j]:
            out += _pair_changes(old[i], new[j])
    out += [LabelChange("added", None, ann) for j, ann in enumerate(new) if j not in matched_b]
    return out
