"""Remotes: dsvc push and clone to a local folder and to S3 (a real SeaweedFS on loopback), against raw
parallel obstore PUT and GET of the same bytes and against `dvc push` / `dvc pull` to the same remotes.

One run measures, for each remote: the first push, a clone (with checkout, and without: transfer only),
and an incremental push after relabelling 1% of the frames (its bytes and requests); then the same with
DVC, and raw obstore transfers of the pack bytes dsvc uploaded (8 threads, one object per pack).

Nothing is deleted until the run ends. On ext4 without a journal, as here, creating files soon after
many were deleted is several times slower (the inode allocator skips recently freed inodes), so a
deletion between steps would tax whichever tool ran next.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import obstore
from obstore.store import LocalStore

from benchmarks import datagen, report
from tests import seaweed

BIN = Path(sys.executable).parent
DSVC, DVC = str(BIN / "dsvc"), str(BIN / "dvc")
SOURCE = "annotations/instances.json"
RAW_THREADS = 8
MIN_OF_RAW = 0.7
MIN_OVER_DVC = 5.0


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run a command, return its wall time and stdout; a failure stops the benchmark with its stderr."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(
            f"`{' '.join(argv)}` in {cwd} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
        )
    return seconds, proc.stdout


def _env(work: Path, server: seaweed.SeaweedServer) -> dict[str, str]:
    return {
        **os.environ,
        **server.env(),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(work / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }


def _dataset(path: Path, frames: int, media_size: int) -> None:
    datagen.generate(path, frames, media_size=media_size, seed=11)


def _dsvc(
    work: Path, base: Path, remote: str, url: str, env: dict[str, str], endpoint: list[str]
) -> dict[str, Any]:
    repo = work / f"dsvc-{remote}"
    shutil.copytree(base, repo)
    for argv in (
        [DSVC, "init", "-q"],
        [DSVC, "source", "add", SOURCE, "--format", "coco", "--media", "images"],
        [DSVC, "add", "."],
        [DSVC, "commit", "-m", "v0"],
        [DSVC, "checkpoint", "create", "v0"],
        [DSVC, "remote", "add", "origin", url, *endpoint],
    ):
        _run(argv, repo, env)
    push_s, out = _run([DSVC, "push", "--json"], repo, env)
    pushed = json.loads(out)
    clone, bare = work / f"{repo.name}-clone", work / f"{repo.name}-bare"
    clone_s, _ = _run([DSVC, "clone", url, str(clone), *endpoint, "-q"], work, env)
    transfer_s, _ = _run([DSVC, "clone", url, str(bare), *endpoint, "--no-checkout", "-q"], work, env)
    same = _tree(clone / "images") == _tree(repo / "images")
    datagen.mutate(repo, relabel=0.01, add=0, seed=3)
    _run([DSVC, "add", "."], repo, env)
    _run([DSVC, "commit", "-m", "v1"], repo, env)
    inc_s, out = _run([DSVC, "push", "--json"], repo, env)
    incremental = json.loads(out)
    return {
        "push_s": push_s,
        "clone_s": clone_s,
        "fetch_s": transfer_s,
        "bytes": pushed["bytes"],
        "packs": pushed["packs"],
        "objects": pushed["objects"],
        "incremental_s": inc_s,
        "incremental_bytes": incremental["bytes"],
        "incremental_requests": incremental["requests"],
        "incremental_objects": incremental["objects"],
        "clone_identical": same,
    }


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _dvc(
    work: Path, base: Path, remote: str, url: str, env: dict[str, str], endpoint: str | None
) -> dict[str, Any]:
    repo = work / f"dvc-{remote}"
    shutil.copytree(base, repo)
    for argv in (
        ["git", "init", "-q"],
        [DVC, "init", "-q"],
        [DVC, "config", "core.analytics", "false"],
        [DVC, "config", "core.check_update", "false"],
        [DVC, "remote", "add", "-d", "r", url],
        *([[DVC, "remote", "modify", "r", "endpointurl", endpoint]] if endpoint else []),
        [DVC, "add", "images", "annotations"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "v0"],
    ):
        _run(argv, repo, env)
    push_s, _ = _run([DVC, "push"], repo, env)
    clone = work / f"{repo.name}-clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], work, env)
    pull_s, _ = _run([DVC, "pull"], clone, env)
    datagen.mutate(repo, relabel=0.01, add=0, seed=3)
    for argv in ([DVC, "add", "images", "annotations"], ["git", "add", "-A"], ["git", "commit", "-qm", "v1"]):
        _run(argv, repo, env)
    inc_s, _ = _run([DVC, "push"], repo, env)
    return {"push_s": push_s, "pull_s": pull_s, "incremental_s": inc_s}


def _raw(store: Any, packs: dict[str, bytes]) -> dict[str, float]:
    """Parallel obstore PUT, then GET, of the pack bytes: the transport's own speed."""
    with ThreadPoolExecutor(RAW_THREADS) as pool:
        start = time.perf_counter()
        list(pool.map(lambda item: obstore.put(store, item[0], item[1]), packs.items()))
        put_s = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(lambda key: bytes(obstore.get(store, key).bytes()), packs))
        get_s = time.perf_counter() - start
    return {"put_s": put_s, "get_s": get_s}


