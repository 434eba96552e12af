"""Evaluation results as JSON-ready values (the `dsvc eval` contract), and the stored summaries that
`dsvc checkpoint show` lists: one small file per (commit, inference set version), written atomically
(a torn one, after a crash, reads as absent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dsvc.hashing import ObjectId
from dsvc.metrics.cache import write_derived
from dsvc.metrics.engine import Evaluation
from dsvc.metrics.thresholds import ThresholdView

BACKGROUND = "background"


def _confusion(classes: tuple[str, ...], view: ThresholdView) -> dict[str, Any]:
    return {"classes": [*classes, BACKGROUND], "matrix": view.matrix.tolist()}


def evaluation_json(name: str, version: ObjectId, commit: ObjectId, ev: Evaluation) -> dict[str, Any]:
    """The JSON document of `dsvc eval NAME --json`."""
    det = ev.detection
    per_class = {
        cls: {
            "AP": ev.ap[k],
            "precision": float(det.precision[k]),
            "recall": float(det.recall[k]),
            "f1": float(det.f1[k]),
        }
        for k, cls in enumerate(ev.classes)
    }
    out: dict[str, Any] = {
        "inference": name,
        "inference_version": version.hex(),
        "checkpoint": commit.hex(),
        "metrics": dict(ev.stats),
        "per_class": per_class,
        "confusion": _confusion(ev.classes, det),
        "frames": {
            "evaluated": ev.frames.evaluated,
            "recomputed": ev.frames.recomputed,
            "reused": ev.frames.reused,
        },
    }
    if ev.classification is not None:
        c = ev.classification
        out["classification"] = {
            "frames": c.frames,
            "accuracy": c.accuracy,
            "per_class": {
                cls: {
                    "precision": float(c.view.precision[k]),
                    "recall": float(c.view.recall[k]),
                    "f1": float(c.view.f1[k]),
                }
                for k, cls in enumerate(ev.classes)
            },
            "confusion": _confusion(ev.classes, c.view),
        }
    return out


def _path(cache_root: Path, commit: ObjectId, version: ObjectId) -> Path:
    return cache_root / "results" / f"{commit.hex()}-{version.hex()}.json"


def save_summary(cache_root: Path, commit: ObjectId, version: ObjectId, doc: dict[str, Any]) -> None:
    """Keep an evaluation's document for `checkpoint show`."""
    write_derived(_path(cache_root, commit, version), orjson.dumps(doc))


def load_summary(cache_root: Path, commit: ObjectId, version: ObjectId) -> dict[str, Any] | None:
    """The stored document of an evaluation, or None if it never ran (or the cache was deleted)."""
    try:
        doc: dict[str, Any] = orjson.loads(_path(cache_root, commit, version).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return doc
