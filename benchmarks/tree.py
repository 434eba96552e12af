"""Merkle map benchmark: build, apply and diff cost at growing sizes, to show edits cost O(d log N), not O(N).

Keys look like frame ids (`007/frame_0014000.jpg`); existing frames have even numbers so that inserted keys
(odd numbers) land all over the map, as new frames of existing sequences would. Values are random 32-byte
ids. Every build starts from an empty MemoryObjectStore, so times and node counts are the tree code's alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from benchmarks import report
from dsvc import tree, tree_diff
from dsvc.hashing import ObjectId
from dsvc.objects import Node
from dsvc.store import MemoryObjectStore

# Acceptance targets (DESIGN: edits and diffs cost O(d log N)).
MAX_GROWTH = 1.5
MIN_BUILD_OVER_APPLY = 50.0
UPDATE_SHARE, INSERT_SHARE = 0.8, 0.1  # the rest of the edits are deletes

Edit = tuple[bytes, bytes | None]
Changes = dict[bytes, tuple[bytes | None, bytes | None]]


@dataclass(frozen=True)
class Result:
    """One size's measurements; the first six fields are the JSON contract of `--json`."""

    size: int
    build_s: float
    apply_s: float
    diff_s: float
    apply_nodes_written: int
    diff_nodes_read: int
    levels: int
    edits: int
    changes: int


