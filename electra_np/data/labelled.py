"""Labelled text for fine-tuning: GLUE-format readers (SST-2, CoLA), a generic TSV reader, and batching.

Sentence pairs are encoded as BERT and ELECTRA do: [CLS] A [SEP] B [SEP], token_type_ids 0 for the first
segment and 1 for the second, the longer segment truncated first until the pair fits
(google-research/electra finetune/classification/classification_tasks.py, `_truncate_seq_pair`).
Batches are padded to the longest sequence in the batch.
"""

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tokenizer import Tokenizer

Column = str | int  # a header name, or a 0-based index in a file without a header
Encoded = tuple[list[int], list[int]]  # (input ids, token type ids) of one example


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: str | None  # None when the file has no label column
    line: int  # 1-based line in its file, for error messages


def read_tsv(path: str | os.PathLike, text_column: Column, label_column: Column | None,
             text_b_column: Column | None = None, header: bool = True) -> list[Example]:
    """Read a TAB-separated file (no quoting, as GLUE's files). Columns are header names when header=True,
    else 0-based indices. label_column None: unlabelled (predict). Returns a list of Examples."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte offset {e.start})") from None
    if lines and lines[-1] == "":
        lines.pop()
    rows = [line.rstrip("\r").split("\t") for line in lines]
    if not rows or (header and len(rows) == 1):
        raise ValueError(f"{path}: the file holds no examples")
    start = 1 if header else 0
    names = rows[0] if header else None

    def index(col, what):
        if col is None:
            return None
        if header:
            if col not in names:
                raise ValueError(f"{path}: no column named {col!r} for the {what} (the header has {names})")
            return names.index(col)
        if not isinstance(col, int) or not 0 <= col < len(rows[0]):
            raise ValueError(f"{path}: {what} column {col!r} does not exist (rows have {len(rows[0])} columns)")
        return col

    ia, ib, il = index(text_column, "text"), index(text_b_column, "second text"), index(label_column, "label")
    width = len(rows[0])
    examples = []
    for n, row in enumerate(rows[start:], start=start + 1):
        if len(row) != width:
            raise ValueError(f"{path}, line {n}: {len(row)} columns where the file has {width} (a ragged row)")
        examples.append(Example(row[ia].strip(), None if ib is None else row[ib].strip(),
                                None if il is None else row[il].strip(), n))
    return examples


def read_glue(task: str, folder: str | os.PathLike, split: str) -> list[Example]:
    """SST-2 (header `sentence<TAB>label`) and CoLA (no header: source, label, mark, sentence)."""
    folder = Path(folder)
    if task == "sst2":
        return read_tsv(folder / f"{split}.tsv", "sentence", "label")
    if task == "cola":
        name = {"train": "in_domain_train.tsv", "dev": "in_domain_dev.tsv"}.get(split, f"{split}.tsv")
        return read_tsv(folder / name, 3, 1, header=False)
    raise ValueError(f"unknown GLUE task {task!r}; choose 'sst2' or 'cola', or use read_tsv")


def label_map(examples: Iterable[Example]) -> dict[str, int]:
    """Labels sorted as strings -> 0..K-1 (so "0"/"1" keep their meaning)."""
    labels = sorted({e.label for e in examples})
    if not labels:
        raise ValueError("no labels in the training examples")
    return {label: i for i, label in enumerate(labels)}


def truncate_pair(a: Sequence[int], b: Sequence[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Remove tokens from the end of the longer segment until len(a) + len(b) <= max_tokens."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


def encode_examples(examples: Iterable[Example], tokenizer: Tokenizer, max_seq_length: int,
                    labels: Mapping[str, int] | None = None,
                    regression: bool = False) -> tuple[list[Encoded], np.ndarray | None]:
    """Tokenize into id lists. Returns (list of (ids, types), label array or None).
    An example whose label is not in `labels` is refused, naming its line."""
    encoded, y = [], []
    for e in examples:
        a = tokenizer.encode(e.text_a)
        b = tokenizer.encode(e.text_b) if e.text_b is not None else []
        a, b = truncate_pair(a, b, max_seq_length - (3 if e.text_b is not None else 2))
        ids = [tokenizer.cls_id] + a + [tokenizer.sep_id]
        types = [0] * len(ids)
        if e.text_b is not None:
            ids += b + [tokenizer.sep_id]
            types += [1] * (len(b) + 1)
        encoded.append((ids, types))
        if labels is not None or regression:
            if regression:
                try:
                    y.append(float(e.label))
                except (TypeError, ValueError):
                    raise ValueError(f"line {e.line}: label {e.label!r} is not a number (regression)") from None
            elif e.label not in labels:
                raise ValueError(f"line {e.line}: unknown label {e.label!r}; the model knows {sorted(labels)}")
            else:
                y.append(labels[e.label])
    if not y:
        return encoded, None
    return encoded, np.array(y, np.float64 if regression else np.int64)


def pad_batch(encoded: Sequence[Encoded], pad_id: int, multiple: int = 1,
              max_len: int | None = None) -> dict[str, np.ndarray]:
    """Pad to the longest sequence in the batch, rounded up to a multiple of `multiple` but not past
    `max_len` (fewer distinct shapes for the fast path's workspaces; pad positions are masked out of
    attention, so the real positions' outputs do not change). Returns dict(input_ids, token_type_ids,
    attention_mask) (B, T)."""
    longest = max(len(ids) for ids, _ in encoded)
    T = -(-longest // multiple) * multiple
    if max_len is not None:
        T = max(longest, min(T, max_len))
    B = len(encoded)
    input_ids = np.full((B, T), pad_id, np.int64)
    types = np.zeros((B, T), np.int64)
    mask = np.zeros((B, T), np.int64)
    for i, (ids, tt) in enumerate(encoded):
        input_ids[i, :len(ids)], types[i, :len(tt)], mask[i, :len(ids)] = ids, tt, 1
    return {"input_ids": input_ids, "token_type_ids": types, "attention_mask": mask}


def batches(encoded: Sequence[Encoded], y: np.ndarray | None, batch_size: int, pad_id: int,
            rng: np.random.Generator | None = None, multiple: int = 1,
            max_len: int | None = None) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]]:
    """Yield (indices, padded batch dict, labels or None), in order or shuffled by `rng`; T rounded up to a
    multiple of `multiple` (pad_batch)."""
    order = np.arange(len(encoded)) if rng is None else rng.permutation(len(encoded))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        yield idx, pad_batch([encoded[i] for i in idx], pad_id, multiple, max_len), (None if y is None else y[idx])
