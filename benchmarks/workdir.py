"""Working-tree benchmark: dsvc's add, commit, status and checkout of a dataset against git, DVC and raw I/O.

One generated COCO dataset is copied into three folders, one each for dsvc, git and DVC, which run as the
command-line tools a user would type, timed by wall clock. The raw peers read and BLAKE3 (or copy) the same
files with no version control at all. Everything runs in a temporary folder under `bench-data/` (gitignored),
removed at the end unless `--keep`.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import orjson

from benchmarks import datagen, report

# GNU time measures a command's peak RSS from a small process of its own: the ru_maxrss of a child this
# process spawns directly starts at this process's RSS, since the kernel records the forked copy's at exec.
GNU_TIME = "/usr/bin/time"
BIN = Path(sys.executable).parent  # the dsvc and dvc scripts of the environment running this benchmark
GENERATE_SEED, MUTATE_SEED = 0, 1
RELABEL = 0.01  # fraction of frames the mutation relabels
ADD = 0.01  # frames the mutation adds, as a fraction of the dataset
STATUS_REPEAT = 3  # a no-op status leaves no trace, so it is the best of a few runs
RAW_REPEAT = 3
READ_CHUNK = 16 << 20
LARGE_FILE = 16 << 20  # files from this size on are hashed with all cores, smaller ones with one thread
SOURCE = "annotations/instances.json"  # the COCO file dsvc tracks as frames and labels, not as bytes
TOOL_FILES = frozenset({".dsvc", ".git", ".dvc", ".gitignore", ".dvcignore", "images.dvc", "annotations.dvc"})
WIDTH = 110  # of docs/benchmarks.md
NBSP = "\u00a0"  # holds a code span together while its paragraph is refilled
MB = 1e6
GB = 1e9

# Acceptance targets.
MAX_INITIAL_OVER_GIT = 0.25
MAX_INITIAL_OVER_RAW = 4.0
MAX_STATUS_OVER_GIT = 2.0
MAX_INCREMENTAL_OVER_INITIAL = 0.1
MAX_OVER_DVC = 0.2  # at least 5x faster
MAX_PEAK_RSS = 1 * GB

PHASES = {
    "initial": "initial add + commit",
    "status": "no-op status",
    "incremental": "incremental add + commit",
    "checkout": "checkout previous version",
}
Command = list[str]


@dataclass(frozen=True)
class Tool:
    """A contender: untimed setup commands, then the commands of each timed phase."""

    setup: list[Command]
    phases: dict[str, list[Command]]


@dataclass(frozen=True)
class Step:
    """One command's wall time, peak memory and output."""

    command: str
    seconds: float
    peak_rss: int
    stdout: str


class CommandError(RuntimeError):
    """A contender's command failed; the message has the command, its folder and its stderr."""


def _tools() -> dict[str, Tool]:
    """The three contenders, with the commands the brief of each phase names."""
    dsvc, dvc = str(BIN / "dsvc"), str(BIN / "dvc")
    git_setup = [
        ["git", "init", "-q"],
        ["git", "config", "user.name", "bench"],
        ["git", "config", "user.email", "bench@example.com"],
        # No automatic gc: detached after a commit, it would run beside the phases timed next.
        ["git", "config", "gc.auto", "0"],
    ]
    source = ["source", "add", SOURCE, "--format", "coco", "--media", "images", "-q"]
    dvc_add, git_commit = [dvc, "add", "images", "annotations"], ["git", "commit", "-qm"]
    return {
        "dsvc": Tool(
            setup=[[dsvc, "init", "-q"], [dsvc, *source]],
            phases={
                "initial": [
                    [dsvc, "add", ".", "--json"],
                    [dsvc, "commit", "-m", "v0"],
                    [dsvc, "checkpoint", "create", "v0"],
                ],
                "status": [[dsvc, "status"]],
                "incremental": [[dsvc, "add", ".", "--json"], [dsvc, "commit", "-m", "v1"]],
                "checkout": [[dsvc, "checkout", "v0"]],
            },
        ),
        "git": Tool(
            setup=git_setup,
            phases={
                "initial": [["git", "add", "-A"], [*git_commit, "v0"]],
                "status": [["git", "status"]],
                "incremental": [["git", "add", "-A"], [*git_commit, "v1"]],
                "checkout": [["git", "checkout", "-q", "HEAD~1"]],
            },
        ),
        "dvc": Tool(
            setup=[
                *git_setup,
                [dvc, "init", "-q"],
                [dvc, "config", "core.analytics", "false"],
                [dvc, "config", "core.check_update", "false"],
            ],
            phases={
                "initial": [dvc_add, ["git", "add", "-A"], [*git_commit, "v0"]],
                "status": [[dvc, "status"]],
                "incremental": [dvc_add, ["git", "add", "-A"], [*git_commit, "v1"]],
                "checkout": [["git", "checkout", "-q", "HEAD~1"], [dvc, "checkout"]],
            },
        ),
    }


