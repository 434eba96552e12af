"""The quick status (the stat cache describing the staged files map) and the render cache of checkout: both
must give exactly the answers of the slow paths, and be counted doing less work."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import datagen
from dsvc import codec, tree, tree_diff
from dsvc.errors import CorruptObject, DsvcError
from dsvc.formats.coco import CocoFormat
from dsvc.hashing import ObjectId
from dsvc.objects import Signature
from dsvc.repo import Repo
from dsvc.workdir import checkout, renders, stage, status
from dsvc.workdir.index import RACY_NS, Index

WHO = Signature("A", "a@example.com", 1_700_000_000)
SOURCE = "annotations/instances.json"
OLD = time.time_ns() - 10 * 1_000_000_000  # an mtime safely older than any entry recorded by the tests


def _old(path: Path) -> None:
    os.utime(path, ns=(OLD, OLD))


@pytest.fixture
def plain(repo_dir: Path) -> Repo:
    """A committed repository of plain files with old mtimes (never racy), its stat cache describing
    the files map after one status."""
    for i in range(600):
        f = repo_dir / "data" / f"{i % 7}" / f"file_{i:04}.bin"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"%d" % i * 50)
        _old(f)
    repo = Repo(repo_dir)
    repo.add()
    repo.commit("v0", WHO)
    assert repo.status().clean
    assert repo.index.described() == repo.staged_roots()["files"]
    return repo


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files status and staging read, by name."""
    seen: list[str] = []
    real = stage.hash_file

    def counting(path: Any) -> Any:
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(stage, "hash_file", counting)
    return seen


def _unstaged(repo: Repo) -> dict[str, list[str]]:
    return Repo(repo.root).status().unstaged.files


def test_a_clean_status_reads_no_file_and_not_the_files_map(plain: Repo, hashed: list[str]) -> None:
    repo = Repo(plain.root)
    repo.status()  # warm: the commit and the sources map
    reads = repo.store.counters.reads
    assert repo.status().clean
    assert hashed == []
    assert repo.store.counters.reads - reads <= 2  # the head commit and the sources map, not the files


def test_the_quick_status_gives_the_slow_answers(plain: Repo, hashed: list[str]) -> None:
    root = plain.root
    (root / "data/0/file_0000.bin").write_bytes(b"changed, and longer than before")
    (root / "data/1/file_0001.bin").unlink()
    (root / "data/new.bin").write_bytes(b"new")
    (root / "data/2/file_0002.bin").chmod(0o755)
    want = {
        "added": ["data/new.bin"],
        "modified": ["data/0/file_0000.bin", "data/2/file_0002.bin"],
        "removed": ["data/1/file_0001.bin"],
    }
    assert _unstaged(plain) == want
    assert sorted(hashed) == ["file_0000.bin", "new.bin"]  # a new mode alone needs no read
    Repo(root).index.update(stats=[("x", 1, 1, 1, bytes(32))])  # entries changed: the claim is dropped
    assert Repo(root).index.described() is None
    assert _unstaged(plain) == want  # the slow walk, which describes the map again
    assert Repo(root).index.described() == plain.staged_roots()["files"]
    assert _unstaged(plain) == want


def test_a_file_replaced_with_the_same_size_and_mtime_is_seen(plain: Repo, hashed: list[str]) -> None:
    victim = plain.root / "data/3/file_0003.bin"
    size = victim.stat().st_size
    replacement = victim.with_name("replacement")
    replacement.write_bytes(b"x" * size)
    _old(replacement)
    os.replace(replacement, victim)  # same size and mtime, another inode
    assert _unstaged(plain)["modified"] == ["data/3/file_0003.bin"]
    assert hashed == ["file_0003.bin"]


def test_an_add_keeps_the_description(plain: Repo, hashed: list[str]) -> None:
    root = plain.root
    flipped = root / "data/5/file_0005.bin"
    flipped.chmod(0o755)
    (root / "data/added.bin").write_bytes(b"added")
    _old(root / "data/added.bin")  # not racy when staged
    (root / "data/6/file_0006.bin").unlink()
    plain.add()
    assert plain.index.described() == plain.staged_roots()["files"]
    hashed.clear()
    assert Repo(root).status().unstaged.empty
    assert hashed == []  # the added file's entry (no mode yet) still gives its blob
    assert Repo(root).index.quick_stats()["data/added.bin"][3] == 0o644  # recorded: trusted from now on
    flipped.chmod(0o644)  # back to the mode of the entry staging left in place: the entry is not trusted
    assert _unstaged(plain) == {"added": [], "modified": ["data/5/file_0005.bin"], "removed": []}
    plain.add(["data/5"])  # a scoped add
    assert Repo(root).status().unstaged.empty


