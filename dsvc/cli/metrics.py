"""Inference sets, evaluation and comparison: `dsvc infer`, `dsvc eval`, `dsvc compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dsvc.cli.common import cwd, identity, open_repo, output, reporting
from dsvc.cli.workdir import when
from dsvc.hashing import ObjectId
from dsvc.metrics.inference import FORMATS
from dsvc.metrics.params import STAT_NAMES
from dsvc.metrics.report import evaluation_json
from dsvc.objects import InferenceSet


def inference_json(oid: ObjectId, found: InferenceSet) -> dict[str, Any]:
    return {
        "name": found.name,
        "id": oid.hex(),
        "model": found.model,
        "predictions": found.predictions.hex(),
        "checkpoint": found.checkpoint.hex() if found.checkpoint else None,
        "metadata": dict(found.metadata),
        "created": when(found.created),
        "message": found.message,
    }


def stat_text(value: float | None) -> str:
    return "-" if value is None or value <= -1 else f"{value:.4f}"


SHOWN_STATS = ("AP", "AP50", "AP75", "AR100")
MAX_MATRIX = 16  # classes (with background) a terminal table shows


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


@click.group(
    epilog="""\b
Examples:
  dsvc infer import model_a predictions/model_a.json --format coco --model yolov8n
  dsvc infer list
  dsvc infer log model_a
"""
)
def infer() -> None:
    """Inference sets: versioned model predictions (import, list, show, log)."""


@infer.command(
    "import",
    epilog="""\b
Examples:
  dsvc infer import model_a preds.json --format coco --model yolo-a -m "epoch 30"
  dsvc infer import model_a runs/labels --format yolo --at v1
""",
)
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Predictions format.")
@click.option("--model", help="The model's name (default: the previous version's, else NAME).")
@click.option("--at", "rev", default="HEAD", help="The version whose frames the predictions name.")
@click.option("-m", "--message", default="", help="What these predictions are.")
@reporting
@click.pass_context
def infer_import(
    ctx: click.Context, name: str, file: Path, fmt: str, model: str | None, rev: str, message: str
) -> None:
    """Import FILE (a folder for YOLO) as a new version of inference set NAME."""
    repo = open_repo(ctx)
    oid = repo.metrics.infer_import(name, cwd(ctx) / file, fmt, identity(repo), model, rev, message)
    _, found = repo.metrics.inference(name)
    output(ctx).report(inference_json(oid, found), f"imported {name} version {oid.hex()[:12]}")


@infer.command("list", epilog="\b\nExamples:\n  dsvc infer list\n  dsvc infer list --json\n")
@reporting
@click.pass_context
def infer_list(ctx: click.Context) -> None:
    """List inference sets with their model and current version."""
    items = open_repo(ctx).metrics.inferences()
    lines = [f"{s.name}\t{s.model}\t{oid.hex()[:12]}\t{s.message}" for oid, s in items]
    output(ctx).report([inference_json(oid, s) for oid, s in items], "\n".join(lines))


@infer.command("show", epilog="\b\nExamples:\n  dsvc infer show model_a --json\n")
@click.argument("name")
@reporting
@click.pass_context
def infer_show(ctx: click.Context, name: str) -> None:
    """Show the current version of an inference set."""
    oid, found = open_repo(ctx).metrics.inference(name)
    data = inference_json(oid, found)
    text = [
        f"inference {name} {oid.hex()}",
        *(f"{k}: {v}" for k, v in data.items() if k not in ("name", "id")),
    ]
    output(ctx).report(data, "\n".join(text))


@infer.command("log", epilog="\b\nExamples:\n  dsvc infer log model_a\n")
@click.argument("name")
@reporting
@click.pass_context
def infer_log(ctx: click.Context, name: str) -> None:
    """The versions of an inference set, newest first."""
    items = list(open_repo(ctx).metrics.inference_log(name))
    lines = [f"{oid.hex()[:12]}\t{when(s.created)}\t{s.model}\t{s.message}" for oid, s in items]
    output(ctx).report([inference_json(oid, s) for oid, s in items], "\n".join(lines))


def evaluation_text(doc: dict[str, Any]) -> list[str]:
    """Human lines of an evaluation document."""
    m = doc["metrics"]
    f = doc["frames"]
    lines = [
        f"{doc['inference']} at {doc['checkpoint'][:12]}: "
        f"{f['evaluated']} frames ({f['recomputed']} recomputed, {f['reused']} reused)",
        "  " + "  ".join(f"{k} {stat_text(m[k])}" for k in STAT_NAMES[:6]),
        "  " + "  ".join(f"{k} {stat_text(m[k])}" for k in STAT_NAMES[6:]),
        "  class\tAP\tprecision\trecall\tF1",
    ]
    for cls, v in doc["per_class"].items():
        lines.append(f"  {cls}\t" + "\t".join(stat_text(v[k]) for k in ("AP", "precision", "recall", "f1")))
    return lines


@click.command(
    "eval",
    epilog="""\b
