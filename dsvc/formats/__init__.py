"""Annotation formats: parse a source file into frames and labels, render them back, detect the format."""

from __future__ import annotations

from pathlib import Path

from dsvc.errors import InvalidInput
from dsvc.formats.coco import CocoFormat
from dsvc.formats.common import Format, FrameRecord, ParsedSource
from dsvc.formats.jsonl import JsonlFormat
from dsvc.formats.yolo import YoloFormat

FORMATS: dict[str, Format] = {f.name: f for f in (CocoFormat(), YoloFormat(), JsonlFormat())}

__all__ = ["FORMATS", "Format", "FrameRecord", "ParsedSource", "detect_format", "get_format"]


def get_format(name: str) -> Format:
    """The format of a name, or InvalidInput listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidInput(f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}") from None


def detect_format(path: Path) -> str:
    """The one format whose sniffing accepts the file; InvalidInput when none or several do."""
    found = [name for name, fmt in FORMATS.items() if fmt.detect(path)]
    if len(found) != 1:
        which = "none" if not found else " and ".join(found)
        raise InvalidInput(
            f"cannot tell the format (matches {which}); pass it explicitly: {', '.join(sorted(FORMATS))}",
            path=str(path),
        )
    return found[0]
