import argparse
import json

import numpy as np
import pytest

from electra_np.cli.finetune import FinetuneError, add_parsers
from electra_np.config import ElectraConfig
from electra_np.data.tokenizer import Tokenizer
from electra_np.params import discriminator_shapes, generator_shapes, init_params

WORDS = ["good", "bad", "film", "the", "plot", "was", "very", "a", "actor", "dull", "fine", "and"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def parse(*argv):
    p = argparse.ArgumentParser()
    add_parsers(p.add_subparsers(dest="cmd", required=True))
    return p.parse_args(argv)


def model_dir(tmp_path, arch="ElectraForPreTraining"):
    cfg = ElectraConfig(vocab_size=len(VOCAB), embedding_size=16, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    shapes = discriminator_shapes(cfg) if arch == "ElectraForPreTraining" else generator_shapes(cfg)
    d = tmp_path / arch
    d.mkdir()
    np.savez(d / "model.npz", **init_params(shapes, 0.02, 0))
    cfg.save_json(d / "config.json", architectures=[arch])
    Tokenizer(VOCAB).save(d / "vocab.txt")
    return d


def tsv(path, n, seed, label_names=("neg", "pos")):
    rng = np.random.default_rng(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        words = list(rng.choice(WORDS[2:], rng.integers(3, 8)))
        label = int(rng.random() < 0.5)
        words[rng.integers(len(words))] = "good" if label else "bad"
        rows.append(" ".join(words) + "\t" + label_names[label])
    path.write_text("\n".join(rows) + "\n")
    return path


def test_finetune_evaluate_predict(tmp_path):
    model = model_dir(tmp_path)
    train, dev = tsv(tmp_path / "train.tsv", 400, 0), tsv(tmp_path / "dev.tsv", 100, 1)
    out = tmp_path / "clf"
    a = parse("finetune", "--model", str(model), "--train", str(train), "--dev", str(dev), "--out_dir", str(out),
              "--epochs", "3", "--lr", "3e-3", "--batch_size", "16", "--layer_decay", "1.0")
    best = a.func(a, echo=lambda s: None)
    assert best["accuracy"] >= 0.95
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["label2id"] == {"neg": 0, "pos": 1} and (out / "model.npz").is_file()
    assert len((out / "history.jsonl").read_text().splitlines()) == 3
    a = parse("evaluate", "--model", str(out), "--data", str(dev))
    assert a.func(a, echo=lambda s: None)["accuracy"] == best["accuracy"]
    pred_out = tmp_path / "pred.tsv"
    a = parse("predict", "--model", str(out), "--data", str(dev), "--output", str(pred_out))
    probs = a.func(a, echo=lambda s: None)
    lines = pred_out.read_text().splitlines()
    assert lines[0] == "label\tp_neg\tp_pos" and len(lines) == 101
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    # an unknown label at evaluation time names its line
    (tmp_path / "odd.tsv").write_text("sentence\tlabel\ngood film\tpos\nbad film\tmeh\n")
    a = parse("evaluate", "--model", str(out), "--data", str(tmp_path / "odd.tsv"))
    with pytest.raises(ValueError, match="line 3: unknown label 'meh'"):
        a.func(a, echo=lambda s: None)


def test_refusals_write_nothing(tmp_path):
    gen = model_dir(tmp_path, "ElectraForMaskedLM")
    train = tsv(tmp_path / "train.tsv", 20, 0)
    out = tmp_path / "clf"
    a = parse("finetune", "--model", str(gen), "--train", str(train), "--dev", str(train), "--out_dir", str(out))
    with pytest.raises(FinetuneError, match="is a generator"):
        a.func(a, echo=lambda s: None)
    model = model_dir(tmp_path)
    (tmp_path / "ragged.tsv").write_text("sentence\tlabel\ngood film\t1\nbad\n")
    a = parse("finetune", "--model", str(model), "--train", str(tmp_path / "ragged.tsv"), "--dev", str(train),
              "--out_dir", str(out))
    with pytest.raises(ValueError, match="ragged.tsv, line 3"):
        a.func(a, echo=lambda s: None)
    a = parse("finetune", "--model", str(model), "--train", str(train), "--dev", str(train), "--out_dir", str(out),
              "--label_column", "gold")
    with pytest.raises(ValueError, match="no column named 'gold'"):
        a.func(a, echo=lambda s: None)
    (tmp_path / "empty.tsv").write_text("")
    a = parse("finetune", "--model", str(model), "--train", str(tmp_path / "empty.tsv"), "--dev", str(train),
              "--out_dir", str(out))
    with pytest.raises(ValueError, match="holds no examples"):
        a.func(a, echo=lambda s: None)
    assert not out.exists()
    a = parse("evaluate", "--model", str(model), "--data", str(train))
    with pytest.raises(FinetuneError, match="not a fine-tuned classifier"):
        a.func(a, echo=lambda s: None)
