"""The global accumulate step over cached cells: pycocotools' accumulate and summarize, bit for bit.

pycocotools concatenates each (class, area) cell's detections in image order, then sorts them by -score
with a stable mergesort, so ties go to the earlier image and then to the better rank within the image.
One lexsort by (class, -score, image position, rank) gives that order for every class at once; the
maxDets cuts keep the order, so they are filters of it. Counts are integer cumulative sums, and precision,
recall and the interpolation use the same float operations in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def accumulate(
    cells: Cells, image_pos: np.ndarray, n_classes: int, params: Params, every_max_dets: bool = False
) -> Accumulated:
    """Precision at the recall thresholds and final recall for every class, area range and maxDets.

    image_pos gives each frame of the cells (by `d_frame`) its place in image order. Each class is worked
    on as one (area x threshold, detections) matrix, so every numpy call covers all 40 columns. The
    summary reads precision only at the largest maxDets, so the smaller ones get only their recall (a
    count) unless every_max_dets asks for the whole of pycocotools' array; the rest stays -1."""
    n_t, n_r = len(params.iou_thresholds), len(params.recall_thresholds)
    n_a, n_m = len(params.area_ranges), len(params.max_dets)
    precision = -np.ones((n_t, n_r, n_classes, n_a, n_m))
    recall = -np.ones((n_t, n_classes, n_a, n_m))
    npig = ground_truth_counts(cells, n_classes)
    order = np.lexsort((cells.d_rank, image_pos[cells.d_frame], -cells.d_score, cells.d_cls))
    bounds = np.searchsorted(cells.d_cls[order], np.arange(n_classes + 1))
    valid = ~cells.d_ignored.reshape(len(order), n_a * n_t)[order]
    hits = cells.d_matched.reshape(len(order), n_a * n_t)[order] & valid
    rank = cells.d_rank[order]
    largest = max(params.max_dets)
    for k in range(n_classes):
        counts = np.repeat(npig[k], n_t)  # per column (area-major, like the cells)
        if not counts.any():
            continue
        span = slice(bounds[k], bounds[k + 1])
        for m, max_det in enumerate(sorted(params.max_dets)):
            kept = rank[span] < max_det
            if every_max_dets or max_det == largest:
                full = max_det == largest
                k_hits, k_valid = (hits[span], valid[span]) if full else (hits[span][kept], valid[span][kept])
                q, final = _class_curves(k_hits, k_valid, counts, params.recalls)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    final = np.count_nonzero(hits[span][kept], axis=0) / counts
            for a in range(n_a):
                if npig[k, a]:
                    if every_max_dets or max_det == largest:
                        precision[:, :, k, a, m] = q[a * n_t : (a + 1) * n_t]
                    recall[:, k, a, m] = final[a * n_t : (a + 1) * n_t]
    return Accumulated(precision, recall)


def _class_curves(
    hits: np.ndarray, valid: np.ndarray, counts: np.ndarray, recalls: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at the recall thresholds and final recall, per column, for one class's
    detections (rows in accumulate order; hits: matched and not ignored; valid: not ignored).

    pycocotools computes precision tp / (tp + fp + eps) at every detection, its running maximum from the
    right, and reads it where `searchsorted(rc, recThrs, side="left")` lands, 0 past the end. Only true
    positives raise precision, so that maximum is the maximum over the true positives from there on, and
    the landing place of a recall threshold is the c-th true positive, c the least count whose recall
    tp / npig reaches it. So only true positives are visited, with pycocotools' float operations on the
    same integers: the c-th one's precision is c / (valid detections so far + eps)."""
    nd, n_cols = hits.shape
    q = np.zeros((n_cols, len(recalls)))
    if nd == 0:
        return q, np.zeros(n_cols)
    col, pos = np.nonzero(np.ascontiguousarray(hits.T))
    skip_col, skip_pos = np.nonzero(np.ascontiguousarray(~valid.T))
    skipped = skip_col * nd + skip_pos
    before = np.searchsorted(skipped, col * nd + pos, "right") - np.searchsorted(skipped, col * nd, "left")
    found = np.bincount(col, minlength=n_cols)
    first = np.cumsum(found) - found
    count = np.arange(len(col)) - first[col] + 1
    precision = count / (pos + 1 - before + np.spacing(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        final = found / counts
    for j in range(n_cols):
        n_tp, npig = int(found[j]), int(counts[j])
        if not (n_tp and npig):
            continue
        envelope = np.maximum.accumulate(precision[first[j] : first[j] + n_tp][::-1])[::-1]
        need = np.searchsorted(np.arange(npig + 1) / npig, recalls, side="left")
        reached = need <= n_tp
        q[j, reached] = envelope[np.maximum(need[reached], 1) - 1]
    return q, final


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
