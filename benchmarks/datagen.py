"""Deterministic COCO-format dataset generator, so tests, benchmarks and the demo share realistic data."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is only a speed-up
    orjson = None  # type: ignore[assignment]

FRAMES_PER_FOLDER = 1000
MEDIA_THREADS = 4  # file creation waits on the disk, so a few threads overlap it even on two cores
JPEG_HEADER = np.frombuffer(b"\xff\xd8\xff\xe0", dtype=np.uint8)
MIN_MEDIA_SIZE = len(JPEG_HEADER) + 8  # header + 8-byte frame number, so every file is distinct
IMAGE_SIZES = np.array([(640, 480), (1280, 720), (1920, 1080)])
IMAGE_SIZE_P = (0.3, 0.5, 0.2)
WEATHER = ("clear", "cloudy", "rain", "fog", "snow")
WEATHER_P = (0.45, 0.25, 0.15, 0.1, 0.05)
CLASS_NAMES = (
    ("person", "person"),
    ("car", "vehicle"),
    ("bicycle", "vehicle"),
    ("truck", "vehicle"),
    ("bus", "vehicle"),
    ("traffic light", "outdoor"),
    ("dog", "animal"),
    ("stop sign", "outdoor"),
    ("motorcycle", "vehicle"),
    ("bench", "outdoor"),
)
LICENSES = (
    {"id": 1, "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
    {"id": 2, "name": "CC BY-SA 4.0", "url": "https://creativecommons.org/licenses/by-sa/4.0/"},
    {"id": 3, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
)
# Box sides whose area is exactly 32² or 96², alternating so that any two picks hit both boundaries.
BOUNDARY_SIDES = np.array(
    [(32, 32), (96, 96), (16, 64), (48, 192), (64, 16), (192, 48), (128, 72), (72, 128)]
)
EMPTY_FRAC = 0.02
NO_PRED_FRAC = 0.02
CROWD_FRAC = 0.03
BOUNDARY_FRAC = 0.01
BURST_FRAC = 0.002
DUPLICATE_FRAC = 0.005
EDIT_KINDS = ("move", "class", "add", "remove")
_GENERATE, _MUTATE = 0, 1
_TRUTH, _MEDIA, _MODEL = 0, 1, 2


@dataclass(frozen=True)
class Dataset:
    """Counts of a generated dataset, so callers can check sizes without re-reading it."""

    root: Path
    frames: int
    images: int
    annotations: int
    crowd: int
    empty_frames: int
    categories: int
    media_size: int
    models: tuple[str, ...]
    predictions: tuple[int, ...]


@dataclass(frozen=True)
class Mutation:
    """What one mutate() call changed, so diff and merge results can be checked against the truth."""

    root: Path
    relabeled: tuple[str, ...]
    added: tuple[str, ...]
    edits: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class _Truth:
    """Ground truth of a block of frames as flat arrays (boxes in centipixels), so predictions vectorise."""

    index: np.ndarray
    image_id: np.ndarray
    width: np.ndarray
    height: np.ndarray
    license: np.ndarray
    weather: np.ndarray
    captured: np.ndarray
    no_pred: np.ndarray
    burst: np.ndarray
    frame: np.ndarray
    category: np.ndarray
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    corner: np.ndarray
    crowd: np.ndarray


def _rng(*key: int) -> np.random.Generator:
    """One independent stream per purpose, so drawing more from one never shifts another."""
    return np.random.default_rng(list(key))


def _count(frac: float, n: int, guarantee: bool, least: int = 1) -> int:
    """How many items get an edge case; a floor when guaranteed, so small datasets still have it."""
    k = round(frac * n)
    return min(n, max(k, least)) if guarantee else k


def _pick(rng: np.random.Generator, candidates: np.ndarray, k: int, n: int) -> np.ndarray:
    """Mask of k random candidates out of n, so edge cases land on random frames or boxes."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(candidates, min(k, len(candidates)), replace=False)] = True
    return mask


def _file_name(index: int) -> str:
    """COCO file_name of a frame, relative to images/, in folders of FRAMES_PER_FOLDER to keep them small."""
    return f"{index // FRAMES_PER_FOLDER:03d}/frame_{index:06d}.jpg"


