"""The everyday commands: sources, add, rm, status, commit, log, show, checkout."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import click

from dsvc.cli.common import cwd, identity, open_repo, output, reporting
from dsvc.cli.diff import frame_change_json, frame_line, label_text
from dsvc.hashing import short
from dsvc.objects import Commit, Signature
from dsvc.repo import LogEntry, Repo
from dsvc.workdir.status import Changes


def when(sig: Signature) -> str:
    """ISO 8601 time in the signer's zone."""
    zone = timezone(timedelta(minutes=sig.tz_minutes))
    return datetime.fromtimestamp(sig.time, zone).isoformat()


@click.group(
    epilog="""\b
Examples:
  dsvc source add annotations/instances.json --format coco --media images
  dsvc source list --json
  dsvc source remove annotations/instances.json
"""
)
def source() -> None:
    """Register the annotation files whose frames and labels dsvc versions."""


@source.command(
    "add",
    epilog="""\b
Examples:
  dsvc source add annotations/instances.json --format coco --media images
  dsvc source add labels/frames.jsonl
""",
)
@click.argument("path")
@click.option("--format", "fmt", help="coco, yolo or jsonl (detected when unambiguous).")
@click.option("--media", default="", help="Folder the source's media paths are relative to.")
@reporting
@click.pass_context
def source_add(ctx: click.Context, path: str, fmt: str | None, media: str) -> None:
    """Register annotation file PATH as a frame source."""
    here = cwd(ctx)
    spec = open_repo(ctx).source_add(str(here / path), fmt, str(here / media) if media else "")
    output(ctx).report(
        spec.__dict__, f"added {spec.format} source {spec.path} (media in {spec.media or '.'}/)"
    )


@source.command("list", epilog="\b\nExamples:\n  dsvc source list --json\n")
@reporting
@click.pass_context
def source_list(ctx: click.Context) -> None:
    """List the registered sources."""
    specs = open_repo(ctx).sources()
    output(ctx).report(
        [s.__dict__ for s in specs], "\n".join(f"{s.path}\t{s.format}\t{s.media}" for s in specs)
    )


@source.command("remove", epilog="\b\nExamples:\n  dsvc source remove annotations/instances.json\n")
@click.argument("path")
@reporting
@click.pass_context
def source_remove(ctx: click.Context, path: str) -> None:
    """Stop taking frames from PATH (the next add drops them)."""
    open_repo(ctx).source_remove(str(cwd(ctx) / path))
    output(ctx).report({"removed": path}, f"removed source {path}")


@click.command(
    epilog="""\b
Examples:
  dsvc add .                  # stage every change in the working tree
  dsvc add images/new         # stage one folder
  dsvc add . --require-media  # refuse sources whose media are missing
"""
)
@click.argument("paths", nargs=-1)
@click.option("--require-media", is_flag=True, help="Fail if a source names media that are not present.")
@reporting
@click.pass_context
def add(ctx: click.Context, paths: tuple[str, ...], require_media: bool) -> None:
    """Stage files and annotation sources for the next commit."""
    targets = [str(cwd(ctx) / p) for p in paths]
    result = open_repo(ctx).add(targets, require_media, output(ctx).progress)
    report = {
        "files_read": result.files_read,
        "files_unchanged": result.files_reused,
        "sources_parsed": result.sources_parsed,
        "external_media": result.external_media,
    }
    text = f"staged: {result.files_read} files read, {result.files_reused} unchanged"
    if result.sources_parsed:
        text += f"; parsed {', '.join(result.sources_parsed)}"
    if result.external_media:
        text += f"; {result.external_media} media referenced by URL only"
    output(ctx).report(report, text)


@click.command(
    epilog="""\b
Examples:
  dsvc rm images/bad_frame.jpg
  dsvc rm -r images/night/
"""
)
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "recursive", is_flag=True, help="Remove folders and everything under them.")
@reporting
@click.pass_context
def rm(ctx: click.Context, paths: tuple[str, ...], recursive: bool) -> None:
    """Delete tracked files from the working tree and stage their removal."""
    repo = open_repo(ctx)
    removed = repo.rm([str(cwd(ctx) / p) for p in paths], recursive)
    output(ctx).report({"removed": removed}, "\n".join(f"rm {p}" for p in removed))


def _changes_text(title: str, changes: Changes) -> list[str]:
    lines = []
    for what, groups in (("file", changes.files), ("frame", changes.frames)):
        for kind, items in groups.items():
            lines += [f"  {kind:9} {what} {item}" for item in items[:50]]
            if len(items) > 50:
                lines.append(f"  ... and {len(items) - 50} more {kind} {what}s")
    return [title, *lines] if lines else []


