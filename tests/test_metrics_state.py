"""The evaluation state (metrics/state.py) and lazily read cell segments: an evaluation patched from the
state of an earlier one equals a cold one, array for array, after relabels (with boxes added and
removed), frame additions, and when the state or a segment is deleted, torn or corrupt."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from benchmarks import datagen
from dsvc.hashing import hash_bytes
from dsvc.history import signature
from dsvc.metrics import engine
from dsvc.metrics.engine import Evaluation
from dsvc.metrics.match import Cells
from dsvc.metrics.params import DEFAULT as METRIC_PARAMS
from dsvc.metrics.state import State, load_state, state_path
from dsvc.repo import Repo

WHO = signature("test", "test@example.com", 0)
SOURCE = "annotations/instances.json"
FRAMES = 200


def _commit(repo: Repo, message: str) -> None:
    repo.add()
    repo.commit(message, WHO)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """v0 of a generated dataset with model_a's predictions, evaluated (so the state holds v0)."""
    ds = datagen.generate(tmp_path / "d", FRAMES, media_size=16, seed=5)
    repo, _ = Repo.init(ds.root)
    repo.config.set("eval", "auto", "false")
    repo.config.save()
    repo.source_add(SOURCE, "coco", "images")
    _commit(repo, "v0")
    repo.metrics.infer_import("model_a", ds.root / "predictions" / "model_a.json", "coco", WHO)
    repo.metrics.evaluate("model_a", "HEAD")
    return repo


def _state_file(repo: Repo) -> Path:
    """The state of model_a's current predictions."""
    predictions = repo.metrics.inference("model_a")[1].predictions
    return state_path(repo.metrics.metrics_cache / METRIC_PARAMS.digest(), predictions)


def _cold(repo: Repo, rev: str = "HEAD") -> Evaluation:
    saved = repo.root / "saved-cache"
    shutil.copytree(repo.metrics.metrics_cache, saved)
    shutil.rmtree(repo.metrics.metrics_cache)
    cold = repo.metrics.evaluate("model_a", rev)[2]
    shutil.rmtree(repo.metrics.metrics_cache)
    shutil.move(saved, repo.metrics.metrics_cache)
    return cold


def _assert_equal(a: Evaluation, b: Evaluation) -> None:
    assert a.stats == b.stats and a.ap == b.ap and a.classes == b.classes
    for view in ("precision", "recall", "f1", "matrix"):
        assert np.array_equal(getattr(a.detection, view), getattr(b.detection, view))


def _assert_same_state(a: State, b: State) -> None:
    assert (a.order, a.classes, a.labels) == (b.order, b.classes, b.labels)
    assert np.array_equal(a.keys, b.keys)
    for field in fields(Cells):
        assert np.array_equal(getattr(a.cells, field.name), getattr(b.cells, field.name)), field.name
    for name in ("true", "pred", "score"):
        assert np.array_equal(getattr(a.frame_classes, name), getattr(b.frame_classes, name))


