"""Labelled text for fine-tuning: GLUE-format readers (SST-2, CoLA), a generic TSV reader, and batching.

Sentence pairs are encoded as BERT and ELECTRA do: [CLS] A [SEP] B [SEP], token_type_ids 0 for the first
segment and 1 for the second, the longer segment truncated first until the pair fits
(google-research/electra finetune/classification/classification_tasks.py, `_truncate_seq_pair`).
Batches are padded to the longest sequence in the batch.

What a set loses or cannot use is said, not swallowed: an empty label cell, a label the model does not know, a
regression target that is not a finite number are refused naming the file and line; a training set of one
class, or of many numbers read as classes, is refused (check_classes); encode_with_report counts the examples
cut to max_seq_length, the tokens they lost and the [UNK]s, and check_unk_share refuses a set that the
vocabulary cannot spell.
"""

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tokenizer import UNK_REFUSE, UNK_WARN, Tokenizer

Column = str | int  # a header name, or a 0-based index in a file without a header
Encoded = tuple[list[int], list[int]]  # (input ids, token type ids) of one example
MAX_NUMERIC_CLASSES = 20  # more distinct labels than this, all numbers and not all whole: a regression target


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: str | None  # None when the file has no label column
    line: int  # 1-based line in its file, for error messages
    source: str | None = None  # its file, for error messages


def where(e: Example) -> str:
    """"file, line n" of an example (or "line n" when its file is not known), for messages."""
    return f"{e.source}, line {e.line}" if e.source else f"line {e.line}"


@dataclass(frozen=True)
class EncodingReport:
    """What encoding a set did to its text: `cut` of the `examples` were longer than max_seq_length and lost
    tokens; `tokens` text tokens ([CLS]/[SEP] not counted), `kept` of them after truncation, `unk` of them
    [UNK] (words the vocabulary cannot spell)."""
    examples: int
    cut: int
    tokens: int
    kept: int
    unk: int

    @property
    def unk_share(self) -> float:
        return self.unk / self.tokens if self.tokens else 0.0

    @property
    def lost_share(self) -> float:
        return (self.tokens - self.kept) / self.tokens if self.tokens else 0.0


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
        label = None if il is None else row[il].strip()
        if label == "":
            raise ValueError(f"{path}, line {n}: the label (column {label_column!r}) is empty; every example needs "
                             "one (remove the line, or fill it in)")
        examples.append(Example(row[ia].strip(), None if ib is None else row[ib].strip(), label, n, str(path)))
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
    """Labels sorted as strings -> 0..K-1 (so "0"/"1" keep their meaning), after check_classes."""
    examples = list(examples)
    check_classes(examples)
    return {label: i for i, label in enumerate(sorted({e.label for e in examples}))}


def _number(label: str | None) -> float | None:
    try:
        return float(label)
    except (TypeError, ValueError):
        return None


def check_classes(examples: Sequence[Example]) -> None:
    """Refuse training labels a classifier cannot learn from: none, a single class (nothing to tell apart), or
    more than MAX_NUMERIC_CLASSES distinct numbers that are not all whole (0.25, 3.7, ...: a score to regress on,
    which read as classes would make every value a class of its own)."""
    source = next((e.source for e in examples if e.source), "the training examples")
    labels = {e.label for e in examples} - {None}
    if not labels:
        raise ValueError(f"{source}: no labels")
    if len(labels) == 1:
        raise ValueError(f"{source}: every example has the label {labels.pop()!r}; a classifier needs at least two "
                         "classes to tell apart")
    numbers = [_number(label) for label in labels]
    if (len(labels) > MAX_NUMERIC_CLASSES and None not in numbers
            and not all(math.isfinite(x) and x.is_integer() for x in numbers)):
        sample = ", ".join(sorted(labels, key=_number)[:3])
        raise ValueError(f"{source}: its {len(labels)} distinct labels are numbers such as {sample}: a score to "
                         "regress on, not classes; pass --regression")


def regression_target(e: Example) -> float:
    """The label of `e` as a finite number; a ValueError naming its file and line otherwise."""
    y = _number(e.label)
    if y is None:
        raise ValueError(f"{where(e)}: label {e.label!r} is not a number (regression)")
    if not math.isfinite(y):
        raise ValueError(f"{where(e)}: label {e.label!r} is not a finite number; a regression target must be one")
    return y


def check_targets(examples: Sequence[Example]) -> None:
    """Refuse regression targets that are not finite numbers (naming the line), or all the same value (nothing to
    learn: the correlation that scores the model is then undefined)."""
    values = {regression_target(e) for e in examples}
    if len(values) < 2:
        source = next((e.source for e in examples if e.source), "the training examples")
        raise ValueError(f"{source}: every example has the target {values.pop() if values else None!r}; regression "
                         "needs at least two values")


