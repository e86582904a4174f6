import argparse
import json

import numpy as np
import pytest

from electra_np.cli.finetune import FinetuneError, add_parsers
from electra_np.cli.main import main
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
    assert lines[0] == "text\tlabel\tp_neg\tp_pos" and len(lines) == 101
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


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A classifier fine-tuned through the command line on a GLUE SST-2-style file (--task sst2)."""
    tmp = tmp_path_factory.mktemp("clf")
    model = model_dir(tmp)
    train, dev = tsv(tmp / "train.tsv", 400, 0), tsv(tmp / "dev.tsv", 60, 1)
    out = tmp / "clf"
    code = main(["finetune", "--model", str(model), "--task", "sst2", "--train", str(train), "--dev", str(dev),
                 "--out_dir", str(out), "--epochs", "3", "--lr", "3e-3", "--batch_size", "16", "--layer_decay", "1.0"])
    assert code == 0
    return out, dev


def predictions(text):
    rows = [line.split("\t") for line in text.splitlines()]
    return rows[0], rows[1:]


def test_commands_exit_0_on_success_and_2_on_bad_input(classifier, tmp_path, capsys):
    out, dev = classifier
    assert main(["evaluate", "--model", str(out), "--data", str(dev)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", "--model", str(out), "--data", str(dev), "--output", str(tmp_path / "p.tsv")]) == 0
    assert main(["evaluate", "--model", str(out), "--data", str(tmp_path / "absent.tsv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent.tsv" in err and "Traceback" not in err
    assert main(["predict", "--model", str(dev.parent), "--data", str(dev)]) == 2  # not a classifier
    assert "not a fine-tuned classifier" in capsys.readouterr().err


def test_predict_reads_plain_text_stdin_and_text_only_tsv(classifier, tmp_path, capsys, monkeypatch):
    out, _ = classifier
    texts = ["the film was very good", "the plot was bad", "fine"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")  # a blank line is no text
    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "texts.txt")]) == 0
    header, rows = predictions(capsys.readouterr().out)
    assert header == ["text", "label", "p_neg", "p_pos"] and [r[0] for r in rows] == texts
    probs = np.array([[float(x) for x in r[2:]] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1, atol=3e-6)
    assert [r[1] for r in rows] == [("neg", "pos")[int(p.argmax())] for p in probs]
    assert rows[0][1] == "pos" and rows[1][1] == "neg"  # the words that decide the label in training

    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts)))
    assert main(["predict", "--model", str(out), "--data", "-"]) == 0
    assert predictions(capsys.readouterr().out)[1] == rows  # the same numbers from standard input

    (tmp_path / "one_column.tsv").write_text("".join(t + "\n" for t in texts))  # no header, no label column
    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "one_column.tsv"), "--no_header",
                 "--text_column", "0"]) == 0
    assert predictions(capsys.readouterr().out)[1] == rows
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "empty.txt")]) == 2
    assert "no text to label" in capsys.readouterr().err


def test_help_shows_descriptions_and_defaults(capsys):
    for command in ("finetune", "evaluate", "predict"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "(default: " in text and len(text.split("options:")[0]) > 200, command  # a description above


def test_evaluate_and_predict_take_a_hugging_face_classifier_folder(tmp_path, capsys):
    """A classifier folder as transformers writes it (here: exported from ours) is read by evaluate and predict:
    label names from its config.json, the same probabilities as the folder it came from."""
    pytest.importorskip("safetensors")
    model = model_dir(tmp_path)
    train, dev = tsv(tmp_path / "train.tsv", 200, 0), tsv(tmp_path / "dev.tsv", 40, 1)
    ours, theirs = tmp_path / "clf", tmp_path / "clf-hf"
    assert main(["finetune", "--model", str(model), "--head", "hf", "--train", str(train), "--dev", str(dev),
                 "--out_dir", str(ours), "--epochs", "1", "--lr", "3e-3", "--batch_size", "16"]) == 0
    assert main(["export", str(ours), "--out", str(theirs)]) == 0
    assert not (theirs / "finetune.json").exists() and not (theirs / "model.npz").exists()
    capsys.readouterr()
    outputs = []
    for folder in (ours, theirs):
        assert main(["predict", "--model", str(folder), "--data", str(dev)]) == 0
        outputs.append(predictions(capsys.readouterr().out))
        assert main(["evaluate", "--model", str(folder), "--data", str(dev)]) == 0
        outputs.append(capsys.readouterr().out.split(" (")[0])
    assert outputs[0][0] == ["text", "label", "p_neg", "p_pos"] and outputs[0] == outputs[2]
    assert outputs[1] == outputs[3] and outputs[1].startswith("accuracy ")
