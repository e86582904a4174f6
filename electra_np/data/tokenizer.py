"""BERT/ELECTRA WordPiece tokenizer and a WordPiece vocabulary builder.

Tokenization is Hugging Face's Python BertTokenizer (BasicTokenizer + WordpieceTokenizer; BertTokenizerLegacy
in transformers 5), itself google-research/bert tokenization.py, which ELECTRA uses:
  1. split out the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] wherever they occur in the raw text
     (HF's added-token trie); they are never split, lowercased or stripped;
  2. clean: drop NUL, U+FFFD and control characters (category C*, except \\t \\n \\r); map whitespace
     (space, \\t, \\n, \\r, category Zs) to a space;
  3. put spaces around every CJK ideograph; NFC-normalize (HF, not google-research/bert); split on whitespace;
  4. per word: lowercase; strip accents (NFD, drop category Mn); split off every punctuation character;
  5. WordPiece: greedy longest-match-first with '##' continuations; a word longer than 200 characters
     (google-research/bert's limit; HF's is 100), or one the vocabulary cannot cover, becomes one [UNK].
tests/test_tokenizer.py holds the ids equal to that class's (max_input_chars_per_word=200) on English and
Chinese text, and to the tokenizers library's BertNormalizer + BertPreTokenizer + WordPiece, which agree
except that they skip the NFC step and the never-split check after cleaning.

build_vocab learns a vocabulary the way Hugging Face tokenizers' WordPieceTrainer does: BPE merges over
basic-tokenized words whose non-initial characters carry the '##' prefix. Its vocabulary always begins
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4 (HF BertTokenizer's default ids); then single characters; then merges.
"""

import hashlib
import heapq
import os
import re
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterable

from ..atomic import atomic_write_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # build_vocab gives them ids 0, 1, 2, 3, 4
MAX_WORD_CHARS = 200  # google-research/bert WordpieceTokenizer.max_input_chars_per_word
MAX_TRAIN_WORDS = 200_000  # build_vocab learns merges from at most this many most frequent distinct words
COUNT_CHUNK_CHARS = 1 << 20  # build_vocab basic-tokenizes this many characters of lines at a time
UNK_WARN = 0.05  # text with more of its tokens [UNK] than this is warned about (prepared corpora, fine-tuning sets)
UNK_REFUSE = 0.5  # and refused above this: the vocabulary does not fit the text
_SPECIAL_SET = frozenset(SPECIAL_TOKENS)
_SPECIAL_RE = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")
_WORD_CACHE_SIZE = 1 << 17


# Character classes, as HF's _is_whitespace/_is_control/_is_punctuation (transformers tokenization_utils) and
# BasicTokenizer._is_chinese_char (google-research/bert tokenization.py).
def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)  # every non-letter, non-digit ASCII character counts, as do Unicode categories P*
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _clean(ch: str) -> str | None:
    """BasicTokenizer._clean_text followed by _tokenize_chinese_chars, for one character."""
    if ch in "\x00\ufffd" or _is_control(ch):
        return None
    if _is_whitespace(ch):
        return " "
    return f" {ch} " if _is_cjk(ord(ch)) else ch


class _CharMap(dict):
    """A str.translate table that applies `rule` to each new character once, then remembers the answer."""

    def __init__(self, rule: Callable[[str], str | None]):
        super().__init__()
        self.rule = rule

    def __missing__(self, cp: int) -> str | None:
        out = self[cp] = self.rule(chr(cp))
        return out


_CLEAN = _CharMap(_clean)
_DROP_MN = _CharMap(lambda ch: None if unicodedata.category(ch) == "Mn" else ch)
_SPACE_PUNCT = _CharMap(lambda ch: f" {ch} " if _is_punctuation(ch) else ch)


