"""Refs: named pointers to objects, updated only by compare-and-swap, with a reflog.

A ref is a file under `.dsvc/refs/` holding a hex id; `HEAD` is symbolic (`ref: refs/heads/main`) or a
detached id. An update takes `<ref>.lock` with O_EXCL, checks the current value is the expected one,
writes the new value into the lock file, fsyncs it and renames it over the ref: a crash leaves the old
value or the new one. The reflog records every move (old, new, time, message) for `name@{...}`.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from dsvc.atomic import fsync_dir, prune_empty_dirs
from dsvc.errors import BadRevision, CorruptObject, LockHeld, RefConflict
from dsvc.hashing import HEX_SIZE, ObjectId

HEAD = "HEAD"
ZERO = "0" * HEX_SIZE
SYMBOLIC_PREFIX = "ref: "
_BAD_COMPONENT = re.compile(r"(^\.)|(\.\.)|([\x00-\x20\x7f~^:?*\[\\])|(\.lock$)|(@\{)|(\.$)")
LOCK_WAIT_S = 2.0


def check_ref_name(name: str) -> str:
    """Refuse ref names that could escape `.dsvc/refs` or confuse revision syntax (git's rules)."""
    if name == HEAD:
        return name
    parts = name.split("/")
    if len(parts) < 2 or parts[0] != "refs" or any(not p or _BAD_COMPONENT.search(p) for p in parts):
        raise BadRevision(f"invalid ref name: {name!r}")
    return name


@dataclass(frozen=True)
class ReflogEntry:
    """One move of a ref."""

    old: ObjectId | None
    new: ObjectId | None
    time: int
    tz_minutes: int
    message: str


def _parse_value(text: str, where: str) -> ObjectId:
    text = text.strip()
    if len(text) != HEX_SIZE:
        raise CorruptObject(f"ref {where} is damaged: {text[:80]!r}")
    try:
        return ObjectId(bytes.fromhex(text))
    except ValueError:
        raise CorruptObject(f"ref {where} is damaged: {text[:80]!r}") from None


class RefStore:
    """The refs of one repository folder (`.dsvc`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / check_ref_name(name)

    def remove_stale_locks(self) -> int:
        """Delete `<ref>.lock` files a killed updater left; call only with the repository's writer lock
        held, which every ref update takes. Return how many were removed."""
        stale = [*self.root.glob(f"{HEAD}.lock"), *(self.root / "refs").rglob("*.lock")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def read_raw(self, name: str) -> str | None:
        """Return a ref file's content (an id or `ref: target`), or None if it does not exist."""
        try:
            return self._path(name).read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def symbolic_target(self, name: str) -> str | None:
        """Return the ref a symbolic ref points to, or None when it holds an id or is absent."""
        raw = self.read_raw(name)
        if raw is not None and raw.startswith(SYMBOLIC_PREFIX):
            return check_ref_name(raw[len(SYMBOLIC_PREFIX) :].strip())
        return None

    def resolve_name(self, name: str) -> str:
        """Follow symbolic refs to the name that holds an id."""
        for _ in range(5):
            target = self.symbolic_target(name)
            if target is None:
                return name
            name = target
        raise CorruptObject(f"ref {name} is a symbolic ref loop")

    def read(self, name: str) -> ObjectId | None:
        """Return the id a ref points to (following symbolic refs), or None when it does not exist."""
        name = self.resolve_name(name)
        raw = self.read_raw(name)
        return None if raw is None else _parse_value(raw, name)

    def set_symbolic(self, name: str, target: str, message: str = "") -> None:
        """Point a symbolic ref (HEAD) at another ref."""
        check_ref_name(target)
        with self._locked(name) as lock:
            old = self.read(name)
            self._write_lock(lock, f"{SYMBOLIC_PREFIX}{target}\n")
            self._commit_lock(name, lock, old, self._read_target(target), message)

    def _read_target(self, target: str) -> ObjectId | None:
        raw = self.read_raw(target)
        return None if raw is None or raw.startswith(SYMBOLIC_PREFIX) else _parse_value(raw, target)

    def set_if_equals(
        self, name: str, old: ObjectId | None, new: ObjectId, message: str = "", follow: bool = True
    ) -> None:
        """Move a ref from old (None: must not exist) to new, or raise RefConflict if it moved meanwhile.

        With follow=False a symbolic ref is itself overwritten (a detached HEAD) instead of its target."""
        if follow:
            name = self.resolve_name(name)
        with self._locked(name) as lock:
            current = self.read(name) if not follow else self._read_target(name)
            if current != old:
                raise RefConflict(
                    f"ref {name} changed underneath: expected {old.hex()[:12] if old else 'none'}, "
                    f"found {current.hex()[:12] if current else 'none'}"
                )
            self._write_lock(lock, new.hex() + "\n")
            self._commit_lock(name, lock, old, new, message)

    def add_if_new(self, name: str, new: ObjectId, message: str = "") -> None:
        """Create a ref that must not exist yet."""
        self.set_if_equals(name, None, new, message)

    def remove_if_equals(self, name: str, old: ObjectId, message: str = "") -> None:
        """Delete a ref if it still points at old."""
        name = self.resolve_name(name)
        with self._locked(name):
            current = self._read_target(name)
            if current != old:
                raise RefConflict(f"ref {name} changed underneath; not deleted")
            self._log(name, old, None, message)
            path = self._path(name)
            path.unlink()
            fsync_dir(path.parent)
            prune_empty_dirs(path.parent, self.root / "refs")

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """Return every ref under prefix with its id, sorted by name."""
        base = self.root / "refs"
        out: dict[str, ObjectId] = {}
        if not base.is_dir():
            return out
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(".lock") and not path.name.startswith("."):
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    out[name] = _parse_value(path.read_text(encoding="utf-8"), name)
        return out

    def reflog(self, name: str) -> list[ReflogEntry]:
        """Return a ref's moves, oldest first."""
        path = self.root / "logs" / self.resolve_name(name)
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            old, new, when, tz, *message = line.split(" ", 4)
            entries.append(
                ReflogEntry(
                    None if old == ZERO else ObjectId(bytes.fromhex(old)),
                    None if new == ZERO else ObjectId(bytes.fromhex(new)),
                    int(when),
                    int(tz),
                    message[0] if message else "",
                )
            )
        return entries

    # -- the lock-and-rename protocol ------------------------------------------------------------------

    class _Lock:
        def __init__(self, path: Path, fd: int) -> None:
            self.path = path
            self.fd = fd
            self.done = False

    def _locked(self, name: str) -> _LockContext:
        return _LockContext(self, self._path(name))

    def _write_lock(self, lock: RefStore._Lock, text: str) -> None:
        os.write(lock.fd, text.encode())
        os.fsync(lock.fd)

    def _commit_lock(
        self, name: str, lock: RefStore._Lock, old: ObjectId | None, new: ObjectId | None, message: str
    ) -> None:
        self._log(name, old, new, message)
        target = self._path(name)
        os.replace(lock.path, target)
        lock.done = True
        fsync_dir(target.parent)

    def _log(self, name: str, old: ObjectId | None, new: ObjectId | None, message: str) -> None:
        path = self.root / "logs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        line = (
            f"{old.hex() if old else ZERO} {new.hex() if new else ZERO} {int(now)} "
            f"{time.localtime(now).tm_gmtoff // 60} "
            f"{' '.join(message.split())}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class _LockContext:
    """Holds `<ref>.lock` for the duration of one update; waits briefly for a concurrent updater."""

    def __init__(self, refs: RefStore, target: Path) -> None:
        self.refs = refs
        self.target = target
        self.lock: RefStore._Lock | None = None

    def __enter__(self) -> RefStore._Lock:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        path = self.target.with_name(self.target.name + ".lock")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise LockHeld(
                        f"{path} exists: another dsvc process is updating this ref; "
                        "if none is, remove the file"
                    ) from None
                time.sleep(0.01)
        self.lock = RefStore._Lock(path, fd)
        return self.lock

    def __exit__(self, *exc: object) -> None:
        assert self.lock is not None
        os.close(self.lock.fd)
        if not self.lock.done:
            self.lock.path.unlink(missing_ok=True)
