"""Annotation formats: import -> export -> import is the identity, COCO renders back as pycocotools reads it,
and every kind of bad input is refused with one message naming the file and the place."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

from benchmarks import datagen
from dsvc.errors import InvalidInput, UnsupportedFormat
from dsvc.formats import FORMATS, FrameRecord, ParsedSource, detect_format, get_format, jsonsplit
from dsvc.formats.common import check_name
from dsvc.hashing import ObjectId
from dsvc.model import RLE, Annotation, BBox, trusted_annotation, trusted_bbox, trusted_rle
from dsvc.objects import Frame, Labels, Media, Source, decode_object, load
from tests import strategies as S

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "coco_val2014_100"
FAKE_BLOB = ObjectId(bytes(32))
Doc = dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["whole", "chunked"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a COCO test twice: its annotations read in one chunk, and one annotation per chunk."""
    if request.param == "chunked":
        monkeypatch.setattr(jsonsplit, "CHUNK", 1)


def _stored(obj: Any) -> Any:
    """The object as the store gives it back (arrays become tuples), so render sees what checkout sees."""
    return decode_object(obj.to_bytes())


def _frames(parsed: ParsedSource, media: str) -> list[tuple[str, Frame, Labels]]:
    """Frames and labels as the working-directory layer builds them: a blob per local media file, and a
    url-only media entry where the source names a URL."""
    rows = []
    for rec in parsed.frames:
        media_refs = [Media(path, FAKE_BLOB, 0) for path in rec.media]
        if rec.url is not None:
            media_refs.append(Media(f"{media}/{rec.id}" if media else rec.id, url=rec.url))
        rows.append((rec.id, _stored(Frame(tuple(media_refs), rec.metadata)), _stored(rec.labels)))
    return rows


def _render(fmt: str, parsed: ParsedSource, source_path: str, media: str) -> dict[str, bytes]:
    source = load(Source(source_path, fmt, media, parsed.metadata).to_bytes(), Source)
    return get_format(fmt).render(source, _frames(parsed, media))


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _reimport(fmt: str, parsed: ParsedSource, source_path: str, media: str, root: Path) -> ParsedSource:
    """Render into `root` (which holds the same media) and parse again."""
    _write(root, _render(fmt, parsed, source_path, media))
    return get_format(fmt).parse(source_path, media, root)


def _assert_identity(fmt: str, source_path: str, media: str, root: Path, new_root: Path) -> ParsedSource:
    first = get_format(fmt).parse(source_path, media, root)
    again = _reimport(fmt, first, source_path, media, new_root)
    assert again.frames == first.frames
    assert again.metadata == first.metadata
    return first


def _link_media(root: Path, new_root: Path, media: str) -> None:
    (new_root / media).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(root / media, new_root / media)


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _assert_same_coco(original: Path, rendered: Path) -> None:
    a, b = _coco(original), _coco(rendered)
    assert a.imgs == b.imgs
    assert a.anns == b.anns
    assert a.cats == b.cats
    assert a.dataset.get("info") == b.dataset.get("info")
    assert a.dataset.get("licenses") == b.dataset.get("licenses")


def _bad(exc: pytest.ExceptionInfo[InvalidInput], path: str, where: str) -> None:
    """The error names the file and the place, in its fields and in its one-line message."""
    assert exc.value.path == path
    assert where in (exc.value.location or "")
    assert path in str(exc.value) and where in str(exc.value)
    assert "\n" not in str(exc.value)


# --- COCO -------------------------------------------------------------------------------------------------


def _coco_doc() -> Doc:
    """A small COCO file with every feature the format has."""
    return {
        "info": {"description": "tiny", "year": 2024},
        "licenses": [{"id": 1, "name": "CC0", "url": "https://example.org"}],
        "images": [
            {"id": 7, "file_name": "b/two.jpg", "width": 8, "height": 6, "license": 1, "weather": "fog"},
            {"id": 3, "file_name": "a/one.jpg", "width": 4, "height": 2, "date_captured": "2024-01-01"},
            {"id": 5, "file_name": "gone.jpg", "width": 4, "height": 4, "coco_url": "http://x/gone.jpg"},
            {"id": 9, "file_name": "flickr.jpg", "width": 4, "height": 4, "flickr_url": "http://f/9.jpg"},
        ],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0,
             "segmentation": [[1, 2, 4, 2, 4, 6], [0.5, 0.5, 1.5, 0.5, 1.5, 1.5]], "occluded": True},
            {"id": 10, "image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 2.5, 1.5], "area": 3.75,
             "iscrowd": 1, "segmentation": {"size": [6, 8], "counts": [0, 48]}},
            {"id": 12, "image_id": 3, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [2, 4], "counts": "04"}},
            {"id": 13, "image_id": 3, "category_id": 2, "bbox": [0, 0, 1, 1], "iscrowd": 0,
             "segmentation": [], "keypoints": [1, 1, 2, 0, 0, 0], "num_keypoints": 1},
            {"id": 14, "image_id": 5, "category_id": 1, "bbox": [0, 0, 0, 0], "iscrowd": 0, "score": 0.5},
        ],
        "categories": [
            {"id": 2, "name": "person", "supercategory": "human", "keypoints": ["nose", "eye"],
             "skeleton": [[1, 2]]},
            {"id": 1, "name": "car", "supercategory": "vehicle"},
        ],
        "extra_top_level": {"kept": [1, 2]},
    }  # fmt: skip