def basic_tokenize(text: str, do_lower_case: bool = True, strip_accents: bool | None = None) -> list[str]:
    """Steps 1-4 above: HF BasicTokenizer.tokenize(text, never_split=SPECIAL_TOKENS), after the trie split.

    strip_accents=None follows do_lower_case, as in HF. Special tokens come back as words of their own.
    """
    if strip_accents is None:
        strip_accents = do_lower_case
    words = []
    for i, piece in enumerate(_SPECIAL_RE.split(text)):
        if i % 2:  # odd pieces of a capturing split are the special tokens themselves
            words.append(piece)
            continue
        for word in unicodedata.normalize("NFC", piece.translate(_CLEAN)).split():
            if word in _SPECIAL_SET:  # never_split, e.g. "[C\x00LS]" after cleaning
                words.append(word)
                continue
            if do_lower_case:
                word = word.lower()
            if strip_accents:
                word = unicodedata.normalize("NFD", word).translate(_DROP_MN)
            words.extend(word.translate(_SPACE_PUNCT).split())
    return words


class Tokenizer:
    """BERT WordPiece tokenizer: HF BertTokenizer (slow) with max_input_chars_per_word=200.

    Inputs: vocab, a list of tokens (id = position) or a dict token -> id with ids 0..V-1; it must hold
    all five special tokens, at any ids. do_lower_case, strip_accents as in HF: True or False (strip_accents None
    follows lowercasing).
    The vocabulary is read-only after construction: tokenize caches the wordpieces of each word it sees.
    """

    def __init__(self, vocab: list[str] | dict[str, int], do_lower_case: bool = True,
                 strip_accents: bool | None = None):
        if isinstance(vocab, dict):
            tokens = sorted(vocab, key=vocab.__getitem__)
            if [vocab[t] for t in tokens] != list(range(len(tokens))):
                raise ValueError("vocabulary dict: ids must be exactly 0..V-1, each used once")
        else:
            tokens = list(vocab)
        self.vocab: dict[str, int] = _check_tokens(tokens, "vocabulary", unit="id", require_specials=True)
        self.ids_to_tokens: list[str] = tokens
        _check_flags(do_lower_case, strip_accents)
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self._max_piece_chars = max(map(len, tokens))  # no piece matches more characters than this
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike, do_lower_case: bool = True,
                  strip_accents: bool | None = None) -> "Tokenizer":
        """Read a BERT vocab.txt: one token per line, id = line number - 1."""
        tokens = load_vocab(path)
        _check_tokens(tokens, str(path), unit="line", require_specials=True)
        return cls(tokens, do_lower_case=do_lower_case, strip_accents=strip_accents)

    def save(self, path: str | os.PathLike) -> None:
        """Write vocab.txt atomically (HF BertTokenizer.save_vocabulary format)."""
        save_vocab(self.ids_to_tokens, path)

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    pad_id = property(lambda self: self.vocab[PAD])
    unk_id = property(lambda self: self.vocab[UNK])
    cls_id = property(lambda self: self.vocab[CLS])
    sep_id = property(lambda self: self.vocab[SEP])
    mask_id = property(lambda self: self.vocab[MASK])

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self.vocab[t] for t in SPECIAL_TOKENS)

    def tokenize(self, text: str) -> list[str]:
        """Text -> wordpieces (no [CLS]/[SEP] added)."""
        out = []
        for word in basic_tokenize(text, self.do_lower_case, self.strip_accents):
            if word in _SPECIAL_SET:
                out.append(word)
                continue
            pieces = self._cache.get(word)
            if pieces is None:
                if len(self._cache) >= _WORD_CACHE_SIZE:
                    self._cache.clear()
                pieces = self._cache[word] = self._wordpiece(word)
            out.extend(pieces)
        return out

    def _wordpiece(self, word: str) -> list[str]:
        """HF WordpieceTokenizer.tokenize for one word: greedy longest-match-first, else a single [UNK]."""
        if len(word) > MAX_WORD_CHARS:
            return [UNK]
        pieces, start = [], 0
        while start < len(word):
            for end in range(min(len(word), start + self._max_piece_chars), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
            else:  # not even one character matched here: the whole word is unknown
                return [UNK]
            pieces.append(piece)
            start = end
        return pieces

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (no [CLS]/[SEP] added)."""
        return [self.vocab[t] for t in self.tokenize(text)]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Unknown tokens map to unk_id, as in HF."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_id)
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Ids (ints or NumPy integers) -> tokens; an id outside 0..V-1 is a ValueError."""
        if not hasattr(ids, "__iter__"):
            return self._id_to_token(ids)
        return [self._id_to_token(i) for i in ids]

    def _id_to_token(self, i) -> str:
        i = int(i)
        if not 0 <= i < len(self.ids_to_tokens):
            raise ValueError(f"token id {i} is outside the vocabulary (size {len(self.ids_to_tokens)})")
        return self.ids_to_tokens[i]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text: wordpieces joined by spaces, '##' continuations merged, specials kept (HF
        convert_tokens_to_string). Lowercasing, accents and the spaces around punctuation are not undone."""
        return " ".join(self.convert_ids_to_tokens(ids)).replace(" ##", "").strip()


def _check_flags(do_lower_case, strip_accents) -> None:
    """Refuse flags that are not True / False (strip_accents: or None): the string "no" from a settings file is
    true in Python, and would lowercase silently."""
    if not isinstance(do_lower_case, bool):
        raise ValueError(f"Tokenizer: do_lower_case must be True or False, got {do_lower_case!r} "
                         f"({type(do_lower_case).__name__})")
    if strip_accents is not None and not isinstance(strip_accents, bool):
        raise ValueError(f"Tokenizer: strip_accents must be True, False or None (follow do_lower_case), got "
                         f"{strip_accents!r} ({type(strip_accents).__name__})")


def _check_tokens(tokens: list, source: str, unit: str, require_specials: bool) -> dict[str, int]:
    """Token -> id, refusing empty, non-string, multi-line and repeated tokens (and, if asked, missing specials).

    unit="line" names positions as 1-based file lines, unit="id" as 0-based ids.
    """
    where = (lambda i: f"line {i + 1}") if unit == "line" else (lambda i: f"id {i}")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok or "\n" in tok or "\r" in tok:
            raise ValueError(f"{source}: {where(i)}: invalid token {tok!r} (need a non-empty one-line string)")
        if tok in vocab:
            raise ValueError(f"{source}: {where(i)}: duplicate token {tok!r} (first at {where(vocab[tok])})")
        vocab[tok] = i
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if require_specials and missing:
        raise ValueError(f"{source}: missing special token(s) {' '.join(missing)}; "
                         f"a vocabulary must contain all of {' '.join(SPECIAL_TOKENS)}")
    return vocab


def load_vocab(path: str | os.PathLike) -> list[str]:
    """Read a BERT vocab.txt (UTF-8, one token per line, id = line number - 1) as HF load_vocab does,
    refusing bytes that are not UTF-8, empty lines and repeated tokens."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 at byte offset {err.start}") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # Python's universal newlines
    if lines[-1] == "":
        lines.pop()
    _check_tokens(lines, str(path), unit="line", require_specials=False)
    return lines


