"""Inference sets: a model's predictions read from COCO results, YOLO txt or dsvc JSONL, resolved to the
frames of a version and stored as a map frame id -> Labels (with scores)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsvc import tree
from dsvc.errors import InvalidInput
from dsvc.formats.coco import id_order
from dsvc.formats.common import bbox_from_json, load_json, number
from dsvc.formats.jsonl import JsonlFormat
from dsvc.hashing import ObjectId
from dsvc.model import Annotation, BBox
from dsvc.objects import Frame, Labels, Source, load
from dsvc.store import ObjectStore

FORMATS = ("coco", "yolo", "jsonl")
READ_BATCH = 4096
SHOWN = 5  # unknown ids an error lists


@dataclass(frozen=True)
class Catalog:
    """What resolving predictions and ordering images need from a version's frames and sources."""

    frames: tuple[str, ...]  # frame ids in map (key) order
    coco_images: Mapping[Any, str]  # COCO image id -> frame id
    coco_categories: Mapping[Any, str]  # COCO category id -> class name
    yolo_names: tuple[str, ...]  # class names by YOLO index
    order: tuple[int, ...]  # each frame's position in image order (COCO image ids, else frame ids)
    classes: tuple[str, ...]  # class names the sources declare, in category id order


def read_frames(store: ObjectStore, root: ObjectId) -> Iterator[tuple[str, Frame]]:
    """Every frame of a frames map, read in batches (one vectorised pack lookup per batch)."""
    entries = list(tree.items(store, root))
    for start in range(0, len(entries), READ_BATCH):
        chunk = entries[start : start + READ_BATCH]
        found = dict(store.get_many([ObjectId(v) for _, v in chunk]))
        for key, value in chunk:
            yield key.decode(), load(found[ObjectId(value)], Frame)


def catalog(store: ObjectStore, roots: Mapping[str, ObjectId]) -> Catalog:
    """The catalog of a version: one read of its frames and sources."""
    sources = {
        s.path: s
        for s in (store.get_object(ObjectId(v), Source) for _, v in tree.items(store, roots["sources"]))
    }
    categories: dict[Any, str] = {}
    names: list[str] = []
    for source in sources.values():
        if source.format == "coco":
            for cat in sorted(source.metadata.get("categories", ()), key=lambda c: id_order(c["id"])):
                categories.setdefault(cat["id"], cat["name"])
        elif source.format == "yolo" and not names:
            names = list(source.metadata.get("names", ()))
    frames: list[str] = []
    images: dict[Any, str] = {}
    keys: list[tuple[str, int, tuple[bool, int | str], str]] = []
    for frame_id, frame in read_frames(store, roots["frames"]):
        found = sources.get(frame.source)
        image_id = frame.metadata.get("id")
        if found is not None and found.format == "coco" and isinstance(image_id, int | str):
            images.setdefault(image_id, frame_id)
            keys.append((frame.source, 0, id_order(image_id), frame_id))
        else:
            keys.append((frame.source, 1, (False, 0), frame_id))
        frames.append(frame_id)
    ranked = sorted(range(len(keys)), key=keys.__getitem__)
    order = [0] * len(keys)
    for position, i in enumerate(ranked):
        order[i] = position
    classes = tuple(dict.fromkeys([*categories.values(), *names]))
    return Catalog(tuple(frames), images, categories, tuple(names), tuple(order), classes)


def _unknown(what: str, values: list[Any]) -> str:
    distinct = list(dict.fromkeys(values))
    first = ", ".join(repr(v) for v in distinct[:SHOWN])
    more = ", ..." if len(distinct) > SHOWN else ""
    return f"{len(distinct)} unknown {what} ({first}{more})"


def _refuse(path: str, problems: list[str]) -> None:
    if problems:
        raise InvalidInput(f"{'; '.join(problems)}; nothing was imported", path=path)


