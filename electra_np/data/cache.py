"""The vocabulary and prepared-corpus caches in the user cache folder (default_corpus.cache_dir): a run on a
corpus learns its vocabulary and packs its examples once; later runs on the same unchanged files and
settings find them under a key of both.

    sources = corpus_sources(["my.txt"])                  # checked: exists, not empty, UTF-8 text
    tokenizer = vocab_for_corpus(sources, 8192)           # cache/vocab/vocab-8192-<key>.txt
    folder = prepared_data(sources, tokenizer, 128)       # cache/data/T128-<key>/
    train_data, eval_data, info = open_data(folder)

A file's key is its path, size and modification time (CorpusSource.describe): an edited file makes a new
cache entry.
"""

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .dataset import PretrainingData, check_unk_share, corpus_unk, is_prepared_for, load_meta
from .default_corpus import cache_dir, default_corpus_path
from .prepare import prepare_corpus
from .sources import CorpusSource
from .tokenizer import Tokenizer, build_vocab, load_vocab, vocab_sha256

KEY_CHARS = 16  # hex digits of a cache key
FINGERPRINT_KEYS = ("vocab_sha256", "max_seq_length", "seed", "eval_fraction", "split_sentences", "documents",
                    "lines", "splits")


class CorpusError(ValueError):
    """A corpus that cannot be used (no file given, a file missing): nothing was written."""


def corpus_sources(corpus: Sequence | None, echo=None) -> list[CorpusSource]:
    """The corpus files as CorpusSource objects, each checked (exists, not empty, UTF-8 text).
    corpus: a list of paths, or None for the embedded default corpus (default_corpus.py, which says through
    echo when it is gathered)."""
    specs = [str(default_corpus_path(echo))] if corpus is None else [str(c) for c in corpus]
    if not specs:
        raise CorpusError("no corpus file given")
    sources = []
    for spec in specs:
        try:
            source = CorpusSource(spec)
            source.scan()
        except FileNotFoundError as e:
            raise CorpusError(str(e)) from None
        sources.append(source)
    return sources


def corpus_lines(sources: Sequence[CorpusSource]) -> Iterator[str]:
    """Every non-blank line (or sentence) of the sources, in order."""
    for source in sources:
        for _, _, line in source.events():
            if line is not None:
                yield line


def cache_key(obj) -> str:
    """A short hash of a JSON-able description (files and settings): the name of a cache entry."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:KEY_CHARS]


def vocab_for_corpus(sources: Sequence[CorpusSource], vocab_size: int, lowercase: bool = True,
                     min_frequency: int = 2, echo: Callable[[str], object] | None = print) -> Tokenizer:
    """A WordPiece vocabulary learned from the sources (tokenizer.build_vocab), cached under a key of the
    files and the settings. Returns: a Tokenizer."""
    key = cache_key({"sources": [s.describe() for s in sources], "vocab_size": vocab_size, "lowercase": lowercase,
                     "min_frequency": min_frequency})
    path = cache_dir() / "vocab" / f"vocab-{vocab_size}-{key}.txt"
    if path.is_file():
        try:
            return Tokenizer(load_vocab(path), do_lower_case=lowercase)
        except ValueError:
            pass  # a damaged cache file: build again
    if echo:
        echo(f"building a {vocab_size}-token WordPiece vocabulary from {', '.join(str(s.path) for s in sources)} "
             f"(cached in {path.parent})")
    tokens = build_vocab(corpus_lines(sources), vocab_size, do_lower_case=lowercase, min_frequency=min_frequency)
    tokenizer = Tokenizer(tokens, do_lower_case=lowercase)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    return tokenizer


def source_specs(sources: Sequence[CorpusSource]) -> list[str]:
    """The sources as prepare_corpus inputs (`file`, or `file:column` for a TSV column)."""
    return [str(s.path) if s.column is None else f"{s.path}:{s.column}" for s in sources]


def prepared_data(sources: Sequence[CorpusSource], tokenizer: Tokenizer, seq_len: int, eval_fraction: float = 0.02,
                  split_sentences: bool = False, seed: int = 0,
                  echo: Callable[[str], object] | None = print) -> Path:
    """The corpus packed into examples (prepare.prepare_corpus), cached under a key of the files, the
    vocabulary and the settings. Returns: the prepared folder."""
    specs = source_specs(sources)
    key = cache_key({"sources": [s.describe() for s in sources], "vocab": vocab_sha256(tokenizer.ids_to_tokens),
                     "lowercase": tokenizer.do_lower_case, "seq_len": seq_len, "eval_fraction": eval_fraction,
                     "split_sentences": split_sentences, "seed": seed})
    folder = cache_dir() / "data" / f"T{seq_len}-{key}"
    if not is_prepared_for(folder, specs, tokenizer, seq_len, seed, eval_fraction, split_sentences):
        if echo:
            echo(f"preparing examples of {seq_len} tokens (cached in {folder})")
        prepare_corpus(specs, tokenizer, folder, max_seq_length=seq_len, seed=seed, eval_fraction=eval_fraction,
                       progress=False, overwrite=True, split_sentences=split_sentences)
    return folder


def data_fingerprint(meta: dict) -> dict:
    """What identifies a prepared corpus (its meta.json): resuming on other data is refused. The content hash
    (content_sha256) makes a corpus whose text changed while its counts did not another corpus; a folder
    prepared before the hash was recorded has none, and its fingerprint stays the one its runs recorded."""
    fingerprint = {k: meta.get(k) for k in FINGERPRINT_KEYS}
    if meta.get("content_sha256") is not None:
        fingerprint["content_sha256"] = meta["content_sha256"]
    return fingerprint


def open_data(folder) -> tuple[PretrainingData, PretrainingData, dict]:
    """(train split, eval split, data_info) of a prepared folder, which every pretraining run goes through:
    a corpus mostly [UNK] under its vocabulary (dataset.check_unk_share) is refused here whichever way it came
    (--data, --corpus with --vocab, a cache or a folder prepared before prepare refused it)."""
    meta = load_meta(folder)
    train_data, eval_data = PretrainingData(folder, "train"), PretrainingData(folder, "eval")
    check_unk_share(*corpus_unk(meta, (train_data, eval_data)), folder)
    return train_data, eval_data, {"fingerprint": data_fingerprint(meta), "folder": str(folder)}
