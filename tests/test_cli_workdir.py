"""End-to-end: the working-directory contract of DESIGN §7, on generated data, through real processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import blake3
import pytest
from pycocotools.coco import COCO

from benchmarks import datagen
from tests.test_cli_plumbing import assert_one_line_error

SOURCE = "annotations/instances.json"


def dsvc(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dsvc", *args], cwd=cwd, capture_output=True, text=True)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def data(*args: str, cwd: Path) -> Any:
    return json.loads(dsvc(*args, "--json", cwd=cwd).stdout)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root except .dsvc, by relative path, with the BLAKE3 of its bytes."""
    return {
        p.relative_to(root).as_posix(): blake3.blake3(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".dsvc" not in p.relative_to(root).parts
    }


def coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def new_repository(root: Path, frames: int, media_size: int, seed: int, commit: bool = True) -> Path:
    """Generate a dataset in root and make it a repository with its COCO file as the source; with commit,
    add everything and commit it as v0."""
    datagen.generate(root, frames, media_size=media_size, seed=seed)
    dsvc("init", "-q", cwd=root)
    dsvc("source", "add", SOURCE, "--format", "coco", "--media", "images", cwd=root)
    if commit:
        dsvc("add", ".", cwd=root)
        dsvc("commit", "-m", "v0", cwd=root)
    return root


@pytest.fixture
def versioned(tmp_path: Path) -> Path:
    """A generated dataset, versioned as checkpoint v0."""
    root = new_repository(tmp_path / "cars", 60, 3000, seed=5)
    dsvc("checkpoint", "create", "v0", "-m", "initial labels", "--meta", "owner=qa", cwd=root)
    return root


def test_the_contract(versioned: Path) -> None:
    root = versioned
    status = data("status", cwd=root)
    assert status["clean"] is True and status["branch"] == "main"

    (entry,) = data("log", cwd=root)
    assert set(entry) >= {"id", "parents", "message", "time", "checkpoints"}
    assert entry["message"] == "v0" and entry["checkpoints"] == ["v0"] and entry["parents"] == []

    (cp,) = data("checkpoint", "list", cwd=root)
    assert set(cp) >= {"name", "commit", "description", "metadata", "archived", "created"}
    assert (cp["name"], cp["commit"], cp["description"], cp["metadata"], cp["archived"]) == (
        "v0",
        entry["id"],
        "initial labels",
        {"owner": "qa"},
        False,
    )

    original = json.loads((root / SOURCE).read_text())
    frames = data("frames", "v0", cwd=root)
    assert [f["id"] for f in frames] == sorted(i["file_name"] for i in original["images"])
    assert set(frames[0]) == {"id", "media", "metadata", "labels"}
    assert frames[0]["media"][0]["path"] == f"images/{frames[0]['id']}"

    stats = data("stats", "v0", cwd=root)
    names = {c["id"]: c["name"] for c in original["categories"]}
    expected: dict[str, int] = {}
    for ann in original["annotations"]:
        expected[names[ann["category_id"]]] = expected.get(names[ann["category_id"]], 0) + 1
    assert stats["frames"] == len(original["images"]) and stats["labels"] == len(original["annotations"])
    assert stats["classes"] == dict(sorted(expected.items()))


def test_relabel_add_and_time_travel(versioned: Path, tmp_path: Path) -> None:
    root = versioned
    before = tree_digest(root)
    shutil.copy(root / SOURCE, tmp_path / "v0.json")
    truth = datagen.mutate(root, relabel=0.1, add=4, seed=2)

    status = data("status", cwd=root)
    assert status["clean"] is False
    assert sorted(status["unstaged"]["frames"]["modified"]) == sorted(truth.relabeled)
    assert sorted(status["unstaged"]["frames"]["added"]) == sorted(truth.added)
    assert {f"images/{name}" for name in truth.added} <= set(status["unstaged"]["files"]["added"])

    added = data("add", ".", cwd=root)
    changed_files = len(truth.added) + len(list((root / "predictions").glob("*.json"))) + 1  # + mutation.json
    assert added["files_read"] == changed_files, "only new or changed files may be read"
    staged = data("status", cwd=root)["staged"]
    assert sorted(staged["frames"]["modified"]) == sorted(truth.relabeled)
    dsvc("commit", "-m", "v1", cwd=root)
    dsvc("checkpoint", "create", "v1", cwd=root)
    assert data("stats", "v1", cwd=root)["frames"] == 64

    dsvc("checkout", "v0", cwd=root)
    assert tree_digest(root).keys() == before.keys()
    for path, digest in before.items():
        if path != SOURCE:
            assert tree_digest(root)[path] == digest, path
    a, b = coco(tmp_path / "v0.json"), coco(root / SOURCE)
    assert (a.imgs, a.anns, a.cats) == (b.imgs, b.anns, b.cats)
    assert a.dataset["info"] == b.dataset["info"] and a.dataset["licenses"] == b.dataset["licenses"]
    assert data("status", cwd=root)["clean"] is True
    assert dsvc("fsck", cwd=root).returncode == 0

    dsvc("checkout", "main", cwd=root)
    assert data("status", cwd=root) == {**data("status", cwd=root), "clean": True, "branch": "main"}
    assert len(data("frames", cwd=root)) == 64


def test_checkout_refuses_to_lose_local_changes(versioned: Path) -> None:
    root = versioned
    datagen.mutate(root, relabel=0.1, add=1, seed=4)
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v1", cwd=root)
    victim = next((root / "images").rglob("*.jpg"))
    victim.write_bytes(b"local edit")
    (root / "predictions" / "model_a.json").write_text("[]")
    proc = dsvc("checkout", "v0", cwd=root, ok=False)
    assert_one_line_error(proc, "local changes would be overwritten", "predictions/model_a.json")
    assert victim.read_bytes() == b"local edit"
    dsvc("checkout", "v0", "--force", cwd=root)
    assert victim.read_bytes() != b"local edit"
    assert data("status", cwd=root)["clean"] is True


def test_only_what_differs_is_written(versioned: Path) -> None:
    root = versioned
    datagen.mutate(root, relabel=0.05, add=2, seed=9)
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v1", cwd=root)
    out = data("checkout", "v0", cwd=root)
    assert (
        out["written"] == 2 and out["removed"] == 3
    )  # the two prediction files; 2 new images + mutation.json
    assert out["rendered"] == [SOURCE]


def test_checkpoints_edit_archive_and_history(versioned: Path) -> None:
    root = versioned
    dsvc(
        "checkpoint",
        "edit",
        "v0",
        "-m",
        "fixed labels",
        "--meta",
        "reviewed=yes",
        "--unset",
        "owner",
        cwd=root,
    )
    shown = data("checkpoint", "show", "v0", cwd=root)
    assert shown["description"] == "fixed labels" and shown["metadata"] == {"reviewed": "yes"}
    assert [h["description"] for h in shown["history"]] == ["fixed labels", "initial labels"]
    dsvc("checkpoint", "archive", "v0", cwd=root)
    assert data("checkpoint", "list", cwd=root) == []
    assert [c["archived"] for c in data("checkpoint", "list", "--all", cwd=root)] == [True]
    dsvc("checkpoint", "unarchive", "v0", cwd=root)
    assert [c["name"] for c in data("checkpoint", "list", cwd=root)] == ["v0"]
    assert len(data("checkpoint", "show", "v0", cwd=root)["history"]) == 4
    assert_one_line_error(dsvc("checkpoint", "create", "v0", cwd=root, ok=False), "already exists")
    assert dsvc("fsck", cwd=root).returncode == 0


def test_branches_tags_and_filters(versioned: Path) -> None:
    root = versioned
    dsvc("tag", "release", cwd=root)
    dsvc("checkout", "-b", "night", "v0", cwd=root)
    assert data("status", cwd=root)["branch"] == "night"
    assert set(data("branch", cwd=root)) == {"main", "night"}
    assert data("rev-parse", "release", cwd=root)["release"] == data("rev-parse", "main", cwd=root)["main"]
    assert set(data("tag", cwd=root)) == {"release"}
    rainy = data("frames", "v0", "--where", "weather=rain", cwd=root)
    assert rainy and all(f["metadata"]["weather"] == "rain" for f in rainy)
    cars = data("frames", "v0", "--class", "car", cwd=root)
    assert cars and all(any(a["label"] == "car" for a in f["labels"]) for f in cars)
    assert_one_line_error(
        dsvc("branch", "-d", "night", cwd=root, ok=False), "cannot delete the branch you are on"
    )


def test_checkout_of_a_revision_expression_detaches_head(versioned: Path) -> None:
    root = versioned
    v0 = {p: d for p, d in tree_digest(root).items() if p != SOURCE}
    datagen.mutate(root, relabel=0.2, add=3, seed=4)
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v1", cwd=root)
    v1 = tree_digest(root)
    v1_files = {p: d for p, d in v1.items() if p != SOURCE}

    assert_one_line_error(dsvc("checkout", "-b", "main", "HEAD~1", cwd=root, ok=False), "already exists")
    assert tree_digest(root) == v1, "a refused checkout must not touch the working tree"

    dsvc("checkout", "HEAD~1", cwd=root)
    status = data("status", cwd=root)
    assert status["clean"] is True and status["branch"] is None
    assert data("rev-parse", "HEAD", cwd=root)["HEAD"] == data("rev-parse", "main~1", cwd=root)["main~1"]
    assert {p: d for p, d in tree_digest(root).items() if p != SOURCE} == v0
    dsvc("checkout", "main", cwd=root)
    assert {p: d for p, d in tree_digest(root).items() if p != SOURCE} == v1_files
    assert data("status", cwd=root) == {**data("status", cwd=root), "clean": True, "branch": "main"}


def test_export_round_trips(versioned: Path, tmp_path: Path) -> None:
    root = versioned
    out = tmp_path / "export"
    dsvc("export", "v0", str(out), "--format", "coco", cwd=root)
    a, b = coco(root / SOURCE), coco(out / SOURCE)
    assert (a.imgs, a.anns, a.cats) == (b.imgs, b.anns, b.cats)
    image = next(iter(a.imgs.values()))["file_name"]
    assert (out / "images" / image).read_bytes() == (root / "images" / image).read_bytes()


def _negative_width(text: str) -> str:
    doc = json.loads(text)
    doc["annotations"][3]["bbox"][2] = -5
    return json.dumps(doc)


def _unknown_category(text: str) -> str:
    doc = json.loads(text)
    doc["annotations"][7]["category_id"] = 999
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda text: text[:-40], "malformed JSON"),
        (_negative_width, "annotations[3].bbox"),
        (_unknown_category, "annotations[7].category_id"),
        (lambda text: text.replace('"file_name":"000/', '"file_name":"../', 1), "escapes"),
    ],
)
def test_bad_annotations_are_refused_and_nothing_is_staged(versioned: Path, damage: Any, needle: str) -> None:
    root = versioned
    path = root / SOURCE
    text = path.read_text()
    path.write_text(damage(text))
    assert_one_line_error(dsvc("add", ".", cwd=root, ok=False), needle)
    assert dsvc("fsck", cwd=root).returncode == 0
    path.write_text(text)
    assert data("status", cwd=root)["clean"] is True, "a refused add must stage nothing"