def truncate_pair(a: Sequence[int], b: Sequence[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Remove tokens from the end of the longer segment until len(a) + len(b) <= max_tokens."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


def min_seq_length(pairs: bool) -> int:
    """The shortest sequence that holds one token of text: [CLS] a [SEP], or [CLS] a [SEP] b [SEP] for pairs."""
    return 4 if pairs else 3


def encode_examples(examples: Iterable[Example], tokenizer: Tokenizer, max_seq_length: int,
                    labels: Mapping[str, int] | None = None,
                    regression: bool = False) -> tuple[list[Encoded], np.ndarray | None]:
    """Tokenize into id lists. Returns (list of (ids, types), label array or None).
    An example whose label is not in `labels` (or, for regression, not a finite number) is refused, naming its
    file and line."""
    encoded, y, _ = encode_with_report(examples, tokenizer, max_seq_length, labels, regression)
    return encoded, y


def encode_with_report(examples: Iterable[Example], tokenizer: Tokenizer, max_seq_length: int,
                       labels: Mapping[str, int] | None = None,
                       regression: bool = False) -> tuple[list[Encoded], np.ndarray | None, EncodingReport]:
    """encode_examples, and an EncodingReport of what truncation cut and how much of the text is [UNK]."""
    examples = list(examples)
    need = min_seq_length(any(e.text_b is not None for e in examples))
    if max_seq_length < need:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for text: at least {need} is needed "
                         "([CLS], a token of each text, a [SEP] after each)")
    encoded, y, cut, tokens, kept, unk = [], [], 0, 0, 0, 0
    for e in examples:
        a = tokenizer.encode(e.text_a)
        b = tokenizer.encode(e.text_b) if e.text_b is not None else []
        n, unk = len(a) + len(b), unk + a.count(tokenizer.unk_id) + b.count(tokenizer.unk_id)
        a, b = truncate_pair(a, b, max_seq_length - (3 if e.text_b is not None else 2))
        tokens, kept, cut = tokens + n, kept + len(a) + len(b), cut + (len(a) + len(b) < n)
        ids = [tokenizer.cls_id] + a + [tokenizer.sep_id]
        types = [0] * len(ids)
        if e.text_b is not None:
            ids += b + [tokenizer.sep_id]
            types += [1] * (len(b) + 1)
        encoded.append((ids, types))
        if regression:
            y.append(regression_target(e))
        elif labels is not None:
            if e.label not in labels:
                raise ValueError(f"{where(e)}: unknown label {e.label!r}; the model knows {sorted(labels)}")
            y.append(labels[e.label])
    report = EncodingReport(len(examples), cut, tokens, kept, unk)
    if not y:
        return encoded, None, report
    return encoded, np.array(y, np.float64 if regression else np.int64), report


def check_unk_share(report: EncodingReport, source) -> None:
    """Refuse a set whose text the model's vocabulary cannot spell (more than UNK_REFUSE of its tokens [UNK]):
    fine-tuning or scoring it would run on [UNK]s, and "succeed"."""
    if report.unk_share > UNK_REFUSE:
        raise ValueError(f"{source}: {report.unk_share:.0%} of its {report.tokens:,} tokens are [UNK]: the model's "
                         "vocabulary does not fit this text (another language or script?); use a model pretrained "
                         "on text like it")


def report_lines(report: EncodingReport, source, max_seq_length: int, always: bool = False) -> list[str]:
    """What encoding `source` cost, as lines: a warning when more than UNK_WARN of its tokens are [UNK]; a line
    for the examples that max_seq_length cut (how many, and the share of the set's tokens lost). always: that
    line also when nothing was cut, with the set's size and [UNK] share (fine-tuning says it of both its sets)."""
    lines = []
    if report.unk_share > UNK_WARN:
        lines.append(f"warning: {source}: {report.unk_share:.1%} of its {report.tokens:,} tokens are [UNK] (words "
                     "the model's vocabulary cannot spell)")
    size = f"{report.examples:,} examples, {report.tokens:,} tokens ([UNK] {report.unk_share:.1%}); " if always else ""
    if report.cut:
        lines.append(f"{source}: {size}{report.cut:,} of {report.examples:,} examples longer than {max_seq_length} "
                     f"tokens were cut, losing {report.lost_share:.1%} of the set's {report.tokens:,} tokens")
    elif always:
        lines.append(f"{source}: {size}none longer than {max_seq_length} tokens")
    return lines


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
    yield from batches_of(encoded, y, [order[s:s + batch_size] for s in range(0, len(order), batch_size)], pad_id,
                          multiple, max_len)


def batches_of(encoded: Sequence[Encoded], y: np.ndarray | None, index_batches: Iterable[np.ndarray], pad_id: int,
               multiple: int = 1, max_len: int | None = None
               ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]]:
    """Yield (indices, padded batch dict, labels or None) for each index array of `index_batches` (as
    buckets.train_batches or eval_batches cut them), in that order; T as pad_batch rounds it."""
    for idx in index_batches:
        yield idx, pad_batch([encoded[i] for i in idx], pad_id, multiple, max_len), (None if y is None else y[idx])
