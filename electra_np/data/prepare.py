"""Preparing a corpus: text files -> packed pretraining examples in a folder that dataset.py reads.

prepare_corpus runs three steps:
  1. sources.py: a first pass checks every input and counts its documents, which fixes the held-out split
     (the trailing documents) before anything is written;
  2. packing.py: a second pass tokenizes each line (WordCachedEncoder) and packs the lines into
     `[CLS] A [SEP] B [SEP]` examples (ExampleBuilder, the official rules), a document's examples
     going to the split that holds it;
  3. the rows are streamed to `<split>.ids.npy` / `<split>.types.npy` (the layout is in dataset.py),
     then `vocab.txt` and `meta.json` are written, with the share of the text's tokens that are [UNK] (a text
     the vocabulary cannot spell is refused) and a hash of the rows (what a resume compares).
When whole documents hold out a share of the examples far from eval_fraction (dataset.held_out_share_is_far:
a corpus of a few documents, or of very uneven ones), the examples are split instead: the last
round(eval_fraction * N) of them in text order are held out (_hold_out_examples), and meta.json says
"held_out_by": "examples" (else "documents"). No example is in both splits either way.
The .npy files are streamed so that memory stays flat whatever the corpus size: a fixed-size .npy
header is written first, rows are appended in chunks with `ndarray.tofile`, and the header is rewritten
with the final row count. Everything is written into a temporary folder that then replaces out_dir
(atomic.atomic_folder), so a prepared folder appears whole or not at all; bad inputs and settings are
refused before anything is written.
"""

import json
import os
import random
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import atomic_folder
from .dataset import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_NAME,
    SPLITS,
    VOCAB_NAME,
    check_unk_share,
    content_sha256,
    held_out_share_is_far,
    ids_name,
    types_name,
)
from .packing import MIN_TARGET_LENGTH, ExampleBuilder, WordCachedEncoder, example_row
from .sources import CorpusSource, Spec, held_out_documents
from .tokenizer import UNK_REFUSE, Tokenizer, vocab_sha256

CHUNK_ROWS = 4096  # rows buffered before a write
PROGRESS_INTERVAL = 0.5  # seconds between progress reports
NPY_MAGIC = b"\x93NUMPY\x01\x00"
NPY_HEADER_BYTES = 128  # fixed, 64-aligned, room for any row count

Progress = bool | Callable[[dict], object]  # True: print to stderr; False: silent; or a callback


# ----------------------------------------------------------------------------- writing rows

