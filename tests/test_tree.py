"""The Merkle map: history independence, diff against a naive comparison, and cost in nodes touched."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsvc import codec, tree, tree_diff
from dsvc.errors import InvalidInput
from dsvc.objects import Node, NodeChildren
from dsvc.store import MemoryObjectStore
from tests import strategies as S


def _apply_naive(contents: dict[bytes, bytes], edits: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    out = dict(contents)
    for key, value in edits:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _naive_diff(
    a: dict[bytes, bytes], b: dict[bytes, bytes]
) -> list[tuple[bytes, bytes | None, bytes | None]]:
    return sorted((k, a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@settings(max_examples=150)
@given(S.maps, st.lists(S.edits, min_size=1, max_size=4))
def test_applying_edits_gives_the_root_of_a_fresh_build(initial: dict, batches: list) -> None:
    store = MemoryObjectStore()
    root = tree.build(store, sorted(initial.items()))
    contents = initial
    for edits in batches:
        root = tree.apply(store, root, edits)
        contents = _apply_naive(contents, edits)
        assert root == tree.build(store, sorted(contents.items()))
        assert list(tree.items(store, root)) == sorted(contents.items())
        assert tree.length(store, root) == len(contents)


@given(S.maps, S.edits, st.randoms())
def test_edit_order_does_not_matter(initial: dict, edits: list, rnd: random.Random) -> None:
    store = MemoryObjectStore()
    root = tree.build(store, sorted(initial.items()))
    final = _apply_naive(initial, edits)
    # the same final contents reached through single edits in a shuffled order
    steps = [(k, final.get(k)) for k in {k for k, _ in edits}]
    rnd.shuffle(steps)
    shuffled = root
    for step in steps:
        shuffled = tree.apply(store, shuffled, [step])
    assert shuffled == tree.apply(store, root, edits) == tree.build(store, sorted(final.items()))


@settings(max_examples=150)
@given(S.maps, S.edits)
def test_diff_equals_naive_set_difference(initial: dict, edits: list) -> None:
    store = MemoryObjectStore()
    a = tree.build(store, sorted(initial.items()))
    b = tree.apply(store, a, edits)
    final = _apply_naive(initial, edits)
    assert [tuple(c) for c in tree_diff.diff(store, a, b)] == _naive_diff(initial, final)
    assert [tuple(c) for c in tree_diff.diff(store, b, a)] == _naive_diff(final, initial)


@given(S.maps, S.maps)
def test_diff_of_unrelated_maps(a: dict, b: dict) -> None:
    store = MemoryObjectStore()
    ra, rb = tree.build(store, sorted(a.items())), tree.build(store, sorted(b.items()))
    assert [tuple(c) for c in tree_diff.diff(store, ra, rb)] == _naive_diff(a, b)


@given(S.maps, S.keys, S.keys)
def test_get_and_range(contents: dict, lo: bytes, hi: bytes) -> None:
    store = MemoryObjectStore()
    root = tree.build(store, sorted(contents.items()))
    for key, value in list(contents.items())[:20]:
        assert tree.get(store, root, key) == value
    assert tree.get(store, root, b"\xff" * 9) is None
    expected = sorted((k, v) for k, v in contents.items() if lo <= k < hi)
    assert list(tree.items(store, root, lo, hi)) == expected


def test_build_refuses_unsorted_keys() -> None:
    with pytest.raises(InvalidInput, match="increasing"):
        tree.build(MemoryObjectStore(), [(b"b", b"1"), (b"a", b"2")])
    with pytest.raises(InvalidInput):
        tree.build(MemoryObjectStore(), [(b"a", b"1"), (b"a", b"2")])


def test_empty_maps() -> None:
    store = MemoryObjectStore()
    empty = tree.build(store, [])
    assert tree.length(store, empty) == 0 and list(tree.items(store, empty)) == []
    one = tree.apply(store, empty, [(b"k", b"v")])
    assert tree.apply(store, one, [(b"k", None)]) == empty
    assert list(tree_diff.diff(store, empty, one)) == [tree_diff.Change(b"k", None, b"v")]


def _big(n: int) -> tuple[MemoryObjectStore, bytes, list[bytes]]:
    store = MemoryObjectStore(compression_level=0)
    keys = [b"%03d/frame_%07d.jpg" % (i // 1000, i) for i in range(n)]
    rng = random.Random(n)
    root = tree.build(store, ((k, rng.randbytes(32)) for k in keys))
    return store, root, keys


def test_a_relabel_rewrites_only_one_path() -> None:
    store, root, keys = _big(50_000)
    height = store.get_object(root, Node).level
    store.counters.reset()
    new = tree.apply(store, root, [(keys[12345], b"\x07" * 32)])
    assert store.counters.writes == height + 1
    store.counters.reset()
    assert [c.key for c in tree_diff.diff(store, root, new)] == [keys[12345]]
    assert store.counters.reads <= 2 * (height + 1)


def test_wide_nodes_are_compared_undecoded_and_any_other_layout_falls_back() -> None:
    """The child ids of an internal node are read from its bytes; a node the fast path cannot read (here
    child values that are not 32-byte ids) is decoded instead, and both give the naive difference."""
    store, root, keys = _big(50_000)
    node = store.get_object(root, Node)
    children = NodeChildren.read(node.to_bytes())
    assert children is not None and [children.child(i) for i in range(len(node.keys))] == list(node.values)
    assert children.keys == codec.encode(node.keys)
    leaf = Node.make(0, (b"a", b"b"), (b"x" * 32, b"y" * 32), ())
    odd = Node.make(1, (b"a", b"b"), (b"x" * 31, b"y" * 33), (1, 1))
    assert NodeChildren.read(leaf.to_bytes()) is None and NodeChildren.read(odd.to_bytes()) is None
    commit = codec.encode(["commit", 1, 2, (b"x" * 32,), (b"y" * 32,), (1,)])  # a node's shape, not a node
    assert NodeChildren.read(commit) is None
    edits = [(keys[i], bytes([i % 251]) * 32) for i in range(0, 50_000, 997)]
    new = tree.apply(store, root, edits)
    assert [c.key for c in tree_diff.diff(store, root, new)] == sorted(k for k, _ in edits)


def test_cost_follows_the_changes_not_the_size() -> None:
    """200k entries vs 20k, 100 scattered edits: nodes written and read stay nearly flat."""
    counts = []
    for n in (20_000, 200_000):
        store, root, keys = _big(n)
        rng = random.Random(7)
        edits = [(keys[rng.randrange(n)], rng.randbytes(32)) for _ in range(100)]
        store.counters.reset()
        new = tree.apply(store, root, edits)
        written = store.counters.writes
        store.counters.reset()
        assert sum(1 for _ in tree_diff.diff(store, root, new)) == len(dict(edits))
        counts.append((written, store.counters.reads))
    (w_small, r_small), (w_big, r_big) = counts
    assert w_big <= 1.5 * w_small and r_big <= 1.5 * r_small, counts
    assert r_big < 500, "a 100-frame change must read a few hundred nodes, not thousands"


def test_node_sizes_follow_the_fanout() -> None:
    store, _, _ = _big(100_000)
    nodes = [store.get_object(oid, Node) for oid in store.objects]
    leaves = [len(n.keys) for n in nodes if n.level == 0]
    internal = [len(n.keys) for n in nodes if n.level == 1]
    assert len(leaves) > 1000 and tree.LEAF_FANOUT / 2 <= sum(leaves) / len(leaves) <= tree.LEAF_FANOUT * 2
    assert max(leaves) < 16 * tree.LEAF_FANOUT
    assert sum(internal) == len(leaves)


@settings(max_examples=100)
@given(S.maps, S.edits)
def test_apply_writes_only_reachable_nodes(initial: dict, edits: list) -> None:
    store = MemoryObjectStore()
    root = tree.build(store, sorted(initial.items()))
    before = set(store.objects)
    new = tree.apply(store, root, edits)
    written = set(store.objects) - before
    reachable = set()
    stack = [new]
    while stack:
        oid = stack.pop()
        reachable.add(oid)
        node = store.get_object(oid, Node)
        if node.level:
            stack.extend(node.values)  # type: ignore[arg-type]
    assert written <= reachable, "apply wrote nodes the new root does not reach"
