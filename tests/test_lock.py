"""The writer lock: one writer at a time, released when its holder dies, and a clear message when held."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsvc.errors import LockHeld
from dsvc.lock import WriterLock

HOLD = """
import sys, time
from pathlib import Path
from dsvc.lock import WriterLock
lock = WriterLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_gets_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    proc = _holder(path, 30)
    try:
        with pytest.raises(LockHeld, match=rf"locked by pid {proc.pid} on "):
            WriterLock(path, wait_s=0.2).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_waiting_writer_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    proc = _holder(path, 0.5)
    start = time.monotonic()
    with WriterLock(path, wait_s=20):
        assert time.monotonic() - start > 0.1
    proc.wait()


def test_a_crashed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    proc = _holder(path, 30)
    proc.kill()
    proc.wait()
    assert path.exists()
    with WriterLock(path, wait_s=0.2):
        pass


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "lock")
    with lock, lock:
        pass
    with WriterLock(tmp_path / "lock", wait_s=0.1):
        pass


def test_on_acquire_runs_once_per_acquisition_and_a_failure_releases(tmp_path: Path) -> None:
    calls = []
    lock = WriterLock(tmp_path / "lock", on_acquire=lambda: calls.append(1))
    with lock, lock:  # re-entry does not run it again
        pass
    assert calls == [1]

    def fail() -> None:
        raise OSError("cannot clean up")

    failing = WriterLock(tmp_path / "lock", on_acquire=fail)
    with pytest.raises(OSError, match="cannot clean up"):
        failing.acquire()
    with WriterLock(tmp_path / "lock", wait_s=0.1):  # not left held
        pass