def test_ignored_files_folders_and_odd_entries_are_not_seen(plain: Repo) -> None:
    root = plain.root
    (root / ".dsvcignore").write_text("*.tmp\n!keep.tmp\nscratch/\n")  # git's rules: the last match wins
    (root / "data/x.tmp").write_bytes(b"ignored")
    (root / "data/keep.tmp").write_bytes(b"included again")
    (root / "scratch").mkdir()
    (root / "scratch/a.bin").write_bytes(b"ignored folder")
    os.mkfifo(root / "data/pipe")
    (root / "data/link.bin").symlink_to("0/file_0000.bin")
    expected = [".dsvcignore", "data/keep.tmp", "data/link.bin"]
    assert _unstaged(plain) == {"added": expected, "modified": [], "removed": []}


def test_a_racy_entry_is_hashed_again(repo_dir: Path, hashed: list[str]) -> None:
    f = repo_dir / "racy.txt"
    f.write_bytes(b"one")
    future = time.time_ns() + 3600 * 1_000_000_000  # newer than every entry's recording: always racy
    os.utime(f, ns=(future, future))
    repo = Repo(repo_dir)
    repo.add()
    repo.commit("v0", WHO)
    assert repo.status().clean
    f.write_bytes(b"two")  # same size, inode and mtime: only the racy rule can tell
    os.utime(f, ns=(future, future))
    hashed.clear()
    assert _unstaged(repo)["modified"] == ["racy.txt"]
    assert hashed == ["racy.txt"]


def test_many_changes_walk_the_map_instead(plain: Repo, hashed: list[str]) -> None:
    for f in sorted((plain.root / "data").rglob("*.bin"))[: status.MIN_LOOKUPS + 1]:
        f.write_bytes(b"rewritten")
    changed = _unstaged(plain)["modified"]
    assert len(changed) == status.MIN_LOOKUPS + 1 > 600 * status.WALK_FRACTION
    # walked, and described again: a file that differs gets an entry no stat matches
    assert Repo(plain.root).index.quick_stats()[changed[0]][2] == status.NO_STAT
    assert Repo(plain.root).index.described() == plain.staged_roots()["files"]


def test_a_status_does_not_wait_for_a_writer(plain: Repo) -> None:
    plain.index.update(stats=[("x", 1, 1, 1, bytes(32))])
    with plain.lock():
        assert Repo(plain.root).status().clean
    assert Repo(plain.root).index.described() is None  # not recorded while the writer held the lock


def test_a_format_1_index_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
        "CREATE TABLE stat (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
        " ino INTEGER NOT NULL, blob BLOB NOT NULL, recorded_ns INTEGER NOT NULL);"
    )
    db.execute("INSERT INTO meta VALUES ('format', ?)", (codec.encode(1),))
    db.execute("INSERT INTO stat VALUES ('a', 1, 2, 3, ?, ?)", (bytes(32), time.time_ns()))
    db.commit()
    db.close()
    index = Index(path)
    assert index.stat_entries()["a"].ino == 3
    assert index.quick_stats() == {"a": (1, 2, 3, -1)}  # no mode known: never trusted by the quick path
    index.update(stats=[("b", 1, 2, 3, bytes(32), 0o644)], describes=bytes(32))  # type: ignore[arg-type]
    assert set(index.quick_stats()) == {"a", "b"}