def save_vocab(tokens: Iterable[str], path: str | os.PathLike) -> None:
    """Write tokens one per line (UTF-8, LF) atomically (atomic.py): a reader never sees half a file."""
    tokens = list(tokens)
    _check_tokens(tokens, "save_vocab", unit="id", require_specials=False)
    atomic_write_text(path, "".join(t + "\n" for t in tokens))


def vocab_sha256(tokens: Iterable[str]) -> str:
    """The one fingerprint of a vocabulary (its tokens in id order): prepared corpora, run records and the
    corpus cache compare vocabularies by it."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def build_vocab(lines: Iterable[str], vocab_size: int, do_lower_case: bool = True, min_frequency: int = 2,
                progress: Callable[[str], object] | None = None) -> list[str]:
    """Learn a WordPiece vocabulary of at most vocab_size tokens (HF tokenizers' WordPieceTrainer, i.e. BPE
    with '##' continuations).

    Order: SPECIAL_TOKENS ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4); every character seen, as a word's
    first character ('a') and as a continuation ('##a'), most frequent first (the rarest are dropped only if
    they do not all fit); then merged tokens in the order learned. Merging stops at vocab_size or when no pair
    of adjacent pieces occurs min_frequency times. Words longer than MAX_WORD_CHARS are ignored (they
    tokenize to [UNK] anyway); merges are learned from the MAX_TRAIN_WORDS most frequent distinct words.
    Inputs: lines, an iterable of text lines (e.g. an open file); progress, e.g. print, gets status strings.
    Returns: the tokens, id = position.
    """
    if isinstance(lines, str):
        raise TypeError("build_vocab wants an iterable of lines, e.g. text.splitlines(), not one str")
    if vocab_size < len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens")
    report = progress or (lambda message: None)
    t0 = time.perf_counter()
    word_counts: Counter = Counter()
    chunk: list[str] = []
    chunk_chars = 0
    for line in lines:  # a chunk of lines per call, joined by '\n': they split the same way one by one
        chunk.append(line)
        chunk_chars += len(line)
        if chunk_chars >= COUNT_CHUNK_CHARS:
            word_counts.update(basic_tokenize("\n".join(chunk), do_lower_case))
            chunk, chunk_chars = [], 0
    word_counts.update(basic_tokenize("\n".join(chunk), do_lower_case))
    for tok in SPECIAL_TOKENS:
        word_counts.pop(tok, None)
    for word in [w for w in word_counts if len(w) > MAX_WORD_CHARS]:
        del word_counts[word]
    report(f"build_vocab: {len(word_counts)} distinct words ({time.perf_counter() - t0:.1f} s)")

    char_counts: Counter = Counter()
    for word, n in word_counts.items():
        char_counts[word[0]] += n
        for ch in word[1:]:
            char_counts["##" + ch] += n
    alphabet = sorted(char_counts, key=lambda t: (-char_counts[t], t))[:vocab_size - len(SPECIAL_TOKENS)]
    tokens = list(SPECIAL_TOKENS) + alphabet
    token_id = {t: i for i, t in enumerate(tokens)}
    report(f"build_vocab: {len(alphabet)} of {len(char_counts)} characters kept")

    words, freqs = [], []  # each word as piece ids: first character, then '##' continuations
    for word, n in word_counts.most_common(MAX_TRAIN_WORDS):
        pieces = [word[0]] + ["##" + ch for ch in word[1:]]
        if len(pieces) > 1 and all(p in token_id for p in pieces):
            words.append([token_id[p] for p in pieces])
            freqs.append(n)
    _learn_merges(words, freqs, tokens, token_id, vocab_size, min_frequency, report)
    report(f"build_vocab: {len(tokens)} tokens ({time.perf_counter() - t0:.1f} s)")
    return tokens


def _learn_merges(words: list[list[int]], freqs: list[int], tokens: list[str], token_id: dict[str, int],
                  vocab_size: int, min_frequency: int, report: Callable[[str], object]) -> None:
    """BPE: repeatedly merge the most frequent adjacent pair (ties: smallest ids), appending to tokens.

    Pair counts are kept incrementally: a merge revisits only the words that hold the pair. The heap may hold
    outdated counts; an entry is trusted only when it matches pair_count.
    """
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (word, n) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_count[pair] += n
            pair_words[pair].add(wi)
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    n_merges = 0
    while len(tokens) < vocab_size and heap:
        neg_n, pair = heapq.heappop(heap)
        n = pair_count.get(pair, 0)
        if n != -neg_n:  # outdated entry
            if n > 0:
                heapq.heappush(heap, (-n, pair))
            continue
        if n < min_frequency:
            break
        a, b = pair
        merged = tokens[a] + tokens[b][2:]  # b is never a word's first piece, so it starts with '##'
        m = token_id.get(merged)
        if m is None:  # the same string can arise from two different merges; it keeps its first id
            m = token_id[merged] = len(tokens)
            tokens.append(merged)
        grown = set()
        for wi in pair_words.pop(pair):
            old, n_word = words[wi], freqs[wi]
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and old[i] == a and old[i + 1] == b:
                    new.append(m)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            if len(new) == len(old):  # the word lost this pair to an earlier merge
                continue
            for p in zip(old, old[1:]):
                pair_count[p] -= n_word
            for p in zip(new, new[1:]):
                pair_count[p] += n_word
                pair_words[p].add(wi)
                if m in p:
                    grown.add(p)
            words[wi] = new
        pair_count.pop(pair, None)
        for p in grown:
            heapq.heappush(heap, (-pair_count[p], p))
        n_merges += 1
        if n_merges % 1000 == 0:
            report(f"build_vocab: {n_merges} merges, {len(tokens)} tokens")