def _key(index: int, inserted: bool = False) -> bytes:
    """Frame-id key of the index-th frame; inserted frames take the odd number right after it."""
    return b"%03d/frame_%07d.jpg" % (index // 1000, 2 * index + inserted)


def _ids(rng: np.random.Generator, count: int) -> list[bytes]:
    """Random 32-byte values, as object ids look."""
    data = rng.bytes(32 * count)
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def _workload(size: int, edits: int, seed: int) -> tuple[list[tuple[bytes, bytes]], list[Edit], Changes]:
    """Return the sorted items, a shuffled mix of distinct edits, and the changes they must produce."""
    rng = np.random.default_rng(seed)
    items = list(zip((_key(i) for i in range(size)), _ids(rng, size), strict=True))
    inserts = round(edits * INSERT_SHARE)
    updates = round(edits * UPDATE_SHARE)
    deletes = edits - inserts - updates
    touched = rng.choice(size, updates + deletes, replace=False).tolist()
    fresh = rng.choice(size, inserts, replace=False).tolist()
    values = _ids(rng, updates + inserts)
    mix: list[Edit] = [(items[i][0], v) for i, v in zip(touched[:updates], values[:updates], strict=True)]
    mix += [(items[i][0], None) for i in touched[updates:]]
    mix += [(_key(i, inserted=True), v) for i, v in zip(fresh, values[updates:], strict=True)]
    expected: Changes = {}
    old = dict(items[i] for i in touched)
    for key, value in mix:
        if old.get(key) != value:
            expected[key] = (old.get(key), value)
    order = rng.permutation(len(mix)).tolist()
    return items, [mix[i] for i in order], expected


def run(size: int, edits: int, seed: int) -> Result:
    """Build a map of size entries, apply edits to it and diff the two versions, checking the diff."""
    items, mix, expected = _workload(size, edits, seed)
    built: list[tuple[MemoryObjectStore, ObjectId]] = []

    def build() -> None:
        store = MemoryObjectStore()
        built.append((store, tree.build(store, items)))

    build_s = report.timed(build)
    store, root = built.pop()
    built.clear()
    store.counters.reset()
    new_root = tree.apply(store, root, mix)
    written = store.counters.writes
    apply_s = report.timed(lambda: tree.apply(store, root, mix))
    store.counters.reset()
    changes = list(tree_diff.diff(store, root, new_root))
    read = store.counters.reads
    diff_s = report.timed(lambda: list(tree_diff.diff(store, root, new_root)))
    found = {c.key: (c.old, c.new) for c in changes}
    if len(changes) != len(expected) or found != expected:
        raise RuntimeError(
            f"size {size}: diff found {len(changes)} changes, expected {len(expected)} distinct effective"
            f" edits ({len(found.keys() - expected.keys())} unexpected, {len(expected.keys() - found.keys())}"
            " missing)"
        )
    inserts = sum(old is None for old, _ in expected.values())
    deletes = sum(new is None for _, new in expected.values())
    if tree.length(store, new_root) != size + inserts - deletes:
        raise RuntimeError(f"size {size}: the edited map has {tree.length(store, new_root)} entries")
    levels = store.get_object(root, Node).level + 1
    return Result(size, build_s, apply_s, diff_s, written, read, levels, len(mix), len(changes))


def _growth(results: list[Result]) -> tuple[float, float, float]:
    """Return the growth of nodes written and read from the smallest to the largest size, and build/apply."""
    small, large = results[0], results[-1]
    return (
        large.apply_nodes_written / small.apply_nodes_written,
        large.diff_nodes_read / small.diff_nodes_read,
        large.build_s / large.apply_s,
    )


def _size_table(results: list[Result]) -> str:
    return report.table(
        ["entries", "levels", "build s", "apply s", "diff s", "nodes written by apply", "nodes read by diff"],
        [
            [
                f"{r.size:,}",
                r.levels,
                f"{r.build_s:.3f}",
                f"{r.apply_s:.4f}",
                f"{r.diff_s:.4f}",
                f"{r.apply_nodes_written:,}",
                f"{r.diff_nodes_read:,}",
            ]
            for r in results
        ],
    )


def _target_table(results: list[Result]) -> str:
    written, read, speedup = _growth(results)
    span = f"{results[0].size:,} → {results[-1].size:,}"

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    return report.table(
        ["target", "required", "measured", "met"],
        [
            [
                f"growth of nodes written by apply, {span}",
                f"≤ {MAX_GROWTH}x",
                f"{written:.2f}x",
                met(written <= MAX_GROWTH),
            ],
            [
                f"growth of nodes read by diff, {span}",
                f"≤ {MAX_GROWTH}x",
                f"{read:.2f}x",
                met(read <= MAX_GROWTH),
            ],
            [
                f"build time / apply time at {results[-1].size:,}",
                f"≥ {MIN_BUILD_OVER_APPLY:.0f}x",
                f"{speedup:.0f}x",
                met(speedup >= MIN_BUILD_OVER_APPLY),
            ],
        ],
    )


def _section(results: list[Result], edits: int, cmd: str) -> str:
    return f"""## Merkle map: build, apply, diff

{report.stamp(cmd)}

Each map is built from sorted frame-id keys with random 32-byte values in a `MemoryObjectStore`. Then
{edits:,} distinct edits are applied: {UPDATE_SHARE:.0%} value changes, {INSERT_SHARE:.0%} inserts of new
keys spread over the map, the rest deletes. Finally the two versions are diffed, and the diff is checked
against the edits. Times are the best of 3 runs; node counts are the store writes and reads of one run.

{_size_table(results)}

{_target_table(results)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run every size, print the results, publish the `tree` section."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = report.arguments("tree", __doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated map sizes, smallest first")
    parser.add_argument("--edits", type=int, default=1000, help="edits applied to each map")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(args_list)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[0] < 10 or not 10 <= args.edits <= sizes[0] // 2:
        parser.error("need sizes >= 10 and 10 <= edits <= half the smallest size")
    results = []
    for size in sizes:
        result = run(size, args.edits, args.seed)
        results.append(result)
        if args.json:
            print(json.dumps(asdict(result)), flush=True)
    written, read, speedup = _growth(results)
    summary = (
        f"growth {sizes[0]:,} -> {sizes[-1]:,}: nodes written {written:.2f}x, nodes read {read:.2f}x "
        f"(target <= {MAX_GROWTH}x); build/apply at {sizes[-1]:,}: {speedup:.0f}x (target >= "
        f"{MIN_BUILD_OVER_APPLY:.0f}x)"
    )
    if args.json:
        print(summary, file=sys.stderr)
    else:
        print(_size_table(results))
        print(summary)
    if not args.no_write:
        cmd = report.command("benchmarks.tree", args_list)
        report.write_section("tree", _section(results, args.edits, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