def _env(work: Path) -> dict[str, str]:
    """Environment of every command: no global git config, no DVC analytics, DVC's site cache kept in work."""
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(work / "dvc-site-cache"),
    }


def _run(argv: Command, cwd: Path, env: dict[str, str]) -> Step:
    """Run one command, measuring its wall time and, through GNU time, its peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            check=False,
        )
        seconds = time.perf_counter() - start
        peak_rss = int(rss.read().split()[-1]) * 1024  # the last line; a failure's message comes first
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    shown = shlex.join([Path(argv[0]).name, *argv[1:]])
    if proc.returncode:
        raise CommandError(f"`{shown}` in {cwd} exited with {proc.returncode}:\n{stderr}{stdout}")
    return Step(shown, seconds, peak_rss, stdout)


def _settle() -> None:
    """Start a timed run from a quiet machine: no garbage to collect, no dirty pages to write back."""
    gc.collect()
    os.sync()


def _phase(commands: list[Command], cwd: Path, env: dict[str, str], repeat: int) -> list[Step]:
    """Run a phase's commands in order, repeat times, and return the steps of the fastest run."""
    best: list[Step] = []
    for _ in range(repeat):
        _settle()
        steps = [_run(cmd, cwd, env) for cmd in commands]
        if not best or _seconds(steps) < _seconds(best):
            best = steps
    return best