def _coco_root(tmp_path: Path, doc: Doc, name: str = "root") -> Path:
    root = tmp_path / name
    _write(root, {"ann/coco.json": orjson.dumps(doc), "img/b/two.jpg": b"2", "img/a/one.jpg": b"1"})
    return root


@pytest.mark.usefixtures("chunking")
def test_coco_parses_images_annotations_and_dataset_fields(tmp_path: Path) -> None:
    parsed = get_format("coco").parse("ann/coco.json", "img", _coco_root(tmp_path, _coco_doc()))
    by_id = {f.id: f for f in parsed.frames}
    assert [f.id for f in parsed.frames] == ["a/one.jpg", "b/two.jpg", "flickr.jpg", "gone.jpg"]
    two = by_id["b/two.jpg"]
    assert two.media == ("img/b/two.jpg",) and two.url is None
    assert two.metadata == {"id": 7, "width": 8, "height": 6, "license": 1, "weather": "fog"}
    first, second = two.labels.annotations
    assert (first.id, first.label, first.bbox, first.area) == (11, "person", BBox(1, 2, 3, 4), 12.0)
    assert first.polygon == ((1.0, 2.0, 4.0, 2.0, 4.0, 6.0), (0.5, 0.5, 1.5, 0.5, 1.5, 1.5))
    assert first.attributes == {"occluded": True} and not first.iscrowd
    assert second.mask == RLE(6, 8, (0, 48)) and second.iscrowd and second.label == "car"
    one = by_id["a/one.jpg"].labels.annotations
    assert one[0].mask == RLE(2, 4, "04") and one[0].bbox is None and one[0].area is None
    assert one[1].keypoints == (1.0, 1.0, 2.0, 0.0, 0.0, 0.0)
    assert one[1].attributes == {"segmentation": (), "num_keypoints": 1}  # as decoded from the store
    assert by_id["gone.jpg"].media == () and by_id["gone.jpg"].url == "http://x/gone.jpg"
    assert by_id["flickr.jpg"].url == "http://f/9.jpg"
    assert by_id["gone.jpg"].labels.annotations[0].score == 0.5
    assert parsed.metadata["categories"] == _coco_doc()["categories"]
    assert parsed.metadata["info"] == {"description": "tiny", "year": 2024}
    assert parsed.metadata["extra_top_level"] == {"kept": [1, 2]}
    assert "images" not in parsed.metadata and "annotations" not in parsed.metadata


def test_coco_round_trip_and_pycocotools_equality(tmp_path: Path) -> None:
    root = _coco_root(tmp_path, _coco_doc())
    new_root = tmp_path / "new"
    _link_media(root, new_root, "img")
    _assert_identity("coco", "ann/coco.json", "img", root, new_root)
    _assert_same_coco(root / "ann/coco.json", new_root / "ann/coco.json")


def test_coco_render_orders_images_by_id_and_annotations_by_image_then_source(tmp_path: Path) -> None:
    root = _coco_root(tmp_path, _coco_doc())
    parsed = get_format("coco").parse("ann/coco.json", "img", root)
    doc = orjson.loads(_render("coco", parsed, "ann/coco.json", "img")["ann/coco.json"])
    assert [i["id"] for i in doc["images"]] == [3, 5, 7, 9]
    assert [a["id"] for a in doc["annotations"]] == [12, 13, 14, 11, 10]
    assert [c["id"] for c in doc["categories"]] == [2, 1]
    assert list(doc)[:5] == ["info", "licenses", "images", "annotations", "categories"]


def test_coco_keeps_iscrowd_absent_where_it_was(tmp_path: Path) -> None:
    for keep in ({11, 10, 12, 13, 14}, {10, 12}, set()):
        doc = _coco_doc()
        for ann in doc["annotations"]:
            if ann["id"] not in keep:
                ann.pop("iscrowd", None)
        root = _coco_root(tmp_path, doc, f"root{len(keep)}")
        new_root = tmp_path / f"new{len(keep)}"
        _link_media(root, new_root, "img")
        _assert_identity("coco", "ann/coco.json", "img", root, new_root)
        _assert_same_coco(root / "ann/coco.json", new_root / "ann/coco.json")


def test_coco_image_info_file_without_annotations_key(tmp_path: Path) -> None:
    doc = _coco_doc()
    del doc["annotations"]
    root = _coco_root(tmp_path, doc)
    _link_media(root, tmp_path / "new", "img")
    _assert_identity("coco", "ann/coco.json", "img", root, tmp_path / "new")
    assert "annotations" not in orjson.loads((tmp_path / "new/ann/coco.json").read_bytes())


@pytest.mark.usefixtures("chunking")
def test_coco_generated_dataset_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "gen"
    datagen.generate(root, 300, media_size=datagen.MIN_MEDIA_SIZE)
    new_root = tmp_path / "new"
    _link_media(root, new_root, "images")
    parsed = _assert_identity("coco", "annotations/instances.json", "images", root, new_root)
    assert all(f.media == (f"images/{f.id}",) and f.url is None for f in parsed.frames)
    assert all(_stored(f.labels).id == f.labels.id for f in parsed.frames)
    _assert_same_coco(root / "annotations/instances.json", new_root / "annotations/instances.json")


