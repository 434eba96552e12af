"""dsvc JSONL: one frame per line with its media, metadata and labels, lossless for everything the label
model holds; an optional first line carries the format version and dataset-level metadata."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsvc.errors import InvalidInput, UnsupportedFormat
from dsvc.formats.common import (
    FrameRecord,
    ParsedSource,
    bbox_from_json,
    check_folder,
    check_id,
    check_name,
    dump_json,
    join,
    keypoints_from_json,
    load_json,
    number,
    polygon_from_json,
    read_source,
    rle_from_json,
    rle_to_json,
)
from dsvc.gcpause import paused_gc
from dsvc.model import Annotation
from dsvc.objects import Frame, Labels, Source

FORMAT = "dsvc-jsonl"
VERSION = 1
HEADER_KEYS = frozenset(("format", "version", "metadata"))
FRAME_KEYS = frozenset(("id", "media", "url", "metadata", "labels"))
LABEL_KEYS = frozenset(
    ("class", "id", "bbox", "polygon", "mask", "keypoints", "iscrowd", "area", "score", "attributes")
)
SNIFF = 1 << 16


class JsonlFormat:
    """dsvc's own line format, for sources that COCO and YOLO cannot describe (any media, any metadata)."""

    name = "jsonl"

    def detect(self, path: Path) -> bool:
        """A .jsonl or .ndjson file whose first line is a JSON object with an `id` or a dsvc header."""
        if path.suffix.lower() not in (".jsonl", ".ndjson") or not path.is_file():
            return False
        with open(path, "rb") as handle:
            first = handle.readline(SNIFF).strip()
        try:
            value = load_json(first, str(path))
        except InvalidInput:
            return False
        return isinstance(value, dict) and ("id" in value or value.get("format") == FORMAT)

    def parse(self, source_path: str, media: str, root: Path) -> ParsedSource:
        media = check_folder(media, source_path, "media folder")
        data = read_source(root, source_path)
        metadata: dict[str, Any] = {}
        frames: list[FrameRecord] = []
        lines: dict[str, int] = {}
        first = True
        with paused_gc():
            for line_no, raw in enumerate(data.split(b"\n"), 1):
                if not raw.strip():
                    continue
                value = load_json(raw, source_path, line=line_no)
                where = f"line {line_no}"
                if not isinstance(value, dict):
                    raise InvalidInput(
                        f"expected a JSON object, got {value!r}", path=source_path, location=where
                    )
                if first and "id" not in value and "format" in value:
                    first = False
                    metadata = _header(value, source_path, where)
                    continue
                first = False
                frame = _frame(value, media, source_path, where)
                if frame.id in lines:
                    raise InvalidInput(
                        f"duplicate frame id {frame.id!r} (also line {lines[frame.id]})",
                        path=source_path,
                        location=f"{where}, id",
                    )
                lines[frame.id] = line_no
                frames.append(frame)
        frames.sort(key=lambda f: f.id)
        return ParsedSource(frames, metadata)

    def render(self, source: Source, frames: Iterable[tuple[str, Frame, Labels]]) -> dict[str, bytes]:
        header: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if source.metadata:
            header["metadata"] = source.metadata
        lines = [dump_json(header)]
        for frame_id, frame, labels in sorted(frames, key=lambda row: row[0]):
            paths = [m.path for m in frame.media if m.blob is not None or m.url is None]
            line: dict[str, Any] = {"id": frame_id, "media": [_relative(source, p, frame_id) for p in paths]}
            url = next((m.url for m in frame.media if m.url is not None), None)
            if url is not None:
                line["url"] = url
            if frame.metadata:
                line["metadata"] = frame.metadata
            if labels.annotations:
                line["labels"] = [_label_json(ann) for ann in labels.annotations]
            lines.append(dump_json(line))
        return {source.path: b"\n".join(lines) + b"\n"}

    def owned_paths(self, source_path: str, root: Path, media: str | None = None) -> set[str]:
        return {source_path}


def _header(value: dict[str, Any], path: str, where: str) -> dict[str, Any]:
    """The optional first line: format name, version (newer ones are refused), dataset metadata."""
    if set(value) - HEADER_KEYS or value.get("format") != FORMAT:
        raise InvalidInput(
            f"a header line is {{'format': {FORMAT!r}, 'version': n, 'metadata': {{...}}}}",
            path=path,
            location=where,
        )
    version = value.get("version")
    if type(version) is not int or version < 1:
        raise InvalidInput(f"version must be a positive integer, got {version!r}", path=path, location=where)
    if version > VERSION:
        raise UnsupportedFormat(f"{path}: dsvc JSONL version {version}; this dsvc reads up to {VERSION}")
    metadata = value.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidInput(
            f"metadata must be an object, got {metadata!r}", path=path, location=f"{where}, metadata"
        )
    return metadata