def test_a_media_symlink_out_of_the_tree_is_refused(versioned: Path, tmp_path: Path) -> None:
    root = versioned
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"not yours")
    victim = next((root / "images").rglob("*.jpg"))
    victim.unlink()
    os.symlink(outside, victim)
    assert_one_line_error(dsvc("add", ".", cwd=root, ok=False), "symlink points outside the working tree")
    assert dsvc("fsck", cwd=root).returncode == 0


def test_media_named_only_by_url_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "urls"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10, "coco_url": "http://x/a.jpg"}],
        "annotations": [],
        "categories": [{"id": 1, "name": "car"}],
    }
    (root / SOURCE).write_text(json.dumps(doc))
    dsvc("init", "-q", cwd=root)
    dsvc("source", "add", SOURCE, "--format", "coco", "--media", "images", cwd=root)
    assert data("add", ".", cwd=root)["external_media"] == 1
    assert_one_line_error(dsvc("add", ".", "--require-media", cwd=root, ok=False), "a.jpg")


def test_require_media_refuses_an_image_whose_file_was_deleted(versioned: Path) -> None:
    """A COCO image without a URL whose file is gone is no external reference: --require-media names it,
    and nothing is staged."""
    root = versioned
    victim = sorted((root / "images").rglob("*.jpg"))[3]
    victim.unlink()
    before = dsvc("status", "--json", cwd=root).stdout
    assert_one_line_error(dsvc("add", ".", "--require-media", cwd=root, ok=False), victim.name, "not found")
    assert dsvc("status", "--json", cwd=root).stdout == before
    assert dsvc("fsck", cwd=root).returncode == 0


