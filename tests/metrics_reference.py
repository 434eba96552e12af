"""pycocotools as the reference for the metrics tests: its stats on in-memory COCO documents, and dsvc's
matching + accumulate on the same documents without a repository."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Collection
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dsvc.metrics.accumulate import Accumulated, accumulate, sort_detections, summarize
from dsvc.metrics.match import Boxes, match
from dsvc.metrics.params import DEFAULT, STAT_NAMES


def reference(
    gt: dict[str, Any], results: list[dict[str, Any]], images: Collection[Any] | None = None
) -> COCOeval:
    """pycocotools' evaluation with default bbox parameters (imgIds restricted when images is given)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dets = coco.loadRes(copy.deepcopy(results)) if results else COCO()
        if not results:
            dets.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            dets.createIndex()
        ev = COCOeval(coco, dets, "bbox")
        if images is not None:
            ev.params.imgIds = sorted(images)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def stats_of(ev: COCOeval) -> dict[str, float]:
    return dict(zip(STAT_NAMES, (float(v) for v in ev.stats), strict=True))


def direct(gt: dict[str, Any], results: list[dict[str, Any]]) -> Accumulated:
    """dsvc's match and accumulate on COCO documents: images in id order, categories in id order."""
    images = sorted(i["id"] for i in gt["images"])
    pos = {i: n for n, i in enumerate(images)}
    cats = {c: n for n, c in enumerate(sorted(c["id"] for c in gt["categories"]))}

    def boxes(anns: list[dict[str, Any]], truth: bool) -> Boxes:
        anns = sorted((a for a in anns if a["category_id"] in cats), key=lambda a: pos[a["image_id"]])
        n = len(anns)
        box = np.array([a["bbox"] for a in anns], dtype=float).reshape(n, 4)
        return Boxes(
            np.array([pos[a["image_id"]] for a in anns], dtype=np.int64),
            np.array([cats[a["category_id"]] for a in anns], dtype=np.int64),
            box,
            np.array([a["area"] for a in anns], dtype=float) if truth else box[:, 2] * box[:, 3],
            np.array([bool(a.get("iscrowd", 0)) and truth for a in anns], dtype=bool),
            np.array([truth and a["id"] == 0 for a in anns], dtype=bool),
            np.array([0.0 if truth else a["score"] for a in anns], dtype=float),
        )

    cells = match(boxes(gt["annotations"], True), boxes(results, False), len(cats), DEFAULT)
    return accumulate(sort_detections(cells, np.arange(len(images))), len(cats), DEFAULT, every_max_dets=True)


def direct_stats(gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    return summarize(direct(gt, results), DEFAULT)


def assert_same(mine: dict[str, float], expected: dict[str, float], tol: float = 1e-12) -> None:
    bad = {k: (mine[k], expected[k]) for k in STAT_NAMES if abs(mine[k] - expected[k]) > tol}
    assert not bad, bad
