"""Pretraining data: text corpus -> packed `[CLS] A [SEP] B [SEP]` examples on disk -> batches.

Packing follows `ExampleBuilder` in google-research/electra `build_pretraining_dataset.py`:
  - input: UTF-8 text, one sentence or paragraph per line, a blank line between documents;
    the end of each input file also ends a document;
  - lines are tokenized and accumulated until their token count reaches a target length;
    the target is `max_seq_length`, except that after each example, with probability 0.05,
    the next target is `randint(5, max_seq_length)`;
  - the accumulated lines are split into segments A and B at line boundaries: with
    probability 0.1 everything goes to A (a single-segment example, as in classification);
    otherwise A takes lines while it stays under (target - 3) // 2 tokens, the first line that
    would cross that goes to A with probability 1/2 (if A is still under it), the rest to B;
  - A is cut to max_seq_length - 2 tokens and B to max_seq_length - len(A) - 3 (the tokens cut
    off are dropped, as in the official code); a blank line flushes a partial example;
  - `input_ids = [CLS] A [SEP] (B [SEP])`, padded with [PAD]; `token_type_ids` 0 over
    `[CLS] A [SEP]`, 1 over `B [SEP]`, 0 over padding.
The only difference from the official code: its random draws come from the global `random`
module; here they come from `random.Random(seed)`, so a seed reproduces the output exactly.

Lines are the packing units, so a line longer than max_seq_length - 2 tokens is cut (as in the
official code). With paragraph-per-line text that drops much of the text; `split_sentences=True`
splits each line into sentences after `.`, `!` or `?` followed by whitespace (a plain regex).

TSV input: a file ending in `.tsv`, or any file given as `path:column`, is read as TAB-separated
with a header row (no quoting). The text column is `column`, else the first header named `text`,
`review` or `sentence`. Each row is one document, always split into sentences as above.

Held-out split: a first pass counts the documents; the eval split is the trailing documents that
start within the last `eval_fraction` of the input bytes (inputs in the order given), at least
one, and at least one document stays in train, so train and eval never share a document and eval
holds about `eval_fraction` of the text even when documents differ in size (whole books).
eval_fraction=0 leaves it empty.

On disk (`out_dir/`): `train.ids.npy`, `train.types.npy`, `eval.ids.npy`, `eval.types.npy`
(shape (N, T), ids uint16 when the vocabulary has at most 65536 entries else int32, types
uint8), `vocab.txt` (one token per line, line number = id) and `meta.json`. The .npy files are
streamed: a fixed-size .npy header is written first, rows are appended in chunks with
`ndarray.tofile`, and the header is rewritten with the final row count, so memory stays flat.
Everything is written to a temporary folder beside out_dir, then moved into place with
`os.replace`. Inputs are validated before anything is written.

Speed: tokenizing a line is the cost. Lines are split on ASCII spaces and each space-separated
word is encoded once and cached (`tokenizer.encode(word)`); this equals `tokenizer.encode(line)`
for any tokenizer that treats a space as a hard token boundary (BERT's WordPiece does). The
first lines are encoded both ways and the cache is switched off if they ever differ.
"""
import hashlib
import json
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMAT_NAME = "electra_np.pretraining_data"
FORMAT_VERSION = 1
META_NAME = "meta.json"
VOCAB_NAME = "vocab.txt"
SPLITS = ("train", "eval")
SINGLE_SEGMENT_PROB = 0.1  # official: random() < 0.1 -> first_segment_target_length = 100000
ONE_SEGMENT_TARGET = 100000  # A's target that no example reaches: everything goes to A
SHORT_TARGET_PROB = 0.05  # official: random() < 0.05 -> target_length = randint(5, max_length)
MIN_TARGET_LENGTH = 5
SPLIT_PROB = 0.5  # the line crossing A's target goes to A half of the time
TSV_TEXT_COLUMNS = ("text", "review", "sentence")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
CHUNK_ROWS = 4096  # rows buffered before a write
WORD_CACHE_MAX = 500_000  # cached words; bounds memory on huge vocabularies of words
VERIFY_LINES = 1000  # lines encoded both ways to check the word cache
PROGRESS_INTERVAL = 0.5  # seconds between progress reports
NPY_MAGIC = b"\x93NUMPY\x01\x00"
NPY_HEADER_BYTES = 128  # fixed, 64-aligned, room for any row count


# ----------------------------------------------------------------------------- packing

