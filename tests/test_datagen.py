"""Tests of benchmarks.datagen: its COCO data must be deterministic, valid and full of edge cases."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks import datagen

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 300
MEDIA = 64


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path, to compare whole datasets byte for byte."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: Path) -> Any:
    """Parse a JSON file."""
    return json.loads(path.read_text())


def _ground_truth(root: Path) -> dict[str, Any]:
    """The COCO ground truth of a dataset."""
    coco: dict[str, Any] = _load(root / "annotations" / "instances.json")
    return coco


def _per_frame(coco: dict[str, Any]) -> dict[str, list[str]]:
    """Annotations of each frame as canonical JSON, keyed by file_name, to see which frames changed."""
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    frames: dict[str, list[str]] = {name: [] for name in names.values()}
    for ann in coco["annotations"]:
        frames[names[ann["image_id"]]].append(json.dumps(ann, sort_keys=True))
    return {name: sorted(anns) for name, anns in frames.items()}


def _media_digests(root: Path, coco: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every frame's media, keyed by file_name."""
    return {
        image["file_name"]: hashlib.sha256((root / "images" / image["file_name"]).read_bytes()).hexdigest()
        for image in coco["images"]
    }


def _shoelace(flat: list[float]) -> float:
    """Area of a polygon given as [x1, y1, x2, y2, ...]."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> datagen.Dataset:
    """One small generated dataset shared by the read-only tests."""
    return datagen.generate(tmp_path_factory.mktemp("gen") / "ds", FRAMES, media_size=MEDIA)


@pytest.fixture(scope="module")
def coco(dataset: datagen.Dataset) -> dict[str, Any]:
    """The ground truth of the shared dataset."""
    return _ground_truth(dataset.root)


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(
    dataset: datagen.Dataset, tmp_path: Path
) -> None:
    again = datagen.generate(tmp_path / "again", FRAMES, media_size=MEDIA)
    assert again == datagen.Dataset(**{**dataset.__dict__, "root": again.root})
    assert _files(again.root) == _files(dataset.root)
    other = _files(datagen.generate(tmp_path / "other", FRAMES, media_size=MEDIA, seed=1).root)
    first = _files(dataset.root)
    assert other["annotations/instances.json"] != first["annotations/instances.json"]
    assert other["predictions/model_a.json"] != first["predictions/model_a.json"]
    assert all(other[name] != first[name] for name in first if name.startswith("images/"))


def test_json_fallback_writes_the_same_bytes_as_orjson(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("orjson")
    fast = datagen.generate(tmp_path / "orjson", 60, media_size=MEDIA)
    monkeypatch.setattr(datagen, "orjson", None)
    slow = datagen.generate(tmp_path / "json", 60, media_size=MEDIA)
    assert _files(fast.root) == _files(slow.root)


def test_pycocotools_loads_it_and_later_models_score_better(dataset: datagen.Dataset) -> None:
    gt = COCO(str(dataset.root / "annotations" / "instances.json"))
    assert len(gt.getImgIds()) == FRAMES
    assert len(gt.getAnnIds()) == dataset.annotations
    aps = []
    for model, count in zip(dataset.models, dataset.predictions, strict=True):
        dt = gt.loadRes(str(dataset.root / "predictions" / f"{model}.json"))
        assert len(dt.getAnnIds()) == count
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]  # one range: fast
        evaluation.evaluate()
        evaluation.accumulate()
        precision = evaluation.eval["precision"]
        aps.append(float(precision[precision > -1].mean()))
    assert 0.1 < aps[0] < aps[1] < 1.0


def test_media_files_have_the_exact_size_a_jpeg_marker_and_differ(
    dataset: datagen.Dataset, coco: dict[str, Any]
) -> None:
    files = sorted(p for p in (dataset.root / "images").rglob("*") if p.is_file())
    assert len(files) == FRAMES
    names = {image["file_name"] for image in coco["images"]}
    assert {p.relative_to(dataset.root / "images").as_posix() for p in files} == names
    contents = [p.read_bytes() for p in files]
    assert all(len(c) == MEDIA and c.startswith(b"\xff\xd8\xff\xe0") for c in contents)
    assert len(set(contents)) == FRAMES


def test_frames_are_split_into_folders_of_a_thousand(tmp_path: Path) -> None:
    ds = datagen.generate(tmp_path / "ds", 1001, media_size=datagen.MIN_MEDIA_SIZE, boxes_per_frame=1.0)
    names = [image["file_name"] for image in _ground_truth(ds.root)["images"]]
    assert all(re.fullmatch(r"\d{3}/frame_\d{6}\.jpg", name) for name in names)
    assert Counter(name.split("/")[0] for name in names) == {"000": 1000, "001": 1}
    assert names[1000] == "001/frame_001000.jpg"
    assert (ds.root / "images" / names[1000]).stat().st_size == datagen.MIN_MEDIA_SIZE
    assert len({(ds.root / "images" / name).read_bytes() for name in names}) == 1001


def test_all_coco_area_ranges_and_their_exact_boundaries_occur(coco: dict[str, Any]) -> None:
    areas = [ann["area"] for ann in coco["annotations"]]
    assert any(a < 32**2 for a in areas)
    assert any(32**2 < a < 96**2 for a in areas)
    assert any(a > 96**2 for a in areas)
    assert 1024.0 in areas
    assert 9216.0 in areas


def test_polygons_lie_in_their_boxes_which_lie_in_their_images(coco: dict[str, Any]) -> None:
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    polygons = [ann for ann in coco["annotations"] if not ann["iscrowd"]]
    assert polygons
    for ann in polygons:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= width + 1e-9 and y + h <= height + 1e-9
        (flat,) = ann["segmentation"]
        xs, ys = flat[0::2], flat[1::2]
        assert len(flat) >= 6 and len(xs) == len(ys)
        assert min(xs) == pytest.approx(x) and max(xs) == pytest.approx(x + w)
        assert min(ys) == pytest.approx(y) and max(ys) == pytest.approx(y + h)
        assert ann["area"] == pytest.approx(_shoelace(flat), abs=1e-6)
        assert 0 < ann["area"] <= w * h + 1e-6


def test_crowd_annotations_are_rles_whose_foreground_is_the_area(coco: dict[str, Any]) -> None:
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    crowd = [ann for ann in coco["annotations"] if ann["iscrowd"]]
    assert 0 < len(crowd) < 0.1 * len(coco["annotations"])
    for ann in crowd:
        width, height = sizes[ann["image_id"]]
        rle = ann["segmentation"]
        assert rle["size"] == [height, width]
        assert sum(rle["counts"]) == height * width
        assert ann["area"] == sum(rle["counts"][1::2])
        encoded = mask_utils.frPyObjects(rle, height, width)
        assert mask_utils.area(encoded) == ann["area"]
        assert mask_utils.toBbox(encoded).tolist() == ann["bbox"]


def test_category_ids_have_gaps_and_one_category_is_unused(coco: dict[str, Any]) -> None:
    ids = [c["id"] for c in coco["categories"]]
    assert len(ids) == 8 and len({c["name"] for c in coco["categories"]}) == 8
    assert ids != list(range(ids[0], ids[0] + len(ids)))
    used = {ann["category_id"] for ann in coco["annotations"]}
    assert used < set(ids)
    assert len(set(ids) - used) == 1


def test_image_ids_are_not_in_file_name_order(coco: dict[str, Any]) -> None:
    by_name = sorted(coco["images"], key=lambda image: image["file_name"])
    ids = [image["id"] for image in by_name]
    assert len(set(ids)) == FRAMES and min(ids) >= 100
    assert ids != sorted(ids)
    assert {"license", "date_captured", "width", "height"} <= set(by_name[0])
    assert len({image["weather"] for image in coco["images"]}) > 1


def test_box_counts_vary_and_some_frames_have_no_ground_truth(coco: dict[str, Any]) -> None:
    counts = Counter(ann["image_id"] for ann in coco["annotations"])
    per_frame = [counts[image["id"]] for image in coco["images"]]
    empty = per_frame.count(0)
    assert 1 <= empty <= 0.05 * FRAMES
    assert len(set(per_frame)) > 5
    assert 8 < sum(per_frame) / FRAMES < 12


@pytest.mark.parametrize("model", ["model_a", "model_b"])
def test_predictions_carry_the_evaluation_edge_cases(
    dataset: datagen.Dataset, coco: dict[str, Any], model: str
) -> None:
    predictions = _load(dataset.root / "predictions" / f"{model}.json")
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    with_gt = {ann["image_id"] for ann in coco["annotations"]}
    per_image = Counter(p["image_id"] for p in predictions)
    assert set(per_image) <= set(sizes)
    assert max(per_image.values()) > 100
    assert set(sizes) - set(per_image), "some frames must have no prediction"
    assert set(per_image) - with_gt, "some predictions must fall on frames without ground truth"
    assert max(Counter(json.dumps(p, sort_keys=True) for p in predictions).values()) > 1
    scores = [p["score"] for p in predictions]
    assert all(0 < s <= 1 and round(s, 2) == s for s in scores)
    assert len(set(scores)) < len(scores) / 10
    categories = {c["id"] for c in coco["categories"]}
    for p in predictions:
        x, y, w, h = p["bbox"]
        width, height = sizes[p["image_id"]]
        assert p["category_id"] in categories
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= width + 1e-9 and y + h <= height + 1e-9


def test_mutate_changes_exactly_the_frames_it_reports(dataset: datagen.Dataset, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(dataset.root, root)
    before = _ground_truth(root)
    media_before = _media_digests(root, before)
    predictions_before = {m: _load(root / "predictions" / f"{m}.json") for m in dataset.models}

    mutation = datagen.mutate(root, relabel=0.05, add=7, seed=3)

    truth = _load(root / "mutation.json")
    assert truth == {
        "relabeled": list(mutation.relabeled),
        "added": list(mutation.added),
        "edits": list(mutation.edits),
    }
    after = _ground_truth(root)
    old, new = _per_frame(before), _per_frame(after)
    assert len(mutation.relabeled) == round(0.05 * FRAMES)
    assert set(mutation.relabeled) <= set(old)
    for name, anns in old.items():
        assert (new[name] != anns) == (name in mutation.relabeled), name
    assert {e["file_name"] for e in mutation.edits} == set(mutation.relabeled)
    assert {e["kind"] for e in mutation.edits} <= {"move", "class", "add", "remove"}
    assert after["images"][:FRAMES] == before["images"]
    assert _media_digests(root, before) == media_before

    assert len(mutation.added) == 7 and not set(mutation.added) & set(old)
    added = [image for image in after["images"] if image["file_name"] in mutation.added]
    assert min(image["id"] for image in added) > max(image["id"] for image in before["images"])
    media = [(root / "images" / name).read_bytes() for name in mutation.added]
    assert all(len(m) == MEDIA for m in media)
    assert len(set(media) | {(root / "images" / n).read_bytes() for n in old}) == FRAMES + 7
    for model, old_predictions in predictions_before.items():
        predictions = _load(root / "predictions" / f"{model}.json")
        assert predictions[: len(old_predictions)] == old_predictions
        assert {p["image_id"] for p in predictions[len(old_predictions) :]} <= {i["id"] for i in added}
        assert {p["image_id"] for p in predictions} & {i["id"] for i in added}

    ids = [ann["id"] for ann in after["annotations"]]
    assert len(ids) == len(set(ids))
    by_id = {ann["id"]: ann for ann in after["annotations"]}
    for edit in mutation.edits:
        if edit["kind"] == "remove":
            assert edit["annotation_id"] not in by_id
        elif edit["kind"] == "move":
            ann = by_id[edit["annotation_id"]]
            assert ann["bbox"] == edit["bbox"] != edit["old_bbox"]
            if not ann["iscrowd"]:
                assert ann["area"] == pytest.approx(_shoelace(ann["segmentation"][0]), abs=1e-6)
        else:
            assert by_id[edit["annotation_id"]]["category_id"] == edit["category_id"]
    COCO(str(root / "annotations" / "instances.json"))


def test_mutating_twice_works_and_is_deterministic(dataset: datagen.Dataset, tmp_path: Path) -> None:
    results = []
    for copy in ("a", "b"):
        root = tmp_path / copy
        shutil.copytree(dataset.root, root)
        first = datagen.mutate(root, relabel=0.02, add=5, seed=1)
        second = datagen.mutate(root, relabel=0.03, add=4, seed=2)
        results.append((first, second, _files(root)))
    (first, second, files), (_, _, files_b) = results
    assert files == files_b
    assert not set(first.added) & set(second.added)
    assert second.relabeled != first.relabeled and len(second.relabeled) == round(0.03 * (FRAMES + 5))
    coco = _ground_truth(tmp_path / "a")
    assert len(coco["images"]) == FRAMES + 9
    assert len({image["id"] for image in coco["images"]}) == FRAMES + 9
    assert len({image["file_name"] for image in coco["images"]}) == FRAMES + 9


def test_cli_generates_and_mutates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert datagen.main(["generate", str(out), "--frames", "20", "--media-size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 20 and summary["media_size"] == 32 and summary["root"] == str(out)
    assert datagen.main(["mutate", str(out), "--relabel", "0.1", "--add", "3", "--seed", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"root": str(out), "relabeled": 2, "added": 3, "edits": summary["edits"]}
    assert summary["edits"] == len(_load(out / "mutation.json")["edits"]) >= 2
    assert (out / "images" / "000" / "frame_000022.jpg").stat().st_size == 32


def test_module_runs_from_the_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.datagen", "generate", str(tmp_path / "ds"), "--frames", "5"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("generated 5 frames") and done.stdout.count("\n") == 1


def test_bad_arguments_are_refused(dataset: datagen.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="media_size"):
        datagen.generate(tmp_path / "tiny", 3, media_size=datagen.MIN_MEDIA_SIZE - 1)
    with pytest.raises(FileExistsError):
        datagen.generate(dataset.root, 3, media_size=MEDIA)
    with pytest.raises(ValueError):
        datagen.generate(tmp_path / "one", 3, classes=1)
