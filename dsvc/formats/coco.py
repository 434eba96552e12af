"""COCO detection files: one frame per image (id = file_name), labels from its annotations, and everything
else (info, licenses, categories, extra keys) kept so the file renders back as pycocotools reads it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsvc.errors import InvalidInput
from dsvc.formats import coco_annotations
from dsvc.formats.common import (
    FrameRecord,
    ParsedSource,
    check_folder,
    check_id,
    check_name,
    check_unique,
    dump_json,
    join,
    read_source,
)
from dsvc.formats.jsonsplit import SplitDocument, load_split
from dsvc.gcpause import paused_gc
from dsvc.objects import Frame, Labels, Source

# Source.metadata key of what render needs beyond the file's own top-level keys (never a COCO key).
PRIVATE = "dsvc"
SNIFF = 1 << 16


class CocoFormat:
    """COCO detection JSON (instances, keypoints, image info files)."""

    name = "coco"

    def detect(self, path: Path) -> bool:
        """A .json file holding an object whose first bytes name a COCO section."""
        if path.suffix.lower() != ".json" or not path.is_file():
            return False
        with open(path, "rb") as handle:
            head = handle.read(SNIFF)
        return head.lstrip().startswith(b"{") and any(
            key in head for key in (b'"images"', b'"annotations"', b'"categories"')
        )

    def parse(self, source_path: str, media: str, root: Path) -> ParsedSource:
        media = check_folder(media, source_path, "media folder")
        data = read_source(root, source_path)
        with paused_gc():
            doc = load_split(data, source_path, "annotations")
            del data
            parsed = _parse(doc, source_path, media, root)
            del doc  # freed before the collector resumes, so it never scans the JSON tree
        return parsed

    def render(self, source: Source, frames: Iterable[tuple[str, Frame, Labels]]) -> dict[str, bytes]:
        with paused_gc():
            return {source.path: dump_json(_document(source, frames))}

    def owned_paths(self, source_path: str, root: Path, media: str | None = None) -> set[str]:
        return {source_path}


def _document(source: Source, frames: Iterable[tuple[str, Frame, Labels]]) -> dict[str, Any]:
    """The COCO document of a source's frames and labels."""
    meta = dict(source.metadata)
    private = meta.pop(PRIVATE, {})
    cat_ids = {c["name"]: c["id"] for c in meta.get("categories", ())}
    no_crowd = private.get("no_iscrowd", ())
    all_without_crowd = no_crowd is True
    without_crowd = set() if all_without_crowd else set(no_crowd)
    rows = []
    for frame_id, frame, labels in frames:
        image_id = frame.metadata.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, int | str):
            raise InvalidInput(f"frame {frame_id!r} has no COCO image id", path=source.path)
        rows.append((id_order(image_id), {"id": image_id, "file_name": frame_id, **frame.metadata}, labels))
    rows.sort(key=lambda row: row[0])
    annotations = []
    for _, image, labels in rows:
        image_id = image["id"]
        for value in labels.annotation_values():
            label, ident = value[0], value[1]
            if label not in cat_ids or ident is None:
                problem = "has no id" if ident is None else f"has class {label!r}, not a category"
                raise InvalidInput(
                    f"an annotation of frame {image['file_name']!r} {problem}", path=source.path
                )
            with_crowd = not all_without_crowd and ident not in without_crowd
            annotations.append(coco_annotations.render(value, image_id, cat_ids[label], with_crowd))
    doc: dict[str, Any] = {key: meta.pop(key) for key in ("info", "licenses") if key in meta}
    doc["images"] = [image for _, image, _ in rows]
    if private.get("annotations", True):
        doc["annotations"] = annotations
    doc.update(meta)
    return doc


