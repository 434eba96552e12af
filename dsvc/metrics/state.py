"""The evaluation state: the cells of an inference set's last evaluation over all frames, with the
detections already in accumulate order, so the next evaluation of the same predictions patches it.

An incremental evaluation used to gather every cached cell and sort every detection again: the sort by
score is global. The state keeps the result of that work under the predictions root (an inference set is
evaluated at checkpoint after checkpoint with the same predictions): the next evaluation over the same
frames and image order compares each frame's cell key with the state's, takes out the detections and
ground truth of the frames whose key changed, and merges in their new cells at the places the accumulate
order gives them (a `searchsorted` on the (class, -score, image position, rank) key), so neither the cell
segments of unchanged frames nor a global sort are read or done again. Accumulate then runs on the
patched arrays: the same integers in the same order as a cold evaluation, so the same numbers.

One file per predictions root: raw arrays after a JSON header that names them and carries the BLAKE3 of
the body, written like every derived file (temporary name, rename, no fsync) and read without a copy
per array. A state that is torn, corrupt, of another version, or of another frame list, class list or
key count is ignored and rewritten from a full gather.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import orjson

from dsvc.atomic import temp_name
from dsvc.hashing import ObjectId, hash_bytes, hasher
from dsvc.metrics.accumulate import sort_detections
from dsvc.metrics.cache import KEY_SIZE, FrameClasses, Gathered
from dsvc.metrics.match import Cells

STATE_VERSION = 2  # 2: the labels root the keys were computed for
CELL_FIELDS = tuple(f.name for f in fields(Cells))
FRAME_FIELDS = tuple(f.name for f in fields(FrameClasses))


@dataclass(frozen=True)
class State:
    """Cells of every frame of one evaluation: detections in accumulate order, ground truth in frame
    order (d_other indexes it), frame fields by frame position."""

    order: str  # identity of the frame list and its image order
    classes: tuple[str, ...]  # names the class codes index
    keys: np.ndarray  # (frames, KEY_SIZE) uint8: each frame's cell key
    cells: Cells
    frame_classes: FrameClasses
    labels: ObjectId  # the labels root of the version the keys belong to


def state_path(folder: Path, predictions_root: ObjectId) -> Path:
    return folder / f"state-{predictions_root.hex()}.bin"


def _arrays(state: State) -> dict[str, np.ndarray]:
    out = {"keys": state.keys}
    out.update({f"c.{name}": getattr(state.cells, name) for name in CELL_FIELDS})
    out.update({f"f.{name}": getattr(state.frame_classes, name) for name in FRAME_FIELDS})
    return {name: np.ascontiguousarray(a) for name, a in out.items()}


def _raw(a: np.ndarray) -> memoryview | bytes:
    """A contiguous array's bytes without a copy (a view cannot be cast when a dimension is 0)."""
    return a.data.cast("B") if a.size else b""


