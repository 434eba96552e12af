"""Push, fetch and lazy media: the remote engine over a local store, its refs and a backend.

Push: read the remote's refs (with etags), judge fast-forward, find what the remote lacks by walking the
maps against what its refs reach, drop what its pack indexes already list (a resumed push), upload packs,
then their indexes, and move each ref last by a conditional write. Fetch: read refs and the indexes of
packs not seen before, download what is not here with coalesced range reads, verify every object, check
that the new refs' closures are complete, and only then make objects visible and move refs. Any failure
leaves the local repository as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dsvc import tree
from dsvc.errors import BadRevision, NonFastForward, ObjectMissing, RemoteError
from dsvc.hashing import ObjectId
from dsvc.history import ref_for_name
from dsvc.objects import FileEntry
from dsvc.refs import HEAD, RefStore
from dsvc.remote.backends import Backend, CountingBackend, PreconditionFailed, Stat
from dsvc.remote.layout import (
    MEDIA_PACK,
    RemoteIndex,
    RemoteRef,
    ensure_format,
    fetched_packs,
    list_packs,
    load_indexes,
    mark_fetched,
    read_format,
    read_refs,
    ref_bytes,
    save_indexes,
)
from dsvc.remote.transfer import PACK_TARGET, Meter, download, no_meter, upload_packs
from dsvc.remote.walk import descends, missing_closure
from dsvc.store import ObjectStore

BRANCHES = "refs/heads/"
TAGS = "refs/tags/"
SHARED = ("refs/tags/", "refs/checkpoints/", "refs/inferences/")


@dataclass
class Remote:
    """One configured remote: its name, backend, and the local cache of its pack indexes."""

    name: str
    backend: Backend
    cache: Path

    def tracking(self, ref: str) -> str:
        """Where a fetched branch lands locally: refs/remotes/<name>/<branch>."""
        return f"refs/remotes/{self.name}/{ref[len(BRANCHES) :]}"


@dataclass
class PushResult:
    remote: str
    objects: int = 0
    bytes: int = 0
    packs: int = 0
    requests: int = 0
    updated: dict[str, tuple[str | None, str]] = field(default_factory=dict)


@dataclass
class FetchResult:
    remote: str
    empty: bool = False  # the remote holds nothing yet (no dsvc config)
    objects: int = 0
    bytes: int = 0
    updated: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


def push_names(refs: RefStore, names: Iterable[str]) -> list[str]:
    """The full names of the refs a push sends: those named (short names allowed), else the current
    branch with every tag, checkpoint and inference set."""
    named = []
    for name in names:
        ref = ref_for_name(refs, name)
        if ref == HEAD:
            ref = refs.symbolic_target(HEAD)
        if ref is None:
            raise BadRevision(f"no such branch, tag, checkpoint or inference set: {name}")
        named.append(ref)
    if named:
        return named
    branch = refs.symbolic_target(HEAD)
    current = [branch] if branch and refs.read(branch) is not None else []
    return current + [r for prefix in SHARED for r in refs.list_refs(prefix)]


def blobs_under(store: ObjectStore, files: ObjectId, prefixes: Sequence[str]) -> list[ObjectId]:
    """The blobs of a `files` map under some folders or files (all with none, or with "")."""

    def wanted(path: str) -> bool:
        return not prefixes or any(
            not p or path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes
        )

    return [FileEntry.from_bytes(v).blob for k, v in tree.items(store, files) if wanted(k.decode())]


def _hex(oid: ObjectId | None) -> str | None:
    return oid.hex() if oid is not None else None


@dataclass
class _Packs:
    """The remote's packs as this client sees them: merged index, index files not cached yet, and packs
    an interrupted push left without their index (with every pack's stat)."""

    index: RemoteIndex
    fresh: dict[str, bytes]
    unindexed: set[str]
    stats: dict[str, Stat]


def _packs(remote: Remote) -> _Packs:
    complete, unindexed = list_packs(remote.backend)
    indexes, fresh = load_indexes(remote.backend, remote.cache, complete)
    sizes = {name: stat.size for name, stat in complete.items()}
    return _Packs(RemoteIndex.merge(indexes, sizes), fresh, unindexed, complete)


def _fast_forward(store: ObjectStore, name: str, old: ObjectId, new: ObjectId) -> bool:
    if name.startswith(TAGS):
        return old == new
    return descends(store, new, old)


def push(
    store: ObjectStore,
    refs: RefStore,
    remote: Remote,
    names: Sequence[str],
    force: bool = False,
    progress: Meter = no_meter,
    pack_target: int = PACK_TARGET,
) -> PushResult:
    """Send the named local refs (and everything they reach) to the remote under the same names."""
    result = PushResult(remote.name)
    counted = CountingBackend(remote.backend)
    remote = Remote(remote.name, counted, remote.cache)
    read_format(remote.backend)
    remote_refs = read_refs(remote.backend)
    moves: dict[str, tuple[RemoteRef | None, ObjectId]] = {}
    for name in names:
        new = refs.read(name)
        if new is None:
            raise RemoteError(f"no such local ref: {name}")
        old = remote_refs.get(name)
        if old is not None and old.target == new:
            continue
        if old is not None and not force and not _fast_forward(store, name, old.target, new):
            raise NonFastForward(
                f"{name} on {remote.name} is at {old.target.hex()[:12]}, which {name} here does not contain: "
                f"run 'dsvc fetch {remote.name}' and integrate it, or push with --force"
            )
        moves[name] = (old, new)
    if not moves:
        result.requests = counted.requests
        return result
    ensure_format(remote.backend)
    closure = missing_closure(
        store, [new for _, new in moves.values()], [r.target for r in remote_refs.values()]
    )
    packs = _packs(remote)
    objects = packs.index.absent(list(closure.objects))
    blobs = packs.index.absent(list(closure.blobs))
    sent = upload_packs(
        store, remote.backend, objects, blobs, packs.unindexed, packs.stats, progress, pack_target
    )
    save_indexes(remote.cache, {**packs.fresh, **sent.indexes})
    mark_fetched(remote.cache, sent.indexes)  # their objects are here
    result.objects, result.bytes, result.packs = sent.objects, sent.bytes, sent.packs
    for name, (old, new) in moves.items():  # refs last, each by a conditional write
        try:
            if old is None:
                remote.backend.put(name, ref_bytes(new), create=True)
            else:
                remote.backend.put(name, ref_bytes(new), if_match=old.etag)
        except PreconditionFailed:
            raise NonFastForward(
                f"{name} on {remote.name} moved while pushing (another push won): "
                f"run 'dsvc fetch {remote.name}' and push again"
            ) from None
        result.updated[name] = (_hex(old.target if old else None), new.hex())
        if name.startswith(BRANCHES):
            _set(refs, remote.tracking(name), new, f"push: {remote.name}")
    result.requests = counted.requests
    return result


def _set(refs: RefStore, name: str, new: ObjectId, message: str) -> ObjectId | None:
    old = refs.read(name)
    if old != new:
        refs.set_if_equals(name, old, new, message)
    return old


def fetch(
    store: ObjectStore, refs: RefStore, remote: Remote, media: bool = True, progress: Meter = no_meter
) -> FetchResult:
    """Bring the remote's refs and the objects they reach (without media blobs unless media) here."""
    result = FetchResult(remote.name)
    if read_format(remote.backend) is None:
        result.empty = True
        return result
    remote_refs = read_refs(remote.backend)
    packs = _packs(remote)
    wanted = _not_here(store, packs, fetched_packs(remote.cache), media)
    local_tips = list(refs.list_refs().values())
    tips = [r.target for r in remote_refs.values()]
    with store.batch():
        result.objects, result.bytes = download(store, remote.backend, packs.index, wanted, progress)
        try:
            missing_closure(store, tips, local_tips, media=media)
        except ObjectMissing as exc:
            raise RemoteError(f"{remote.name} is incomplete: {exc}; nothing was fetched") from None
    save_indexes(remote.cache, packs.fresh)
    mark_fetched(remote.cache, packs.index.names)
    for name, ref in remote_refs.items():
        _land(store, refs, remote, name, ref.target, result)
    return result


def _not_here(store: ObjectStore, packs: _Packs, fetched: set[str], media: bool) -> list[ObjectId]:
    """Ids in packs not fetched before that this store lacks (media packs only with media)."""
    names = packs.index.names
    fresh = [i for i, name in enumerate(names) if name not in fetched]
    objects = packs.index.ids_in([i for i in fresh if not names[i].startswith(MEDIA_PACK)])
    blobs = packs.index.ids_in([i for i in fresh if names[i].startswith(MEDIA_PACK)]) if media else []
    have = store.contains_many(objects) + store.has_blobs(blobs)
    return [oid for oid, here in zip(objects + blobs, have, strict=True) if not here]


def _land(
    store: ObjectStore, refs: RefStore, remote: Remote, name: str, new: ObjectId, result: FetchResult
) -> None:
    """Record one fetched ref: branches as remote-tracking refs; tags, checkpoints and inference sets
    under their own names when new or a fast-forward (a local one that differs is left, and reported)."""
    if name.startswith(BRANCHES):
        local = remote.tracking(name)
        old = _set(refs, local, new, f"fetch: {remote.name}")
        if old != new:
            result.updated[local] = (_hex(old), new.hex())
        return
    if not name.startswith(SHARED):
        return
    old = refs.read(name)
    if old == new:
        return
    if old is None or (not name.startswith(TAGS) and descends(store, new, old)):
        refs.set_if_equals(name, old, new, f"fetch: {remote.name}")
        result.updated[name] = (_hex(old), new.hex())
    elif not descends(store, old, new):
        result.rejected[name] = (
            f"differs from {remote.name} (local {old.hex()[:12]}, remote {new.hex()[:12]})"
        )


def fetch_blobs(
    store: ObjectStore, remote: Remote, blobs: Sequence[ObjectId], progress: Meter = no_meter
) -> tuple[int, int]:
    """Fetch media blobs on demand (a clone without media): coalesced range reads, each one verified."""
    unique = list(dict.fromkeys(blobs))
    wanted = [b for b, here in zip(unique, store.has_blobs(unique), strict=True) if not here]
    if not wanted:
        return 0, 0
    packs = _packs(remote)
    with store.batch():
        found = download(store, remote.backend, packs.index, wanted, progress)
    save_indexes(remote.cache, packs.fresh)
    return found
