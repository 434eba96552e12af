"""The cell cache: match results of frames, keyed by content (labels id, predictions id), one folder per
parameters digest under `.dsvc/cache/metrics/`.

Each evaluation that computed cells adds one segment file: columnar numpy arrays of its frames' cells,
written once under the hash of its bytes (temporary name and rename; no fsync: a segment torn by a crash
fails its hash on reading and is dropped). Readers index every segment of the digest by key and read a
segment's cells when first gathered; past MAX_SEGMENTS the segments are merged into one (written before
the old ones are deleted). The cache is derived data: deleting it costs one cold evaluation.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dsvc.atomic import temp_name
from dsvc.errors import CorruptObject
from dsvc.hashing import hash_bytes
from dsvc.metrics.match import Cells, expand_ranges

MAX_SEGMENTS = 16
KEY_SIZE = 64  # labels id + predictions id (32 zero bytes for none)


@dataclass(frozen=True)
class FrameClasses:
    """Per-frame classification: the class of its whole-image label and of its best whole-image
    prediction (codes, -1 when absent), and that prediction's score."""

    true: np.ndarray
    pred: np.ndarray
    score: np.ndarray


@dataclass(frozen=True)
class Segment:
    """Cells of some frames: per-frame keys and offsets into the detection and ground truth columns."""

    keys: np.ndarray  # (n, KEY_SIZE) uint8 (a bytes dtype would drop trailing zero bytes)
    classes: np.ndarray  # class names the codes index
    d_start: np.ndarray  # (n + 1,)
    g_start: np.ndarray  # (n + 1,)
    cells: Cells  # d_frame / g_frame are rows of this segment
    frame_classes: FrameClasses


def write_derived(path: Path, data: bytes) -> None:
    """Replace path with data atomically but without fsync: cached data is derived, and a file torn by a
    crash is detected on reading (segments are named by their hash) and computed again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pack(bits: np.ndarray) -> np.ndarray:
    """Pack each row's flags (the row size is spelled out: a segment may have no ground truth rows)."""
    return np.packbits(bits.reshape(len(bits), int(np.prod(bits.shape[1:]))), axis=1, bitorder="little")


