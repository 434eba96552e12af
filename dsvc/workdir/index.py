"""`.dsvc/index.sqlite`: the stat cache (path, size, mtime, inode -> blob id) and the staged roots.

Only mutable state lives here, never object bytes. A cached entry is trusted only if the file's mtime is
older than the moment the entry was recorded by more than the file system's timestamp granularity, so a
file rewritten within the same tick is never mistaken for unchanged ("racy" entries are re-hashed).

The index may also say which `files` root the stat cache describes: then every path of that map has an
entry, and an entry with a mode carries that map's blob, mode and size (one without is checked), so a
status whose every file matches its entry need not read the map at all. Any change to the entries that
does not name the root it leads to drops the claim.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dsvc import codec
from dsvc.errors import CorruptObject, UnsupportedFormat
from dsvc.hashing import ObjectId

INDEX_FORMAT = 2  # 2: the stat cache records file modes, and which files root it describes
# Coarser than any timestamp granularity Linux file systems have in practice (ext4 ticks are ~4 ms).
RACY_NS = 20_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS stat (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
    blob BLOB NOT NULL, recorded_ns INTEGER NOT NULL, mode INTEGER
);
"""
# An entry's stat tuple as `quick_stats` gives it; an untrusted entry gets a mode no file has.
UNTRUSTED_MODE = -1
# A stat entry: (path, size, mtime_ns, inode, blob), with the file's mode as a sixth item when known.
StatRow = tuple[str, int, int, int, ObjectId] | tuple[str, int, int, int, ObjectId, int]


@dataclass(frozen=True)
class StatEntry:
    """What the cache knows of one file."""

    size: int
    mtime_ns: int
    ino: int
    blob: ObjectId
    recorded_ns: int

    def matches(self, size: int, mtime_ns: int, ino: int) -> bool:
        """Tell whether a file with this stat can be trusted to still have this entry's blob id."""
        return (
            size == self.size
            and mtime_ns == self.mtime_ns
            and ino == self.ino
            and mtime_ns < self.recorded_ns - RACY_NS
        )


class Index:
    """The open index of one repository."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        version = self._meta("format")
        if version is not None and codec.decode(version) > INDEX_FORMAT:
            raise UnsupportedFormat(
                f"{path} has format {codec.decode(version)}; this dsvc reads {INDEX_FORMAT}"
            )
        if version is None or codec.decode(version) < INDEX_FORMAT:
            self._upgrade()

    def _upgrade(self) -> None:
        """Bring a new or format-1 index to this format: format 1 lacks the mode column."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(stat)")}
            if "mode" not in columns:
                db.execute("ALTER TABLE stat ADD COLUMN mode INTEGER")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (codec.encode(INDEX_FORMAT),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def stat_entries(self) -> dict[str, StatEntry]:
        """Load the whole stat cache: one query, so a status of N files is N stat calls and this."""
        rows = self._db.execute("SELECT path, size, mtime_ns, ino, blob, recorded_ns FROM stat")
        return {
            path: StatEntry(size, mtime, ino, ObjectId(bytes(blob)), rec)
            for path, size, mtime, ino, blob, rec in rows
        }

    def quick_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """Every entry's (size, mtime_ns, inode, mode), comparable with `scan_stats` as is: an entry
        without a mode, or racy, gets UNTRUSTED_MODE so it never equals a file's stat."""
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, ino,"
            " CASE WHEN mode IS NOT NULL AND mtime_ns < recorded_ns - ? THEN mode ELSE ? END FROM stat",
            (RACY_NS, UNTRUSTED_MODE),
        )
        return {path: (size, mtime, ino, mode) for path, size, mtime, ino, mode in rows}

    def entries(self, paths: Iterable[str]) -> dict[str, StatEntry]:
        """The entries of some paths (those the cache has), one lookup each."""
        found = {}
        for path in paths:
            row = self._db.execute(
                "SELECT size, mtime_ns, ino, blob, recorded_ns FROM stat WHERE path = ?", (path,)
            ).fetchone()
            if row is not None:
                size, mtime, ino, blob, recorded = row
                found[path] = StatEntry(size, mtime, ino, ObjectId(bytes(blob)), recorded)
        return found

    def described(self) -> ObjectId | None:
        """The files root the stat cache describes entry for entry, if it describes one."""
        raw = self._meta("described")
        return None if raw is None else ObjectId(raw)

    def staged_roots(self) -> dict[str, ObjectId] | None:
        """The roots `commit` will record, or None when nothing was ever staged."""
        raw = self._meta("staged")
        if raw is None:
            return None
        value = codec.decode(raw)
        if not isinstance(value, dict):
            raise CorruptObject(f"{self.path}: staged state is damaged")
        return {str(k): ObjectId(v) for k, v in value.items()}

    def source_stamp(self, source: str) -> bytes | None:
        """The stat fingerprint of a source's files when it was last parsed."""
        return self._meta(f"source:{source}")

    def update(
        self,
        *,
        stats: Iterable[StatRow] = (),
        forget: Iterable[str] = (),
        staged: Mapping[str, ObjectId] | None = None,
        stamps: Mapping[str, bytes | None] | None = None,
        untrust: Iterable[str] = (),
        describes: ObjectId | None = None,
        replace: bool = False,
    ) -> None:
        """Record new stat entries, drop others (with replace, all others), forget the modes of some,
        set the staged roots and source stamps, and say which files root the entries now describe
        (None: unknown): one transaction."""
        now = time.time_ns()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if replace:
                db.execute("DELETE FROM stat")
            written = db.executemany(
                "INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((*row[:5], now, row[5] if len(row) > 5 else None) for row in stats),
            ).rowcount
            dropped = db.executemany("DELETE FROM stat WHERE path = ?", ((p,) for p in forget)).rowcount
            db.executemany("UPDATE stat SET mode = NULL WHERE path = ?", ((p,) for p in untrust))
            if describes is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('described', ?)", (bytes(describes),))
            elif replace or written > 0 or dropped > 0:
                db.execute("DELETE FROM meta WHERE key = 'described'")
            if staged is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('staged', ?)",
                    (codec.encode(codec.canonical(dict(staged))),),
                )
            for source, stamp in (stamps or {}).items():
                if stamp is None:
                    db.execute("DELETE FROM meta WHERE key = ?", (f"source:{source}",))
                else:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"source:{source}", stamp))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
