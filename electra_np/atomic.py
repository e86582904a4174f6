"""Atomic file writes, for every file electra_np writes that a reader may open: checkpoints, run records,
vocabularies, the cached default corpus. The usual recipe (as in pip and git): write a temporary file in
the same folder, flush and fsync it, os.replace it onto the target (atomic on POSIX and Windows), then
fsync the folder so that the rename itself is durable. A process killed at any point leaves the old file
or the new one, never half of one; a stray temporary file may remain (remove_stale_temporaries).
"""

import contextlib
import os
import tempfile
from pathlib import Path

TMP_PREFIX = ".tmp-"  # temporary files are ".tmp-<name>-<random>" beside the target


def fsync_dir(folder):
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, mode="wb"):
    """Call write(f) on a temporary file beside `path`, fsync it, then os.replace it onto `path`.

    On any exception (or a kill) `path` keeps its old content; the temporary file is removed when
    Python still runs to do so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}-")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(path):
    """Delete temporary files left beside `path` by saves that were killed."""
    path = Path(path)
    for stale in path.parent.glob(f"{TMP_PREFIX}{path.name}-*"):
        with contextlib.suppress(OSError):
            stale.unlink()
