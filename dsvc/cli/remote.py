"""Sharing: remote add/list/remove, push, fetch, pull (and pull --media), clone."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click

from dsvc.cli.common import cwd, open_repo, output, reporting, store_env
from dsvc.hashing import short
from dsvc.remote.sync import FetchResult
from dsvc.repo import Repo

DEFAULT_REMOTE = "origin"


def _url(ctx: click.Context, url: str) -> str:
    """A folder remote given as a relative path is relative to where the command runs."""
    if urlparse(url).scheme:
        return url
    return str((cwd(ctx) / url).resolve())


def _moves(updated: dict[str, tuple[str | None, str]]) -> list[str]:
    return [
        f"  {ref}: {short(bytes.fromhex(old)) if old else '(new)'} -> {new[:12]}"
        for ref, (old, new) in updated.items()
    ]


@click.group(
    epilog="""\b
Examples:
  dsvc remote add origin s3://bucket/datasets/cars --endpoint http://127.0.0.1:8333
  dsvc remote add backup /mnt/nas/cars
  dsvc remote list
  dsvc remote remove backup
"""
)
def remote() -> None:
    """Manage remotes: where datasets are shared (a folder, s3://, gs://, az://).

    Credentials come from the standard environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_ENDPOINT_URL, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY, ...) and are never stored.
    """


@remote.command(
    "add",
    epilog="""\b
Examples:
  dsvc remote add origin /mnt/shared/cars
  dsvc remote add origin s3://bucket/datasets/cars --endpoint http://127.0.0.1:8333
""",
)
@click.argument("name")
@click.argument("url")
@click.option("--endpoint", help="Endpoint of an S3-compatible store (e.g. http://127.0.0.1:8333).")
@click.option("--region", help="Region of the bucket.")
@reporting
@click.pass_context
def remote_add(ctx: click.Context, name: str, url: str, endpoint: str | None, region: str | None) -> None:
    """Add a remote NAME at URL."""
    url = _url(ctx, url)
    open_repo(ctx).remote_add(name, url, endpoint, region)
    output(ctx).report({"name": name, "url": url}, f"added remote {name} at {url}")


@remote.command("list", epilog="\b\nExamples:\n  dsvc remote list --json\n")
@reporting
@click.pass_context
def remote_list(ctx: click.Context) -> None:
    """List remotes."""
    found = open_repo(ctx).remotes()
    output(ctx).report(
        {n: {"url": r.url, "endpoint": r.endpoint, "region": r.region} for n, r in found.items()},
        "\n".join(f"{n}\t{r.url}" + (f"\t{r.endpoint}" if r.endpoint else "") for n, r in found.items()),
    )


@remote.command("remove", epilog="\b\nExamples:\n  dsvc remote remove origin\n")
@click.argument("name")
@reporting
@click.pass_context
def remote_remove(ctx: click.Context, name: str) -> None:
    """Forget remote NAME (its remote-tracking refs too; nothing on the remote changes)."""
    open_repo(ctx).remote_remove(name)
    output(ctx).report({"removed": name}, f"removed remote {name}")


@click.command(
    epilog="""\b
Examples:
  dsvc push                     # the current branch, every tag, checkpoint and inference set
  dsvc push origin main v1      # a branch and a checkpoint
  dsvc push origin --force      # overwrite what others pushed (drops their commits)
  dsvc push --json
"""
)
@click.argument("remote_name", metavar="[REMOTE]", default=DEFAULT_REMOTE)
@click.argument("refs", nargs=-1)
@click.option("--force", is_flag=True, help="Move remote refs even when that drops commits there.")
@reporting
@click.pass_context
def push(ctx: click.Context, remote_name: str, refs: tuple[str, ...], force: bool) -> None:
    """Send refs and what they reach to REMOTE; refs move last, only if nobody moved them meanwhile."""
    out = output(ctx)
    with out.meter(f"pushing to {remote_name}") as meter:
        result = open_repo(ctx).push(remote_name, refs, force, meter)
    report: dict[str, Any] = {
        "remote": result.remote,
        "objects": result.objects,
        "bytes": result.bytes,
        "packs": result.packs,
        "updated": {ref: list(move) for ref, move in result.updated.items()},
        "requests": result.requests,
    }
    if not result.updated:
        text = f"{remote_name} is up to date"
    else:
        head = (
            f"pushed {result.objects} objects ({result.bytes} bytes, {result.packs} packs) to {remote_name}"
        )
        text = "\n".join([head, *_moves(result.updated)])
    out.report(report, text)


def _fetch_report(result: FetchResult) -> tuple[dict[str, Any], str]:
    report = {
        "remote": result.remote,
        "objects": result.objects,
        "bytes": result.bytes,
        "updated": {ref: list(move) for ref, move in result.updated.items()},
        "rejected": result.rejected,
    }
    lines = [f"fetched {result.objects} objects ({result.bytes} bytes) from {result.remote}"]
    lines += _moves(result.updated)
    lines += [f"  rejected {ref}: {why}" for ref, why in result.rejected.items()]
    return report, "\n".join(lines)


@click.command(
    epilog="""\b
