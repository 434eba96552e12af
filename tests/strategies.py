"""Hypothesis strategies for dsvc's objects and maps."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from dsvc.model import RLE, Annotation, BBox
from dsvc.objects import Checkpoint, Commit, Frame, InferenceSet, Labels, Media, Node, Signature, Source

ids = st.binary(min_size=32, max_size=32)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
positive = st.floats(min_value=0, max_value=1e6, allow_nan=False)
text = st.text(max_size=12)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite | text
metadata: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    text,
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
signatures = st.builds(Signature, text, text, st.integers(0, 2**40), st.integers(-720, 840))

bboxes = st.builds(BBox, finite, finite, positive, positive)
rings = st.lists(finite, min_size=3, max_size=8).map(lambda xs: tuple(xs + xs))  # even length >= 6
rles = st.builds(lambda h, w: RLE(h, w, (h * w,)), st.integers(0, 50), st.integers(0, 50)) | st.builds(
    lambda h, w, c: RLE(h, w, c),
    st.integers(0, 50),
    st.integers(0, 50),
    st.text(alphabet="0123456789:;<=>?@ABC", max_size=10),
)
annotations = st.builds(
    Annotation,
    label=st.text(min_size=1, max_size=8),
    id=st.none() | st.integers(0, 2**40) | text,
    bbox=st.none() | bboxes,
    polygon=st.none() | st.lists(rings, min_size=1, max_size=2).map(tuple),
    mask=st.none() | rles,
    keypoints=st.none() | st.lists(finite, max_size=3).map(lambda xs: tuple(xs * 3)),
    iscrowd=st.booleans(),
    area=st.none() | positive,
    score=st.none() | finite,
    attributes=metadata,
)
media = st.builds(Media, text, st.none() | ids, st.none() | st.integers(0, 2**40), st.none() | text)
frames = st.builds(Frame, st.lists(media, max_size=3).map(tuple), metadata, text)
labels = st.builds(Labels, st.lists(annotations, max_size=4).map(tuple))
leaf_nodes = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=40)), max_size=8).map(
    lambda kv: Node(
        0, tuple(k for k, _ in sorted(dict(kv).items())), tuple(v for _, v in sorted(dict(kv).items()))
    )
)
internal_nodes = st.lists(
    st.tuples(st.binary(max_size=12), ids, st.integers(1, 2**40)), min_size=1, max_size=8
).map(lambda es: Node(1, tuple(k for k, _, _ in es), tuple(i for _, i, _ in es), tuple(c for _, _, c in es)))
commits = st.builds(
    Commit,
    st.dictionaries(st.sampled_from(["frames", "labels", "files"]), ids),
    st.lists(ids, max_size=2).map(tuple),
    signatures,
    text,
)
checkpoints = st.builds(Checkpoint, text, ids, text, metadata, signatures, st.booleans(), st.none() | ids)
inference_sets = st.builds(
    InferenceSet,
    text,
    text,
    ids,
    st.none() | ids,
    st.lists(ids, max_size=2).map(tuple),
    metadata,
    signatures,
    text,
)
sources = st.builds(Source, text, st.sampled_from(["coco", "yolo", "jsonl"]), text, metadata)
objects = frames | labels | leaf_nodes | internal_nodes | commits | checkpoints | inference_sets | sources

# Maps for the tree: small keys so that random edits collide with existing keys often.
keys = st.binary(min_size=1, max_size=6)
values = st.binary(min_size=1, max_size=8)
maps = st.dictionaries(keys, values, max_size=600)
edits = st.lists(st.tuples(keys, st.none() | values), max_size=200)
