"""YOLO detection and segmentation folders: one frame per image under the images folder, labels from the
matching labels/*.txt file, class names from data.yaml or classes.txt (kept verbatim, rendered back as is)."""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from dsvc.errors import InvalidInput
from dsvc.formats.common import (
    FrameRecord,
    ParsedSource,
    check_folder,
    check_name,
    join,
    read_source,
    validated,
)
from dsvc.model import Annotation, BBox
from dsvc.objects import Frame, Labels, Source

# Ultralytics' image suffixes.
IMAGE_SUFFIXES = frozenset(
    (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")
)
# How far outside [0, 1] a normalized coordinate may be (rounding in labeling tools), about 1 px in 1000.
TOLERANCE = 1e-3
# Attribute keeping a box's exact center when x = cx - w/2 does not give it back in floating point.
CENTER = "yolo_center"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class YoloFormat:
    """YOLO txt labels (`class cx cy w h` boxes or `class x1 y1 x2 y2 ...` polygons), normalized to [0, 1]."""

    name = "yolo"

    def detect(self, path: Path) -> bool:
        """A classes.txt file, or a YAML file with a `names` key."""
        if path.name == "classes.txt":
            return path.is_file()
        if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
            return False
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return False
        return isinstance(doc, dict) and "names" in doc

    def parse(self, source_path: str, media: str, root: Path) -> ParsedSource:
        text = _decode(read_source(root, source_path), source_path)
        names = _names(text, source_path)
        media = _media_folder(media, source_path)
        frames = []
        for image in _images(root, media, source_path):
            label_path = label_file(join(media, image))
            try:
                data = (root / label_path).read_bytes()
            except FileNotFoundError:
                data = None
            anns = () if data is None else _labels(_decode(data, label_path), names, label_path)
            metadata = {"yolo_normalized": True, "label_file": data is not None}
            frames.append(FrameRecord(image, (join(media, image),), None, metadata, Labels(anns)))
        return ParsedSource(frames, {"names": names, "text": text})

    def render(self, source: Source, frames: Iterable[tuple[str, Frame, Labels]]) -> dict[str, bytes]:
        classes = {name: i for i, name in enumerate(source.metadata["names"])}
        out = {source.path: str(source.metadata["text"]).encode()}
        for frame_id, frame, labels in frames:
            if not labels.annotations and not frame.metadata.get("label_file"):
                continue
            path = label_file(join(source.media, frame_id))
            lines = [_line(ann, classes, path) for ann in labels.annotations]
            out[path] = "".join(f"{line}\n" for line in lines).encode()
        return out

    def owned_paths(self, source_path: str, root: Path, media: str | None = None) -> set[str]:
        """The class-name file and the label file of every image (label files without an image stay plain
        files, so nothing is lost when they are not rendered)."""
        folder = _media_folder(
            join(posixpath.dirname(source_path), "images") if media is None else media, source_path
        )
        owned = {source_path}
        for image in _images(root, folder, source_path):
            path = label_file(join(folder, image))
            if (root / path).is_file():
                owned.add(path)
        return owned


def label_file(image_path: str) -> str:
    """The label file of an image, by Ultralytics' rule: the last `images` folder becomes `labels`, the
    suffix becomes .txt."""
    head, _, tail = f"/{image_path}".rpartition("/images/")
    return f"{head}/labels/{posixpath.splitext(tail)[0]}.txt".lstrip("/")


def _media_folder(media: str, path: str) -> str:
    """Validate the images folder: label paths are derived from it, so it must contain `images`."""
    media = check_folder(media, path, "media folder")
    if "/images/" not in f"/{media}/":
        raise InvalidInput(
            f"the media folder {media!r} must be an 'images' folder or inside one, where labels/ mirrors it",
            path=path,
        )
    return media


def _decode(data: bytes, path: str) -> str:
    """UTF-8 text of a file, or InvalidInput naming the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not UTF-8 text: {exc.reason}", path=path, location=f"byte {exc.start}") from None


def _names(text: str, path: str) -> list[str]:
    """Class names by index, from data.yaml's `names` (list or {index: name}) or classes.txt's lines."""
    if not path.lower().endswith((".yaml", ".yml")):
        names: Any = [line.strip() for line in text.splitlines() if line.strip()]
        return _unique(names, path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        raise InvalidInput(
            f"malformed YAML: {getattr(exc, 'problem', exc)}", path=path, location=where
        ) from None
    if not isinstance(doc, dict) or "names" not in doc:
        raise InvalidInput("a YOLO data.yaml needs a `names` list or map", path=path)
    if "kpt_shape" in doc:
        raise InvalidInput("YOLO pose labels (kpt_shape) are not supported", path=path, location="kpt_shape")
    names = doc["names"]
    if isinstance(names, dict):
        if sorted(names, key=str) != sorted(range(len(names)), key=str):
            raise InvalidInput("class indices must be 0 to n-1", path=path, location="names")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list):
        raise InvalidInput(f"expected a list or a map, got {names!r}", path=path, location="names")
    return _unique(names, path)


def _unique(names: list[Any], path: str) -> list[str]:
    """Refuse empty, non-string or repeated class names: labels are stored by class name."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise InvalidInput(
                f"class name must be a non-empty string, got {name!r}", path=path, location=f"names[{i}]"
            )
        if name in seen:
            raise InvalidInput(
                f"class {name!r} also has index {seen[name]}", path=path, location=f"names[{i}]"
            )
        seen[name] = i
    return list(names)