Examples:
  dsvc fetch
  dsvc fetch backup --json
"""
)
@click.argument("remote_name", metavar="[REMOTE]", default=DEFAULT_REMOTE)
@reporting
@click.pass_context
def fetch(ctx: click.Context, remote_name: str) -> None:
    """Bring REMOTE's branches (as refs/remotes/REMOTE/...), tags, checkpoints and inference sets here."""
    out = output(ctx)
    with out.meter(f"fetching from {remote_name}") as meter:
        result = open_repo(ctx).fetch(remote_name, meter)
    out.report(*_fetch_report(result))


@click.command(
    epilog="""\b
Examples:
  dsvc pull                       # fetch, then fast-forward the current branch and check it out
  dsvc pull backup
  dsvc pull --media               # a clone without media: fetch HEAD's media ahead of time
  dsvc pull --media images/night --at v1
"""
)
@click.argument("args", nargs=-1, metavar="[REMOTE] | --media [PATH...]")
@click.option("--media", is_flag=True, help="Fetch the media of PATHs (all) at --at, ahead of checkout.")
@click.option("--at", "rev", default="HEAD", help="With --media: the revision whose media to fetch.")
@reporting
@click.pass_context
def pull(ctx: click.Context, args: tuple[str, ...], media: bool, rev: str) -> None:
    """Fetch from REMOTE and fast-forward the current branch; or, with --media, fetch media ahead."""
    repo = open_repo(ctx)
    out = output(ctx)
    if media:
        with out.meter("fetching media") as meter:
            count = repo.fetch_media([str(cwd(ctx) / p) for p in args], rev, progress=meter)
        out.report({"media": count}, f"fetched {count} media files")
        return
    if len(args) > 1:
        raise click.UsageError("pull takes one REMOTE (PATHs only with --media)")
    name = args[0] if args else DEFAULT_REMOTE
    with out.meter(f"pulling from {name}") as meter:
        result, moved = repo.pull(name, meter)
    report, text = _fetch_report(result)
    report["checked_out"] = moved.hex() if moved else None
    out.report(
        report, text + (f"\nfast-forwarded to {moved.hex()[:12]}" if moved else "\nalready up to date")
    )


@click.command(
    epilog="""\b
Examples:
  dsvc clone s3://bucket/datasets/cars cars --endpoint http://127.0.0.1:8333
  dsvc clone /mnt/nas/cars
  dsvc clone s3://bucket/datasets/cars --no-media   # media come on demand at checkout
"""
)
@click.argument("url")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--endpoint", help="Endpoint of an S3-compatible store.")
@click.option("--region", help="Region of the bucket.")
@click.option("--no-media", is_flag=True, help="Fetch history, frames and labels only; media on demand.")
@click.option("--no-checkout", is_flag=True, help="Do not write the working tree.")
@reporting
@click.pass_context
def clone(
    ctx: click.Context,
    url: str,
    directory: Path | None,
    endpoint: str | None,
    region: str | None,
    no_media: bool,
    no_checkout: bool,
) -> None:
    """Make a new repository in DIRECTORY from the remote at URL and check out its main branch."""
    url = _url(ctx, url)
    name = directory or Path(urlparse(url).path.rstrip("/").rsplit("/", 1)[-1] or "dataset")
    dest = (cwd(ctx) / name).resolve()
    out = output(ctx)
    with out.meter(f"cloning {url}") as meter:
        repo, result = Repo.clone(
            url, dest, endpoint, region, not no_media, store_env(), progress=meter, checkout=not no_checkout
        )
    branch = repo.refs.symbolic_target("HEAD")
    out.report(
        {"path": str(dest), "objects": result.objects, "bytes": result.bytes, "branch": branch},
        f"cloned {url} into {dest}: {result.objects} objects ({result.bytes} bytes)",
    )


COMMANDS = [remote, push, fetch, pull, clone]
