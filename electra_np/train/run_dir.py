"""The run folder (out_dir): the names of the files a run writes, and the checks before one starts.

Files in out_dir (RUN_FILES): run.json (the run's settings), vocab.txt, checkpoint.npz (the last
checkpoint, checkpoint.py), metrics.jsonl (one JSON object per log / eval line), log.txt (the
console log), and at the end discriminator/ and generator/ (model.npz + config.json + vocab.txt,
ready for fine-tuning; export.py); with --snapshots also snapshots/step-<k>/ (the same two folders at
step k, snapshots.py).
"""

import shutil
from pathlib import Path

from .config import RunError

CHECKPOINT_NAME = "checkpoint.npz"
RUN_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "log.txt"
VOCAB_NAME = "vocab.txt"
MODEL_DIRS = ("discriminator", "generator")
SNAPSHOTS_DIR = "snapshots"
RUN_FILES = (RUN_NAME, CHECKPOINT_NAME, METRICS_NAME, LOG_NAME, VOCAB_NAME) + MODEL_DIRS + (SNAPSHOTS_DIR,)


def existing_run_files(out_dir) -> list[str]:
    """The names of RUN_FILES present in out_dir."""
    out_dir = Path(out_dir)
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def check_out_dir(out_dir, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a new run over another one (unless overwrite), or to resume where no checkpoint is."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"out_dir {out_dir} exists and is not a folder")
    if resume:
        if not (out_dir / CHECKPOINT_NAME).is_file():
            raise RunError(f"nothing to resume: no {CHECKPOINT_NAME} in {out_dir}")
        return
    found = existing_run_files(out_dir)
    if found and not overwrite:
        raise RunError(f"out_dir {out_dir} already holds a run ({', '.join(found)}); pass --resume to continue "
                       "it, --overwrite to replace it, or choose another --out_dir")


def clear_run(out_dir) -> None:
    """Remove the files of an earlier run (only the names a run writes)."""
    out_dir = Path(out_dir)
    for name in existing_run_files(out_dir):
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
