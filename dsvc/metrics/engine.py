"""Evaluating predictions against a version's labels, incrementally.

A frame's cells depend only on its labels object, its predictions object and the parameters, so they are
cached under (labels id, predictions id) in a folder per parameters digest: evaluating a new checkpoint
computes cells only for frames whose labels or predictions changed (or that are new). The cells of all
frames, detections in accumulate order, are kept as the evaluation state of the predictions (`state`)
and patched where cell keys changed, so unchanged frames' cells are neither read nor sorted again. The
image order (COCO image ids) depends on the frames map only and is cached by its root, so a relabel
reads no Frame objects at all.
"""

from __future__ import annotations

import io
import zipfile
from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dsvc import tree, tree_diff
from dsvc.hashing import ID_SIZE, ObjectId
from dsvc.metrics import accumulate as acc
from dsvc.metrics.cache import (
    KEY_SIZE,
    CellCache,
    FrameClasses,
    StaleSegment,
    gather,
    make_segment,
    write_derived,
)
from dsvc.metrics.columns import NONE, columns, read_annotations
from dsvc.metrics.inference import catalog
from dsvc.metrics.match import Cells, match
from dsvc.metrics.params import Params
from dsvc.metrics.state import State, load_state, patch, save_state, state_path
from dsvc.metrics.thresholds import ClassificationView, ThresholdView, classification_view, detection_view
from dsvc.store import ObjectStore

MATCH_BATCH = 8192  # frames matched at once: bounds the memory of the matching step
# The stored state is rewritten only when more than this fraction of the frames changed since it was:
# writing it costs about as much as patching it, and every later evaluation patches it again anyway.
REWRITE_STATE = 0.05


@dataclass(frozen=True)
class FrameCounts:
    """How many frames an evaluation covered, and how many of them needed new cells."""

    evaluated: int
    recomputed: int
    reused: int


@dataclass(frozen=True)
class Evaluation:
    """Everything `dsvc eval` reports for one inference set on one version."""

    stats: dict[str, float]
    classes: tuple[str, ...]
    ap: tuple[float, ...]
    detection: ThresholdView
    classification: ClassificationView | None
    frames: FrameCounts
    iou: float
    conf: float


@dataclass(frozen=True)
class ImageOrder:
    """Frame ids of a version (key order), each frame's position in image order, the declared classes;
    ident names the frames and sources roots they come from."""

    frames: tuple[str, ...]
    position: np.ndarray
    classes: tuple[str, ...]
    ident: str


def image_order(store: ObjectStore, roots: Mapping[str, ObjectId], cache_root: Path) -> ImageOrder:
    """The image order of a version, cached under its frames and sources roots."""
    ident = f"{roots['frames'].hex()[:32]}-{roots['sources'].hex()[:16]}"
    path = cache_root / f"order-{ident}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return ImageOrder(tuple(z["frames"].tolist()), z["position"], tuple(z["classes"].tolist()), ident)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # not computed yet, or torn by a crash: compute it (again)
    cat = catalog(store, roots)
    order = ImageOrder(cat.frames, np.array(cat.order, dtype=np.int64), cat.classes, ident)
    out = io.BytesIO()
    np.savez(
        out,
        frames=np.array(order.frames, dtype=str),
        position=order.position,
        classes=np.array(order.classes, dtype=str),
    )
    write_derived(path, out.getvalue())
    return order


def compute_cells(store: ObjectStore, keys: Sequence[bytes], params: Params, cache: CellCache) -> None:
    """Match the frames of the given keys and add their cells to the cache."""
    for start in range(0, len(keys), MATCH_BATCH):
        chunk = keys[start : start + MATCH_BATCH]
        ids = {ObjectId(k[i : i + ID_SIZE]) for k in chunk for i in (0, ID_SIZE)} - {NONE}
        gt, dt, batch = columns(chunk, read_annotations(store, sorted(ids)))
        cells = match(gt, dt, max(len(batch.classes), 1), params)
        names = sorted(batch.classes, key=batch.classes.__getitem__)
        cache.add(make_segment(list(chunk), names, cells, FrameClasses(batch.true, batch.pred, batch.score)))


