"""A run's curves as one PNG (the `plot` extra: matplotlib): `electra-np plot` (cli/plot.py), and every
pretraining run at its end when matplotlib is importable.

    plot_run("runs/electra-tiny")                      # -> runs/electra-tiny/curves.png
    plot_run("runs/sst2", "sst2.png")                  # a fine-tuned classifier: its per-epoch metrics

A pretraining run is read from its metrics.jsonl (train records every log line, eval records every
evaluation); a fine-tuned classifier from its history.jsonl (one record per epoch; finetune.json says which
dev metric picked the best epoch). Each panel is drawn when the records hold one of its keys, so an MLM-only
run has no discriminator panels and unknown keys are ignored. Train curves are solid, eval curves dashed
with markers, reference lines (the always-"original" baseline, the unigram entropy) grey.
"""

import json
import math
from pathlib import Path

from ..atomic import atomic_write

PLOT_EXTRA = 'pip install -e ".[plot]"'
DEFAULT_NAME = "curves.png"
METRICS_FILE, HISTORY_FILE, FINETUNE_FILE = "metrics.jsonl", "history.jsonl", "finetune.json"
COLUMNS = 3
REFERENCES = ("disc_baseline_acc", "unigram_entropy")  # what a model must beat, drawn as grey lines

# (panel title, the record keys it draws); a panel without any of its keys in the records is left out
PRETRAIN_PANELS = (
    ("total loss", ("loss",)),
    ("MLM loss", ("mlm_loss", "unigram_entropy")),
    ("discriminator loss", ("disc_loss",)),
    ("MLM accuracy", ("mlm_acc",)),
    ("discriminator accuracy", ("disc_acc", "disc_balanced_acc", "disc_baseline_acc")),
    ("replaced-token detection", ("disc_auc", "disc_precision", "disc_recall")),
    ("replaced share", ("replaced_frac",)),
    ("learning rate", ("lr",)),
    ("tokens/s", ("tokens_per_s",)),
    ("gradient norm", ("grad_norm",)),
    ("sentence-vector cosine", ("cls_cosine", "mean_cosine")),
    ("token spread", ("token_spread",)),
)
FINETUNE_PANELS = (
    ("training loss", ("train_loss",)),
    ("dev metrics", ("accuracy", "f1", "mcc", "pearson", "spearman")),
    ("dev MSE", ("mse",)),
    ("seconds per epoch", ("seconds",)),
)
LABELS = {"loss": "loss", "mlm_loss": "MLM", "unigram_entropy": "unigram entropy", "disc_loss": "disc",
          "mlm_acc": "acc", "disc_acc": "acc", "disc_balanced_acc": "balanced acc",
          "disc_baseline_acc": "always 'original'", "disc_auc": "ROC AUC", "disc_precision": "precision",
          "disc_recall": "recall", "replaced_frac": "replaced", "lr": "lr", "tokens_per_s": "tokens/s",
          "grad_norm": "norm", "cls_cosine": "[CLS]", "mean_cosine": "mean-pooled", "token_spread": "spread",
          "train_loss": "train", "accuracy": "accuracy", "f1": "F1", "mcc": "MCC", "pearson": "Pearson",
          "spearman": "Spearman", "mse": "MSE", "seconds": "seconds"}


class PlotError(ValueError):
    """A folder with nothing to plot: printed as one line, exit code 2."""