Examples:
  dsvc eval model_a --at v1
  dsvc eval model_a --at v1 --iou 0.75 --conf 0.3 --json
""",
)
@click.argument("name")
@click.option("--at", "rev", default="HEAD", help="The version to evaluate against.")
@click.option("--iou", type=float, default=0.5, show_default=True, help="IoU threshold of P/R/F1, confusion.")
@click.option("--conf", type=float, default=0.5, show_default=True, help="Confidence threshold, likewise.")
@reporting
@click.pass_context
def evaluate(ctx: click.Context, name: str, rev: str, iou: float, conf: float) -> None:
    """Evaluate inference set NAME against a version's labels (incrementally)."""
    repo = open_repo(ctx)
    version, commit, ev = repo.metrics.evaluate(name, rev, iou, conf)
    doc = evaluation_json(name, version, commit, ev)
    text = evaluation_text(doc)
    matrix = doc["confusion"]
    text.append(f"  confusion at IoU {ev.iou:g}, confidence {conf:g} (rows true, columns predicted):")
    if len(matrix["classes"]) > MAX_MATRIX:
        text.append(f"  ({len(matrix['classes'])} classes: see --json)")
    else:
        text.append("  \t" + "\t".join(matrix["classes"]))
        text += [
            f"  {c}\t" + "\t".join(map(str, row))
            for c, row in zip(matrix["classes"], matrix["matrix"], strict=True)
        ]
    output(ctx).report(doc, "\n".join(text))


@click.command(
    epilog="""\b
Examples:
  dsvc compare v0 v1 --model model_a --model model_b
  dsvc compare v0 v1 --model model_a --overlap --json
"""
)
@click.argument("a")
@click.argument("b")
@click.option("--model", "models", multiple=True, required=True, help="An inference set (repeatable).")
@click.option("--overlap", is_flag=True, help="Evaluate only the frames present in both checkpoints.")
@reporting
@click.pass_context
def compare(ctx: click.Context, a: str, b: str, models: tuple[str, ...], overlap: bool) -> None:
    """Models by checkpoints, and the effects of relabeling, retraining and both."""
    result = open_repo(ctx).metrics.compare(a, b, list(dict.fromkeys(models)), overlap)
    doc = result.to_json()
    shown = SHOWN_STATS
    lines = ["model\tcheckpoint\t" + "\t".join(shown)]
    for m, row in doc["table"].items():
        lines += [f"{m}\t{c}\t" + "\t".join(stat_text(s[k]) for k in shown) for c, s in row.items()]
    effects = doc["effects"]
    for m, d in effects["relabel"].items():
        lines.append(f"relabel {m} ({b} - {a})\t\t" + "\t".join(_signed(d[k]) for k in shown))
    for m, per in effects["retrain"].items():
        for c, d in per.items():
            lines.append(
                f"retrain {m} - {result.models[0]} on {c}\t\t" + "\t".join(_signed(d[k]) for k in shown)
            )
    for m, d in effects["combined"].items():
        lines.append(
            f"combined {m}@{b} - {result.models[0]}@{a}\t\t" + "\t".join(_signed(d[k]) for k in shown)
        )
    if result.overlap is not None:
        lines.append(f"on the {result.overlap} frames in both checkpoints")
    output(ctx).report(doc, "\n".join(lines))


COMMANDS = (infer, evaluate, compare)
