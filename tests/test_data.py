"""Pretraining data tests: the official ExampleBuilder packing rules (hand-worked cases and shares over
many examples), the on-disk format and its memmap round trip, determinism, the held-out split, exact
sampler resume, every bad-input case (and that nothing is written), the word cache, TSV input and the
embedded default corpus."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from electra_np.data import default_corpus as corpus
from electra_np.data import prepare
from electra_np.data.dataset import SPLITS, BatchSampler, PretrainingData, is_prepared_for
from electra_np.data.packing import ExampleBuilder, WordCachedEncoder, example_row
from electra_np.data.prepare import prepare_corpus

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3


class WordTokenizer:
    """Stand-in with electra_np.data.tokenizer.Tokenizer's interface: each lowercased whitespace word is one
    token ([UNK] if unknown), special tokens kept as they are; words with no letter or digit are dropped."""

    def __init__(self, vocab, do_lower_case=True):
        self.ids_to_tokens = list(vocab)
        self.vocab = {t: i for i, t in enumerate(self.ids_to_tokens)}
        self.do_lower_case = do_lower_case

    pad_id = property(lambda self: self.vocab["[PAD]"])
    unk_id = property(lambda self: self.vocab["[UNK]"])
    cls_id = property(lambda self: self.vocab["[CLS]"])
    sep_id = property(lambda self: self.vocab["[SEP]"])
    mask_id = property(lambda self: self.vocab["[MASK]"])
    special_ids = property(lambda self: frozenset(self.vocab[t] for t in SPECIALS))

    def __len__(self):
        return len(self.ids_to_tokens)

    def tokenize(self, text):
        words = [w if w in SPECIALS else w.lower() for w in text.split() if any(c.isalnum() for c in w)]
        return [w if w in self.vocab else "[UNK]" for w in words]

    def encode(self, text):
        return [self.vocab[t] for t in self.tokenize(text)]

    def decode(self, ids):
        return " ".join(self.ids_to_tokens[i] for i in ids)


def write_synthetic(path, n_docs=60, seed=0):
    """Documents of 5..40 lines of 1..30 words; word j of line l of document d is 'd{d}l{l}w{j}', so every
    token id says where it came from. Returns (tokenizer, {token id: (d, l, j)})."""
    rng = random.Random(seed)
    vocab, where, docs = list(SPECIALS), {}, []
    for d in range(n_docs):
        lines = []
        for ln in range(rng.randint(5, 40)):
            words = [f"d{d}l{ln}w{j}" for j in range(rng.randint(1, 30))]
            for j, w in enumerate(words):
                where[len(vocab)] = (d, ln, j)
                vocab.append(w)
            lines.append(" ".join(words))
        docs.append("\n".join(lines))
    Path(path).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return WordTokenizer(vocab), where


def split_row(ids, types):
    """Check one stored row's layout; return (A, B) content ids."""
    ids, types = list(ids), list(types)
    L = len(ids) - next((i for i, t in enumerate(reversed(ids)) if t != PAD), len(ids))
    assert ids[0] == CLS and L >= 3
    assert all(t == PAD for t in ids[L:]) and all(t == 0 for t in types[L:])
    first_sep = ids.index(SEP)
    assert all(t == 0 for t in types[:first_sep + 1])
    A, B = ids[1:first_sep], []
    if first_sep < L - 1:
        assert ids[L - 1] == SEP and all(t == 1 for t in types[first_sep + 1:L])
        B = ids[first_sep + 1:L - 1]
    assert len(A) >= 1 and SEP not in A + B and CLS not in A + B and PAD not in A + B
    return A, B


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    tok, where = write_synthetic(folder / "corpus.txt")
    meta = prepare_corpus([folder / "corpus.txt"], tok, folder / "prepared", max_seq_length=32, seed=7,
                          eval_fraction=0.1, progress=False)
    return folder, tok, where, meta


# ---- the official packing rules, worked by hand ----

class ScriptedRng:
    """random.Random stand-in returning scripted random() values and randint results."""

    def __init__(self, randoms, randints=()):
        self.randoms, self.randints = list(randoms), list(randints)

    def random(self):
        return self.randoms.pop(0)

    def randint(self, a, b):
        value = self.randints.pop(0)
        assert a <= value <= b
        return value


def run_lines(builder, lines):
    examples = [builder.add_line(line) for line in lines]
    return [e for e in examples if e is not None]


SIX_LINES = [[10 * i + k for k in range(3)] for i in range(1, 7)]  # six 3-token lines: 18 tokens >= 16


