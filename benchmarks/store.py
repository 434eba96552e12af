"""Object store benchmark: media ingest against raw BLAKE3 hashing, small-object writes and reads, lookups.

Ingest is judged against its floor: reading and hashing the same files with the `blake3` package, as `b3sum`
does, on the same warm page cache. Everything runs in a temporary folder under `bench-data/` (gitignored)
that is removed at the end; at most two copies of the media exist at once.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from benchmarks import report
from dsvc import codec
from dsvc.hashing import ObjectId
from dsvc.objects import FORMAT_VERSION, Labels, load
from dsvc.store import DiskObjectStore

SMALL_SIZE = 20_000  # bytes per small file, a dataset's JPEG
LARGE_SIZE = 64 << 20  # bytes per large file, a video or a checkpoint shard
PER_FOLDER = 1000
READ_CHUNK = 16 << 20
BOXES = 3  # annotations per Labels object, which makes ~200-byte objects
CLASSES = ("person", "car", "bicycle", "truck", "bus", "traffic light", "dog", "stop sign")
MIN_INGEST_RATIO = 0.5
MB = 1e6


@dataclass(frozen=True)
class Shape:
    """One kind of media file: its files and how the raw peer hashes them."""

    name: str
    files: list[Path]
    size: int
    threads: int

    @property
    def total(self) -> int:
        return self.size * len(self.files)


def _write_media(folder: Path, count: int, size: int, rng: np.random.Generator) -> list[Path]:
    """Write count files of random (incompressible) bytes, PER_FOLDER to a subfolder like a dataset's."""
    files = []
    for i in range(count):
        path = folder / f"{i // PER_FOLDER:03d}" / f"file_{i:07d}.bin"
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True)
        path.write_bytes(rng.bytes(size))
        files.append(path)
    return files


def _raw_hash(shape: Shape) -> list[bytes]:
    """The peer: read each file and BLAKE3 it, one thread for small files and all cores for large ones."""
    digests = []
    for path in shape.files:
        h = blake3.blake3(max_threads=shape.threads)
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                h.update(chunk)
        digests.append(h.digest())
    return digests


def _rates(files: int, size: int, raw_s: float, dsvc_s: float, batch_end_s: float) -> dict[str, Any]:
    """One media row: both contenders' best times and throughputs, and dsvc's share of the raw speed."""
    return {
        "files": files,
        "bytes": size,
        "raw_s": raw_s,
        "dsvc_s": dsvc_s,
        "batch_end_s": batch_end_s,
        "raw_mb_s": size / MB / raw_s,
        "dsvc_mb_s": size / MB / dsvc_s,
        "ratio": raw_s / dsvc_s,
    }


def _ingest(shape: Shape, store_dir: Path) -> dict[str, Any]:
    """Time the raw peer and `put_blob_file` in one batch into a fresh store, checking they agree on ids."""
    expected = _raw_hash(shape)  # also warms the page cache for both contenders
    raw_s = report.timed(lambda: _raw_hash(shape))
    ids: list[ObjectId] = []
    ends: list[float] = []

    def put_all() -> None:
        store = DiskObjectStore.create(store_dir)
        ids.clear()
        with store.batch():
            ids.extend(store.put_blob_file(path)[0] for path in shape.files)
            start = time.perf_counter()
        ends.append(time.perf_counter() - start)

    dsvc_s = report.timed(put_all, setup=lambda: shutil.rmtree(store_dir, ignore_errors=True))
    shutil.rmtree(store_dir)
    if ids != expected:
        raise RuntimeError(f"{shape.name}: put_blob_file ids differ from the BLAKE3 of the files")
    return _rates(len(shape.files), shape.total, raw_s, dsvc_s, min(ends))


