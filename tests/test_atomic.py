"""File writes: a new file goes straight under its name, an existing one is replaced only whole, and a
failed write leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsvc.atomic import IOV_MAX, place_file, write_file, write_parts


@contextlib.contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """Writes past size fail with EFBIG (the signal that would kill the process is ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_new_file_is_written_under_its_name_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    place_file(target, memoryview(b"fresh bytes"), 0o600)
    assert target.read_bytes() == b"fresh bytes"
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["new.bin"]


def test_an_existing_file_is_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old bytes")
    with open(target, "rb") as reader:  # what a reader of the old file sees must stay the old file
        place_file(target, b"new bytes, longer")
        assert reader.read() == b"old bytes"
    assert target.read_bytes() == b"new bytes, longer"
    assert os.listdir(tmp_path) == ["file.bin"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_write_names_the_file_and_leaves_what_was_there(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "file.bin"
    if existing:
        target.write_bytes(b"kept")
    with file_size_limit(1000), pytest.raises(OSError) as raised:
        place_file(target, b"x" * 5000)
    assert raised.value.filename is not None and Path(raised.value.filename).name == "file.bin"
    assert os.listdir(tmp_path) == (["file.bin"] if existing else [])
    if existing:
        assert target.read_bytes() == b"kept"


def test_a_durable_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config"
    write_file(target, b"one")
    write_file(target, b"two")
    assert target.read_bytes() == b"two" and os.listdir(tmp_path) == ["config"]


def test_parts_are_written_in_order_past_the_system_call_limit(tmp_path: Path) -> None:
    parts = [(b"%d," % i) if i % 2 else memoryview(b"<%d>" % i) for i in range(2 * IOV_MAX + 7)]
    fd = os.open(tmp_path / "parts", os.O_WRONLY | os.O_CREAT)
    try:
        write_parts(fd, parts)
    finally:
        os.close(fd)
    assert (tmp_path / "parts").read_bytes() == b"".join(parts)


def test_parts_cut_short_by_a_size_limit_fail_rather_than_leave_a_gap(tmp_path: Path) -> None:
    parts = [b"a" * 1000, b"b" * 1000, b"c" * 1000]
    fd = os.open(tmp_path / "parts", os.O_WRONLY | os.O_CREAT)
    try:  # the limit cuts the first call short inside the second part; the rest cannot be written
        with file_size_limit(1500), pytest.raises(OSError):
            write_parts(fd, parts)
    finally:
        os.close(fd)
    assert (tmp_path / "parts").read_bytes() == b"a" * 1000 + b"b" * 500
