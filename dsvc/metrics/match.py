"""Matching: boxes of many frames into per-(frame, class) cells, exactly as pycocotools' evaluateImg does.

Everything is vectorised across frames. IoU follows the COCO mask API's box formula operation for
operation (crowd regions divide by the detection's area), so values are bit-identical. The greedy matching
is sequential only in a detection's rank within its cell, so it runs as one numpy step per rank over every
cell, area range and IoU threshold at once; detections that overlap no ground truth of their class at the
lowest threshold can never match and are left out of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsvc.metrics.params import Params


@dataclass(frozen=True)
class Boxes:
    """Boxes of many frames as columns: grouped by frame (non-decreasing `frame`), source order within."""

    frame: np.ndarray  # int64 position of the frame in the batch
    cls: np.ndarray  # int64 class code
    box: np.ndarray  # (n, 4) float64 x, y, width, height
    area: np.ndarray  # float64: the annotation's area for ground truth, width * height for detections
    crowd: np.ndarray  # bool
    zero_id: np.ndarray  # bool: ground truth with id 0, whose matches pycocotools counts as misses
    score: np.ndarray  # float64 (zeros for ground truth)


@dataclass(frozen=True)
class Cells:
    """Match results of a batch of frames. Detections are the best `max_det` of each (frame, class), rows
    sorted by (frame, class, rank); ground truth rows are sorted by (frame, class, source order)."""

    d_frame: np.ndarray  # int64
    d_cls: np.ndarray  # int64
    d_score: np.ndarray  # float64
    d_rank: np.ndarray  # int64 rank of the detection in its cell, by score
    # Flags are (area, threshold, detection): accumulate reads each (area, threshold) row contiguously.
    d_matched: np.ndarray  # (A, T, n) bool: matched to a ground truth (pycocotools' dtMatches != 0)
    d_ignored: np.ndarray  # (A, T, n) bool: pycocotools' dtIgnore
    d_other: np.ndarray  # int64: best-overlapping non-crowd ground truth of another class (row in frame), -1
    d_other_iou: np.ndarray  # float64 IoU with it (0 when none)
    g_frame: np.ndarray  # int64
    g_cls: np.ndarray  # int64
    g_ignored: np.ndarray  # (m, A) bool: crowd or outside the area range
    g_score: np.ndarray  # (m, T) float64: score of the detection matched at area "all", -inf if none


def box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes (rows of d with rows of g), the COCO mask API's bbIou formula exactly."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da = d[:, 2] * d[:, 3]
    union = np.where(crowd, da, da + g[:, 2] * g[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    out = np.zeros(len(d))
    np.divide(inter, union, out=out, where=overlap)
    return out


def _ranks(keys: np.ndarray) -> np.ndarray:
    """Position of each row within its run of equal (sorted) keys."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, j) for every row and every j in [lo[row], hi[row]), rows in order."""
    count = hi - lo
    rows = np.repeat(np.arange(len(lo)), count)
    first = np.cumsum(count) - count
    return rows, np.repeat(lo, count) + np.arange(int(count.sum())) - np.repeat(first, count)