@pytest.mark.usefixtures("chunking")
def test_coco_real_fixture_round_trip(tmp_path: Path) -> None:
    if not (FIXTURE / "instances_val2014_100.json").is_file():
        pytest.skip("shared COCO fixture not present")
    parsed = _assert_identity("coco", "instances_val2014_100.json", "images", FIXTURE, tmp_path)
    assert len(parsed.frames) == 100 and sum(len(f.labels.annotations) for f in parsed.frames) == 839
    assert all(
        f.media == () and f.url and f.url.startswith("http://images.cocodataset.org/") for f in parsed.frames
    )
    assert sum(a.iscrowd and a.mask is not None for f in parsed.frames for a in f.labels.annotations) == 9
    _assert_same_coco(FIXTURE / "instances_val2014_100.json", tmp_path / "instances_val2014_100.json")


_names = st.text("abcxyz_-", min_size=1, max_size=6)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | S.finite | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)
_extra = st.dictionaries(st.sampled_from(["note", "occluded", "source", "z"]), _json, max_size=2)
_coord = st.integers(0, 500) | st.floats(0, 500, allow_nan=False)
_keypoints = st.lists(_coord, max_size=2).map(lambda v: v * 3)


@st.composite
def coco_docs(draw: st.DrawFn) -> Doc:
    """Random COCO files: gapped ids, random boxes, rings, masks, optional fields and extra fields."""
    cat_names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    cat_ids = draw(
        st.lists(st.integers(1, 99), min_size=len(cat_names), max_size=len(cat_names), unique=True)
    )
    files = draw(st.lists(st.lists(_names, min_size=1, max_size=2).map("/".join), max_size=5, unique=True))
    image_ids = draw(
        st.lists(st.integers(0, 10**6) | _names, min_size=len(files), max_size=len(files), unique=True)
    )
    images = [
        {"id": i, "file_name": f"{f}.jpg", **draw(_extra)} for i, f in zip(image_ids, files, strict=True)
    ]
    annotations = []
    for ann_id in draw(st.lists(st.integers(0, 10**9), max_size=10 if images else 0, unique=True)):
        ann: Doc = {
            "id": ann_id,
            "image_id": draw(st.sampled_from(image_ids)),
            "category_id": draw(st.sampled_from(cat_ids)),
        }
        if draw(st.booleans()):
            ann["bbox"] = draw(st.lists(_coord, min_size=4, max_size=4))
        kind = draw(st.sampled_from(["poly", "rle", "rle_str", "empty", "none"]))
        if kind == "poly":
            ann["segmentation"] = draw(
                st.lists(
                    st.lists(_coord, min_size=3, max_size=5).map(lambda v: v + v), min_size=1, max_size=2
                )
            )
        elif kind == "rle":
            h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
            ann["segmentation"] = {"size": [h, w], "counts": [h * w]}
        elif kind == "rle_str":
            ann["segmentation"] = {"size": [3, 3], "counts": draw(st.text("0123456789:;<=>?", max_size=6))}
        elif kind == "empty":
            ann["segmentation"] = []
        optional = {
            "area": _coord,
            "iscrowd": st.sampled_from([0, 1]),
            "score": S.finite,
            "keypoints": _keypoints,
        }
        for key, value in optional.items():
            if draw(st.booleans()):
                ann[key] = draw(value)
        annotations.append({**ann, **draw(_extra)})
    categories = [
        {"id": i, "name": n, "supercategory": draw(_names)} for i, n in zip(cat_ids, cat_names, strict=True)
    ]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    extra = draw(st.dictionaries(st.sampled_from(["info", "licenses", "other"]), _json, max_size=3))
    return {**doc, **extra}


