"""Crash-safe file writes: a temporary name, fsync, rename, then fsync of the folder.

A crash at any point leaves either the old file or the new one, never a torn one (DESIGN §5). Writers of
many or large files start the kernel's writeback as they go (`start_writeback`), so the final fsync finds
little left to flush and the disk works while the next bytes are read and hashed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
_syncfs = getattr(_libc, "syncfs", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
SYNC_FILE_RANGE_WRITE = 2

# Bytes as they are written out: a buffer of their own, or a view into a mapped pack.
Buffer = bytes | memoryview


def temp_name(path: Path) -> Path:
    """Return a unique temporary sibling of path, in the same folder so rename is atomic."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")


def naming(exc: OSError, path: Path) -> OSError:
    """The same error, naming path when the OS did not (writes through a descriptor name no file)."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def fsync_dir(folder: Path) -> None:
    """Make a rename or create inside folder durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def new_file(path: Path, mode: int = 0o644, names: Path | None = None) -> Iterator[int]:
    """An open descriptor on a file created at path (FileExistsError if one is there), closed on
    leaving; if the block raises, the file is removed too (and an OSError names `names`, else path)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        yield fd
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise naming(exc, names or path) from None
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


@contextmanager
def temporary_file(path: Path, mode: int = 0o644) -> Iterator[tuple[int, Path]]:
    """An open descriptor on a new temporary file beside path (see `new_file`; an OSError names path).
    The caller renames it into place."""
    tmp = temp_name(path)
    with new_file(tmp, mode, names=path) as fd:
        yield fd, tmp


def write_file(path: Path, data: Buffer, mode: int = 0o644, durable: bool = True) -> None:
    """Atomically replace path with data; durable (fsynced, with its folder) unless asked not to."""
    with temporary_file(path, mode) as (fd, tmp):
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def place_file(path: Path, data: Buffer, mode: int = 0o644) -> None:
    """Write data at path without an fsync (a checkout syncs once after all its files): straight under
    its name when nothing is there, since a crash can then leave only a partial new file that replaces
    nothing; through a temporary name and a rename otherwise, so no file is ever half-replaced."""
    try:
        with new_file(path, mode) as fd:
            write_all(fd, data)
    except FileExistsError:
        write_file(path, data, mode, durable=False)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-written range to disk, without waiting (Linux only)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def sync_filesystem(folder: Path) -> None:
    """Make everything written on folder's file system durable with one call: after writing many files
    without an fsync each (a checkout), before recording them as written."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs is None or _syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """Make a file written earlier (and perhaps already written back) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: Buffer) -> None:
    """Write every byte (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


def write_parts(fd: int, parts: Sequence[Buffer]) -> None:
    """Write buffers one after another with one system call per IOV_MAX of them (a pack's thousands of
    entries), starting the disk's writeback of each run so a closing fsync finds little left."""
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    for start in range(0, len(parts), IOV_MAX):
        run = parts[start : start + IOV_MAX]
        size = sum(map(len, run))
        done = os.writev(fd, run)
        for part in run if done < size else ():  # a short write: the rest one buffer at a time
            if done < len(part):
                write_all(fd, memoryview(part)[done:])
            done = max(0, done - len(part))
        start_writeback(fd, offset, size)
        offset += size


def prune_empty_dirs(folder: Path, stop: Path) -> None:
    """Remove folder and its parents while they are empty, up to (not including) stop."""
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
