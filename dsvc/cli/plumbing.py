"""Plumbing commands: create a repository and look inside its object store from a shell."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dsvc.cli.common import cwd, open_repo, output, reporting
from dsvc.objects import to_jsonable
from dsvc.repo import Repo


@click.command(
    epilog="""\b
Examples:
  dsvc init                 # make the current folder a repository
  dsvc init datasets/cars   # create the folder if needed
"""
)
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@reporting
@click.pass_context
def init(ctx: click.Context, directory: Path | None) -> None:
    """Create an empty repository (a .dsvc folder) in DIRECTORY or here."""
    out = output(ctx)
    target = (cwd(ctx) / directory) if directory else cwd(ctx)
    repo, created = Repo.init(target.resolve())
    verb = "Initialized empty" if created else "Reinitialized existing"
    out.report({"path": str(repo.dsvc_dir), "created": created}, f"{verb} dsvc repository in {repo.dsvc_dir}")


@click.command(
    "hash-object",
    epilog="""\b
Examples:
  dsvc hash-object images/0001.jpg        # same digest as `b3sum images/0001.jpg`
  dsvc hash-object -w images/*.jpg        # also store the files as blobs
""",
)
@click.option("-w", "write", is_flag=True, help="Store the files in the object store.")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@reporting
@click.pass_context
def hash_object(ctx: click.Context, write: bool, files: tuple[Path, ...]) -> None:
    """Print the object id (BLAKE3) of each FILE."""
    from dsvc.hashing import hash_file

    out = output(ctx)
    paths = [cwd(ctx) / f for f in files]
    ids = open_repo(ctx).hash_objects(paths, write=True) if write else [hash_file(p) for p in paths]
    if out.json:
        out.data([{"path": str(f), "id": oid.hex()} for f, oid in zip(files, ids, strict=True)])
    elif not out.quiet:
        for oid in ids:
            click.echo(oid.hex())


@click.command(
    "cat-object",
    epilog="""\b
Examples:
  dsvc cat-object HEAD --json          # the commit HEAD points at, as JSON
  dsvc cat-object 3ae7d805 > out.jpg   # a blob's raw bytes
""",
)
@click.argument("rev")
@reporting
@click.pass_context
def cat_object(ctx: click.Context, rev: str) -> None:
    """Print an object: a blob's raw bytes, or a structured object decoded."""
    out = output(ctx)
    found = open_repo(ctx).cat_object(rev)
    if found.blob is not None:
        if out.json:
            out.data({"kind": "blob", "id": found.oid.hex(), "size": len(found.blob)})
        else:
            sys.stdout.buffer.write(found.blob)
            sys.stdout.flush()
        return
    value = {"id": found.oid.hex(), **to_jsonable(found.obj)}
    if out.json:
        out.data(value)
    else:
        for key, item in value.items():
            click.echo(f"{key}: {item}")


@click.command(
    "rev-parse",
    epilog="""\b
Examples:
  dsvc rev-parse HEAD
  dsvc rev-parse main~2
  dsvc rev-parse v0 --commit    # the commit a checkpoint points at
""",
)
@click.argument("revs", nargs=-1, required=True)
@click.option("--commit", is_flag=True, help="Peel each revision to the commit it names.")
@reporting
@click.pass_context
def rev_parse(ctx: click.Context, revs: tuple[str, ...], commit: bool) -> None:
    """Print the full object id each revision names."""
    out = output(ctx)
    repo = open_repo(ctx)
    ids = [repo.rev_parse(rev, commit=commit) for rev in revs]
    if out.json:
        out.data({rev: oid.hex() for rev, oid in zip(revs, ids, strict=True)})
    elif not out.quiet:
        for oid in ids:
            click.echo(oid.hex())


@click.command(
    epilog="""\b
Examples:
  dsvc fsck            # exit 1 and name each bad object if anything is wrong
  dsvc fsck --json
"""
)
@reporting
@click.pass_context
def fsck(ctx: click.Context) -> None:
    """Verify every object's id and that everything the refs reach is present."""
    out = output(ctx)
    report = open_repo(ctx).fsck()
    if out.json:
        out.data(
            {
                "ok": report.ok,
                "objects": report.objects,
                "blobs": report.blobs,
                "refs": report.refs,
                "reachable": report.reachable,
                "problems": [{"id": p.subject, "problem": p.message} for p in report.problems],
            }
        )
    else:
        for problem in report.problems:
            click.echo(f"bad {problem.subject}: {problem.message}", err=True)
        out.echo(
            f"checked {report.objects} objects, {report.blobs} blobs, {report.refs} refs: "
            + ("ok" if report.ok else f"{len(report.problems)} problem(s)")
        )
    if not report.ok:
        ctx.exit(1)


COMMANDS = (init, hash_object, cat_object, rev_parse, fsck)
