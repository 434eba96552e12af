"""Naming and reading versions: branch, tag, checkpoint, frames, stats, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dsvc.cli.common import cwd, identity, open_repo, output, reporting
from dsvc.cli.diff import stats_between
from dsvc.cli.metrics import SHOWN_STATS, stat_text
from dsvc.cli.workdir import when
from dsvc.dataset import frame_json
from dsvc.errors import InvalidInput
from dsvc.hashing import ObjectId
from dsvc.history import checkpoint_versions
from dsvc.objects import Checkpoint, to_jsonable


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _ref_command(kind: str, noun: str, example: str) -> click.Command:
    @click.command(noun, epilog=example)
    @click.argument("name", required=False)
    @click.argument("rev", default="HEAD")
    @click.option("-d", "--delete", is_flag=True, help=f"Delete the {noun}.")
    @reporting
    @click.pass_context
    def command(ctx: click.Context, name: str | None, rev: str, delete: bool) -> None:
        repo = open_repo(ctx)
        out = output(ctx)
        if name is None:
            refs = repo.refs.list_refs(f"refs/{kind}/")
            current = repo.refs.symbolic_target("HEAD")
            names = {ref[len(f"refs/{kind}/") :]: oid.hex() for ref, oid in refs.items()}
            out.report(
                names, "\n".join(f"{'*' if f'refs/{kind}/{n}' == current else ' '} {n}" for n in names)
            )
        elif delete:
            repo.delete_ref(kind, name)
            out.report({"deleted": name}, f"deleted {noun} {name}")
        else:
            oid = repo.create_ref(kind, name, rev)
            out.report({"name": name, "commit": oid.hex()}, f"created {noun} {name} at {oid.hex()[:12]}")

    command.help = (
        f"List {noun}es, create one at REV, or delete one."
        if noun == "branch"
        else (f"List {noun}s, create one at REV, or delete one.")
    )
    return command


branch = _ref_command(
    "heads", "branch", "\b\nExamples:\n  dsvc branch\n  dsvc branch relabel-night v1\n  dsvc branch -d old\n"
)
tag = _ref_command(
    "tags", "tag", "\b\nExamples:\n  dsvc tag\n  dsvc tag release-1 v1\n  dsvc tag -d release-1\n"
)


def checkpoint_json(oid: ObjectId, cp: Checkpoint) -> dict[str, Any]:
    return {
        "name": cp.name,
        "commit": cp.commit.hex(),
        "description": cp.description,
        "metadata": to_jsonable(cp.metadata),
        "archived": cp.archived,
        "created": when(cp.created),
        "id": oid.hex(),
    }


@click.group(
    epilog="""\b
Examples:
  dsvc checkpoint create v0 -m "initial labels" --meta owner=qa
  dsvc checkpoint list --json
  dsvc checkpoint edit v0 -m "initial labels, night frames fixed"
  dsvc checkpoint archive v0
"""
)
def checkpoint() -> None:
    """Named, annotated versions: create, list, show, edit, archive."""


@checkpoint.command(
    "create",
    epilog="""\b
Examples:
  dsvc checkpoint create v0 -m "initial labels" --meta provider=acme
  dsvc checkpoint create v1 main~2
""",
)
@click.argument("name")
@click.argument("rev", default="HEAD")
@click.option("-m", "--message", "description", default="", help="What this checkpoint is.")
@click.option("--meta", multiple=True, help="Metadata KEY=VALUE (repeatable).")
@reporting
@click.pass_context
def checkpoint_create(
    ctx: click.Context, name: str, rev: str, description: str, meta: tuple[str, ...]
) -> None:
    """Create checkpoint NAME at REV."""
    repo = open_repo(ctx)
    oid = repo.checkpoint_create(name, identity(repo), rev, description, _pairs(meta, "--meta"))
    _, cp = repo.checkpoint(name)
    evaluations = repo.metrics.evaluations(cp.commit.hex())
    text = [f"created checkpoint {name} at {cp.commit.hex()[:12]}"]
    text += [f"  {n}: AP {stat_text(doc['metrics']['AP'])}" for n, doc in evaluations.items()]
    output(ctx).report({**checkpoint_json(oid, cp), "evaluations": evaluations}, "\n".join(text))


@checkpoint.command(
    "list", epilog="\b\nExamples:\n  dsvc checkpoint list\n  dsvc checkpoint list --all --json\n"
)
@click.option("--all", "show_all", is_flag=True, help="Include archived checkpoints.")
@reporting
@click.pass_context
def checkpoint_list(ctx: click.Context, show_all: bool) -> None:
    """List checkpoints, oldest first (archived ones only with --all)."""
    items = open_repo(ctx).checkpoints(show_all)
    lines = [
        f"{cp.name}\t{cp.commit.hex()[:12]}\t{'[archived] ' if cp.archived else ''}{cp.description}"
        for _, cp in items
    ]
    output(ctx).report([checkpoint_json(oid, cp) for oid, cp in items], "\n".join(lines))


@checkpoint.command("show", epilog="\b\nExamples:\n  dsvc checkpoint show v0 --json\n")
@click.argument("name")
@reporting
@click.pass_context
def checkpoint_show(ctx: click.Context, name: str) -> None:
    """Show a checkpoint, its dataset counts and its edit history."""
    repo = open_repo(ctx)
    oid, cp = repo.checkpoint(name)
    history = [checkpoint_json(v, c) for v, c in checkpoint_versions(repo.store, oid)]
    evaluations = repo.metrics.evaluations(cp.commit.hex())
    data = {
        **checkpoint_json(oid, cp),
        "stats": repo.stats(cp.commit.hex()),
        "history": history,
        "evaluations": evaluations,
    }
    text = [
        f"checkpoint {cp.name}{' [archived]' if cp.archived else ''}",
        f"commit {cp.commit.hex()}",
        f"created {data['created']}",
        f"description: {cp.description}",
        *(f"  {k} = {v}" for k, v in cp.metadata.items()),
        f"{data['stats']['frames']} frames, {data['stats']['labels']} labels",
        f"{len(history)} version(s)",
        *(
            f"eval {n}: " + "  ".join(f"{k} {stat_text(doc['metrics'][k])}" for k in SHOWN_STATS)
            for n, doc in evaluations.items()
        ),
    ]
    output(ctx).report(data, "\n".join(text))


@checkpoint.command(
    "edit",
    epilog="""\b