def map_listing(store: ObjectStore, root: ObjectId, cache_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All entries of a labels or predictions map as arrays (keys as str, in the map's order, which is
    code point order; values (n, ID_SIZE) uint8), cached under its root: an inference set's map is
    evaluated at every checkpoint and a checkpoint's labels for every model, and a walk reads every node."""
    path = cache_root / "maps" / f"{root.hex()}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["keys"], z["values"].reshape(-1, ID_SIZE)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # not listed yet, or torn by a crash
    listing = dict(tree.items(store, root))
    keys = np.array([k.decode() for k in listing], dtype=str)
    values = np.frombuffer(b"".join(listing.values()), dtype=np.uint8).reshape(-1, ID_SIZE)
    out = io.BytesIO()
    np.savez(out, keys=keys, values=values.reshape(-1))
    write_derived(path, out.getvalue())
    return keys, values


def _values_of(listing: tuple[np.ndarray, np.ndarray], frames: np.ndarray) -> np.ndarray:
    """The value of each frame in a listing, zeros where it has none."""
    keys, values = listing
    out = np.zeros((len(frames), ID_SIZE), dtype=np.uint8)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, frames), len(keys) - 1)
        found = keys[at] == frames
        out[found] = values[at[found]]
    return out


def frame_keys(
    store: ObjectStore,
    cache_root: Path,
    labels_root: ObjectId,
    predictions_root: ObjectId,
    frames: Sequence[str],
) -> np.ndarray:
    """(labels id, predictions id) of each frame, zeros where it has none: the cache key of its cells,
    (frames, KEY_SIZE) uint8."""
    names = np.array(frames, dtype=str)
    return np.hstack(
        [
            _values_of(map_listing(store, labels_root, cache_root), names),
            _values_of(map_listing(store, predictions_root, cache_root), names),
        ]
    )


def evaluate(
    store: ObjectStore,
    cache_root: Path,
    roots: Mapping[str, ObjectId],
    predictions_root: ObjectId,
    params: Params,
    iou: float = 0.5,
    conf: float = 0.5,
    only: Collection[str] | None = None,
) -> Evaluation:
    """Evaluate a predictions map against a version (restricted to the frames in `only` when given)."""
    while True:
        try:
            return _evaluate(store, cache_root, roots, predictions_root, params, iou, conf, only)
        except StaleSegment:
            continue  # a segment torn by a crash was deleted: its frames are matched again


def _evaluate(
    store: ObjectStore,
    cache_root: Path,
    roots: Mapping[str, ObjectId],
    predictions_root: ObjectId,
    params: Params,
    iou: float,
    conf: float,
    only: Collection[str] | None,
) -> Evaluation:
    t = params.iou_index(iou)
    order = image_order(store, roots, cache_root)
    chosen = np.arange(len(order.frames))
    if only is not None:
        wanted = set(only)
        chosen = np.array([i for i, f in enumerate(order.frames) if f in wanted], dtype=np.int64)
    frames = [order.frames[i] for i in chosen.tolist()]
    folder = cache_root / params.digest()
    path = state_path(folder, predictions_root)
    last = load_state(path) if only is None else None
    if last is not None and last.order == order.ident:
        key_array = _relabeled_keys(store, last, roots["labels"], order.frames)
    else:
        key_array = frame_keys(store, cache_root, roots["labels"], predictions_root, frames)
    data = key_array.tobytes()
    keys = [data[i : i + KEY_SIZE] for i in range(0, len(data), KEY_SIZE)]
    cache = CellCache(folder)
    missing = list(dict.fromkeys(k for k in keys if k not in cache.index))
    compute_cells(store, missing, params, cache)
    fresh = set(missing)
    recomputed = sum(1 for k in keys if k in fresh)
    names = sorted({str(c) for found in cache.classes for c in found.tolist()} - set(order.classes))
    every = (*order.classes, *names)
    if only is None:
        state = _state(cache, last, keys, key_array, every, order, roots["labels"], path)
        cells, fc = state.cells, state.frame_classes
    else:
        got = gather(cache, keys, every)
        cells, fc = acc.sort_detections(got.cells, order.position[chosen]), got.frame_classes
    classes, cells, fc = _used_classes(cells, fc, list(every), len(order.classes))
    k = len(classes)
    result = acc.accumulate(cells, k, params)
    return Evaluation(
        acc.summarize(result, params),
        classes,
        tuple(acc.class_ap(result).tolist()),
        detection_view(cells, k, t, params.iou_thresholds[t], conf),
        classification_view(fc, k, conf),
        FrameCounts(len(frames), recomputed, len(frames) - recomputed),
        params.iou_thresholds[t],
        conf,
    )


