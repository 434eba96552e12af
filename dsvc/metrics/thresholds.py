"""The "shipped model" view: per-class precision, recall and F1 and a confusion matrix at one IoU threshold
of the matching grid and one confidence threshold, read from cached cells without matching again.

Greedy matching takes detections best score first, so the matches of the detections at or above a
confidence are exactly those of the full matching: a confidence cut is a filter of the cells. The
confusion matrix has a background row and column (the last): every non-ignored ground truth is counted
once (matched: diagonal; else confused by the highest-scoring detection of another class over it at the
IoU threshold; else missed: background column), and every detection at or above the confidence once
(matched, confusion, or false positive: background row). Crowd regions and what matches them are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsvc.metrics.cache import FrameClasses
from dsvc.metrics.match import Cells


@dataclass(frozen=True)
class ThresholdView:
    """Per-class precision, recall, F1 (-1 where undefined) and the (K+1)x(K+1) confusion matrix, rows
    the true class, columns the predicted one, background last."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    matrix: np.ndarray


def _scores(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, ...]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), -1.0)
        recall = np.where(actual > 0, tp / np.maximum(actual, 1), -1.0)
        both = (precision >= 0) & (recall >= 0)
        total = precision + recall
        f1 = np.where(both & (total > 0), 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    return precision, recall, np.where(both, f1, -1.0)


def detection_view(cells: Cells, n_classes: int, t: int, iou: float, conf: float) -> ThresholdView:
    """The view at IoU grid index t (threshold iou) and confidence conf, area range "all"."""
    k = n_classes
    considered = (cells.d_score >= conf) & ~cells.d_ignored[0, t]
    tp = considered & cells.d_matched[0, t]
    fp = considered & ~cells.d_matched[0, t]
    counted = ~cells.g_ignored[:, 0]
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    np.add.at(matrix, (cells.d_cls[tp], cells.d_cls[tp]), 1)

    hit = cells.g_score[:, t] >= conf
    other = cells.d_other
    candidates = np.flatnonzero(fp & (other >= 0) & (cells.d_other_iou >= iou))
    g = other[candidates]
    candidates = candidates[counted[g] & ~hit[g]]
    by_score = candidates[np.lexsort((candidates, -cells.d_score[candidates]))]
    _, first = np.unique(other[by_score], return_index=True)
    confusing = by_score[first]
    np.add.at(matrix, (cells.g_cls[other[confusing]], cells.d_cls[confusing]), 1)
    background = fp.copy()
    background[confusing] = False
    np.add.at(matrix, (np.full(int(background.sum()), k), cells.d_cls[background]), 1)
    confused = np.zeros(len(counted), dtype=bool)
    confused[other[confusing]] = True
    missed = counted & ~hit & ~confused
    np.add.at(matrix, (cells.g_cls[missed], np.full(int(missed.sum()), k)), 1)

    n_tp = np.bincount(cells.d_cls[tp], minlength=k)
    n_pred = n_tp + np.bincount(cells.d_cls[fp], minlength=k)
    n_true = np.bincount(cells.g_cls[counted], minlength=k)
    precision, recall, f1 = _scores(n_tp, n_pred, n_true)
    return ThresholdView(precision, recall, f1, matrix)


@dataclass(frozen=True)
class ClassificationView:
    """Whole-image classification: accuracy over labelled frames, per-class scores, confusion matrix."""

    frames: int
    accuracy: float
    view: ThresholdView


def classification_view(fc: FrameClasses, n_classes: int, conf: float) -> ClassificationView | None:
    """Each frame's label against its best prediction at or above conf (none: background); None when no
    frame has a whole-image label."""
    labelled = fc.true >= 0
    if not labelled.any():
        return None
    k = n_classes
    pred = np.where((fc.pred >= 0) & (fc.score >= conf), fc.pred, k)
    true = np.where(labelled, fc.true, k)
    shown = labelled | (pred < k)
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    np.add.at(matrix, (true[shown], pred[shown]), 1)
    diagonal = np.diag(matrix)[:k]
    precision, recall, f1 = _scores(diagonal, matrix[:, :k].sum(axis=0), matrix[:k, :].sum(axis=1))
    accuracy = float(np.mean(pred[labelled] == true[labelled]))
    return ClassificationView(int(labelled.sum()), accuracy, ThresholdView(precision, recall, f1, matrix))