@settings(max_examples=60)
@given(doc=coco_docs(), chunk=st.sampled_from([jsonsplit.CHUNK, 1, 200]))
def test_coco_round_trip_of_random_datasets(
    tmp_path_factory: pytest.TempPathFactory, doc: Doc, chunk: int
) -> None:
    root = tmp_path_factory.mktemp("coco")
    _write(root, {"in/coco.json": orjson.dumps(doc)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonsplit, "CHUNK", chunk)
        parsed = _assert_identity("coco", "in/coco.json", "media", root, root / "out")
    _assert_same_coco(root / "in/coco.json", root / "out/in/coco.json")
    assert all(
        _stored(f.labels).id == f.labels.id for f in parsed.frames
    )  # parse builds what the store keeps


def _mutate(change: Callable[[Doc], Any]) -> bytes:
    doc = _coco_doc()
    change(doc)
    return orjson.dumps(doc)


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """A change that sets doc[section][index][field] = value."""
    section, index, field = path.split(".")

    def change(doc: Doc) -> None:
        doc[section][int(index)][field] = value

    return change


def _delete(path: str) -> Callable[[Doc], None]:
    section, index, field = path.split(".")
    return lambda doc: doc[section][int(index)].pop(field)


COCO_BAD: list[tuple[str, bytes, str]] = [
    ("truncated", orjson.dumps(_coco_doc())[:-40], "line 1, column"),
    ("malformed", b'{"images": [\n  {"id": 1,}\n]}', "line 2, column"),
    ("nan", b'{"images": [], "annotations": [{"bbox": [NaN, 1, 2, 3]}]}', "line 1, column 42"),
    ("infinity", b'{"images": [{"id": Infinity}]}', "line 1, column 20"),
    ("top-level list", b"[]", ""),
    ("images not a list", b'{"images": {}}', "images"),
    ("annotations not a list", b'{"images": [], "annotations": {}}', "annotations"),
    ("categories not a list", b'{"images": [], "categories": 3}', "categories"),
    ("no images", b'{"annotations": []}', ""),
    ("unknown image id", _mutate(_set("annotations.3.image_id", 999)), "annotations[3].image_id"),
    ("unknown category id", _mutate(_set("annotations.1.category_id", 999)), "annotations[1].category_id"),
    ("negative bbox", _mutate(_set("annotations.4.bbox", [0, 0, -1, 2])), "annotations[4].bbox"),
    ("string in bbox", _mutate(_set("annotations.4.bbox", [0, 0, "1", 2])), "annotations[4].bbox[2]"),
    ("bool in bbox", _mutate(_set("annotations.0.bbox", [True, 0, 1, 2])), "annotations[0].bbox[0]"),
    ("short bbox", _mutate(_set("annotations.2.bbox", [0, 0, 1])), "annotations[2].bbox"),
    ("null bbox", _mutate(_set("annotations.2.bbox", None)), "annotations[2].bbox"),
    (
        "odd ring",
        _mutate(_set("annotations.0.segmentation", [[1, 2, 3, 4, 5, 6, 7]])),
        "annotations[0].segmentation",
    ),
    (
        "string in ring",
        _mutate(_set("annotations.0.segmentation", [[1, 2, 3, 4, 5, "6"]])),
        "annotations[0].segmentation[0][5]",
    ),
    (
        "bad rle",
        _mutate(_set("annotations.1.segmentation", {"size": [6, 8], "counts": [1, 2]})),
        "annotations[1].segmentation",
    ),
    ("bad segmentation", _mutate(_set("annotations.1.segmentation", 5)), "annotations[1].segmentation"),
    ("negative area", _mutate(_set("annotations.0.area", -1)), "annotations[0].area"),
    ("string area", _mutate(_set("annotations.0.area", "big")), "annotations[0].area"),
    ("bad iscrowd", _mutate(_set("annotations.0.iscrowd", 2)), "annotations[0].iscrowd"),
    ("bad keypoints", _mutate(_set("annotations.3.keypoints", [1, 2])), "annotations[3].keypoints"),
    ("bool score", _mutate(_set("annotations.4.score", False)), "annotations[4].score"),
    ("float annotation id", _mutate(_set("annotations.2.id", 1.5)), "annotations[2].id"),
    ("annotation not an object", _mutate(lambda d: d["annotations"].append(3)), "annotations[5]"),
    ("missing annotation id", _mutate(_delete("annotations.2.id")), "annotations[2]"),
    ("missing image_id", _mutate(_delete("annotations.2.image_id")), "annotations[2]"),
    ("missing category_id", _mutate(_delete("annotations.2.category_id")), "annotations[2]"),
    ("missing image id", _mutate(_delete("images.1.id")), "images[1]"),
    ("missing file_name", _mutate(_delete("images.2.file_name")), "images[2]"),
    ("missing category name", _mutate(_delete("categories.1.name")), "categories[1]"),
    ("duplicate image id", _mutate(_set("images.1.id", 7)), "images[1].id"),
    ("duplicate file name", _mutate(_set("images.3.file_name", "gone.jpg")), "images[3].file_name"),
    ("duplicate annotation id", _mutate(_set("annotations.4.id", 11)), "annotations[4].id"),
    ("duplicate category id", _mutate(_set("categories.1.id", 2)), "categories[1].id"),
    ("duplicate category name", _mutate(_set("categories.1.name", "person")), "categories[1].name"),
    ("escaping file_name", _mutate(_set("images.3.file_name", "../x.jpg")), "images[3].file_name"),
    ("absolute file_name", _mutate(_set("images.3.file_name", "/abs.jpg")), "images[3].file_name"),
    ("backslash file_name", _mutate(_set("images.3.file_name", "a\\b.jpg")), "images[3].file_name"),
    ("empty file_name", _mutate(_set("images.3.file_name", "")), "images[3].file_name"),
    ("inner dotdot file_name", _mutate(_set("images.3.file_name", "a/../b.jpg")), "images[3].file_name"),
    ("NUL file_name", _mutate(_set("images.3.file_name", "a\0.jpg")), "images[3].file_name"),
    ("reserved key", _mutate(lambda d: d.update(dsvc={})), "dsvc"),
]


@pytest.mark.parametrize(
    ("data", "where"), [case[1:] for case in COCO_BAD], ids=[case[0] for case in COCO_BAD]
)
@pytest.mark.usefixtures("chunking")
def test_coco_refuses_bad_input(tmp_path: Path, data: bytes, where: str) -> None:
    _write(tmp_path, {"ann/coco.json": data})
    with pytest.raises(InvalidInput) as exc:
        get_format("coco").parse("ann/coco.json", "img", tmp_path)
    _bad(exc, "ann/coco.json", where)


@pytest.mark.usefixtures("chunking")
def test_coco_error_names_nan_and_the_first_bad_annotation(tmp_path: Path) -> None:
    _write(tmp_path, {"a.json": b'{"images": [{"id": 1, "file_name": "x", "w": NaN}]}'})
    with pytest.raises(InvalidInput, match="NaN and Infinity are not JSON numbers"):
        get_format("coco").parse("a.json", "", tmp_path)
    doc = _coco_doc()
    doc["annotations"][1]["bbox"] = [0, 0, "1", 1]  # only the bulk type check sees this one
    doc["annotations"][3]["image_id"] = 999  # this one stops the fast pass
    _write(tmp_path, {"b.json": orjson.dumps(doc)})
    with pytest.raises(InvalidInput) as exc:
        get_format("coco").parse("b.json", "", tmp_path)
    _bad(exc, "b.json", "annotations[1].bbox[2]")


def test_coco_render_refuses_labels_it_cannot_write(tmp_path: Path) -> None:
    parsed = get_format("coco").parse("ann/coco.json", "img", _coco_root(tmp_path, _coco_doc()))
    source = Source("ann/coco.json", "coco", "img", parsed.metadata)
    for ann in (Annotation("tree", id=1), Annotation("car")):
        frame = Frame((), parsed.frames[0].metadata)
        with pytest.raises(InvalidInput, match=r"a/one\.jpg"):
            get_format("coco").render(source, [("a/one.jpg", frame, Labels((ann,)))])


# --- YOLO -------------------------------------------------------------------------------------------------

DATA_YAML = """# a comment that survives
path: .
train: images/train
val: images/val
names:
  - car
  - person
  - dog
"""


def _yolo_root(
    tmp_path: Path, labels: dict[str, str], source: str = "ds/data.yaml", text: str = DATA_YAML
) -> Path:
    root = tmp_path / "yolo"
    images = {
        f"ds/images/{name}": b"img" for name in ("train/a.jpg", "train/b.PNG", "val/c.jpg", "val/d.jpg")
    }
    _write(
        root, {**images, source: text.encode(), **{f"ds/labels/{k}": v.encode() for k, v in labels.items()}}
    )
    return root


YOLO_LABELS = {
    "train/a.txt": "0 0.5 0.5 0.2 0.4\n2 0.216599 0.3 0.18286 0.1\n\n1 0.1 0.1 0.3 0.1 0.2 0.3 0.05 0.2\n",
    "train/b.txt": "",
    "val/c.txt": "1 0.797098 0.678176 0.331314 0.350596\n",
    "val/orphan.txt": "0 0.5 0.5 0.1 0.1\n",
}


def test_yolo_parses_boxes_polygons_and_missing_label_files(tmp_path: Path) -> None:
    parsed = get_format("yolo").parse("ds/data.yaml", "ds/images", _yolo_root(tmp_path, YOLO_LABELS))
    assert [f.id for f in parsed.frames] == ["train/a.jpg", "train/b.PNG", "val/c.jpg", "val/d.jpg"]
    assert parsed.metadata == {"names": ["car", "person", "dog"], "text": DATA_YAML}
    a, b, _, d = parsed.frames
    assert a.media == ("ds/images/train/a.jpg",) and a.url is None
    assert a.metadata == {"yolo_normalized": True, "label_file": True}
    box, small, poly = a.labels.annotations
    assert box.label == "car" and box.bbox == BBox(0.4, 0.3, 0.2, 0.4) and box.attributes == {}
    assert small.label == "dog" and small.attributes == {"yolo_center": [0.216599, 0.3]}
    assert (
        poly.label == "person"
        and poly.polygon == ((0.1, 0.1, 0.3, 0.1, 0.2, 0.3, 0.05, 0.2),)
        and poly.bbox is None
    )
    assert b.labels.annotations == () and b.metadata["label_file"]
    assert d.labels.annotations == () and not d.metadata["label_file"]


def test_yolo_round_trip_keeps_values_files_and_absent_files(tmp_path: Path) -> None:
    root = _yolo_root(tmp_path, YOLO_LABELS)
    parsed = get_format("yolo").parse("ds/data.yaml", "ds/images", root)
    files = _render("yolo", parsed, "ds/data.yaml", "ds/images")
    assert files["ds/data.yaml"] == DATA_YAML.encode()
    assert set(files) == {
        "ds/data.yaml",
        "ds/labels/train/a.txt",
        "ds/labels/train/b.txt",
        "ds/labels/val/c.txt",
    }
    assert files["ds/labels/train/b.txt"] == b""
    for name in ("train/a.txt", "val/c.txt"):
        original = [list(map(float, line.split())) for line in YOLO_LABELS[name].splitlines() if line]
        rendered = [
            list(map(float, line.split())) for line in files[f"ds/labels/{name}"].decode().splitlines()
        ]
        assert rendered == original
    new_root = tmp_path / "new"
    _link_media(root, new_root, "ds/images")
    _assert_identity("yolo", "ds/data.yaml", "ds/images", root, new_root)
    assert not (new_root / "ds/labels/val/d.txt").exists()


@pytest.mark.parametrize(
    ("source", "text", "names"),
    [
        ("ds/data.yaml", "names: {0: car, 1: person, 2: dog}\nnc: 3\n", ["car", "person", "dog"]),
        ("ds/data.yml", "names: [car, person, dog]\n", ["car", "person", "dog"]),
        ("ds/classes.txt", "car\nperson\n\ndog\n", ["car", "person", "dog"]),
    ],
)
def test_yolo_class_names_from_dict_list_or_classes_txt(
    tmp_path: Path, source: str, text: str, names: list[str]
) -> None:
    root = _yolo_root(tmp_path, {"val/c.txt": "2 0.5 0.5 1 1\n"}, source, text)
    parsed = get_format("yolo").parse(source, "ds/images", root)
    assert parsed.metadata["names"] == names
    assert parsed.frames[2].labels.annotations[0].label == "dog"
    assert _render("yolo", parsed, source, "ds/images")[source] == text.encode()


_unit = st.integers(0, 10**6).map(lambda n: n / 10**6)


@settings(max_examples=200)
@given(boxes=st.lists(st.tuples(st.integers(0, 2), _unit, _unit, _unit, _unit), max_size=6))
def test_yolo_round_trip_of_random_boxes(
    tmp_path_factory: pytest.TempPathFactory, boxes: list[tuple[int, ...]]
) -> None:
    root = tmp_path_factory.mktemp("yolo")
    lines = []
    for cls, cx, cy, w, h in boxes:
        w, h = min(w, 2 * cx, 2 * (1 - cx)), min(h, 2 * cy, 2 * (1 - cy))
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    _write(
        root, {"images/x.jpg": b"x", "labels/x.txt": "\n".join(lines).encode(), "classes.txt": b"a\nb\nc\n"}
    )
    parsed = get_format("yolo").parse("classes.txt", "images", root)
    rendered = _render("yolo", parsed, "classes.txt", "images")["labels/x.txt"].decode().splitlines()
    assert [list(map(float, line.split())) for line in rendered] == [
        list(map(float, line.split())) for line in lines
    ]
    new_root = tmp_path_factory.mktemp("again")
    _link_media(root, new_root, "images")
    _assert_identity("yolo", "classes.txt", "images", root, new_root)


YOLO_BAD = [
    ("too few fields", "0 0.5 0.5 0.1\n", "line 1"),
    ("even polygon", "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n", "line 1"),
    ("non-numeric", "0 0.5 0.5 abc 0.1\n", "line 1"),
    ("nan", "0 0.5 nan 0.1 0.1\n", "line 1"),
    ("class out of range", "\n0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n", "line 3"),
    ("negative class", "-1 0.5 0.5 0.1 0.1\n", "line 1"),
    ("outside [0, 1]", "0 0.5 1.2 0.1 0.1\n", "line 1"),
    ("box leaves the image", "0 0.95 0.5 0.2 0.1\n", "line 1"),
    ("negative size", "0 0.5 0.5 -0.1 0.1\n", "line 1"),
    ("not utf-8", "0 0.5 0.5 0.1 0.1 \udcff\n", "byte"),
]


@pytest.mark.parametrize(
    ("text", "where"), [case[1:] for case in YOLO_BAD], ids=[case[0] for case in YOLO_BAD]
)
def test_yolo_refuses_bad_label_lines(tmp_path: Path, text: str, where: str) -> None:
    root = _yolo_root(tmp_path, {})
    (root / "ds/labels/val").mkdir(parents=True)
    (root / "ds/labels/val/c.txt").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(InvalidInput) as exc:
        get_format("yolo").parse("ds/data.yaml", "ds/images", root)
    _bad(exc, "ds/labels/val/c.txt", where)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("names: [car, car]\n", "names[1]"),
        ("names: [car, 3]\n", "names[1]"),
        ("names: {0: car, 2: dog}\n", "names"),
        ("names: car\n", "names"),
        ("names: [car\n", "line 2, column 1"),
        ("kpt_shape: [17, 3]\nnames: [person]\n", "kpt_shape"),
    ],
)
def test_yolo_refuses_bad_class_names(tmp_path: Path, text: str, where: str) -> None:
    root = _yolo_root(tmp_path, {}, text=text)
    with pytest.raises(InvalidInput) as exc:
        get_format("yolo").parse("ds/data.yaml", "ds/images", root)
    _bad(exc, "ds/data.yaml", where)