def test_two_segments_crossing_line_goes_to_b():
    # target 16: A's target is (16-3)//2 = 6; line 2 would make A 6, not < 6, and the coin says B (0.9)
    rng = ScriptedRng([0.5, 0.9, 0.9])  # not single; the crossing line's coin; keep target 16
    [(A, B)] = run_lines(ExampleBuilder(16, rng), SIX_LINES)
    assert A == SIX_LINES[0]
    assert B == SIX_LINES[1] + SIX_LINES[2] + SIX_LINES[3] + SIX_LINES[4][:1]  # cut to 16 - 3 - 3 = 10
    assert rng.randoms == []
    ids, n_type0 = example_row(A, B, CLS, SEP)
    assert len(ids) == 16 and n_type0 == 5


def test_two_segments_crossing_line_goes_to_a():
    rng = ScriptedRng([0.5, 0.2, 0.9])  # the coin (0.2 < 0.5) puts line 2 in A; line 3 cannot join A
    [(A, B)] = run_lines(ExampleBuilder(16, rng), SIX_LINES)
    assert A == SIX_LINES[0] + SIX_LINES[1]
    assert B == sum(SIX_LINES[2:], [])[:7]  # 16 - 6 - 3


def test_single_segment_and_short_target():
    rng = ScriptedRng([0.05, 0.01], randints=[7])  # 0.05 < 0.1: one segment; 0.01 < 0.05: next target 7
    builder = ExampleBuilder(16, rng)
    [(A, B)] = run_lines(builder, SIX_LINES)
    assert A == sum(SIX_LINES, [])[:14] and B == []  # cut to 16 - 2
    assert builder.target_length == 7
    rng.randoms = [0.5, 0.9]  # target 7: A's target (7-3)//2 = 2; the first line exceeds it alone
    [(A, B)] = run_lines(builder, SIX_LINES[:3])  # 3 + 3 >= 7 only after the third line
    assert (A, B) == (SIX_LINES[0], SIX_LINES[1] + SIX_LINES[2])
    assert builder.target_length == 16


def test_blank_line_flushes_and_empty_lines_are_skipped():
    rng = ScriptedRng([0.5, 0.9, 0.9])
    builder = ExampleBuilder(16, rng)
    assert builder.add_line(None) is None  # nothing accumulated: no example, no random draw
    assert builder.add_line([]) is None
    assert builder.add_line([5, 6]) is None
    assert builder.add_line([7]) is None
    # (16-3)//2 = 6: line 2 fits in A (2 + 1 < 6), so no coin is drawn
    assert builder.add_line(None) == ([5, 6, 7], [])
    assert rng.randoms == [0.9]


def test_shares_of_single_segment_and_short_target():
    # one-token lines: B is never empty unless the 10% draw forced one segment, and an example's content
    # length equals the target it was built for
    T, n_examples = 32, 20000
    builder = ExampleBuilder(T, random.Random(0))
    single = short = made = 0
    target = builder.target_length
    while made < n_examples:
        example = builder.add_line([9])
        if example is None:
            continue
        A, B = example
        assert len(A) + len(B) == min(target, T - 2 if not B else T - 3)
        single += not B
        short += target < T
        target = builder.target_length
        made += 1
    assert abs(single / n_examples - 0.10) < 0.01
    assert abs(short / n_examples - 0.05 * (T - 5) / (T - 4)) < 0.008  # randint(5, T) can also give T


# ---- a prepared synthetic corpus ----

def test_layout_and_order_of_content(synthetic):
    folder, tok, where, meta = synthetic
    T = 32
    for split in SPLITS:
        ids = np.load(folder / "prepared" / f"{split}.ids.npy")
        types = np.load(folder / "prepared" / f"{split}.types.npy")
        assert ids.dtype == np.uint16 and types.dtype == np.uint8 and ids.shape == types.shape
        assert ids.shape[1] == T and ids.shape[0] == meta["splits"][split]["examples"] > 0
        last = None  # (doc, line) of the last token of the previous example
        for row_ids, row_types in zip(ids, types):
            A, B = split_row(row_ids, row_types)
            pos = [where[t] for t in A + B]
            assert len({d for d, _, _ in pos}) == 1  # one document per example
            d, l0, j0 = pos[0]
            a, b = pos[:len(A)], pos[len(A):]
            assert j0 == 0 and a == sorted(a) and b == sorted(b)  # A starts with a whole line
            # segments hold whole lines in text order (only the tail of each can be cut), and B may
            # hold a line that comes before A's last one: a short line after the one that went to B
            # still joins A if it fits, as in the official code
            assert not {ln for _, ln, _ in a} & {ln for _, ln, _ in b}
            if b:
                assert b[0][2] == 0 and b[0][1] > l0
            if last is not None and last[0] == d:
                assert l0 > last[1]  # examples follow the text; no line is used twice
            last = (d, max(ln for _, ln, _ in pos))
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["eval"]["tokens"] == sum(
        int((np.load(folder / "prepared" / f"{s}.ids.npy") != PAD).sum()) for s in SPLITS)


