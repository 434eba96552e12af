"""Metrics benchmark: dsvc's cold evaluation against pycocotools and faster-coco-eval on one generated
dataset, then dsvc's incremental evaluation after a 1% relabel.

Each contender runs in a fresh process, so its peak memory (VmHWM) is its own. pycocotools and
faster-coco-eval load the files first (untimed), then time evaluate + accumulate + summarize. dsvc's cold
time is a whole `Repo.evaluate` with an empty cell cache: reading labels and predictions from the object
store, matching, accumulating. The incremental run evaluates the relabeled checkpoint with the cells of
the first one cached. All runs must give the same 12 numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks import datagen, report

SOURCE = "annotations/instances.json"
PREDICTIONS = "predictions/bench.json"
NAME = "bench"
GENERATE_SEED, MUTATE_SEED = 0, 1
# Acceptance targets.
MIN_SPEEDUP_OVER_PYCOCOTOOLS = 5.0
MAX_OVER_FASTER = 1.0
MAX_INCREMENTAL_OVER_COLD = 0.05
TOOLS = ("pycocotools", "faster-coco-eval", "dsvc-cold", "dsvc-incremental")


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM starts afresh at exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(tool: str, root: Path) -> dict[str, Any]:
    """Run one contender in this process and return its time, peak memory and stats."""
    if tool in ("pycocotools", "faster-coco-eval"):
        if tool == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(root / SOURCE))
            dt = gt.loadRes(str(root / PREDICTIONS))
            start = time.perf_counter()
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak_rss": _peak_rss(), "stats": [float(v) for v in ev.stats]}
    from dsvc.repo import Repo

    metrics = Repo(root).metrics  # imports the metrics modules: outside the timing, as for the peers
    rev = "v0"
    if tool == "dsvc-cold":
        shutil.rmtree(metrics.metrics_cache, ignore_errors=True)
    else:
        rev = "v1"
    start = time.perf_counter()
    _, _, result = metrics.evaluate(NAME, rev)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss": _peak_rss(),
        "stats": list(result.stats.values()),
        "recomputed": result.frames.recomputed,
        "evaluated": result.frames.evaluated,
    }


def _run_worker(tool: str, root: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.metrics", "--worker", tool, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _prepare(root: Path, frames: int, relabel: float) -> dict[str, Any]:
    """Generate the dataset and its predictions, version them as v0 with the predictions imported."""
    from dsvc.history import signature
    from dsvc.repo import Repo

    ds = datagen.generate(root, frames, media_size=datagen.MIN_MEDIA_SIZE, seed=GENERATE_SEED)
    # About 300k predictions: model_a's, plus model_b's on two thirds of the images (duplicates included).
    a = orjson.loads((root / "predictions" / "model_a.json").read_bytes())
    b = orjson.loads((root / "predictions" / "model_b.json").read_bytes())
    predictions = a + [r for r in b if r["image_id"] % 3]
    (root / PREDICTIONS).write_bytes(orjson.dumps(predictions))
    who = signature("bench", "bench@example.com")
    repo, _ = Repo.init(root)
    repo.config.set("eval", "auto", "false")
    repo.config.save()
    repo.source_add(SOURCE, "coco", "images")
    repo.add()
    repo.commit("v0", who)
    repo.checkpoint_create("v0", who)
    repo.metrics.infer_import(NAME, root / PREDICTIONS, "coco", who)
    return {"frames": ds.frames, "labels": ds.annotations, "predictions": len(predictions), "who": who}


def _relabel(root: Path, relabel: float, who: Any) -> int:
    from dsvc.repo import Repo

    mutation = datagen.mutate(root, relabel=relabel, add=0, seed=MUTATE_SEED)
    repo = Repo(root)
    repo.add()
    repo.commit("v1", who)
    repo.checkpoint_create("v1", who)
    return len(mutation.relabeled)


def run(frames: int, relabel: float, keep: bool) -> dict[str, Any]:
    """Run every contender on one dataset and return the measurements."""
    base = report.ROOT / "bench-data"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="metrics-", dir=base))
    try:
        root = work / "data"
        sizes = _prepare(root, frames, relabel)
        results = {tool: _run_worker(tool, root) for tool in TOOLS[:3]}
        relabeled = _relabel(root, relabel, sizes.pop("who"))
        results["dsvc-incremental"] = _run_worker("dsvc-incremental", root)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    reference = results["pycocotools"]["stats"]
    parity = max(abs(x - y) for x, y in zip(results["dsvc-cold"]["stats"], reference, strict=True))
    return {**sizes, "relabeled": relabeled, "results": results, "max_stat_difference": parity}


def _section(result: dict[str, Any], cmd: str) -> str:
    r = result["results"]
    cold = r["dsvc-cold"]["seconds"]
    rows = [
        [
            tool,
            f"{r[tool]['seconds']:.2f}",
            f"{r[tool]['peak_rss'] / 1e6:,.0f}",
            f"{r[tool].get('recomputed', '')}",
        ]
        for tool in TOOLS
    ]
    speedup = r["pycocotools"]["seconds"] / cold
    over_faster = cold / r["faster-coco-eval"]["seconds"]
    incremental = r["dsvc-incremental"]["seconds"] / cold
    memory = r["dsvc-cold"]["peak_rss"] / r["pycocotools"]["peak_rss"]
    targets = [
        ["dsvc cold vs pycocotools", f"≥ {MIN_SPEEDUP_OVER_PYCOCOTOOLS:g}x faster", f"{speedup:.1f}x",
         speedup >= MIN_SPEEDUP_OVER_PYCOCOTOOLS],
        ["dsvc cold / faster-coco-eval", f"≤ {MAX_OVER_FASTER:g}", f"{over_faster:.2f}",
         over_faster <= MAX_OVER_FASTER],
        ["dsvc incremental / dsvc cold", f"≤ {MAX_INCREMENTAL_OVER_COLD:g}", f"{incremental:.3f}",
         incremental <= MAX_INCREMENTAL_OVER_COLD],
        ["dsvc cold peak memory / pycocotools'", "≤ 1", f"{memory:.2f}", memory <= 1],
        ["largest difference of the 12 stats from pycocotools", "≤ 1e-12",
         f"{result['max_stat_difference']:.1e}", result["max_stat_difference"] <= 1e-12],
    ]  # fmt: skip
    for row in targets:
        row[3] = "yes" if row[3] else "**no**"
    return f"""## Metrics: COCO evaluation, cold and incremental

