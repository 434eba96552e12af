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


def accumulate(cells: Cells, image_pos: np.ndarray, n_classes: int, params: Params) -> Accumulated:
    """Precision at the recall thresholds and final recall for every class, area range and maxDets.

    image_pos gives each frame of the cells (by `d_frame`) its place in image order."""
    n_t, n_r, n_a, n_m = (
        len(params.iou_thresholds),
        len(params.recall_thresholds),
        len(params.area_ranges),
        len(params.max_dets),
    )
    precision = -np.ones((n_t, n_r, n_classes, n_a, n_m))
    recall = -np.ones((n_t, n_classes, n_a, n_m))
    npig = ground_truth_counts(cells, n_classes)
    order = np.lexsort((cells.d_rank, image_pos[cells.d_frame], -cells.d_score, cells.d_cls))
    cls_sorted = cells.d_cls[order]
    bounds = np.searchsorted(cls_sorted, np.arange(n_classes + 1))
    recalls = params.recalls
    eps = np.spacing(1)
    for k in range(n_classes):
        rows = order[bounds[k] : bounds[k + 1]]
        for m, max_det in enumerate(sorted(params.max_dets)):
            kept = rows[cells.d_rank[rows] < max_det]
            matched = cells.d_matched[kept]
            ignored = cells.d_ignored[kept]
            nd = len(kept)
            for a in range(n_a):
                if npig[k, a] == 0:
                    continue
                ok = ~ignored[:, a, :].T
                tp = np.cumsum(matched[:, a, :].T & ok, axis=1).astype(float)
                fp = np.cumsum(~matched[:, a, :].T & ok, axis=1).astype(float)
                rc = tp / int(npig[k, a])
                pr = tp / (fp + tp + eps)
                recall[:, k, a, m] = rc[:, -1] if nd else 0
                if not nd:
                    precision[:, :, k, a, m] = 0
                    continue
                envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(n_t):
                    at = np.searchsorted(rc[t], recalls, side="left")
                    q = np.zeros(n_r)
                    inside = at < nd
                    q[inside] = envelope[t, at[inside]]
                    precision[t, :, k, a, m] = q
    return Accumulated(precision, recall)


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