class ExampleBuilder:
    """Accumulates tokenized lines into pretraining examples (the official ExampleBuilder).

    add_line(ids) takes one line's token ids, or None for a blank line (document end), and
    returns None or an example `(first_segment, second_segment)` of token-id lists, before
    [CLS]/[SEP] are added. `target_length` is the target of the example being built.
    """

    def __init__(self, max_length: int, rng: random.Random):
        self.max_length = max_length
        self.target_length = max_length
        self.rng = rng
        self._sentences = []
        self._length = 0

    def add_line(self, ids):
        if ids is None:  # empty lines separate documents
            return self._create_example() if self._length != 0 else None
        if not ids:  # a line with no tokens changes nothing (and draws no random number)
            return None
        self._sentences.append(ids)
        self._length += len(ids)
        if self._length >= self.target_length:
            return self._create_example()
        return None

    def _create_example(self):
        rng = self.rng
        if rng.random() < SINGLE_SEGMENT_PROB:
            first_target = ONE_SEGMENT_TARGET
        else:
            first_target = (self.target_length - 3) // 2  # -3 for [CLS] A [SEP] B [SEP]
        first, second = [], []
        for sentence in self._sentences:
            # A takes the line if A is empty, if it stays under target, or (50%) if it is the
            # line that crosses A's target while B is still empty
            if (len(first) == 0 or len(first) + len(sentence) < first_target or
                    (len(second) == 0 and len(first) < first_target and rng.random() < SPLIT_PROB)):
                first += sentence
            else:
                second += sentence
        first = first[:self.max_length - 2]
        second = second[:max(0, self.max_length - len(first) - 3)]
        self._sentences = []
        self._length = 0
        if rng.random() < SHORT_TARGET_PROB:
            self.target_length = rng.randint(MIN_TARGET_LENGTH, self.max_length)
        else:
            self.target_length = self.max_length
        return first, second


def example_row(first, second, cls_id: int, sep_id: int):
    """`[CLS] A [SEP] (B [SEP])` ids and the number of leading type-0 positions (len(A) + 2)."""
    ids = [cls_id] + first + [sep_id]
    n_type0 = len(ids)
    if second:
        ids += second + [sep_id]
    return ids, n_type0


class WordCachedEncoder:
    """`encode(line)` equal to `tokenizer.encode(line)`, caching the ids of space-separated words.

    The first VERIFY_LINES lines are also encoded whole; on any difference the cache is
    switched off for good (`self.enabled = False`) and every line is encoded whole.
    """

    def __init__(self, tokenizer, enabled: bool = True):
        self.tokenizer = tokenizer
        self.enabled = enabled
        self.cache = {}
        self.verified = 0

    def encode(self, line: str) -> list[int]:
        if not self.enabled:
            return list(self.tokenizer.encode(line))
        cache, ids = self.cache, []
        for word in line.split(" "):
            if not word:
                continue
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = tuple(self.tokenizer.encode(word))
                if len(cache) < WORD_CACHE_MAX:
                    cache[word] = word_ids
            ids.extend(word_ids)
        if self.verified < VERIFY_LINES:
            self.verified += 1
            whole = list(self.tokenizer.encode(line))
            if whole != ids:
                self.enabled, self.cache = False, {}
                return whole
        return ids


# ----------------------------------------------------------------------------- inputs

class CorpusSource:
    """One input file: plain text (a blank line between documents) or a TSV text column."""

    def __init__(self, spec, split_sentences: bool = False):
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
        return {"path": str(self.path.resolve()), "bytes": self.bytes,
                "mtime_ns": self.mtime_ns, "column": self.column if self.is_tsv else None}

    def _raw_lines(self):
        """(line number from 1, start byte offset, end byte offset, line without newline); checks the bytes."""
        offset = 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                skip = 3 if number == 1 and raw.startswith(b"\xef\xbb\xbf") else 0  # UTF-8 BOM
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

    def _line_texts(self):
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

    def events(self):
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


# ----------------------------------------------------------------------------- writing

