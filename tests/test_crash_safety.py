"""Failures in the middle of a write (a full or size-limited disk, a killed process) leave the repository as
it was: one readable line naming the place, exit 1, no temporary files, and `fsck` clean (DESIGN §5, §11).

Write failures are real ones: the child process runs with RLIMIT_FSIZE, so the kernel refuses its writes past
the limit (EFBIG, the same path as ENOSPC); kills are real SIGKILLs at varying moments.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import datagen
from tests.test_cli_workdir import SOURCE, data, dsvc, new_repository


def limited(limit: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run dsvc with every file it writes capped at limit bytes."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "dsvc", *args], cwd=cwd, capture_output=True, text=True, preexec_fn=cap
    )


def leftovers(root: Path) -> list[str]:
    """Temporary files anywhere in the repository."""
    return sorted(
        p.name for p in (root / ".dsvc").rglob("*") if ".tmp-" in p.name or p.name.startswith("blob-")
    )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return new_repository(tmp_path / "cars", 80, 20_000, seed=9, commit=False)


@pytest.mark.parametrize("limit", [50_000, 400_000])
def test_a_write_failure_during_add_changes_nothing(dataset: Path, limit: int) -> None:
    root = dataset
    before = data("status", cwd=root)
    proc = limited(limit, "add", ".", cwd=root)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("dsvc: error: ") and ".dsvc/objects" in lines[0] and "too large" in lines[0]
    assert leftovers(root) == []
    assert data("status", cwd=root) == before
    assert dsvc("fsck", cwd=root).returncode == 0
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v0", cwd=root)
    assert data("status", cwd=root)["clean"] is True


def test_a_write_failure_during_checkout_leaves_head_and_the_index(dataset: Path) -> None:
    root = dataset
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v0", cwd=root)
    datagen.mutate(root, relabel=0.2, add=2, seed=1)
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "v1", cwd=root)
    head = data("rev-parse", "HEAD", cwd=root)["HEAD"]
    size = (root / SOURCE).stat().st_size
    proc = limited(size // 2, "checkout", "HEAD~1", cwd=root)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert SOURCE in proc.stderr and "too large" in proc.stderr
    assert data("rev-parse", "HEAD", cwd=root)["HEAD"] == head
    assert dsvc("fsck", cwd=root).returncode == 0
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    dsvc("checkout", "--force", "HEAD~1", cwd=root)
    assert data("status", cwd=root)["clean"] is True


def test_killed_adds_and_commits_never_leave_a_broken_repository(dataset: Path) -> None:
    root = dataset
    killed_leftovers: set[str] = set()
    for delay in (0.05, 0.2, 0.4, 0.8, 1.2):
        for command in (["add", "."], ["commit", "-m", f"after {delay}"]):
            proc = subprocess.Popen(
                [sys.executable, "-m", "dsvc", *command],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert dsvc("fsck", cwd=root).returncode == 0, f"{command} killed after {delay} s"
            killed_leftovers.update(leftovers(root))
            data("status", cwd=root)  # readable whatever the moment of the kill
    dsvc("add", ".", cwd=root)
    dsvc("commit", "-m", "done", "--allow-empty", cwd=root)  # a killed commit may already have landed
    status = data("status", cwd=root)
    assert status["clean"] is True and status["head"] is not None
    assert len(data("frames", cwd=root)) == 80
    assert leftovers(root) == [], f"the next writer removes what kills left: {sorted(killed_leftovers)}"


def test_the_next_writer_removes_what_a_killed_one_left(dataset: Path) -> None:
    root = dataset
    dsvc("add", ".", cwd=root)
    packs = root / ".dsvc" / "objects" / "packs"
    # What a writer killed mid-way leaves: a half-written pack, a blob being stored, a held ref lock.
    (packs / ".new.pack.tmp-0123456789ab").write_bytes(b"DSVCPACK half")
    (root / ".dsvc" / "objects" / "tmp" / "blob-0123456789abcdef").write_bytes(b"half a blob")
    (root / ".dsvc" / "refs" / "heads" / "main.lock").write_text("")
    assert sorted(leftovers(root)) == [".new.pack.tmp-0123456789ab", "blob-0123456789abcdef"]
    dsvc("commit", "-m", "v0", cwd=root)
    assert leftovers(root) == [] and not list((root / ".dsvc").rglob("*.lock"))
    assert data("status", cwd=root)["clean"] is True
    assert dsvc("fsck", cwd=root).returncode == 0