def test_yolo_needs_an_images_folder_and_safe_names(tmp_path: Path) -> None:
    root = _yolo_root(tmp_path, {})
    for media in ("ds", "../ds/images", "ds/images/test"):
        with pytest.raises(InvalidInput, match=r"ds/data\.yaml"):
            get_format("yolo").parse("ds/data.yaml", media, root)
    (root / "ds/images/val/x\\y.jpg").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="backslash"):
        get_format("yolo").parse("ds/data.yaml", "ds/images", root)


def test_yolo_owned_paths_are_the_names_file_and_label_files_of_images(tmp_path: Path) -> None:
    root = _yolo_root(tmp_path, YOLO_LABELS)
    expected = {"ds/data.yaml", "ds/labels/train/a.txt", "ds/labels/train/b.txt", "ds/labels/val/c.txt"}
    assert get_format("yolo").owned_paths("ds/data.yaml", root) == expected
    assert get_format("yolo").owned_paths("ds/data.yaml", root, "ds/images/val") == {
        "ds/data.yaml",
        "ds/labels/val/c.txt",
    }


# --- dsvc JSONL -------------------------------------------------------------------------------------------

JSONL_LINES: list[Doc] = [
    {"format": "dsvc-jsonl", "version": 1, "metadata": {"project": "cars", "classes": ["car"]}},
    {
        "id": "b.jpg",
        "media": "b.jpg",
        "metadata": {"weather": "rain", "n": [1, 2.5]},
        "labels": [
            {"class": "car", "id": 7, "bbox": [1, 2, 3, 4], "area": 12, "attributes": {"occluded": True}},
            {"class": "person", "polygon": [[0, 0, 1, 0, 1, 1]], "iscrowd": True},
        ],
    },
    {
        "id": "a.jpg",
        "media": ["a.jpg", "depth/a.png"],
        "url": "https://x/a.jpg",
        "labels": [
            {
                "class": "car",
                "id": "k",
                "mask": {"size": [2, 2], "counts": [1, 3]},
                "keypoints": [1, 2, 2],
                "score": 0.25,
            },
            {"class": "sky"},
        ],
    },
    {"id": "c.jpg", "media": []},
]
JSONL = b"\n\n".join(map(orjson.dumps, JSONL_LINES)) + b"\n"  # blank lines between frames are allowed


