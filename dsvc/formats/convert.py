"""Export across formats: adapt a source's dataset-level data and its frames to another format.

JSONL holds anything. COCO needs image ids, annotation ids and categories, which are assigned when the
frames do not have them. YOLO needs class indices and boxes normalised by the image size, so frames
without a width and height in their metadata cannot be exported to YOLO (and YOLO frames, which have
only normalised boxes, cannot be exported to COCO): that is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from dsvc.errors import InvalidInput
from dsvc.model import Annotation, BBox
from dsvc.objects import Frame, Labels, Source

Frames = list[tuple[str, Frame, Labels]]
EXPORT_NAMES = {"coco": "annotations.json", "jsonl": "frames.jsonl", "yolo": "data.yaml"}


def _class_names(source: Source, frames: Frames) -> list[str]:
    """Classes in the source's own order (COCO categories, YOLO names), then any others sorted."""
    known = [c["name"] for c in source.metadata.get("categories", ())] or list(
        source.metadata.get("names", ())
    )
    seen = {a.label for _, _, labels in frames for a in labels.annotations}
    return known + sorted(seen - set(known))


def _size(frame_id: str, frame: Frame, target: str) -> tuple[float, float]:
    width, height = frame.metadata.get("width"), frame.metadata.get("height")
    if (
        frame.metadata.get("yolo_normalized")
        or not isinstance(width, int | float)
        or not isinstance(height, int | float)
    ):
        raise InvalidInput(
            f"frame {frame_id!r} has no image width and height in pixels, which {target} needs"
        )
    return float(width), float(height)


def _to_yolo(source: Source, frames: Frames, path: str) -> tuple[Source, Frames]:
    names = _class_names(source, frames)
    text = "names:\n" + "".join(f"  {i}: {name!r}\n" for i, name in enumerate(names))
    out = []
    for frame_id, frame, labels in frames:
        width, height = _size(frame_id, frame, "YOLO")
        anns = tuple(
            Annotation(
                a.label, bbox=BBox(a.bbox.x / width, a.bbox.y / height, a.bbox.w / width, a.bbox.h / height)
            )
            for a in labels.annotations
            if a.bbox is not None and not a.iscrowd
        )
        out.append(
            (frame_id, replace(frame, metadata={"yolo_normalized": True, "label_file": True}), Labels(anns))
        )
    return Source(path, "yolo", source.media, {"names": names, "text": text}), out


def _to_coco(source: Source, frames: Frames, path: str) -> tuple[Source, Frames]:
    names = _class_names(source, frames)
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(names)]
    used = [a.id for _, _, labels in frames for a in labels.annotations if isinstance(a.id, int)]
    next_ann = max(used, default=0) + 1
    out = []
    for number, (frame_id, frame, labels) in enumerate(frames, start=1):
        _size(frame_id, frame, "COCO")
        anns = []
        for a in labels.annotations:
            if a.id is None:
                a, next_ann = replace(a, id=next_ann), next_ann + 1
            anns.append(a)
        out.append((frame_id, replace(frame, metadata={"id": number, **frame.metadata}), Labels(tuple(anns))))
    return Source(path, "coco", source.media, {"categories": categories}), out


def convert(source: Source, frames: Iterable[tuple[str, Frame, Labels]], fmt: str) -> tuple[Source, Frames]:
    """The source and frames to render when exporting `source` as format fmt."""
    listed = list(frames)
    if source.format == fmt:
        return source, listed
    folder = source.path.rpartition("/")[0]
    name = EXPORT_NAMES.get(fmt, f"export.{fmt}")
    path = f"{folder}/{name}" if folder else name
    if fmt == "jsonl":
        return Source(path, "jsonl", source.media, {}), listed
    if fmt == "yolo":
        return _to_yolo(source, listed, path)
    if fmt == "coco":
        return _to_coco(source, listed, path)
    raise InvalidInput(f"cannot export to format {fmt!r}")