def test_eval_split_is_the_trailing_documents(synthetic):
    folder, tok, where, meta = synthetic
    docs = {}
    for split in SPLITS:
        ids = np.load(folder / "prepared" / f"{split}.ids.npy")
        docs[split] = {where[t][0] for t in ids.ravel().tolist() if t in where}
    assert docs["eval"] and docs["train"] and max(docs["train"]) < min(docs["eval"])
    assert len(docs["eval"]) == meta["eval_documents"] == meta["splits"]["eval"]["documents"]
    assert len(docs["train"]) + len(docs["eval"]) == meta["documents"] == 60
    # the eval documents start in the last 10% of the bytes; the one before them does not
    text = (folder / "corpus.txt").read_bytes()
    starts = [0] + [i + 2 for i in range(len(text)) if text[i:i + 2] == b"\n\n"]
    first_eval = min(docs["eval"])
    assert starts[first_eval] >= 0.9 * len(text) > starts[first_eval - 1]


def uneven_corpus(path, lines_per_doc, seed=0):
    """Documents of the given numbers of lines (3..20 words each), every word a token of its own (d{d}l{l}w{j})."""
    rng = random.Random(seed)
    vocab, docs = list(SPECIALS), []
    for d, n in enumerate(lines_per_doc):
        lines = [" ".join(f"d{d}l{ln}w{j}" for j in range(rng.randint(3, 20))) for ln in range(n)]
        vocab += [w for line in lines for w in line.split()]
        docs.append("\n".join(lines))
    Path(path).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return WordTokenizer(vocab)


@pytest.mark.parametrize("lines_per_doc, fraction", [((4, 30, 400), 0.1), ((400, 30, 4), 0.3), ((250,), 0.05)],
                         ids=["the long one last", "the long one first", "one document"])
def test_few_uneven_documents_are_held_out_by_examples(tmp_path, lines_per_doc, fraction):
    """Whole documents would hold out ~93%, ~9% or nothing (a lone document) where 10%, 30% or 5% is asked: the
    last round(fraction * N) examples in text order are held out instead, and meta.json says so. The examples
    are those of an unsplit preparation (same seed), each in exactly one split."""
    tok = uneven_corpus(tmp_path / "c.txt", lines_per_doc)
    meta = prepare_corpus([tmp_path / "c.txt"], tok, tmp_path / "p", max_seq_length=32, eval_fraction=fraction,
                          progress=False)
    whole = prepare_corpus([tmp_path / "c.txt"], tok, tmp_path / "all", max_seq_length=32, eval_fraction=0,
                           progress=False)
    assert meta["held_out_by"] == "examples" and whole["held_out_by"] == "documents"
    ids = {s: np.load(tmp_path / "p" / f"{s}.ids.npy") for s in SPLITS}
    types = {s: np.load(tmp_path / "p" / f"{s}.types.npy") for s in SPLITS}
    N = len(ids["train"]) + len(ids["eval"])
    assert N == whole["splits"]["train"]["examples"] > 50
    assert len(ids["eval"]) == round(fraction * N) and abs(len(ids["eval"]) / N - fraction) <= 0.5 / N
    np.testing.assert_array_equal(np.concatenate([ids["train"], ids["eval"]]), np.load(tmp_path / "all" / "train.ids.npy"))
    np.testing.assert_array_equal(np.concatenate([types["train"], types["eval"]]),
                                  np.load(tmp_path / "all" / "train.types.npy"))
    rows = {s: {r.tobytes() for r in ids[s]} for s in SPLITS}
    assert not rows["train"] & rows["eval"] and len(rows["train"]) + len(rows["eval"]) == N  # no row twice
    tokens = {s: {t for t in ids[s].ravel().tolist() if t > SEP} for s in SPLITS}
    assert not tokens["train"] & tokens["eval"]  # every token is one word of the text: no line in both splits
    for s in SPLITS:
        docs = {tok.ids_to_tokens[t].split("l")[0] for t in tokens[s]}
        assert meta["splits"][s] == {"examples": len(ids[s]), "documents": len(docs),
                                     "tokens": int((ids[s] != PAD).sum()),
                                     "single_segment": int((types[s].max(1) == 0).sum())}
    assert meta["eval_documents"] == meta["splits"]["eval"]["documents"] and meta["documents"] == len(lines_per_doc)
    train, held_out = PretrainingData(tmp_path / "p", "train"), PretrainingData(tmp_path / "p", "eval")
    assert (len(train), len(held_out)) == (N - len(ids["eval"]), len(ids["eval"]))
    assert is_prepared_for(tmp_path / "p", [tmp_path / "c.txt"], tok, 32, 0, fraction)  # the cache finds it


