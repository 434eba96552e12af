"""The Merkle map: an ordered map `bytes -> bytes` stored as a prolly tree (DESIGN §4).

A key ends a node at level L when BLAKE3(salt_L || key), read as a u64, falls below 2^64 / F_L. Boundaries
depend on keys alone, so the same entries always give the same nodes and the same root whatever the order
of the edits that produced them (history independence), a relabel never moves a boundary, and equal
subtrees of two versions have equal ids, which `tree_diff.diff` skips.

Leaves hold sorted (key, value) pairs; internal nodes hold, per child, its last key, its id and the number
of entries below it. The conceptual "entries of level L+1" are the (last key, id, count) of the nodes of
level L; the root is the single node of the lowest level that has only one. Every function takes the store
it reads from and writes to; nodes are immutable, so nothing here holds state between calls.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import blake3

from dsvc import codec
from dsvc.errors import InvalidInput
from dsvc.hashing import ObjectId
from dsvc.objects import FORMAT_VERSION, Node
from dsvc.objects import load as load_object
from dsvc.store import ObjectStore

# Average entries per node. Small leaves keep the nodes touched by d scattered edits close to d even when d
# is a large fraction of the leaves; wide internal nodes keep the tree shallow (see docs/architecture.md).
LEAF_FANOUT = 32
INTERNAL_FANOUT = 256

EMPTY = Node(0, (), ())


def _threshold(level: int) -> int:
    return (1 << 64) // (LEAF_FANOUT if level == 0 else INTERNAL_FANOUT)


_SALTS = [b"dsvc-tree-%d:" % level for level in range(64)]
_THRESHOLDS = [_threshold(level) for level in range(64)]


def is_boundary(key: bytes, level: int) -> bool:
    """Tell whether key ends a node at this level."""
    digest = blake3.blake3(_SALTS[level] + key).digest(8)
    return int.from_bytes(digest, "little") < _THRESHOLDS[level]


class _Entry(NamedTuple):
    key: bytes
    value: bytes
    size: int
    boundary: bool


def _node_of(level: int, entries: list[_Entry]) -> Node:
    keys = tuple(e.key for e in entries)
    values = tuple(e.value for e in entries)
    return Node.make(level, keys, values, tuple(e.size for e in entries) if level else ())


class NodeLoader(Protocol):
    def __call__(self, oid: bytes, data: bytes | None = None) -> Node: ...


def node_loader(store: ObjectStore) -> NodeLoader:
    """A node reader that decodes each node once per operation (from `data` when the caller has read it)."""
    cache: dict[bytes, Node] = {}

    def load(oid: bytes, data: bytes | None = None) -> Node:
        node = cache.get(oid)
        if node is None and oid == EMPTY.id:
            node = EMPTY
        if node is None:
            data = store.get(ObjectId(oid)) if data is None else data
            value = codec.decode(data)
            if (
                len(value) == 6 and value[0] == Node.KIND and value[1] == FORMAT_VERSION
            ):  # the fast, usual case
                node = Node.make(*value[2:])
            else:
                node = load_object(data, Node)
            cache[oid] = node
        return node

    return load


def _root(store: ObjectStore, root: ObjectId) -> Node:
    """Read a root node; the empty map is known without the store, so empty roots need no object."""
    return EMPTY if root == EMPTY.id else store.get_object(root, Node)


# -- build ---------------------------------------------------------------------------------------------


class TreeBuilder:
    """Builds a map from entries in strictly increasing key order, in memory bounded by the tree's height.

    Use it inside `store.batch()` so the nodes land in one pack.
    The first node of each level is held back until a second one appears: if it stays alone it is the root
    and nothing above it is ever written.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._pending: list[list[_Entry]] = [[]]
        self._held: list[Node | None] = [None]
        self._emitted: list[int] = [0]
        self._last: bytes | None = None

    def add(self, key: bytes, value: bytes) -> None:
        if self._last is not None and key <= self._last:
            raise InvalidInput(f"tree keys must be strictly increasing: {key!r} after {self._last!r}")
        self._last = key
        self._push(0, _Entry(key, value, 1, is_boundary(key, 0)))

    def _push(self, level: int, entry: _Entry) -> None:
        if level == len(self._pending):
            self._pending.append([])
            self._held.append(None)
            self._emitted.append(0)
        self._pending[level].append(entry)
        if entry.boundary:
            self._emit(level)

    def _emit(self, level: int) -> None:
        node = _node_of(level, self._pending[level])
        self._pending[level] = []
        self._emitted[level] += 1
        if self._emitted[level] == 1:
            self._held[level] = node
            return
        held = self._held[level]
        if held is not None:
            self._held[level] = None
            self._write_and_push(level, held)
        self._write_and_push(level, node)

    def _write_and_push(self, level: int, node: Node) -> None:
        self.store.put_object(node, codec.NODE_LEVEL)
        key = node.keys[-1]
        self._push(level + 1, _Entry(key, node.id, node.size, is_boundary(key, level + 1)))

    def finish(self) -> ObjectId:
        """Flush the last node of every level and return the root id."""
        level = 0
        while True:
            if self._pending[level]:
                self._emit(level)
            if self._emitted[level] <= 1:
                root = self._held[level] or EMPTY
                return self.store.put_object(root, codec.NODE_LEVEL)
            level += 1


