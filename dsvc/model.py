"""Label geometry: the typed, validated annotation values that Labels objects hold.

Validation happens here, once, when values enter dsvc (NaN, infinities and negative sizes are refused), so
everything stored is well-formed and canonical. Each type converts to and from the plain msgpack value
stored in objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsvc.codec import canonical


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class BBox:
    """An axis-aligned box in pixels: top-left corner, width and height (COCO convention)."""

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        for name in ("x", "y", "w", "h"):
            object.__setattr__(self, name, _finite(getattr(self, name), f"bbox {name}"))
        if self.w < 0 or self.h < 0:
            raise ValueError(f"bbox has negative size: width {self.w}, height {self.h}")

    @property
    def area(self) -> float:
        return self.w * self.h

    def to_value(self) -> list[float]:
        return [self.x, self.y, self.w, self.h]

    @classmethod
    def from_value(cls, value: Sequence[Any]) -> BBox:
        if not isinstance(value, list | tuple) or len(value) != 4:
            raise ValueError(f"bbox must be [x, y, width, height], got {value!r}")
        return cls(*value)


@dataclass(frozen=True, slots=True)
class RLE:
    """A run-length encoded mask: COCO's compressed string form or its uncompressed list of counts."""

    height: int
    width: int
    counts: str | tuple[int, ...]

    def __post_init__(self) -> None:
        if self.height < 0 or self.width < 0:
            raise ValueError(f"mask size must be non-negative, got {self.height}x{self.width}")
        if not isinstance(self.counts, str):
            counts = tuple(self.counts)
            if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
                raise ValueError("mask counts must be non-negative integers")
            if sum(counts) != self.height * self.width:
                raise ValueError(f"mask counts sum to {sum(counts)}, not {self.height}x{self.width}")
            object.__setattr__(self, "counts", counts)

    def to_value(self) -> list[Any]:
        counts = self.counts if isinstance(self.counts, str) else list(self.counts)
        return [self.height, self.width, counts]

    @classmethod
    def from_value(cls, value: Sequence[Any]) -> RLE:
        height, width, counts = value
        return cls(height, width, counts if isinstance(counts, str) else tuple(counts))


Polygon = tuple[tuple[float, ...], ...]


def polygon(rings: Sequence[Sequence[Any]]) -> Polygon:
    """Validate COCO polygon rings: each a flat [x1, y1, x2, y2, ...] list of at least three points."""
    out = []
    for ring in rings:
        if not isinstance(ring, list | tuple) or len(ring) % 2 or len(ring) < 6:
            raise ValueError("a polygon ring must be a flat list of at least 3 (x, y) points")
        out.append(tuple(_finite(v, "polygon coordinate") for v in ring))
    if not out:
        raise ValueError("a polygon needs at least one ring")
    return tuple(out)


def keypoints(values: Sequence[Any]) -> tuple[float, ...]:
    """Validate COCO keypoints: a flat [x1, y1, v1, ...] list of triplets."""
    if len(values) % 3:
        raise ValueError("keypoints must be a flat list of (x, y, visibility) triplets")
    return tuple(_finite(v, "keypoint") for v in values)


# Length of an annotation's stored value (`Annotation.to_value`).
ANNOTATION_FIELDS = 10


