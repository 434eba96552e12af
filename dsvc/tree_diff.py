"""The difference of two Merkle maps (DESIGN §4), in time proportional to what changed.

Both trees are walked with one stack each. When both tops are nodes with equal ids they are skipped, the
higher one is expanded otherwise, and two nodes of one level are expanded together, leaving out what they
share; equal subtrees line up because node boundaries depend on keys only (see `tree`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import compress
from operator import ne
from typing import NamedTuple

from dsvc.hashing import ObjectId
from dsvc.objects import Node, NodeChildren
from dsvc.store import ObjectStore
from dsvc.tree import EMPTY, node_loader


class Change(NamedTuple):
    """One difference between two maps: old is None for an added key, new is None for a removed one."""

    key: bytes
    old: bytes | None
    new: bytes | None


def diff(
    store: ObjectStore, a: ObjectId, b: ObjectId, new_node: Callable[[ObjectId], None] | None = None
) -> Iterator[Change]:
    """Yield the changes from map a to map b in key order, skipping subtrees with equal ids.

    Reads O(d log N) nodes for d changes: both sides are expanded only where their heads differ.
    `new_node` is told the id of every node of b that had to be opened: the nodes b has and a lacks
    (what a push of b must send to a remote that has a).
    """
    if a == b:
        return
    load = node_loader(store)
    fetched: dict[bytes, bytes] = {}  # the roots' bytes, read once: for their level, then to expand them

    def level_of(root: bytes) -> int:
        if root != EMPTY.id:
            fetched[root] = store.get(ObjectId(root))
        return load(root, fetched.get(root)).level

    def read(oid: bytes) -> bytes:
        return fetched.pop(oid, None) or store.get(ObjectId(oid))

    # Stack items: (level, key, value); level -1 is an entry, otherwise value is a node id. Top = smallest.
    left: list[tuple[int, bytes, bytes]] = [(level_of(a), b"", a)]
    right: list[tuple[int, bytes, bytes]] = [(level_of(b), b"", b)]

    def identities(node: Node) -> tuple[object, ...]:
        """What makes an item of a node equal on both sides: a child's id, or a leaf entry's key and value."""
        return node.values if node.level else tuple(zip(node.keys, node.values, strict=True))

    def push(stack: list[tuple[int, bytes, bytes]], node: Node, kept: Iterable[int]) -> None:
        """Replace the node on top of the stack by its items at the given positions (descending)."""
        _, _, oid = stack.pop()
        if new_node is not None and stack is right and oid != EMPTY.id:
            new_node(ObjectId(oid))
        level = node.level - 1 if node.level else -1
        stack.extend((level, node.keys[i], node.values[i]) for i in kept)

    def expand(stack: list[tuple[int, bytes, bytes]]) -> None:
        node = load(stack[-1][2])
        push(stack, node, range(len(node.keys) - 1, -1, -1))

    def positions(ident: tuple[object, ...], keep: set[object]) -> list[int]:
        """Where the kept items are, descending; a few are found by C-level scans, many through a map."""
        if len(keep) <= 8:
            return sorted(map(ident.index, keep), reverse=True)
        where = dict(zip(ident, range(len(ident)), strict=True))
        return sorted(map(where.__getitem__, keep), reverse=True)

    def push_children(stack: list[tuple[int, bytes, bytes]], node: NodeChildren, kept: list[int]) -> None:
        """Replace the internal node on top of the stack by its children at the given positions
        (descending); the key of a node item is never compared, so it is left empty."""
        level, _, oid = stack.pop()
        if new_node is not None and stack is right:
            new_node(ObjectId(oid))
        stack.extend((level - 1, b"", node.child(i)) for i in kept)

    def expand_both() -> None:
        """Expand two nodes of one level, leaving out the items they share: equal child ids are equal
        subtrees, equal leaf entries are equal entries, on both sides, so dropping them changes no
        difference, and a node costs a few set operations instead of a comparison per item."""
        level, oa, ob = left[-1][0], left[-1][2], right[-1][2]
        raw_a = raw_b = None
        if level > 0:  # internal nodes with the same keys: compare their child id blocks, undecoded
            raw_a, raw_b = read(oa), read(ob)
            ca, cb = NodeChildren.read(raw_a), NodeChildren.read(raw_b)
            if ca is not None and cb is not None and ca.keys == cb.keys:
                differ = ca.changed(cb)
                push_children(left, ca, differ)
                push_children(right, cb, differ)
                return
        a, b = load(oa, raw_a), load(ob, raw_b)
        if a.keys == b.keys:  # the usual case (relabels): items pair up by position, compared in C
            last = len(a.keys) - 1
            differ = list(compress(range(last, -1, -1), map(ne, reversed(a.values), reversed(b.values))))
            push(left, a, differ)
            push(right, b, differ)
            return
        ia, ib = identities(a), identities(b)
        sa, sb = set(ia), set(ib)
        push(left, a, positions(ia, sa - sb))
        push(right, b, positions(ib, sb - sa))

    while left and right:
        la, ka, va = left[-1]
        lb, kb, vb = right[-1]
        if la >= 0 and lb >= 0 and va == vb:
            left.pop()
            right.pop()
        elif la < 0 and lb < 0:
            if ka == kb:
                left.pop()
                right.pop()
                if va != vb:
                    yield Change(ka, va, vb)
            elif ka < kb:
                left.pop()
                yield Change(ka, va, None)
            else:
                right.pop()
                yield Change(kb, None, vb)
        elif la == lb >= 0:
            expand_both()
        elif la >= lb:
            expand(left)
        else:
            expand(right)
    for stack, removed in ((left, True), (right, False)):
        while stack:
            if stack[-1][0] >= 0:
                expand(stack)
                continue
            _, key, value = stack.pop()
            yield Change(key, value, None) if removed else Change(key, None, value)
