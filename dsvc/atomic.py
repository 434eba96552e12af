"""Crash-safe file writes: a temporary name, fsync, rename, then fsync of the folder.

A crash at any point leaves either the old file or the new one, never a torn one (DESIGN §5). Many files
can be made durable with one `syncfs` call instead of one fsync each (`sync_tree`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def temp_name(path: Path) -> Path:
    """Return a unique temporary sibling of path, in the same folder so rename is atomic."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")


def fsync_dir(folder: Path) -> None:
    """Make a rename or create inside folder durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace path with data."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sync_tree(folder: Path) -> None:
    """Flush every pending write on folder's file system: one call for a whole batch of new files."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs is None or _syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
