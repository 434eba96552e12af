"""The diff engine: label matching, frame-level diff against a naive comparison of two full frame maps,
distribution deltas against a full recount, and the cost in tree nodes read."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsvc import tree
from dsvc.diff import (
    Comparison,
    Counts,
    FrameChange,
    LabelChange,
    box_iou,
    count,
    diff_frames,
    frame_change,
    label_changes,
    overlap,
)
from dsvc.hashing import ObjectId
from dsvc.model import Annotation, BBox
from dsvc.objects import Frame, Labels, Media
from dsvc.store import MemoryObjectStore, ObjectStore, OverlayObjectStore
from dsvc.workdir.stage import empty_roots
from dsvc.workdir.status import compare_roots
from tests.test_tree import _apply_naive

Dataset = Mapping[str, tuple[Frame, Labels]]


def box(x: float, y: float, w: float, h: float, label: str = "car", ident: int | None = None) -> Annotation:
    return Annotation(label, ident, BBox(x, y, w, h))


def kinds(changes: list[LabelChange]) -> list[tuple[str, object]]:
    return [(c.kind, (c.new or c.old).id) for c in changes]  # type: ignore[union-attr]


def roots_of(store: ObjectStore, data: Dataset) -> dict[str, ObjectId]:
    """Store a dataset's objects and build its frames and labels maps, as staging does."""
    items = sorted(data.items())
    roots = empty_roots()
    roots["frames"] = tree.build(store, ((k.encode(), store.put_object(f)) for k, (f, _) in items))
    roots["labels"] = tree.build(store, ((k.encode(), store.put_object(lab)) for k, (_, lab) in items))
    return roots


# -- labels --------------------------------------------------------------------------------------------