def parse_coco(data: bytes, path: str, cat: Catalog) -> dict[str, list[Annotation]]:
    """COCO results: a list of {image_id, category_id, bbox, score}, in file order within each frame."""
    doc = load_json(data, path)
    if not isinstance(doc, list):
        raise InvalidInput(f"COCO results are a JSON list, not {type(doc).__name__}", path=path)
    out: dict[str, list[Annotation]] = {}
    bad_images: list[Any] = []
    bad_categories: list[Any] = []
    for i, row in enumerate(doc):
        where = f"[{i}]"
        if not isinstance(row, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(row):
            raise InvalidInput(
                "a result needs image_id, category_id, bbox and score", path=path, location=where
            )
        image, category = row["image_id"], row["category_id"]
        frame = cat.coco_images.get(image) if isinstance(image, int | str) else None
        label = cat.coco_categories.get(category) if isinstance(category, int | str) else None
        if frame is None:
            bad_images.append(image)
        if label is None:
            bad_categories.append(category)
        if frame is None or label is None:
            continue
        box = bbox_from_json(row["bbox"], path, f"{where}.bbox")
        score = number(row["score"], path, f"{where}.score")
        out.setdefault(frame, []).append(Annotation(label, bbox=box, score=score))
    problems = []
    if bad_images:
        problems.append(_unknown("image ids", bad_images))
    if bad_categories:
        problems.append(_unknown("category ids", bad_categories))
    _refuse(path, problems)
    return out


def parse_jsonl(file: Path, cat: Catalog) -> dict[str, list[Annotation]]:
    """dsvc JSONL lines {"id": frame id, "labels": [{"class", "bbox", "score"}, ...]}."""
    parsed = JsonlFormat().parse(file.name, "", file.parent)
    known = set(cat.frames)
    out = {f.id: list(f.labels.annotations) for f in parsed.frames}
    _refuse(
        file.name, [_unknown("frame ids", [f for f in out if f not in known])] if set(out) - known else []
    )
    return out


def parse_yolo(folder: Path, cat: Catalog) -> dict[str, list[Annotation]]:
    """YOLO prediction files `class cx cy w h confidence`, one per image, named like its image (any
    extension replaced by .txt), under a folder; boxes stay normalised like YOLO ground truth."""
    if not folder.is_dir():
        raise InvalidInput("YOLO predictions are a folder of .txt files", path=str(folder))
    by_stem: dict[str, str] = {}
    for frame_id in cat.frames:
        by_stem.setdefault(frame_id.rsplit(".", 1)[0], frame_id)
        by_stem.setdefault(Path(frame_id).stem, frame_id)
    out: dict[str, list[Annotation]] = {}
    unknown: list[str] = []
    for file in sorted(folder.rglob("*.txt")):
        rel = file.relative_to(folder).with_suffix("").as_posix()
        frame = by_stem.get(rel) or by_stem.get(file.stem)
        if frame is None:
            unknown.append(rel)
            continue
        out[frame] = _yolo_lines(file.read_text(encoding="utf-8"), str(file), cat.yolo_names)
    _refuse(str(folder), [_unknown("images", unknown)] if unknown else [])
    return out


def _yolo_lines(text: str, path: str, names: tuple[str, ...]) -> list[Annotation]:
    anns = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {n}"
        if len(fields) != 6:
            raise InvalidInput("expected `class cx cy w h confidence`", path=path, location=where)
        try:
            index = int(fields[0])
            cx, cy, w, h, conf = (float(v) for v in fields[1:])
            label = names[index]
            box = BBox(cx - w / 2, cy - h / 2, w, h)
            anns.append(Annotation(label, bbox=box, score=conf))
        except (ValueError, IndexError) as exc:
            raise InvalidInput(f"bad prediction: {exc}", path=path, location=where) from None
    return anns


def parse(fmt: str, file: Path, cat: Catalog) -> dict[str, list[Annotation]]:
    """Predictions per frame id from a file (or, for YOLO, a folder) in one of FORMATS."""
    if fmt == "coco":
        return parse_coco(file.read_bytes(), str(file), cat)
    if fmt == "jsonl":
        return parse_jsonl(file, cat)
    if fmt == "yolo":
        return parse_yolo(file, cat)
    raise InvalidInput(f"unknown predictions format {fmt!r} (use {', '.join(FORMATS)})")


def write_predictions(store: ObjectStore, per_frame: Mapping[str, list[Annotation]]) -> ObjectId:
    """Store each frame's predictions as a Labels object and the map frame id -> Labels id."""
    with store.batch():
        entries = []
        for frame_id in sorted(per_frame):
            entries.append((frame_id.encode(), store.put_object(Labels(tuple(per_frame[frame_id])))))
        return tree.build(store, iter(entries))