def test_two_commits_at_once(versioned: Path) -> None:
    root = versioned
    datagen.mutate(root, relabel=0.1, add=1, seed=6)
    dsvc("add", ".", cwd=root)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dsvc", "commit", "-m", f"c{i}"],
            cwd=root,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [(p.wait(), p.stderr.read() if p.stderr else "") for p in procs]
    # one commits; the other waits for the lock, then finds nothing left to commit
    assert sorted(code for code, _ in results) == [0, 1], results
    (error,) = [err for code, err in results if code]
    assert error.startswith("dsvc: error: nothing to commit") and "Traceback" not in error
    assert [e["message"] for e in data("log", cwd=root)][1:] == ["v0"]
    assert dsvc("fsck", cwd=root).returncode == 0


@pytest.mark.parametrize(
    "command",
    [
        "source",
        "add",
        "rm",
        "status",
        "commit",
        "log",
        "show",
        "checkout",
        "branch",
        "tag",
        "checkpoint",
        "frames",
        "stats",
        "export",
    ],
)
def test_every_command_has_help_with_examples(tmp_path: Path, command: str) -> None:
    out = dsvc(command, "--help", cwd=tmp_path).stdout
    assert "Examples:" in out and f"dsvc {command}" in out


def _labels_by_frame(frames: list[dict[str, Any]]) -> dict[str, list[tuple[str, list[float]]]]:
    return {f["id"]: [(a["label"], [a["bbox"][k] for k in "xywh"]) for a in f["labels"]] for f in frames}


