"""A prepared folder (prepare.py writes it) read back: its meta, its splits as memory maps, and batches.

On disk (`out_dir/`): `train.ids.npy`, `train.types.npy`, `eval.ids.npy`, `eval.types.npy`
(shape (N, T), ids uint16 when the vocabulary has at most 65536 entries else int32, types
uint8), `vocab.txt` (one token per line, line number = id) and `meta.json` (the settings, the counts
and the sources it was made from; prepare_corpus's docstring lists its keys).

Reading checks what it reads: a meta.json that is not a JSON object, or a .npy file truncated, missing or of
another shape than meta.json says, is a one-line ValueError naming the file. The same module holds the checks a
run makes of a corpus before training on it: its share of [UNK] (check_unk_share, counted from the rows for a
folder prepared before meta.json recorded it) and the hash of its rows (content_sha256) that a resume compares.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .sources import CorpusSource, Spec
from .tokenizer import UNK_REFUSE, UNK_WARN, Tokenizer, vocab_sha256

FORMAT_NAME = "electra_np.pretraining_data"
FORMAT_VERSION = 1
META_NAME = "meta.json"
VOCAB_NAME = "vocab.txt"
SPLITS = ("train", "eval")
HASH_CHUNK_ROWS = 65536  # rows read at a time when hashing or counting a split


def ids_name(split: str) -> str:
    return f"{split}.ids.npy"


def types_name(split: str) -> str:
    return f"{split}.types.npy"


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object; one-line ValueError naming the file otherwise (damaged, edited)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable or not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(d).__name__}")
    return d


def load_meta(path: str | os.PathLike) -> dict:
    """The meta dict of a prepared folder; ValueError naming the file if `path` holds no prepared corpus, or a
    meta.json that is damaged (not JSON, not an object, missing a key every reader needs)."""
    meta_path = Path(path) / META_NAME
    if not meta_path.is_file():
        raise ValueError(f"no prepared corpus at {path} (missing {META_NAME}); run prepare_corpus first")
    meta = read_json_object(meta_path)
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} folder")
    missing = [k for k in ("max_seq_length", "vocab_size", "pad_id", "splits", "sources") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: damaged, it lacks {', '.join(missing)}; prepare the corpus again")
    return meta


def _split_rows(path, meta: dict, split: str) -> int:
    """The example count meta.json gives a split."""
    try:
        return int(meta["splits"][split]["examples"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{Path(path) / META_NAME}: damaged, it gives no example count for the {split} split; "
                         "prepare the corpus again") from None


def open_array(path: Path, shape: tuple[int, int], dtypes: tuple[str, ...]) -> np.ndarray:
    """A split's .npy file as a read-only memory map, checked against what meta.json says (rows, width, dtype):
    a truncated or replaced file is a one-line ValueError naming it, not a failure deep inside training."""
    try:
        array = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise ValueError(f"{path}: missing from the prepared corpus; prepare the corpus again") from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: damaged or truncated ({e}); prepare the corpus again") from None
    if array.shape != shape or array.dtype.name not in dtypes:
        raise ValueError(f"{path}: holds a {array.dtype.name} array of shape {array.shape} where meta.json says "
                         f"{shape}; the prepared corpus is damaged, prepare it again")
    return array


def is_prepared_for(out_dir: str | os.PathLike, inputs: Spec | Sequence[Spec], tokenizer: Tokenizer,
                    max_seq_length: int = 128, seed: int = 0, eval_fraction: float = 0.02,
                    split_sentences: bool = False) -> bool:
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
    return ([s.describe() for s in sources] == meta["sources"]
            and meta["vocab_sha256"] == vocab_sha256(tokenizer.ids_to_tokens)
            and meta["max_seq_length"] == max_seq_length and meta["seed"] == seed
            and meta["eval_fraction"] == eval_fraction and meta["split_sentences"] == split_sentences)


class PretrainingData:
    """One split of a prepared folder, opened as read-only memory maps.

    `ids` (N, T) and `types` (N, T) stay on disk; `batch(indices)` copies the rows it needs.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path, self.split = Path(path), split
        self.meta = load_meta(path)
        shape = (_split_rows(path, self.meta, split), self.meta["max_seq_length"])
        self.ids = open_array(self.path / ids_name(split), shape, ("uint16", "int32"))  # (N, T)
        self.types = open_array(self.path / types_name(split), shape, ("uint8",))  # (N, T)
        self.max_seq_length = self.meta["max_seq_length"]
        self.vocab_size = self.meta["vocab_size"]
        self.pad_id = self.meta["pad_id"]

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, indices) -> dict[str, np.ndarray]:
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

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
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

    def __iter__(self) -> "BatchSampler":
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


