"""The run folder (out_dir): the names of the files a run writes, the checks before one starts, its lock, and
--overwrite's safety net.

Files in out_dir (RUN_FILES): run.json (the run's settings), vocab.txt, checkpoint.npz (the last
checkpoint, checkpoint.py), metrics.jsonl (one JSON object per log / eval line), log.txt (the
console log), curves.png (plot.py), and at the end discriminator/ and generator/ (model.npz + config.json +
vocab.txt, ready for fine-tuning; export.py); with --snapshots also snapshots/step-<k>/ (the same two folders at
step k, snapshots.py).

One writer: a process that writes a folder holds FolderLock (fcntl.flock on FOLDER/.lock, the holder's PID
inside) for its whole life; a second process is refused in one line naming the holder. The OS drops a flock
when its process dies, so a lock file left by a killed run is simply taken over (with a note).

Nothing lost on --overwrite: the old run's files are moved into out_dir/.previous-run (set_aside), deleted only
once the new run has saved its first checkpoint (Aside.discard), and put back if it fails before
(Aside.restore). Every move is a rename inside out_dir and each phase has its own folder name, so a run killed
at any point is repaired by recover() when the next command takes the lock:
    .previous-run-partial   being set aside: the new run has not written anything yet -> moved back
    .previous-run           set aside: the new run has a checkpoint -> deleted; else -> restored
    .previous-run-restoring being restored -> the restore is finished
    .previous-run-discarded being deleted -> deleted
"""

import contextlib
import os
import shutil
from pathlib import Path

from ..atomic import fsync_dir
from .config import RunError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the folder is used unlocked
    fcntl = None

CHECKPOINT_NAME = "checkpoint.npz"
RUN_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "log.txt"
VOCAB_NAME = "vocab.txt"
CURVES_NAME = "curves.png"
MODEL_DIRS = ("discriminator", "generator")
SNAPSHOTS_DIR = "snapshots"
RUN_FILES = (RUN_NAME, CHECKPOINT_NAME, METRICS_NAME, LOG_NAME, VOCAB_NAME, CURVES_NAME) + MODEL_DIRS + (SNAPSHOTS_DIR,)
LOCK_NAME = ".lock"
ASIDE = ".previous-run"
PARTIAL, RESTORING, DISCARDED = (f"{ASIDE}-{phase}" for phase in ("partial", "restoring", "discarded"))


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


def check_inputs_apart(out_dir, data=None, corpus=None, vocab=None) -> None:
    """Refuse inputs that a run in out_dir would write over, move or delete (RunError naming both): a prepared
    --data folder that is out_dir, holds it or sits in it; a --corpus or --vocab file among the run's own files
    (RUN_FILES, or --overwrite's folders). A --vocab of the run's own vocab.txt is read before the run writes the
    same tokens back, and is allowed."""
    out = Path(out_dir).resolve()
    if data is not None:
        src = Path(data).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise RunError(f"--out_dir {out} is the --data folder {src}, sits inside it or holds it: writing it would "
                           "destroy what is read; choose a separate folder")
    owned = [out / name for name in RUN_FILES + (ASIDE, PARTIAL, RESTORING, DISCARDED)]
    for option, specs in (("--corpus", corpus or []), ("--vocab", [vocab])):
        for path in (_spec_path(s) for s in specs if s is not None):
            if any(path == p or p in path.parents for p in owned) and not (option == "--vocab" and
                                                                           path == out / VOCAB_NAME):
                raise RunError(f"--out_dir {out} would write over, move or delete the {option} file {path}, one of a "
                               "run's own files there; keep inputs outside them or choose another --out_dir")


def _spec_path(spec) -> Path:
    """The file of a --corpus spec (FILE or FILE:COLUMN), resolved."""
    spec = str(spec)
    if not Path(spec).exists() and ":" in spec:
        spec = spec.rsplit(":", 1)[0]
    return Path(spec).resolve()


# ----------------------------------------------------------------------------- one writer

class FolderBusy(RunError):
    """Another process holds the folder's lock: exit code 2, nothing touched."""


_HELD: dict[str, "FolderLock"] = {}  # this process's locks by folder: a command and the library it calls share one


@contextlib.contextmanager
def hold(folder, echo=print, option: str = "--out_dir"):
    """Hold FOLDER/.lock for the block (re-entrant within a process). Creates the folder (and parents) if needed;
    those it created are removed again at the end when nothing but the lock was put in them."""
    key = os.path.abspath(folder)
    if key in _HELD:
        yield _HELD[key]
        return
    lock = FolderLock(folder, option).acquire(echo)
    _HELD[key] = lock
    try:
        yield lock
    finally:
        del _HELD[key]
        lock.release()