def test_memmap_round_trip_and_batches(synthetic):
    folder, tok, where, meta = synthetic
    train = PretrainingData(folder / "prepared")
    assert isinstance(train.ids, np.memmap) and len(train) == meta["splits"]["train"]["examples"]
    idx = np.array([5, 0, len(train) - 1, 5])
    batch = train.batch(idx)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    for name, array in batch.items():
        assert array.dtype == np.int64 and array.shape == (4, 32), name
    ids = np.load(folder / "prepared" / "train.ids.npy")
    np.testing.assert_array_equal(batch["input_ids"], ids[idx])
    np.testing.assert_array_equal(batch["token_type_ids"], np.load(folder / "prepared" / "train.types.npy")[idx])
    np.testing.assert_array_equal(batch["attention_mask"], (ids[idx] != PAD).astype(np.int64))
    eval_data = PretrainingData(folder / "prepared", "eval")
    rows = np.concatenate([b["input_ids"] for b in eval_data.batches(7)])
    np.testing.assert_array_equal(rows, np.load(folder / "prepared" / "eval.ids.npy"))
    vocab = (folder / "prepared" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == tok.ids_to_tokens
    assert json.loads((folder / "prepared" / "meta.json").read_text()) == meta


def test_attention_mask_keeps_a_pad_token_inside_the_text(tmp_path):
    # a tokenizer may map the literal text "[PAD]" to pad_id; only the trailing padding is masked
    tok = WordTokenizer(SPECIALS + ["a", "b"])
    (tmp_path / "c.txt").write_text("a [PAD] b\n", encoding="utf-8")
    prepare_corpus(tmp_path / "c.txt", tok, tmp_path / "out", max_seq_length=8, eval_fraction=0, progress=False)
    batch = PretrainingData(tmp_path / "out").batch([0])
    assert batch["input_ids"][0].tolist() == [CLS, 5, PAD, 6, SEP, PAD, PAD, PAD]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]


def test_same_seed_same_bytes_and_chunking_does_not_matter(synthetic, tmp_path, monkeypatch):
    folder, tok, where, meta = synthetic
    monkeypatch.setattr(prepare, "CHUNK_ROWS", 7)  # many chunk writes and header rewrites
    again = prepare_corpus([folder / "corpus.txt"], tok, tmp_path / "again", max_seq_length=32, seed=7,
                           eval_fraction=0.1, progress=False)
    assert again == meta
    for name in ("train.ids.npy", "train.types.npy", "eval.ids.npy", "eval.types.npy", "meta.json"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / "prepared" / name).read_bytes(), name
    prepare_corpus([folder / "corpus.txt"], tok, tmp_path / "other", max_seq_length=32, seed=8,
                   eval_fraction=0.1, progress=False)
    assert (tmp_path / "other" / "train.ids.npy").read_bytes() != (folder / "prepared" / "train.ids.npy").read_bytes()


def test_progress_callback(synthetic, tmp_path, monkeypatch):
    folder, tok, where, meta = synthetic
    monkeypatch.setattr(prepare, "PROGRESS_INTERVAL", 0.0)
    reports = []
    prepare_corpus([folder / "corpus.txt"], tok, tmp_path / "p", max_seq_length=32, eval_fraction=0.1,
                   progress=reports.append)
    fractions = [r["fraction"] for r in reports]
    assert len(reports) > 100 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert reports[-1]["final"] and reports[-1]["lines"] == meta["lines"]
    assert reports[-1]["examples"] == sum(s["examples"] for s in meta["splits"].values())
    assert all(r["lines_per_s"] > 0 and r["eta"] >= 0 for r in reports[1:])


def test_progress_printed_to_stderr(synthetic, tmp_path, capsys):
    folder, tok, where, meta = synthetic
    prepare_corpus([folder / "corpus.txt"], tok, tmp_path / "p", max_seq_length=32, eval_fraction=0.1)
    err = capsys.readouterr().err
    assert "100.0%" in err and "lines/s" in err and "done in" in err