def content_sha256(folder: str | os.PathLike) -> str:
    """sha256 of every split's token ids and types (dtype, shape and rows; not the .npy headers), in SPLITS
    order: what the examples hold, so that a resume on a corpus whose counts match but whose text changed is
    refused (cache.data_fingerprint carries it)."""
    h = hashlib.sha256()
    for split in SPLITS:
        for name in (ids_name(split), types_name(split)):
            array = np.load(Path(folder) / name, mmap_mode="r")  # (N, T)
            h.update(f"{name} {array.dtype.str} {array.shape}\n".encode("ascii"))
            for i in range(0, len(array), HASH_CHUNK_ROWS):
                h.update(np.ascontiguousarray(array[i:i + HASH_CHUNK_ROWS]).tobytes())
    return h.hexdigest()


def corpus_unk(meta: dict, splits: Sequence[PretrainingData]) -> tuple[int, int]:
    """([UNK] tokens, text tokens) of a prepared corpus: meta.json's counts of the text read, or, for a folder
    prepared before they were recorded, counted over the examples' rows ([PAD], [CLS] and [SEP] left out)."""
    if meta.get("tokens_unk") is not None and meta.get("tokens_read") is not None:
        return int(meta["tokens_unk"]), int(meta["tokens_read"])
    unk = tokens = 0
    framing = [meta["pad_id"], meta.get("cls_id", -1), meta.get("sep_id", -1)]
    for data in splits:
        for i in range(0, len(data), HASH_CHUNK_ROWS):
            rows = np.asarray(data.ids[i:i + HASH_CHUNK_ROWS])  # (rows, T)
            unk += int((rows == meta.get("unk_id", -1)).sum())
            tokens += int((~np.isin(rows, framing)).sum())
    return unk, tokens


def check_unk_share(unk: int, tokens: int, where, limit: float = UNK_REFUSE) -> None:
    """Refuse a corpus whose text the vocabulary cannot spell: more than `limit` of its tokens [UNK] (a
    vocabulary of another language or script, or a near-empty one). Pretraining on it "succeeds" and learns
    nothing; the fix is a vocabulary learned from the text itself."""
    if tokens and unk / tokens > limit:
        raise ValueError(f"{where}: {unk / tokens:.0%} of the corpus's {tokens:,} tokens are [UNK]: the vocabulary "
                         "does not fit this text; build a vocabulary from this text (electra-np build-vocab, or "
                         "omit --vocab)")


def unk_summary(meta: dict) -> str:
    """"[UNK] 0.3% of the text's 12,345 tokens", for a summary line ("" for a folder prepared before it was
    counted)."""
    unk, read = meta.get("tokens_unk"), meta.get("tokens_read")
    if unk is None or not read:
        return ""
    return f"[UNK] {unk / read:.1%} of the text's {read:,} tokens"


TRUNCATION_WARN = 0.10  # a prepared corpus that lost more than this share of its tokens to packing is reported


def held_out_share_is_far(held: float, asked: float) -> bool:
    """A held-out share of the examples far from the eval_fraction asked: over twice it (and a point), or under
    half of it. prepare.py then holds out examples instead of whole documents."""
    return held > 2 * asked + 0.01 or held < asked / 2


def preparation_warnings(meta: dict) -> list[str]:
    """What a prepared corpus lost or did without a word, as lines: a warning, naming the fix, for a share of
    [UNK] above UNK_WARN, for the tokens cut off by packing (lines longer than an example) and for a held-out
    share far from the one asked (a folder prepared before prepare.py held out examples in that case); a note
    when the examples were split instead of the documents (a corpus of a few, or very uneven, documents)."""
    warnings = []
    read, packed, unk = meta.get("tokens_read"), meta.get("tokens_packed"), meta.get("tokens_unk")
    if unk is not None and read and unk / read > UNK_WARN:
        warnings.append(f"warning: {unk / read:.1%} of the corpus's {read:,} tokens are [UNK] (words the vocabulary "
                        "cannot spell): a vocabulary built from this text fits it better (electra-np build-vocab, "
                        "or omit --vocab)")
    if read and (read - packed) / read > TRUNCATION_WARN:
        hint = ("use --split_sentences (its lines are paragraphs)" if not meta.get("split_sentences") else
                "its sentences are longer than an example: use a longer --seq_len")
        warnings.append(f"warning: packing cut off {(read - packed) / read:.0%} of the corpus's {read:,} tokens (lines "
                        f"longer than the {meta['max_seq_length']}-token examples lose their ends); {hint}")
    asked, splits = meta.get("eval_fraction", 0.0), meta.get("splits", {})
    total = sum(s["examples"] for s in splits.values())
    n_held = splits.get("eval", {}).get("examples", 0)
    held = n_held / total if total else 0.0
    if meta.get("held_out_by") == "examples":
        warnings.append(f"note: held out the last {n_held:,} of the {total:,} examples ({held:.1%}; {asked:.1%} asked) "
                        f"rather than whole documents: the corpus's {meta.get('documents')} document(s) are too few "
                        "or too uneven for that share")
    elif asked and held_out_share_is_far(held, asked):
        warnings.append(f"warning: {held:.0%} of the examples are held out where {asked:.0%} was asked: this folder "
                        f"holds out whole documents, of which the corpus has {meta.get('documents')}; prepare it "
                        "again (a cached one: delete it) and the examples are split instead")
    return warnings
