"""The embedded default corpus: English text that ships with every CPython.

Two sources, both present on any Python install with no download:
  - the docstrings of the standard library: `ast.get_docstring` of every module, class and
    (async) function in the stdlib `.py` files under `sysconfig.get_paths()["stdlib"]`,
    skipping the folders `test`, `tests`, `idle_test`, `site-packages` (and `__pycache__`),
    and any file that fails to decode or parse; files are visited in sorted path order and
    the docstrings of a file in source order, so the result is deterministic;
  - `pydoc_data.topics.topics`, the reference-manual sections behind `help("assert")`,
    in sorted topic order.
English technical prose with code mixed in, enough to pretrain a small model; its size varies by
Python version and build, so nothing should assert exact counts on it.

Documents and lines (the plain-text corpus format of `electra_np.data`):
  - one document per stdlib module (all of its docstrings, in source order) and one per pydoc
    topic. Per-module documents keep related text together and are long enough to fill
    128-token examples; most single docstrings are one or two lines.
  - one line per paragraph: a paragraph is a run of non-blank lines, joined with single spaces
    (every Unicode whitespace run becomes one space). reST underlines ("*****", "=====")
    are dropped. Empty paragraphs are dropped, as are documents left with no line.

The text is cached as the plain-text format under `$ELECTRA_NP_CACHE` (default
`$XDG_CACHE_HOME/electra_np`, else `~/.cache/electra_np`), keyed by Python version and the
stdlib path, written atomically (temporary file, then `os.replace`).
"""
import ast
import hashlib
import os
import sys
import sysconfig
import warnings
from pathlib import Path

from ..atomic import atomic_write_text

SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
UNDERLINE_CHARS = frozenset("*=-~^\"'`#+_.:")
DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def cache_dir() -> Path:
    """The electra_np cache folder ($ELECTRA_NP_CACHE, else $XDG_CACHE_HOME/electra_np, else ~/.cache/electra_np)."""
    if os.environ.get("ELECTRA_NP_CACHE"):
        return Path(os.environ["ELECTRA_NP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "electra_np"


def text_to_lines(text: str) -> list[str]:
    """Split a docstring or manual section into paragraphs, one per line (see module docstring)."""
    lines, paragraph = [], []
    for raw in text.splitlines() + [""]:
        words = raw.split()
        if not words:
            if paragraph:
                lines.append(" ".join(paragraph))
                paragraph = []
            continue
        stripped = "".join(words)
        if len(stripped) >= 3 and len(set(stripped)) == 1 and stripped[0] in UNDERLINE_CHARS:
            continue  # reST section underline
        paragraph.extend(words)
    return lines


def _docstrings_in_source_order(tree: ast.Module) -> list[str]:
    """Module, class and function docstrings of one parsed file, depth first in source order."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append(doc)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return found


def stdlib_files(stdlib: str | None = None) -> list[Path]:
    """The stdlib .py files, in sorted path order, test and site-packages folders skipped."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        files.extend(Path(folder) / n for n in sorted(names) if n.endswith(".py"))
    return sorted(files)


def stdlib_documents(stdlib: str | None = None) -> list[list[str]]:
    """One document per stdlib module that has docstrings: its docstrings' paragraphs, in order."""
    documents = []
    for path in stdlib_files(stdlib):
        try:
            source = path.read_bytes()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes in old files
                tree = ast.parse(source, filename=str(path))
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            continue
        lines = [line for doc in _docstrings_in_source_order(tree) for line in text_to_lines(doc)]
        if lines:
            documents.append(lines)
    return documents


def pydoc_topic_documents() -> list[list[str]]:
    """One document per pydoc reference-manual topic, in sorted topic order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # stripped-down Python builds may lack pydoc_data
        return []
    documents = [text_to_lines(topics[key]) for key in sorted(topics)]
    return [doc for doc in documents if doc]


def build_default_corpus_documents() -> list[list[str]]:
    """Collect the default corpus from the running Python (no cache): stdlib modules, then pydoc topics."""
    return stdlib_documents() + pydoc_topic_documents()


def documents_to_text(documents: list[list[str]]) -> str:
    """The plain-text corpus format: one line per paragraph, a blank line between documents."""
    return "\n\n".join("\n".join(doc) for doc in documents) + "\n"


def text_to_documents(text: str) -> list[list[str]]:
    """Inverse of documents_to_text: split on blank lines, drop empty documents."""
    documents, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line.strip())
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def default_corpus_path(echo=None) -> Path:
    """Path of the cached default corpus text for this Python; built and written if absent (saying so through
    echo first, when given: gathering the docstrings is the first run's longest silence before its first step)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    key = hashlib.sha256(f"{sys.version}|{stdlib}".encode()).hexdigest()[:12]
    version = "py{}.{}.{}".format(*sys.version_info[:3])
    path = cache_dir() / f"stdlib_corpus-{version}-{key}.txt"
    if not path.is_file():
        if echo:
            echo(f"gathering the default corpus from the docstrings of Python's standard library (first run only; "
                 f"cached in {path.parent})")
        atomic_write_text(path, documents_to_text(build_default_corpus_documents()))
    return path


def default_corpus_documents(use_cache: bool = True) -> list[list[str]]:
    """The embedded default corpus as documents (lists of lines), from the cache when present.

    Returns: list of documents, each a non-empty list of non-empty lines (no newlines inside).
    """
    if not use_cache:
        return build_default_corpus_documents()
    try:
        return text_to_documents(default_corpus_path().read_text(encoding="utf-8"))
    except OSError:  # cache folder not writable: build in memory
        return build_default_corpus_documents()


def write_default_corpus(path: str | os.PathLike) -> Path:
    """Write the default corpus in the plain-text format to `path` (atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, documents_to_text(default_corpus_documents()))
    return path
