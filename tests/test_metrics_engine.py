"""The metrics engine through the Python API: incremental evaluation (exact recomputed counts), overlap
parity with pycocotools, comparisons, the threshold view, classification and inference set versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import datagen
from dsvc.errors import BadRevision, InvalidInput
from dsvc.history import signature
from dsvc.repo import Repo
from tests.metrics_reference import assert_same, reference, stats_of
from tests.test_formats import YOLO_LABELS, _yolo_root

WHO = signature("test", "test@example.com", 0)
SOURCE = "annotations/instances.json"


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Repo, datagen.Mutation, Path]:
    """Checkpoint v0 of a generated dataset, both models imported, then v1 with k relabeled, m added."""
    ds = datagen.generate(tmp_path / "d", 250, media_size=16, seed=11)
    repo, _ = Repo.init(ds.root)
    repo.source_add(SOURCE, "coco", "images")
    repo.add()
    repo.commit("v0", WHO)
    for model in ds.models:
        repo.metrics.infer_import(model, ds.root / "predictions" / f"{model}.json", "coco", WHO, at="HEAD")
    repo.checkpoint_create("v0", WHO)
    shutil.copy(ds.root / SOURCE, tmp_path / "v0.json")
    mutation = datagen.mutate(ds.root, relabel=0.04, add=6, seed=2)
    repo.add()
    repo.commit("v1", WHO)
    for model in ds.models:
        repo.metrics.infer_import(
            model, ds.root / "predictions" / f"{model}.json", "coco", WHO, message="more frames"
        )
    return repo, mutation, tmp_path / "v0.json"


def test_evaluation_recomputes_only_changed_frames(two_versions: tuple[Repo, datagen.Mutation, Path]) -> None:
    repo, mutation, _ = two_versions
    k, m = len(mutation.relabeled), len(mutation.added)
    assert k > 0 and m > 0
    _, _, first = repo.metrics.evaluate("model_a", "v0")
    assert (first.frames.recomputed, first.frames.reused) == (0, 250)  # v0 was evaluated at checkpoint create
    _, _, warm = repo.metrics.evaluate("model_a", "HEAD")
    assert warm.frames.evaluated == 256
    assert warm.frames.recomputed == k + m
    _, _, again = repo.metrics.evaluate("model_a", "HEAD")
    assert again.frames.recomputed == 0 and again.frames.reused == 256
    shutil.rmtree(repo.metrics.metrics_cache)
    _, _, cold = repo.metrics.evaluate("model_a", "HEAD")
    assert cold.frames.recomputed == 256
    assert cold.stats == warm.stats and cold.ap == warm.ap
    assert np.array_equal(cold.detection.matrix, warm.detection.matrix)
    expected = reference(json.loads((repo.root / SOURCE).read_text()),
                         json.loads((repo.root / "predictions" / "model_a.json").read_text()))  # fmt: skip
    assert_same(warm.stats, stats_of(expected))


def test_overlap_equals_pycocotools_restricted_to_the_overlap(
    two_versions: tuple[Repo, datagen.Mutation, Path],
) -> None:
    repo, mutation, v0_file = two_versions
    result = repo.metrics.compare("v0", "HEAD", ["model_a", "model_b"], restrict=True)
    assert result.overlap == 250
    both = set(repo.overlap("v0", "HEAD"))
    assert len(both) == 250 and not both & set(mutation.added)
    for checkpoint, gt_file in (("v0", v0_file), ("HEAD", repo.root / SOURCE)):
        gt = json.loads(gt_file.read_text())
        ids = [i["id"] for i in gt["images"] if i["file_name"] in both]
        for model in ("model_a", "model_b"):
            results = json.loads((repo.root / "predictions" / f"{model}.json").read_text())
            known = {i["id"] for i in gt["images"]}
            ev = reference(gt, [r for r in results if r["image_id"] in known], ids)
            assert_same(result.table[model][checkpoint].stats, stats_of(ev))
    assert repo.metrics.evaluations("HEAD") == {}  # restricted evaluations are not stored as the checkpoint's
    doc = result.to_json()
    assert list(doc["table"]) == ["model_a", "model_b"] and list(doc["table"]["model_a"]) == ["v0", "HEAD"]
    relabel = doc["effects"]["relabel"]["model_a"]["AP"]
    table = doc["table"]
    assert relabel == pytest.approx(table["model_a"]["HEAD"]["AP"] - table["model_a"]["v0"]["AP"])
    retrain = doc["effects"]["retrain"]["model_b"]["v0"]["AP"]
    assert retrain == pytest.approx(table["model_b"]["v0"]["AP"] - table["model_a"]["v0"]["AP"])
    combined = doc["effects"]["combined"]["model_b"]["AP"]
    assert combined == pytest.approx(table["model_b"]["HEAD"]["AP"] - table["model_a"]["v0"]["AP"])


def test_an_evaluation_of_no_frames_has_no_data(two_versions: tuple[Repo, datagen.Mutation, Path]) -> None:
    repo, _, _ = two_versions
    _, _, ev = repo.metrics.evaluate("model_a", "v0", only=[])
    assert set(ev.stats.values()) == {-1.0} and ev.frames.evaluated == 0
    assert ev.detection.matrix.sum() == 0


def test_a_version_without_any_labels_evaluates_and_keeps_its_state(tmp_path: Path) -> None:
    """No ground truth at all: every stat is -1 (pycocotools' value), the empty cells and state are
    stored, and a second evaluation reuses them."""
    ds = datagen.generate(tmp_path / "d", 40, media_size=16, seed=9)
    source = ds.root / "annotations" / "instances.json"
    source.write_text(json.dumps({**json.loads(source.read_text()), "annotations": []}))
    repo, _ = Repo.init(ds.root)
    repo.config.set("eval", "auto", "false")
    repo.config.save()
    repo.source_add("annotations/instances.json", "coco", "images")
    repo.add()
    repo.commit("v0", WHO)
    repo.metrics.infer_import("model_a", ds.root / "predictions" / "model_a.json", "coco", WHO)
    first = repo.metrics.evaluate("model_a", "HEAD")[2]
    again = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert set(first.stats.values()) == {-1.0} and first.stats == again.stats
    assert (first.frames.recomputed, again.frames.recomputed, again.frames.reused) == (40, 0, 40)


def test_checkpoint_create_evaluates_every_inference_set(
    two_versions: tuple[Repo, datagen.Mutation, Path],
) -> None:
    repo, _, _ = two_versions
    assert set(repo.metrics.evaluations("v0")) == {"model_a", "model_b"}
    assert repo.metrics.evaluations("HEAD") == {}
    repo.config.set("eval", "auto", "false")
    repo.config.save()
    repo.checkpoint_create("v1", WHO)
    assert repo.metrics.evaluations("v1") == {}


def test_inference_versions_and_unknown_ids(two_versions: tuple[Repo, datagen.Mutation, Path]) -> None:
    repo, _, _ = two_versions
    versions = list(repo.metrics.inference_log("model_a"))
    assert len(versions) == 2 and versions[0][1].parents == (versions[1][0],)
    assert versions[0][1].message == "more frames"
    bad = repo.root / "bad.json"
    bad.write_text(json.dumps([{"image_id": 99999 + i, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}
                               for i in range(7)] + [{"image_id": 100, "category_id": 4, "bbox": [0, 0, 1, 1],
                                                      "score": 1}]))  # fmt: skip
    before = repo.metrics.inference("model_a")[0]
    with pytest.raises(
        InvalidInput, match=r"7 unknown image ids \(99999, 100000, .*, \.\.\.\); 1 unknown category"
    ):
        repo.metrics.infer_import("model_a", bad, "coco", WHO)
    assert repo.metrics.inference("model_a")[0] == before
    with pytest.raises(BadRevision, match="no such inference set"):
        repo.metrics.evaluate("nope")


def test_threshold_view_and_classification(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    lines = [
        {"id": "a.jpg", "labels": [{"class": "cat", "bbox": [0, 0, 10, 10]},
                                   {"class": "dog", "bbox": [50, 50, 10, 10]}, {"class": "indoor"}]},
        {"id": "b.jpg", "labels": [{"class": "dog", "bbox": [0, 0, 10, 10]}, {"class": "outdoor"}]},
        {"id": "c.jpg", "labels": [{"class": "outdoor"}]},
    ]  # fmt: skip
    (root / "gt.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    repo, _ = Repo.init(root)
    repo.source_add("gt.jsonl", "jsonl")
    repo.add()
    repo.commit("labels", WHO)
    preds = [
        {"id": "a.jpg", "labels": [{"class": "cat", "bbox": [0, 0, 10, 10], "score": 0.9},
                                   {"class": "cat", "bbox": [50, 50, 10, 10], "score": 0.8},
                                   {"class": "cat", "bbox": [200, 200, 5, 5], "score": 0.3},
                                   {"class": "indoor", "score": 0.7}]},
        {"id": "b.jpg", "labels": [{"class": "dog", "bbox": [0, 0, 10, 9], "score": 0.6},
                                   {"class": "indoor", "score": 0.9}, {"class": "outdoor", "score": 0.2}]},
    ]  # fmt: skip
    (root / "p.jsonl").write_text("\n".join(json.dumps(line) for line in preds))
    repo.metrics.infer_import("m", root / "p.jsonl", "jsonl", WHO)
    _, _, ev = repo.metrics.evaluate("m", conf=0.5)
    k = {c: i for i, c in enumerate(ev.classes)}
    bg = len(ev.classes)
    matrix = ev.detection.matrix
    assert matrix[k["cat"], k["cat"]] == 1 and matrix[k["dog"], k["dog"]] == 1
    assert matrix[k["dog"], k["cat"]] == 1  # the 0.8 cat over the second dog: a confusion, not a miss
    assert matrix[bg].sum() == 0  # the 0.3 cat is below the confidence threshold
    assert ev.detection.precision[k["cat"]] == 0.5 and ev.detection.recall[k["dog"]] == 0.5
    _, _, low = repo.metrics.evaluate("m", conf=0.25)
    assert low.detection.matrix[bg, k["cat"]] == 1 and low.frames.recomputed == 0
    c = ev.classification
    assert c is not None and c.frames == 3
    assert c.accuracy == pytest.approx(1 / 3)  # a: indoor right; b: indoor for outdoor; c: no prediction
    assert c.view.matrix[k["outdoor"], k["indoor"]] == 1 and c.view.matrix[k["outdoor"], bg] == 1
    with pytest.raises(InvalidInput, match="--iou must be one of"):
        repo.metrics.evaluate("m", iou=0.42)


def test_yolo_predictions_on_a_yolo_source(tmp_path: Path) -> None:
    root = _yolo_root(tmp_path, YOLO_LABELS)
    repo, _ = Repo.init(root)
    repo.source_add("ds/data.yaml", "yolo", "ds/images")
    repo.add()
    repo.commit("labels", WHO)
    preds = root / "preds"
    (preds / "train").mkdir(parents=True)
    (preds / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4 0.9\n2 0.216599 0.3 0.18286 0.1 0.3\n")
    (preds / "c.txt").write_text("1 0.797098 0.678176 0.331314 0.350596 0.7\n0 0.2 0.2 0.1 0.1 0.6\n")
    repo.metrics.infer_import("y", preds, "yolo", WHO)
    _, _, ev = repo.metrics.evaluate("y")
    per_class = dict(
        zip(ev.classes, zip(ev.detection.precision, ev.detection.recall, strict=True), strict=True)
    )
    assert per_class["car"] == (0.5, 1.0) and per_class["person"] == (1.0, 1.0)
    assert per_class["dog"][1] == 0.0  # its prediction scores below the confidence threshold
    (preds / "zzz.txt").write_text("0 0.5 0.5 0.1 0.1 0.5\n")
    with pytest.raises(InvalidInput, match=r"1 unknown images \('zzz'\)"):
        repo.metrics.infer_import("y", preds, "yolo", WHO)