def _npy_header(dtype, shape) -> bytes:
    """A .npy v1.0 header padded to NPY_HEADER_BYTES, so it can be rewritten in place."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.dtype(dtype).str, tuple(shape))
    length = NPY_HEADER_BYTES - len(NPY_MAGIC) - 2
    return NPY_MAGIC + struct.pack("<H", length) + (text.ljust(length - 1) + "\n").encode("latin1")


class NpyRowWriter:
    """Appends rows of width T to a .npy file in chunks; `close()` fixes the row count in the header."""

    def __init__(self, path, dtype, width: int):
        self.path, self.dtype, self.width, self.rows = Path(path), np.dtype(dtype), width, 0
        self.file = open(self.path, "wb")
        self.file.write(_npy_header(self.dtype, (0, width)))

    def append(self, rows: np.ndarray) -> None:
        np.ascontiguousarray(rows, dtype=self.dtype).tofile(self.file)
        self.rows += len(rows)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, (self.rows, self.width)))
        self.file.close()


class _SplitWriter:
    """Buffers examples of one split and streams them to `<split>.ids.npy` / `<split>.types.npy`."""

    def __init__(self, folder: Path, split: str, ids_dtype, T: int, pad_id: int):
        self.ids = NpyRowWriter(folder / f"{split}.ids.npy", ids_dtype, T)
        self.types = NpyRowWriter(folder / f"{split}.types.npy", np.uint8, T)
        self.ids_buf = np.full((CHUNK_ROWS, T), pad_id, dtype=ids_dtype)  # (CHUNK_ROWS, T)
        self.types_buf = np.zeros((CHUNK_ROWS, T), dtype=np.uint8)  # (CHUNK_ROWS, T)
        self.pad_id, self.k = pad_id, 0
        self.examples = self.tokens = self.single_segment = 0
        self.documents = set()

    def add(self, ids: list, n_type0: int, document: int) -> None:
        k, L = self.k, len(ids)
        self.ids_buf[k, :L] = ids
        self.types_buf[k, n_type0:L] = 1
        self.k += 1
        self.examples += 1
        self.tokens += L
        self.single_segment += n_type0 == L
        self.documents.add(document)
        if self.k == CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        self.ids.append(self.ids_buf[:self.k])
        self.types.append(self.types_buf[:self.k])
        self.ids_buf.fill(self.pad_id)
        self.types_buf.fill(0)
        self.k = 0

    def close(self) -> dict:
        self.flush()
        self.ids.close()
        self.types.close()
        return {"examples": self.examples, "documents": len(self.documents),
                "tokens": self.tokens, "single_segment": self.single_segment}


class _Progress:
    """Reports bytes read, lines/s and ETA at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, total_bytes: int, progress):
        self.total = total_bytes
        self.start = self.last = time.monotonic()
        if progress is True:
            self.callback = _print_progress
        else:
            self.callback = progress if callable(progress) else None

    def __call__(self, done_bytes: int, lines: int, examples: int, final: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        fraction = done_bytes / max(self.total, 1)
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("inf")
        self.callback({"bytes": done_bytes, "total_bytes": self.total, "fraction": fraction,
                       "lines": lines, "examples": examples, "elapsed": elapsed,
                       "lines_per_s": lines / elapsed, "eta": 0.0 if final else eta, "final": final})


def _print_progress(p: dict) -> None:
    print(f"prepare: {100 * p['fraction']:5.1f}% of {p['total_bytes'] / 1e6:.1f} MB | "
          f"{p['lines']:,} lines, {p['lines_per_s']:,.0f} lines/s | {p['examples']:,} examples | "
          + (f"done in {p['elapsed']:.1f} s" if p["final"] else f"ETA {p['eta']:.0f} s"),
          file=sys.stderr, flush=True)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"out_dir exists and is not a folder: {out_dir}")
    if (out_dir / META_NAME).exists():
        if not overwrite:
            raise ValueError(f"out_dir already holds a prepared corpus ({out_dir / META_NAME}); "
                             "pass overwrite=True to replace it")
    elif any(out_dir.iterdir()):
        raise ValueError(f"out_dir exists, is not empty and is not a prepared corpus: {out_dir}; "
                         "refusing to write into it")


def _vocab_tokens(tokenizer) -> list[str]:
    return list(tokenizer.ids_to_tokens)


