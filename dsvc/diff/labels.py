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

import numpy as np

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


def _box_ious(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """IoU of every pair of boxes of two (n, 4) arrays of [x, y, w, h]; two empty boxes at one place
    overlap fully."""
    ix = np.clip(
        np.minimum.outer(p[:, 0] + p[:, 2], q[:, 0] + q[:, 2]) - np.maximum.outer(p[:, 0], q[:, 0]), 0, None
    )
    iy = np.clip(
        np.minimum.outer(p[:, 1] + p[:, 3], q[:, 1] + q[:, 3]) - np.maximum.outer(p[:, 1], q[:, 1]), 0, None
    )
    inter = ix * iy
    union = np.add.outer(p[:, 2] * p[:, 3], q[:, 2] * q[:, 3]) - inter
    same = (np.abs(p[:, None, :] - q[None, :, :]).sum(axis=2) == 0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou: np.ndarray = np.where(union > 0, inter / union, same)
    return iou


def box_iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes."""
    return float(_box_ious(np.array([a.to_value()]), np.array([b.to_value()]))[0, 0])


def _iou_matrix(a: Sequence[Annotation], b: Sequence[Annotation]) -> np.ndarray:
    """IoU of every pair; an annotation without a box overlaps fully another without one, else nothing."""
    out = np.zeros((len(a), len(b)))
    boxed_a = [i for i, x in enumerate(a) if x.bbox is not None]
    boxed_b = [j for j, y in enumerate(b) if y.bbox is not None]
    unboxed_b = [j for j, y in enumerate(b) if y.bbox is None]
    for i, x in enumerate(a):
        if x.bbox is None:
            out[i, unboxed_b] = 1.0
    if boxed_a and boxed_b:
        p = np.array([a[i].bbox.to_value() for i in boxed_a])  # type: ignore[union-attr]
        q = np.array([b[j].bbox.to_value() for j in boxed_b])  # type: ignore[union-attr]
        out[np.ix_(boxed_a, boxed_b)] = _box_ious(p, q)
    return out


def _greedy(
    a: Sequence[Annotation], b: Sequence[Annotation], left: list[int], right: list[int]
) -> list[tuple[int, int]]:
    """Pair unmatched annotations by descending IoU: same class above SAME_CLASS_IOU, then different
    classes above OTHER_CLASS_IOU. Two annotations that both have ids are never paired (different ids
    are different labels)."""
    if not left or not right:
        return []
    iou = _iou_matrix([a[i] for i in left], [b[j] for j in right])
    pairs: list[tuple[int, int]] = []
    for same, least in ((True, SAME_CLASS_IOU), (False, OTHER_CLASS_IOU)):
        candidates = sorted(
            (
                (-iou[p, q], p, q)
                for p, i in enumerate(left)
                for q, j in enumerate(right)
                if iou[p, q] >= least
                and (a[i].label == b[j].label) == same
                and (a[i].id is None or b[j].id is None)
            ),
        )
        used_a = {p for p, _ in pairs}
        used_b = {q for _, q in pairs}
        for _, p, q in candidates:
            if p not in used_a and q not in used_b:
                pairs.append((p, q))
                used_a.add(p)
                used_b.add(q)
    return [(left[p], right[q]) for p, q in pairs]


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