Examples:
  dsvc checkpoint edit v0 -m "initial labels, night frames fixed" --meta reviewed=yes
""",
)
@click.argument("name")
@click.option("-m", "--message", "description", help="A new description.")
@click.option("--meta", multiple=True, help="Set metadata KEY=VALUE (repeatable).")
@click.option("--unset", multiple=True, help="Remove a metadata key (repeatable).")
@reporting
@click.pass_context
def checkpoint_edit(
    ctx: click.Context, name: str, description: str | None, meta: tuple[str, ...], unset: tuple[str, ...]
) -> None:
    """Change a checkpoint's description or metadata; the previous version is kept."""
    repo = open_repo(ctx)
    _, cp = repo.checkpoint(name)
    metadata = {k: v for k, v in {**cp.metadata, **_pairs(meta, "--meta")}.items() if k not in unset}
    changes: dict[str, Any] = {"metadata": metadata}
    if description is not None:
        changes["description"] = description
    oid = repo.checkpoint_edit(name, identity(repo), **changes)
    output(ctx).report(checkpoint_json(oid, repo.checkpoint(name)[1]), f"edited checkpoint {name}")


def _archiver(archived: bool) -> click.Command:
    verb = "archive" if archived else "unarchive"

    @checkpoint.command(verb, epilog=f"\b\nExamples:\n  dsvc checkpoint {verb} v0\n")
    @click.argument("name")
    @reporting
    @click.pass_context
    def command(ctx: click.Context, name: str) -> None:
        repo = open_repo(ctx)
        oid = repo.checkpoint_edit(name, identity(repo), archived=archived)
        output(ctx).report(checkpoint_json(oid, repo.checkpoint(name)[1]), f"{verb}d checkpoint {name}")

    command.help = (
        f"{verb.capitalize()} a checkpoint ({'hidden from' if archived else 'shown again in'} list)."
    )
    return command


_archiver(True)
_archiver(False)


@click.command(
    epilog="""\b
Examples:
  dsvc frames v0 --json
  dsvc frames HEAD --where weather=rain --class car
"""
)
@click.argument("rev", default="HEAD")
@click.option("--where", multiple=True, help="Only frames whose metadata KEY equals VALUE (KEY=VALUE).")
@click.option("--class", "classes", multiple=True, help="Only frames with a label of this class.")
@reporting
@click.pass_context
def frames(ctx: click.Context, rev: str, where: tuple[str, ...], classes: tuple[str, ...]) -> None:
    """List a revision's frames, with their media, metadata and labels."""
    found = open_repo(ctx).frames(rev, _pairs(where, "--where"), classes)
    out = output(ctx)
    if out.json:
        out.data([frame_json(fid, frame, labels) for fid, frame, labels in found])
    elif not out.quiet:
        for fid, _, labels in found:
            click.echo(f"{fid}\t{len(labels.annotations)} labels")


@click.command(
    epilog="""\b
Examples:
  dsvc stats v0 --json    # {"frames": N, "labels": M, "classes": {...}}
  dsvc stats v0 v1        # side by side: frames, labels, labels per class, frames per metadata value
  dsvc stats v0 v1 --json # {"from", "to", "frames", "labels", "classes", "metadata"}, each {"from", "to"}
"""
)
@click.argument("rev", default="HEAD")
@click.argument("other", required=False)
@reporting
@click.pass_context
def stats(ctx: click.Context, rev: str, other: str | None) -> None:
    """Frame, label and per-class counts of REV, or of REV and OTHER side by side."""
    if other is not None:
        stats_between(ctx, rev, other)
        return
    data = open_repo(ctx).stats(rev)
    text = [
        f"{data['frames']} frames, {data['labels']} labels",
        *(f"  {k}\t{v}" for k, v in data["classes"].items()),
    ]
    output(ctx).report(data, "\n".join(text))


@click.command(
    epilog="""\b
Examples:
  dsvc export v0 --format coco out/     # annotations.json and the media it names
  dsvc export v1 --format jsonl out/
"""
)
@click.argument("rev")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", required=True, help="coco, yolo or jsonl.")
@reporting
@click.pass_context
def export(ctx: click.Context, rev: str, directory: Path, fmt: str) -> None:
    """Render a revision in a format into a folder, with its media."""
    written = open_repo(ctx).export(rev, fmt, cwd(ctx) / directory)
    output(ctx).report({"files": written}, f"wrote {len(written)} files to {directory}")


COMMANDS = (branch, tag, checkpoint, frames, stats, export)
