"""The diff part of the Python API: what changed between two versions (DESIGN §8).

Reached as `repo.diffs` (and `repo.diff`, `repo.overlap`), kept apart from `dsvc.repo` so each module
stays one concept; `dsvc.diff` does the work.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from dsvc.atomic import write_file
from dsvc.diff import Comparison, Counts, Distribution, FrameChange, FrameDetail, count
from dsvc.hashing import ObjectId, hash_bytes
from dsvc.store import ObjectStore, OverlayObjectStore
from dsvc.workdir.stage import stage

if TYPE_CHECKING:
    from dsvc.repo import Repo


class Diffs:
    """`Repo.diffs`: comparisons of two versions and their distributions."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def between(self, a: str | None = None, b: str | None = None) -> Comparison:
        """Two versions to diff: a (default HEAD) against b (default the working tree, staged into a scratch
        store so nothing is written to the repository)."""
        before_id = self.repo.rev_parse(a, commit=True) if a is not None else self.repo.head_commit()
        if b is not None:
            after_id = self.repo.rev_parse(b, commit=True)
            return Comparison(
                self.repo.store,
                self.repo.roots_of(before_id),
                self.repo.roots_of(after_id),
                before_id,
                after_id,
            )
        store, roots = self.worktree_roots()
        return Comparison(store, self.repo.roots_of(before_id), roots, before_id, None)

    def worktree_roots(self) -> tuple[ObjectStore, dict[str, ObjectId]]:
        """The roots `dsvc add .` would stage now, in a scratch store over the repository's."""
        scratch = OverlayObjectStore(self.repo.store)
        with scratch.batch():
            result = stage(
                scratch, self.repo.index, self.repo.root, self.repo.sources(), self.repo.staged_roots()
            )
        return scratch, result.roots

    def diff(self, a: str | None = None, b: str | None = None) -> Iterator[FrameChange]:
        """The frames that differ from a to b (see `between`), streamed in id order."""
        return self.between(a, b).frames()

    def overlap(self, a: str | None = None, b: str | None = None) -> Iterator[str]:
        """The ids of the frames both a and b have."""
        return self.between(a, b).overlap()

    def distribution(self, comparison: Comparison, changed: list[FrameDetail]) -> Distribution:
        """Both sides' distributions: the first from the cache (counted once), the second from the changes
        (and cached in turn when it is a commit)."""
        found = comparison.distribution(self.counts(comparison.before), changed)
        if comparison.after_id is not None:
            self.remember_counts(comparison.after, found.after)
        return found

    def counts(self, roots: Mapping[str, ObjectId]) -> Counts:
        """The distribution of a version, counted in full once and then read from `.dsvc/cache/counts`."""
        path = self._counts_path(roots)
        try:
            return Counts.from_json(orjson.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent or unreadable: recount
            counts = count(self.repo.store, roots)
            self.remember_counts(roots, counts)
            return counts

    def remember_counts(self, roots: Mapping[str, ObjectId], counts: Counts) -> None:
        """Cache a version's counts (a cache: failing to write it only costs a recount later)."""
        path = self._counts_path(roots)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file(path, orjson.dumps(counts.to_json()))
        except OSError:
            pass

    def _counts_path(self, roots: Mapping[str, ObjectId]) -> Path:
        key = hash_bytes(roots["frames"] + roots["labels"]).hex()
        return self.repo.dsvc_dir / "cache" / "counts" / f"{key}.json"