def prepare_corpus(inputs, tokenizer, out_dir, max_seq_length: int = 128, seed: int = 0,
                   eval_fraction: float = 0.02, progress=True, overwrite: bool = False,
                   split_sentences: bool = False, cache_words: bool = True) -> dict:
    """Tokenize and pack text files into pretraining examples in `out_dir` (see module docstring).

    Inputs: inputs: a path or list of paths (`file.txt`, `file.tsv`, `file:column`);
    tokenizer: an `electra_np.tokenizer.Tokenizer`; progress: True (stderr), False, or a
    callable taking a dict (bytes, total_bytes, fraction, lines, examples, lines_per_s, eta).
    Returns: the meta dict written to `out_dir/meta.json`: the settings, special ids, vocab_size
    and vocab_sha256, `lines` (packing units: sentences when split), `documents`, `eval_documents`,
    `splits[split]` = {examples, documents, tokens (non-pad), single_segment}, and `sources`
    (absolute path, bytes, mtime_ns, TSV column of each input).
    Raises: FileNotFoundError / ValueError before writing anything on bad input or settings.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise ValueError("no corpus files given")
    if not (isinstance(max_seq_length, int) and max_seq_length >= MIN_TARGET_LENGTH):
        raise ValueError(f"max_seq_length must be an int >= {MIN_TARGET_LENGTH}, got {max_seq_length!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    sources = [CorpusSource(spec, split_sentences) for spec in inputs]
    total_bytes = sum(s.bytes for s in sources)
    base = 0
    for source in sources:
        source.scan(base, cutoff=(1.0 - eval_fraction) * total_bytes)
        base += source.bytes
    n_docs = sum(s.documents for s in sources)
    n_eval_docs = max(1, sum(s.late_documents for s in sources)) if eval_fraction > 0 else 0
    if n_eval_docs >= n_docs:
        raise ValueError(f"corpus has {n_docs} document(s): too few to hold out {n_eval_docs} for "
                         "evaluation; separate documents with blank lines or set eval_fraction=0")
    vocab = _vocab_tokens(tokenizer)
    V, T = len(vocab), max_seq_length
    ids_dtype = np.uint16 if V <= 2 ** 16 else np.int32
    pad_id, cls_id, sep_id = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id

    missing = [p for p in (out_dir.parent, *out_dir.parent.parents) if not p.exists()]  # deepest first
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        writers = {split: _SplitWriter(tmp, split, ids_dtype, T, pad_id) for split in SPLITS}
        encoder = WordCachedEncoder(tokenizer, enabled=cache_words)
        builder = ExampleBuilder(T, random.Random(seed))
        report = _Progress(total_bytes, progress)
        done_bytes, lines, examples, doc = 0, 0, 0, -1
        in_doc = False
        for source in sources:
            for _, end, line in source.events():
                if line is None:
                    ids, in_doc = None, False
                else:
                    if not in_doc:
                        doc, in_doc = doc + 1, True
                    ids = encoder.encode(line)
                    lines += 1
                example = builder.add_line(ids)
                if example is not None:
                    row, n_type0 = example_row(example[0], example[1], cls_id, sep_id)
                    writers["eval" if doc >= n_docs - n_eval_docs else "train"].add(row, n_type0, doc)
                    examples += 1
                report(done_bytes + end, lines, examples)
            done_bytes += source.bytes
        counts = {split: writer.close() for split, writer in writers.items()}
        if counts["train"]["examples"] == 0:
            raise ValueError(f"corpus too small: {lines} line(s) made no training example")
        if n_eval_docs and counts["eval"]["examples"] == 0:
            raise ValueError(f"corpus too small: the {n_eval_docs} held-out document(s) made no "
                             "eval example; use more text or eval_fraction=0")
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "max_seq_length": T, "vocab_size": V, "ids_dtype": np.dtype(ids_dtype).name,
            "pad_id": pad_id, "unk_id": tokenizer.unk_id, "cls_id": cls_id, "sep_id": sep_id,
            "mask_id": tokenizer.mask_id, "do_lower_case": getattr(tokenizer, "do_lower_case", None),
            "vocab_sha256": hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest(),
            "seed": seed, "eval_fraction": eval_fraction, "split_sentences": split_sentences,
            "word_cache": encoder.enabled,
            "lines": lines, "documents": n_docs, "eval_documents": n_eval_docs,
            "splits": counts, "sources": [s.describe() for s in sources],
        }
        (tmp / VOCAB_NAME).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        report(done_bytes, lines, examples, final=True)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in missing:  # folders made for out_dir, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return meta


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir (absent, empty, or a prepared corpus) with the finished temporary folder."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
    os.replace(out_dir, old / "data")
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- reading

def load_meta(path) -> dict:
    """The meta dict of a prepared folder; ValueError if `path` holds no prepared corpus."""
    meta_path = Path(path) / META_NAME
    if not meta_path.is_file():
        raise ValueError(f"no prepared corpus at {path} (missing {META_NAME}); run prepare_corpus first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} folder")
    return meta


def is_prepared_for(out_dir, inputs, tokenizer, max_seq_length: int = 128, seed: int = 0,
                    eval_fraction: float = 0.02, split_sentences: bool = False) -> bool:
    """True if out_dir holds data that prepare_corpus made from these unchanged inputs and settings."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    try:
        meta = load_meta(out_dir)
        sources = [CorpusSource(spec, split_sentences) for spec in inputs]
    except (OSError, ValueError):
        return False
    if len(sources) != len(meta["sources"]):
        return False
    for source, old in zip(sources, meta["sources"]):
        if source.is_tsv and source.column is None:  # detected from the header when prepared
            source.column = old["column"]
    vocab_sha = hashlib.sha256("\n".join(_vocab_tokens(tokenizer)).encode("utf-8")).hexdigest()
    return ([s.describe() for s in sources] == meta["sources"] and meta["vocab_sha256"] == vocab_sha
            and meta["max_seq_length"] == max_seq_length and meta["seed"] == seed
            and meta["eval_fraction"] == eval_fraction and meta["split_sentences"] == split_sentences)