@dataclass(frozen=True)
class Annotation:
    """One label (or prediction) on a frame: a class plus any of box, polygon, mask and keypoints.

    A classification label has no geometry. `score` is set on predictions only. `attributes` keeps the
    source's extra fields so that export reproduces them.
    """

    label: str
    id: int | str | None = None
    bbox: BBox | None = None
    polygon: Polygon | None = None
    mask: RLE | None = None
    keypoints: tuple[float, ...] | None = None
    iscrowd: bool = False
    area: float | None = None
    score: float | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"class must be a non-empty string, got {self.label!r}")
        if self.area is not None:
            area = _finite(self.area, "area")
            if area < 0:
                raise ValueError(f"area must be non-negative, got {area}")
            object.__setattr__(self, "area", area)
        if self.score is not None:
            object.__setattr__(self, "score", _finite(self.score, "score"))

    def to_value(self) -> list[Any]:
        return [
            self.label,
            self.id,
            self.bbox.to_value() if self.bbox else None,
            [list(ring) for ring in self.polygon] if self.polygon else None,
            self.mask.to_value() if self.mask else None,
            list(self.keypoints) if self.keypoints is not None else None,
            self.iscrowd,
            self.area,
            self.score,
            canonical(self.attributes) if self.attributes else {},
        ]

    @classmethod
    def from_value(cls, value: Sequence[Any]) -> Annotation:
        label, ident, bbox, poly, mask, kps, iscrowd, area, score, attributes = value
        return cls(
            label=label,
            id=ident,
            bbox=BBox.from_value(bbox) if bbox is not None else None,
            polygon=polygon(poly) if poly is not None else None,
            mask=RLE.from_value(mask) if mask is not None else None,
            keypoints=keypoints(kps) if kps is not None else None,
            iscrowd=bool(iscrowd),
            area=area,
            score=score,
            attributes=attributes,
        )


# -- trusted construction ------------------------------------------------------------------------------
# Values read back from the store hash to their ids, so they are exactly what was validated on the way
# in; values a parser has checked in bulk are too. Building them without the validating constructors (and
# the frozen dataclass's per-field setattr) saves ~3 µs per box, most of decoding a million-box dataset.
# Anything from outside (files, remotes) goes through the validating constructors above.

_new = object.__new__


def _setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The setter of a slotted field's descriptor, which bypasses the frozen dataclass's __setattr__."""
    setter: Callable[[Any, Any], None] = vars(cls)[name].__set__
    return setter


_set_x, _set_y, _set_w, _set_h = (_setter(BBox, name) for name in ("x", "y", "w", "h"))
_set_height, _set_width, _set_counts = (_setter(RLE, name) for name in ("height", "width", "counts"))


def trusted_bbox(x: float, y: float, w: float, h: float) -> BBox:
    """A BBox from floats already checked in bulk (finite, non-negative size): the validating constructor
    costs 3 µs per box, most of a million-box parse."""
    box: BBox = _new(BBox)
    _set_x(box, x)
    _set_y(box, y)
    _set_w(box, w)
    _set_h(box, h)
    return box


def trusted_rle(height: int, width: int, counts: str | tuple[int, ...]) -> RLE:
    """An RLE from values already checked, skipping the validating constructor's per-count Python loop."""
    mask: RLE = _new(RLE)
    _set_height(mask, height)
    _set_width(mask, width)
    _set_counts(mask, counts)
    return mask


def trusted_annotation(
    label: str,
    ident: int | str | None,
    bbox: BBox | None,
    polygon: Polygon | None,
    mask: RLE | None,
    keypoints: tuple[float, ...] | None,
    iscrowd: bool,
    area: float | None,
    score: float | None,
    attributes: Mapping[str, Any],
) -> Annotation:
    """An Annotation from values already validated, built without the frozen dataclass's per-field setattr
    calls (a test checks it sets exactly the model's fields)."""
    ann: Annotation = _new(Annotation)
    d = ann.__dict__
    d["label"] = label
    d["id"] = ident
    d["bbox"] = bbox
    d["polygon"] = polygon
    d["mask"] = mask
    d["keypoints"] = keypoints
    d["iscrowd"] = iscrowd
    d["area"] = area
    d["score"] = score
    d["attributes"] = attributes
    return ann


def trusted_from_value(value: Sequence[Any]) -> Annotation:
    """Rebuild an annotation from its stored value without validating it again (see above)."""
    label, ident, bbox, poly, mask, kps, iscrowd, area, score, attributes = value
    return trusted_annotation(
        label,
        ident,
        trusted_bbox(*bbox) if bbox is not None else None,
        tuple(tuple(ring) for ring in poly) if poly is not None else None,
        trusted_rle(mask[0], mask[1], mask[2] if isinstance(mask[2], str) else tuple(mask[2]))
        if mask is not None
        else None,
        tuple(kps) if kps is not None else None,
        bool(iscrowd),
        area,
        score,
        attributes,
    )
