"""Checkpoints: one `.npz` file per save, written so that a crash never damages the last good one.

Layout of a checkpoint file (a plain `np.savez` archive, no pickle):
    "__meta__"            uint8 array holding UTF-8 JSON: format, version, step, the model /
                          pretraining / training configs, vocabulary, random-generator state,
                          data position, ... (whatever the caller puts in `meta`)
    "<group>/<name>"      one array per tensor, e.g. "params/discriminator.electra...weight",
                          "adam_m/...", "adam_v/..."

Written atomically (atomic.py: a temporary file beside it, fsync'ed, os.replace'd onto it, the folder
fsync'ed): a process killed at any point leaves either the old file or the new one, never half of one;
a stray temporary file may remain and is removed by the next save.

Writing refuses arrays holding NaN or infinity (NonFiniteError, naming the entry): a diverged state never
replaces a good checkpoint. A full disk (ENOSPC, EDQUOT) is an OSError naming the file; the old checkpoint is
left as it was and the partial temporary file removed.

Reading checks everything: the zip structure and every member's CRC-32 (a truncated or bit-flipped
file fails), the JSON, the format name and version. Every failure is a `CheckpointError` naming the file.
"""

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, remove_stale_temporaries
from .config import RESOURCE_ERRNOS

FORMAT_NAME = "electra_np.checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, corrupted or of another format."""


class NonFiniteError(CheckpointError):
    """A checkpoint not written because an array holds NaN or infinity (`key` names the first)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def first_nonfinite(arrays: dict) -> str | None:
    """The name of the first floating array holding NaN or infinity, or None."""
    for k, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            return k
    return None


def save(path, arrays: dict, meta: dict) -> None:
    """Write a checkpoint atomically.

    Inputs: path: the .npz file; arrays: {"group/name": np.ndarray}; meta: a JSON-serializable dict
            (format and version are added).
    """
    path = Path(path)
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **meta}
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    bad = first_nonfinite(arrays)
    if bad is not None:
        raise NonFiniteError(f"{path}: not written: {bad} holds NaN or infinite values", bad)
    remove_stale_temporaries(path)
    try:
        atomic_write(path, lambda f: np.savez(f, **{META_KEY: blob}, **arrays))
    except OSError as e:
        if e.errno not in RESOURCE_ERRNOS:
            raise
        raise OSError(e.errno, f"{os.strerror(e.errno)} while writing the checkpoint {path}: it was not written, "
                               f"{path.name} keeps its previous content and the partial file was removed") from e


def read_meta(path) -> dict:
    """Only the metadata (quick: the arrays are not read). Raises CheckpointError."""
    return _open(path, arrays=False)[1]


def load(path) -> tuple[dict, dict]:
    """Returns (arrays, meta): arrays {"group/name": np.ndarray}. Raises CheckpointError naming the file."""
    return _open(path, arrays=True)


def group(arrays: dict, name: str) -> dict:
    """The arrays of one group, keyed without the "name/" prefix."""
    prefix = f"{name}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _open(path, arrays):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    what = f"checkpoint {path} is truncated or corrupted"
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise CheckpointError(f"{path} is not an electra_np checkpoint (no {META_KEY} entry)")
            meta = json.loads(z[META_KEY].tobytes().decode("utf-8"))
            out = {k: z[k] for k in z.files if k != META_KEY} if arrays else None
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        # zipfile checks each member's CRC-32 as it is read: truncation and flipped bits both land here
        raise CheckpointError(f"{what} ({type(e).__name__}: {e}); it cannot be loaded") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not an electra_np checkpoint (format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{what} (metadata is not a JSON object)")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}; this electra_np "
                              f"reads version {FORMAT_VERSION}")
    return out, meta
