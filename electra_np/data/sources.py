"""Corpus input: text and TSV files read as documents and lines, and the held-out split between them.

Plain text: UTF-8, one sentence or paragraph per line, a blank line between documents; the end of each
input file also ends a document. A UTF-8 byte-order mark is skipped; a NUL byte or bytes that are not
UTF-8 are refused with the line and byte offset.

TSV input: a file ending in `.tsv`, or any file given as `path:column`, is read as TAB-separated
with a header row (no quoting). The text column is `column`, else the first header named `text`,
`review` or `sentence`. Each row is one document, always split into sentences as below.

Sentences: lines are the packing units (packing.py), so a line longer than an example is cut. With
paragraph-per-line text that drops much of the text; `split_sentences=True` splits each line into
sentences after `.`, `!` or `?` followed by whitespace, and after Chinese and Japanese `。`, `！`, `？`
(with a closing quote that follows them): a plain regex, SENTENCE_END.

Held-out split (`held_out_documents`): a first pass counts the documents; the eval split is the trailing
documents that start within the last `eval_fraction` of the input bytes (inputs in the order given), at
least one, and at least one document stays in train, so train and eval never share a document and eval
holds about `eval_fraction` of the text even when documents differ in size (whole books).
eval_fraction=0 leaves it empty. When whole documents cannot give about that share (one document, or a few
uneven ones), prepare.py splits the packed examples instead.
"""

import os
import re
from pathlib import Path
from typing import Iterator, Sequence

TSV_TEXT_COLUMNS = ("text", "review", "sentence")
# a sentence ends after . ! ? and whitespace (English), or after Chinese / Japanese 。！？ (and the closing quote
# or bracket that may follow them), where no space follows
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*(?=[^\s”’」』）])|(?<=[。！？][”’」』）])\s*(?=\S)")
UTF8_BOM = b"\xef\xbb\xbf"

Spec = str | os.PathLike  # a file, or "file:column" for a TSV text column


class CorpusSource:
    """One input file: plain text (a blank line between documents) or a TSV text column.

    Inputs: spec, a path or "path:column"; split_sentences as in the module docstring (TSV always splits).
    Raises: FileNotFoundError for a missing file, ValueError for a folder.
    """

    def __init__(self, spec: Spec, split_sentences: bool = False):
        spec = str(spec)
        path, column = Path(spec), None
        if not path.exists() and ":" in spec:
            head, tail = spec.rsplit(":", 1)
            if Path(head).exists() and tail:
                path, column = Path(head), tail
        if not path.exists():
            raise FileNotFoundError(f"corpus file not found: {spec}")
        if not path.is_file():
            raise ValueError(f"corpus input is not a file: {path}")
        self.path = path
        self.is_tsv = column is not None or path.suffix.lower() == ".tsv"
        self.split_sentences = split_sentences or self.is_tsv
        self.column = column
        self.column_index = None
        stat = path.stat()
        self.bytes, self.mtime_ns = stat.st_size, stat.st_mtime_ns
        self.documents = self.late_documents = self.lines = 0

    def describe(self) -> dict:
        """What identifies this input in a prepared folder's meta.json: absolute path, size, mtime, TSV column."""
        return {"path": str(self.path.resolve()), "bytes": self.bytes,
                "mtime_ns": self.mtime_ns, "column": self.column if self.is_tsv else None}

    def _raw_lines(self) -> Iterator[tuple[int, int, int, str]]:
        """(line number from 1, start byte offset, end byte offset, line without newline); checks the bytes."""
        offset = 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                skip = len(UTF8_BOM) if number == 1 and raw.startswith(UTF8_BOM) else 0
                text = raw[skip:]
                nul = text.find(b"\x00")
                if nul >= 0:
                    raise ValueError(f"{self.path}: binary file, not UTF-8 text (NUL byte at line "
                                     f"{number}, byte offset {offset + skip + nul})")
                try:
                    line = text.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{self.path}: not valid UTF-8 at line {number}, byte offset "
                                     f"{offset + skip + e.start} (byte 0x{text[e.start]:02x})") from None
                yield number, offset, offset + len(raw), line.rstrip("\r\n")
                offset += len(raw)

    def _tsv_header(self, header: str) -> None:
        names = [name.strip() for name in header.split("\t")]
        if self.column is None:
            found = [c for c in TSV_TEXT_COLUMNS if c in names]
            if not found:
                raise ValueError(f"{self.path}: TSV header {names} has no text column "
                                 f"{TSV_TEXT_COLUMNS}; name one as '{self.path}:COLUMN'")
            self.column = found[0]
        if self.column not in names:
            raise ValueError(f"{self.path}: TSV header {names} has no column '{self.column}'")
        self.column_index = names.index(self.column)

    def _line_texts(self) -> Iterator[tuple[int, int, str]]:
        """(start, end, text) per input line, text stripped ('' ends a document)."""
        for number, start, end, line in self._raw_lines():
            if not self.is_tsv:
                yield start, end, line.strip()
                continue
            if number == 1:
                self._tsv_header(line)
                continue
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) <= self.column_index:
                raise ValueError(f"{self.path}: line {number} has {len(fields)} TAB-separated "
                                 f"fields, no column '{self.column}'")
            yield start, end, fields[self.column_index].strip()
            yield end, end, ""  # each row is a document

    def events(self) -> Iterator[tuple[int, int, str | None]]:
        """Yields (start, end, text) per sentence or line, and (start, end, None) at each document end.

        start/end are the byte offsets of the input line that holds it.
        """
        in_doc = False
        for start, end, text in self._line_texts():
            if text:
                pieces = SENTENCE_END.split(text) if self.split_sentences else (text,)
                for piece in pieces:
                    piece = piece.strip()
                    if piece:
                        in_doc = True
                        yield start, end, piece
            elif in_doc:
                in_doc = False
                yield start, end, None
        if in_doc:
            yield self.bytes, self.bytes, None

    def scan(self, base: int = 0, cutoff: float = float("inf")) -> None:
        """First pass: check the file is UTF-8 text; count its documents, lines, and documents that
        start at or after byte `cutoff` of the whole input (this file starts at byte `base`)."""
        if self.bytes == 0:
            raise ValueError(f"corpus file is empty: {self.path}")
        self.documents = self.late_documents = self.lines = 0
        in_doc = False
        for start, _, text in self.events():
            if text is None:
                in_doc = False
                self.documents += 1
                continue
            if not in_doc:
                in_doc = True
                self.late_documents += base + start >= cutoff
            self.lines += 1
        if self.documents == 0:
            raise ValueError(f"corpus file has no text (only blank lines or a header): {self.path}")


def held_out_documents(sources: Sequence[CorpusSource], eval_fraction: float) -> tuple[int, int]:
    """Scan every source (the first pass) and choose the held-out split (module docstring).

    Returns: (documents in all sources, trailing documents held out for evaluation: 0 for a lone document,
    which prepare.py then splits by examples).
    Raises: ValueError when a source is not text.
    """
    total_bytes = sum(s.bytes for s in sources)
    base = 0
    for source in sources:
        source.scan(base, cutoff=(1.0 - eval_fraction) * total_bytes)
        base += source.bytes
    n_docs = sum(s.documents for s in sources)
    n_eval_docs = max(1, sum(s.late_documents for s in sources)) if eval_fraction > 0 else 0
    return n_docs, min(n_eval_docs, n_docs - 1)  # one document at least stays in train