def build(store: ObjectStore, items: Iterable[tuple[bytes, bytes]]) -> ObjectId:
    """Build a map from (key, value) pairs sorted by key; return its root id."""
    with store.batch():
        builder = TreeBuilder(store)
        for key, value in items:
            builder.add(key, value)
        return builder.finish()


# -- reads ---------------------------------------------------------------------------------------------


def get(store: ObjectStore, root: ObjectId, key: bytes) -> bytes | None:
    """Return the value of key, or None: O(log N) node reads."""
    node = _root(store, root)
    while node.level:
        i = bisect_left(node.keys, key)
        if i == len(node.keys):
            return None
        node = store.get_object(ObjectId(node.values[i]), Node)
    i = bisect_left(node.keys, key)
    return node.values[i] if i < len(node.keys) and node.keys[i] == key else None


def length(store: ObjectStore, root: ObjectId) -> int:
    """Return the number of entries, from the root's counts: one node read."""
    return _root(store, root).size


def items(
    store: ObjectStore, root: ObjectId, start: bytes | None = None, stop: bytes | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) in key order for start <= key < stop, reading only the nodes that overlap."""
    stack = [_root(store, root)]
    while stack:
        node = stack.pop()
        if node.level == 0:
            lo = 0 if start is None else bisect_left(node.keys, start)
            for i in range(lo, len(node.keys)):
                if stop is not None and node.keys[i] >= stop:
                    return
                yield node.keys[i], node.values[i]
            continue
        lo = 0 if start is None else bisect_left(node.keys, start)
        hi = len(node.keys) if stop is None else min(len(node.keys), bisect_left(node.keys, stop) + 1)
        stack.extend(store.get_object(ObjectId(node.values[i]), Node) for i in range(hi - 1, lo - 1, -1))


# -- apply ---------------------------------------------------------------------------------------------


class _Cursor:
    """Walks the nodes of one level of an existing tree, in key order, through the levels above it."""

    def __init__(self, load: Callable[[bytes], Node], top: Node, level: int) -> None:
        self.load = load
        self.top = top
        self.level = level
        self.path: list[list[Any]] = []  # [node, index in it] from the top down
        self.last = False

    def seek(self, key: bytes) -> None:
        """Stand on the first node whose last key is >= key, or on the last node.

        Keys only grow between seeks, so the walk starts at the deepest node on the path that still covers
        the key instead of at the top: consecutive edits mostly fall under the same parent.
        """
        path = self.path
        depth = len(path) - 1
        while depth > 0 and key > path[depth][0].keys[-1]:
            depth -= 1
        node = path[depth][0] if path else self.top
        del path[max(depth, 0) :]
        while True:
            end = len(node.keys) - 1
            i = bisect_left(node.keys, key)
            if i > end:
                i = end
            path.append([node, i])
            if node.level == self.level + 1:
                self.last = all(j == len(n.keys) - 1 for n, j in path)
                return
            node = self.load(node.values[i])

    def current(self) -> tuple[bytes, bytes]:
        node, i = self.path[-1]
        return node.keys[i], node.values[i]

    def is_last(self) -> bool:
        return self.last

    def advance(self) -> None:
        depth = len(self.path) - 1
        while self.path[depth][1] == len(self.path[depth][0].keys) - 1:
            depth -= 1
        self.path[depth][1] += 1
        for d in range(depth + 1, len(self.path)):
            parent, i = self.path[d - 1]
            self.path[d] = [self.load(parent.values[i]), 0]
        self.last = all(i == len(node.keys) - 1 for node, i in self.path)


Edit = tuple[bytes, tuple[bytes, int] | None]


class _Run:
    """Entries of one level waiting to be cut into nodes, as parallel lists, with the keys that end nodes."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.counts: list[int] = []
        self.cuts: list[bytes] = []

    def extend(self, keys: list[bytes], values: list[bytes], counts: list[int], cuts: list[bytes]) -> None:
        self.keys += keys
        self.values += values
        self.counts += counts
        self.cuts += cuts

    def take_nodes(self) -> list[Node]:
        """Cut every node that ends at a boundary; keep the tail that does not end at one yet."""
        nodes = []
        start = 0
        for key in sorted(self.cuts):
            end = bisect_left(self.keys, key, start) + 1
            nodes.append(self._node(start, end))
            start = end
        del self.keys[:start], self.values[:start], self.counts[:start]
        self.cuts = []
        return nodes

    def _node(self, start: int, end: int) -> Node:
        counts = tuple(self.counts[start:end]) if self.level else ()
        return Node.make(self.level, tuple(self.keys[start:end]), tuple(self.values[start:end]), counts)

    def close(self) -> Node | None:
        """Return the tail as the level's last node, if there is one."""
        return self._node(0, len(self.keys)) if self.keys else None


