"""COCO annotations to and from dsvc Annotations, fast enough for millions. Parsing is bound by memory
latency (each annotation is a cold dict), so one lean pass touches each annotation once, number types are
checked afterwards in bulk at C speed, and only on failure does a precise pass name the first bad field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

from dsvc import codec
from dsvc.codec import canonical
from dsvc.errors import InvalidInput
from dsvc.formats.common import (
    ID_TYPES,
    NUMBER_TYPES,
    bbox_from_json,
    check_id,
    check_unique,
    item_types,
    keypoints_from_json,
    number,
    polygon_from_json,
    rle_from_json,
    rle_to_json,
)
from dsvc.objects import Labels

# Fields with a typed place in Annotation (image_id and category_id become the frame and the class);
# every other field of an annotation is kept in Annotation.attributes.
TYPED = frozenset(
    ("id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd", "keypoints", "score")
)
REQUIRED = ("id", "image_id", "category_id")
CROWD = {0: False, 1: True}
_MISSING: Any = object()
_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


def encode_labels(
    chunks: Iterable[list[Any]], images: Mapping[Any, int], names: Mapping[Any, str], path: str
) -> tuple[list[Labels], list[Any], int]:
    """Each image's labels, by image position, from the annotations array read chunk by chunk; also the
    ids of annotations without iscrowd, so render can leave the field out again, and how many there were.

    Annotations go straight to their stored bytes (`Labels.from_encoded_annotations`), never through
    Annotation objects: a million of those would take gigabytes, their encodings a tenth of that."""
    per_image: list[list[bytes]] = [[] for _ in range(len(images))]
    ids: list[Any] = []
    no_crowd: list[Any] = []
    first = 0
    for chunk in chunks:
        encoded = _encode_chunk(chunk, first, images, names, path, ids, no_crowd)
        for position, value in encoded:
            per_image[position].append(value)
        first += len(chunk)
    _check_unique_ids(ids, path)
    labels = []
    for i, values in enumerate(per_image):
        labels.append(Labels.from_encoded_annotations(values))
        per_image[i] = []  # the encodings are now the Labels' bytes; drop the copies as we go
    return labels, no_crowd, len(ids)


def _encode_chunk(
    anns: list[Any],
    first: int,
    images: Mapping[Any, int],
    names: Mapping[Any, str],
    path: str,
    ids: list[Any],
    no_crowd: list[Any],
) -> list[tuple[int, bytes]]:
    """(image position, encoded annotation) per annotation of one chunk; the number types are checked
    after the loop, at C speed, and only a failure walks the chunk again to name the bad field."""
    lists: list[Sequence[Any]] = []  # boxes and keypoints
    rings: list[Sequence[Any]] = []
    scalars: list[Any] = []
    chunk_ids: list[Any] = []
    chunk_no_crowd: list[Any] = []
    pending: list[tuple[int, list[Any]]] = []
    get = dict.get
    for i, a in enumerate(anns):
        try:
            ident = a["id"]
            chunk_ids.append(ident)
            position = images[a["image_id"]]
            label = names[a["category_id"]]
            known = 3
            bbox = poly = mask = kps = area = score = None
            attributes: dict[str, Any] = {}
            v = get(a, "bbox", _MISSING)
            if v is not _MISSING:
                known += 1
                x, y, w, h = v
                if w < 0 or h < 0:
                    raise ValueError("negative size")
                lists.append(v)
                bbox = [float(x), float(y), float(w), float(h)]
            v = get(a, "segmentation", _MISSING)
            if type(v) is list:
                if v:
                    known += 1
                    for ring in v:
                        if type(ring) is not list or len(ring) < 6 or len(ring) & 1:
                            raise ValueError("bad ring")
                    rings += v
                    poly = v
                else:
                    attributes["segmentation"] = v  # an empty segmentation has no typed form
            elif type(v) is dict:
                known += 1
                mask = rle_from_json(v, path, f"annotations[{first + i}].segmentation").to_value()
            elif v is not _MISSING:
                raise TypeError("bad segmentation")
            v = get(a, "area", _MISSING)
            if v is not _MISSING:
                known += 1
                if v < 0:
                    raise ValueError("negative area")
                scalars.append(v)
                area = float(v)
            v = get(a, "iscrowd", _MISSING)
            if v is _MISSING:
                chunk_no_crowd.append(ident)
                crowd = False
            else:
                known += 1
                crowd = CROWD[v]
            v = get(a, "keypoints", _MISSING)
            if v is not _MISSING:
                known += 1
                if type(v) is not list or len(v) % 3:
                    raise ValueError("bad keypoints")
                lists.append(v)
                kps = list(map(float, v))
            v = get(a, "score", _MISSING)
            if v is not _MISSING:
                known += 1
                scalars.append(v)
                score = float(v)
            if len(a) != known:
                attributes.update((k, v) for k, v in a.items() if k not in TYPED)
                attributes = canonical(attributes)
            pending.append((position, [label, ident, bbox, poly, mask, kps, crowd, area, score, attributes]))
        except _ERRORS:
            _locate(anns, first, i + 1, images, names, path)
    ring_types = item_types(rings)
    if not (
        item_types(lists) | ring_types | set(map(type, scalars)) <= NUMBER_TYPES
        and set(map(type, chunk_ids)) <= ID_TYPES
    ):
        _locate(anns, first, len(anns), images, names, path)
    if int in ring_types:  # stored coordinates are floats, whatever the file wrote
        for _, value in pending:
            if value[3] is not None:
                value[3] = [list(map(float, ring)) for ring in value[3]]
    ids += chunk_ids
    no_crowd += chunk_no_crowd
    return [(position, codec.encode(value)) for position, value in pending]


def _locate(
    anns: list[Any], first: int, stop: int, images: Mapping[Any, int], names: Mapping[Any, str], path: str
) -> NoReturn:
    """Name the first bad annotation of a chunk before `stop`, where the fast pass found a problem."""
    for i, a in enumerate(anns[:stop]):
        check(a, first + i, images, names, path)
    raise InvalidInput("malformed annotations", path=path, location="annotations")


def _check_unique_ids(ids: list[Any], path: str) -> None:
    """Refuse two annotations with one id: ids are how diffs match labels across versions."""
    if len(set(ids)) == len(ids):
        return
    first: dict[Any, int] = {}
    for i, ident in enumerate(ids):
        check_unique(first, ident, i, "annotation id", path, f"annotations[{i}].id")


def _check_key(value: Any, table: Mapping[Any, Any], what: str, path: str, location: str) -> None:
    """Refuse a reference to an image or category the file does not define."""
    if not isinstance(value, int | float | str) or value not in table:
        raise InvalidInput(f"unknown {what} {value!r}", path=path, location=location)


def check(a: Any, i: int, images: Mapping[Any, int], names: Mapping[Any, str], path: str) -> None:
    """Validate one annotation field by field, raising InvalidInput that names the first bad field."""
    loc = f"annotations[{i}]"
    if not isinstance(a, dict):
        raise InvalidInput(f"expected an object, got {a!r}", path=path, location=loc)
    for key in REQUIRED:
        if key not in a:
            raise InvalidInput(f"missing required field {key!r}", path=path, location=loc)
    check_id(a["id"], path, f"{loc}.id")
    _check_key(a["image_id"], images, "image id", path, f"{loc}.image_id")
    _check_key(a["category_id"], names, "category id", path, f"{loc}.category_id")
    if "bbox" in a:
        bbox_from_json(a["bbox"], path, f"{loc}.bbox")
    seg = a.get("segmentation", [])
    if isinstance(seg, dict):
        rle_from_json(seg, path, f"{loc}.segmentation")
    elif seg != []:
        polygon_from_json(seg, path, f"{loc}.segmentation")
    if "area" in a:
        number(a["area"], path, f"{loc}.area", non_negative=True)
    if "iscrowd" in a and not (type(a["iscrowd"]) in (*NUMBER_TYPES, bool) and a["iscrowd"] in CROWD):
        raise InvalidInput(
            f"iscrowd must be 0 or 1, got {a['iscrowd']!r}", path=path, location=f"{loc}.iscrowd"
        )
    if "keypoints" in a:
        keypoints_from_json(a["keypoints"], path, f"{loc}.keypoints")
    if "score" in a:
        number(a["score"], path, f"{loc}.score")


def render(value: Sequence[Any], image_id: Any, category_id: Any, with_crowd: bool) -> dict[str, Any]:
    """One COCO annotation from its stored value (`Annotation.to_value`'s layout, as
    `Labels.annotation_values` gives it), fields in COCO's usual order, extra fields after them."""
    _, ident, bbox, polygon, mask, keypoints, iscrowd, area, score, attributes = value
    out: dict[str, Any] = {"id": ident, "image_id": image_id, "category_id": category_id}
    if polygon is not None:
        out["segmentation"] = polygon
    elif mask is not None:
        out["segmentation"] = rle_to_json(*mask)
    if area is not None:
        out["area"] = area
    if bbox is not None:
        out["bbox"] = bbox
    if with_crowd or iscrowd:
        out["iscrowd"] = int(iscrowd)
    if keypoints is not None:
        out["keypoints"] = keypoints
    if score is not None:
        out["score"] = score
    if attributes:
        out.update(attributes)
    return out