def test_overwrite_replaces_a_prepared_corpus(synthetic, tmp_path):
    folder, tok, where, meta = synthetic
    out = tmp_path / "out"
    prepare_corpus([folder / "corpus.txt"], tok, out, max_seq_length=32, eval_fraction=0.1, progress=False)
    before = (out / "train.ids.npy").read_bytes()
    with pytest.raises(ValueError, match="already holds a prepared corpus"):
        prepare_corpus([folder / "corpus.txt"], tok, out, max_seq_length=16, progress=False)
    assert (out / "train.ids.npy").read_bytes() == before
    new = prepare_corpus([folder / "corpus.txt"], tok, out, max_seq_length=16, eval_fraction=0.1,
                         progress=False, overwrite=True)
    assert new["max_seq_length"] == 16 and np.load(out / "train.ids.npy").shape[1] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def test_is_prepared_for(synthetic):
    folder, tok, where, meta = synthetic
    kwargs = dict(max_seq_length=32, seed=7, eval_fraction=0.1)
    assert is_prepared_for(folder / "prepared", [folder / "corpus.txt"], tok, **kwargs)
    assert not is_prepared_for(folder / "prepared", [folder / "corpus.txt"], tok, **{**kwargs, "seed": 8})
    assert not is_prepared_for(folder / "prepared", [folder / "corpus.txt"],
                               WordTokenizer(tok.ids_to_tokens[:-1]), **kwargs)
    assert not is_prepared_for(folder / "nowhere", [folder / "corpus.txt"], tok, **kwargs)


# ---- sampler ----

def test_sampler_resume_is_exact():
    sampler = BatchSampler(103, 8, seed=3)
    assert sampler.batches_per_epoch == 12
    for _ in range(30):  # into the third epoch
        next(sampler)
    state = json.loads(json.dumps(sampler.state()))
    assert state["epoch"] == 2 and state["position"] == 6
    expected = [next(sampler) for _ in range(20)]
    restored = BatchSampler.from_state(state)
    np.testing.assert_array_equal(np.stack([next(restored) for _ in range(20)]), np.stack(expected))
    other = BatchSampler(103, 8, seed=3)
    other.set_state(state)
    np.testing.assert_array_equal(next(other), expected[0])
    with pytest.raises(ValueError, match="n=103 but this sampler has n=104"):
        BatchSampler(104, 8, seed=3).set_state(state)


def test_sampler_epochs_are_permutations():
    sampler = BatchSampler(10, 4, seed=0, drop_last=False)
    epochs = [np.concatenate([next(sampler) for _ in range(3)]) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(10))
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled each epoch
    dropping = BatchSampler(10, 4, seed=0)
    assert [len(next(dropping)) for _ in range(3)] == [4, 4, 4]  # 2 per epoch, each full
    with pytest.raises(ValueError, match="larger than the 10 examples"):
        BatchSampler(10, 11)


# ---- bad input: a clear error, and nothing written ----

def assert_nothing_written(tmp_path, expected_names):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected_names)


def test_missing_file(tmp_path):
    tok = WordTokenizer(SPECIALS + ["a"])
    with pytest.raises(FileNotFoundError, match="corpus file not found: .*nope.txt"):
        prepare_corpus([tmp_path / "nope.txt"], tok, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="no corpus files"):
        prepare_corpus([], tok, tmp_path / "out", progress=False)
    assert_nothing_written(tmp_path, [])


@pytest.mark.parametrize("content, message", [
    (b"", "corpus file is empty"),
    (b"\n  \n\t\n", "has no text"),
    (b"some text\n\x00\x01\x02binary", r"binary file, not UTF-8 text \(NUL byte at line 2, byte offset 10\)"),
    (b"caf\xc3\xa9 ok\nline two\nbad \xff byte\n", r"not valid UTF-8 at line 3, byte offset 22 \(byte 0xff\)"),
    (b"\xef\xbb\xbfa\n\x80", r"not valid UTF-8 at line 2, byte offset 5"),
])
def test_bad_corpus_file(tmp_path, content, message):
    tok = WordTokenizer(SPECIALS + ["a"])
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        prepare_corpus([tmp_path / "bad.txt"], tok, tmp_path / "out" / "deeper", progress=False)
    assert "bad.txt" in str(info.value)
    assert_nothing_written(tmp_path, ["bad.txt"])