{report.stamp(cmd)}

{result["frames"]:,} generated frames with {result["labels"]:,} labels and {result["predictions"]:,}
predictions (one model's, plus another's on two thirds of the images, so duplicates and tied scores abound).
pycocotools and faster-coco-eval time `evaluate` + `accumulate` + `summarize` after loading the files;
dsvc's cold time is a whole evaluation with an empty cell cache (labels and predictions read from the
object store, matched, accumulated). Then {result["relabeled"]:,} frames are relabeled and committed, and
dsvc evaluates the new checkpoint with the first one's cells cached. Each run is one fresh process, its
modules imported before the clock starts (dsvc's metrics modules too); peak memory is its VmHWM.

{report.table(["contender", "seconds", "peak MB", "frames recomputed"], rows)}

{report.table(["target", "required", "measured", "met"], targets)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the results, publish the `metrics` section."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = report.arguments("metrics", __doc__, keep="keep the benchmark folder under bench-data/")
    parser.add_argument("--frames", type=int, default=20_000, help="frames of the generated dataset")
    parser.add_argument("--relabel", type=float, default=0.01, help="fraction of frames relabeled")
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(args_list)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], Path(args.worker[1]))))
        return 0
    if args.frames < 1 or not 0 < args.relabel <= 1:
        parser.error("need --frames >= 1 and 0 < --relabel <= 1")
    result = run(args.frames, args.relabel, args.keep)
    section = _section(result, report.command("benchmarks.metrics", args_list))
    report.publish("metrics", result, section, args.json, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
