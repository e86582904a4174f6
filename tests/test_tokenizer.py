"""Tokenizer tests: hand-written cases, error messages, build_vocab, and token-id parity with Hugging Face
(transformers' slow BertTokenizer and the tokenizers library) on real English and Chinese text."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from electra_np.data.tokenizer import SPECIAL_TOKENS, Tokenizer, basic_tokenize, build_vocab, load_vocab, save_vocab

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

WORDS = ["un", "##aff", "##able", "hello", "Hello", "world", "the", "sat", "on", "a", "##a", "[", "]", ",",
         "!", "mask", "我", "爱", "模", "型"]
VOCAB = list(SPECIAL_TOKENS) + WORDS


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(VOCAB)


# ---- basic tokenization (HF BasicTokenizer) ----

def test_punctuation_split():
    assert basic_tokenize("Hello, world! don't $5.00 a^b`c~d") == [
        "hello", ",", "world", "!", "don", "'", "t", "$", "5", ".", "00", "a", "^", "b", "`", "c", "~", "d"]
    # Unicode P* categories split; a math symbol (Sm) does not, but ASCII '+' does
    assert basic_tokenize("«quote»—dash… 640×480 a+b") == [
        "«", "quote", "»", "—", "dash", "…", "640×480", "a", "+", "b"]


def test_accents():
    text = "Héllo ÇA"
    assert basic_tokenize(text) == ["hello", "ca"]  # strip_accents follows do_lower_case
    assert basic_tokenize(text, do_lower_case=True, strip_accents=False) == ["héllo", "ça"]
    assert basic_tokenize(text, do_lower_case=False) == ["Héllo", "ÇA"]
    assert basic_tokenize(text, do_lower_case=False, strip_accents=True) == ["Hello", "CA"]
    # decomposed input is NFC-composed first (HF BasicTokenizer), so both spellings tokenize the same
    assert basic_tokenize("e\u0301te\u0301", do_lower_case=False) == ["\u00e9t\u00e9"]


def test_cjk_split():
    assert basic_tokenize("我爱NLP模型！") == ["我", "爱", "nlp", "模", "型", "！"]
    assert basic_tokenize("\U00020000x\uf900") == ["\U00020000", "x", "\u8c48"]  # ext. B; compat. ideograph
    assert basic_tokenize("ひらがな 한국어", do_lower_case=False) == ["ひらがな", "한국어"]  # not CJK ideographs
    assert basic_tokenize("ひらがな") == ["ひらかな"]  # accent stripping drops the dakuten, as in BERT uncased


def test_control_and_whitespace_chars():
    # NUL, U+FFFD, U+200B (Cf) and U+0085 (Cc) vanish; tab, U+3000 and U+00A0 (Zs) separate words
    assert basic_tokenize("a\x00b\ufffdc\u200bd\te\u3000f\u00a0g\x85h") == ["abcd", "e", "f", "gh"]
    assert basic_tokenize(" \n\t ") == []


def test_never_split_specials(tok):
    assert tok.tokenize("the [MASK] sat[SEP]on") == ["the", "[MASK]", "sat", "[SEP]", "on"]
    assert tok.tokenize("[mask]") == ["[", "mask", "]"]  # lowercase is not a special token
    assert tok.tokenize("[CLS][PAD] [UNK]") == ["[CLS]", "[PAD]", "[UNK]"]


# ---- WordPiece ----

def test_lowercasing_off():
    assert Tokenizer(VOCAB).tokenize("Hello hello") == ["hello", "hello"]
    assert Tokenizer(VOCAB, do_lower_case=False).tokenize("Hello hello HELLO") == ["Hello", "hello", "[UNK]"]


def test_wordpiece_continuations(tok):
    assert tok.tokenize("unaffable, hello!") == ["un", "##aff", "##able", ",", "hello", "!"]
    assert tok.tokenize("a" * 200) == ["a"] + ["##a"] * 199


def test_long_and_unmatchable_words_are_one_unk(tok):
    assert tok.tokenize("a" * 201) == ["[UNK]"]
    assert tok.tokenize("hello unaffablex world") == ["hello", "[UNK]", "world"]
    assert tok.tokenize("xunaffable") == ["[UNK]"]


def test_ids_encode_decode(tok):
    assert len(tok) == len(VOCAB) and tok.ids_to_tokens == VOCAB
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == frozenset(range(5))
    ids = tok.encode("Unaffable, hello!")
    assert ids == [5, 6, 7, 18, 8, 19]
    assert tok.decode([tok.cls_id] + ids + [tok.sep_id]) == "[CLS] unaffable , hello ! [SEP]"
    assert tok.convert_tokens_to_ids(["un", "nope"]) == [5, 1] and tok.convert_tokens_to_ids("##aff") == 6
    assert tok.convert_ids_to_tokens(np.array([5, 6])) == ["un", "##aff"]
    assert tok.convert_ids_to_tokens(np.int64(3)) == "[SEP]"
    with pytest.raises(ValueError, match="token id -1"):
        tok.convert_ids_to_tokens([-1])
    with pytest.raises(ValueError, match=f"token id {len(VOCAB)}"):
        tok.decode([len(VOCAB)])


def test_dict_vocab_and_specials_anywhere():
    assert Tokenizer({t: i for i, t in enumerate(VOCAB)}).encode("我爱模型") == [21, 22, 23, 24]
    with pytest.raises(ValueError, match="0..V-1"):
        Tokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 5})
    t = Tokenizer(["[PAD]", "a", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])  # google's vocab.txt puts [UNK] at 100
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 2, 3, 4, 5)


# ---- vocab files and their errors ----

def test_save_load_round_trip(tmp_path, tok):
    path = tmp_path / "vocab.txt"
    path.write_text("old contents\n")
    tok.save(path)
    assert path.read_bytes() == ("\n".join(VOCAB) + "\n").encode("utf-8")
    assert os.listdir(tmp_path) == ["vocab.txt"]  # the temporary file was renamed over the old one
    assert load_vocab(path) == VOCAB
    assert Tokenizer.from_file(path).encode("unaffable") == tok.encode("unaffable")
    path.write_bytes("\r\n".join(VOCAB).encode("utf-8"))  # CRLF, no final newline
    assert load_vocab(path) == VOCAB


def test_missing_special_tokens_refused(tmp_path):
    path = tmp_path / "no_mask.txt"
    save_vocab([t for t in VOCAB if t != "[MASK]"], path)
    with pytest.raises(ValueError, match=r"no_mask\.txt: missing special token\(s\) \[MASK\];"):
        Tokenizer.from_file(path)
    with pytest.raises(ValueError, match=r"missing special token\(s\) \[PAD\] \[UNK\];"):
        Tokenizer(VOCAB[2:])


def test_bad_vocab_files_refused(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("\n".join(VOCAB + ["world"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup\.txt: line 26: duplicate token 'world' \(first at line 11\)"):
        Tokenizer.from_file(path)
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"[PAD]\n[UNK]\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1\.txt: not valid UTF-8 at byte offset 15"):
        load_vocab(path)
    path = tmp_path / "empty_line.txt"
    path.write_text("[PAD]\n[UNK]\n\n[CLS]\n")
    with pytest.raises(ValueError, match=r"empty_line\.txt: line 3: invalid token ''"):
        load_vocab(path)
    with pytest.raises(ValueError, match=r"id 5: duplicate token '\[PAD\]' \(first at id 0\)"):
        Tokenizer(VOCAB[:5] + ["[PAD]"])
    with pytest.raises(ValueError, match="id 5: invalid token 'a\\\\nb'"):
        save_vocab(VOCAB[:5] + ["a\nb"], tmp_path / "never.txt")
    assert not (tmp_path / "never.txt").exists()


# ---- build_vocab ----

def test_build_vocab_small_corpus():
    # characters by count ('##e' 15, '##w' 15, '##o' 12, 'l' 12, ...), then merges: ('##o', '##w') and
    # ('l', '##o') tie at 12 and the pair of smaller ids goes first, so '##ow', then 'low' (12), '##er' (9), ...
    vocab = build_vocab(["low lower lowest", "newer wider low"] * 3, 60)
    assert vocab == list(SPECIAL_TOKENS) + [
        "##e", "##w", "##o", "l", "##r", "##d", "##i", "##s", "##t", "n", "w", "##ow", "low", "##er", "##ew",
        "##es", "##der", "##ider", "new", "wider", "lower", "lowes", "newer", "lowest"]
    # merging stops when no pair occurs min_frequency times: 'cd' occurs once
    assert build_vocab(["ab ab cd"], 100) == list(SPECIAL_TOKENS) + ["##b", "a", "##d", "c", "ab"]
    # too small for every character: the most frequent ones are kept
    assert build_vocab(["abc abd"], 7) == list(SPECIAL_TOKENS) + ["##b", "a"]
    # special tokens in the text are not learned; nothing else is there to learn
    assert build_vocab(["[MASK] [CLS]"], 100) == list(SPECIAL_TOKENS)


def test_build_vocab_arguments():
    messages = []
    build_vocab(["a b"], 10, progress=messages.append)
    assert messages and all(m.startswith("build_vocab: ") for m in messages)
    with pytest.raises(ValueError, match="vocab_size=4"):
        build_vocab(["a"], 4)
    with pytest.raises(TypeError, match="iterable of lines"):
        build_vocab("a b c", 10)


# ---- real text: build_vocab and parity with Hugging Face ----

@pytest.fixture(scope="module")
def corpora():
    if not DATA.is_dir():
        pytest.skip(f"shared data folder not found at {DATA}")

    def lines(rel):
        return (DATA / rel).read_text(encoding="utf-8").splitlines()

    gutenberg = lines("en_gutenberg/gutenberg_en.txt")
    sst2 = [row.split("\t")[0] for row in lines("en_sst2/train.tsv")[1:]]
    shopping = [row.split("\t")[2] for row in lines("zh_shopping_reviews/online_shopping_7cats.tsv")[1:]]
    hongloumeng = lines("zh_classics/hongloumeng.txt")
    train = gutenberg[10000:14000] + shopping[20000:24000] + hongloumeng[1000:1300]
    test = gutenberg[:2000] + sst2[:500] + shopping[:2000] + hongloumeng[:500]
    return train, test


@pytest.fixture(scope="module", params=[True, False], ids=["lower", "cased"])
def built(request, corpora, tmp_path_factory):
    lower = request.param
    vocab = build_vocab(corpora[0], 6000, do_lower_case=lower)
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    save_vocab(vocab, path)
    return lower, vocab, path


def test_build_vocab_real_text(built, corpora):
    lower, vocab, path = built
    train, _ = corpora
    assert len(vocab) == 6000 and vocab[:5] == list(SPECIAL_TOKENS)
    assert "the" in vocab and "##ing" in vocab and "。" in vocab and "红" in vocab
    assert ("The" in vocab) != lower and (all(t == t.lower() for t in vocab[5:]) == lower)
    assert load_vocab(path) == vocab
    tok = Tokenizer.from_file(path, do_lower_case=lower)
    ids = [i for line in train for i in tok.encode(line)]
    assert tok.unk_id not in ids  # every character of the training text is in the vocabulary


def test_parity_with_hf_slow_bert_tokenizer(built, corpora):
    pytest.importorskip("transformers")
    try:  # transformers >= 5 calls the Python tokenizer BertTokenizerLegacy; before, it was BertTokenizer
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as SlowBert
    except ImportError:
        from transformers import BertTokenizer as SlowBert
    lower, _, path = built
    ours = Tokenizer.from_file(path, do_lower_case=lower)
    slow = SlowBert(str(path), do_lower_case=lower)
    slow.wordpiece_tokenizer.max_input_chars_per_word = 200  # google-research/bert's limit; HF's is 100
    tricky = ["x[MASK]y the [CLS] [mask] [SEP][SEP]", "a\x00b\ufffdc\u200bd\te\u3000f\u00a0g\x85h\u2028i",
              "e\u0301te\u0301 Héllo ÇA İstanbul ß ﬁ Ⅻ ½", "\uf900\U00020000\U0002f800 ひらがな 한국어",
              "a" * 200, "a" * 201, "«quote» — dash… $5.00 ^`~| ##ab #", "[C\x00LS] [UNK]x", ""]
    texts = corpora[1] + tricky
    ids = [ours.encode(t) for t in texts]
    assert ids == [slow.convert_tokens_to_ids(slow.tokenize(t)) for t in texts]
    flat = [i for row in ids for i in row]
    assert flat.count(ours.unk_id) > 1000 and sum(ours.ids_to_tokens[i].startswith("##") for i in flat) > 10000


def test_parity_with_hf_tokenizers_wordpiece(built, corpora):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordPiece
    lower, _, path = built
    ours = Tokenizer.from_file(path, do_lower_case=lower)
    fast = tokenizers.Tokenizer(WordPiece.from_file(str(path), unk_token="[UNK]", max_input_chars_per_word=200))
    fast.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=lower)  # what BertWordPieceTokenizer sets
    fast.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    fast.add_special_tokens(list(SPECIAL_TOKENS))
    texts = corpora[1]  # tokenizers skips HF's NFC step, so this holds on NFC text such as these corpora
    assert [ours.encode(t) for t in texts] == [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]


def test_import_does_not_pull_in_hugging_face():
    code = ("import sys, electra_np.data.tokenizer; "
            "print(sorted(m for m in ('transformers', 'tokenizers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
