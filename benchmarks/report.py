"""Helpers every benchmark shares: the machine, best-of-N timing and the sections of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

The numbers below come from `make bench`. Absolute times depend on the machine, so each benchmark is judged
by ratios against peers measured in the same run (raw BLAKE3 hashing, a full rebuild, one lookup at a time)
and by how its costs grow with the input, next to the acceptance target it must meet.

Machine: {machine}
"""


def arguments(module: str, doc: str | None, keep: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's command line with the flags every benchmark has: --json and --no-write, and --keep
    (with its help text) for those that build something under bench-data/."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=doc)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    if keep is not None:
        parser.add_argument("--keep", action="store_true", help=keep)
    return parser


def machine() -> dict[str, Any]:
    """Describe the machine, so every published number says where it was measured."""
    cpu = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    memory = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / (1 << 30), 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """Render the machine as one line, the form docs/benchmarks.md shows."""
    m = info or machine()
    return f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, Python {m['python']}, {m['os']}"


def timed(
    fn: Callable[[], object],
    repeat: int = 3,
    setup: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Return the best wall time of fn over repeat runs: the least noisy estimate on a shared machine.

    setup, when given, runs untimed before each run (to start every run from the same state); clock
    `time.process_time` measures CPU time instead, which other processes on the machine disturb less."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def command(module: str, argv: Sequence[str]) -> str:
    """Return the command line that reproduces a run, for the section that publishes it."""
    return shlex.join(["python", "-m", module, *argv])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def stamp(cmd: str) -> str:
    """Return the date, machine and command line that head every section, so numbers can be reproduced."""
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Measured {date} on {machine_line()} with `{cmd}`."


def write_section(name: str, markdown: str, path: Path = DOCS) -> None:
    """Replace the section between this benchmark's markers (or append it), leaving other sections alone."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER.format(machine=machine_line())
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        text = text[:start] + block + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(name: str, result: dict[str, Any], section: str, as_json: bool, write: bool) -> None:
    """Print a benchmark's result (JSON or its markdown section) and write the section into the docs."""
    print(json.dumps(result) if as_json else section)
    if write:
        write_section(name, section)