def test_corpus_too_small(tmp_path):
    tok = WordTokenizer(SPECIALS + ["a"])
    (tmp_path / "one_doc.txt").write_text("a a a\na a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 document"):
        prepare_corpus([tmp_path / "one_doc.txt"], tok, tmp_path / "out", progress=False)
    (tmp_path / "no_tokens.txt").write_text("... !!\n\n-- ?\n", encoding="utf-8")  # the stand-in drops these
    with pytest.raises(ValueError, match="corpus too small: 2 line"):
        prepare_corpus([tmp_path / "no_tokens.txt"], tok, tmp_path / "new" / "out", progress=False)
    (tmp_path / "tiny_eval.txt").write_text("a a a\n\n!!\n", encoding="utf-8")  # the held-out doc makes nothing
    with pytest.raises(ValueError, match="2 document\\(s\\) made 1 example\\(s\\), too few to hold any out"):
        prepare_corpus([tmp_path / "tiny_eval.txt"], tok, tmp_path / "out", progress=False)
    assert_nothing_written(tmp_path, ["one_doc.txt", "no_tokens.txt", "tiny_eval.txt"])
    meta = prepare_corpus([tmp_path / "one_doc.txt"], tok, tmp_path / "out", eval_fraction=0, progress=False)
    assert meta["splits"]["train"]["examples"] == 1 and meta["splits"]["eval"]["examples"] == 0
    assert PretrainingData(tmp_path / "out", "eval").ids.shape == (0, 128)


def test_bad_out_dir_and_settings(tmp_path):
    tok = WordTokenizer(SPECIALS + ["a"])
    (tmp_path / "c.txt").write_text("a a\n\na\n", encoding="utf-8")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and is not a prepared corpus"):
        prepare_corpus([tmp_path / "c.txt"], tok, tmp_path / "busy", progress=False, overwrite=True)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="max_seq_length"):
        prepare_corpus([tmp_path / "c.txt"], tok, tmp_path / "out", max_seq_length=4, progress=False)
    with pytest.raises(ValueError, match="eval_fraction"):
        prepare_corpus([tmp_path / "c.txt"], tok, tmp_path / "out", eval_fraction=1.0, progress=False)
    with pytest.raises(ValueError, match="no prepared corpus"):
        PretrainingData(tmp_path / "busy")
    assert_nothing_written(tmp_path, ["c.txt", "busy"])
    (tmp_path / "empty").mkdir()  # an empty folder is fine to fill
    prepare_corpus([tmp_path / "c.txt"], tok, tmp_path / "empty", progress=False)
    assert (tmp_path / "empty" / "meta.json").is_file()


# ---- word cache, TSV, real tokenizer ----

def test_word_cache_off_for_a_tokenizer_that_spans_spaces(synthetic, tmp_path):
    folder, tok, where, meta = synthetic

    class PairTokenizer(WordTokenizer):  # one token per pair of words: a space is not a boundary
        def encode(self, text):
            words = super().encode(text)
            return words[::2]

    pair = PairTokenizer(tok.ids_to_tokens)
    a = prepare_corpus([folder / "corpus.txt"], pair, tmp_path / "a", max_seq_length=32, progress=False)
    b = prepare_corpus([folder / "corpus.txt"], pair, tmp_path / "b", max_seq_length=32, progress=False,
                       cache_words=False)
    assert a["word_cache"] is False and a["splits"] == b["splits"]
    assert (tmp_path / "a" / "train.ids.npy").read_bytes() == (tmp_path / "b" / "train.ids.npy").read_bytes()


def test_word_cache_matches_the_real_tokenizer():
    tokenizer = pytest.importorskip("electra_np.data.tokenizer")
    text = ["Héllo, WORLD! café naïve [SEP]x y[MASK] 東京タワー tab\there a\u00a0b", "don't stop-believing ...",
            "\x07ctrl\u200bzero-width  double  space", "the end."] * 3
    tok = tokenizer.Tokenizer(tokenizer.build_vocab(text + ["hello world the end"] * 5, 120, min_frequency=1))
    encoder = WordCachedEncoder(tok)
    for line in text:
        assert encoder.encode(line) == tok.encode(line)
    assert encoder.enabled and encoder.cache