class PretrainingData:
    """One split of a prepared folder, opened as read-only memory maps.

    `ids` (N, T) and `types` (N, T) stay on disk; `batch(indices)` copies the rows it needs.
    """

    def __init__(self, path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path, self.split = Path(path), split
        self.meta = load_meta(path)
        self.ids = np.load(self.path / f"{split}.ids.npy", mmap_mode="r")  # (N, T)
        self.types = np.load(self.path / f"{split}.types.npy", mmap_mode="r")  # (N, T)
        self.max_seq_length = self.meta["max_seq_length"]
        self.vocab_size = self.meta["vocab_size"]
        self.pad_id = self.meta["pad_id"]

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, indices) -> dict:
        """Rows `indices` as int64 input_ids, token_type_ids, attention_mask, each (B, T).

        attention_mask is 1 up to the last non-[PAD] token of a row, 0 on the trailing padding.
        """
        indices = np.asarray(indices, dtype=np.int64)
        input_ids = np.asarray(self.ids[indices], dtype=np.int64)  # (B, T)
        token_type_ids = np.asarray(self.types[indices], dtype=np.int64)  # (B, T)
        B, T = input_ids.shape
        not_pad = input_ids != self.pad_id  # (B, T)
        length = T - np.argmax(not_pad[:, ::-1], axis=1)  # (B,) every row starts with [CLS]
        attention_mask = (np.arange(T)[None, :] < length[:, None]).astype(np.int64)  # (B, T)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids,
                "attention_mask": attention_mask}

    def batches(self, batch_size: int):
        """All rows in order, `batch_size` at a time (the last batch may be smaller): for evaluation."""
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, len(self))))

    def sampler(self, batch_size: int, seed: int = 0, drop_last: bool = True) -> "BatchSampler":
        return BatchSampler(len(self), batch_size, seed, drop_last)


class BatchSampler:
    """Endless epoch-shuffled batches of row indices whose position can be saved and restored.

    Epoch e visits `np.random.default_rng([seed, e]).permutation(n)` in batches of
    `batch_size` (a last partial batch is dropped when drop_last). The whole state is
    (epoch, position = batches already taken this epoch), so a restored sampler yields
    exactly the batches the saved one would have.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, drop_last: bool = True):
        if n <= 0 or batch_size <= 0:
            raise ValueError(f"need n > 0 and batch_size > 0, got n={n}, batch_size={batch_size}")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the {n} examples "
                             "(use a smaller batch or drop_last=False)")
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.batches_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = None, None

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        start = self.position * self.batch_size
        indices = self._permutation()[start:start + self.batch_size].copy()
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return indices

    def state(self) -> dict:
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "drop_last": self.drop_last, "epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        for key in ("n", "batch_size", "seed", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has "
                                 f"{key}={getattr(self, key)!r}: the data or settings changed")
        if not 0 <= state["position"] < self.batches_per_epoch:
            raise ValueError(f"sampler state position {state['position']} out of range")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    @classmethod
    def from_state(cls, state: dict) -> "BatchSampler":
        sampler = cls(state["n"], state["batch_size"], state["seed"], state["drop_last"])
        sampler.set_state(state)
        return sampler
