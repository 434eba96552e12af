"""End-to-end: the plumbing commands as a user runs them, in temporary folders, through a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import click
import pytest
from click.testing import CliRunner

from dsvc import history, tree
from dsvc.objects import Frame, Media, Signature
from dsvc.repo import Repo


def dsvc(*args: str, cwd: Path, ok: bool | None = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "dsvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    if ok is True:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsvc: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_init_creates_and_reinitialises(tmp_path: Path) -> None:
    out = dsvc("init", "ds", cwd=tmp_path)
    assert "Initialized empty dsvc repository" in out.stdout
    assert (tmp_path / "ds/.dsvc/config").is_file() and (
        tmp_path / "ds/.dsvc/HEAD"
    ).read_text() == "ref: refs/heads/main\n"
    again = dsvc("init", "ds", "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["created"] is False
    assert dsvc("init", "other", "-q", cwd=tmp_path).stdout == ""


def test_hash_object_equals_b3sum(tmp_path: Path) -> None:
    media = tmp_path / "frame.jpg"
    media.write_bytes(os.urandom(100_000))
    expected = blake3.blake3(media.read_bytes()).hexdigest()
    assert dsvc("hash-object", "frame.jpg", cwd=tmp_path).stdout.strip() == expected
    if shutil.which("b3sum"):
        assert (
            subprocess.run(["b3sum", str(media)], capture_output=True, text=True).stdout.split()[0]
            == expected
        )


def test_hash_object_write_then_cat_object(repo_dir: Path) -> None:
    (repo_dir / "a.txt").write_bytes(b"hello frames\n")
    oid = dsvc("hash-object", "-w", "a.txt", cwd=repo_dir).stdout.strip()
    assert dsvc("cat-object", oid[:8], cwd=repo_dir).stdout == "hello frames\n"
    meta = json.loads(dsvc("cat-object", oid, "--json", cwd=repo_dir).stdout)
    assert meta == {"kind": "blob", "id": oid, "size": 13}
    assert json.loads(dsvc("fsck", "--json", cwd=repo_dir).stdout)["blobs"] == 1


def _commit_something(repo_dir: Path) -> bytes:
    repo = Repo(repo_dir)
    blob = repo.store.put_blob(b"jpeg bytes")
    frame = repo.store.put_object(Frame((Media("000/frame_1.jpg", blob, 10),), {"weather": "rain"}))
    root = tree.build(repo.store, [(b"000/frame_1.jpg", frame)])
    oid = history.make_commit(
        repo.store, {"frames": root}, (), Signature("Ann", "ann@example.com", 1_700_000_000), "v0"
    )
    repo.refs.set_if_equals("HEAD", None, oid)
    return oid


def test_cat_object_decodes_structured_objects(repo_dir: Path) -> None:
    oid = _commit_something(repo_dir)
    data = json.loads(dsvc("cat-object", "HEAD", "--json", cwd=repo_dir).stdout)
    assert data["kind"] == "commit" and data["id"] == oid.hex() and data["message"] == "v0"
    assert data["author"]["name"] == "Ann" and set(data["roots"]) == {"frames"}
    assert "message: v0" in dsvc("cat-object", "HEAD", cwd=repo_dir).stdout


def test_rev_parse(repo_dir: Path) -> None:
    oid = _commit_something(repo_dir)
    assert dsvc("rev-parse", "HEAD", "main", cwd=repo_dir).stdout.split() == [oid.hex()] * 2
    assert json.loads(dsvc("rev-parse", "main", "--json", cwd=repo_dir).stdout) == {"main": oid.hex()}
    assert_one_line_error(
        dsvc("rev-parse", "nosuchrev", cwd=repo_dir, ok=None), "unknown revision", "nosuchrev"
    )


def test_commands_outside_a_repository(tmp_path: Path) -> None:
    for args in (("cat-object", "abcd"), ("rev-parse", "HEAD"), ("fsck",)):
        assert_one_line_error(dsvc(*args, cwd=tmp_path, ok=None), "not a dsvc repository")


def test_a_corrupted_pack_is_named_by_fsck_and_refused_on_read(repo_dir: Path) -> None:
    oid = _commit_something(repo_dir)
    assert dsvc("fsck", cwd=repo_dir).returncode == 0
    repo = Repo(repo_dir)
    for reader in repo.store.packs():
        where = reader.index.find(oid)
        if where >= 0:
            offset = int(reader.index.offsets[where]) + 5
            data = bytearray(reader.path.read_bytes())
            data[offset] ^= 0x40
            reader.path.chmod(0o644)
            reader.path.write_bytes(bytes(data))
    proc = dsvc("fsck", cwd=repo_dir, ok=None)
    assert proc.returncode == 1 and oid.hex() in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(dsvc("fsck", "--json", cwd=repo_dir, ok=None).stdout)
    assert not report["ok"] and [p["id"] for p in report["problems"]] == [oid.hex()]
    assert_one_line_error(dsvc("cat-object", oid.hex(), cwd=repo_dir, ok=None), oid.hex(), "corrupt")


def test_a_damaged_pack_index_is_named_by_fsck_and_a_truncated_one_is_one_line(repo_dir: Path) -> None:
    _commit_something(repo_dir)
    indexes = sorted((repo_dir / ".dsvc/objects/packs").glob("*.idx"))
    for idx in indexes:
        idx.write_bytes(idx.read_bytes()[:-3] + b"xyz")
    report = json.loads(dsvc("fsck", "--json", cwd=repo_dir, ok=None).stdout)
    assert sorted(p["id"] for p in report["problems"]) == [idx.name for idx in indexes]
    assert all("damaged (checksum mismatch)" in p["problem"] for p in report["problems"])
    for idx in indexes:
        idx.write_bytes(idx.read_bytes()[:-1])
    assert_one_line_error(dsvc("cat-object", "HEAD", cwd=repo_dir, ok=None), "pack index", "damaged")


def test_a_missing_reachable_object_fails_fsck(repo_dir: Path) -> None:
    repo = Repo(repo_dir)
    ghost = b"\x09" * 32
    oid = history.make_commit(repo.store, {"frames": ghost}, (), Signature("A", "a", 1), "dangling root")  # type: ignore[dict-item]
    repo.refs.set_if_equals("HEAD", None, oid)
    report = json.loads(dsvc("fsck", "--json", cwd=repo_dir, ok=None).stdout)
    (problem,) = report["problems"]
    assert problem["id"] == ghost.hex() and problem["problem"].startswith("missing object (reachable from ")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert dsvc("no-such-command", cwd=tmp_path, ok=None).returncode == 2
    assert dsvc("hash-object", cwd=tmp_path, ok=None).returncode == 2
    assert dsvc("hash-object", "missing.jpg", cwd=tmp_path, ok=None).returncode == 2


@pytest.mark.parametrize("command", ["init", "hash-object", "cat-object", "rev-parse", "fsck"])
def test_every_command_has_help_with_examples(tmp_path: Path, command: str) -> None:
    out = dsvc(command, "--help", cwd=tmp_path).stdout
    assert "Examples:" in out and f"dsvc {command}" in out


def test_version_and_debug(tmp_path: Path) -> None:
    assert dsvc("--version", cwd=tmp_path).stdout.startswith("dsvc, version ")
    proc = dsvc("--debug", "rev-parse", "HEAD", cwd=tmp_path, ok=None)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "not a dsvc repository" in proc.stderr


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand path of the CLI, e.g. ("checkpoint", "create")."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _all_commands(command, (*prefix, name))
    return found


def test_every_registered_command_has_help_with_examples() -> None:
    from dsvc.cli import main

    paths = _all_commands(main)
    assert len(paths) > 30
    runner = CliRunner()
    missing = []
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Examples:" not in result.output or f"dsvc {' '.join(path)}" not in result.output:
            missing.append(" ".join(path))
    assert missing == []
