"""`dsvc diff`: what changed between two versions, from frames down to single labels; and the JSON and
text forms of diffs and distributions that `log --frame` and `stats A B` share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import click

from dsvc.cli.common import open_repo, output, reporting
from dsvc.diff import ASPECTS, LABEL_KINDS, Distribution, FrameDetail, LabelChange
from dsvc.hashing import ObjectId
from dsvc.model import Annotation

SHOWN_PER_KIND = 1000  # text output lists at most this many frames of each kind (JSON lists them all)


def _hex(oid: ObjectId | None) -> str | None:
    return None if oid is None else oid.hex()


def _box(ann: Annotation | None) -> list[float] | None:
    return None if ann is None or ann.bbox is None else ann.bbox.to_value()


def _rest(ann: Annotation) -> dict[str, Any]:
    return {"iscrowd": ann.iscrowd, "score": ann.score, "attributes": dict(ann.attributes)}


def label_json(change: LabelChange) -> dict[str, Any]:
    """One label change as JSON: its kind, the annotation's id and class, and what changed from what."""
    ann = change.new if change.new is not None else change.old
    assert ann is not None
    out: dict[str, Any] = {"kind": change.kind, "id": ann.id, "class": ann.label}
    if change.kind in ("added", "removed"):
        out["bbox"] = _box(ann)
    elif change.kind in ("moved", "resized"):
        out.update({"iou": change.iou, "from": _box(change.old), "to": _box(change.new)})
    elif change.kind == "class_changed":
        out.update({"from": change.old.label if change.old else None, "to": ann.label})
    elif change.kind == "attributes_changed" and change.old is not None:
        out.update({"from": _rest(change.old), "to": _rest(ann)})
    return out


def label_text(change: LabelChange) -> str:
    """One label change for people: its kind, the label, and the IoU or the classes."""
    ann = change.new if change.new is not None else change.old
    assert ann is not None
    what = f"{ann.label} #{ann.id}" if ann.id is not None else ann.label
    if change.kind in ("moved", "resized"):
        return f"{change.kind:18} {what}  IoU {change.iou:.2f}"
    if change.kind == "class_changed" and change.old is not None:
        where = f"#{ann.id}  " if ann.id is not None else ""
        return f"{'class changed':18} {where}{change.old.label} -> {ann.label}"
    return f"{change.kind.replace('_', ' '):18} {what}"


def label_counts(details: Iterable[FrameDetail]) -> dict[str, int]:
    """Label changes by kind, over frames; every kind present (0 when none)."""
    found = Counter(c.kind for d in details for c in d.labels)
    return {kind: found.get(kind, 0) for kind in LABEL_KINDS}


def frame_change_json(d: FrameDetail) -> dict[str, Any]:
    """A changed frame as `log --frame` prints it: kind, what changed, label changes."""
    return {
        "kind": d.change.kind,
        "changes": list(d.change.changes),
        "labels": [label_json(c) for c in d.labels],
    }


def frame_line(d: FrameDetail) -> str:
    """How a frame changed, in one line: kind, aspects and label changes by kind."""
    if d.change.kind != "modified":
        return d.change.kind
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in label_counts([d]).items() if n)
    return f"modified ({', '.join(d.change.changes)})" + (f": {counts}" if counts else "")


