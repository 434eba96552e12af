"""What every annotation format shares: the parsed records, the format protocol, located errors, safe names,
JSON reading, and fast constructors for label values that were already validated in bulk."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from dsvc.errors import InvalidInput
from dsvc.model import (
    RLE,
    BBox,
    Polygon,
    keypoints,
    polygon,
    trusted_rle,
)
from dsvc.objects import Frame, Labels, Source

T = TypeVar("T")
NUMBER_TYPES = frozenset((int, float))
# JSON literals orjson refuses; named in the error because "unexpected character" alone does not say why.
NON_FINITE = (b"NaN", b"Infinity", b"-Infinity")


@dataclass(frozen=True)
class FrameRecord:
    """One frame as a source describes it, before its media are hashed into a Frame."""

    id: str
    media: tuple[str, ...]
    url: str | None
    metadata: dict[str, Any]
    labels: Labels
    absent: tuple[str, ...] = ()  # media the source names that are not in the working tree


@dataclass(frozen=True)
class ParsedSource:
    """A parsed source: its frames sorted by id, and the dataset-level data needed to render it again."""

    frames: list[FrameRecord]
    metadata: dict[str, Any]


class Format(Protocol):
    """An annotation format: sniffing, parsing into frames and labels, rendering them back."""

    @property
    def name(self) -> str:
        """The name sources are registered with: "coco", "yolo" or "jsonl"."""

    def detect(self, path: Path) -> bool:
        """Cheap sniffing, so `dsvc source add` can skip --format when only one format fits."""

    def parse(self, source_path: str, media: str, root: Path) -> ParsedSource:
        """Frames and labels of a source file (paths relative to root, posix); bad input: InvalidInput."""

    def render(self, source: Source, frames: Iterable[tuple[str, Frame, Labels]]) -> dict[str, bytes]:
        """The source's files again (root-relative path -> bytes), semantically equal to the parsed ones."""

    def owned_paths(self, source_path: str, root: Path, media: str | None = None) -> set[str]:
        """The working-tree files render writes, so they are not also tracked as plain files."""


ID_TYPES = frozenset((int, str))


def check_id(value: Any, path: str, location: str) -> None:
    """Refuse an id that is neither an integer nor a string (booleans included), naming the place."""
    if type(value) not in ID_TYPES:
        raise InvalidInput(f"id must be an integer or a string, got {value!r}", path=path, location=location)


def check_unique(seen: dict[Any, int], key: Any, position: int, what: str, path: str, location: str) -> None:
    """Record where key first appears in a list; a second appearance is refused, naming the first
    (`location` is "section[position].field")."""
    first = seen.setdefault(key, position)
    if first != position:
        section = location.split("[", 1)[0]
        raise InvalidInput(
            f"duplicate {what} {key!r} (also {section}[{first}])", path=path, location=location
        )


def check_name(name: Any, path: str, location: str, folder: str = "the media folder") -> str:
    """Refuse a name that could leave its folder or alias another, since ids become paths and map keys."""
    if not isinstance(name, str):
        raise InvalidInput(f"expected a path string, got {name!r}", path=path, location=location)
    if not name:
        raise InvalidInput("empty name", path=path, location=location)
    if "\0" in name or "\\" in name:
        raise InvalidInput(f"{name!r} contains a NUL byte or a backslash", path=path, location=location)
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise InvalidInput(f"{name!r} escapes {folder}", path=path, location=location)
    if "" in parts or "." in parts:
        raise InvalidInput(f"{name!r} is not a normalized relative path", path=path, location=location)
    return name


def check_folder(folder: str, path: str, what: str) -> str:
    """Validate a folder relative to the repository root; "" and "." both mean the root itself."""
    folder = folder.rstrip("/")
    return "" if folder in ("", ".") else check_name(folder, path, what, "the repository")


def join(folder: str, name: str) -> str:
    """Join a root-relative folder ("" for the root) and a name into a posix path."""
    return f"{folder}/{name}" if folder else name


def read_source(root: Path, source_path: str) -> bytes:
    """Read a source file after checking its path stays inside the repository."""
    check_name(source_path, source_path, "source path", "the repository")
    return (root / source_path).read_bytes()


