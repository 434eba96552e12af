"""Comparisons: a table of models by checkpoints, and the effects of relabeling (same model, B minus A),
retraining (each later model minus the first, on the same checkpoint) and both (a later model on B minus
the first on A). With --overlap every cell is evaluated on the frames present in both checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from dsvc.metrics.engine import Evaluation

Evaluate = Callable[[str, str, Collection[str] | None], Evaluation]


def _delta(new: dict[str, float], old: dict[str, float]) -> dict[str, float | None]:
    """Stat differences; None where either side has no data (-1)."""
    return {k: (new[k] - old[k]) if new[k] > -1 and old[k] > -1 else None for k in new}


@dataclass(frozen=True)
class Comparison:
    checkpoints: tuple[str, str]
    models: tuple[str, ...]
    table: dict[str, dict[str, Evaluation]]
    overlap: int | None

    def effects(self) -> dict[str, Any]:
        a, b = self.checkpoints
        first = self.models[0]
        stats = {m: {c: e.stats for c, e in row.items()} for m, row in self.table.items()}
        return {
            "relabel": {m: _delta(stats[m][b], stats[m][a]) for m in self.models},
            "retrain": {
                m: {c: _delta(stats[m][c], stats[first][c]) for c in (a, b)} for m in self.models[1:]
            },
            "combined": {m: _delta(stats[m][b], stats[first][a]) for m in self.models[1:]},
        }

    def to_json(self) -> dict[str, Any]:
        frames: dict[str, Any] = {}
        for c in self.checkpoints:
            counts = [row[c].frames for row in self.table.values()]
            frames[c] = {
                "evaluated": counts[0].evaluated,
                "recomputed": sum(x.recomputed for x in counts),
                "reused": sum(x.reused for x in counts),
            }
        frames["overlap"] = self.overlap
        return {
            "checkpoints": list(self.checkpoints),
            "models": list(self.models),
            "table": {m: {c: dict(e.stats) for c, e in row.items()} for m, row in self.table.items()},
            "effects": self.effects(),
            "frames": frames,
        }


def compare(
    evaluate: Evaluate, a: str, b: str, models: Sequence[str], only: Collection[str] | None
) -> Comparison:
    """Evaluate every model on both checkpoints (on `only` frames when given)."""
    table = {m: {c: evaluate(m, c, only) for c in (a, b)} for m in models}
    return Comparison((a, b), tuple(models), table, None if only is None else len(only))
