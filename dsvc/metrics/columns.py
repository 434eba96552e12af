"""Labels objects read straight into numpy columns for matching.

Evaluation reads hundreds of thousands of annotations and needs five numbers of each: decoding the
verified msgpack value and taking those fields, without building Annotation objects, is most of what
makes a cold evaluation fast (the objects cost ~10 µs per box).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dsvc import codec
from dsvc.hashing import ID_SIZE, ObjectId
from dsvc.metrics.match import Boxes
from dsvc.objects import FORMAT_VERSION, Labels, load
from dsvc.store import ObjectStore

NONE = bytes(ID_SIZE)
# Positions in an annotation's stored value (model.Annotation.to_value).
LABEL, IDENT, BBOX, POLYGON, MASK, KEYPOINTS, CROWD, AREA, SCORE = range(9)


def read_annotations(store: ObjectStore, ids: Sequence[ObjectId]) -> dict[bytes, Sequence[Any]]:
    """The stored annotation values of Labels objects, by id (verified by the store)."""
    out: dict[bytes, Sequence[Any]] = {}
    for oid, data in store.get_many(list(ids)):
        value = codec.decode(data)
        if (
            type(value) is not tuple
            or len(value) != 3
            or value[0] != Labels.KIND
            or value[1] > FORMAT_VERSION
        ):
            load(data, Labels)  # raises the precise error
        out[oid] = value[2]
    return out


@dataclass
class Batch:
    """Columns of the ground truth and predictions of a batch of frames, with frame-level classes."""

    classes: dict[str, int]
    true: np.ndarray
    pred: np.ndarray
    score: np.ndarray


def _whole_image(a: Sequence[Any]) -> bool:
    return a[POLYGON] is None and a[MASK] is None and a[KEYPOINTS] is None


def columns(keys: Sequence[bytes], annotations: Mapping[bytes, Sequence[Any]]) -> tuple[Boxes, Boxes, Batch]:
    """Ground truth and detection boxes of the frames of keys (labels id + predictions id), and each
    frame's whole-image label and best whole-image prediction (classification)."""
    n = len(keys)
    batch = Batch({}, np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64), np.zeros(n))
    sides = []
    for half in (slice(0, ID_SIZE), slice(ID_SIZE, 2 * ID_SIZE)):
        frames: list[int] = []
        rows: list[Sequence[Any]] = []
        for f, key in enumerate(keys):
            oid = key[half]
            if oid == NONE:
                continue
            for a in annotations[oid]:
                if a[BBOX] is not None:
                    frames.append(f)
                    rows.append(a)
                elif _whole_image(a):
                    _classify(batch, f, a, half.start == 0)
        sides.append(_boxes(frames, rows, batch.classes, detections=half.start != 0))
    return _by_name(sides[0], sides[1], batch)


def _by_name(gt: Boxes, dt: Boxes, batch: Batch) -> tuple[Boxes, Boxes, Batch]:
    """Class codes renumbered in name order: cells keep a frame's ground truth by (class, source order),
    and the order must not depend on which frames were matched together (the confusion matrix breaks
    ties of overlap by it, and a patched evaluation state must equal a cold one)."""
    names = sorted(batch.classes)
    code = {name: i for i, name in enumerate(names)}
    new = np.array([code[name] for name in batch.classes] + [-1], dtype=np.int64)  # -1 stays -1
    return (
        replace(gt, cls=new[gt.cls]),
        replace(dt, cls=new[dt.cls]),
        Batch(code, new[batch.true], new[batch.pred], batch.score),
    )


def _classify(batch: Batch, f: int, a: Sequence[Any], truth: bool) -> None:
    code = batch.classes.setdefault(a[LABEL], len(batch.classes))
    score = a[SCORE] or 0.0
    if truth and batch.true[f] < 0:
        batch.true[f] = code
    elif not truth and (batch.pred[f] < 0 or score > batch.score[f]):
        batch.pred[f], batch.score[f] = code, score


def _boxes(frames: list[int], rows: list[Sequence[Any]], classes: dict[str, int], detections: bool) -> Boxes:
    n = len(rows)
    setdefault = classes.setdefault
    cls = np.array([setdefault(a[LABEL], len(classes)) for a in rows], dtype=np.int64)
    box = np.array([a[BBOX] for a in rows], dtype=float).reshape(n, 4)
    natural = box[:, 2] * box[:, 3]
    if detections:
        area = natural
        crowd = np.zeros(n, dtype=bool)
        zero = np.zeros(n, dtype=bool)
        score = np.array([a[SCORE] or 0.0 for a in rows], dtype=float)
    else:
        given = np.array([np.nan if a[AREA] is None else a[AREA] for a in rows], dtype=float)
        area = np.where(np.isnan(given), natural, given)
        crowd = np.array([a[CROWD] for a in rows], dtype=bool)
        zero = np.array([type(a[IDENT]) is int and a[IDENT] == 0 for a in rows], dtype=bool)
        score = np.zeros(n)
    return Boxes(np.array(frames, dtype=np.int64), cls, box, area, crowd, zero, score)
