"""Packing: tokenized lines -> `[CLS] A [SEP] B [SEP]` pretraining examples, as the official code does it.

Packing follows `ExampleBuilder` in google-research/electra `build_pretraining_dataset.py`:
  - input: one sentence or paragraph per line, a blank line (None here) between documents;
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

Tokenizing a line is what preparing a corpus spends its time on (benchmarks/RESULTS.md, the
`prepare_corpus` row, times both ways). WordCachedEncoder splits lines on ASCII spaces and encodes each
space-separated word once (`tokenizer.encode(word)`, cached); this equals `tokenizer.encode(line)` for
any tokenizer that treats a space as a hard token boundary (BERT's WordPiece does). The first lines are
encoded both ways and the cache is switched off if they ever differ.
"""

import random

from .tokenizer import Tokenizer

SINGLE_SEGMENT_PROB = 0.1  # official: random() < 0.1 -> first_segment_target_length = 100000
ONE_SEGMENT_TARGET = 100000  # A's target that no example reaches: everything goes to A
SHORT_TARGET_PROB = 0.05  # official: random() < 0.05 -> target_length = randint(5, max_length)
MIN_TARGET_LENGTH = 5
SPLIT_PROB = 0.5  # the line crossing A's target goes to A half of the time
WORD_CACHE_MAX = 500_000  # cached words; bounds memory on huge vocabularies of words
VERIFY_LINES = 1000  # lines encoded both ways to check the word cache


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

    def add_line(self, ids: list[int] | None) -> tuple[list[int], list[int]] | None:
        if ids is None:  # empty lines separate documents
            return self._create_example() if self._length != 0 else None
        if not ids:  # a line with no tokens changes nothing (and draws no random number)
            return None
        self._sentences.append(ids)
        self._length += len(ids)
        if self._length >= self.target_length:
            return self._create_example()
        return None

    def _create_example(self) -> tuple[list[int], list[int]]:
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


def example_row(first: list[int], second: list[int], cls_id: int, sep_id: int) -> tuple[list[int], int]:
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

    def __init__(self, tokenizer: Tokenizer, enabled: bool = True):
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
