"""What a remote lacks: the objects and blobs reachable from what is pushed but not from what the remote's
refs already reach, found by walking the Merkle maps (DESIGN §10): no listing, no per-object probes.

History objects (commits, checkpoint versions, inference sets) reachable from the remote's refs are
known to be there. Each new commit's column maps are diffed against its first parent's, so a commit that
relabels 1% of the frames costs O(changes): equal subtrees are skipped, and only the nodes and leaf
values of the new side are visited. The same walk checks a fetch: every object it visits must be
present, so an incomplete remote is caught before any ref moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dsvc import tree, tree_diff
from dsvc.errors import ObjectMissing
from dsvc.fsck import COLUMN_VALUES, children
from dsvc.hashing import ObjectId
from dsvc.history import load_any
from dsvc.objects import Checkpoint, Commit, InferenceSet, StoredObject, decode_object
from dsvc.store import ObjectStore

HISTORY_KINDS = (Commit, Checkpoint, InferenceSet)
# Columns whose leaf values are objects that refer to nothing further (see fsck.children).
SELF_CONTAINED = frozenset({"labels", "sources", "predictions"})
BATCH = 4096


@dataclass
class Closure:
    """Objects and blobs to transfer, each once, in the order found."""

    objects: dict[ObjectId, None] = field(default_factory=dict)
    blobs: dict[ObjectId, None] = field(default_factory=dict)


def history_parents(obj: StoredObject) -> Iterator[ObjectId]:
    """The history objects an object descends from: what fast-forward is judged by."""
    if isinstance(obj, Commit):
        yield from obj.parents
    elif isinstance(obj, Checkpoint):
        yield obj.commit
        if obj.previous is not None:
            yield obj.previous
    elif isinstance(obj, InferenceSet):
        yield from obj.parents
        if obj.checkpoint is not None:
            yield obj.checkpoint


def reachable_history(store: ObjectStore, starts: Iterable[ObjectId]) -> set[ObjectId]:
    """Every history object reachable from starts that this store has (absent ones are skipped)."""
    seen: set[ObjectId] = set()
    stack = list(starts)
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        try:
            obj = load_any(store, oid)
        except ObjectMissing:
            continue
        seen.add(oid)
        if isinstance(obj, HISTORY_KINDS):
            stack.extend(history_parents(obj))
    return seen


def descends(store: ObjectStore, new: ObjectId, old: ObjectId) -> bool:
    """Tell whether old is new or one of its history ancestors (a fast-forward from old to new)."""
    return old in reachable_history(store, [new])


def missing_closure(
    store: ObjectStore, wants: Iterable[ObjectId], haves: Iterable[ObjectId], media: bool = True
) -> Closure:
    """What is reachable from wants and not from haves; raises ObjectMissing if this store lacks any of
    it (blobs are checked only with media)."""
    known = reachable_history(store, haves)
    out = Closure()
    seen: set[ObjectId] = set(known)
    stack = [oid for oid in wants if oid not in known]
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        obj = load_any(store, oid)
        out.objects[oid] = None
        if isinstance(obj, Commit):
            stack.extend(obj.parents)
            base = _first_parent_roots(store, obj)
            for column, root in obj.roots.items():
                _map_difference(store, base.get(column), root, column, out)
        elif isinstance(obj, InferenceSet):
            stack.extend(history_parents(obj))
            base_root = _parent_predictions(store, obj)
            _map_difference(store, base_root, obj.predictions, "predictions", out)
        elif isinstance(obj, Checkpoint):
            stack.extend(history_parents(obj))
    if media:
        _check_blobs(store, list(out.blobs))
    return out


def _first_parent_roots(store: ObjectStore, commit: Commit) -> dict[str, ObjectId]:
    if not commit.parents:
        return {}
    try:
        return dict(store.get_object(commit.parents[0], Commit).roots)
    except ObjectMissing:
        return {}


def _parent_predictions(store: ObjectStore, inference: InferenceSet) -> ObjectId | None:
    if not inference.parents:
        return None
    try:
        return store.get_object(inference.parents[0], InferenceSet).predictions
    except ObjectMissing:
        return None


def _map_difference(
    store: ObjectStore, base: ObjectId | None, root: ObjectId, column: str, out: Closure
) -> None:
    """Add the nodes of map root that base lacks, and everything its new leaf values reach."""

    def add_node(oid: ObjectId) -> None:
        out.objects[oid] = None

    leaves: list[ObjectId] = []
    for change in tree_diff.diff(store, base or tree.EMPTY.id, root, new_node=add_node):
        if change.new is None or column not in COLUMN_VALUES:
            continue
        for kind, oid in COLUMN_VALUES[column](change.new):
            if kind == "blob":
                out.blobs[oid] = None
            elif oid not in out.objects:
                out.objects[oid] = None
                leaves.append(oid)
    for start in range(0, len(leaves), BATCH):
        _leaf_closure(store, leaves[start : start + BATCH], column, out)


def _leaf_closure(store: ObjectStore, oids: list[ObjectId], column: str, out: Closure) -> None:
    """Check a batch of a map's leaf values are here and add what they refer to (a frame's media).

    Labels, sources and predictions refer to nothing further, so only their presence is checked (one
    vectorised lookup) instead of decoding each."""
    if column in SELF_CONTAINED:
        absent = [oid for oid, found in zip(oids, store.contains_many(oids), strict=True) if not found]
        if absent:
            raise ObjectMissing(f"object {absent[0].hex()} is not in the store")
        return
    for _, data in store.get_many(oids):
        for kind, child, _ in children(decode_object(data), None):
            if kind == "blob":
                out.blobs[child] = None
            elif child not in out.objects:  # no leaf kind refers to further objects today
                out.objects[child] = None
                _leaf_closure(store, [child], "", out)


def _check_blobs(store: ObjectStore, blobs: list[ObjectId]) -> None:
    """Raise ObjectMissing unless every blob is here."""
    for start in range(0, len(blobs), BATCH):
        chunk = blobs[start : start + BATCH]
        for oid, here in zip(chunk, store.has_blobs(chunk), strict=True):
            if not here:
                raise ObjectMissing(f"blob {oid.hex()} is not in the store")
