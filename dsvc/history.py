"""History: commits and checkpoints over the object store, revision parsing, and walking the log.

Revisions (DESIGN §6): `HEAD`, a branch, tag, checkpoint or inference name, a full ref name, a full or
abbreviated (4+ hex digits) id, `REV~N`, `REV^`, `REV^N`, `NAME@{N}` and `NAME@{date}` through the reflog.
Names win over abbreviated ids, as in git.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dsvc.errors import BadRevision, CorruptObject, ObjectMissing
from dsvc.hashing import ObjectId, is_hex_prefix
from dsvc.objects import Checkpoint, Commit, Signature, StoredObject, decode_object
from dsvc.refs import HEAD, RefStore
from dsvc.store import ObjectStore

NAMESPACES = ("refs/heads/", "refs/tags/", "refs/checkpoints/", "refs/inferences/")
_SUFFIX = re.compile(r"(~\d*|\^\d*)")
_REFLOG = re.compile(r"^(?P<name>.*)@\{(?P<spec>[^}]*)\}$")
_AGO = re.compile(r"^(\d+)\s*(second|minute|hour|day|week|month|year)s?[\s.]*ago$")
_UNIT_S = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
    "month": 2592000,
    "year": 31536000,
}


def load_any(store: ObjectStore, oid: ObjectId) -> StoredObject:
    """Return the typed object stored under an id."""
    try:
        return decode_object(store.get(oid))
    except CorruptObject as exc:
        raise CorruptObject(f"object {oid.hex()}: {exc}") from None


def commit_of(store: ObjectStore, oid: ObjectId, rev: str = "") -> ObjectId:
    """Peel an id to a commit: checkpoints point at their commit; anything else is refused."""
    if store.has_blob(oid):
        raise BadRevision(f"{rev or oid.hex()} is a blob, not a commit")
    obj = load_any(store, oid)
    if isinstance(obj, Checkpoint):
        return obj.commit
    if isinstance(obj, Commit):
        return oid
    raise BadRevision(f"{rev or oid.hex()} is a {obj.KIND}, not a commit")


def read_commit(store: ObjectStore, oid: ObjectId) -> Commit:
    return store.get_object(oid, Commit)


def make_commit(
    store: ObjectStore,
    roots: Mapping[str, ObjectId],
    parents: tuple[ObjectId, ...],
    author: Signature,
    message: str,
) -> ObjectId:
    """Store a commit object; moving a ref to it is the caller's last step."""
    return store.put_object(Commit(dict(roots), parents, author, message))


def new_checkpoint(
    store: ObjectStore,
    name: str,
    commit: ObjectId,
    description: str,
    metadata: Mapping[str, Any],
    who: Signature,
) -> ObjectId:
    """Store the first version of a checkpoint."""
    read_commit(store, commit)
    return store.put_object(Checkpoint(name, commit, description, dict(metadata), who, False, None))


def revise_checkpoint(store: ObjectStore, previous: ObjectId, who: Signature, **changes: Any) -> ObjectId:
    """Store an edited version of a checkpoint that keeps the old one reachable through `previous`."""
    old = store.get_object(previous, Checkpoint)
    return store.put_object(replace(old, created=who, previous=previous, **changes))


def checkpoint_versions(store: ObjectStore, head: ObjectId) -> Iterator[tuple[ObjectId, Checkpoint]]:
    """Yield a checkpoint's versions, newest first."""
    oid: ObjectId | None = head
    while oid is not None:
        cp = store.get_object(oid, Checkpoint)
        yield oid, cp
        oid = cp.previous


def walk(store: ObjectStore, starts: list[ObjectId]) -> Iterator[tuple[ObjectId, Commit]]:
    """Yield the commits reachable from starts, newest first (by commit time), each once."""
    seen: set[bytes] = set()
    queue: list[tuple[int, int, bytes, Commit]] = []
    order = 0
    for oid in starts:
        if oid not in seen:
            seen.add(oid)
            commit = read_commit(store, oid)
            heapq.heappush(queue, (-commit.author.time, order, oid, commit))
            order += 1
    while queue:
        _, _, popped, commit = heapq.heappop(queue)
        yield ObjectId(popped), commit
        for parent in commit.parents:
            if parent not in seen:
                seen.add(parent)
                parent_commit = read_commit(store, parent)
                heapq.heappush(queue, (-parent_commit.author.time, order, parent, parent_commit))
                order += 1