def plot_run(folder, out=None) -> Path | None:
    """Draw a run's curves into one PNG and return its path; safe to call at the end of any run.

    Returns None and writes nothing when matplotlib (the `plot` extra) is not importable, so a training run
    can always end with `plot_run(out_dir)`. Draws with the Agg canvas directly (no pyplot, no global
    backend switch), and replaces `out` in one atomic step.

    Inputs:  folder: a pretraining run (metrics.jsonl) or a fine-tuned classifier (finetune.json, history.jsonl);
             out: the PNG to write (default: folder/curves.png)
    Returns: the PNG's path, or None without matplotlib. Raises PlotError if the folder holds nothing to plot.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    folder = Path(folder)
    kind, records, best = read_run(folder)
    panels = [(title, keys) for title, keys in (PRETRAIN_PANELS if kind == "pretrain" else FINETUNE_PANELS)
              if any(_points(records, split, k)[0] for split in ("train", "eval") for k in keys)]
    if not panels:
        raise PlotError(f"{folder}: the records hold none of the metrics this command draws")
    rows = -(-len(panels) // COLUMNS)
    fig = Figure(figsize=(5 * COLUMNS, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel()
    for ax, (title, keys) in zip(axes, panels):
        _draw_panel(ax, title, keys, records, best)
        ax.set_xlabel("step" if kind == "pretrain" else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    titles = [ax.get_title() for ax in fig.axes]
    fig.suptitle(f"{folder.resolve().name} ({'pretraining' if kind == 'pretrain' else 'fine-tuning'})")
    out = Path(out) if out is not None else folder / DEFAULT_NAME
    # the panel titles go into the PNG's text chunk: what was drawn, readable without looking at the image
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100, metadata={"Description": "; ".join(titles)}))
    return out


def read_run(folder: Path) -> tuple[str, dict, tuple | None]:
    """("pretrain" | "finetune", {split: [record, ...]} sorted by x, the best epoch as (epoch, metric) or None).

    Lines that do not parse (a line cut short by a kill) are skipped, as report.truncate_metrics does."""
    if not folder.is_dir():
        raise PlotError(f"{folder}: no such folder")
    if (folder / METRICS_FILE).is_file():
        lines = _json_lines(folder / METRICS_FILE)
        records = {split: sorted((r for r in lines if r.get("split") == split and _number(r.get("step"))),
                                 key=lambda r: r["step"]) for split in ("train", "eval")}
        if not records["train"] and not records["eval"]:
            raise PlotError(f"{folder / METRICS_FILE}: no train or eval records to plot")
        return "pretrain", records, None
    if (folder / FINETUNE_FILE).is_file():
        meta = _json_file(folder / FINETUNE_FILE)
        history = meta.get("history") if isinstance(meta.get("history"), list) else None
        if history is None:
            history = _json_lines(folder / HISTORY_FILE) if (folder / HISTORY_FILE).is_file() else []
        history = [r for r in history if isinstance(r, dict) and _number(r.get("epoch"))]
        if not history:
            raise PlotError(f"{folder}: the fine-tuned classifier has no per-epoch history to plot")
        for r in history:
            r["step"] = r["epoch"]  # the x axis of every panel
        metric = (meta.get("recipe") or {}).get("metric")
        scored = [r for r in history if _number(r.get(metric))]
        best = (max(scored, key=lambda r: r[metric])["epoch"], metric) if scored else None
        return "finetune", {"train": sorted(history, key=lambda r: r["step"]), "eval": []}, best
    raise PlotError(f"{folder}: nothing to plot here (no {METRICS_FILE} of a pretraining run, no {FINETUNE_FILE} of "
                    "a fine-tuned classifier)")


def _draw_panel(ax, title: str, keys: tuple, records: dict, best) -> None:
    """One panel: each key's train curve (solid) and eval curve (dashed, markers); references grey."""
    colors = iter(f"C{i}" for i in range(10))
    for key in keys:
        color = next(colors)
        for split in ("train", "eval"):
            x, y = _points(records, split, key)
            if not x:
                continue
            dots = "o" if split == "eval" or len(x) < 20 else None  # few points: show where they are
            style = dict(color="grey", linestyle=":" if split == "train" else "-.") if key in REFERENCES else dict(
                color=color, linestyle="-" if split == "train" else "--", marker=dots, markersize=3)
            label = LABELS.get(key, key) + (f" ({split})" if records["eval"] else "")
            ax.plot(x, y, label=label, **style)
    if best is not None:
        ax.axvline(best[0], color="grey", linestyle=":", label=f"best {best[1]} (epoch {best[0]})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(ax.get_lines()) > 1:
        ax.legend(fontsize="small")


def _points(records: dict, split: str, key: str) -> tuple[list, list]:
    """x (step or epoch) and y of one key's finite values in one split."""
    pairs = [(r["step"], r[key]) for r in records[split] if _number(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _json_file(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PlotError(f"{path}: not JSON ({e})") from None
    return d if isinstance(d, dict) else {}