def test_export_to_jsonl_imports_back_to_the_same_labels(versioned: Path, tmp_path: Path) -> None:
    out = tmp_path / "as-jsonl"
    dsvc("export", "v0", str(out), "--format", "jsonl", cwd=versioned)
    dsvc("init", "-q", cwd=out)
    dsvc("source", "add", "annotations/frames.jsonl", "--media", "images", cwd=out)
    dsvc("add", ".", cwd=out)
    dsvc("commit", "-m", "imported", cwd=out)
    original, again = data("frames", "v0", cwd=versioned), data("frames", cwd=out)
    assert [f["labels"] for f in again] == [f["labels"] for f in original]
    assert [f["metadata"] for f in again] == [f["metadata"] for f in original]


def test_export_to_yolo_keeps_every_box(versioned: Path, tmp_path: Path) -> None:
    out = tmp_path / "as-yolo"
    dsvc("export", "v0", str(out), "--format", "yolo", cwd=versioned)
    dsvc("init", "-q", cwd=out)
    dsvc("source", "add", "annotations/data.yaml", "--format", "yolo", "--media", "images", cwd=out)
    dsvc("add", ".", cwd=out)
    dsvc("commit", "-m", "imported", cwd=out)
    original = data("frames", "v0", cwd=versioned)
    sizes = {f["id"]: (f["metadata"]["width"], f["metadata"]["height"]) for f in original}
    again = _labels_by_frame(data("frames", cwd=out))
    for frame_id, boxes in _labels_by_frame(original).items():
        w, h = sizes[frame_id]
        crowd = {
            i
            for i, a in enumerate(next(f for f in original if f["id"] == frame_id)["labels"])
            if a["iscrowd"]
        }
        expected = [(label, box) for i, (label, box) in enumerate(boxes) if i not in crowd]
        got = again.get(frame_id, [])
        assert [label for label, _ in got] == [label for label, _ in expected]
        for (_, (x, y, bw, bh)), (_, (gx, gy, gw, gh)) in zip(expected, got, strict=True):
            assert (gx * w, gy * h, gw * w, gh * h) == pytest.approx((x, y, bw, bh), abs=1e-6)


