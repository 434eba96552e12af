"""The metrics part of the Python API: inference sets, evaluations, comparisons (DESIGN §9).

Reached as `repo.metrics`, kept apart from `dsvc.repo` so each module stays one concept; the engine does the
work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvc.errors import BadRevision
from dsvc.hashing import ObjectId
from dsvc.metrics import engine, inference, report
from dsvc.metrics.compare import Comparison, compare
from dsvc.metrics.params import DEFAULT as METRIC_PARAMS
from dsvc.objects import InferenceSet, Signature
from dsvc.refs import HEAD, check_ref_name

if TYPE_CHECKING:
    from dsvc.repo import Repo


class Metrics:
    """`Repo.metrics`: the inference sets and evaluations of one repository."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    @property
    def metrics_cache(self) -> Path:
        """Derived metrics data (cells, image orders, summaries): safe to delete, costs a cold evaluation."""
        return self.repo.dsvc_dir / "cache" / "metrics"

    def inference(self, name: str) -> tuple[ObjectId, InferenceSet]:
        oid = self.repo.refs.read(check_ref_name(f"refs/inferences/{name}"))
        if oid is None:
            raise BadRevision(f"no such inference set: {name} (import one with 'dsvc infer import')")
        return oid, self.repo.store.get_object(oid, InferenceSet)

    def inferences(self) -> list[tuple[ObjectId, InferenceSet]]:
        refs = self.repo.refs.list_refs("refs/inferences/")
        return [(oid, self.repo.store.get_object(oid, InferenceSet)) for _, oid in sorted(refs.items())]

    def inference_log(self, name: str) -> Iterator[tuple[ObjectId, InferenceSet]]:
        """The versions of an inference set, newest first."""
        oid: ObjectId | None = self.inference(name)[0]
        while oid is not None:
            version = self.repo.store.get_object(oid, InferenceSet)
            yield oid, version
            oid = version.parents[0] if version.parents else None

    def infer_import(
        self,
        name: str,
        path: Path,
        fmt: str,
        who: Signature,
        model: str | None = None,
        at: str = HEAD,
        message: str = "",
    ) -> ObjectId:
        """Store a model's predictions as a new version of inference set NAME (frames resolved at `at`)."""
        ref = check_ref_name(f"refs/inferences/{name}")
        commit = self.repo.rev_parse(at, commit=True)
        per_frame = inference.parse(fmt, path, inference.catalog(self.repo.store, self.repo.roots_of(commit)))
        with self.repo.lock():
            old = self.repo.refs.read(ref)
            previous = self.repo.store.get_object(old, InferenceSet) if old is not None else None
            with self.repo.store.batch():
                root = inference.write_predictions(self.repo.store, per_frame)
                version = InferenceSet(
                    name,
                    model or (previous.model if previous else name),
                    root,
                    commit,
                    (old,) if old is not None else (),
                    {"format": fmt, "file": path.name},
                    who,
                    message,
                )
                oid = self.repo.store.put_object(version)
            self.repo.refs.set_if_equals(ref, old, oid, f"infer: imported {path.name}")
        return oid

    def evaluate(
        self,
        name: str,
        at: str = HEAD,
        iou: float = 0.5,
        conf: float = 0.5,
        only: Iterable[str] | None = None,
    ) -> tuple[ObjectId, ObjectId, engine.Evaluation]:
        """Evaluate inference set NAME at a revision; return (inference version, commit, evaluation)."""
        version, found = self.inference(name)
        commit = self.repo.rev_parse(at, commit=True)
        ev = engine.evaluate(
            self.repo.store,
            self.metrics_cache,
            self.repo.roots_of(commit),
            found.predictions,
            METRIC_PARAMS,
            iou,
            conf,
            None if only is None else set(only),
        )
        if only is None:  # a restricted evaluation (compare --overlap) is not the checkpoint's result
            doc = report.evaluation_json(name, version, commit, ev)
            report.save_summary(self.metrics_cache, commit, version, doc)
        return version, commit, ev

    def evaluate_all(self, rev: str = HEAD) -> dict[str, engine.Evaluation]:
        """Evaluate every inference set at rev (what `checkpoint create` does unless eval.auto = false)."""
        return {found.name: self.evaluate(found.name, rev)[2] for _, found in self.inferences()}

    def evaluations(self, rev: str = HEAD) -> dict[str, dict[str, Any]]:
        """Stored evaluation documents at rev: per inference set, of its newest version evaluated there."""
        commit = self.repo.rev_parse(rev, commit=True)
        out = {}
        for _, found in self.inferences():
            for version, _ in self.inference_log(found.name):
                doc = report.load_summary(self.metrics_cache, commit, version)
                if doc is not None:
                    out[found.name] = doc
                    break
        return out

    def compare(self, a: str, b: str, models: Iterable[str], restrict: bool = False) -> Comparison:
        """Models by checkpoints, with relabel, retrain and combined effects (--overlap: frames in both)."""
        only = set(self.repo.overlap(a, b)) if restrict else None
        return compare(lambda m, c, o: self.evaluate(m, c, only=o)[2], a, b, list(models), only)