def _measure(work: Path, frames: int, media_size: int, dvc: bool) -> dict[str, Any]:
    base = work / "dataset"
    _dataset(base, frames, media_size)
    server = seaweed.start(work / "seaweed")
    try:
        env = _env(work, server)
        folder = work / "remote-folder"
        targets = {
            "folder": (str(folder), [], None),
            "s3": (f"s3://{seaweed.BUCKET}/dsvc", ["--endpoint", server.endpoint], server.endpoint),
        }
        results: dict[str, Any] = {}
        for name, (url, endpoint_args, endpoint) in targets.items():
            mine = _dsvc(work, base, name, url, env, endpoint_args)
            packs = {
                p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted((folder / "packs").glob("*.pack"))
            }
            raw_store = (
                LocalStore(work / "raw-folder", mkdir=True)
                if name == "folder"
                else server.store(prefix="raw")
            )
            raw = _raw(raw_store, packs)
            peer: dict[str, Any] | None = None
            if dvc:
                dvc_url = str(work / "dvc-remote") if name == "folder" else f"s3://{seaweed.BUCKET}/dvc"
                try:
                    peer = _dvc(work, base, name, dvc_url, env, endpoint)
                except RuntimeError as err:  # the peer failing must not discard dsvc's figures
                    lines = str(err).strip().splitlines()
                    peer = {"error": next((x for x in lines if x.startswith("ERROR")), lines[0])[:300]}
            results[name] = {"dsvc": mine, "raw": raw, "dvc": peer}
    finally:
        server.stop()
    media = sum(p.stat().st_size for p in (base / "images").rglob("*") if p.is_file())
    return {"frames": frames, "media_bytes": media, "targets": results}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _cell(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _section(r: dict[str, Any], cmd: str) -> str:
    rows, targets = [], []
    for name, t in r["targets"].items():
        d, raw, dvc = t["dsvc"], t["raw"], t["dvc"] or {}
        rows += [
            [name, "push", _cell(d["push_s"]), _cell(raw["put_s"]), _cell(dvc.get("push_s"))],
            [name, "clone (checkout)", _cell(d["clone_s"]), _cell(raw["get_s"]), _cell(dvc.get("pull_s"))],
            [name, "clone --no-checkout", _cell(d["fetch_s"]), _cell(raw["get_s"]), "n/a"],
            [
                name,
                "incremental push (1% relabeled)",
                _cell(d["incremental_s"]),
                "n/a",
                _cell(dvc.get("incremental_s")),
            ],
        ]
        targets += [
            [f"{name}: push, raw PUT / dsvc", f">= {MIN_OF_RAW}", _cell(_ratio(raw["put_s"], d["push_s"]))],
            [
                f"{name}: clone --no-checkout, raw GET / dsvc",
                f">= {MIN_OF_RAW}",
                _cell(_ratio(raw["get_s"], d["fetch_s"])),
            ],
            [
                f"{name}: clone with checkout, raw GET / dsvc",
                f">= {MIN_OF_RAW}",
                _cell(_ratio(raw["get_s"], d["clone_s"])),
            ],
            [
                f"{name}: push, DVC / dsvc",
                f">= {MIN_OVER_DVC}",
                _cell(_ratio(dvc.get("push_s"), d["push_s"])),
            ],
            [
                f"{name}: clone, dvc pull / dsvc",
                f">= {MIN_OVER_DVC}",
                _cell(_ratio(dvc.get("pull_s"), d["clone_s"])),
            ],
            [
                f"{name}: incremental push, DVC / dsvc",
                f">= {MIN_OVER_DVC}",
                _cell(_ratio(dvc.get("incremental_s"), d["incremental_s"])),
            ],
            [
                f"{name}: incremental push",
                "bytes, requests",
                f"{d['incremental_bytes']} B in {d['incremental_requests']} requests "
                f"({d['incremental_objects']} objects)",
            ],
        ]
    failed = "".join(
        f"DVC failed on the {name} remote: `{t['dvc']['error']}`\n\n"
        for name, t in r["targets"].items()
        if t["dvc"] and "error" in t["dvc"]
    )
    first = next(iter(r["targets"].values()))["dsvc"]
    return f"""## Remotes

{report.stamp(cmd)}

{r["frames"]} frames, {r["media_bytes"] / 1e6:.0f} MB of media; dsvc pushed {first["bytes"] / 1e6:.0f} MB in \
{first["packs"]} packs. Each operation is the wall time of the command as a subprocess (after `sync`),
one run each. Raw is obstore PUT / GET of dsvc's pack files, {RAW_THREADS} threads, from and into
memory (no hashing, no fsync, no files written). S3 is SeaweedFS (`weed server -s3`) on loopback,
sharing the machine's cores with the clients. `dvc pull` includes DVC's checkout, so compare it with
dsvc's clone with checkout.

{report.table(["remote", "operation", "dsvc s", "raw obstore s", "DVC s"], rows)}

{report.table(["target", "goal", "measured"], targets)}

{failed}Reading the ratios to raw: raw moves bytes between memory and the store; dsvc's push also reads
them from the local packs and fsyncs every pack on a folder remote, and its clone verifies every object
against its id, writes the packs locally with fsync, checks the refs' closure, and (with checkout)
writes every file of the working tree. Against DVC the transfer of many small files is the difference:
DVC sends one object per file, dsvc one per 64 MiB pack.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = report.arguments("remote", __doc__, keep="keep the benchmark folder under bench-data/")
    parser.add_argument("--frames", type=int, default=50_000, help="frames of the generated dataset")
    parser.add_argument("--media-size", type=int, default=20_000, help="bytes per media file")
    parser.add_argument("--no-dvc", action="store_true", help="skip the DVC peer")
    args = parser.parse_args(args_list)
    (report.ROOT / "bench-data").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="remote-", dir=report.ROOT / "bench-data"))
    try:
        result = _measure(work, args.frames, args.media_size, not args.no_dvc)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.publish(
        "remote",
        result,
        _section(result, report.command("benchmarks.remote", args_list)),
        args.json,
        not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
