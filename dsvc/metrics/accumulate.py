"""The global accumulate step over cached cells: pycocotools' accumulate and summarize, bit for bit.

pycocotools concatenates each (class, area) cell's detections in image order, then sorts them by -score
with a stable mergesort, so ties go to the earlier image and then to the better rank within the image.
One lexsort by (class, -score, image position, rank) gives that order for every class at once; the
maxDets cuts keep the order, so they are filters of it. Counts are integer cumulative sums, and precision,
recall and the interpolation use the same float operations in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dsvc.metrics.match import Cells
from dsvc.metrics.params import STAT_NAMES, Params


@dataclass(frozen=True)
class Accumulated:
    """pycocotools' `eval["precision"]` (T, R, K, A, M) and `eval["recall"]` (T, K, A, M); -1 = no data."""

    precision: np.ndarray
    recall: np.ndarray


def ground_truth_counts(cells: Cells, n_classes: int) -> np.ndarray:
    """Non-ignored ground truth per (class, area range): pycocotools' npig."""
    n_a = cells.g_ignored.shape[1]
    counts = np.zeros((n_classes, n_a), dtype=np.int64)
    for a in range(n_a):
        counts[:, a] = np.bincount(cells.g_cls[~cells.g_ignored[:, a]], minlength=n_classes)
    return counts


def accumulate_order(cells: Cells, image_pos: np.ndarray) -> np.ndarray:
    """Detections by (class, -score, image position, rank in the cell): the order pycocotools' stable
    mergesort of each class's image-ordered concatenation gives. One stable argsort of a composite
    integer key (scores replaced by their rank among the distinct scores) is 2.5x faster than a lexsort
    of the four keys; lexsort remains for inputs whose key would not fit 63 bits."""
    image = image_pos[cells.d_frame]
    n_rank = int(cells.d_rank.max(initial=0)) + 1
    n_image = int(image.max(initial=0)) + 1
    scores, score_rank = np.unique(-cells.d_score, return_inverse=True)
    n_cls = int(cells.d_cls.max(initial=0)) + 1
    if n_cls * len(scores) * n_image * n_rank >= 1 << 62:
        return np.lexsort((cells.d_rank, image, -cells.d_score, cells.d_cls))
    key = (
        (cells.d_cls * len(scores) + score_rank.reshape(-1)) * (n_image * n_rank)
        + image * n_rank
        + cells.d_rank
    )
    return np.argsort(key, kind="stable")


def take_detections(cells: Cells, index: np.ndarray) -> Cells:
    """The cells with their detections taken at index (ground truth unchanged). `take` along the last
    axis of the 2-d view of the flags is 3x faster than fancy indexing the 3-d array."""
    n_a, n_t, n = cells.d_matched.shape
    return replace(
        cells,
        d_frame=cells.d_frame[index],
        d_cls=cells.d_cls[index],
        d_score=cells.d_score[index],
        d_rank=cells.d_rank[index],
        d_matched=np.take(cells.d_matched.reshape(n_a * n_t, n), index, axis=1).reshape(n_a, n_t, -1),
        d_ignored=np.take(cells.d_ignored.reshape(n_a * n_t, n), index, axis=1).reshape(n_a, n_t, -1),
        d_other=cells.d_other[index],
        d_other_iou=cells.d_other_iou[index],
    )


def sort_detections(cells: Cells, image_pos: np.ndarray) -> Cells:
    """The cells with their detections in accumulate order (see accumulate_order), the layout accumulate
    reads and the evaluation state keeps."""
    return take_detections(cells, accumulate_order(cells, image_pos))


def accumulate(cells: Cells, n_classes: int, params: Params, every_max_dets: bool = False) -> Accumulated:
    """Precision at the recall thresholds and final recall for every class, area range and maxDets.

    The detections of cells must be in accumulate order (sort_detections). The summary reads precision
    only at the largest maxDets, so the smaller ones get only their recall (a count) unless
    every_max_dets asks for the whole of pycocotools' array; the rest stays -1."""
    n_t, n_r = len(params.iou_thresholds), len(params.recall_thresholds)
    n_a, n_m = len(params.area_ranges), len(params.max_dets)
    precision = -np.ones((n_t, n_r, n_classes, n_a, n_m))
    recall = -np.ones((n_t, n_classes, n_a, n_m))
    npig = ground_truth_counts(cells, n_classes)
    bounds = np.searchsorted(cells.d_cls, np.arange(n_classes + 1))
    valid = ~cells.d_ignored
    hits = cells.d_matched & valid
    rank = cells.d_rank
    largest = max(params.max_dets)  # cells hold at most this many detections: no cut needed
    counted = npig > 0
    for a in range(n_a):
        flat, at = _hits(hits[a], bounds)
        hit_rank = rank[flat % len(rank)]
        for m, max_det in enumerate(sorted(params.max_dets)):
            k = counted[:, a]
            if max_det == largest:
                found = np.diff(at, axis=1)
                precision[:, :, k, a, m] = _curves(flat, at, valid[a], bounds, npig[:, a], params.recalls)[
                    :, :, k
                ]
            elif every_max_dets:
                kept = rank < max_det
                kept_flat, kept_at = _hits(hits[a] & kept, bounds)
                found = np.diff(kept_at, axis=1)
                q = _curves(kept_flat, kept_at, valid[a] & kept, bounds, npig[:, a], params.recalls)
                precision[:, :, k, a, m] = q[:, :, k]
            else:  # recall only: how many of the hits are within the cut
                within = np.r_[0, np.cumsum(hit_rank < max_det)]
                found = within[at[:, 1:]] - within[at[:, :-1]]
            recall[:, k, a, m] = found[:, k] / npig[k, a]
    return Accumulated(precision, recall)


