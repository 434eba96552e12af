"""Evaluation parameters: COCO's defaults for boxes, and the digest that keys cached match cells."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsvc import codec
from dsvc.errors import InvalidInput
from dsvc.hashing import hash_bytes

# Bumped whenever the meaning of a cached cell changes, so old caches are never misread.
CELL_VERSION = 3
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AREA_NAMES = ("all", "small", "medium", "large")


@dataclass(frozen=True)
class Params:
    """What matching and accumulating depend on; the defaults are pycocotools' for `iouType="bbox"`."""

    iou_thresholds: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
    recall_thresholds: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[float, float], ...] = (
        (0.0, 1e10),
        (0.0, 1024.0),
        (1024.0, 9216.0),
        (9216.0, 1e10),
    )

    @property
    def ious(self) -> np.ndarray:
        return np.array(self.iou_thresholds)

    @property
    def recalls(self) -> np.ndarray:
        return np.array(self.recall_thresholds)

    @property
    def max_det(self) -> int:
        return max(self.max_dets)

    def digest(self) -> str:
        """Hex key of what a cell depends on (recall thresholds do not: they only enter accumulate)."""
        value = [CELL_VERSION, list(self.iou_thresholds), self.max_det, [list(a) for a in self.area_ranges]]
        return hash_bytes(codec.encode(codec.canonical(value))).hex()[:32]

    def iou_index(self, threshold: float) -> int:
        """Position of an IoU threshold in the grid the cells were matched at."""
        for i, t in enumerate(self.iou_thresholds):
            if abs(t - threshold) < 1e-9:
                return i
        grid = ", ".join(f"{t:g}" for t in self.iou_thresholds)
        raise InvalidInput(f"--iou must be one of the matched thresholds ({grid}), got {threshold:g}")


DEFAULT = Params()