class FolderLock:
    """An advisory fcntl.flock on FOLDER/.lock, held open while the process works in the folder, the holder's PID
    written inside (for the message a second process gets). Releasing unlinks the file before closing it;
    acquire() checks that the file it locked is still the one at the path, so the unlink cannot let two holders in."""

    def __init__(self, folder, option: str = "--out_dir") -> None:
        self.folder, self.option = Path(folder), option
        self.path = self.folder / LOCK_NAME
        self.fd, self.made = None, []

    def acquire(self, echo=print) -> "FolderLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise RunError(f"{self.option} {self.folder} exists and is not a folder")
        self.made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]  # deepest first
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                self._remove_made()
                raise FolderBusy(f"{self.folder} is in use by another electra-np process (PID {holder or 'unknown'}, "
                                 f"holding {self.path}); wait for it to finish, or choose another {self.option}") from None
            if _same_file(fd, self.path):
                self.fd = fd
            else:  # its holder unlinked it as we opened it: lock the new one
                os.close(fd)
        stale = _read_pid(self.fd)
        if stale and echo:
            state = "no longer holds it" if _alive(stale) else "is no longer running"
            echo(f"note: {self.folder} was locked by PID {stale}, which {state} (killed?); taking over its lock")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                if _same_file(self.fd, self.path):  # a folder swapped in since (atomic_folder) has no lock of ours
                    os.unlink(self.path)
            finally:
                os.close(self.fd)
                self.fd = None
        self._remove_made()

    def _remove_made(self):
        """The folders acquire() made, if they hold nothing (a refused or failed command leaves no trace)."""
        for p in self.made:
            with contextlib.suppress(OSError):
                p.rmdir()
        self.made = []


def _read_pid(fd) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text.isdigit() else None
    except (OSError, UnicodeDecodeError):
        return None


def _same_file(fd, path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ----------------------------------------------------------------------------- --overwrite

class Aside:
    """The old run of an --overwrite, kept in out_dir/.previous-run until the new run has a checkpoint."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir, self.pending = Path(out_dir), True

    def discard(self) -> None:
        """The new run has saved its first checkpoint: the old run may go."""
        _discard(self.out_dir)
        self.pending = False

    def restore(self) -> None:
        """The new run failed before its first checkpoint: its files go, the old run's come back."""
        _restore(self.out_dir)
        self.pending = False


def set_aside(out_dir) -> Aside | None:
    """Move the run files in out_dir into out_dir/.previous-run (checkpoint first); None if there are none."""
    out_dir = Path(out_dir)
    names = existing_run_files(out_dir)
    if not names:
        return None
    partial = out_dir / PARTIAL
    partial.mkdir()
    for name in sorted(names, key=lambda n: n != CHECKPOINT_NAME):
        os.replace(out_dir / name, partial / name)
    os.replace(partial, out_dir / ASIDE)  # from here on, files in out_dir are the new run's
    fsync_dir(out_dir)
    return Aside(out_dir)


def recover(out_dir, echo=print) -> None:
    """Finish what an --overwrite killed part-way left in out_dir (see the module docstring); a line says what."""
    out_dir = Path(out_dir)
    if (out_dir / PARTIAL).is_dir():
        for name in os.listdir(out_dir / PARTIAL):
            os.replace(out_dir / PARTIAL / name, out_dir / name)
        (out_dir / PARTIAL).rmdir()
        _say(echo, f"note: {out_dir}: an --overwrite was stopped while it set the previous run aside; that run is "
                   "back in place")
    if (out_dir / ASIDE).is_dir() and (out_dir / CHECKPOINT_NAME).is_file():
        _discard(out_dir)
        _say(echo, f"note: {out_dir}: deleted the previous run that an --overwrite had set aside in {ASIDE} (the new "
                   "run had saved its first checkpoint)")
    if (out_dir / ASIDE).is_dir() or (out_dir / RESTORING).is_dir():
        _restore(out_dir)
        _say(echo, f"note: {out_dir}: an --overwrite was stopped before its new run saved a checkpoint; the previous "
                   "run is restored")
    if (out_dir / DISCARDED).exists():
        shutil.rmtree(out_dir / DISCARDED)


def _discard(out_dir: Path) -> None:
    os.replace(out_dir / ASIDE, out_dir / DISCARDED)
    shutil.rmtree(out_dir / DISCARDED)


def _restore(out_dir: Path) -> None:
    """Remove the new run's files that the old run has no twin of, then swap the others back one by one, the
    checkpoint last. The phase folder's name records how far it got (recover() finishes it)."""
    if (out_dir / ASIDE).is_dir():
        old = set(os.listdir(out_dir / ASIDE))
        for name in existing_run_files(out_dir):
            if name not in old:
                _remove(out_dir / name)
        os.replace(out_dir / ASIDE, out_dir / RESTORING)
    restoring = out_dir / RESTORING
    for name in sorted(os.listdir(restoring), key=lambda n: n == CHECKPOINT_NAME):
        if (out_dir / name).exists() or (out_dir / name).is_symlink():
            _remove(out_dir / name)
        os.replace(restoring / name, out_dir / name)
    restoring.rmdir()
    fsync_dir(out_dir)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _say(echo, line):
    if echo:
        echo(line)