def test_jsonl_parses_frames_and_every_label_field(tmp_path: Path) -> None:
    _write(tmp_path, {"frames.jsonl": JSONL})
    parsed = get_format("jsonl").parse("frames.jsonl", "media", tmp_path)
    assert parsed.metadata == {"project": "cars", "classes": ["car"]}
    a, b, c = parsed.frames
    assert (a.id, a.media, a.url, a.metadata) == (
        "a.jpg",
        ("media/a.jpg", "media/depth/a.png"),
        "https://x/a.jpg",
        {},
    )
    assert a.labels.annotations == (
        Annotation("car", "k", mask=RLE(2, 2, (1, 3)), keypoints=(1.0, 2.0, 2.0), score=0.25),
        Annotation("sky"),
    )
    assert b.media == ("media/b.jpg",) and b.metadata == {"weather": "rain", "n": [1, 2.5]}
    assert b.labels.annotations == (
        Annotation("car", 7, bbox=BBox(1, 2, 3, 4), area=12, attributes={"occluded": True}),
        Annotation("person", polygon=((0.0, 0.0, 1.0, 0.0, 1.0, 1.0),), iscrowd=True),
    )
    assert c.media == () and c.labels.annotations == ()


def test_jsonl_round_trip_and_sorted_lines(tmp_path: Path) -> None:
    _write(tmp_path, {"frames.jsonl": JSONL})
    _assert_identity("jsonl", "frames.jsonl", "media", tmp_path, tmp_path / "new")
    lines = (tmp_path / "new/frames.jsonl").read_bytes().splitlines()
    assert orjson.loads(lines[0]) == {
        "format": "dsvc-jsonl",
        "version": 1,
        "metadata": {"project": "cars", "classes": ["car"]},
    }
    assert [orjson.loads(line)["id"] for line in lines[1:]] == ["a.jpg", "b.jpg", "c.jpg"]


