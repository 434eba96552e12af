"""Repository verification: every stored object hashes to its id, and everything the refs reach exists.

Reachability follows the object graph: refs -> commits, checkpoints, inference sets -> parents and column
maps -> tree nodes -> frames, labels and file entries -> media blobs. Each object is visited once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dsvc import codec
from dsvc.errors import CorruptObject, DsvcError, ObjectMissing
from dsvc.hashing import ObjectId
from dsvc.history import load_any
from dsvc.objects import Checkpoint, Commit, FileEntry, Frame, InferenceSet, Node, StoredObject
from dsvc.refs import HEAD, RefStore
from dsvc.store import ObjectStore


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the object or ref concerned, and what is wrong with it."""

    subject: str
    message: str


@dataclass
class FsckReport:
    objects: int = 0
    blobs: int = 0
    refs: int = 0
    reachable: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# What the leaf values of each column map are: object ids of a kind, or file entries naming blobs.
def _object_value(value: bytes) -> Iterator[tuple[str, ObjectId]]:
    yield "object", ObjectId(value)


def _file_value(value: bytes) -> Iterator[tuple[str, ObjectId]]:
    yield "blob", FileEntry.from_bytes(value).blob


COLUMN_VALUES: dict[str, Callable[[bytes], Iterator[tuple[str, ObjectId]]]] = {
    "frames": _object_value,
    "labels": _object_value,
    "predictions": _object_value,
    "sources": _object_value,
    "files": _file_value,
}


def children(obj: StoredObject, column: str | None) -> Iterator[tuple[str, ObjectId, str | None]]:
    """Yield (kind, id, column) for everything an object refers to."""
    if isinstance(obj, Commit):
        for parent in obj.parents:
            yield "object", parent, None
        for name, root in obj.roots.items():
            yield "object", root, name
    elif isinstance(obj, Checkpoint):
        yield "object", obj.commit, None
        if obj.previous is not None:
            yield "object", obj.previous, None
    elif isinstance(obj, InferenceSet):
        yield "object", obj.predictions, "predictions"
        if obj.checkpoint is not None:
            yield "object", obj.checkpoint, None
        for parent in obj.parents:
            yield "object", parent, None
    elif isinstance(obj, Node):
        if obj.level:
            for child in obj.values:
                yield "object", ObjectId(child), column
        elif column in COLUMN_VALUES:
            for value in obj.values:
                for kind, oid in COLUMN_VALUES[column](value):
                    yield kind, oid, None
    elif isinstance(obj, Frame):
        for media in obj.media:
            if media.blob is not None:
                yield "blob", media.blob, None


def fsck(store: ObjectStore, refs: RefStore, media: bool = True) -> FsckReport:
    """Verify the whole repository; the report lists every problem found. Without media (a clone that
    fetches media on demand) a blob not here is expected, not a problem."""
    report = FsckReport()
    for name, message in store.index_problems():
        report.problems.append(Problem(name, message))
    for oid, message in store.verify():
        report.problems.append(Problem(oid.hex(), message))
    report.objects = sum(1 for _, stored in store.iter_stored() if stored[0] not in codec.BLOB_HEADERS)
    report.blobs = sum(1 for _ in store.iter_blobs())
    bad = {p.subject for p in report.problems}
    names = [HEAD, *refs.list_refs()]
    seen: set[bytes] = set()
    stack: list[tuple[str, ObjectId, str | None, str]] = []
    for name in names:
        try:
            target = refs.read(name)
        except DsvcError as exc:
            report.problems.append(Problem(name, str(exc)))
            continue
        report.refs += 1
        if target is not None:
            stack.append(("object", target, None, name))
    while stack:
        kind, oid, column, origin = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if oid.hex() in bad:
            continue
        if kind == "blob":
            if media and not store.has_blob(oid):
                report.problems.append(Problem(oid.hex(), f"missing blob (reachable from {origin})"))
            continue
        try:
            obj = load_any(store, oid)
        except ObjectMissing:
            report.problems.append(Problem(oid.hex(), f"missing object (reachable from {origin})"))
            continue
        except CorruptObject as exc:
            report.problems.append(Problem(oid.hex(), str(exc)))
            continue
        for child_kind, child, child_column in children(obj, column):
            stack.append((child_kind, child, child_column, origin))
    report.reachable = len(seen)
    return report