def load_json(data: bytes, path: str, line: int | None = None) -> Any:
    """Parse JSON, turning orjson's error into one message with the line and column (or the JSONL line).
    A UTF-8 byte order mark, which some Windows tools write, is skipped."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        message = f"malformed JSON: {exc.msg}"
        if data[exc.pos : exc.pos + 9].startswith(NON_FINITE):
            message += " (NaN and Infinity are not JSON numbers)"
        where = f"line {exc.lineno if line is None else line}, column {exc.colno}"
        raise InvalidInput(message, path=path, location=where) from None


def dump_json(value: Any) -> bytes:
    """Serialise with orjson, which refuses NaN and writes tuples (from decoded objects) as arrays."""
    return orjson.dumps(value)


def item_types(values: Iterable[Sequence[Any]]) -> set[type]:
    """The types of the items of all the sequences, found at C speed (numbers: within NUMBER_TYPES)."""
    return set(map(type, chain.from_iterable(values)))


def number(value: Any, path: str, location: str, *, non_negative: bool = False) -> float:
    """Validate one JSON number (orjson already refuses NaN and Infinity); bools are not numbers."""
    if type(value) not in NUMBER_TYPES:
        raise InvalidInput(f"expected a number, got {value!r}", path=path, location=location)
    if non_negative and value < 0:
        raise InvalidInput(f"must not be negative, got {value!r}", path=path, location=location)
    return float(value)


def numbers(value: Any, path: str, location: str) -> list[float]:
    """Validate a JSON list of numbers, naming the first bad item."""
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"expected a list of numbers, got {value!r}", path=path, location=location)
    return [number(v, path, f"{location}[{i}]") for i, v in enumerate(value)]


def validated(build: Callable[..., T], path: str, location: str, *args: Any) -> T:
    """Call a model constructor or validator, reporting its ValueError at the given place."""
    try:
        return build(*args)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(str(exc), path=path, location=location) from None


def bbox_from_json(value: Any, path: str, location: str) -> BBox:
    """Read a JSON [x, y, width, height] box."""
    return validated(BBox.from_value, path, location, numbers(value, path, location))


def polygon_from_json(rings: Any, path: str, location: str) -> Polygon:
    """Read JSON polygon rings, each a flat [x1, y1, x2, y2, ...] list of at least three points."""
    if not isinstance(rings, list):
        raise InvalidInput(f"expected a list of rings, got {rings!r}", path=path, location=location)
    values = [numbers(ring, path, f"{location}[{k}]") for k, ring in enumerate(rings)]
    return validated(polygon, path, location, values)


def keypoints_from_json(value: Any, path: str, location: str) -> tuple[float, ...]:
    """Read a JSON flat [x1, y1, v1, ...] keypoint list."""
    return validated(keypoints, path, location, numbers(value, path, location))


def rle_from_json(value: Any, path: str, location: str) -> RLE:
    """Read a COCO RLE mask object, {"size": [height, width], "counts": str | [int, ...]}: checked at C
    speed when well-formed (crowd masks hold thousands of counts), field by field to name an error."""
    if type(value) is dict and len(value) == 2:
        size, counts = value.get("size"), value.get("counts")
        if type(size) is list and len(size) == 2 and {type(size[0]), type(size[1])} == {int}:
            height, width = size
            if type(counts) is str and height >= 0 and width >= 0:
                return trusted_rle(height, width, counts)
            if (
                type(counts) is list
                and set(map(type, counts)) <= {int}
                and sum(counts) == height * width
                and min(counts, default=0) >= 0
                and height >= 0
                and width >= 0
            ):
                return trusted_rle(height, width, tuple(counts))
    if not isinstance(value, dict) or set(value) != {"size", "counts"}:
        raise InvalidInput("a mask must be {'size': [h, w], 'counts': ...}", path=path, location=location)
    size, counts = value["size"], value["counts"]
    if not isinstance(size, list) or len(size) != 2 or any(type(v) is not int for v in size):
        raise InvalidInput(f"mask size must be [height, width], got {size!r}", path=path, location=location)
    if not isinstance(counts, str | list):
        raise InvalidInput(
            f"mask counts must be a string or a list, got {counts!r}", path=path, location=location
        )
    return validated(
        RLE, path, location, size[0], size[1], counts if isinstance(counts, str) else tuple(counts)
    )


def rle_to_json(height: int, width: int, counts: str | Sequence[int]) -> dict[str, Any]:
    """The COCO form of a mask (its `RLE.to_value`), as pycocotools reads it."""
    return {"size": [height, width], "counts": counts}