def test_jsonl_without_header_and_with_default_media(tmp_path: Path) -> None:
    _write(tmp_path, {"f.jsonl": b'{"id": "x/y.jpg"}\n'})
    parsed = _assert_identity("jsonl", "f.jsonl", "", tmp_path, tmp_path / "new")
    assert parsed.metadata == {} and parsed.frames[0].media == ("x/y.jpg",)


_segment = st.text("abcdefgh0123_-.", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
_frame_ids = st.lists(_segment, min_size=1, max_size=3).map("/".join)


@st.composite
def jsonl_records(draw: st.DrawFn) -> list[FrameRecord]:
    """Random frames holding anything the label model can: the JSONL format must keep all of it."""
    records = []
    for ident in draw(st.lists(_frame_ids, max_size=5, unique=True)):
        media = tuple(f"m/{p}" for p in draw(st.lists(_frame_ids, max_size=2)))
        url = draw(st.none() | st.text(min_size=1, max_size=10))
        labels = Labels(tuple(draw(st.lists(S.annotations, max_size=4))))
        records.append(FrameRecord(ident, media, url, draw(S.metadata), labels))
    return sorted(records, key=lambda r: r.id)


@settings(max_examples=80)
@given(records=jsonl_records(), metadata=S.metadata)
def test_jsonl_keeps_everything_the_model_holds(
    tmp_path_factory: pytest.TempPathFactory, records: list[FrameRecord], metadata: dict[str, Any]
) -> None:
    root = tmp_path_factory.mktemp("jsonl")
    original = ParsedSource(records, metadata)
    once = _reimport("jsonl", original, "s.jsonl", "m", root)
    assert [_stored(f.labels) for f in once.frames] == [_stored(f.labels) for f in records]
    assert [(f.id, f.media, f.url, f.metadata) for f in once.frames] == [
        (f.id, f.media, f.url, f.metadata) for f in records
    ]
    assert once.metadata == metadata
    twice = _reimport("jsonl", once, "s.jsonl", "m", root)
    assert twice == once


JSONL_BAD = [
    ("malformed line", b'{"id": "a"}\n{"id": "b",,}\n', "line 2, column"),
    ("truncated line", b'{"id": "a"}\n\n{"id": "b", "labels": [\n', "line 3"),
    ("nan", b'{"id": "a", "labels": [{"class": "x", "area": NaN}]}\n', "line 1"),
    ("not an object", b'{"id": "a"}\n[1]\n', "line 2"),
    ("missing id", b'{"media": []}\n', "line 1"),
    ("unknown field", b'{"id": "a", "lables": []}\n', "line 1"),
    ("duplicate id", b'{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n', "line 3, id"),
    ("escaping id", b'{"id": "../a"}\n', "line 1, id"),
    ("absolute media", b'{"id": "a", "media": ["/etc/x"]}\n', "line 1, media[0]"),
    ("media not paths", b'{"id": "a", "media": 5}\n', "line 1, media"),
    ("metadata not an object", b'{"id": "a", "metadata": []}\n', "line 1, metadata"),
    ("labels not a list", b'{"id": "a", "labels": {}}\n', "line 1, labels"),
    (
        "negative bbox",
        b'{"id": "a", "labels": [{"class": "x"}, {"class": "x", "bbox": [0, 0, -1, 1]}]}\n',
        "line 1, labels[1].bbox",
    ),
    (
        "string bbox",
        b'{"id": "a", "labels": [{"class": "x", "bbox": [0, 0, "1", 1]}]}\n',
        "line 1, labels[0].bbox[2]",
    ),
    ("missing class", b'{"id": "a", "labels": [{"bbox": [0, 0, 1, 1]}]}\n', "line 1, labels[0].class"),
    (
        "bad polygon",
        b'{"id": "a", "labels": [{"class": "x", "polygon": [[0, 1]]}]}\n',
        "line 1, labels[0].polygon",
    ),
    (
        "bad mask",
        b'{"id": "a", "labels": [{"class": "x", "mask": {"size": [2, 2], "counts": [1]}}]}\n',
        "line 1, labels[0].mask",
    ),
    (
        "numeric iscrowd",
        b'{"id": "a", "labels": [{"class": "x", "iscrowd": 1}]}\n',
        "line 1, labels[0].iscrowd",
    ),
    ("bad header", b'{"format": "other", "version": 1}\n', "line 1"),
    (
        "second header",
        b'\n{"format": "dsvc-jsonl", "version": 1}\n{"format": "dsvc-jsonl", "version": 1}\n',
        "line 3",
    ),
]


@pytest.mark.parametrize(
    ("data", "where"), [case[1:] for case in JSONL_BAD], ids=[case[0] for case in JSONL_BAD]
)
def test_jsonl_refuses_bad_lines(tmp_path: Path, data: bytes, where: str) -> None:
    _write(tmp_path, {"s.jsonl": data})
    with pytest.raises(InvalidInput) as exc:
        get_format("jsonl").parse("s.jsonl", "m", tmp_path)
    _bad(exc, "s.jsonl", where)


def test_jsonl_refuses_a_newer_version(tmp_path: Path) -> None:
    _write(tmp_path, {"s.jsonl": b'{"format": "dsvc-jsonl", "version": 2}\n'})
    with pytest.raises(UnsupportedFormat, match="version 2"):
        get_format("jsonl").parse("s.jsonl", "m", tmp_path)


# --- shared -----------------------------------------------------------------------------------------------


def test_detect_format_tells_the_formats_apart(tmp_path: Path) -> None:
    files = {"c.json": orjson.dumps(_coco_doc()), "d.yaml": DATA_YAML.encode(), "classes.txt": b"a\n"}
    _write(
        tmp_path,
        {**files, "f.jsonl": JSONL, "other.json": b'{"x": 1}', "notes.yaml": b"a: 1\n", "g.jsonl": b"[1]"},
    )
    assert [detect_format(tmp_path / n) for n in ("c.json", "d.yaml", "classes.txt", "f.jsonl")] == [
        "coco",
        "yolo",
        "yolo",
        "jsonl",
    ]
    for name in ("other.json", "notes.yaml", "g.jsonl", "missing.json"):
        with pytest.raises(InvalidInput, match="cannot tell the format"):
            detect_format(tmp_path / name)


def test_get_format_names_the_known_formats() -> None:
    assert set(FORMATS) == {"coco", "yolo", "jsonl"}
    assert all(get_format(name).name == name for name in FORMATS)
    with pytest.raises(InvalidInput, match="coco, jsonl, yolo"):
        get_format("voc")


@pytest.mark.parametrize("name", ["", "/a", "../a", "a/../b", "a/./b", "a//b", "a/", "a\\b", "a\0b", 3, None])
def test_check_name_refuses_unsafe_names(name: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_name(name, "src.json", "images[0].file_name")
    _bad(exc, "src.json", "images[0].file_name")


def test_source_path_must_stay_inside_the_repository(tmp_path: Path) -> None:
    for fmt in FORMATS:
        with pytest.raises(InvalidInput, match="escapes"):
            get_format(fmt).parse("../outside.json", "images", tmp_path)


def test_trusted_constructors_build_what_the_validating_ones_build() -> None:
    ann = trusted_annotation(
        "car",
        3,
        trusted_bbox(1.0, 2.0, 3.0, 4.0),
        ((0.0, 1.0, 2.0, 3.0, 4.0, 5.0),),
        trusted_rle(1, 2, (2,)),
        (1.0, 2.0, 2.0),
        True,
        5.0,
        0.5,
        {"k": 1},
    )
    expected = Annotation(
        "car",
        3,
        BBox(1, 2, 3, 4),
        ((0.0, 1.0, 2.0, 3.0, 4.0, 5.0),),
        RLE(1, 2, (2,)),
        (1.0, 2.0, 2.0),
        True,
        5.0,
        0.5,
        {"k": 1},
    )
    assert ann == expected and ann.to_value() == expected.to_value()
    assert set(vars(ann)) == {f.name for f in dataclasses.fields(Annotation)}
    assert _stored(Labels((ann,))) == Labels((expected,))