def _category_ids(n: int) -> list[int]:
    """1 then the primes: ids with gaps, to catch code that assumes contiguous category ids."""
    ids = [1]
    k = 2
    while len(ids) < n:
        if all(k % p for p in ids[1:]):
            ids.append(k)
        k += 1
    return ids


def _categories(n: int) -> list[dict[str, Any]]:
    """COCO categories with familiar names, generic ones past the named list."""
    names = [CLASS_NAMES[i] if i < len(CLASS_NAMES) else (f"class_{i}", "other") for i in range(n)]
    return [
        {"id": cid, "name": name, "supercategory": sup}
        for cid, (name, sup) in zip(_category_ids(n), names, strict=True)
    ]


def _class_weights(n: int) -> np.ndarray:
    """Zipf-like class frequencies, because real datasets are imbalanced."""
    weights = 1.0 / np.arange(1, n + 1)
    weights /= weights.sum()
    return weights


def _quality(position: int, models: int) -> float:
    """Model quality in (0, 1], growing with position so later models score better."""
    return (position + 1) / models


def _sizes(rng: np.random.Generator, width: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box sizes in centipixels with log-uniform area and aspect, so all COCO area ranges occur."""
    area = np.exp(rng.uniform(np.log(9.0), np.log(0.25 * width * height)))
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3.0), len(width)))
    w = np.clip(np.rint(np.sqrt(area * aspect) * 100), 200, width * 100).astype(np.int64)
    h = np.clip(np.rint(np.sqrt(area / aspect) * 100), 200, height * 100).astype(np.int64)
    return w, h


def _place(rng: np.random.Generator, size: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Random offsets keeping each box of the given size inside [0, limit]."""
    offsets: np.ndarray = np.floor(rng.random(len(size)) * (limit - size + 1)).astype(np.int64)
    return offsets


def _sample_truth(
    rng: np.random.Generator,
    index: np.ndarray,
    image_id: np.ndarray,
    cat_ids: list[int],
    boxes_per_frame: float,
    guarantee: bool,
) -> _Truth:
    """Draw images and boxes of a block of frames, with the edge cases guaranteed if asked."""
    n = len(index)
    size = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), n, p=IMAGE_SIZE_P)]
    width, height = size[:, 0], size[:, 1]
    counts = rng.poisson(boxes_per_frame, n)
    counts[_pick(rng, np.arange(n), _count(EMPTY_FRAC, n, guarantee), n)] = 0
    frame = np.repeat(np.arange(n), counts)
    m = len(frame)
    used = np.array(cat_ids[:-1])  # the last category never gets ground truth
    category = used[rng.choice(len(used), m, p=_class_weights(len(used)))]
    fw, fh = width[frame], height[frame]
    w, h = _sizes(rng, fw, fh)
    boundary = _pick(rng, np.arange(m), _count(BOUNDARY_FRAC, m, guarantee, least=2), m)
    sides = BOUNDARY_SIDES[np.arange(boundary.sum()) % len(BOUNDARY_SIDES)] * 100
    w[boundary], h[boundary] = sides[:, 0], sides[:, 1]
    crowd = _pick(rng, np.flatnonzero(~boundary), _count(CROWD_FRAC, m, guarantee), m)
    grid = boundary | crowd  # on whole pixels: exact areas, and crowd RLE masks match their boxes
    w[grid] = np.clip(np.rint(w[grid] / 100), 1, fw[grid]) * 100
    h[grid] = np.clip(np.rint(h[grid] / 100), 1, fh[grid]) * 100
    x, y = _place(rng, w, fw * 100), _place(rng, h, fh * 100)
    x[grid], y[grid] = x[grid] // 100 * 100, y[grid] // 100 * 100
    corner = np.where(boundary, 0.0, rng.uniform(0.05, 0.3, m))
    no_pred = _pick(rng, np.flatnonzero(counts > 0), _count(NO_PRED_FRAC, n, guarantee), n)
    burst = _pick(rng, np.flatnonzero(~no_pred), _count(BURST_FRAC, n, guarantee), n)
    seconds = index * 30 + rng.integers(0, 30, n)
    stamps = np.datetime64("2023-06-01T00:00:00") + seconds.astype("timedelta64[s]")
    return _Truth(
        index=index,
        image_id=image_id,
        width=width,
        height=height,
        license=rng.integers(1, len(LICENSES) + 1, n),
        weather=rng.choice(len(WEATHER), n, p=WEATHER_P),
        captured=np.char.replace(np.datetime_as_string(stamps), "T", " "),
        no_pred=no_pred,
        burst=burst,
        frame=frame,
        category=category,
        x=x,
        y=y,
        w=w,
        h=h,
        corner=corner,
        crowd=crowd,
    )