def _labels(count: int, seed: int) -> list[bytes]:
    """Canonical bytes of distinct Labels objects with BOXES boxes each, as a dataset's label column holds."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        corner = rng.uniform(0, 1000, (n, BOXES, 2))
        side = rng.uniform(4, 400, (n, BOXES, 2))
        boxes = np.round(np.concatenate([corner, side], axis=2), 2).tolist()
        classes = rng.integers(0, len(CLASSES), (n, BOXES)).tolist()
        for i, (frame_boxes, frame_classes) in enumerate(zip(boxes, classes, strict=True)):
            annotations = [
                [
                    CLASSES[c],
                    (start + i) * BOXES + j,
                    box,
                    None,
                    None,
                    None,
                    False,
                    round(box[2] * box[3], 2),
                    None,
                    {},
                ]
                for j, (box, c) in enumerate(zip(frame_boxes, frame_classes, strict=True))
            ]
            out.append(codec.encode([Labels.KIND, FORMAT_VERSION, annotations]))
    if load(out[0], Labels).encoded != out[0]:
        raise RuntimeError("generated objects are not canonical Labels objects")
    return out


def _objects(folder: Path, count: int, lookups: int, seed: int) -> dict[str, Any]:
    """Time count puts in one batch, reading all back in random order, and batched vs single lookups."""
    datas = _labels(count, seed)
    rng = np.random.default_rng(seed + 1)
    store = DiskObjectStore.create(folder)
    ids: list[ObjectId] = []

    def put_all() -> None:
        with store.batch():
            ids.extend(store.put(data) for data in datas)

    put_s = report.timed(put_all, repeat=1)
    mean_size = sum(map(len, datas)) / count
    datas.clear()
    shuffled = [ids[i] for i in rng.permutation(count).tolist()]
    reader = DiskObjectStore(folder)
    get_s = report.timed(lambda: [reader.get(oid) for oid in shuffled], repeat=1)
    present = [ids[i] for i in rng.choice(count, lookups // 2, replace=False).tolist()]
    absent = _absent(rng, lookups - len(present))
    wanted = [(present + absent)[i] for i in rng.permutation(lookups).tolist()]
    found: list[bool] = []
    single: list[bool] = []

    def batched() -> None:
        found[:] = reader.contains_many(wanted)

    def one_by_one() -> None:
        single[:] = [reader.contains(oid) for oid in wanted]

    many_s = report.timed(batched)
    single_s = report.timed(one_by_one)
    if found != single or sum(found) != len(present):
        raise RuntimeError(f"lookups found {sum(found)} and {sum(single)} of {len(present)} stored ids")
    return {
        "objects": count,
        "object_bytes": mean_size,
        "packs": len(reader.packs()),
        "pack_bytes": sum(p.stat().st_size for p in (folder / "packs").iterdir()),
        "put_s": put_s,
        "put_per_s": count / put_s,
        "get_s": get_s,
        "get_per_s": count / get_s,
        "lookups": lookups,
        "contains_many_s": many_s,
        "contains_many_per_s": lookups / many_s,
        "contains_s": single_s,
        "contains_per_s": lookups / single_s,
    }


def _absent(rng: np.random.Generator, count: int) -> list[ObjectId]:
    """Random ids that no stored object has."""
    data = rng.bytes(32 * count)
    return [ObjectId(data[i : i + 32]) for i in range(0, len(data), 32)]


def run(gb: float, objects: int, lookups: int, seed: int) -> dict[str, Any]:
    """Run every phase in a temporary folder under bench-data/ and remove it afterwards."""
    (report.ROOT / "bench-data").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="store-", dir=report.ROOT / "bench-data"))
    try:
        rng = np.random.default_rng(seed)
        half = gb * 1e9 / 2
        small = max(1, round(half / SMALL_SIZE))
        large = max(1, round(half / LARGE_SIZE))
        shapes = [
            Shape("small", _write_media(work / "media" / "small", small, SMALL_SIZE, rng), SMALL_SIZE, 1),
            Shape(
                "large",
                _write_media(work / "media" / "large", large, LARGE_SIZE, rng),
                LARGE_SIZE,
                blake3.blake3.AUTO,
            ),
        ]
        media = {shape.name: _ingest(shape, work / "store") for shape in shapes}
        shutil.rmtree(work / "media")
        media["all"] = _rates(
            *(sum(m[k] for m in media.values()) for k in ("files", "bytes", "raw_s", "dsvc_s", "batch_end_s"))
        )
        return {"media": media, **_objects(work / "objects", objects, lookups, seed)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _media_table(media: dict[str, Any]) -> str:
    labels = {
        "small": f"{media['small']['files']:,} small files × {SMALL_SIZE // 1000} KB",
        "large": f"{media['large']['files']:,} large files × {LARGE_SIZE >> 20} MiB",
        "all": "all media",
    }
    rows = []
    for name, m in media.items():
        ok = "yes" if m["ratio"] >= MIN_INGEST_RATIO else "**no**"
        rows.append(
            [
                labels[name],
                f"{m['bytes'] / MB:,.0f} MB",
                f"{m['raw_mb_s']:,.0f} MB/s",
                f"{m['dsvc_mb_s']:,.0f} MB/s",
                f"{m['batch_end_s']:.2f} s",
                f"{m['ratio']:.2f}",
                f"≥ {MIN_INGEST_RATIO}",
                ok,
            ]
        )
    return report.table(
        [
            "media",
            "size",
            "raw: read + BLAKE3",
            "dsvc: put_blob_file",
            "of which batch end",
            "dsvc / raw",
            "target",
            "met",
        ],
        rows,
    )


def _object_table(r: dict[str, Any]) -> str:
    n, k = f"{r['objects']:,}", f"{r['lookups']:,}"
    return report.table(
        ["operation", "seconds", "rate"],
        [
            [
                f"`put` {n} objects of ~{r['object_bytes']:.0f} bytes in one batch ({r['packs']} packs, "
                f"{r['pack_bytes'] / MB:,.0f} MB)",
                f"{r['put_s']:.2f}",
                f"{r['put_per_s']:,.0f} objects/s",
            ],
            [
                f"`get` all {n} in random order from a freshly opened store",
                f"{r['get_s']:.2f}",
                f"{r['get_per_s']:,.0f} objects/s",
            ],
            [
                f"`contains_many` of {k} ids, half stored",
                f"{r['contains_many_s']:.4f}",
                f"{r['contains_many_per_s']:,.0f} lookups/s",
            ],
            [
                f"the same {k} ids through single `contains` calls",
                f"{r['contains_s']:.2f}",
                f"{r['contains_per_s']:,.0f} lookups/s",
            ],
        ],
    )


def _section(result: dict[str, Any], cmd: str) -> str:
    speedup = result["contains_s"] / result["contains_many_s"]
    return f"""## Object store: media ingest, small objects, lookups

