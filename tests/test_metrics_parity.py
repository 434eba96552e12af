"""COCO parity (DESIGN §9): dsvc's 12 stats equal pycocotools' to 1e-12, on random edge cases, on
generated datasets through a repository, and on the real COCO fixture."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import datagen
from dsvc.history import signature
from dsvc.metrics.accumulate import accumulate_order
from dsvc.metrics.params import STAT_NAMES
from dsvc.repo import Repo
from tests.conftest import SHARED_FIXTURES
from tests.metrics_reference import assert_same, direct, direct_stats, reference, stats_of

FIXTURE = SHARED_FIXTURES / "coco_val2014_100"
WHO = signature("test", "test@example.com", 0)
README_STATS = (
    0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
    0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
    0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982,
)  # fmt: skip


def random_case(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A small COCO case full of edge cases: crowd regions, every area range (boundaries included), tied
    scores and IoUs (boxes on a coarse grid), duplicate detections, images without labels or without
    detections, a category without labels, an image with more than 100 detections, a ground truth id 0."""
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(1, 7))
    cat_ids = sorted(rng.choice(np.arange(1, 30), int(rng.integers(1, 5)), replace=False).tolist())
    image_ids = rng.permutation(np.arange(1, 50))[:n_images].tolist()
    scale = [4.0, 32.0, 40.0, 96.0, 160.0]
    anns = []
    next_id = int(rng.integers(0, 2))  # sometimes 0: pycocotools then counts that box's matches as misses
    for image in image_ids:
        for _ in range(int(rng.poisson(3))):
            s = float(rng.choice(scale))
            x, y = (rng.integers(0, 6, 2) * s / 2).tolist()
            w, h = (rng.integers(1, 4, 2) * s / 2).tolist()
            crowd = int(rng.random() < 0.15)
            area = w * h if rng.random() < 0.7 else float(rng.choice([1024.0, 9216.0, w * h * 0.8]))
            cat = int(rng.choice(cat_ids[:-1] or cat_ids))  # the last category often has no labels
            anns.append({"id": next_id, "image_id": image, "category_id": cat, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": crowd})  # fmt: skip
            next_id += 1
    results = []
    for image in image_ids:
        if rng.random() < 0.15:
            continue  # an image without detections
        count = int(rng.poisson(4)) + (int(rng.integers(101, 130)) if rng.random() < 0.1 else 0)
        own = [a for a in anns if a["image_id"] == image]
        for _ in range(count):
            if own and rng.random() < 0.6:
                a = own[int(rng.integers(len(own)))]
                jitter = (rng.integers(-1, 2, 4) * float(rng.choice([0.0, 2.0, 8.0]))).tolist()
                box = [a["bbox"][0] + jitter[0], a["bbox"][1] + jitter[1],
                       max(a["bbox"][2] + jitter[2], 1.0), max(a["bbox"][3] + jitter[3], 1.0)]  # fmt: skip
                cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            else:
                s = float(rng.choice(scale))
                box = [*(rng.integers(0, 6, 2) * s / 2).tolist(), *(rng.integers(1, 4, 2) * s / 2).tolist()]
                cat = int(rng.choice(cat_ids))
            det = {"image_id": image, "category_id": cat, "bbox": box, "score": round(float(rng.random()), 1)}
            results.append(det)
            if rng.random() < 0.05:
                results.append(dict(det))  # a duplicate
    images = [{"id": i, "file_name": f"img_{i}.jpg", "width": 640, "height": 480} for i in image_ids]
    categories = [{"id": c, "name": f"class_{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": categories}, results


@settings(max_examples=150)
@given(st.integers(0, 2**32 - 1))
def test_random_edge_cases_match_pycocotools_exactly(seed: int) -> None:
    gt, results = random_case(seed)
    ev = reference(gt, results)
    acc = direct(gt, results)
    assert np.array_equal(acc.precision, ev.eval["precision"])
    assert np.array_equal(acc.recall, ev.eval["recall"])
    assert_same(direct_stats(gt, results), stats_of(ev))


def test_a_generated_dataset_matches_pycocotools(tmp_path: Path) -> None:
    ds = datagen.generate(tmp_path / "d", 400, media_size=16, seed=3)
    gt = json.loads((ds.root / "annotations" / "instances.json").read_text())
    for model in ds.models:
        results = json.loads((ds.root / "predictions" / f"{model}.json").read_text())
        assert_same(direct_stats(gt, results), stats_of(reference(gt, results)))


def versioned(root: Path, source: str) -> Repo:
    repo, _ = Repo.init(root)
    repo.source_add(source, "coco")
    repo.add()
    repo.commit("labels", WHO)
    return repo


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="shared fixtures are absent")
def test_the_real_fixture_gives_the_readme_numbers(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "gt.json").write_bytes((FIXTURE / "instances_val2014_100.json").read_bytes())
    repo = versioned(root, "annotations/gt.json")
    repo.metrics.infer_import("fake", FIXTURE / "fakebbox100_results.json", "coco", WHO)
    _, _, ev = repo.metrics.evaluate("fake")
    assert_same(ev.stats, dict(zip(STAT_NAMES, README_STATS, strict=True)))
    assert ev.frames.evaluated == 100


def test_a_generated_dataset_through_a_repository_matches_pycocotools(tmp_path: Path) -> None:
    ds = datagen.generate(tmp_path / "d", 300, media_size=16, seed=7)
    repo = versioned(ds.root, "annotations/instances.json")
    gt = json.loads((ds.root / "annotations" / "instances.json").read_text())
    for model in ds.models:
        path = ds.root / "predictions" / f"{model}.json"
        repo.metrics.infer_import(model, path, "coco", WHO)
        _, _, ev = repo.metrics.evaluate(model)
        expected = reference(gt, json.loads(path.read_text()))
        assert_same(ev.stats, stats_of(expected))
        names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
        per_class = expected.eval["precision"][:, :, :, 0, -1]
        aps = [
            float(np.mean(p[p > -1])) if (p := per_class[:, :, k]).max() > -1 else -1.0
            for k in range(len(names))
        ]
        assert dict(zip(ev.classes, ev.ap, strict=True)) == pytest.approx(
            dict(zip(names, aps, strict=True)), abs=1e-12
        )


@pytest.mark.parametrize("image_scale", [1, 1 << 40])  # the second makes the composite key too wide
def test_accumulate_order_is_the_lexsort_order(image_scale: int) -> None:
    rng = np.random.default_rng(5)
    n = 5000
    frame = np.sort(rng.integers(0, 300, n))
    cells = SimpleNamespace(
        d_frame=frame,
        d_cls=rng.integers(0, 6, n),
        d_score=np.round(rng.random(n), 1) * rng.choice([1.0, -0.0], n),
        d_rank=rng.integers(0, 100, n),
    )
    image_pos = rng.permutation(300) * image_scale
    expected = np.lexsort((cells.d_rank, image_pos[frame], -cells.d_score, cells.d_cls))
    assert np.array_equal(accumulate_order(cells, image_pos), expected)  # type: ignore[arg-type]