def _rle(x: int, y: int, w: int, h: int, width: int, height: int) -> dict[str, Any]:
    """Column-major uncompressed RLE of a filled rectangle, COCO's encoding of crowd regions."""
    head = x * height + y
    tail = width * height - head - (w - 1) * height - h
    runs = [w * h] if h == height else [h, height - h] * (w - 1) + [h]
    return {"counts": [head, *runs, tail] if tail else [head, *runs], "size": [height, width]}


def _annotations(
    ids: np.ndarray,
    image_id: np.ndarray,
    category: np.ndarray,
    box: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    corner: np.ndarray,
    crowd: np.ndarray,
    size: tuple[np.ndarray, np.ndarray],
) -> list[dict[str, Any]]:
    """COCO annotations from centipixel boxes: octagons touching the box, or RLE rectangles for crowds."""
    x, y, w, h = box
    cx, cy = np.rint(corner * w).astype(np.int64), np.rint(corner * h).astype(np.int64)
    x3, y3 = x + w, y + h
    points = np.stack(
        [x + cx, y, x3 - cx, y, x3, y + cy, x3, y3 - cy, x3 - cx, y3, x + cx, y3, x, y3 - cy, x, y + cy],
        axis=1,
    )
    area = np.where(crowd, w * h, w * h - 2 * cx * cy) / 10_000  # exact shoelace area of the octagon
    rows_crowd = np.flatnonzero(crowd)
    rles = {
        k: _rle(x0, y0, w0, h0, width, height)
        for k, (x0, y0, w0, h0), width, height in zip(
            rows_crowd.tolist(),
            (np.stack([x, y, w, h], axis=1)[rows_crowd] // 100).tolist(),
            size[0][rows_crowd].tolist(),
            size[1][rows_crowd].tolist(),
            strict=True,
        )
    }
    rows = zip(
        ids.tolist(),
        image_id.tolist(),
        category.tolist(),
        (points / 100).tolist(),
        area.tolist(),
        (np.stack([x, y, w, h], axis=1) / 100).tolist(),
        crowd.tolist(),
        strict=True,
    )
    return [
        {
            "id": ann_id,
            "image_id": img,
            "category_id": cat,
            "segmentation": rles[k] if is_crowd else [poly],
            "area": a,
            "bbox": bbox,
            "iscrowd": int(is_crowd),
        }
        for k, (ann_id, img, cat, poly, a, bbox, is_crowd) in enumerate(rows)
    ]


def _truth_annotations(t: _Truth, first_id: int) -> list[dict[str, Any]]:
    """COCO annotations of a block, numbered from first_id."""
    return _annotations(
        np.arange(first_id, first_id + len(t.frame)),
        t.image_id[t.frame],
        t.category,
        (t.x, t.y, t.w, t.h),
        t.corner,
        t.crowd,
        (t.width[t.frame], t.height[t.frame]),
    )


def _images(t: _Truth) -> list[dict[str, Any]]:
    """COCO image entries of a block, with a custom weather field for metadata filters."""
    rows = zip(
        t.image_id.tolist(),
        t.index.tolist(),
        t.width.tolist(),
        t.height.tolist(),
        t.license.tolist(),
        t.captured.tolist(),
        t.weather.tolist(),
        strict=True,
    )
    return [
        {
            "id": image_id,
            "file_name": _file_name(index),
            "width": width,
            "height": height,
            "license": lic,
            "date_captured": captured,
            "weather": WEATHER[weather],
        }
        for image_id, index, width, height, lic, captured, weather in rows
    ]


def _predictions(
    rng: np.random.Generator, t: _Truth, quality: float, cat_ids: list[int], guarantee: bool
) -> list[dict[str, Any]]:
    """COCO results of one model: noisy ground truth plus false positives, noisier when quality is low."""
    n = len(t.index)
    keep = (rng.random(len(t.frame)) >= 0.3 - 0.2 * quality) & ~t.no_pred[t.frame]
    frame = t.frame[keep]
    k = len(frame)
    fw, fh = t.width[frame] * 100, t.height[frame] * 100
    sigma = 0.15 - 0.1 * quality
    w0, h0 = t.w[keep], t.h[keep]
    w = np.clip(np.rint(w0 * np.exp(rng.normal(0, sigma, k))), 100, fw).astype(np.int64)
    h = np.clip(np.rint(h0 * np.exp(rng.normal(0, sigma, k))), 100, fh).astype(np.int64)
    x = np.clip(np.rint(t.x[keep] + (w0 - w) / 2 + rng.normal(0, sigma, k) * w0), 0, fw - w).astype(np.int64)
    y = np.clip(np.rint(t.y[keep] + (h0 - h) / 2 + rng.normal(0, sigma, k) * h0), 0, fh - h).astype(np.int64)
    category = t.category[keep]
    confused = rng.random(k) < 0.1 - 0.06 * quality
    category[confused] = rng.choice(cat_ids, confused.sum())
    score = rng.normal(0.6 + 0.3 * quality, 0.15, k)

    fp = rng.poisson(1.5 - quality, n)
    fp[np.bincount(t.frame, minlength=n) == 0] += 1  # frames without ground truth still get predictions
    fp[t.burst] += rng.integers(101, 131, t.burst.sum())  # more than COCOeval's maxDets=100
    fp[t.no_pred] = 0
    fp_frame = np.repeat(np.arange(n), fp)
    fp_w, fp_h = _sizes(rng, t.width[fp_frame], t.height[fp_frame])
    fp_x = _place(rng, fp_w, t.width[fp_frame] * 100)
    fp_y = _place(rng, fp_h, t.height[fp_frame] * 100)

    frame = np.concatenate([frame, fp_frame])
    category = np.concatenate([category, rng.choice(cat_ids, len(fp_frame))])
    box = np.stack([np.concatenate(v) for v in ((x, fp_x), (y, fp_y), (w, fp_w), (h, fp_h))], axis=1) / 100
    score = np.concatenate([score, rng.normal(0.25, 0.12, len(fp_frame))])
    score = np.clip(np.rint(score * 100), 1, 100) / 100  # two decimals, so many scores tie
    duplicates = rng.choice(len(frame), _count(DUPLICATE_FRAC, len(frame), guarantee), replace=False)
    rows = np.concatenate([np.arange(len(frame)), duplicates])
    rows = rows[np.argsort(frame[rows], kind="stable")]
    return [
        {"image_id": img, "category_id": cat, "bbox": bbox, "score": s}
        for img, cat, bbox, s in zip(
            t.image_id[frame[rows]].tolist(),
            category[rows].tolist(),
            box[rows].tolist(),
            score[rows].tolist(),
            strict=True,
        )
    ]


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC, which otherwise rescans the millions of fresh JSON containers many times."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_folder(images: Path, index: np.ndarray, size: int, key: tuple[int, ...]) -> None:
    """Write one folder's media: JPEG marker, the frame number (so files differ), random bytes."""
    generator = np.random.SFC64(np.random.SeedSequence([*key, int(index[0])]))  # fastest numpy generator
    words = generator.random_raw((len(index) * size + 7) // 8)
    data = words.astype("<u8", copy=False).view(np.uint8)[: len(index) * size].reshape(len(index), size)
    data[:, : len(JPEG_HEADER)] = JPEG_HEADER
    data[:, len(JPEG_HEADER) : MIN_MEDIA_SIZE] = index.astype(">u8").view(np.uint8).reshape(-1, 8)
    (images / _file_name(int(index[0]))).parent.mkdir(parents=True, exist_ok=True)
    for i, row in zip(index.tolist(), data, strict=True):
        with open(images / _file_name(i), "wb") as f:
            f.write(row.data)


def _write_media(
    pool: ThreadPoolExecutor, images: Path, index: np.ndarray, size: int, key: tuple[int, ...]
) -> list[Future[None]]:
    """Start writing the media of many frames, one job per folder, so it overlaps the JSON work."""
    folders = index // FRAMES_PER_FOLDER
    return [pool.submit(_write_folder, images, index[folders == f], size, key) for f in np.unique(folders)]


def _dump(obj: Any, path: Path) -> None:
    """Write compact JSON; orjson when installed, for speed, with byte-identical output either way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if orjson is None:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    else:
        data = orjson.dumps(obj)
    with open(path, "wb") as f:
        f.write(data)


def _load(path: Path) -> Any:
    """Read JSON, with orjson when installed."""
    with open(path, "rb") as f:
        data = f.read()
    return json.loads(data) if orjson is None else orjson.loads(data)


def _check_media_size(media_size: int) -> None:
    """Refuse media too small to hold the marker and the frame number that keeps files distinct."""
    if media_size < MIN_MEDIA_SIZE:
        raise ValueError(f"media_size must be at least {MIN_MEDIA_SIZE} bytes, got {media_size}")


def _write_truth(
    out_dir: Path,
    frames: int,
    media_size: int,
    seed: int,
    classes: int,
    boxes_per_frame: float,
    models: tuple[str, ...],
) -> Dataset:
    """Write ground truth and predictions of a new dataset, returning its counts."""
    categories = _categories(classes)
    cat_ids = [c["id"] for c in categories]
    rng = _rng(seed, _GENERATE, _TRUTH)
    image_id = 100 + rng.permutation(frames)
    if frames > 1 and np.all(np.diff(image_id) > 0):
        image_id = np.roll(image_id, 1)  # id order must differ from file-name order
    t = _sample_truth(rng, np.arange(frames), image_id, cat_ids, boxes_per_frame, guarantee=True)
    annotations = _truth_annotations(t, first_id=1)
    info = {
        "description": "dsvc synthetic COCO dataset",
        "version": "1.0",
        "year": 2023,
        "contributor": "benchmarks.datagen",
        "date_created": "2023-06-01",
        "url": "",
        "datagen": {
            "seed": seed,
            "media_size": media_size,
            "boxes_per_frame": boxes_per_frame,
            "models": models,
        },
    }
    coco = {
        "info": info,
        "licenses": list(LICENSES),
        "images": _images(t),
        "annotations": annotations,
        "categories": categories,
    }
    _dump(coco, out_dir / "annotations" / "instances.json")
    counts = []
    for position, model in enumerate(models):
        model_rng = _rng(seed, _GENERATE, _MODEL, position)
        predictions = _predictions(model_rng, t, _quality(position, len(models)), cat_ids, guarantee=True)
        _dump(predictions, out_dir / "predictions" / f"{model}.json")
        counts.append(len(predictions))
    return Dataset(
        root=out_dir,
        frames=frames,
        images=frames,
        annotations=len(annotations),
        crowd=int(t.crowd.sum()),
        empty_frames=int(np.sum(np.bincount(t.frame, minlength=frames) == 0)),
        categories=classes,
        media_size=media_size,
        models=models,
        predictions=tuple(counts),
    )


@_no_gc()
def generate(
    out_dir: Path,
    frames: int,
    *,
    media_size: int = 20_000,
    seed: int = 0,
    classes: int = 8,
    boxes_per_frame: float = 10.0,
    models: tuple[str, ...] = ("model_a", "model_b"),
) -> Dataset:
    """Write a COCO dataset (media, ground truth, predictions) that depends only on the arguments."""
    _check_media_size(media_size)
    if frames < 1 or classes < 2 or boxes_per_frame < 0 or seed < 0:
        raise ValueError("need frames >= 1, classes >= 2, boxes_per_frame >= 0 and seed >= 0")
    if not models or len(set(models)) != len(models):
        raise ValueError(f"models must be distinct and at least one, got {models!r}")
    out_dir = Path(out_dir)
    stale = [name for name in ("images", "annotations", "predictions") if (out_dir / name).exists()]
    if stale:
        raise FileExistsError(f"{out_dir} already has {', '.join(stale)}; generate into a fresh folder")
    with ThreadPoolExecutor(max_workers=MEDIA_THREADS) as pool:
        media = _write_media(
            pool, out_dir / "images", np.arange(frames), media_size, (seed, _GENERATE, _MEDIA)
        )
        dataset = _write_truth(out_dir, frames, media_size, seed, classes, boxes_per_frame, tuple(models))
        for job in media:
            job.result()
    return dataset


def _new_annotation(
    rng: np.random.Generator, image: dict[str, Any], cat_ids: list[int], ann_id: int
) -> dict[str, Any]:
    """A fresh non-crowd box on an existing image, drawn like generated ground truth."""
    width, height = np.array([image["width"]]), np.array([image["height"]])
    w, h = _sizes(rng, width, height)
    x, y = _place(rng, w, width * 100), _place(rng, h, height * 100)
    used = cat_ids[:-1]
    category = np.array([used[rng.choice(len(used), p=_class_weights(len(used)))]])
    return _annotations(
        np.array([ann_id]),
        np.array([image["id"]]),
        category,
        (x, y, w, h),
        rng.uniform(0.05, 0.3, 1),
        np.zeros(1, dtype=bool),
        (width, height),
    )[0]


def _moved(rng: np.random.Generator, ann: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """The annotation with its box moved and resized (crowds stay on whole pixels), shape and area redrawn."""
    width, height = image["width"] * 100, image["height"] * 100
    x, y, w, h = (round(v * 100) for v in ann["bbox"])
    unit = 100 if ann["iscrowd"] else 1
    while True:
        sw, sh = np.exp(rng.uniform(np.log(0.6), np.log(1.4), 2)).tolist()
        dx, dy = rng.uniform(-0.3, 0.3, 2).tolist()
        w2 = min(max(round(w * sw / unit) * unit, 200), width)
        h2 = min(max(round(h * sh / unit) * unit, 200), height)
        x2 = min(max(round((x + w / 2 + dx * w - w2 / 2) / unit) * unit, 0), width - w2)
        y2 = min(max(round((y + h / 2 + dy * h - h2 / 2) / unit) * unit, 0), height - h2)
        if (x2, y2, w2, h2) != (x, y, w, h):
            break
    return _annotations(
        np.array([ann["id"]]),
        np.array([ann["image_id"]]),
        np.array([ann["category_id"]]),
        (np.array([x2]), np.array([y2]), np.array([w2]), np.array([h2])),
        rng.uniform(0.05, 0.3, 1),
        np.array([bool(ann["iscrowd"])]),
        (np.array([image["width"]]), np.array([image["height"]])),
    )[0]


def _relabel(
    rng: np.random.Generator,
    image: dict[str, Any],
    anns: list[dict[str, Any]],
    cat_ids: list[int],
    next_id: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """Apply 1-3 edits to one frame, each on a different box, so the frame surely changes."""
    free = [anns[i] for i in rng.permutation(len(anns))]
    edits: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    removed: set[int] = set()
    for kind in rng.choice(EDIT_KINDS, rng.integers(1, 4)).tolist():
        if kind == "add" or not free:
            ann = _new_annotation(rng, image, cat_ids, next_id + len(new))
            new.append(ann)
            edit = {
                "kind": "add",
                "annotation_id": ann["id"],
                "category_id": ann["category_id"],
                "bbox": ann["bbox"],
            }
        elif kind == "move":
            ann = free.pop()
            old = ann["bbox"]
            ann.update(_moved(rng, ann, image))
            edit = {"kind": kind, "annotation_id": ann["id"], "old_bbox": old, "bbox": ann["bbox"]}
        elif kind == "class":
            ann = free.pop()
            old = ann["category_id"]
            choices = [c for c in cat_ids[:-1] if c != old] or [c for c in cat_ids if c != old]
            ann["category_id"] = choices[int(rng.integers(len(choices)))]
            edit = {
                "kind": kind,
                "annotation_id": ann["id"],
                "old_category_id": old,
                "category_id": ann["category_id"],
            }
        else:
            ann = free.pop()
            removed.add(ann["id"])
            edit = {
                "kind": kind,
                "annotation_id": ann["id"],
                "category_id": ann["category_id"],
                "bbox": ann["bbox"],
            }
        edits.append({"file_name": image["file_name"], **edit})
    return edits, new, removed


@_no_gc()
def mutate(
    root: Path, *, relabel: float = 0.01, add: int = 0, seed: int = 1, media_size: int | None = None
) -> Mutation:
    """Relabel and add frames of a generated dataset in place, and record the truth in mutation.json."""
    root = Path(root)
    gt_path = root / "annotations" / "instances.json"
    coco = _load(gt_path)
    meta = coco["info"]["datagen"]
    size = meta["media_size"] if media_size is None else media_size
    _check_media_size(size)
    if not 0 <= relabel <= 1 or add < 0 or seed < 0:
        raise ValueError("need 0 <= relabel <= 1, add >= 0 and seed >= 0")
    cat_ids = [c["id"] for c in coco["categories"]]
    images = coco["images"]
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    rng = _rng(seed, _MUTATE, _TRUTH)
    candidates = [image for image in images if by_image[image["id"]]]
    chosen = rng.choice(len(candidates), min(round(relabel * len(images)), len(candidates)), replace=False)
    next_id = max((ann["id"] for ann in coco["annotations"]), default=0) + 1
    edits: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    removed: set[int] = set()
    for c in sorted(chosen.tolist()):
        image = candidates[c]
        frame_edits, frame_new, frame_removed = _relabel(rng, image, by_image[image["id"]], cat_ids, next_id)
        edits += frame_edits
        new += frame_new
        removed |= frame_removed
        next_id += len(frame_new)
    relabeled = [candidates[c]["file_name"] for c in sorted(chosen.tolist())]
    added: list[str] = []
    if add:
        start = max(int(Path(image["file_name"]).stem.rpartition("_")[2]) for image in images) + 1
        index = np.arange(start, start + add)
        image_id = max(image["id"] for image in images) + 1 + rng.permutation(add)
        t = _sample_truth(rng, index, image_id, cat_ids, meta["boxes_per_frame"], guarantee=False)
        block = _images(t)
        images += block
        new += _truth_annotations(t, next_id)
        added = [image["file_name"] for image in block]
        for position, model in enumerate(meta["models"]):
            path = root / "predictions" / f"{model}.json"
            model_rng = _rng(seed, _MUTATE, _MODEL, position)
            quality = _quality(position, len(meta["models"]))
            _dump(_load(path) + _predictions(model_rng, t, quality, cat_ids, guarantee=False), path)
        with ThreadPoolExecutor(max_workers=MEDIA_THREADS) as pool:
            for job in _write_media(pool, root / "images", index, size, (seed, _MUTATE, _MEDIA)):
                job.result()
    coco["annotations"] = [ann for ann in coco["annotations"] if ann["id"] not in removed] + new
    _dump(coco, gt_path)
    _dump({"relabeled": relabeled, "added": added, "edits": edits}, root / "mutation.json")
    return Mutation(root=root, relabeled=tuple(relabeled), added=tuple(added), edits=tuple(edits))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate a dataset or mutate one, printing a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datagen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a new dataset into OUT")
    gen.add_argument("out", type=Path, metavar="OUT")
    gen.add_argument("--frames", type=int, required=True)
    gen.add_argument("--media-size", type=int, default=20_000, help="bytes per media file")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--classes", type=int, default=8)
    gen.add_argument("--boxes", type=float, default=10.0, help="mean boxes per frame")
    gen.add_argument("--models", nargs="+", default=["model_a", "model_b"], help="worst first")
    gen.add_argument("--json", action="store_true", help="print the summary as JSON")
    mut = commands.add_parser("mutate", help="relabel and add frames of the dataset in OUT")
    mut.add_argument("out", type=Path, metavar="OUT")
    mut.add_argument("--relabel", type=float, default=0.01, help="fraction of frames to relabel")
    mut.add_argument("--add", type=int, default=0, help="number of frames to add")
    mut.add_argument("--seed", type=int, default=1)
    mut.add_argument("--media-size", type=int, default=None, help="bytes per added media file")
    mut.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            ds = generate(
                args.out,
                args.frames,
                media_size=args.media_size,
                seed=args.seed,
                classes=args.classes,
                boxes_per_frame=args.boxes,
                models=tuple(args.models),
            )
            summary: dict[str, Any] = {**asdict(ds), "root": str(ds.root)}
            preds = ", ".join(f"{m}={n}" for m, n in zip(ds.models, ds.predictions, strict=True))
            line = (
                f"generated {ds.frames} frames, {ds.annotations} annotations ({ds.crowd} crowd), "
                f"{ds.categories} categories, predictions {preds} in {ds.root}"
            )
        else:
            mu = mutate(
                args.out, relabel=args.relabel, add=args.add, seed=args.seed, media_size=args.media_size
            )
            summary = {
                "root": str(mu.root),
                "relabeled": len(mu.relabeled),
                "added": len(mu.added),
                "edits": len(mu.edits),
            }
            line = (
                f"mutated {mu.root}: relabeled {len(mu.relabeled)} frames ({len(mu.edits)} edits), "
                f"added {len(mu.added)} frames"
            )
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    print(json.dumps(summary) if args.json else line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