def _unpack(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    flat = np.unpackbits(packed, axis=1, count=size, bitorder="little").astype(bool)
    return flat.reshape((len(packed), *shape))


def _pack_rows(bits: np.ndarray) -> np.ndarray:
    """Pack (area, threshold, detection) flags along the detections."""
    return np.packbits(bits, axis=-1, bitorder="little")


def _unpack_rows(packed: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=n, bitorder="little").astype(bool)


def encode(seg: Segment) -> bytes:
    c = seg.cells
    arrays = {
        "keys": seg.keys,
        "classes": seg.classes,
        "d_start": seg.d_start,
        "g_start": seg.g_start,
        "d_cls": c.d_cls.astype(np.int32),
        "d_score": c.d_score,
        "d_rank": c.d_rank.astype(np.int32),
        "d_matched": _pack_rows(c.d_matched),
        "d_ignored": _pack_rows(c.d_ignored),
        "d_other": c.d_other.astype(np.int32),
        "d_other_iou": c.d_other_iou,
        "g_cls": c.g_cls.astype(np.int32),
        "g_ignored": _pack(c.g_ignored),
        "g_score": c.g_score,
        "shape": np.array(c.d_matched.shape[:2], dtype=np.int64),
        "f_true": seg.frame_classes.true.astype(np.int32),
        "f_pred": seg.frame_classes.pred.astype(np.int32),
        "f_score": seg.frame_classes.score,
    }
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def decode(data: bytes, where: str) -> Segment:
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        n_a, n_t = (int(v) for v in z["shape"])
        d_start, g_start = z["d_start"], z["g_start"]
        d_frame = np.repeat(np.arange(len(d_start) - 1), np.diff(d_start))
        g_frame = np.repeat(np.arange(len(g_start) - 1), np.diff(g_start))
        cells = Cells(
            d_frame,
            z["d_cls"].astype(np.int64),
            z["d_score"],
            z["d_rank"].astype(np.int64),
            _unpack_rows(z["d_matched"], int(d_start[-1])).reshape(n_a, n_t, -1),
            _unpack_rows(z["d_ignored"], int(d_start[-1])).reshape(n_a, n_t, -1),
            z["d_other"].astype(np.int64),
            z["d_other_iou"],
            g_frame,
            z["g_cls"].astype(np.int64),
            _unpack(z["g_ignored"], (n_a,)),
            z["g_score"],
        )
        fc = FrameClasses(z["f_true"].astype(np.int64), z["f_pred"].astype(np.int64), z["f_score"])
        return Segment(z["keys"], z["classes"], d_start, g_start, cells, fc)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise CorruptObject(f"metrics cache segment {where} is unreadable ({exc}); delete it") from None


def _offsets(frames: np.ndarray, n: int) -> np.ndarray:
    return np.searchsorted(frames, np.arange(n + 1))


def make_segment(keys: Sequence[bytes], classes: Sequence[str], cells: Cells, fc: FrameClasses) -> Segment:
    """A segment from a batch's cells (d_frame / g_frame index keys)."""
    n = len(keys)
    return Segment(
        np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(n, KEY_SIZE),
        np.array(classes, dtype=str),
        _offsets(cells.d_frame, n),
        _offsets(cells.g_frame, n),
        cells,
        fc,
    )


class StaleSegment(Exception):
    """A segment indexed by its keys failed its hash when its cells were read (torn by a crash): it is
    deleted, and the evaluation starts again without it."""


class CellCache:
    """The segments of one parameters digest, indexed by frame key.

    Opening reads only each segment's keys and class names: an evaluation patched from the state of the
    previous one (see `state`) needs the cells of the changed frames alone, so a segment's cells are read,
    and its hash checked, the first time they are gathered."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: list[Path] = []
        self.classes: list[np.ndarray] = []
        self.index: dict[bytes, tuple[int, int]] = {}
        self._segments: list[Segment | None] = []
        if folder.is_dir():
            for path in sorted(folder.glob("seg-*.npz")):
                try:
                    with np.load(path, allow_pickle=False) as z:
                        keys, classes = z["keys"], z["classes"]
                except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                    path.unlink(missing_ok=True)  # torn by a crash (written without fsync): recompute
                    continue
                self._attach(None, keys, classes, path)

    def _attach(self, seg: Segment | None, keys: np.ndarray, classes: np.ndarray, path: Path) -> None:
        number = len(self.paths)
        self._segments.append(seg)
        self.paths.append(path)
        self.classes.append(classes)
        data = keys.tobytes()
        self.index.update(
            (data[row * KEY_SIZE : (row + 1) * KEY_SIZE], (number, row)) for row in range(len(keys))
        )

    def segment(self, number: int) -> Segment:
        """The cells of a segment, read and checked against its hash on first use."""
        seg = self._segments[number]
        if seg is None:
            path = self.paths[number]
            data = path.read_bytes()
            if not path.stem.endswith(hash_bytes(data).hex()[:24]):
                path.unlink(missing_ok=True)
                raise StaleSegment(str(path))
            seg = self._segments[number] = decode(data, str(path))
        return seg

    def add(self, seg: Segment) -> None:
        """Store a segment durably and index it; merge all segments when there are too many."""
        if len(seg.keys) == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        data = encode(seg)
        path = self.folder / f"seg-{hash_bytes(data).hex()[:24]}.npz"
        write_derived(path, data)
        self._attach(seg, seg.keys, seg.classes, path)
        if len(self.paths) > MAX_SEGMENTS:
            self._compact()

    def _compact(self) -> None:
        keys = list(self.index)
        classes = sorted({str(c) for names in self.classes for c in names.tolist()})
        merged = gather(self, keys, classes)
        seg = make_segment(keys, classes, merged.cells, merged.frame_classes)
        old = list(self.paths)
        self.paths, self.classes, self.index, self._segments = [], [], {}, []
        self.add(seg)
        for path in old:
            if path not in self.paths:
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Gathered:
    """Cells of the requested frames, in request order (d_frame / g_frame are request positions)."""

    cells: Cells
    frame_classes: FrameClasses


def gather(cache: CellCache, keys: Sequence[bytes], classes: Sequence[str]) -> Gathered:
    """Assemble cached cells of keys (all present) with class codes into `classes`."""
    code = {name: i for i, name in enumerate(classes)}
    where = np.array([cache.index[k] for k in keys], dtype=np.int64).reshape(-1, 2)
    parts: list[tuple[np.ndarray, ...]] = []
    g_offset = 0
    n_a, n_t = 0, 0
    for number in range(len(cache.paths)):
        positions = np.flatnonzero(where[:, 0] == number)
        if len(positions) == 0:
            continue
        seg = cache.segment(number)
        rows = where[positions, 1]
        lookup = np.array([code[str(c)] for c in seg.classes.tolist()] + [-1], dtype=np.int64)
        c = seg.cells
        n_a, n_t = c.d_matched.shape[:2]
        fr_d, di = expand_ranges(seg.d_start[rows], seg.d_start[rows + 1])
        fr_g, gi = expand_ranges(seg.g_start[rows], seg.g_start[rows + 1])
        g_counts = seg.g_start[rows + 1] - seg.g_start[rows]
        frame_g0 = g_offset + np.cumsum(g_counts) - g_counts
        other = c.d_other[di]
        fc = seg.frame_classes
        parts.append(
            (
                positions[fr_d],
                lookup[c.d_cls[di]],
                c.d_score[di],
                c.d_rank[di],
                c.d_matched[:, :, di],
                c.d_ignored[:, :, di],
                np.where(other >= 0, frame_g0[fr_d] + other, -1),
                c.d_other_iou[di],
                positions[fr_g],
                lookup[c.g_cls[gi]],
                c.g_ignored[gi],
                c.g_score[gi],
                positions,
                lookup[fc.true[rows]],
                lookup[fc.pred[rows]],
                fc.score[rows],
            )
        )
        g_offset += int(g_counts.sum())
    if not parts:
        return _empty(len(keys), n_a or 4, n_t or 10)
    flags = (4, 5)  # d_matched, d_ignored: detections on the last axis
    cols = [
        np.concatenate(col, axis=2 if i in flags else 0) for i, col in enumerate(zip(*parts, strict=True))
    ]
    n = len(keys)
    true = np.full(n, -1, dtype=np.int64)
    pred = np.full(n, -1, dtype=np.int64)
    score = np.zeros(n)
    true[cols[12]], pred[cols[12]], score[cols[12]] = cols[13], cols[14], cols[15]
    return Gathered(_by_frame(Cells(*cols[:12])), FrameClasses(true, pred, score))


def _by_frame(cells: Cells) -> Cells:
    """Ground truth in request order (gathered segment by segment, it is not when the requested frames
    come from several), with d_other following its rows."""
    if np.all(cells.g_frame[1:] >= cells.g_frame[:-1]):
        return cells
    order = np.argsort(cells.g_frame, kind="stable")
    row = np.empty(len(order) + 1, dtype=np.int64)
    row[order] = np.arange(len(order))
    row[-1] = -1  # d_other -1 stays -1
    return replace(
        cells,
        d_other=row[cells.d_other],
        g_frame=cells.g_frame[order],
        g_cls=cells.g_cls[order],
        g_ignored=cells.g_ignored[order],
        g_score=cells.g_score[order],
    )


def _empty(n: int, n_a: int, n_t: int) -> Gathered:
    i = np.zeros(0, dtype=np.int64)
    f = np.zeros(0)
    flags = np.zeros((n_a, n_t, 0), dtype=bool)
    cells = Cells(i, i, f, i, flags, flags, i, f, i, i, np.zeros((0, n_a), bool), np.zeros((0, n_t)))
    return Gathered(cells, FrameClasses(np.full(n, -1), np.full(n, -1), np.zeros(n)))