def _merge(node: Node, last_node: bool, edits: list[Edit], start: int, bound: bytes | None, run: _Run) -> int:
    """Apply the edits at or below bound to one old node and append the result to run; return the next edit.

    Only inserted keys are hashed: an old node's last key is a boundary unless the node is its level's last,
    and no other key of it is.
    """
    level = node.level
    keys = list(node.keys)
    values = list(node.values)
    counts = list(node.counts) if level else [1] * len(keys)
    old_last = keys[-1] if keys else None
    cuts = []
    last_deleted = False
    j = start
    while j < len(edits) and (bound is None or edits[j][0] <= bound):
        key, change = edits[j]
        j += 1
        i = bisect_left(keys, key)
        present = i < len(keys) and keys[i] == key
        if change is None:
            if present:
                del keys[i], values[i], counts[i]
                last_deleted = last_deleted or key == old_last
        elif present:
            values[i], counts[i] = change
        else:
            keys.insert(i, key)
            values.insert(i, change[0])
            counts.insert(i, change[1])
            if is_boundary(key, level):
                cuts.append(key)
    if old_last is not None and not last_deleted and (not last_node or is_boundary(old_last, level)):
        cuts.append(old_last)
    run.extend(keys, values, counts, cuts)
    return j


def _splice(node: Node, edits: list[Edit], start: int, stop: int) -> Node | None:
    """Apply edits[start:stop] to a node whose boundaries they cannot move, or return None if they can.

    This is the common case (a relabel, an insert of a non-boundary key, a delete inside a node), so it
    avoids the general re-cutting: the node keeps its last key, so the level above sees one value change.
    """
    keys = node.keys
    level = node.level
    if stop - start == 1 and edits[start][1] is not None:  # a single set: the most common edit of all
        key, (value, count) = edits[start]  # type: ignore[misc]
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            values = node.values[:i] + (value,) + node.values[i + 1 :]  # noqa: RUF005 (concat is faster)
            counts = node.counts[:i] + (count,) + node.counts[i + 1 :] if level else ()  # noqa: RUF005
            return Node.make(level, keys, values, counts)
    new_keys, new_values = list(keys), list(node.values)
    new_counts = list(node.counts)
    for key, change in edits[start:stop]:
        i = bisect_left(new_keys, key)
        present = i < len(new_keys) and new_keys[i] == key
        if change is None:
            if present:
                if i == len(new_keys) - 1:
                    return None  # the node's last key, a boundary, goes away
                del new_keys[i], new_values[i]
                if level:
                    del new_counts[i]
        elif present:
            new_values[i] = change[0]
            if level:
                new_counts[i] = change[1]
        else:
            if i == len(new_keys) or is_boundary(key, level):
                return None  # a new last key or a new boundary: the node splits
            new_keys.insert(i, key)
            new_values.insert(i, change[0])
            if level:
                new_counts.insert(i, change[1])
    return Node.make(level, tuple(new_keys), tuple(new_values), tuple(new_counts))