def _hits(hits: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every hit of a (threshold, detection) array as its flat index (row-major), and where each class's
    hits begin in each row (`at[t, k]`, with class k's detections from column bounds[k])."""
    flat = np.flatnonzero(hits)
    return flat, np.searchsorted(flat, np.arange(len(hits))[:, None] * hits.shape[1] + bounds)


def _curves(
    flat: np.ndarray,
    at: np.ndarray,
    valid: np.ndarray,
    bounds: np.ndarray,
    npig: np.ndarray,
    recalls: np.ndarray,
) -> np.ndarray:
    """Interpolated precision (threshold, recall threshold, class) for one area range, with pycocotools'
    float operations on the same integer counts: precision tp / (tp + fp + eps), its running maximum
    from the right, read where `searchsorted(rc, recThrs, side="left")` lands (0 past the end).

    Detections are columns of valid (not ignored) in accumulate order, class k's from bounds[k]; the
    hits (matched and not ignored) are the flat indices `flat`, class k's of row t from at[t, k]. Only
    hits matter: precision falls at every other detection, so the running maximum from any place is
    the maximum over the hits from there on, and recall tp / npig is monotone in tp, so the place read
    for a threshold is the hit where tp first reaches the least count whose recall reaches it (the first
    hit for a threshold of 0). At the m-th hit tp is m and tp + fp the valid detections of the class up
    to it, so precision is computed at the hits alone."""
    n_t, n = valid.shape
    n_k = len(bounds) - 1
    q = np.zeros((n_t, len(recalls), n_k))
    if n == 0:
        return q
    seen = np.cumsum(valid, axis=1, dtype=np.int32)  # tp + fp, from the first detection of any class
    before = np.where(bounds[:-1] > 0, seen[:, np.maximum(bounds[:-1] - 1, 0)], 0)
    seen_at_hit = seen.reshape(-1)[flat]
    for k in np.flatnonzero(npig > 0).tolist():
        need = np.maximum(np.searchsorted(np.arange(npig[k] + 1) / npig[k], recalls, side="left"), 1)
        for t in range(n_t):
            lo, hi = int(at[t, k]), int(at[t, k + 1])
            tp = np.arange(1, hi - lo + 1)
            value = tp / ((seen_at_hit[lo:hi] - before[t, k]) + np.spacing(1))
            envelope = np.maximum.accumulate(value[::-1])[::-1]
            inside = need <= hi - lo
            q[t, inside, k] = envelope[need[inside] - 1]
    return q


def _mean(values: np.ndarray) -> float:
    valid = values[values > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def summarize(acc: Accumulated, params: Params) -> dict[str, float]:
    """The 12 COCO summary stats (pycocotools' summarize for bbox), by name."""
    dets = sorted(params.max_dets)
    top = len(dets) - 1
    t50 = np.where(params.ious == 0.5)[0]
    t75 = np.where(params.ious == 0.75)[0]
    p, r = acc.precision, acc.recall
    values = [
        _mean(p[:, :, :, 0, top]),
        _mean(p[t50][:, :, :, 0, top]),
        _mean(p[t75][:, :, :, 0, top]),
        _mean(p[:, :, :, 1, top]),
        _mean(p[:, :, :, 2, top]),
        _mean(p[:, :, :, 3, top]),
        *(_mean(r[:, :, 0, m]) for m in range(len(dets))),
        _mean(r[:, :, 1, top]),
        _mean(r[:, :, 2, top]),
        _mean(r[:, :, 3, top]),
    ]
    return dict(zip(STAT_NAMES, values, strict=True))


def class_ap(acc: Accumulated) -> np.ndarray:
    """AP per class (area all, the largest maxDets), -1 for a class without ground truth."""
    p = acc.precision[:, :, :, 0, -1]
    return np.array([_mean(p[:, :, k]) for k in range(p.shape[2])])