@click.command(
    epilog="""\b
Examples:
  dsvc status
  dsvc status --json    # {"clean": true, ...}
"""
)
@reporting
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show what is staged and what changed in the working tree."""
    state = open_repo(ctx).status()
    data = {
        "clean": state.clean,
        "branch": state.branch[len("refs/heads/") :] if state.branch else None,
        "head": state.head.hex() if state.head else None,
        "staged": state.staged.to_json(),
        "unstaged": state.unstaged.to_json(),
    }
    where = (
        f"On branch {data['branch']}" if data["branch"] else f"HEAD detached at {short(state.head or b'')}"
    )
    lines = [where]
    lines += _changes_text("Changes to be committed:", state.staged)
    lines += _changes_text("Changes not staged (use 'dsvc add'):", state.unstaged)
    if state.clean:
        lines.append("nothing to commit, working tree clean")
    output(ctx).report(data, "\n".join(lines))


@click.command(
    epilog="""\b
Examples:
  dsvc commit -m "relabel night frames"
"""
)
@click.option("-m", "--message", required=True, help="The commit message.")
@click.option("--allow-empty", is_flag=True, help="Commit even if nothing changed.")
@reporting
@click.pass_context
def commit(ctx: click.Context, message: str, allow_empty: bool) -> None:
    """Record the staged state as a new commit."""
    repo = open_repo(ctx)
    oid = repo.commit(message, identity(repo), allow_empty)
    output(ctx).report({"id": oid.hex(), "message": message}, f"[{short(oid)}] {message.splitlines()[0]}")


def entry_json(entry: LogEntry) -> dict[str, Any]:
    c: Commit = entry.commit
    return {
        "id": entry.id.hex(),
        "parents": [p.hex() for p in c.parents],
        "message": c.message,
        "author": {"name": c.author.name, "email": c.author.email},
        "time": when(c.author),
        "checkpoints": list(entry.checkpoints),
        **({"frame": frame_change_json(entry.frame)} if entry.frame is not None else {}),
    }


@click.command(
    epilog="""\b
Examples:
  dsvc log
  dsvc log v1 -n 5 --json
  dsvc log --frame 000/frame_000042.jpg   # the commits that changed one frame, and how
"""
)
@click.argument("rev", default="HEAD")
@click.option("-n", "--max-count", type=int, help="Show at most this many commits.")
@click.option("--frame", help="Only commits that changed this frame, each with how it changed it.")
@reporting
@click.pass_context
def log(ctx: click.Context, rev: str, max_count: int | None, frame: str | None) -> None:
    """Show the history, newest first."""
    entries = list(open_repo(ctx).log(rev, frame, max_count))
    lines = []
    for e in entries:
        marks = f" ({', '.join(e.checkpoints)})" if e.checkpoints else ""
        lines += [
            f"commit {e.id.hex()}{marks}",
            f"Author: {e.commit.author.name} <{e.commit.author.email}>",
            f"Date:   {when(e.commit.author)}",
            "",
            f"    {e.commit.message}",
            "",
        ]
        if e.frame is not None:
            lines += [
                f"    {frame}: {frame_line(e.frame)}",
                *(f"        {label_text(c)}" for c in e.frame.labels),
            ]
            lines.append("")
    output(ctx).report([entry_json(e) for e in entries], "\n".join(lines).rstrip())


@click.command(
    epilog="""\b
Examples:
  dsvc show v0 --json
"""
)
@click.argument("rev", default="HEAD")
@reporting
@click.pass_context
def show(ctx: click.Context, rev: str) -> None:
    """Show a commit: its message, checkpoints and dataset counts."""
    repo = open_repo(ctx)
    oid = repo.rev_parse(rev, commit=True)
    entry = next(repo.log(oid.hex(), limit=1))
    data = {**entry_json(entry), "stats": repo.stats(oid.hex())}
    text = [
        f"commit {oid.hex()}",
        f"Date: {data['time']}",
        "",
        f"    {entry.commit.message}",
        "",
        f"{data['stats']['frames']} frames, {data['stats']['labels']} labels, {data['stats']['files']} files",
    ]
    output(ctx).report(data, "\n".join(text))


@click.command(
    epilog="""\b
Examples:
  dsvc checkout v0          # time travel to a checkpoint (HEAD detached)
  dsvc checkout main
  dsvc checkout -b fix v1   # a new branch at v1
"""
)
@click.argument("rev")
@click.option("-b", "new_branch", help="Create this branch at REV and switch to it.")
@click.option("-f", "--force", is_flag=True, help="Overwrite local changes.")
@reporting
@click.pass_context
def checkout(ctx: click.Context, rev: str, new_branch: str | None, force: bool) -> None:
    """Make the working tree match REV, writing only what differs."""
    repo: Repo = open_repo(ctx)
    result = repo.checkout(rev, force, new_branch, output(ctx).progress)
    data = {"written": len(result.written), "removed": len(result.removed), "rendered": result.rendered}
    output(ctx).report(
        data,
        f"checked out {rev}: {data['written']} files written, {data['removed']} removed"
        + (f", rendered {', '.join(result.rendered)}" if result.rendered else ""),
    )


COMMANDS = (source, add, rm, status, commit, log, show, checkout)