def _rewrite_level(
    load: Callable[[bytes], Node], top: Node, level: int, edits: list[Edit], fresh: dict[bytes, Node]
) -> tuple[list[Edit], list[Node]]:
    """Apply edits to the entries of one level; return the edits this makes to the level above, and, when
    `level` is the old root's, every node of the new level."""
    up: dict[bytes, tuple[bytes, int] | None] = {}
    made: list[Node] = []
    cursor = None if level == top.level else _Cursor(load, top, level)
    edit_keys = [key for key, _ in edits]
    j = 0
    while j < len(edits):
        if cursor is not None:
            cursor.seek(edits[j][0])
            (dkey, did), last = cursor.current(), cursor.is_last()
            if not last:
                stop = bisect_right(edit_keys, dkey, j)
                old = load(did)
                spliced = _splice(old, edits, j, stop)
                if spliced is not None:
                    j = stop
                    if spliced.id != did:
                        fresh[spliced.id] = spliced
                        up[dkey] = (spliced.id, spliced.size)
                    continue
        consumed: list[tuple[bytes, bytes]] = []
        new_nodes: list[Node] = []
        run = _Run(level)
        while True:
            if cursor is None:
                dkey, did, last = (top.keys[-1] if top.keys else b""), bytes(top.id), True
            else:
                (dkey, did), last = cursor.current(), cursor.is_last()
            consumed.append((dkey, did))
            old = top if cursor is None else load(did)
            j = _merge(old, last, edits, j, None if last else dkey, run)
            new_nodes += run.take_nodes()
            if not run.keys or last:
                break
            assert cursor is not None
            cursor.advance()
        tail = run.close()
        if tail is not None:
            new_nodes.append(tail)
        made += new_nodes
        if [n.id for n in new_nodes] == [did for _, did in consumed]:
            continue
        for dkey, _ in consumed:
            up.setdefault(dkey, None)
        for node in new_nodes:
            fresh[node.id] = node
            up[node.keys[-1]] = (node.id, node.size)
    return sorted(up.items()), made


def _build_level(
    level: int, entries: list[tuple[bytes, tuple[bytes, int]]], fresh: dict[bytes, Node]
) -> list[Node]:
    """Chunk a whole level from scratch (levels above the old root)."""
    nodes: list[Node] = []
    pending: list[_Entry] = []
    for key, (value, count) in entries:
        pending.append(_Entry(key, value, count, is_boundary(key, level)))
        if pending[-1].boundary:
            nodes.append(_node_of(level, pending))
            pending = []
    if pending:
        nodes.append(_node_of(level, pending))
    for node in nodes:
        fresh[node.id] = node
    return nodes


def apply(store: ObjectStore, root: ObjectId, edits: Iterable[tuple[bytes, bytes | None]]) -> ObjectId:
    """Set (value) or delete (None) keys; return the new root. Writes O(d log N) nodes for d edits.

    The result is exactly the tree `build` makes from the final contents.
    """
    latest: dict[bytes, bytes | None] = {}
    for key, value in edits:
        latest[key] = value
    if not latest:
        return root
    load = node_loader(store)
    top = load(root)
    fresh: dict[bytes, Node] = {}
    level_edits: list[Edit] = [(k, None if v is None else (v, 1)) for k, v in sorted(latest.items())]
    level = 0
    new_top: Node | None = None
    while level <= top.level:
        level_edits, made = _rewrite_level(load, top, level, level_edits, fresh)
        if not level_edits:
            return root
        if level == top.level:
            break
        level += 1
    nodes = made
    while len(nodes) > 1:
        level += 1
        nodes = _build_level(level, [(n.keys[-1], (n.id, n.size)) for n in nodes], fresh)
    new_top = nodes[0] if nodes else EMPTY
    while new_top.level and len(new_top.keys) == 1:
        new_top = fresh.get(new_top.values[0]) or load(new_top.values[0])
    # Every new node below the root is referenced by a new node one level up, up to the single node of
    # the root's level; the single-child nodes above the root are the only new nodes not reachable.
    with store.batch():
        store.put_object(new_top, codec.NODE_LEVEL)
        for node in fresh.values():
            if node.level < new_top.level:
                store.put_object(node, codec.NODE_LEVEL)
    return new_top.id