def test_box_iou() -> None:
    assert box_iou(BBox(0, 0, 10, 10), BBox(0, 0, 10, 10)) == 1.0
    assert box_iou(BBox(0, 0, 10, 10), BBox(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou(BBox(0, 0, 10, 10), BBox(20, 20, 5, 5)) == 0.0
    assert box_iou(BBox(3, 3, 0, 0), BBox(3, 3, 0, 0)) == 1.0


def test_labels_matched_by_id_report_each_kind_of_change() -> None:
    old = Labels(
        (
            box(0, 0, 10, 10, ident=1),
            box(50, 50, 10, 10, ident=2),
            box(100, 100, 10, 10, ident=3),
            box(200, 200, 10, 10, ident=4),
            box(300, 300, 10, 10, ident=5),
        )
    )
    new = Labels(
        (
            box(5, 0, 10, 10, ident=1),  # moved: same size
            box(50, 50, 20, 10, ident=2),  # resized
            box(100, 100, 10, 10, "truck", ident=3),  # class changed
            Annotation("car", 4, BBox(200, 200, 10, 10), attributes={"occluded": True}),
            box(400, 400, 10, 10, ident=6),  # 5 removed, 6 added
        )
    )
    changes = label_changes(old, new)
    assert kinds(changes) == [
        ("removed", 5),
        ("moved", 1),
        ("resized", 2),
        ("class_changed", 3),
        ("attributes_changed", 4),
        ("added", 6),
    ]
    assert changes[1].iou == pytest.approx(50 / 150)
    assert changes[2].iou == pytest.approx(0.5)
    assert (changes[3].old.label, changes[3].new.label) == ("car", "truck")  # type: ignore[union-attr]


def test_labels_without_ids_match_greedily_by_class_then_iou() -> None:
    old = Labels((box(0, 0, 10, 10), box(100, 0, 10, 10), box(300, 300, 10, 10, "dog")))
    new = Labels(
        (
            box(101, 0, 10, 10),  # the second box, nudged
            box(0, 0, 10, 10, "truck"),  # the first box, same place, another class
            box(600, 600, 10, 10, "dog"),  # far from the old dog: removed and added
        )
    )
    assert [c.kind for c in label_changes(old, new)] == ["removed", "moved", "class_changed", "added"]


def test_different_ids_are_different_labels_even_where_boxes_coincide() -> None:
    old = Labels((box(0, 0, 10, 10, ident=1),))
    new = Labels((box(0, 0, 10, 10, ident=2),))
    assert kinds(label_changes(old, new)) == [("removed", 1), ("added", 2)]
    assert label_changes(old, old) == []


# -- frames --------------------------------------------------------------------------------------------


def frame(n: int, weather: str = "clear", blob: bytes = b"") -> Frame:
    return Frame(
        (Media(f"img/{n}.jpg", ObjectId(blob.ljust(32, b"\0")) if blob else None),), {"weather": weather}
    )


def test_diff_frames_names_kinds_and_aspects() -> None:
    store = MemoryObjectStore()
    one = Labels((box(0, 0, 10, 10, ident=1),))
    a = {f"f{n}": (frame(n), one) for n in range(6)}
    b = dict(a)
    del b["f0"]
    b["f1"] = (frame(1, "rain"), one)
    b["f2"] = (frame(2, blob=b"x"), one)
    b["f3"] = (frame(3), Labels((box(5, 0, 10, 10, ident=1),)))
    b["f4"] = (frame(4, "fog", blob=b"y"), Labels(()))
    b["f9"] = (frame(9), one)
    a["f6"], b["f6"] = (Frame((), {"n": 1}), one), (Frame((), {"n": True}), one)  # equal in Python only
    ra, rb = roots_of(store, a), roots_of(store, b)
    found = {c.id: (c.kind, c.changes) for c in diff_frames(store, ra, rb)}
    assert found == {
        "f0": ("removed", ()),
        "f1": ("modified", ("metadata",)),
        "f2": ("modified", ("media",)),
        "f3": ("modified", ("labels",)),
        "f4": ("modified", ("media", "metadata", "labels")),
        "f6": ("modified", ("metadata",)),
        "f9": ("added", ()),
    }
    for fid, (kind, aspects) in found.items():
        single = frame_change(store, ra, rb, fid)
        assert single is not None and (single.kind, single.changes) == (kind, aspects)
    assert frame_change(store, ra, rb, "f5") is None
    assert list(overlap(store, ra, rb)) == ["f1", "f2", "f3", "f4", "f5", "f6"]
    cmp = Comparison(store, ra, rb, None, None)
    details = list(cmp.details())
    s = cmp.summary(details)
    assert (s.added, s.removed, s.modified, s.unchanged, s.overlap) == (1, 1, 5, 1, 6)
    assert [c.kind for c in details[3].labels] == ["moved"]
    changes = compare_roots(store, ra, rb)  # status reports the same frames
    assert changes.frames == {"added": ["f9"], "modified": ["f1", "f2", "f3", "f4", "f6"], "removed": ["f0"]}


frame_ids = st.sampled_from([f"{i:03d}/frame.jpg" for i in range(40)])
small_frames = st.builds(
    lambda n, w, b: frame(n, w, b),
    st.integers(0, 3),
    st.sampled_from(["clear", "rain", "fog"]),
    st.sampled_from([b"", b"a", b"b"]),
)
small_labels = st.lists(
    st.builds(
        box,
        st.integers(0, 3).map(float),
        st.integers(0, 3).map(float),
        st.just(5.0),
        st.just(5.0),
        st.sampled_from(["car", "dog"]),
        st.none() | st.integers(0, 4),
    ),
    max_size=3,
    unique_by=lambda a: a.id if a.id is not None else object(),
).map(lambda anns: Labels(tuple(anns)))
datasets = st.dictionaries(frame_ids, st.tuples(small_frames, small_labels), max_size=30)
edits = st.lists(st.tuples(frame_ids, st.none() | st.tuples(small_frames, small_labels)), max_size=20)


def naive(a: Dataset, b: Dataset) -> list[tuple[str, str, tuple[str, ...]]]:
    """Compare two full frame maps entry by entry."""
    out = []
    for fid in sorted(a.keys() | b.keys()):
        if fid not in a:
            out.append((fid, "added", ()))
        elif fid not in b:
            out.append((fid, "removed", ()))
        elif a[fid] != b[fid]:
            (fa, la), (fb, lb) = a[fid], b[fid]
            aspects = [
                name
                for name, differs in (
                    ("media", fa.media != fb.media),
                    ("metadata", fa.metadata != fb.metadata),
                    ("labels", la != lb),
                )
                if differs
            ]
            out.append((fid, "modified", tuple(aspects)))
    return out


@settings(max_examples=120)
@given(datasets, edits)
def test_diff_equals_a_naive_comparison_of_the_full_frame_maps(a: Dataset, changes: list) -> None:
    b = _apply_naive(a, changes)
    store = MemoryObjectStore()
    ra, rb = roots_of(store, a), roots_of(store, b)
    found = list(diff_frames(store, ra, rb))
    assert [(c.id, c.kind, c.changes) for c in found] == naive(a, b)
    assert list(overlap(store, ra, rb)) == sorted(a.keys() & b.keys())
    # The distribution of b, from a's and the changes, equals a full count of b.
    cmp = Comparison(store, ra, rb, None, None)
    moved = cmp.distribution(count(store, ra), list(cmp.details())).after
    assert _nonzero(moved) == count(store, rb)


def _nonzero(counts: Counts) -> Counts:
    """Counts without the zero entries a delta leaves behind."""
    return Counts(
        counts.frames,
        counts.labels,
        {k: v for k, v in counts.classes.items() if v},
        {k: {v: n for v, n in vs.items() if n} for k, vs in counts.metadata.items() if any(vs.values())},
        counts.dropped,
    )


def test_distribution_drops_high_cardinality_metadata() -> None:
    store = MemoryObjectStore()
    data = {f"f{n}": (Frame((), {"id": n, "weather": "clear"}), Labels(())) for n in range(100)}
    counts = count(store, roots_of(store, data))
    assert counts.metadata == {"weather": {"clear": 100}} and counts.dropped == {"id"}
    assert Counts.from_json(counts.to_json()) == counts


# -- cost ----------------------------------------------------------------------------------------------


def test_diff_of_200k_frames_differing_in_100_reads_a_few_hundred_nodes() -> None:
    """200,000 frames, 100 relabeled: the diff reads O(changes · log N) nodes, not the ~12,600 of the maps."""
    store = MemoryObjectStore()
    size, changed = 200_000, 100
    frames = [store.put_object(Frame((), {"weather": w})) for w in ("clear", "rain", "fog")]
    pool = [store.put_object(Labels((box(i, 0, 10, 10, ident=i),))) for i in range(1000)]
    keys = [b"%03d/frame_%07d.jpg" % (i // 1000, i) for i in range(size)]
    roots = empty_roots()
    roots["frames"] = tree.build(store, ((k, frames[i % 3]) for i, k in enumerate(keys)))
    roots["labels"] = tree.build(store, ((k, pool[i % 1000]) for i, k in enumerate(keys)))
    chosen = list(range(7, size, size // changed - 1))[:changed]  # distinct pooled labels
    picked = [keys[i] for i in chosen]
    relabels = [
        (keys[i], store.put_object(Labels((box(i % 1000, 5, 10, 10, "truck", ident=i % 1000),))))
        for i in chosen
    ]
    after = {**roots, "labels": tree.apply(store, roots["labels"], relabels)}
    store.counters.reset()
    found = list(diff_frames(store, roots, after))
    nodes = store.counters.reads
    assert [c.id for c in found] == [k.decode() for k in picked]
    assert all(c.kind == "modified" and c.changes == ("labels",) for c in found)
    assert nodes <= 400, nodes
    total_nodes = sum(1 for _ in _nodes(store, roots["labels"])) + sum(
        1 for _ in _nodes(store, after["labels"])
    )
    assert total_nodes > 12_000
    store.counters.reset()
    details = list(Comparison(store, roots, after, None, None).details())
    assert store.counters.reads == nodes + 2 * changed  # plus the two distinct labels objects of each frame
    assert [[c.kind for c in d.labels] for d in details] == [["moved", "class_changed"]] * changed


def _nodes(store: ObjectStore, root: ObjectId) -> list[ObjectId]:
    from dsvc.objects import Node

    out, stack = [], [root]
    while stack:
        oid = stack.pop()
        out.append(oid)
        node = store.get_object(oid, Node)
        if node.level:
            stack += [ObjectId(v) for v in node.values]
    return out


def test_overlay_store_reads_through_and_writes_only_to_memory() -> None:
    """The working tree is diffed through a scratch store: the repository's store gains nothing."""
    base = MemoryObjectStore()
    data = {f"f{n}": (frame(n), Labels(())) for n in range(50)}
    before = roots_of(base, data)
    stored = dict(base.objects)
    scratch = OverlayObjectStore(base)
    after = roots_of(scratch, {**data, "f3": (frame(3), Labels((box(0, 0, 1, 1),)))})
    found: list[FrameChange] = list(diff_frames(scratch, before, after))
    assert [(c.id, c.changes) for c in found] == [("f3", ("labels",))]
    assert base.objects == stored and scratch.objects
    assert scratch.get_object(ObjectId(tree.get(scratch, before["labels"], b"f3") or b""), Labels) == Labels(
        ()
    )