def _first_of_max(rows: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row (0..n-1): the max of its values and the index of the first pair holding it (-1 if none)."""
    best = np.zeros(n)
    np.maximum.at(best, rows, values)
    at = np.full(n, -1, dtype=np.int64)
    hit = np.flatnonzero((values == best[rows]) & (values > 0))
    first_rows, first = np.unique(rows[hit], return_index=True)
    at[first_rows] = hit[first]
    return best, at


def match(gt: Boxes, dt: Boxes, n_classes: int, params: Params) -> Cells:
    """Cells of a batch of frames: pycocotools' computeIoU + evaluateImg for every (frame, class, area)."""
    thr = params.ious
    lo_a = np.array([a[0] for a in params.area_ranges])
    hi_a = np.array([a[1] for a in params.area_ranges])
    n_t, n_a = len(thr), len(lo_a)

    # Detections into cells, best score first (stable: ties keep prediction order), at most max_det each.
    order = np.lexsort((-dt.score, dt.cls, dt.frame))
    rank = _ranks((dt.frame * n_classes + dt.cls)[order])
    order = order[rank < params.max_det]
    rank = rank[rank < params.max_det]
    d_frame, d_cls, d_box = dt.frame[order], dt.cls[order], dt.box[order]
    d_score, d_area = dt.score[order], dt.area[order]
    n_d = len(order)

    g_order = np.lexsort((gt.cls, gt.frame))
    g_frame, g_cls, g_box = gt.frame[g_order], gt.cls[g_order], gt.box[g_order]
    g_crowd, g_area, g_zero = gt.crowd[g_order], gt.area[g_order], gt.zero_id[g_order]
    n_g = len(g_order)
    g_ignored = g_crowd[:, None] | (g_area[:, None] < lo_a) | (g_area[:, None] > hi_a)

    # Same-cell pairs that reach the lowest threshold: the only ones that can ever match.
    g_key, d_key = g_frame * n_classes + g_cls, d_frame * n_classes + d_cls
    pd, pg = expand_ranges(np.searchsorted(g_key, d_key, "left"), np.searchsorted(g_key, d_key, "right"))
    pv = box_iou(d_box[pd], g_box[pg], g_crowd[pg])
    keep = pv >= thr[0]
    pd, pg, pv = pd[keep], pg[keep], pv[keep]
    winner = _greedy(pd, pg, pv, d_key, g_crowd, g_ignored, thr, n_d, n_g)

    has = winner >= 0
    wg = np.where(has, winner, n_g)  # row n_g: a sentinel, for detections that matched nothing
    d_matched = has & ~np.r_[g_zero, False][wg]
    sentinel_ignored = np.vstack([g_ignored, np.zeros((1, n_a), dtype=bool)])
    outside = (d_area[:, None] < lo_a) | (d_area[:, None] > hi_a)
    d_ignored = (sentinel_ignored[wg, np.arange(n_a)[None, :, None]]) | (~d_matched & outside[:, :, None])
    g_score = np.full((n_g, n_t), -np.inf)
    di, ti = np.nonzero(has[:, 0, :])
    g_score[winner[di, 0, ti], ti] = d_score[di]

    d_other, d_other_iou = _other_class(d_frame, d_cls, d_box, g_frame, g_cls, g_box, g_crowd)
    return Cells(
        d_frame,
        d_cls,
        d_score,
        rank,
        np.ascontiguousarray(d_matched.transpose(1, 2, 0)),
        np.ascontiguousarray(d_ignored.transpose(1, 2, 0)),
        d_other,
        d_other_iou,
        g_frame,
        g_cls,
        g_ignored,
        g_score,
    )


def _greedy(
    pd: np.ndarray,
    pg: np.ndarray,
    pv: np.ndarray,
    d_key: np.ndarray,
    g_crowd: np.ndarray,
    g_ignored: np.ndarray,
    thr: np.ndarray,
    n_d: int,
    n_g: int,
) -> np.ndarray:
    """The ground truth row each detection matches, per (area, threshold), or -1.

    pycocotools walks ground truth regular-first and keeps the last one whose IoU is at least the best so
    far (and the threshold); it stops at the first ignored one once a regular one matched, and crowd
    regions stay available. So the winner is, among eligible pairs, the regular one with the highest
    IoU (ties: the later row), else the ignored one likewise: the maximum of an integer key.
    """
    n_a, n_t = g_ignored.shape[1], len(thr)
    winner = np.full((n_d, n_a, n_t), -1, dtype=np.int64)
    if len(pd) == 0:
        return winner
    by_value = np.lexsort((pg, pv, pd))
    q = np.empty(len(pd), dtype=np.int64)
    q[by_value] = _ranks(pd[by_value]) + 1
    big = int(q.max()) + 1
    active = np.unique(pd)
    active_rank = np.zeros(n_d, dtype=np.int64)
    active_rank[active] = _ranks(d_key[active])
    steps = np.argsort(active_rank[pd], kind="stable")
    pd, pg, pv, q = pd[steps], pg[steps], pv[steps], q[steps]
    step_of = active_rank[pd]
    bounds = np.searchsorted(step_of, np.arange(int(step_of.max()) + 2))
    matched = np.zeros((n_g, n_a, n_t), dtype=bool)
    reach = pv[:, None] >= thr[None, :]
    for r in range(len(bounds) - 1):
        s = slice(bounds[r], bounds[r + 1])
        d, g = pd[s], pg[s]
        eligible = reach[s][:, None, :] & (~matched[g] | g_crowd[g][:, None, None])
        key = np.where(eligible, (q[s][:, None] + big * ~g_ignored[g])[:, :, None], 0)
        first = np.r_[True, d[1:] != d[:-1]]
        best = np.maximum.reduceat(key, np.flatnonzero(first), axis=0)
        win = eligible & (key == best[np.cumsum(first) - 1])
        pi, ai, ti = np.nonzero(win)
        matched[g[pi], ai, ti] = True
        winner[d[pi], ai, ti] = g[pi]
    return winner


def _other_class(
    d_frame: np.ndarray,
    d_cls: np.ndarray,
    d_box: np.ndarray,
    g_frame: np.ndarray,
    g_cls: np.ndarray,
    g_box: np.ndarray,
    g_crowd: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection, the non-crowd ground truth of another class in its frame it overlaps most (row
    within the frame, -1 if none) and that IoU: what the confusion matrix calls a class confusion."""
    frame_lo = np.searchsorted(g_frame, d_frame, "left")
    pd, pg = expand_ranges(frame_lo, np.searchsorted(g_frame, d_frame, "right"))
    other = (g_cls[pg] != d_cls[pd]) & ~g_crowd[pg]
    pd, pg = pd[other], pg[other]
    if len(pd) == 0:
        return np.full(len(d_frame), -1, dtype=np.int64), np.zeros(len(d_frame))
    iou = box_iou(d_box[pd], g_box[pg], np.zeros(len(pd), dtype=bool))
    best, at = _first_of_max(pd, iou, len(d_frame))
    row = np.where(at >= 0, pg[np.maximum(at, 0)] - frame_lo, -1)
    return row, best