def _frame(value: dict[str, Any], media: str, path: str, where: str) -> FrameRecord:
    """One frame line; unknown fields are refused so that a typo does not silently drop data."""
    unknown = set(value) - FRAME_KEYS
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)}", path=path, location=where)
    if "id" not in value:
        raise InvalidInput("missing required field 'id'", path=path, location=where)
    ident = check_name(value["id"], path, f"{where}, id")
    files = value.get("media", [ident])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list):
        raise InvalidInput(
            f"media must be a path or a list of paths, got {files!r}", path=path, location=f"{where}, media"
        )
    paths = tuple(join(media, check_name(f, path, f"{where}, media[{i}]")) for i, f in enumerate(files))
    url = value.get("url")
    if url is not None and not isinstance(url, str):
        raise InvalidInput(f"url must be a string, got {url!r}", path=path, location=f"{where}, url")
    metadata = value.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidInput(
            f"metadata must be an object, got {metadata!r}", path=path, location=f"{where}, metadata"
        )
    labels = value.get("labels", [])
    if not isinstance(labels, list):
        raise InvalidInput(f"labels must be a list, got {labels!r}", path=path, location=f"{where}, labels")
    anns = tuple(_label(label, path, f"{where}, labels[{k}]") for k, label in enumerate(labels))
    return FrameRecord(ident, paths, url, metadata, Labels(anns))


def _label(value: Any, path: str, where: str) -> Annotation:
    """One annotation object; every field but `class` is optional."""
    if not isinstance(value, dict):
        raise InvalidInput(f"expected an object, got {value!r}", path=path, location=where)
    unknown = set(value) - LABEL_KEYS
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)}", path=path, location=where)
    label = value.get("class")
    if not isinstance(label, str) or not label:
        raise InvalidInput(
            f"class must be a non-empty string, got {label!r}", path=path, location=f"{where}.class"
        )
    ident = value.get("id")
    if ident is not None:
        check_id(ident, path, f"{where}.id")
    fields: dict[str, Any] = {}
    if "bbox" in value:
        fields["bbox"] = bbox_from_json(value["bbox"], path, f"{where}.bbox")
    if "polygon" in value:
        fields["polygon"] = polygon_from_json(value["polygon"], path, f"{where}.polygon")
    if "mask" in value:
        fields["mask"] = rle_from_json(value["mask"], path, f"{where}.mask")
    if "keypoints" in value:
        fields["keypoints"] = keypoints_from_json(value["keypoints"], path, f"{where}.keypoints")
    crowd = value.get("iscrowd", False)
    if type(crowd) is not bool:
        raise InvalidInput(
            f"iscrowd must be true or false, got {crowd!r}", path=path, location=f"{where}.iscrowd"
        )
    if "area" in value:
        fields["area"] = number(value["area"], path, f"{where}.area", non_negative=True)
    if "score" in value:
        fields["score"] = number(value["score"], path, f"{where}.score")
    attributes = value.get("attributes", {})
    if not isinstance(attributes, dict):
        raise InvalidInput(
            f"attributes must be an object, got {attributes!r}", path=path, location=f"{where}.attributes"
        )
    return Annotation(label, ident, iscrowd=crowd, attributes=attributes, **fields)


def _label_json(ann: Annotation) -> dict[str, Any]:
    """The JSONL object of an annotation: only the fields it has."""
    out: dict[str, Any] = {"class": ann.label}
    if ann.id is not None:
        out["id"] = ann.id
    if ann.bbox is not None:
        out["bbox"] = ann.bbox.to_value()
    if ann.polygon is not None:
        out["polygon"] = ann.polygon
    if ann.mask is not None:
        out["mask"] = rle_to_json(*ann.mask.to_value())
    if ann.keypoints is not None:
        out["keypoints"] = ann.keypoints
    if ann.iscrowd:
        out["iscrowd"] = True
    if ann.area is not None:
        out["area"] = ann.area
    if ann.score is not None:
        out["score"] = ann.score
    if ann.attributes:
        out["attributes"] = ann.attributes
    return out


def _relative(source: Source, media_path: str, frame_id: str) -> str:
    """A media path relative to the source's media folder, as lines store it."""
    prefix = f"{source.media}/" if source.media else ""
    if not media_path.startswith(prefix) or media_path == prefix:
        raise InvalidInput(
            f"frame {frame_id!r}: media {media_path!r} is not under the media folder {source.media!r}",
            path=source.path,
        )
    return media_path[len(prefix) :]