{report.stamp(cmd)}

Media is random (incompressible) bytes, half of it in small files ({PER_FOLDER:,} per folder), half in large
ones. Both contenders read warm page cache (every file is read once before timing). The raw peer reads and
hashes each file with the `blake3` package (one thread for small files, all cores for large ones), as `b3sum`
does; dsvc streams each file into a loose blob with `put_blob_file`, all inside one `store.batch()` of a fresh
`DiskObjectStore`, so its time includes writing the copy and making it durable at the end of the batch.
Media times are the best of 3 runs; MB = 10^6 bytes.

{_media_table(result["media"])}

Small objects are the canonical bytes of `Labels` objects with {BOXES} boxes each. The object writes and reads
are one pass each; lookups are the best of 3. `contains_many` is {speedup:,.0f}x faster than single calls.

{_object_table(result)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the results, publish the `store` section."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = report.arguments("store", __doc__)
    parser.add_argument("--gb", type=float, default=1.0, help="GB (10^9 bytes) of media files to ingest")
    parser.add_argument("--objects", type=int, default=1_000_000, help="small objects to write and read")
    parser.add_argument("--lookups", type=int, default=100_000, help="ids to look up, half of them stored")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(args_list)
    if args.gb <= 0 or args.objects < 1 or not 2 <= args.lookups <= 2 * args.objects:
        parser.error("need --gb > 0, --objects >= 1 and 2 <= --lookups <= 2 * --objects")
    result = run(args.gb, args.objects, args.lookups, args.seed)
    section = _section(result, report.command("benchmarks.store", args_list))
    report.publish("store", result, section, args.json, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
