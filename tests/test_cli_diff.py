"""End-to-end: `dsvc diff`, `dsvc stats A B` and `dsvc log --frame` on generated data whose truth is known
(benchmarks/datagen.py records every relabel edit and added frame in mutation.json)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks import datagen
from dsvc.diff import box_iou
from dsvc.model import BBox
from dsvc.repo import Repo
from tests.test_cli_plumbing import assert_one_line_error
from tests.test_cli_workdir import SOURCE, data, dsvc, new_repository


def class_counts(coco_file: Path) -> dict[str, int]:
    """Labels per class, straight from a COCO annotation file."""
    doc = json.loads(coco_file.read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    return dict(Counter(names[a["category_id"]] for a in doc["annotations"]))


@dataclass(frozen=True)
class Relabeled:
    """A versioned dataset after a known relabel: v0, then v1 with 10% of the frames relabeled and 6 new
    frames; what `dsvc diff` said while the change was only in the working tree; the v0 annotations."""

    root: Path
    truth: dict[str, Any]
    v0: Path
    worktree_diff: dict[str, Any]
    diff_wrote_nothing: bool


@pytest.fixture(scope="module")
def relabeled(tmp_path_factory: pytest.TempPathFactory) -> Relabeled:
    root = new_repository(tmp_path_factory.mktemp("diff") / "cars", 80, 200, seed=3)
    dsvc("checkpoint", "create", "v0", cwd=root)
    v0 = root.parent / "v0-instances.json"
    shutil.copy(root / SOURCE, v0)
    datagen.mutate(root, relabel=0.1, add=6, seed=2)
    truth = json.loads((root / "mutation.json").read_text())
    (root / "mutation.json").unlink()  # not part of the dataset
    packs = root / ".dsvc" / "objects" / "packs"
    before = sorted(packs.iterdir())
    worktree = data("diff", cwd=root)  # HEAD against the uncommitted working tree
    wrote_nothing = sorted(packs.iterdir()) == before
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "relabel", cwd=root)
    dsvc("checkpoint", "create", "v1", cwd=root)
    return Relabeled(root, truth, v0, worktree, wrote_nothing)


def check_frames(diff: dict[str, Any], truth: dict[str, Any], total: int) -> None:
    """Every relabeled frame is modified in its labels only, every new frame added, nothing else."""
    assert diff["frames"]["added"] == sorted(truth["added"])
    assert diff["frames"]["removed"] == []
    assert diff["frames"]["modified"] == [
        {"id": f, "changes": ["labels"]} for f in sorted(truth["relabeled"])
    ]
    relabeled, added = len(truth["relabeled"]), len(truth["added"])
    assert diff["summary"] == {
        "added": added,
        "removed": 0,
        "modified": relabeled,
        "unchanged": total - relabeled,
        "overlap": total,
    }


def test_the_working_tree_against_head(relabeled: Relabeled) -> None:
    check_frames(relabeled.worktree_diff, relabeled.truth, 80)
    assert relabeled.worktree_diff["to"] is None and relabeled.diff_wrote_nothing  # a diff stores nothing


def test_known_relabel_between_checkpoints(relabeled: Relabeled) -> None:
    root, truth, v0 = relabeled.root, relabeled.truth, relabeled.v0
    diff = data("diff", "v0", "v1", "--labels", cwd=root)
    assert set(diff) == {"from", "to", "summary", "frames", "classes", "labels"}
    history = data("log", "v1", cwd=root)
    assert (diff["from"], diff["to"]) == (history[1]["id"], history[0]["id"])
    check_frames(diff, truth, 80)
    assert "labels" not in data("diff", "v0", "v1", cwd=root)
    before_counts, after_counts = class_counts(v0), class_counts(root / SOURCE)
    assert diff["classes"] == {
        name: {"from": before_counts.get(name, 0), "to": after_counts.get(name, 0)}
        for name in sorted(before_counts.keys() | after_counts.keys())
    }
    check_label_edits(diff["labels"], truth, v0)
    assert data("diff", "v0", cwd=root)["summary"]["modified"] == len(truth["relabeled"])  # v0 vs worktree
    clean = data("diff", cwd=root)
    assert clean["frames"] == {"added": [], "removed": [], "modified": []}


def check_label_edits(labels: list[dict[str, Any]], truth: dict[str, Any], v0: Path) -> None:
    """Each known edit is reported once, as what it was: a moved box (with its IoU), a class change (from,
    to), an added and a removed box; and nothing else."""
    names = {c["id"]: c["name"] for c in json.loads(v0.read_text())["categories"]}
    found = {(entry["frame"], c["id"]): c for entry in labels for c in entry["changes"]}
    assert len(found) == sum(len(entry["changes"]) for entry in labels) == len(truth["edits"])
    for edit in truth["edits"]:
        change = found[(edit["file_name"], edit["annotation_id"])]
        if edit["kind"] == "move":
            assert change["kind"] in ("moved", "resized")
            assert change["from"] == edit["old_bbox"] and change["to"] == edit["bbox"]
            assert change["iou"] == pytest.approx(box_iou(BBox(*edit["old_bbox"]), BBox(*edit["bbox"])))
        elif edit["kind"] == "class":
            assert change["kind"] == "class_changed"
            assert (change["from"], change["to"]) == (
                names[edit["old_category_id"]],
                names[edit["category_id"]],
            )
        elif edit["kind"] == "add":
            assert (change["kind"], change["class"]) == ("added", names[edit["category_id"]])
        else:
            assert (change["kind"], change["class"]) == ("removed", names[edit["category_id"]])
    kinds = {e["kind"] for e in truth["edits"]}
    assert {"move", "class", "add", "remove"} <= kinds  # the data exercises every kind of edit


def test_text_stats_log_and_api(relabeled: Relabeled) -> None:
    root, truth, v0 = relabeled.root, relabeled.truth, relabeled.v0
    relabeled_frames, added = len(truth["relabeled"]), len(truth["added"])
    text = dsvc("diff", "v0", "v1", cwd=root).stdout
    assert f" {added} frames added, 0 removed, {relabeled_frames} modified (0 media, 0 metadata," in text
    assert text.count(" | ") == relabeled_frames + added
    listed = dsvc("diff", "v0", "v1", "--frames", cwd=root).stdout.splitlines()
    assert sum(line.startswith("added ") for line in listed) == added
    assert (
        sum(line.startswith("modified ") and line.endswith("(labels)") for line in listed) == relabeled_frames
    )
    detail = dsvc("diff", "v0", "v1", "--labels", cwd=root).stdout
    assert "class changed" in detail and "IoU" in detail

    stats = data("stats", "v0", "v1", cwd=root)
    # v0 was counted in full once and cached; v1's counts came from v0's and the changes, cached in turn
    assert len(list((root / ".dsvc" / "cache" / "counts").glob("*.json"))) == 2
    assert set(stats) == {"from", "to", "frames", "labels", "classes", "metadata"}
    assert stats["frames"] == {"from": 80, "to": 80 + added}
    assert stats["classes"] == data("diff", "v0", "v1", cwd=root)["classes"]
    weather = json.loads(v0.read_text())["images"]
    assert sum(v["from"] for v in stats["metadata"]["weather"].values()) == len(weather)
    assert set(data("stats", "v1", cwd=root)) == {"frames", "labels", "labelled_frames", "classes", "files"}
    assert "classes:" in dsvc("stats", "v0", "v1", cwd=root).stdout

    frame = sorted(truth["relabeled"])[0]
    entries = data("log", "--frame", frame, cwd=root)
    assert [e["frame"]["kind"] for e in entries] == ["modified", "added"]
    assert entries[0]["frame"]["changes"] == ["labels"] and entries[0]["frame"]["labels"]
    assert f"{frame}: modified (labels)" in dsvc("log", "--frame", frame, cwd=root).stdout
    assert "frame" not in data("log", cwd=root)[0]

    repo = Repo(root)
    changes = list(repo.diff("v0", "v1"))
    assert [c.id for c in changes if c.kind == "modified"] == sorted(truth["relabeled"])
    assert sum(1 for _ in repo.overlap("v0", "v1")) == 80


def test_errors_and_help(relabeled: Relabeled) -> None:
    root = relabeled.root
    assert_one_line_error(dsvc("diff", "nope", cwd=root, ok=False), "nope")
    assert_one_line_error(dsvc("stats", "v0", "nope", cwd=root, ok=False), "nope")
    assert dsvc("diff", "a", "b", "c", cwd=root, ok=False).returncode == 2
    for command in (("diff",), ("stats",), ("log",)):
        assert "Examples:" in dsvc(*command, "--help", cwd=root).stdout
