"""Reading a version's dataset: its frames with labels, filters, counts, and export to a format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dsvc import tree
from dsvc.atomic import write_file
from dsvc.formats import get_format
from dsvc.formats.convert import convert
from dsvc.hashing import ObjectId
from dsvc.objects import Frame, Labels, Source, load, to_jsonable
from dsvc.store import ObjectStore

READ_BATCH = 4096


def iter_frames(store: ObjectStore, roots: Mapping[str, ObjectId]) -> Iterator[tuple[str, Frame, Labels]]:
    """Every frame of a version with its labels, in frame id order, read in batches (one vectorised pack
    lookup per batch rather than one search per object)."""
    labels = dict(tree.items(store, roots["labels"]))
    entries = list(tree.items(store, roots["frames"]))
    for start in range(0, len(entries), READ_BATCH):
        chunk = entries[start : start + READ_BATCH]
        frame_ids = [ObjectId(v) for _, v in chunk]
        label_ids = [ObjectId(labels[k]) for k, _ in chunk if k in labels]
        frames = dict(store.get_many(frame_ids))
        found = dict(store.get_many(label_ids))
        for key, value in chunk:
            lab = labels.get(key)
            yield (
                key.decode(),
                load(frames[ObjectId(value)], Frame),
                load(found[ObjectId(lab)], Labels) if lab is not None else Labels(()),
            )


def matches(frame: Frame, labels: Labels, where: Mapping[str, str], classes: set[str]) -> bool:
    """Tell whether a frame passes `--where key=value` (metadata, compared as text) and `--class` filters."""
    for key, wanted in where.items():
        if key not in frame.metadata or str(frame.metadata[key]) != wanted:
            return False
    return not classes or any(a.label in classes for a in labels.annotations)


def frame_json(frame_id: str, frame: Frame, labels: Labels) -> dict[str, Any]:
    """The JSON form of a frame that `dsvc frames --json` prints."""
    return {
        "id": frame_id,
        "media": [to_jsonable(m) for m in frame.media],
        "metadata": to_jsonable(frame.metadata),
        "labels": [to_jsonable(a) for a in labels.annotations],
    }


def statistics(store: ObjectStore, roots: Mapping[str, ObjectId]) -> dict[str, Any]:
    """Frame, label and per-class counts of a version."""
    classes: Counter[str] = Counter()
    labelled = 0
    for _, value in tree.items(store, roots["labels"]):
        annotations = store.get_object(ObjectId(value), Labels).annotations
        labelled += bool(annotations)
        classes.update(a.label for a in annotations)
    return {
        "frames": tree.length(store, roots["frames"]),
        "labels": sum(classes.values()),
        "labelled_frames": labelled,
        "classes": dict(sorted(classes.items())),
        "files": tree.length(store, roots["files"]),
    }


def export(store: ObjectStore, roots: Mapping[str, ObjectId], fmt: str, out: Path) -> list[str]:
    """Render every source of a version in format fmt into folder out, with the media it names; return the
    files written, relative to out. A source keeps its path when the format stays the same."""
    target = get_format(fmt)
    written = []
    frames = list(iter_frames(store, roots))
    for _, value in tree.items(store, roots["sources"]):
        original = store.get_object(ObjectId(value), Source)
        source, own = convert(original, (f for f in frames if f[1].source == original.path), fmt)
        for rel, data in sorted(target.render(source, own).items()):
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_file(dest, data)
            written.append(rel)
    for _, frame, _ in frames:
        for media in frame.media:
            if media.blob is not None:
                dest = out / media.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                store.copy_blob(media.blob, dest)
                written.append(media.path)
    return written