def _images(root: Path, media: str, path: str) -> list[str]:
    """Image paths relative to the media folder, sorted; hidden files (such as ._x.jpg) are skipped."""
    base = root / media
    if not base.is_dir():
        raise InvalidInput(f"the media folder {media!r} does not exist", path=path)
    found = []
    for rel in _walk(base, ""):
        if posixpath.splitext(rel)[1].lower() in IMAGE_SUFFIXES:
            found.append(check_name(rel, path, f"image {rel!r}"))
    return sorted(found)


def _walk(folder: Path, prefix: str) -> Iterator[str]:
    """Relative paths of the files under a folder, skipping hidden entries and linked folders."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):  # a linked folder could loop
            yield from _walk(Path(entry.path), f"{prefix}{entry.name}/")
        elif entry.is_file():
            yield f"{prefix}{entry.name}"


def _labels(text: str, names: list[str], path: str) -> tuple[Annotation, ...]:
    """Parse a label file: `class cx cy w h` (a box) or `class x1 y1 ... xn yn` (a polygon) per line."""
    anns = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise InvalidInput(
                f"expected 5 fields (class cx cy w h) or a class and 3+ points, got {len(fields)}",
                path=path,
                location=where,
            )
        if not (fields[0].isascii() and fields[0].isdigit()) or int(fields[0]) >= len(names):
            raise InvalidInput(
                f"class index {fields[0]!r} is not one of 0 to {len(names) - 1}", path=path, location=where
            )
        values = [_coordinate(v, path, where) for v in fields[1:]]
        anns.append(_annotation(names[int(fields[0])], values, path, where))
    return tuple(anns)


def _coordinate(text: str, path: str, where: str) -> float:
    """A normalized coordinate; the strict pattern refuses what float() would also take (nan, 1_0)."""
    if not _NUMBER.fullmatch(text):
        raise InvalidInput(f"{text!r} is not a number", path=path, location=where)
    value = float(text)
    if not math.isfinite(value) or not -TOLERANCE <= value <= 1 + TOLERANCE:
        raise InvalidInput(f"coordinate {text} is outside [0, 1]", path=path, location=where)
    return value


def _annotation(label: str, values: list[float], path: str, where: str) -> Annotation:
    """A box (kept top-left, plus the exact center when x + w/2 does not give it back) or a polygon."""
    if len(values) > 4:
        return Annotation(label, polygon=(tuple(values),))
    cx, cy, w, h = values
    if w < 0 or h < 0:
        raise InvalidInput(f"box has negative size: width {w}, height {h}", path=path, location=where)
    x, y = cx - w / 2, cy - h / 2
    if x < -TOLERANCE or y < -TOLERANCE or x + w > 1 + TOLERANCE or y + h > 1 + TOLERANCE:
        raise InvalidInput("box extends outside the image", path=path, location=where)
    box = validated(BBox, path, where, x, y, w, h)
    exact = x + w / 2 == cx and y + h / 2 == cy
    return Annotation(label, bbox=box, attributes={} if exact else {CENTER: [cx, cy]})


def _line(ann: Annotation, classes: dict[str, int], path: str) -> str:
    """One label line, numbers written with repr so that they parse back to the same floats."""
    if ann.label not in classes:
        raise InvalidInput(f"class {ann.label!r} is not in the class names", path=path)
    if ann.bbox is not None:
        box = ann.bbox
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        center = ann.attributes.get(CENTER)
        if center is not None and center[0] - box.w / 2 == box.x and center[1] - box.h / 2 == box.y:
            cx, cy = center  # the exact center, still valid for this box
        values: Iterable[float] = (cx, cy, box.w, box.h)
    elif ann.polygon is not None and len(ann.polygon) == 1:
        values = ann.polygon[0]
    else:
        raise InvalidInput("a YOLO label is one box or one polygon ring", path=path)
    return " ".join([str(classes[ann.label]), *map(repr, values)])