def _seconds(steps: list[Step]) -> float:
    return sum(step.seconds for step in steps)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every dataset file under root by relative path, leaving out the tools' own files."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in TOOL_FILES]
            filenames = [f for f in filenames if f not in TOOL_FILES]
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            files[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return files


def _hash_files(root: Path, rels: list[str], sizes: dict[str, tuple[int, int]]) -> list[bytes]:
    """The raw peer of reading: read and BLAKE3 each file, one thread for small files, all cores for large."""
    digests = []
    for rel in rels:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO if sizes[rel][0] >= LARGE_FILE else 1)
        with open(root / rel, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                h.update(chunk)
        digests.append(h.digest())
    return digests


def _copy_files(root: Path, rels: list[str], dest: Path) -> None:
    """The raw peer of writing: copy each file into dest, creating its folders."""
    made: set[Path] = set()
    for rel in rels:
        target = dest / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        shutil.copyfile(root / rel, target)


def _raw_hash_s(root: Path, rels: list[str], sizes: dict[str, tuple[int, int]]) -> float:
    """Best time of reading and hashing the files rels of root."""
    return report.timed(lambda: _hash_files(root, rels, sizes), repeat=RAW_REPEAT, setup=os.sync)


def _raw_copy_s(root: Path, rels: list[str], scratch: Path) -> float:
    """Best time of copying the files rels of root into the empty folder scratch."""

    def fresh() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        os.sync()

    seconds = report.timed(lambda: _copy_files(root, rels, scratch), repeat=RAW_REPEAT, setup=fresh)
    shutil.rmtree(scratch)
    return seconds


def _coco(path: Path) -> dict[str, Any]:
    """A COCO file's content with its id'd lists sorted by id, so renderings in any order compare equal."""
    coco: dict[str, Any] = orjson.loads(path.read_bytes())
    return {
        key: sorted(value, key=lambda item: item["id"])
        if isinstance(value, list) and value and isinstance(value[0], dict) and "id" in value[0]
        else value
        for key, value in coco.items()
    }


def _check_v0(
    name: str, folder: Path, v0: dict[str, tuple[int, int]], digests: dict[str, bytes], rendered: Path | None
) -> None:
    """Fail unless a checkout left v0's files with their bytes (SOURCE: the same content as in rendered)."""
    now = _snapshot(folder)
    if now.keys() != v0.keys():
        extra, missing = sorted(now.keys() - v0.keys()), sorted(v0.keys() - now.keys())
        raise RuntimeError(f"{name}: after checkout, extra files {extra[:5]}, missing files {missing[:5]}")
    wrong = [rel for rel in sorted(v0.keys() - digests.keys()) if now[rel][0] != v0[rel][0]]
    changed = sorted(digests)
    hashes = _hash_files(folder, changed, now)
    wrong += [rel for rel, digest in zip(changed, hashes, strict=True) if digest != digests[rel]]
    if rendered is not None and SOURCE in wrong and _coco(folder / SOURCE) == _coco(rendered / SOURCE):
        wrong.remove(SOURCE)
    if wrong:
        raise RuntimeError(f"{name}: after checkout, {len(wrong)} files differ from v0: {wrong[:5]}")


def _measure(work: Path, frames: int, media_size: int, boxes: float) -> dict[str, Any]:
    """Generate, copy, then time every phase of every contender, mutating all copies between the halves."""
    src = work / "dataset"
    datagen.generate(src, frames, media_size=media_size, seed=GENERATE_SEED, boxes_per_frame=boxes)
    tools = _tools()
    folders = {name: work / name for name in tools}
    for folder in folders.values():
        shutil.copytree(src, folder)
    v0 = _snapshot(src)
    files = sorted(v0)
    v0_digests = dict(zip(files, _hash_files(src, files, v0), strict=True))
    hash_all_s, copy_all_s = _raw_hash_s(src, files, v0), _raw_copy_s(src, files, work / "scratch")
    env = _env(work)
    for name, tool in tools.items():
        for cmd in tool.setup:
            _run(cmd, folders[name], env)
    steps: dict[str, dict[str, list[Step]]] = {name: {} for name in tools}

    def timed_phases(*phases: str) -> None:
        for phase in phases:
            for name, tool in tools.items():
                repeat = STATUS_REPEAT if phase == "status" else 1
                steps[name][phase] = _phase(tool.phases[phase], folders[name], env, repeat)

    timed_phases("initial", "status")
    added = max(1, round(ADD * frames))
    mutation = datagen.mutate(src, relabel=RELABEL, add=added, seed=MUTATE_SEED, media_size=media_size)
    v1 = _snapshot(src)
    for name, folder in folders.items():
        datagen.mutate(folder, relabel=RELABEL, add=added, seed=MUTATE_SEED, media_size=media_size)
        if {k: s for k, (s, _) in _snapshot(folder).items()} != {k: s for k, (s, _) in v1.items()}:
            raise RuntimeError(f"{name}: the mutation changed this copy differently from the reference copy")
    modified = sorted(rel for rel in v1 if rel in v0 and v1[rel] != v0[rel])
    new = sorted(v1.keys() - v0.keys())
    if v0.keys() - v1.keys():
        raise RuntimeError("the mutation removed files, which this benchmark does not expect")
    hash_changed_s = _raw_hash_s(src, sorted(modified + new), v1)
    copy_modified_s = _raw_copy_s(src, modified, work / "scratch")
    timed_phases("incremental", "checkout")
    v0_modified = {rel: v0_digests[rel] for rel in modified}
    for name in ("git", "dvc", "dsvc"):  # git first: dsvc's re-rendered annotations are compared to git's
        _check_v0(name, folders[name], v0, v0_modified, folders["git"] if name == "dsvc" else None)
    return _result(
        frames=frames,
        media_size=media_size,
        boxes=boxes,
        dataset={"files": len(v0), "bytes": sum(size for size, _ in v0.values())},
        mutation={
            "relabeled_frames": len(mutation.relabeled),
            "added_frames": len(mutation.added),
            "modified_files": len(modified),
            "added_files": len(new),
            "changed_bytes": sum(v1[rel][0] for rel in modified + new),
        },
        raw={
            "hash_all_s": hash_all_s,
            "copy_all_s": copy_all_s,
            "hash_changed_s": hash_changed_s,
            "copy_modified_s": copy_modified_s,
        },
        steps=steps,
    )


def _result(
    frames: int,
    media_size: int,
    boxes: float,
    dataset: dict[str, int],
    mutation: dict[str, int],
    raw: dict[str, float],
    steps: dict[str, dict[str, list[Step]]],
) -> dict[str, Any]:
    """All numbers of a run as one JSON-ready object, with ratios and targets."""
    seconds = {name: {phase: _seconds(s) for phase, s in phases.items()} for name, phases in steps.items()}
    ratios: dict[str, dict[str, Any]] = {}
    for phase, peer in _raw_of(raw).items():
        ratios[phase] = {
            "git": seconds["dsvc"][phase] / seconds["git"][phase],
            "dvc": seconds["dsvc"][phase] / seconds["dvc"][phase],
            "raw": None if peer is None else seconds["dsvc"][phase] / peer,
        }
    incremental_add = json.loads(steps["dsvc"]["incremental"][0].stdout)
    peak_rss = max(step.peak_rss for step in steps["dsvc"]["initial"][:2])  # the add and the commit
    changed = mutation["modified_files"] + mutation["added_files"]
    incremental_over_initial = seconds["dsvc"]["incremental"] / seconds["dsvc"]["initial"]
    targets = [
        _target("initial add + commit, dsvc / git", MAX_INITIAL_OVER_GIT, ratios["initial"]["git"]),
        _target(
            "initial add + commit, dsvc / raw read + BLAKE3", MAX_INITIAL_OVER_RAW, ratios["initial"]["raw"]
        ),
        _target("no-op status, dsvc / git", MAX_STATUS_OVER_GIT, ratios["status"]["git"]),
        _target(
            "incremental / initial add + commit, dsvc", MAX_INCREMENTAL_OVER_INITIAL, incremental_over_initial
        ),
        _target("files read by the incremental add", changed, incremental_add["files_read"], unit=" files"),
        *(_target(f"{PHASES[phase]}, dsvc / DVC", MAX_OVER_DVC, ratios[phase]["dvc"]) for phase in PHASES),
        _target(
            "peak RSS of the initial add and commit", MAX_PEAK_RSS / MB, peak_rss / MB, " MB", strict=True
        ),
    ]
    return {
        "frames": frames,
        "media_size": media_size,
        "boxes": boxes,
        "dataset": dataset,
        "mutation": mutation,
        "raw": raw,
        "seconds": seconds,
        "ratios": ratios,
        "commands": {
            name: {
                phase: [
                    {"command": s.command, "seconds": s.seconds, "peak_rss_bytes": s.peak_rss} for s in run
                ]
                for phase, run in phases.items()
            }
            for name, phases in steps.items()
        },
        "dsvc_files_read": incremental_add["files_read"],
        "dsvc_files_unchanged": incremental_add["files_unchanged"],
        "dsvc_initial_peak_rss_bytes": peak_rss,
        "targets": targets,
    }


def _raw_of(raw: dict[str, float]) -> dict[str, float | None]:
    """The raw peer of each phase: read + hash all, then the changed files, copy the modified ones back."""
    return {
        "initial": raw["hash_all_s"],
        "status": None,
        "incremental": raw["hash_changed_s"],
        "checkout": raw["copy_modified_s"],
    }


def _target(
    name: str, limit: float, measured: float, unit: str = "x", strict: bool = False
) -> dict[str, Any]:
    """One acceptance target: measured must be at most limit, or below it when strict."""
    met = measured < limit if strict else measured <= limit
    return {"target": name, "limit": limit, "measured": measured, "unit": unit, "strict": strict, "met": met}


def _cell(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _main_table(r: dict[str, Any]) -> str:
    s, raw_of = r["seconds"], _raw_of(r["raw"])
    rows = [
        [
            label,
            _cell(s["dsvc"][phase]),
            _cell(s["git"][phase]),
            _cell(s["dvc"][phase]),
            _cell(raw_of[phase], 3),
            _cell(r["ratios"][phase]["git"]),
            _cell(r["ratios"][phase]["dvc"], 3),
            _cell(r["ratios"][phase]["raw"]),
        ]
        for phase, label in PHASES.items()
    ]
    return report.table(
        ["operation", "dsvc s", "git s", "DVC s", "raw s", "dsvc / git", "dsvc / DVC", "dsvc / raw"], rows
    )


def _target_table(r: dict[str, Any]) -> str:
    rows = []
    for t in r["targets"]:
        unit = t["unit"]
        digits = 0 if unit != "x" else 2
        op = "<" if t["strict"] else "≤"
        rows.append(
            [
                t["target"],
                f"{op} {t['limit']:,.{digits}f}{unit}",
                f"{t['measured']:,.{digits if unit != 'x' else 3}f}{unit}",
                "yes" if t["met"] else "**no**",
            ]
        )
    return report.table(["target", "required", "measured", "met"], rows)


def _command_table(r: dict[str, Any]) -> str:
    rows = [
        [PHASES[phase], f"`{c['command']}`", f"{c['seconds']:.2f}", f"{c['peak_rss_bytes'] / MB:,.0f}"]
        for phase, commands in r["commands"]["dsvc"].items()
        for c in commands
    ]
    return report.table(["phase", "dsvc command", "seconds", "peak RSS MB"], rows)


def _wrap(text: str) -> str:
    """Refill each paragraph of text to the width of the docs, never breaking a `code span`."""
    paragraphs = (" ".join(p.split()) for p in text.strip().split("\n\n"))
    glued = (re.sub(r"`[^`]*`", lambda m: m[0].replace(" ", NBSP), p) for p in paragraphs)
    return "\n\n".join(textwrap.fill(p, WIDTH).replace(NBSP, " ") for p in glued)


def _section(r: dict[str, Any], cmd: str) -> str:
    d, m, raw = r["dataset"], r["mutation"], r["raw"]
    setup = _wrap(f"""
The dataset is {r["frames"]:,} generated COCO frames of {r["media_size"]:,}-byte media with about
{r["boxes"]:g} boxes each, plus two models' predictions: {d["files"]:,} files, {d["bytes"] / MB:,.0f} MB.
Three copies of it are versioned side by side: by the dsvc CLI (`dsvc add .`, `commit`,
`checkpoint create v0`, `status`, `checkout v0`, with the COCO file registered as the source of the images),
by plain git (`add -A`, `commit`, `status`, `checkout HEAD~1`) and by DVC with its default cache
(`dvc add images annotations` plus a git commit, `dvc status`, `git checkout HEAD~1 && dvc checkout`),
both repositories with git's automatic gc off (detached after a commit, it ran beside the next phases).
Between the status and the incremental commit every copy gets the same mutation:
{m["relabeled_frames"]:,} frames relabeled and {m["added_frames"]:,} frames added, which modifies
{m["modified_files"]:,} files and adds {m["added_files"]:,} ({m["changed_bytes"] / MB:,.1f} MB). Each
operation is the wall time of its commands as subprocesses, after `sync`; the no-op status is the best of
{STATUS_REPEAT}. Every checkout is checked to restore v0's files: byte for byte, except the COCO file, which
dsvc copies from its render cache or renders again, and which must have the same content.

The raw peers use no version control: reading and BLAKE3-hashing every file (one thread per small file)
for the initial commit, the modified and added files for the incremental one, and copying the modified files
for the checkout; best of {RAW_REPEAT}. Copying every file takes {raw["copy_all_s"]:.2f} s, reading and
hashing every file {raw["hash_all_s"]:.2f} s ({d["bytes"] / MB / raw["hash_all_s"]:,.0f} MB/s).
""")
    memory = _wrap(f"""
dsvc read {r["dsvc_files_read"]:,} files in the incremental add and skipped {r["dsvc_files_unchanged"]:,}
unchanged ones; the peak RSS (GNU time's maximum resident set size) of its initial add and commit was
{r["dsvc_initial_peak_rss_bytes"] / MB:,.0f} MB.
""")
    return f"""## Working tree: add, commit, status, checkout against git and DVC

{report.stamp(cmd)}

{setup}

{_main_table(r)}

{memory}

{_target_table(r)}

dsvc's commands one by one:

{_command_table(r)}
"""


def run(frames: int, media_size: int, boxes: float, keep: bool) -> dict[str, Any]:
    """Run the benchmark in a temporary folder under bench-data/, removed afterwards unless keep."""
    (report.ROOT / "bench-data").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="workdir-", dir=report.ROOT / "bench-data"))
    try:
        return _measure(work, frames, media_size, boxes)
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the results, publish the `workdir` section."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = report.arguments("workdir", __doc__, keep="keep the benchmark folder under bench-data/")
    parser.add_argument("--frames", type=int, default=100_000, help="frames of the generated dataset")
    parser.add_argument("--media-size", type=int, default=20_000, help="bytes per media file")
    parser.add_argument("--boxes", type=float, default=10.0, help="mean boxes per frame")
    args = parser.parse_args(args_list)
    if not os.access(GNU_TIME, os.X_OK):
        parser.error(f"needs GNU time at {GNU_TIME} to measure peak memory (apt-get install -y time)")
    if args.frames < 1 or args.media_size < datagen.MIN_MEDIA_SIZE or args.boxes < 0:
        parser.error(f"need --frames >= 1, --media-size >= {datagen.MIN_MEDIA_SIZE} and --boxes >= 0")
    try:
        result = run(args.frames, args.media_size, args.boxes, args.keep)
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    section = _section(result, report.command("benchmarks.workdir", args_list))
    report.publish("workdir", result, section, args.json, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