def test_a_patched_state_equals_a_cold_one(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    mutation = datagen.mutate(repo.root, relabel=0.04, add=0, seed=3)
    assert mutation.relabeled and not mutation.added
    _commit(repo, "v1")
    monkeypatch.setattr(engine, "REWRITE_STATE", 0.0)  # store even a small patch, to compare it
    warm = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert warm.frames.recomputed == len(mutation.relabeled)
    patched = load_state(_state_file(repo))
    shutil.rmtree(repo.metrics.metrics_cache)
    cold = repo.metrics.evaluate("model_a", "HEAD")[2]
    rebuilt = load_state(_state_file(repo))
    assert patched is not None and rebuilt is not None
    _assert_same_state(patched, rebuilt)
    _assert_equal(warm, cold)


def test_after_a_relabel_the_cell_keys_come_from_a_labels_diff_not_a_listing(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing a labels map reads all of it; with a state of the same frames the keys are the state's,
    patched from a diff of the two labels maps, and the result is a cold evaluation's."""
    datagen.mutate(repo.root, relabel=0.05, add=0, seed=12)
    _commit(repo, "v1")
    listed: list[object] = []
    real = engine.frame_keys
    monkeypatch.setattr(engine, "frame_keys", lambda *args: listed.append(args) or real(*args))
    warm = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert not listed and warm.frames.recomputed > 0
    _assert_equal(warm, _cold(repo))
    assert len(listed) == 1  # the cold evaluation, without a state, lists the maps


def test_a_frame_that_loses_all_labels_then_gains_one_is_patched_from_the_diff(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A labels entry deleted (the frame is left without labels) and added back leave the frame list alone,
    so the keys come from the diff each time; both must give a cold evaluation's result."""
    path = repo.root / SOURCE
    coco = json.loads(path.read_text())
    frame = coco["annotations"][0]["image_id"]
    kept = [a for a in coco["annotations"] if a["image_id"] != frame]
    one = {**coco["annotations"][0], "id": 10**9, "bbox": [4.0, 4.0, 20.0, 10.0], "area": 200.0}
    listed: list[object] = []
    real = engine.frame_keys
    monkeypatch.setattr(engine, "frame_keys", lambda *args: listed.append(args) or real(*args))
    for step, labels in enumerate((kept, [*kept, one])):
        path.write_text(json.dumps({**coco, "annotations": labels}))
        _commit(repo, f"v{step + 1}")
        warm = repo.metrics.evaluate("model_a", "HEAD")[2]
        assert not listed and warm.frames.recomputed == 1
        _assert_equal(warm, _cold(repo))
        listed.clear()  # the cold evaluation lists the maps


def test_small_changes_patch_the_stored_state_without_rewriting_it(repo: Repo) -> None:
    before = _state_file(repo).read_bytes()
    relabeled: set[str] = set()
    for step in range(3):  # each checkpoint patches v0's state with everything changed since v0
        relabeled |= set(datagen.mutate(repo.root, relabel=0.01, add=0, seed=10 + step).relabeled)
        _commit(repo, f"v{step + 1}")
        warm = repo.metrics.evaluate("model_a", "HEAD")[2]
        assert _state_file(repo).read_bytes() == before
        _assert_equal(warm, _cold(repo))
    again = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert again.frames.recomputed == 0
    assert relabeled


def test_large_changes_and_new_frames_rewrite_the_state(repo: Repo) -> None:
    before = _state_file(repo).read_bytes()
    datagen.mutate(repo.root, relabel=0.2, add=0, seed=4)
    _commit(repo, "v1")
    _assert_equal(repo.metrics.evaluate("model_a", "HEAD")[2], _cold(repo))
    rewritten = _state_file(repo).read_bytes()
    assert rewritten != before
    mutation = datagen.mutate(repo.root, relabel=0.0, add=5, seed=6)
    _commit(repo, "v2")
    repo.metrics.infer_import("model_a", repo.root / "predictions" / "model_a.json", "coco", WHO)
    added = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert added.frames.evaluated == FRAMES + len(mutation.added)
    assert _state_file(repo).read_bytes() != rewritten
    _assert_equal(added, _cold(repo))


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip", "garbage"])
def test_a_missing_or_damaged_state_is_rebuilt(repo: Repo, damage: str) -> None:
    datagen.mutate(repo.root, relabel=0.03, add=0, seed=8)
    _commit(repo, "v1")
    path = _state_file(repo)
    data = bytearray(path.read_bytes())
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"\x05" + bytes(40))
    warm = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert load_state(_state_file(repo)) is not None  # written again, whole
    _assert_equal(warm, _cold(repo))


def test_a_torn_segment_is_dropped_and_its_frames_matched_again(repo: Repo) -> None:
    (segment,) = (repo.metrics.metrics_cache / METRIC_PARAMS.digest()).glob("seg-*.npz")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the keys stay readable: the hash fails when the cells are read
    segment.write_bytes(bytes(data))
    _state_file(repo).unlink()  # so that every cell is gathered
    again = repo.metrics.evaluate("model_a", "HEAD")[2]
    assert again.frames.recomputed == FRAMES
    assert segment.stem.endswith(hash_bytes(segment.read_bytes()).hex()[:24])  # written again, whole
    _assert_equal(again, _cold(repo))