def _parse(doc: SplitDocument, path: str, media: str, root: Path) -> ParsedSource:
    """Frames from a COCO document (its annotations in chunks), and the dataset-level data render needs."""
    fields = doc.fields
    if not isinstance(fields, dict):
        raise InvalidInput(f"a COCO file holds a JSON object, not {type(fields).__name__}", path=path)
    if PRIVATE in fields:
        raise InvalidInput(f"the top-level key {PRIVATE!r} is reserved by dsvc", path=path, location=PRIVATE)
    if "images" not in fields:
        raise InvalidInput("missing the 'images' list", path=path)
    for key in ("images", "annotations", "categories"):
        if key in fields and not isinstance(fields[key], list):
            raise InvalidInput(f"expected a list, got {type(fields[key]).__name__}", path=path, location=key)
    names = _categories(fields.get("categories", []), path)
    index, images = _images(fields.pop("images"), path)
    labels, no_crowd, count = coco_annotations.encode_labels(doc.chunks or (), index, names, path)
    present = _existing(root, media, [name for name, _ in images])
    frames = []
    for (name, image), frame_labels in zip(images, labels, strict=True):
        if name in present:
            record = FrameRecord(name, (join(media, name),), None, image, frame_labels)
        else:
            record = FrameRecord(name, (), _url(image), image, frame_labels, (join(media, name),))
        frames.append(record)
    frames.sort(key=lambda f: f.id)
    metadata = dict(fields)
    private: dict[str, Any] = {}
    if doc.chunks is None:
        private["annotations"] = False
    if no_crowd:
        private["no_iscrowd"] = True if len(no_crowd) == count else sorted(no_crowd, key=id_order)
    if private:
        metadata[PRIVATE] = private
    return ParsedSource(frames, metadata)


def id_order(ident: int | str) -> tuple[bool, int | str]:
    """Sort key of COCO ids, which may mix integers and strings: integers first."""
    return isinstance(ident, str), ident


def _url(image: dict[str, Any]) -> str | None:
    """Where an image without a local file can be fetched from."""
    urls = (image.get("coco_url"), image.get("flickr_url"))
    return next((url for url in urls if isinstance(url, str) and url), None)


def _categories(cats: list[Any], path: str) -> dict[Any, str]:
    """Map category id -> name, refusing duplicate ids and names (labels are stored by name)."""
    names: dict[Any, str] = {}
    by_name: dict[str, int] = {}
    for i, cat in enumerate(cats):
        loc = f"categories[{i}]"
        if not isinstance(cat, dict):
            raise InvalidInput(f"expected an object, got {cat!r}", path=path, location=loc)
        for key in ("id", "name"):
            if key not in cat:
                raise InvalidInput(f"missing required field {key!r}", path=path, location=loc)
        ident, name = cat["id"], cat["name"]
        check_id(ident, path, f"{loc}.id")
        if ident in names:
            raise InvalidInput(f"duplicate category id {ident!r}", path=path, location=f"{loc}.id")
        if not isinstance(name, str) or not name:
            raise InvalidInput(
                f"name must be a non-empty string, got {name!r}", path=path, location=f"{loc}.name"
            )
        check_unique(by_name, name, i, "category name", path, f"{loc}.name")
        names[ident] = name
    return names


def _images(images: list[Any], path: str) -> tuple[dict[Any, int], list[tuple[str, dict[str, Any]]]]:
    """Validate images; return image id -> position and (file_name, every other field) per image."""
    index: dict[Any, int] = {}
    by_name: dict[str, int] = {}
    out = []
    for i, image in enumerate(images):
        loc = f"images[{i}]"
        if not isinstance(image, dict):
            raise InvalidInput(f"expected an object, got {image!r}", path=path, location=loc)
        for key in ("id", "file_name"):
            if key not in image:
                raise InvalidInput(f"missing required field {key!r}", path=path, location=loc)
        fields = image  # parsed for this call alone: taken apart in place, which saves a copy per image
        name = check_name(fields.pop("file_name"), path, f"{loc}.file_name")
        ident = fields["id"]
        check_id(ident, path, f"{loc}.id")
        check_unique(index, ident, i, "image id", path, f"{loc}.id")
        check_unique(by_name, name, i, "file name", path, f"{loc}.file_name")
        out.append((name, fields))
    return index, out


def _existing(root: Path, media: str, names: list[str]) -> set[str]:
    """Which names are files under the media folder, listing each folder once instead of a stat per file."""
    base = root / media if media else root
    listed: dict[str, set[str]] = {}
    found = set()
    for name in names:
        folder, _, leaf = name.rpartition("/")
        if folder not in listed:
            listed[folder] = _files(base / folder if folder else base)
        if leaf in listed[folder]:
            found.add(name)
    return found


def _files(folder: Path) -> set[str]:
    """The file names in one folder; a missing folder holds none (its images are external)."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()