def save_state(path: Path, state: State) -> None:
    """Write the state (derived data: temporary name and rename, no fsync; a torn file fails its hash)."""
    arrays = _arrays(state)
    digest = hasher(threaded=True)
    layout, offset = [], 0
    for name, a in arrays.items():
        digest.update(_raw(a))
        layout.append([name, a.dtype.str, list(a.shape), offset])
        offset += a.nbytes
    head = orjson.dumps(
        {
            "version": STATE_VERSION,
            "order": state.order,
            "classes": list(state.classes),
            "labels": state.labels.hex(),
            "digest": digest.digest().hex(),
            "arrays": layout,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with open(tmp, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for a in arrays.values():
            f.write(_raw(a))
    tmp.replace(path)


def load_state(path: Path) -> State | None:
    """The state at path, or None when it is absent or unreadable (it is then rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # arrays are views of the mapping
        size = int.from_bytes(data[:8], "little")
        head = orjson.loads(data[8 : 8 + size])
        body = memoryview(data)[8 + size :]
        if head["version"] != STATE_VERSION or hash_bytes(body).hex() != head["digest"]:
            return None
        arrays = {
            name: np.frombuffer(body, np.dtype(dtype), int(np.prod(shape)), offset).reshape(shape)
            for name, dtype, shape, offset in head["arrays"]
        }
        return State(
            str(head["order"]),
            tuple(head["classes"]),
            arrays["keys"].reshape(-1, KEY_SIZE),
            Cells(*(arrays[f"c.{name}"] for name in CELL_FIELDS)),
            FrameClasses(*(arrays[f"f.{name}"] for name in FRAME_FIELDS)),
            ObjectId(bytes.fromhex(head["labels"])),
        )
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):  # empty files cannot be mapped
        return None


def _places(old: Cells, added: Cells, image_pos: np.ndarray) -> np.ndarray:
    """Where each added detection (in accumulate order) goes among the old ones (in accumulate order):
    the class range by searchsorted on classes, then the run of its score; inside a run of equal
    scores, by (image position, rank), searched in one integer key that increases along the old ones
    (run number, image position, rank). The keys are unique, so no tie is left."""
    lo = np.searchsorted(old.d_cls, added.d_cls, "left")
    hi = np.searchsorted(old.d_cls, added.d_cls, "right")
    first = np.empty(len(lo), dtype=np.int64)
    last = np.empty(len(lo), dtype=np.int64)
    for k in np.unique(added.d_cls).tolist():
        sel = np.flatnonzero(added.d_cls == k)
        start, stop = int(lo[sel[0]]), int(hi[sel[0]])
        scores = -old.d_score[start:stop]  # ascending within the class
        first[sel] = start + np.searchsorted(scores, -added.d_score[sel], "left")
        last[sel] = start + np.searchsorted(scores, -added.d_score[sel], "right")
    tied = np.flatnonzero(last > first)
    if len(tied) == 0:
        return first
    n_rank = int(max(old.d_rank.max(initial=0), added.d_rank.max(initial=0))) + 1
    size = (int(image_pos.max(initial=0)) + 1) * n_rank
    starts = np.r_[True, (old.d_cls[1:] != old.d_cls[:-1]) | (old.d_score[1:] != old.d_score[:-1])]
    run = np.cumsum(starts) - 1
    key = run * size + image_pos[old.d_frame] * n_rank + old.d_rank
    mine = run[first[tied]] * size + image_pos[added.d_frame[tied]] * n_rank + added.d_rank[tied]
    first[tied] = np.searchsorted(key, mine)
    return first


def _splice(keep: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For old rows where keep is true and new rows inserted before kept row at[j] (non-decreasing):
    the old row each result row takes (anything at new rows) and the result rows of the new ones."""
    added_at = at + np.arange(len(at))
    source = np.zeros(int(np.count_nonzero(keep)) + len(at), dtype=np.int64)
    is_added = np.zeros(len(source), dtype=bool)
    is_added[added_at] = True
    source[~is_added] = np.flatnonzero(keep)
    return source, added_at


def _merge(
    old_col: np.ndarray, new_col: np.ndarray, source: np.ndarray, added_at: np.ndarray, axis: int
) -> np.ndarray:
    """The spliced column: a near-sequential take of the old rows (a fast one), the new rows written in."""
    out = np.take(old_col, source, axis=axis)
    index: list[slice | np.ndarray] = [slice(None)] * old_col.ndim
    index[axis] = added_at
    out[tuple(index)] = new_col
    return out


def patch(
    state: State,
    keys: np.ndarray,
    changed: np.ndarray,
    fresh: Gathered,
    image_pos: np.ndarray,
    labels: ObjectId,
) -> State:
    """The state of the same frames with the cells of the frames at positions `changed` replaced by
    fresh (their cells, gathered in that order), and keys the new cell keys of every frame, those of the
    version whose labels root is `labels`."""
    old, new = state.cells, fresh.cells
    is_changed = np.zeros(len(keys), dtype=bool)
    is_changed[changed] = True

    # Ground truth stays in frame order: the changed frames' rows go where their frame's were.
    g_keep = ~is_changed[old.g_frame]
    g_frame = changed[new.g_frame]
    g_source, g_added_at = _splice(g_keep, np.searchsorted(old.g_frame[g_keep], g_frame))
    old_row = np.full(len(old.g_frame) + 1, -1, dtype=np.int64)  # the last: d_other -1 stays -1
    kept_rows = np.ones(len(g_source), dtype=bool)
    kept_rows[g_added_at] = False
    old_row[np.flatnonzero(g_keep)] = np.flatnonzero(kept_rows)
    new_row = np.r_[g_added_at, -1]

    # Detections stay in accumulate order: the changed frames' are sorted and put in their places.
    d_keep = ~is_changed[old.d_frame]
    added = sort_detections(
        Cells(
            changed[new.d_frame],
            new.d_cls,
            new.d_score,
            new.d_rank,
            new.d_matched,
            new.d_ignored,
            new_row[new.d_other],
            new.d_other_iou,
            g_frame,
            new.g_cls,
            new.g_ignored,
            new.g_score,
        ),
        image_pos,
    )
    kept_before = np.r_[0, np.cumsum(d_keep)]
    d_source, d_added_at = _splice(d_keep, kept_before[_places(old, added, image_pos)])

    def merged(old_col: np.ndarray, new_col: np.ndarray) -> np.ndarray:
        return _merge(old_col, new_col, d_source, d_added_at, old_col.ndim - 1)

    def ground(old_col: np.ndarray, new_col: np.ndarray) -> np.ndarray:
        return _merge(old_col, new_col, g_source, g_added_at, 0)

    cells = Cells(
        merged(old.d_frame, added.d_frame),
        merged(old.d_cls, added.d_cls),
        merged(old.d_score, added.d_score),
        merged(old.d_rank, added.d_rank),
        merged(old.d_matched, added.d_matched),
        merged(old.d_ignored, added.d_ignored),
        merged(old_row[old.d_other], added.d_other),
        merged(old.d_other_iou, added.d_other_iou),
        ground(old.g_frame, g_frame),
        ground(old.g_cls, new.g_cls),
        ground(old.g_ignored, new.g_ignored),
        ground(old.g_score, new.g_score),
    )
    fc = FrameClasses(*(getattr(state.frame_classes, name).copy() for name in FRAME_FIELDS))
    for name in FRAME_FIELDS:
        getattr(fc, name)[changed] = getattr(fresh.frame_classes, name)
    return State(state.order, state.classes, keys, cells, fc, labels)
