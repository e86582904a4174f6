"""Atomic file and folder writes, for everything electra_np writes that a reader may open: checkpoints, run
records, vocabularies, the cached default corpus (files); model folders, prepared corpora, fine-tuned
classifiers (folders, `atomic_folder`). The usual recipe (as in pip and git): write a temporary file in
the same folder, flush and fsync it, os.replace it onto the target (atomic on POSIX and Windows), then
fsync the folder so that the rename itself is durable. A process killed at any point leaves the old file
or the new one, never half of one; a stray temporary file may remain (remove_stale_temporaries).
"""

import contextlib
import os
import shutil
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


def fsync_tree(folder):
    """fsync every file below `folder`, then the folders themselves."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


@contextlib.contextmanager
def atomic_folder(target, carry_over=None):
    """Yield a fresh temporary folder (a Path) beside `target`; when the block ends without an error, the
    folder is fsynced and replaces `target` (an existing target is moved aside first and deleted after the
    swap). On any error (or a kill) the temporary folder is removed when Python still can and `target` is
    untouched. carry_over(old_target, new_folder), when given, runs just before the swap: it may bring
    files of the old target along (hf.save_pretrained keeps a tokenizer's files that way)."""
    target = Path(os.path.abspath(os.fspath(target)))
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TMP_PREFIX}{target.name}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        fsync_tree(tmp)  # the new files are on disk before the rename makes them visible
        if target.is_dir():
            if carry_over is not None:
                carry_over(target, tmp)
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".old-{target.name}-"))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
