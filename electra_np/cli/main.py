"""The `electra-np` command: the entry point, its exit codes and the mapping of errors to them.

    electra-np pretrain                     # the tiny preset on the embedded corpus (pretrain.py)
    electra-np build-vocab | prepare | gradcheck                                  (tools.py)
    electra-np finetune | evaluate | predict                                      (finetune.py)
    electra-np detect | plot | export                          (detect.py, plot.py, export.py)

Exit codes: 0 success; 2 the user's mistake (one line on stderr, no traceback, nothing written);
1 a run that failed (training diverged, a gradient check failed); 3 a resource fault (the disk or the quota is
full: one line naming the file; what was saved before is intact); 130 interrupted (Ctrl-C or SIGTERM, after a
checkpoint). ELECTRA_NP_TRACEBACK=1 shows the traceback instead of the one line.

The first thing main() does, before anything imports NumPy, is fast.runtime.configure(--threads): the
thread counts and the BLAS idle spin must reach the libraries before they load.
"""

import argparse
import os
import sys
import warnings

from ..fast.runtime import configure
from ..train.config import RESOURCE_ERRNOS, TrainingDiverged
from .common import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_RESOURCE, CliError

USER_ERRORS = (CliError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def read_threads(argv: list[str]) -> int | None:
    """--threads, read before the full parser exists (building it imports the commands, and NumPy). Read as text:
    argparse's own int error here would print this small parser's usage, not the command's."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads")
    known, _ = pre.parse_known_args(argv)
    if known.threads is None:
        return None
    text = known.threads.strip()
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise CliError(f"--threads must be >= 1 (a whole number of threads), got {known.threads!r}")
    return int(text)


def configure_threads(argv: list[str]) -> None:
    """fast.runtime.configure(--threads), its warnings (more threads than CPUs) printed as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configure(read_threads(argv))
    for w in caught:
        print(f"electra-np: warning: {w.message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import detect, export, finetune, plot, pretrain, tools  # here, not above: they import NumPy, which configure() precedes

    parser = argparse.ArgumentParser(prog="electra-np", description="ELECTRA pretraining in NumPy with hand-written "
                                                                    "backward passes.")
    parser.add_argument("--version", action="version", version=f"electra-np {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    pretrain.add_parser(sub)
    tools.add_parsers(sub)
    finetune.add_parsers(sub)
    detect.add_parser(sub)
    plot.add_parser(sub)
    export.add_parser(sub)
    for p in sub.choices.values():  # main() applied it before parsing; every command accepts it
        if not any("--threads" in action.option_strings for action in p._actions):
            p.add_argument("--threads", type=int, help="threads for BLAS and Numba (default: ELECTRA_NP_THREADS, "
                                                       "else every CPU this process may use)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        configure_threads(argv)
        args = build_parser().parse_args(argv)
        code = args.func(args)
        return code if isinstance(code, int) else 0  # finetune / evaluate / predict return their results
    except BrokenPipeError:  # e.g. `electra-np pretrain | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("electra-np: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if os.environ.get("ELECTRA_NP_TRACEBACK"):
            raise
        if isinstance(e, TrainingDiverged):
            print(f"electra-np: error: {e}", file=sys.stderr)
            return EXIT_DIVERGED
        if isinstance(e, OSError) and e.errno in RESOURCE_ERRNOS:
            print(f"electra-np {argv[0] if argv else ''}: error: {resource_message(e)}".replace("  ", " "),
                  file=sys.stderr)
            return EXIT_RESOURCE
        if isinstance(e, USER_ERRORS):
            print(f"electra-np {argv[0] if argv else ''}: error: {e}".replace("  ", " "), file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


def resource_message(e: OSError) -> str:
    """A full disk or quota in one line: the message a save composed (it names the file and what is left), or the
    system's with the file and what to do."""
    if e.strerror != os.strerror(e.errno):
        return e.strerror
    where = f" writing {e.filename}" if e.filename else ""
    return f"{e.strerror}{where}: free some space (or raise the quota), then run the command again"


if __name__ == "__main__":
    sys.exit(main())