def _pairs_json(pairs: Mapping[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    return {name: {"from": a, "to": b} for name, (a, b) in pairs.items()}


def distribution_json(dist: Distribution) -> dict[str, Any]:
    """Both sides of a distribution: totals, labels per class, frames per metadata value."""
    return {
        "frames": {"from": dist.before.frames, "to": dist.after.frames},
        "labels": {"from": dist.before.labels, "to": dist.after.labels},
        "classes": _pairs_json(dist.classes()),
        "metadata": {key: _pairs_json(values) for key, values in dist.metadata().items()},
    }


def _row(name: str, a: int, b: int) -> str:
    delta = f"{b - a:+d}" if b != a else ""
    return f"  {name:24} {a:>9} {b:>9}  {delta}"


def distribution_text(dist: Distribution, names: tuple[str, str], metadata: bool = True) -> list[str]:
    """The distribution as aligned from/to columns."""
    lines = [f"  {'':24} {names[0][:9]:>9} {names[1][:9]:>9}"]
    lines += [_row("frames", dist.before.frames, dist.after.frames)]
    lines += [_row("labels", dist.before.labels, dist.after.labels), "classes:"]
    lines += [_row(name, a, b) for name, (a, b) in dist.classes().items()]
    if metadata:
        for key, values in dist.metadata().items():
            lines.append(f"metadata {key}:")
            lines += [_row(value, a, b) for value, (a, b) in values.items()]
    return lines


def _names(a: str | None, b: str | None) -> tuple[str, str]:
    return (a or "HEAD", b or "worktree")


def _stat_line(d: FrameDetail) -> str:
    """git diff --stat style: the frame, what changed, and label counts (+added -removed ~changed)."""
    sides = d.sides
    if d.change.kind == "added":
        what = f"added     {len(sides.new_labels.annotations) if sides.new_labels else 0} labels"
    elif d.change.kind == "removed":
        what = f"removed   {len(sides.old_labels.annotations) if sides.old_labels else 0} labels"
    else:
        kinds = Counter(c.kind for c in d.labels)
        changed = sum(n for k, n in kinds.items() if k not in ("added", "removed"))
        what = f"{','.join(d.change.changes):9} +{kinds['added']} -{kinds['removed']} ~{changed}"
    return f" {d.change.id} | {what}"


def _frames_text(details: list[FrameDetail]) -> list[str]:
    lines = []
    for kind in ("added", "removed", "modified"):
        of_kind = [d for d in details if d.change.kind == kind]
        for d in of_kind[:SHOWN_PER_KIND]:
            aspects = f" ({', '.join(d.change.changes)})" if kind == "modified" else ""
            lines.append(f"{kind:9} {d.change.id}{aspects}")
        if len(of_kind) > SHOWN_PER_KIND:
            lines.append(f"... and {len(of_kind) - SHOWN_PER_KIND} more {kind} frames (see --json)")
    return lines


def _labels_text(details: list[FrameDetail]) -> list[str]:
    lines = []
    for d in details:
        if d.labels:
            lines.append(f"{d.change.id} ({', '.join(d.change.changes)})")
            lines += [f"    {label_text(c)}" for c in d.labels]
    return lines


@click.command(
    epilog="""\b
Examples:
  dsvc diff                  # the working tree against HEAD
  dsvc diff v0               # checkpoint v0 against the working tree
  dsvc diff v0 v1            # per-frame stat, totals and classes
  dsvc diff v0 v1 --frames   # frames by kind: added, removed, modified (media, metadata, labels)
  dsvc diff v0 v1 --labels   # and every label change: moved/resized (IoU), class changed, added, removed
  dsvc diff v0 v1 --json     # {"from", "to", "summary", "frames", "classes"} (+ "labels" with --labels)
"""
)
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--frames", "list_frames", is_flag=True, help="List changed frames by kind.")
@click.option("--labels", "list_labels", is_flag=True, help="Show label-level changes of modified frames.")
@reporting
@click.pass_context
def diff(ctx: click.Context, a: str | None, b: str | None, list_frames: bool, list_labels: bool) -> None:
    """Show what changed from A (default HEAD) to B (default the working tree)."""
    repo = open_repo(ctx)
    comparison = repo.diffs.between(a, b)
    details = list(comparison.details())
    summary = comparison.summary(details)
    dist = repo.diffs.distribution(comparison, details)
    out = output(ctx)
    if out.json:
        data: dict[str, Any] = {
            "from": _hex(comparison.before_id),
            "to": _hex(comparison.after_id),
            "summary": {
                "added": summary.added,
                "removed": summary.removed,
                "modified": summary.modified,
                "unchanged": summary.unchanged,
                "overlap": summary.overlap,
            },
            "frames": {
                "added": [d.change.id for d in details if d.change.kind == "added"],
                "removed": [d.change.id for d in details if d.change.kind == "removed"],
                "modified": [
                    {"id": d.change.id, "changes": list(d.change.changes)}
                    for d in details
                    if d.change.kind == "modified"
                ],
            },
            "classes": _pairs_json(dist.classes()),
        }
        if list_labels:
            data["labels"] = [
                {"frame": d.change.id, "changes": [label_json(c) for c in d.labels]}
                for d in details
                if d.labels
            ]
        out.data(data)
        return
    modified = [d for d in details if d.change.kind == "modified"]
    aspects = ", ".join(f"{sum(x in d.change.changes for d in modified)} {x}" for x in ASPECTS)
    labels = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in label_counts(details).items())
    lines = _frames_text(details) if list_frames else [_stat_line(d) for d in details]
    if list_labels:
        lines += _labels_text(details)
    lines += [
        f" {summary.added} frames added, {summary.removed} removed, {summary.modified} modified ({aspects}),"
        f" {summary.unchanged} unchanged, {summary.overlap} in both",
        f" labels: {labels}",
    ]
    if details and not list_frames:
        lines += distribution_text(dist, _names(a, b), metadata=False)
    out.echo("\n".join(lines))


def stats_between(ctx: click.Context, a: str, b: str) -> None:
    """`dsvc stats A B`: the distributions of two revisions side by side."""
    repo = open_repo(ctx)
    comparison = repo.diffs.between(a, b)
    dist = repo.diffs.distribution(comparison, list(comparison.details()))
    data = {"from": _hex(comparison.before_id), "to": _hex(comparison.after_id), **distribution_json(dist)}
    output(ctx).report(data, "\n".join(distribution_text(dist, (a, b))))


COMMANDS = (diff,)
