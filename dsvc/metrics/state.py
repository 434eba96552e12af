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

STATE_VERSION = 1
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


def state_path(folder: Path, predictions_root: ObjectId) -> Path:
    return folder / f"state-{predictions_root.hex()}.bin"


def _arrays(state: State) -> dict[str, np.ndarray]:
    out = {"keys": state.keys}
    out.update({f"c.{name}": getattr(state.cells, name) for name in CELL_FIELDS})
    out.update({f"f.{name}": getattr(state.frame_classes, name) for name in FRAME_FIELDS})
    return {name: np.ascontiguousarray(a) for name, a in out.items()}


def save_state(path: Path, state: State) -> None:
    """Write the state (derived data: temporary name and rename, no fsync; a torn file fails its hash)."""
    arrays = _arrays(state)
    digest = hasher(threaded=True)
    layout, offset = [], 0
    for name, a in arrays.items():
        digest.update(a.data.cast("B"))
        layout.append([name, a.dtype.str, list(a.shape), offset])
        offset += a.nbytes
    head = orjson.dumps(
        {
            "version": STATE_VERSION,
            "order": state.order,
            "classes": list(state.classes),
            "digest": digest.digest().hex(),
            "arrays": layout,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with open(tmp, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for a in arrays.values():
            f.write(a.data.cast("B"))
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
        )
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):  # empty files cannot be mapped
        return None


def _order_key(cells: Cells, keep: np.ndarray | slice, image_pos: np.ndarray, n_rank: int) -> np.ndarray:
    """The accumulate order of the detections at keep as one comparable (structured) key per detection:
    (class, -score, image position, rank)."""
    cls = cells.d_cls[keep]
    key = np.empty(len(cls), dtype=[("cls", "<i8"), ("score", "<f8"), ("place", "<i8")])
    key["cls"] = cls
    key["score"] = -cells.d_score[keep]
    key["place"] = image_pos[cells.d_frame[keep]] * n_rank + cells.d_rank[keep]
    return key


def patch(
    state: State, keys: np.ndarray, changed: np.ndarray, fresh: Gathered, image_pos: np.ndarray
) -> State:
    """The state of the same frames with the cells of the frames at positions `changed` replaced by
    fresh (their cells, gathered in that order), and keys the new cell keys of every frame."""
    old, new = state.cells, fresh.cells
    is_changed = np.zeros(len(keys), dtype=bool)
    is_changed[changed] = True

    # Ground truth stays in frame order: kept rows and the changed frames' rows, merged by frame.
    g_keep = np.flatnonzero(~is_changed[old.g_frame])
    g_frame = np.concatenate([old.g_frame[g_keep], changed[new.g_frame]])
    g_order = np.argsort(g_frame, kind="stable")
    g_place = np.empty(len(g_order), dtype=np.int64)
    g_place[g_order] = np.arange(len(g_order))
    old_row = np.full(len(old.g_frame) + 1, -1, dtype=np.int64)  # last: d_other -1 stays -1
    old_row[g_keep] = g_place[: len(g_keep)]
    new_row = np.r_[g_place[len(g_keep) :], -1]

    # Detections: the kept ones stay in accumulate order; the changed frames' are sorted and inserted.
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
            g_frame[len(g_keep) :],
            new.g_cls,
            new.g_ignored,
            new.g_score,
        ),
        image_pos,
    )
    n_rank = int(max(old.d_rank.max(initial=0), added.d_rank.max(initial=0))) + 1
    at = np.searchsorted(
        _order_key(old, d_keep, image_pos, n_rank), _order_key(added, slice(None), image_pos, n_rank)
    )

    # Column j of the result is the kept old column source[j], or the next added one where is_added[j].
    is_added = np.zeros(int(d_keep.sum()) + len(at), dtype=bool)
    added_at = at + np.arange(len(at))
    is_added[added_at] = True
    source = np.zeros(len(is_added), dtype=np.int64)
    source[~is_added] = np.flatnonzero(d_keep)

    def merged(old_col: np.ndarray, new_col: np.ndarray) -> np.ndarray:
        rows = old_col.reshape(-1, old_col.shape[-1])
        out = np.take(rows, source, axis=1)  # near-sequential: a fast take, on the 2-d view for flags
        out[:, added_at] = new_col.reshape(len(rows), -1)
        return out.reshape((*old_col.shape[:-1], -1))

    def ground(old_col: np.ndarray, new_col: np.ndarray) -> np.ndarray:
        return np.concatenate([old_col[g_keep], new_col])[g_order]

    cells = Cells(
        merged(old.d_frame, added.d_frame),
        merged(old.d_cls, added.d_cls),
        merged(old.d_score, added.d_score),
        merged(old.d_rank, added.d_rank),
        merged(old.d_matched, added.d_matched),
        merged(old.d_ignored, added.d_ignored),
        merged(old_row[old.d_other], added.d_other),
        merged(old.d_other_iou, added.d_other_iou),
        g_frame[g_order],
        ground(old.g_cls, new.g_cls),
        ground(old.g_ignored, new.g_ignored),
        ground(old.g_score, new.g_score),
    )
    fc = FrameClasses(*(getattr(state.frame_classes, name).copy() for name in FRAME_FIELDS))
    for name in FRAME_FIELDS:
        getattr(fc, name)[changed] = getattr(fresh.frame_classes, name)
    return State(state.order, state.classes, keys, cells, fc)