def _relabeled_keys(
    store: ObjectStore, last: State, labels_root: ObjectId, frames: Sequence[str]
) -> np.ndarray:
    """The cell keys of the frames of the state's frame list at another labels root: the state's keys,
    with the labels ids of the frames a diff of the two labels maps names, O(changes) where listing the
    map reads all of it. Frames are in key order, the order of the map's keys."""
    keys = last.keys.copy()
    for change in tree_diff.diff(store, last.labels, labels_root):
        frame = change.key.decode()
        at = bisect_left(frames, frame)
        if at < len(frames) and frames[at] == frame:  # labels of a frame not in the version count for none
            keys[at, :ID_SIZE] = np.frombuffer(change.new or NONE, dtype=np.uint8)
    return keys


def _state(
    cache: CellCache,
    last: State | None,
    keys: list[bytes],
    key_array: np.ndarray,
    every: tuple[str, ...],
    order: ImageOrder,
    labels: ObjectId,
    path: Path,
) -> State:
    """The cells of every frame: the stored state `last` of these predictions patched where cell keys
    changed since it was written, or (no usable state) all cells gathered and sorted. Written again when
    it is new or more than REWRITE_STATE of the frames changed."""
    if (
        last is not None
        and last.order == order.ident
        and last.classes == every
        and len(last.keys) == len(keys)
    ):
        changed = np.flatnonzero((last.keys != key_array).any(axis=1))
        if len(changed) == 0:
            return last
        fresh = gather(cache, [keys[i] for i in changed], every)
        state = patch(last, key_array, changed, fresh, order.position, labels)
        if len(changed) <= REWRITE_STATE * len(keys):
            return state
    else:
        got = gather(cache, keys, every)
        cells = acc.sort_detections(got.cells, order.position)
        state = State(order.ident, every, key_array, cells, got.frame_classes, labels)
    save_state(path, state)
    return state


def _used_classes(
    cells: Cells, fc: FrameClasses, every: list[str], declared: int
) -> tuple[tuple[str, ...], Cells, FrameClasses]:
    """Keep the declared classes and those the evaluated frames use, renumbered."""
    used = np.zeros(len(every) + 1, dtype=bool)
    used[:declared] = True
    for codes in (cells.d_cls, cells.g_cls, fc.true, fc.pred):
        used[codes[codes >= 0]] = True
    used[-1] = False
    new = np.full(len(every) + 1, -1, dtype=np.int64)
    new[np.flatnonzero(used)] = np.arange(int(used.sum()))
    renumbered = replace(cells, d_cls=new[cells.d_cls], g_cls=new[cells.g_cls])
    classes = tuple(every[i] for i in np.flatnonzero(used[:-1]).tolist())
    return classes, renumbered, FrameClasses(new[fc.true], new[fc.pred], fc.score)
