"""Snapshots (--snapshots F [F ...]): the models for fine-tuning at fractions of the schedule, for curves of
downstream quality against pretraining compute. At step round(F * steps) (half up, at least 1) a run writes

    out_dir/snapshots/step-<k>/discriminator, .../generator    exactly as the final export (export.py)
    out_dir/snapshots/step-<k>/snapshot.json                   step, fraction (and every fraction that fell on
                                                               step k), steps, elapsed seconds, and the held-out
                                                               metrics if an evaluation ran at step k

snapshot.json is written last, so a folder that has it is complete; it is never written again (a resumed run
that passes step k once more leaves it as it is). Writing one reads the parameters and nothing else: the run's
numbers do not depend on the snapshots asked for.
"""

import json
import math
from pathlib import Path

from .. import atomic
from ..data.tokenizer import Tokenizer
from ..model import Electra
from .export import save_for_finetuning
from .run_dir import SNAPSHOTS_DIR

SNAPSHOT_NAME = "snapshot.json"


def snapshot_steps(fractions, steps: int) -> dict[int, tuple]:
    """{step k: the fractions F with k = round(F * steps) (half up, at least 1), smallest first}."""
    out = {}
    for f in sorted(fractions):
        k = max(1, math.floor(f * steps + 0.5))
        out[k] = out.get(k, ()) + (f,)
    return out


def snapshot_dir(out_dir, step: int) -> Path:
    return Path(out_dir) / SNAPSHOTS_DIR / f"step-{step}"


def written(out_dir, step: int) -> bool:
    return (snapshot_dir(out_dir, step) / SNAPSHOT_NAME).is_file()


def write_snapshot(out_dir, step: int, fractions: tuple, steps: int, setup: Electra, params: dict,
                   tokenizer: Tokenizer, elapsed: float, ev: dict | None) -> Path:
    """The snapshot of step `step` (see the module docstring). Returns its folder."""
    folder = snapshot_dir(out_dir, step)
    models = save_for_finetuning(folder, setup, params, tokenizer)
    record = {"step": step, "fraction": fractions[0], "fractions": list(fractions), "steps": steps, "elapsed_s": elapsed,
              "models": {kind: path.name for kind, path in models.items()}, "eval": ev}
    atomic.atomic_write_text(folder / SNAPSHOT_NAME, json.dumps(record, indent=2) + "\n")
    return folder


def existing_snapshots(out_dir) -> dict[int, Path]:
    """{step: folder} of the complete snapshots in out_dir, by step."""
    root = Path(out_dir) / SNAPSHOTS_DIR
    found = {}
    for folder in root.glob("step-*") if root.is_dir() else []:
        if (folder / SNAPSHOT_NAME).is_file() and folder.name[5:].isdigit():
            found[int(folder.name[5:])] = folder
    return dict(sorted(found.items()))
