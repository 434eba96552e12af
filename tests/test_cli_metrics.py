"""End-to-end: inference sets, `dsvc eval` and `dsvc compare` through real processes, with the JSON
contracts of the metrics issue, automatic evaluation on checkpoint create, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import datagen
from dsvc.metrics.params import STAT_NAMES
from tests.test_cli_plumbing import assert_one_line_error
from tests.test_cli_workdir import data, dsvc, new_repository

PRED_A = "predictions/model_a.json"
PRED_B = "predictions/model_b.json"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v0 with model_a imported (evaluated at checkpoint create), then v1 relabeled and curated, with
    model_a and model_b imported on it. Shared by the tests of this module, which change nothing that
    another reads (only new checkpoints, and imports that fail)."""
    root = new_repository(tmp_path_factory.mktemp("metrics") / "cars", 80, 64, seed=4)
    dsvc(
        "infer", "import", "model_a", PRED_A, "--format", "coco", "--model", "yolo-a", "-m", "first", cwd=root
    )
    dsvc("checkpoint", "create", "v0", cwd=root)
    datagen.mutate(root, relabel=0.05, add=5, seed=3)
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v1", cwd=root)
    dsvc("infer", "import", "model_a", PRED_A, "--format", "coco", cwd=root)
    dsvc("infer", "import", "model_b", PRED_B, "--format", "coco", cwd=root)
    return root


def test_eval_json_contract(evaluated: Path) -> None:
    doc = data("eval", "model_a", "--at", "v0", cwd=evaluated)
    assert set(doc) == {
        "inference",
        "inference_version",
        "checkpoint",
        "metrics",
        "per_class",
        "confusion",
        "frames",
    }
    assert doc["inference"] == "model_a" and len(doc["inference_version"]) == 64
    assert doc["checkpoint"] == data("rev-parse", "v0", "--commit", cwd=evaluated)["v0"]
    assert list(doc["metrics"]) == list(STAT_NAMES)
    assert all(set(v) == {"AP", "precision", "recall", "f1"} for v in doc["per_class"].values())
    classes = doc["confusion"]["classes"]
    assert classes[-1] == "background" and classes[:-1] == list(doc["per_class"])
    assert len(doc["confusion"]["matrix"]) == len(classes) and all(
        len(r) == len(classes) for r in doc["confusion"]["matrix"]
    )
    assert doc["frames"] == {"evaluated": 80, "recomputed": 0, "reused": 80}  # evaluated at checkpoint create
    text = dsvc("eval", "model_a", "--at", "v0", cwd=evaluated).stdout
    assert "AP " in text and "confusion at IoU 0.5" in text


def test_compare_json_contract(evaluated: Path) -> None:
    doc = data(
        "compare", "v0", "HEAD", "--model", "model_b", "--model", "model_a", "--overlap", cwd=evaluated
    )
    assert set(doc) == {"checkpoints", "models", "table", "effects", "frames"}
    assert doc["checkpoints"] == ["v0", "HEAD"] and doc["models"] == ["model_b", "model_a"]
    assert list(doc["table"]) == ["model_b", "model_a"]
    assert all(
        list(row) == ["v0", "HEAD"] and list(row["v0"]) == list(STAT_NAMES) for row in doc["table"].values()
    )
    assert set(doc["effects"]) == {"relabel", "retrain", "combined"}
    assert doc["frames"]["overlap"] == 80 and doc["frames"]["HEAD"]["evaluated"] == 80
    full = data("compare", "v0", "HEAD", "--model", "model_a", cwd=evaluated)
    assert full["frames"]["HEAD"]["evaluated"] == 85 and full["frames"]["overlap"] is None
    assert "relabel model_a" in dsvc("compare", "v0", "HEAD", "--model", "model_a", cwd=evaluated).stdout


def test_inference_sets_list_show_log(evaluated: Path) -> None:
    listed = data("infer", "list", cwd=evaluated)
    assert [s["name"] for s in listed] == ["model_a", "model_b"]
    shown = data("infer", "show", "model_a", cwd=evaluated)
    assert shown["model"] == "yolo-a"  # kept from the previous version
    log = data("infer", "log", "model_a", cwd=evaluated)
    assert len(log) == 2 and log[1]["message"] == "first" and log[0]["id"] == shown["id"]


def test_checkpoint_create_evaluates_and_show_lists(evaluated: Path) -> None:
    created = data("checkpoint", "create", "v1", cwd=evaluated)
    assert set(created["evaluations"]) == {"model_a", "model_b"}
    shown = data("checkpoint", "show", "v1", cwd=evaluated)
    assert shown["evaluations"]["model_b"]["metrics"] == created["evaluations"]["model_b"]["metrics"]
    assert "eval model_a: AP" in dsvc("checkpoint", "show", "v1", cwd=evaluated).stdout
    (evaluated / ".dsvc" / "config").write_text(
        (evaluated / ".dsvc" / "config").read_text() + "[eval]\nauto = false\n"
    )
    dsvc("infer", "import", "model_c", PRED_B, "--format", "coco", cwd=evaluated)
    assert "model_c" not in data("checkpoint", "create", "v2", cwd=evaluated)["evaluations"]


def test_errors_are_one_line(evaluated: Path) -> None:
    bad = evaluated / "bad.json"
    rows = [{"image_id": 5000 + i, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5} for i in range(8)]
    bad.write_text(json.dumps(rows))
    before = data("infer", "show", "model_b", cwd=evaluated)["id"]
    proc = dsvc("infer", "import", "model_b", "bad.json", "--format", "coco", cwd=evaluated, ok=False)
    assert_one_line_error(
        proc, "8 unknown image ids", "5000, 5001, 5002, 5003, 5004, ...", "nothing was imported"
    )
    assert data("infer", "show", "model_b", cwd=evaluated)["id"] == before
    proc = dsvc("infer", "import", "new", "bad.json", "--format", "coco", cwd=evaluated, ok=False)
    assert_one_line_error(proc, "unknown image ids")
    assert_one_line_error(dsvc("infer", "show", "new", cwd=evaluated, ok=False), "no such inference set: new")
    assert_one_line_error(dsvc("eval", "nope", cwd=evaluated, ok=False), "no such inference set: nope")
    assert_one_line_error(
        dsvc("eval", "model_a", "--iou", "0.3", cwd=evaluated, ok=False), "--iou must be one of"
    )
    assert_one_line_error(dsvc("eval", "model_a", "--at", "v9", cwd=evaluated, ok=False), "v9")
    (evaluated / "lines.jsonl").write_text(json.dumps({"id": "nowhere.jpg", "labels": []}) + "\n")
    proc = dsvc("infer", "import", "j", "lines.jsonl", "--format", "jsonl", cwd=evaluated, ok=False)
    assert_one_line_error(proc, "1 unknown frame ids ('nowhere.jpg')")