def test_paths_are_relative_to_where_the_command_runs(versioned: Path) -> None:
    root = versioned
    folder = root / "images" / "000"
    (folder / "extra.jpg").write_bytes(b"\xff\xd8\xff new frame file")
    added = data("add", "extra.jpg", cwd=folder)
    assert added["files_read"] == 1
    staged = data("status", cwd=root)["staged"]["files"]["added"]
    assert staged == ["images/000/extra.jpg"]
    dsvc("rm", "extra.jpg", cwd=folder)
    assert not (folder / "extra.jpg").exists() and data("status", cwd=root)["clean"] is True
    assert_one_line_error(
        dsvc("add", "no-such.jpg", cwd=folder, ok=False), "images/000/no-such.jpg", "matches no"
    )


def test_rm_checks_every_path_before_deleting_anything(versioned: Path) -> None:
    root = versioned
    before = tree_digest(root)
    predictions = sorted(p.relative_to(root).as_posix() for p in (root / "predictions").glob("*.json"))
    assert predictions
    assert_one_line_error(dsvc("rm", "predictions", cwd=root, ok=False), "predictions", "use -r")
    (root / "notes.txt").write_text("untracked")
    assert_one_line_error(
        dsvc("rm", predictions[0], "notes.txt", cwd=root, ok=False), "notes.txt", "not a tracked file"
    )
    assert tree_digest(root) == {**before, "notes.txt": tree_digest(root)["notes.txt"]}
    (root / "notes.txt").unlink()

    assert data("rm", "-r", "predictions", cwd=root) == {"removed": predictions}
    assert not (root / "predictions").exists()
    status = data("status", cwd=root)
    assert sorted(status["staged"]["files"]["removed"]) == predictions
    assert not any(status["unstaged"]["files"].values())


def test_a_tracked_file_that_becomes_a_source_leaves_the_files_map(versioned: Path) -> None:
    root = versioned
    line = {
        "id": "extra/x.jpg",
        "media": [],
        "metadata": {},
        "labels": [{"class": "car", "bbox": [1, 2, 3, 4]}],
    }
    (root / "extra.jsonl").write_text(json.dumps(line) + "\n")
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "plain file", cwd=root)
    assert data("stats", cwd=root)["files"] == data("stats", "v0", cwd=root)["files"] + 1
    dsvc("source", "add", "extra.jsonl", "--format", "jsonl", cwd=root)
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "now a source", cwd=root)
    stats = data("stats", cwd=root)
    assert stats["files"] == data("stats", "v0", cwd=root)["files"]
    assert stats["frames"] == data("stats", "v0", cwd=root)["frames"] + 1