def test_tsv_documents_and_sentences(tmp_path):
    tok = WordTokenizer(SPECIALS + [f"w{i}" for i in range(10)])
    rows = ["id\tlabel\treview", "r1\tpos\tw1 w2 . w3 w4 !  w5 ? w6", "r2\tneg\t", "r3\tneg\tw7 w8 w9 w0"]
    (tmp_path / "r.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    meta = prepare_corpus([tmp_path / "r.tsv"], tok, tmp_path / "out", max_seq_length=64, eval_fraction=0.3,
                          progress=False)
    assert meta["documents"] == 2 and meta["lines"] == 5 and meta["sources"][0]["column"] == "review"
    train, held = PretrainingData(tmp_path / "out"), PretrainingData(tmp_path / "out", "eval")
    assert tok.decode(train.ids[0][train.ids[0] != PAD]).split()[0] == "[CLS]"
    assert [tok.decode(split_row(d.ids[0], d.types[0])[0] + split_row(d.ids[0], d.types[0])[1])
            for d in (train, held)] == ["w1 w2 w3 w4 w5 w6", "w7 w8 w9 w0"]
    (tmp_path / "r.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")  # path:column names the column
    meta = prepare_corpus([f"{tmp_path / 'r.txt'}:label"], tok, tmp_path / "out2", eval_fraction=0,
                          progress=False, max_unk_share=None)  # the toy vocabulary cannot spell pos/neg
    assert meta["sources"][0]["column"] == "label" and meta["documents"] == 3
    with pytest.raises(ValueError, match="no column 'stars'"):
        prepare_corpus([f"{tmp_path / 'r.tsv'}:stars"], tok, tmp_path / "out3", progress=False)
    (tmp_path / "n.tsv").write_text("a\tb\n1\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text column"):
        prepare_corpus([tmp_path / "n.tsv"], tok, tmp_path / "out3", progress=False)
    assert not (tmp_path / "out3").exists()


def test_split_sentences_keeps_more_text(synthetic, tmp_path):
    tok = WordTokenizer(SPECIALS + [f"w{i}" for i in range(40)])
    paragraph = " ".join(f"w{i} w{i + 1} w{i + 2}." for i in range(0, 36, 3))  # 12 sentences, 36 tokens
    (tmp_path / "p.txt").write_text((paragraph + "\n") * 20, encoding="utf-8")
    kwargs = dict(max_seq_length=16, eval_fraction=0, progress=False)
    whole = prepare_corpus([tmp_path / "p.txt"], tok, tmp_path / "whole", **kwargs)
    split = prepare_corpus([tmp_path / "p.txt"], tok, tmp_path / "split", split_sentences=True, **kwargs)
    assert whole["lines"] == 20 and split["lines"] == 240
    assert split["splits"]["train"]["tokens"] > 2 * whole["splits"]["train"]["tokens"]


# ---- the embedded default corpus ----

def test_default_corpus_is_real_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("ELECTRA_NP_CACHE", str(tmp_path / "cache"))
    built = corpus.default_corpus_documents()  # builds, then writes the cache
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert corpus.default_corpus_documents(use_cache=False) == built  # a second build gives the same
    assert corpus.default_corpus_documents() == built  # read back from the cache
    text = corpus.documents_to_text(built)
    assert len(text.encode("utf-8")) > 500_000 and len(built) > 100
    assert all(doc and all(line and line == line.strip() and "\n" not in line for line in doc) for doc in built)
    path = corpus.write_default_corpus(tmp_path / "default.txt")
    assert path.read_text(encoding="utf-8") == text
    assert any(doc[0] == 'The "assert" statement' for doc in built)  # a pydoc topic


def test_text_to_lines():
    text = "Title\n*****\n\n  First para\n  wraps here.\n\n\n>>> code(1)\n\u2028x\n"
    assert corpus.text_to_lines(text) == ["Title", "First para wraps here.", ">>> code(1)", "x"]


# ---- real data (skipped without ../shared/data) ----

def test_prepare_real_tsv_slice(tmp_path, shared_data):
    reviews = shared_data / "en_movie_reviews" / "reviews.tsv"
    if not reviews.is_file():
        pytest.skip(f"shared data file {reviews} is absent (the real corpora live in ../shared/data)")
    with open(reviews, encoding="utf-8") as f:
        head = [next(f) for _ in range(41)]
    (tmp_path / "reviews.tsv").write_text("".join(head), encoding="utf-8")
    words = sorted({w for line in head[1:] for w in line.split("\t")[4].split()})
    tok = WordTokenizer(SPECIALS + words)
    meta = prepare_corpus([tmp_path / "reviews.tsv"], tok, tmp_path / "out", progress=False)
    assert meta["documents"] == 40 and meta["sources"][0]["column"] == "text"
    assert meta["eval_documents"] >= 1 and meta["splits"]["eval"]["examples"] >= 1
    ids = np.load(tmp_path / "out" / "train.ids.npy")
    assert (ids == UNK).sum() == 0 and ids.shape[0] > 40