def is_ancestor(store: ObjectStore, ancestor: ObjectId, descendant: ObjectId) -> bool:
    """Tell whether ancestor is reachable from descendant (or equal to it)."""
    return any(oid == ancestor for oid, _ in walk(store, [descendant]))


# -- revisions -----------------------------------------------------------------------------------------


def ref_for_name(refs: RefStore, name: str) -> str | None:
    """Return the full ref a short name means (branch, tag, checkpoint, inference), or None."""
    if name == HEAD:
        return HEAD
    candidates = [name] if name.startswith("refs/") else [ns + name for ns in NAMESPACES]
    for ref in candidates:
        try:
            if refs.read(ref) is not None:
                return ref
        except BadRevision:
            return None
    return None


def _parse_date(spec: str, now: float) -> float:
    text = spec.strip().lower()
    if text == "now":
        return now
    if text == "yesterday":
        return now - 86400
    match = _AGO.match(text)
    if match:
        return now - int(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(spec.strip())
    except ValueError:
        raise BadRevision(f"cannot read the date {spec!r} (use ISO 8601 or '3 days ago')") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


def _from_reflog(refs: RefStore, name: str, spec: str, now: float) -> ObjectId:
    ref = ref_for_name(refs, name or HEAD)
    if ref is None:
        raise BadRevision(f"unknown revision {name!r}")
    entries = [e for e in refs.reflog(ref) if e.new is not None]
    if not entries:
        raise BadRevision(f"{ref} has no reflog")
    if spec.isdigit():
        index = int(spec)
        if index >= len(entries):
            raise BadRevision(f"{ref} has only {len(entries)} reflog entries")
        found = entries[-1 - index].new
    else:
        moment = _parse_date(spec, now)
        older = [e for e in entries if e.time <= moment]
        if not older:
            raise BadRevision(f"{ref} did not exist at {spec}")
        found = older[-1].new
    assert found is not None
    return found


def _resolve_base(store: ObjectStore, refs: RefStore, base: str, now: float) -> ObjectId:
    reflog = _REFLOG.match(base)
    if reflog:
        return _from_reflog(refs, reflog.group("name"), reflog.group("spec"), now)
    ref = ref_for_name(refs, base)
    if ref is not None:
        oid = refs.read(ref)
        if oid is None:
            raise BadRevision(f"{base} does not point at anything yet")
        return oid
    if is_hex_prefix(base):
        matches = store.find_prefix(base)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = ", ".join(m.hex()[:12] for m in matches[:5])
            raise BadRevision(f"short id {base} is ambiguous: {listed}")
    raise BadRevision(f"unknown revision {base!r}")


def resolve(store: ObjectStore, refs: RefStore, rev: str, now: float | None = None) -> ObjectId:
    """Return the object id a revision names (a commit, unless the name itself points elsewhere)."""
    rev = rev.strip()
    if not rev:
        raise BadRevision("empty revision")
    parts = _SUFFIX.split(rev)
    base, suffixes = parts[0], [p for p in parts[1:] if p]
    if not base:
        raise BadRevision(f"revision {rev!r} has no name before its suffix")
    oid = _resolve_base(store, refs, base, time.time() if now is None else now)
    for suffix in suffixes:
        oid = commit_of(store, oid, rev)
        commit = read_commit(store, oid)
        if suffix[0] == "~":
            for _ in range(int(suffix[1:] or 1)):
                if not commit.parents:
                    raise BadRevision(f"{rev}: history ends before that")
                oid = commit.parents[0]
                commit = read_commit(store, oid)
        else:
            nth = int(suffix[1:] or 1)
            if nth == 0:
                continue
            if nth > len(commit.parents):
                raise BadRevision(f"{rev}: the commit has {len(commit.parents)} parent(s)")
            oid = commit.parents[nth - 1]
    return oid


def resolve_commit(store: ObjectStore, refs: RefStore, rev: str) -> ObjectId:
    """Return the commit a revision names, peeling checkpoints."""
    try:
        return commit_of(store, resolve(store, refs, rev), rev)
    except ObjectMissing:
        raise BadRevision(f"{rev} names an object that is not in this repository") from None


def signature(name: str, email: str, when: float | None = None) -> Signature:
    """Make a signature for now (or a given time) in the local time zone."""
    moment = time.time() if when is None else when
    offset = datetime.fromtimestamp(moment, UTC).astimezone().utcoffset() or timedelta()
    return Signature(name, email, int(moment), int(offset.total_seconds() // 60))
