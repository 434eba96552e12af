"""Calls run in a second process: results and errors come back as the call gave them, a crash is a clear
error, and the caller's main script is not run again in the child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsvc.errors import DsvcError
from dsvc.workdir.apart import Apart


class Unpicklable(Exception):
    """An error carrying something pickle cannot send."""


def fail_unpicklably(message: str) -> None:
    exc = Unpicklable(message)
    exc.callback = lambda: None  # type: ignore[attr-defined]
    raise exc


def print_and_exit(message: str) -> None:
    print("something earlier")
    print(message, flush=True)
    os._exit(4)


def test_a_call_returns_its_result_from_another_process() -> None:
    with Apart(os.getpid) as job:
        assert job.result() != os.getpid()
    with Apart(sorted, {"b": 1, "a": 2}) as job:
        assert job.result() == ["a", "b"]


def test_an_error_comes_back_as_raised() -> None:
    with Apart(int, "not a number") as job, pytest.raises(ValueError, match="not a number"):
        job.result()


def test_an_error_that_cannot_be_sent_comes_back_as_its_text() -> None:
    with Apart(fail_unpicklably, "lost in transit") as job, pytest.raises(DsvcError, match="lost in transit"):
        job.result()


def test_a_child_that_dies_is_a_clear_error_with_its_last_words() -> None:
    with Apart(os._exit, 3) as job, pytest.raises(DsvcError, match="exit code 3"):
        job.result()
    with Apart(print_and_exit, "the last thing it said") as job, pytest.raises(DsvcError) as raised:
        job.result()
    assert str(raised.value).endswith("(exit code 4): the last thing it said")


def test_the_callers_script_runs_once(tmp_path: Path) -> None:
    log, script = tmp_path / "log", tmp_path / "script.py"
    script.write_text(
        "import os\n"
        "from dsvc.workdir.apart import Apart\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write('ran\\n')\n"
        "with Apart(os.getpid) as job:\n"
        "    print(job.result() != os.getpid())\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n" and log.read_text() == "ran\n"
