"""Moving objects: packs built from the local store and uploaded in parallel (push), and objects read
from remote packs with coalesced range reads, verified and stored locally (fetch, lazy media).

Push packs are cut by a rule that depends only on the objects before the cut (sorted by id, a pack ends
once it reaches the target size), so a push interrupted after some packs were finished, re-run, builds
the remaining packs with the same names and skips those whose bytes are already there.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from dsvc import codec
from dsvc.atomic import Buffer
from dsvc.errors import CorruptObject, RemoteError
from dsvc.hashing import ObjectId, hash_bytes
from dsvc.remote.backends import Backend, Stat
from dsvc.remote.layout import MEDIA_PACK, OBJECT_PACK, RemoteIndex, pack_key
from dsvc.store import ObjectStore
from dsvc.store.packs import pack_bytes

PACK_TARGET = 64 << 20
WORKERS = 8
IN_FLIGHT = 4
# Bytes of range reads outstanding at once: bounds a fetch's memory whatever the sizes of its reads.
MAX_IN_FLIGHT_BYTES = 256 << 20
# Ranges closer than this are read as one (a request costs more than reading a few hundred KB more);
# a pack needed mostly is read whole.
COALESCE_GAP = 256 << 10
WHOLE_PACK_SHARE = 0.5
READ_BATCH = 4096

Meter = Callable[[int], None]


def no_meter(_: int) -> None:
    return None


@dataclass
class Uploaded:
    """What a push sent: object count, bytes and packs, with the index files (to cache locally)."""

    objects: int = 0
    bytes: int = 0
    packs: int = 0
    indexes: dict[str, builtins.bytes] = field(default_factory=dict)


def _cut(store: ObjectStore, oids: list[ObjectId], target: int) -> Iterator[list[tuple[ObjectId, Buffer]]]:
    """Sorted (id, stored bytes) runs of about target bytes each."""
    run: list[tuple[ObjectId, Buffer]] = []
    size = 0
    ordered = sorted(oids)
    for start in range(0, len(ordered), READ_BATCH):
        for oid, stored in store.stored_many(ordered[start : start + READ_BATCH]):
            run.append((oid, stored))
            size += len(stored)
            if size >= target:
                yield run
                run, size = [], 0
    if run:
        yield run


def upload_packs(
    store: ObjectStore,
    backend: Backend,
    objects: list[ObjectId],
    blobs: list[ObjectId],
    unindexed: set[str],
    sizes: Mapping[str, Stat] = {},
    progress: Meter = no_meter,
    target: int = PACK_TARGET,
) -> Uploaded:
    """Upload objects and blobs as packs, each pack before its index, several at a time. A pack left
    without its index by an interrupted push (in `unindexed`, with its stat in `sizes`) is not sent again
    when its bytes match."""
    done = Uploaded()

    def send(name: str, parts: list[Buffer], index: bytes, count: int) -> tuple[str, bytes, int, int]:
        sent = 0
        known = sizes.get(name)
        size = sum(map(len, parts))
        if name not in unindexed or known is None or known.size != size:
            backend.put(pack_key(name, "pack"), parts)
            sent += size
        backend.put(pack_key(name, "idx"), index)
        return name, index, count, sent + len(index)

    def harvest(future: Future[tuple[str, bytes, int, int]]) -> None:
        name, index, count, sent = future.result()
        done.indexes[name] = index
        done.objects += count
        done.bytes += sent
        done.packs += 1
        progress(count)

    pending: list[Future[tuple[str, bytes, int, int]]] = []
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="dsvc-push") as pool:
        try:
            for prefix, ids in ((OBJECT_PACK, objects), (MEDIA_PACK, blobs)):
                for run in _cut(store, ids, target):
                    name, parts, index = pack_bytes(run, prefix)
                    pending.append(pool.submit(send, name, parts, index, len(run)))
                    while len(pending) >= IN_FLIGHT:  # bound the pack bytes held in memory
                        harvest(pending.pop(0))
            while pending:
                harvest(pending.pop(0))
        finally:
            for future in pending:
                future.cancel()
    return done


@dataclass(frozen=True)
class Span:
    """One range read: a byte range of a pack and the entries (merged-index positions) inside it."""

    pack: int
    start: int
    end: int
    positions: tuple[int, ...]


def plan_reads(index: RemoteIndex, positions: np.ndarray) -> list[Span]:
    """Group entries by pack and merge near ranges; read most of a pack as one range."""
    spans: list[Span] = []
    order = positions[np.lexsort((index.offsets[positions], index.packs[positions]))]
    for pack in np.unique(index.packs[order]):
        mine = order[index.packs[order] == pack]
        total = int(index.lengths[mine].sum())
        if total >= WHOLE_PACK_SHARE * index.sizes[int(pack)]:
            start = int(index.offsets[mine].min())
            end = int((index.offsets[mine] + index.lengths[mine]).max())
            spans.append(Span(int(pack), start, end, tuple(int(p) for p in mine)))
            continue
        group: list[int] = []
        start = end = 0
        for pos in mine:
            offset, length = int(index.offsets[pos]), int(index.lengths[pos])
            if group and offset - end > COALESCE_GAP:
                spans.append(Span(int(pack), start, end, tuple(group)))
                group = []
            if not group:
                start = offset
            group.append(int(pos))
            end = max(end, offset + length)
        if group:
            spans.append(Span(int(pack), start, end, tuple(group)))
    return spans


def verified_entry(index: RemoteIndex, position: int, stored: Buffer, blob: bool) -> ObjectId:
    """Check one entry a remote sent: its kind is the one its pack holds, and it hashes to its id."""
    oid = index.id_at(position)
    try:
        is_blob = codec.stored_kind(stored) in codec.BLOB_HEADERS
        data = codec.unframe_view(stored)
    except CorruptObject as exc:
        raise RemoteError(f"object {oid.hex()} from the remote is corrupt: {exc}") from None
    if is_blob != blob:
        raise RemoteError(f"object {oid.hex()} from the remote is of the wrong kind for its pack")
    if hash_bytes(data) != oid:
        raise RemoteError(
            f"object {oid.hex()} from the remote does not match its id (its bytes were altered)"
        )
    return oid


def download(
    store: ObjectStore,
    backend: Backend,
    index: RemoteIndex,
    wanted: Sequence[bytes],
    progress: Meter = no_meter,
) -> tuple[int, int]:
    """Fetch wanted ids from the remote's packs, verify each, store them; return (objects, bytes read).
    Ids the remote does not have raise RemoteError."""
    positions = index.find(wanted)
    if (positions < 0).any():
        first = wanted[int(np.nonzero(positions < 0)[0][0])]
        raise RemoteError(f"the remote lacks object {first.hex()} that its refs reach")
    spans = plan_reads(index, np.unique(positions))

    def read(span: Span) -> tuple[Span, dict[ObjectId, Buffer], int]:
        name = index.names[span.pack]
        [data] = backend.get_ranges(pack_key(name, "pack"), [(span.start, span.end)])
        view = memoryview(data)  # entries are views of the read until the local pack is written
        entries: dict[ObjectId, Buffer] = {}
        for pos in span.positions:
            offset = int(index.offsets[pos]) - span.start
            stored = view[offset : offset + int(index.lengths[pos])]
            entries[verified_entry(index, pos, stored, name.startswith(MEDIA_PACK))] = stored
        return span, entries, len(data)

    count = total = 0
    buffered: dict[ObjectId, Buffer] = {}
    buffered_bytes = 0
    pending: list[Future[tuple[Span, dict[ObjectId, Buffer], int]]] = []
    in_flight = 0
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="dsvc-fetch") as pool:
        try:
            for span in [*spans, None]:
                if span is not None:
                    pending.append(pool.submit(read, span))
                    in_flight += span.end - span.start
                while pending and (span is None or in_flight >= MAX_IN_FLIGHT_BYTES):
                    _, entries, size = pending.pop(0).result()
                    in_flight -= size
                    buffered.update(entries)
                    buffered_bytes += size
                    count += len(entries)
                    total += size
                    progress(len(entries))
                    if buffered_bytes >= PACK_TARGET:  # one local pack per ~64 MiB, not one per read
                        store.put_stored(buffered)
                        buffered, buffered_bytes = {}, 0
        finally:
            for future in pending:
                future.cancel()
    store.put_stored(buffered)
    return count, total
