import numpy as np
import pytest

from electra_np.data.labelled import batches, encode_examples, label_map, pad_batch, read_glue, read_tsv, truncate_pair
from electra_np.data.tokenizer import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film", "the", "is", ".", "##s"]


@pytest.fixture
def tok():
    return Tokenizer(VOCAB)


def write(tmp_path, text, name="data.tsv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_generic_tsv_pairs_and_labels(tmp_path, tok):
    p = write(tmp_path, "premise\thypothesis\tgold\nthe film is good\ta film\tyes\nbad films\tthe film\tno\n")
    ex = read_tsv(p, "premise", "gold", text_b_column="hypothesis")
    assert [(e.text_a, e.text_b, e.label, e.line) for e in ex] == [
        ("the film is good", "a film", "yes", 2), ("bad films", "the film", "no", 3)]
    labels = label_map(ex)
    assert labels == {"no": 0, "yes": 1}
    enc, y = encode_examples(ex, tok, 16, labels)
    ids, types = enc[1]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "bad", "film", "##s", "[SEP]", "the", "film", "[SEP]"]
    assert types == [0, 0, 0, 0, 0, 1, 1, 1]
    assert y.tolist() == [1, 0]
    b = pad_batch(enc, tok.pad_id)
    assert b["input_ids"].shape == (2, 9) and b["attention_mask"].sum(1).tolist() == [9, 8]
    assert b["input_ids"][1, 8] == tok.pad_id and b["token_type_ids"][1, 8] == 0


def test_truncation_longest_first(tok):
    a, b = truncate_pair([1, 2, 3, 4, 5], [6, 7], 4)
    assert (a, b) == ([1, 2], [6, 7])
    ex = read_tsv.__globals__["Example"]("the film is good the film is good", None, "1", 2)
    enc, _ = encode_examples([ex], tok, 6, {"1": 0})
    assert len(enc[0][0]) == 6 and enc[0][0][-1] == tok.sep_id


def test_batches_cover_everything_once(tok):
    enc = [([2, 5, 3], [0, 0, 0])] * 7
    y = np.arange(7)
    seen = np.concatenate([lab for _, _, lab in batches(enc, y, 3, tok.pad_id, np.random.default_rng(0))])
    assert sorted(seen.tolist()) == list(range(7))


@pytest.mark.parametrize("text, kwargs, message", [
    ("a\tb\n1\t2\n3\n", {"header": False}, r"line 3: 1 columns where the file has 2 \(a ragged row\)"),
    ("", {}, "holds no examples"),
    ("sentence\tlabel\n", {}, "holds no examples"),
    ("sentence\tlabel\nok\t1\n", {"label_column": "gold"}, r"no column named 'gold' for the label"),
])
def test_bad_tsv(tmp_path, text, kwargs, message):
    p = write(tmp_path, text)
    header = "sentence" in text
    args = {"text_column": "sentence" if header else 0, "label_column": "label" if header else 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        read_tsv(p, **args)


def test_unknown_label_at_evaluation(tmp_path, tok):
    ex = read_tsv(write(tmp_path, "sentence\tlabel\ngood film\tmaybe\n"), "sentence", "label")
    with pytest.raises(ValueError, match=r"line 2: unknown label 'maybe'; the model knows \['0', '1'\]"):
        encode_examples(ex, tok, 16, {"0": 0, "1": 1})


def test_real_glue_files(shared_data, tok):
    sst = read_glue("sst2", shared_data / "en_sst2", "dev")
    assert len(sst) == 872 and label_map(sst) == {"0": 0, "1": 1}
    assert sum(e.label == "1" for e in sst) == 444
    cola = read_glue("cola", shared_data / "en_cola", "dev")
    assert len(cola) == 527 and sum(e.label == "0" for e in cola) == 162
    assert cola[0].text_a and cola[0].text_b is None