def test_split_sentences_at_chinese_and_japanese_full_stops(tmp_path):
    """--split_sentences splits English after . ! ? and whitespace, Chinese and Japanese after 。！？ (a closing
    quote stays with its sentence); CorpusSource yields one line per sentence."""
    from electra_np.data.sources import CorpusSource

    text = "我喜欢这本书。你呢？他说：“好。”然后走了！\nOne. Two! Three? e.g. four\n日本語です。次の文！\n"
    (tmp_path / "zh.txt").write_text(text, encoding="utf-8")
    lines = [line for _, _, line in CorpusSource(str(tmp_path / "zh.txt"), split_sentences=True).events()
             if line is not None]
    assert lines == ["我喜欢这本书。", "你呢？", "他说：“好。”", "然后走了！", "One.", "Two!", "Three?", "e.g.", "four",
                     "日本語です。", "次の文！"]
    whole = [line for _, _, line in CorpusSource(str(tmp_path / "zh.txt")).events() if line is not None]
    assert whole == text.strip().split("\n")


def test_the_first_gathering_of_the_default_corpus_is_announced(tmp_path, monkeypatch, capsys):
    """The default corpus is built once per Python (the first run's longest wait): a line says so first; a
    second command finds it cached and says nothing about it."""
    from electra_np.cli.main import main

    monkeypatch.setenv("ELECTRA_NP_CACHE", str(tmp_path / "cache"))
    docs = [["alpha beta gamma delta.", "epsilon zeta eta theta."], ["iota kappa lambda mu.", "nu xi omicron pi."]]
    monkeypatch.setattr(corpus, "build_default_corpus_documents", lambda: docs)
    for n, expected in ((1, True), (2, False)):
        assert main(["build-vocab", "--vocab_size", "40", "--min_frequency", "1", "--out", str(tmp_path / f"v{n}.txt")]) == 0
        out = capsys.readouterr().out
        assert ("gathering the default corpus" in out) is expected
        assert out.index("wrote") > (out.find("gathering") if expected else -1)


def test_packing_losses_and_a_lopsided_held_out_split_are_reported(tmp_path, capsys):
    """A corpus of long one-paragraph lines loses most of its tokens to packing, and a corpus of a few documents
    holds out examples instead of whole documents: `prepare` says both, the first with the fix; meta.json counts
    the tokens. A folder prepared before that, holding out far more than asked, gets a warning."""
    from electra_np.cli.main import main
    from electra_np.data.dataset import preparation_warnings
    from electra_np.data.tokenizer import Tokenizer

    words = [f"w{i}" for i in range(40)]
    tok = Tokenizer(SPECIALS + words)
    tok.save(tmp_path / "vocab.txt")
    rng = random.Random(0)
    docs = ["\n".join(" ".join(rng.choice(words) for _ in range(300)) for _ in range(3)) for _ in range(4)]
    (tmp_path / "long.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    assert main(["prepare", "--corpus", str(tmp_path / "long.txt"), "--vocab", str(tmp_path / "vocab.txt"),
                 "--out_dir", str(tmp_path / "p"), "--seq_len", "32", "--eval_fraction", "0.02"]) == 0
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["tokens_read"] == 4 * 3 * 300 and meta["tokens_packed"] < meta["tokens_read"] / 2
    lost = 1 - meta["tokens_packed"] / meta["tokens_read"]
    assert f"packing cut off {lost:.0%} of the corpus's 3,600 tokens" in out and "use --split_sentences" in out
    assert meta["held_out_by"] == "examples" and meta["splits"]["eval"]["examples"] == 1  # 2% of 12, at least 1
    assert "note: held out the last 1 of the 12 examples (8.3%; 2.0% asked) rather than whole documents: the " \
           "corpus's 4 document(s) are too few" in out
    assert preparation_warnings(meta) == [line for line in out.splitlines() if line.startswith(("warning: ", "note: "))]
    old = {**meta, "splits": {"train": {"examples": 9}, "eval": {"examples": 3}}}  # whole documents, as before
    del old["held_out_by"]
    assert "warning: 25% of the examples are held out where 2% was asked: this folder holds out whole documents, " \
           "of which the corpus has 4; prepare it again" in preparation_warnings(old)[-1]
    short = {**old, "tokens_packed": meta["tokens_read"], "eval_fraction": 0.25}  # nothing lost, share as asked
    assert preparation_warnings(short) == []
