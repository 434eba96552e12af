"""Scanning the working tree: every file that is not ignored, with the stat data the cache compares.

`.dsvc/` is never scanned; `.dsvcignore` uses gitignore syntax. A symlink is followed only when it resolves
to a file inside the working tree; one that points outside (or at a folder) is refused, so nothing outside
the tree can be read into, or written from, a checkout.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvc.errors import InvalidInput

if TYPE_CHECKING:
    import pathspec

DSVC_DIR = ".dsvc"
IGNORE_FILE = ".dsvcignore"
EXECUTABLE = statmod.S_IXUSR
BY_NAME = attrgetter("name")  # a sort key without a Python call per entry


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """One file of the working tree, by its posix path relative to the root."""

    path: str
    size: int
    mtime_ns: int
    ino: int
    mode: int


def load_ignore(root: Path) -> pathspec.PathSpec[Any] | None:
    """Parse `.dsvcignore` at the root, if there is one."""
    try:
        lines = (root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    import pathspec  # only trees with ignore rules pay for importing it

    return pathspec.GitIgnoreSpec.from_lines(lines)  # git's own rules, re-included paths and all


def file_mode(st_mode: int) -> int:
    """Git's two file modes: executable or not."""
    return 0o755 if st_mode & EXECUTABLE else 0o644


def _resolve_link(root: Path, path: Path, rel: str) -> os.stat_result:
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidInput(f"symlink points outside the working tree, to {target}", path=rel)
    if not target.is_file():
        raise InvalidInput("symlink to a folder or special file is not supported", path=rel)
    return target.stat()


# (size, mtime_ns, inode, mode): what the stat cache compares, as a plain tuple so comparing every file of
# a large tree is one dict comparison at C speed.
Stat = tuple[int, int, int, int]


def scan(
    root: Path, under: list[str] | None = None, skip: frozenset[str] = frozenset()
) -> Iterator[ScannedFile]:
    """Yield the working tree's files (or those under the given relative paths), not ignored, not in skip."""
    for rel, (size, mtime_ns, ino, mode) in scan_stats(root, under, skip):
        yield ScannedFile(rel, size, mtime_ns, ino, mode)


def scan_stats(
    root: Path, under: list[str] | None = None, skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Stat]]:
    """`scan` as (path, stat tuple) pairs: no object per file, for status of large trees."""
    ignore = load_ignore(root)
    if under is None:
        return _walk(root, "", ignore, skip)
    return _scan_under(root, under, ignore, skip)


def _scan_under(
    root: Path, under: list[str], ignore: pathspec.PathSpec[Any] | None, skip: frozenset[str]
) -> Iterator[tuple[str, Stat]]:
    for start in under:
        base = root / start if start else root
        if start and base.is_file():
            found = _one(root, start, ignore, skip)
            if found is not None:
                yield found
            continue
        if start and not base.exists():
            continue  # deleted: the caller stages the deletion (or says the path names nothing)
        yield from _walk(root, start, ignore, skip)


def _one(
    root: Path, rel: str, ignore: pathspec.PathSpec[Any] | None, skip: frozenset[str]
) -> tuple[str, Stat] | None:
    if rel in skip or rel.split("/")[0] == DSVC_DIR or (ignore is not None and ignore.match_file(rel)):
        return None
    path = root / rel
    st = os.lstat(path)
    if statmod.S_ISLNK(st.st_mode):
        st = _resolve_link(root, path, rel)
    return rel, (st.st_size, st.st_mtime_ns, st.st_ino, file_mode(st.st_mode))


def _walk(
    root: Path, start: str, ignore: pathspec.PathSpec[Any] | None, skip: frozenset[str]
) -> Iterator[tuple[str, Stat]]:
    stack = [start]
    while stack:
        folder = stack.pop()
        prefix = f"{folder}/" if folder else ""
        with os.scandir(root / folder if folder else root) as entries:
            names = sorted(entries, key=BY_NAME)
        subdirs = []
        for entry in names:  # regular files first: most entries are, and each test is a call
            rel = prefix + entry.name
            if entry.is_file(follow_symlinks=False):
                if rel in skip or (ignore is not None and ignore.match_file(rel)):
                    continue
                st = entry.stat(follow_symlinks=False)
            elif entry.is_dir(follow_symlinks=False):
                if rel != DSVC_DIR and (ignore is None or not ignore.match_file(rel + "/")):
                    subdirs.append(rel)
                continue
            elif entry.is_symlink():
                if rel in skip or (ignore is not None and ignore.match_file(rel)):
                    continue
                st = _resolve_link(root, Path(entry.path), rel)
            else:
                continue  # sockets, pipes, devices
            yield rel, (st.st_size, st.st_mtime_ns, st.st_ino, file_mode(st.st_mode))
        stack.extend(reversed(subdirs))