def test_recorded_now_is_racy(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    now = time.time_ns()
    index.update(
        stats=[("new", 1, now, 3, bytes(32), 0o644), ("old", 1, now - 2 * RACY_NS, 3, bytes(32), 0o644)]
    )  # type: ignore[list-item]
    assert index.quick_stats() == {"new": (1, now, 3, -1), "old": (1, now - 2 * RACY_NS, 3, 0o644)}


# -- checkout and the render cache -------------------------------------------------------------------------


@pytest.fixture
def two_versions(repo_dir: Path) -> tuple[Repo, bytes]:
    """A COCO dataset committed as v0 and, relabeled and grown, as v1; returns v0's annotation bytes."""
    datagen.generate(repo_dir, 40, media_size=2000, seed=3)
    for f in repo_dir.rglob("*"):
        if f.is_file() and ".dsvc" not in f.parts:
            _old(f)
    v0 = (repo_dir / SOURCE).read_bytes()
    repo = Repo(repo_dir)
    repo.source_add(SOURCE, "coco", "images")
    repo.add()
    repo.commit("v0", WHO)
    repo.create_ref("tags", "v0")
    datagen.mutate(repo_dir, relabel=0.2, add=3, seed=4)
    for f in repo_dir.rglob("*"):
        if f.is_file() and ".dsvc" not in f.parts:
            _old(f)
    repo.add()
    repo.commit("v1", WHO)
    return Repo(repo_dir), v0


@pytest.fixture
def renders_done(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    done: list[str] = []
    real = CocoFormat.render

    def counting(self: CocoFormat, source: Any, frames: Any) -> dict[str, bytes]:
        done.append(source.path)
        return real(self, source, frames)

    monkeypatch.setattr(CocoFormat, "render", counting)
    return done


def test_checkout_copies_a_kept_source_back_without_rendering(
    two_versions: tuple[Repo, bytes],
    renders_done: list[str],
    hashed: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Files written within RACY_NS of being recorded are re-hashed by design; with no window, every file
    # the checkout recorded must be trusted, however fast the machine wrote them.
    monkeypatch.setattr("dsvc.workdir.index.RACY_NS", 0)
    monkeypatch.setattr("dsvc.workdir.renders.RACY_NS", 0)
    repo, v0 = two_versions
    assert len(list((repo.dsvc_dir / renders.FOLDER).iterdir())) == 2  # v0 and v1, kept by add
    assert repo.status().clean  # and now the stat cache describes v1's files
    result = repo.checkout("v0")
    assert result.rendered == [SOURCE] and renders_done == []
    assert (repo.root / SOURCE).read_bytes() == v0  # the very file v0 was parsed from
    assert repo.index.described() == repo.staged_roots()["files"]
    hashed.clear()
    assert Repo(repo.root).status().clean
    assert hashed == []  # the checkout recorded what it wrote: nothing to read again


def test_a_damaged_or_missing_entry_is_rendered_and_kept(
    two_versions: tuple[Repo, bytes], renders_done: list[str]
) -> None:
    repo, v0 = two_versions
    folder = repo.dsvc_dir / renders.FOLDER
    name = renders.key(repo.store, repo.roots_of(repo.rev_parse("v0", commit=True)), SOURCE)
    assert name is not None
    damaged = bytearray((folder / name).read_bytes())
    damaged[-1] ^= 0xFF
    (folder / name).write_bytes(bytes(damaged))
    repo.checkout("v0")
    assert renders_done == [SOURCE]
    rendered = (repo.root / SOURCE).read_bytes()
    assert _coco_content(rendered) == _coco_content(v0)
    assert renders.restore(folder, name, repo.dsvc_dir / "out")  # kept for the next checkout
    assert (repo.dsvc_dir / "out").read_bytes() == rendered
    repo.checkout("main")
    (folder / name).unlink()
    repo.checkout("v0")
    assert renders_done == [SOURCE, SOURCE]
    assert Repo(repo.root).status().clean


def apart_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions checkout hands to a second process, by name."""
    started: list[str] = []
    real = checkout.Apart

    def spy(func: Any, *args: Any) -> Any:
        started.append(func.__name__)
        return real(func, *args)

    monkeypatch.setattr(checkout, "Apart", spy)
    return started


def test_a_source_rendered_apart_is_the_one_rendered_in_process(
    two_versions: tuple[Repo, bytes], renders_done: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = two_versions
    folder = repo.dsvc_dir / renders.FOLDER
    shutil.rmtree(folder)
    repo.checkout("v0")
    assert renders_done == [SOURCE]
    in_process = (repo.root / SOURCE).read_bytes()
    repo.checkout("main")
    shutil.rmtree(folder)
    monkeypatch.setattr(checkout, "RENDER_APART_FROM", 0)
    started = apart_calls(monkeypatch)
    result = repo.checkout("v0")
    assert started == ["_render_apart"]
    assert renders_done == [SOURCE, SOURCE]  # v0, then main, in this process: v0 again went apart
    assert result.rendered == [SOURCE] and (repo.root / SOURCE).read_bytes() == in_process
    (name,) = (p.name for p in folder.iterdir())  # and the other process kept it
    assert renders.restore(folder, name, repo.dsvc_dir / "out")
    assert (repo.dsvc_dir / "out").read_bytes() == in_process
    assert Repo(repo.root).status().clean


def test_a_damaged_object_read_apart_fails_the_checkout_by_name(
    two_versions: tuple[Repo, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = two_versions
    shutil.rmtree(repo.dsvc_dir / renders.FOLDER)
    v0 = repo.roots_of(repo.rev_parse("v0", commit=True))
    damaged = max(ObjectId(v) for _, v in tree.items(repo.store, v0["labels"]))
    for reader in repo.store.packs():
        where = reader.index.find(damaged)
        if where >= 0:
            reader.path.chmod(0o644)
            with open(reader.path, "r+b") as pack:  # in place: the pack stays mapped here
                pack.seek(int(reader.index.offsets[where]) + int(reader.index.lengths[where]) - 1)
                last = pack.read(1)
                pack.seek(-1, os.SEEK_CUR)
                pack.write(bytes([last[0] ^ 0x01]))
    head = repo.head_commit()
    monkeypatch.setattr(checkout, "RENDER_APART_FROM", 0)
    started = apart_calls(monkeypatch)
    with pytest.raises(CorruptObject, match=damaged.hex()):
        Repo(repo.root).checkout("v0")
    assert started == ["_render_apart"]  # it was read apart
    assert Repo(repo.root).head_commit() == head


def test_a_source_written_after_the_add_began_is_not_kept(tmp_path: Path) -> None:
    spec = stage.SourceSpec("a.json", "coco", "")
    (tmp_path / "a.json").write_bytes(b"{}")
    stamp = stage.source_stamp(tmp_path, spec, ["a.json"])
    began = time.time_ns() - RACY_NS  # the file's mtime is within a tick of the start
    assert not renders.keep_parsed(tmp_path / "renders", tmp_path, spec, "k", stamp, began)
    _old(tmp_path / "a.json")
    assert not renders.keep_parsed(tmp_path / "renders", tmp_path, spec, "k", stamp, began)  # stamp moved
    stamp = stage.source_stamp(tmp_path, spec, ["a.json"])
    assert renders.keep_parsed(tmp_path / "renders", tmp_path, spec, "k", stamp, began)
    assert renders.restore(tmp_path / "renders", "k", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"{}"


def test_only_the_newest_entries_are_kept(tmp_path: Path) -> None:
    for i in range(renders.KEPT + 3):
        renders.save(tmp_path, f"e{i}", b"%d" % i)
        os.utime(tmp_path / f"e{i}", ns=(OLD + i, OLD + i))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"e{i}" for i in range(3, renders.KEPT + 3))


def _coco_content(data: bytes) -> Any:
    """What pycocotools reads: images and annotations by id, and the categories."""
    doc = orjson.loads(data)
    return ({i["id"]: i for i in doc["images"]}, {a["id"]: a for a in doc["annotations"]}, doc["categories"])


def test_an_unforced_checkout_looks_only_at_what_it_touches(
    two_versions: tuple[Repo, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = two_versions
    v0 = repo.roots_of(repo.rev_parse("v0", commit=True))
    touched = {c.key.decode() for c in tree_diff.diff(repo.store, repo.staged_roots()["files"], v0["files"])}
    kept = sorted(repo.root.glob("images/**/*.jpg"))[0]
    assert kept.relative_to(repo.root).as_posix() not in touched
    kept.write_bytes(b"a local edit the checkout does not touch")
    seen: list[str] = []
    real = status.scan_stats

    def counting(root: Path, under: Any = None, skip: Any = frozenset()) -> Any:
        for item in real(root, under, skip):
            seen.append(item[0])
            yield item

    monkeypatch.setattr(status, "scan_stats", counting)
    repo.checkout("v0")
    assert set(seen) <= touched and len(seen) < len(touched) + 1
    monkeypatch.undo()
    assert kept.read_bytes() == b"a local edit the checkout does not touch"
    assert Repo(repo.root).status().unstaged.files["modified"] == [kept.relative_to(repo.root).as_posix()]


def test_an_untracked_file_where_the_target_has_one_is_not_overwritten(
    two_versions: tuple[Repo, bytes],
) -> None:
    repo, _ = two_versions
    repo.checkout("v0")
    v1 = repo.roots_of(repo.rev_parse("main", commit=True))
    added = [
        c.key.decode()
        for c in tree_diff.diff(repo.store, repo.staged_roots()["files"], v1["files"])
        if c.old is None
    ]
    squatter = repo.root / added[0]
    squatter.parent.mkdir(parents=True, exist_ok=True)
    squatter.write_bytes(b"mine")
    with pytest.raises(DsvcError, match="local changes would be overwritten"):
        repo.checkout("main")
    assert squatter.read_bytes() == b"mine"
    repo.checkout("main", force=True)
    assert squatter.read_bytes() != b"mine"
    assert Repo(repo.root).status().clean


def test_a_touched_source_does_not_block_a_checkout_but_a_changed_one_does(
    two_versions: tuple[Repo, bytes],
) -> None:
    repo, v0 = two_versions
    source = repo.root / SOURCE
    v1 = source.read_bytes()
    os.utime(source)  # a new stamp, the same frames: parsed again, nothing lost
    repo.checkout("v0")
    assert source.read_bytes() == v0
    doc = orjson.loads(source.read_bytes())
    doc["annotations"] = doc["annotations"][1:]
    source.write_bytes(orjson.dumps(doc))
    with pytest.raises(DsvcError, match="frames changed locally"):
        Repo(repo.root).checkout("main")
    Repo(repo.root).checkout("main", force=True)
    assert source.read_bytes() == v1


def test_checkout_turns_a_folder_into_a_file_of_its_name_and_back(repo_dir: Path) -> None:
    (repo_dir / "notes").mkdir()
    (repo_dir / "notes" / "a.txt").write_bytes(b"in a folder")
    repo = Repo(repo_dir)
    repo.add()
    repo.commit("v0", WHO)
    repo.create_ref("tags", "v0")
    shutil.rmtree(repo_dir / "notes")
    (repo_dir / "notes").write_bytes(b"a file now")  # sorts before notes/a.txt, which must go first
    repo.add()
    repo.commit("v1", WHO)
    repo.checkout("v0")
    assert (repo_dir / "notes" / "a.txt").read_bytes() == b"in a folder"
    repo.checkout("main")
    assert (repo_dir / "notes").read_bytes() == b"a file now"
    assert Repo(repo_dir).status().clean


def test_checkout_restores_each_files_executable_bit_and_bytes(repo_dir: Path) -> None:
    tool, data = repo_dir / "bin" / "tool.sh", repo_dir / "bin" / "data.txt"
    tool.parent.mkdir()
    tool.write_bytes(b"#!/bin/sh\necho v0\n")
    tool.chmod(0o755)
    data.write_bytes(b"v0")
    repo = Repo(repo_dir)
    repo.add()
    repo.commit("v0", WHO)
    repo.create_ref("tags", "v0")
    tool.write_bytes(b"#!/bin/sh\necho v1\n")  # the same mode, new bytes
    data.write_bytes(b"v1")
    data.chmod(0o755)  # and a plain file made executable
    repo.add()
    repo.commit("v1", WHO)
    repo.checkout("v0")
    assert tool.read_bytes() == b"#!/bin/sh\necho v0\n" and tool.stat().st_mode & 0o111
    assert data.read_bytes() == b"v0" and not data.stat().st_mode & 0o111
    repo.checkout("main")
    assert tool.stat().st_mode & 0o111 and data.stat().st_mode & 0o111 and data.read_bytes() == b"v1"
    assert Repo(repo_dir).status().clean


def test_checkout_refuses_to_drop_staged_work_but_not_an_empty_stage(repo_dir: Path) -> None:
    data = repo_dir / "data.txt"
    data.write_bytes(b"v0")
    repo = Repo(repo_dir)
    repo.add()
    repo.commit("v0", WHO)
    repo.create_ref("tags", "v0")
    data.write_bytes(b"v1")
    repo.add()
    repo.commit("v1", WHO)
    data.write_bytes(b"staged, never committed")
    repo.add()
    with pytest.raises(DsvcError, match="staged changes would be lost"):
        repo.checkout("v0")
    assert data.read_bytes() == b"staged, never committed"  # refused before writing anything
    data.unlink()
    repo.add()  # now nothing at all is staged: the stage an empty working tree (or a bare clone) leaves
    repo.checkout("v0")
    assert data.read_bytes() == b"v0"