def _npy_header(dtype, shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header padded to NPY_HEADER_BYTES, so it can be rewritten in place."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.dtype(dtype).str, tuple(shape))
    length = NPY_HEADER_BYTES - len(NPY_MAGIC) - 2
    return NPY_MAGIC + struct.pack("<H", length) + (text.ljust(length - 1) + "\n").encode("latin1")


class NpyRowWriter:
    """Appends rows of width T to a .npy file in chunks; `close()` fixes the row count in the header."""

    def __init__(self, path: str | os.PathLike, dtype, width: int):
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
        self.ids = NpyRowWriter(folder / ids_name(split), ids_dtype, T)
        self.types = NpyRowWriter(folder / types_name(split), np.uint8, T)
        self.ids_buf = np.full((CHUNK_ROWS, T), pad_id, dtype=ids_dtype)  # (CHUNK_ROWS, T)
        self.types_buf = np.zeros((CHUNK_ROWS, T), dtype=np.uint8)  # (CHUNK_ROWS, T)
        self.pad_id, self.k = pad_id, 0
        self.examples = self.tokens = self.single_segment = 0
        self.doc_rows = {}  # document -> its examples here, in text order

    def add(self, ids: list, n_type0: int, document: int) -> None:
        k, L = self.k, len(ids)
        self.ids_buf[k, :L] = ids
        self.types_buf[k, n_type0:L] = 1
        self.k += 1
        self.examples += 1
        self.tokens += L
        self.single_segment += n_type0 == L
        self.doc_rows[document] = self.doc_rows.get(document, 0) + 1
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
        return {"examples": self.examples, "documents": len(self.doc_rows),
                "tokens": self.tokens, "single_segment": self.single_segment}


# ----------------------------------------------------------------------------- held out by examples

def _hold_out_examples(folder: Path, writers: dict[str, _SplitWriter], eval_fraction: float, n_docs: int) -> dict:
    """Split the written examples again: train's rows then eval's are the text's order (eval held the trailing
    documents), and the last k = round(eval_fraction * N) of them (at least one, and one left to train on)
    become the eval split. The files are rewritten in chunks. Returns the splits' new counts."""
    arrays = [(np.load(folder / ids_name(s), mmap_mode="r"), np.load(folder / types_name(s), mmap_mode="r"))
              for s in SPLITS]  # (N_split, T) each
    N = sum(len(ids) for ids, _ in arrays)
    if N < 2:
        raise ValueError(f"corpus too small: its {n_docs} document(s) made {N} example(s), too few to hold any out "
                         "for evaluation; use more text or eval_fraction=0")
    k = min(max(1, round(eval_fraction * N)), N - 1)
    runs, row = [], 0  # (document, first row, end row) in text order
    for split in SPLITS:
        for doc, n in writers[split].doc_rows.items():
            runs.append((doc, row, row + n))
            row += n
    counts = {}
    for split, (start, stop) in zip(SPLITS, ((0, N - k), (N - k, N))):
        tokens, single = _copy_rows(arrays, start, stop, folder, split, writers[split])
        counts[split] = {"examples": stop - start, "documents": sum(1 for _, a, b in runs if a < stop and b > start),
                         "tokens": tokens, "single_segment": single}
    del arrays  # the memory maps, before their files are replaced
    for split in SPLITS:
        for name in (ids_name(split), types_name(split)):
            os.replace(folder / f"{name}.new", folder / name)
    return counts


def _copy_rows(arrays: list, start: int, stop: int, folder: Path, split: str, w: _SplitWriter) -> tuple[int, int]:
    """Rows start..stop of the splits' arrays taken end to end, in chunks, to `<split>.*.npy.new`.
    Returns: (non-pad tokens, single-segment rows) among them."""
    ids_out = NpyRowWriter(folder / f"{ids_name(split)}.new", w.ids.dtype, w.ids.width)
    types_out = NpyRowWriter(folder / f"{types_name(split)}.new", np.uint8, w.ids.width)
    tokens = single = offset = 0
    for ids, types in arrays:
        lo, hi = max(start - offset, 0), min(stop - offset, len(ids))
        for i in range(lo, hi, CHUNK_ROWS):
            j = min(i + CHUNK_ROWS, hi)
            ids_out.append(ids[i:j])  # (rows, T)
            types_out.append(types[i:j])
            tokens += int((ids[i:j] != w.pad_id).sum())
            single += int((types[i:j].max(axis=1) == 0).sum())  # no segment B: no type-1 position
        offset += len(ids)
    ids_out.close()
    types_out.close()
    return tokens, single


# ----------------------------------------------------------------------------- progress

class _Progress:
    """Reports bytes read, lines/s and ETA at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, total_bytes: int, progress: Progress):
        self.total = total_bytes
        self.start = self.last = time.monotonic()
        if progress is True:
            self.callback = _print_progress
        else:
            self.callback = progress if callable(progress) else None

    def __call__(self, done_bytes: int, lines: int, examples: int, final: bool = False,
                 unk_share: float | None = None) -> None:
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
                       "lines_per_s": lines / elapsed, "eta": 0.0 if final else eta, "final": final,
                       "unk_share": unk_share})


def _print_progress(p: dict) -> None:
    print(f"prepare: {100 * p['fraction']:5.1f}% of {p['total_bytes'] / 1e6:.1f} MB | "
          f"{p['lines']:,} lines, {p['lines_per_s']:,.0f} lines/s | {p['examples']:,} examples | "
          + (f"done in {p['elapsed']:.1f} s" if p["final"] else f"ETA {p['eta']:.0f} s")
          + ("" if p.get("unk_share") is None else f" | [UNK] {p['unk_share']:.1%} of the tokens"),
          file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- prepare_corpus

def _check_settings(inputs: list, max_seq_length: int, eval_fraction: float) -> None:
    if not inputs:
        raise ValueError("no corpus files given")
    if not (isinstance(max_seq_length, int) and max_seq_length >= MIN_TARGET_LENGTH):
        raise ValueError(f"max_seq_length must be an int >= {MIN_TARGET_LENGTH}, got {max_seq_length!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")


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


def _pack(sources: list[CorpusSource], encoder: WordCachedEncoder, builder: ExampleBuilder,
          writers: dict[str, _SplitWriter], first_eval_doc: int, cls_id: int, sep_id: int,
          report: _Progress, unk_id: int) -> tuple[int, int, int, int, int]:
    """The second pass: every line encoded and packed, each example written to its document's split.
    Returns: (lines, examples, tokens read, tokens packed, [UNK] tokens read): read - packed is what packing
    cut off; the [UNK] share of the text tells whether the vocabulary fits it (dataset.check_unk_share)."""
    done_bytes, lines, examples, doc, read, packed, unk = 0, 0, 0, -1, 0, 0, 0
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
                read += len(ids)
                unk += ids.count(unk_id)
            example = builder.add_line(ids)
            if example is not None:
                row, n_type0 = example_row(example[0], example[1], cls_id, sep_id)
                writers["eval" if doc >= first_eval_doc else "train"].add(row, n_type0, doc)
                examples += 1
                packed += len(example[0]) + len(example[1])
            report(done_bytes + end, lines, examples)
        done_bytes += source.bytes
    return lines, examples, read, packed, unk


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders made for out_dir (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def prepare_corpus(inputs: Spec | Sequence[Spec], tokenizer: Tokenizer, out_dir: str | os.PathLike,
                   max_seq_length: int = 128, seed: int = 0, eval_fraction: float = 0.02,
                   progress: Progress = True, overwrite: bool = False, split_sentences: bool = False,
                   cache_words: bool = True, max_unk_share: float | None = UNK_REFUSE) -> dict:
    """Tokenize and pack text files into pretraining examples in `out_dir` (see the module docstring).

    Inputs: inputs: a path or list of paths (`file.txt`, `file.tsv`, `file:column`);
    tokenizer: an `electra_np.data.tokenizer.Tokenizer`; progress: True (stderr), False, or a
    callable taking a dict (bytes, total_bytes, fraction, lines, examples, lines_per_s, eta, and at the end
    unk_share).
    Returns: the meta dict written to `out_dir/meta.json`: the settings, special ids, vocab_size and
    vocab_sha256, `content_sha256` (of the examples' rows: dataset.content_sha256), `lines` (packing units:
    sentences when split), `documents`, `eval_documents` (those with a held-out example), `held_out_by`
    ("documents", or "examples" when whole documents could not give about eval_fraction: module docstring),
    `splits[split]` = {examples, documents (a document split by examples counts in both), tokens (non-pad),
    single_segment}, `tokens_read`, `tokens_packed` and
    `tokens_unk` (the text's tokens, those the examples kept, and the text's [UNK]s), and `sources`
    (absolute path, bytes, mtime_ns, TSV column of each input).
    Raises: FileNotFoundError / ValueError before writing anything on bad input or settings, or on a text
    the vocabulary cannot spell: more than max_unk_share of its tokens [UNK] (tokenizer.UNK_REFUSE; None: no
    limit, for a text that is not to be pretrained on, such as a column of labels).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    _check_settings(inputs, max_seq_length, eval_fraction)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    sources = [CorpusSource(spec, split_sentences) for spec in inputs]
    n_docs, n_eval_docs = held_out_documents(sources, eval_fraction)
    vocab = list(tokenizer.ids_to_tokens)
    V, T = len(vocab), max_seq_length
    ids_dtype = np.uint16 if V <= 2 ** 16 else np.int32
    pad_id, cls_id, sep_id = tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id

    made = [p for p in (out_dir.parent, *out_dir.parent.parents) if not p.exists()]  # deepest first
    try:
        with atomic_folder(out_dir) as tmp:
            writers = {split: _SplitWriter(tmp, split, ids_dtype, T, pad_id) for split in SPLITS}
            encoder = WordCachedEncoder(tokenizer, enabled=cache_words)
            report = _Progress(sum(s.bytes for s in sources), progress)
            lines, examples, read, packed, unk = _pack(sources, encoder, ExampleBuilder(T, random.Random(seed)),
                                                       writers, n_docs - n_eval_docs, cls_id, sep_id, report,
                                                       tokenizer.unk_id)
            if max_unk_share is not None:
                check_unk_share(unk, read, ", ".join(str(spec) for spec in inputs), max_unk_share)
            counts = {split: writer.close() for split, writer in writers.items()}
            held_out_by = "documents"
            if examples and eval_fraction > 0 and held_out_share_is_far(counts["eval"]["examples"] / examples,
                                                                        eval_fraction):
                counts, held_out_by = _hold_out_examples(tmp, writers, eval_fraction, n_docs), "examples"
                n_eval_docs = counts["eval"]["documents"]
            if counts["train"]["examples"] == 0:
                raise ValueError(f"corpus too small: {lines} line(s) made no training example")
            meta = {
                "format": FORMAT_NAME, "version": FORMAT_VERSION,
                "max_seq_length": T, "vocab_size": V, "ids_dtype": np.dtype(ids_dtype).name,
                "pad_id": pad_id, "unk_id": tokenizer.unk_id, "cls_id": cls_id, "sep_id": sep_id,
                "mask_id": tokenizer.mask_id, "do_lower_case": getattr(tokenizer, "do_lower_case", None),
                "vocab_sha256": vocab_sha256(vocab),
                "seed": seed, "eval_fraction": eval_fraction, "split_sentences": split_sentences,
                "word_cache": encoder.enabled,
                "lines": lines, "documents": n_docs, "eval_documents": n_eval_docs, "held_out_by": held_out_by,
                "splits": counts, "sources": [s.describe() for s in sources],
                "tokens_read": read, "tokens_packed": packed, "tokens_unk": unk,
                "content_sha256": content_sha256(tmp),
            }
            (tmp / VOCAB_NAME).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
            (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            report(report.total, lines, examples, final=True, unk_share=unk / read if read else None)
    except BaseException:
        _remove_if_empty(made)
        raise
    return meta
