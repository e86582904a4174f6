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
    assert main(["evaluate", "--model", str(out), "--data", str(dev), "--threads", "1"]) == 0
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


def test_evaluate_and_predict_unpadded_equal_the_padded_backend(classifier, tmp_path, capsys, monkeypatch):
    """evaluate and predict batch by length (buckets.eval_batches) and answer in the input's order: on sentences of
    1 to 25 words in no sorted order, the unpadded default gives the padded backend's probabilities, to 1e-6 in
    float32 and 1e-10 in float64, and the same labels and scores."""
    import shutil

    import electra_np.cli.finetune as cli_finetune

    out, _ = classifier
    out64 = tmp_path / "clf64"
    shutil.copytree(out, out64)
    np.savez(out64 / "model.npz", **{k: v.astype(np.float64) for k, v in npz(out).items()})
    rng = np.random.default_rng(7)
    n_words = rng.permutation(np.arange(1, 26).repeat(2))  # (50,) lengths, shuffled
    assert not (np.all(np.diff(n_words) >= 0) or np.all(np.diff(n_words) <= 0))
    texts = [" ".join(rng.choice(WORDS, n)) for n in n_words]
    data = tmp_path / "mixed.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{('neg', 'pos')[i % 2]}\n" for i, t in enumerate(texts)))
    seen = []

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    real = cli_finetune.predict_logits
    monkeypatch.setattr(cli_finetune, "predict_logits", spy)
    for folder, dtype, tol in ((out, np.float32, 1e-6), (out64, np.float64, 1e-10)):
        files, scores = {}, {}
        for backend in ("fast", "fast-padded"):
            files[backend] = tmp_path / f"{backend}.tsv"
            assert main(["predict", "--model", str(folder), "--data", str(data), "--output", str(files[backend]),
                         "--batch_size", "4", "--backend", backend, "--threads", "1"]) == 0
            capsys.readouterr()
            assert main(["evaluate", "--model", str(folder), "--data", str(data), "--batch_size", "4",
                         "--backend", backend, "--threads", "1"]) == 0
            scores[backend] = capsys.readouterr().out
        (unpadded, padded) = seen[-2:]
        assert unpadded.dtype == padded.dtype == dtype
        probs = [np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
                 for z in (unpadded, padded)]
        np.testing.assert_allclose(probs[0], probs[1], rtol=0, atol=tol)
        rows = [predictions(f.read_text())[1] for f in files.values()]
        assert [r[0] for r in rows[0]] == texts  # the input's order
        assert [r[1] for r in rows[0]] == [r[1] for r in rows[1]]
        assert scores["fast"] == scores["fast-padded"]


def test_help_shows_descriptions_and_defaults(capsys):
    for command in ("finetune", "evaluate", "predict"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "(default: " in text and len(text.split("options:")[0]) > 200, command  # a description above


def test_evaluate_and_predict_take_a_hugging_face_classifier_folder(hf_classifier, capsys):
    """A classifier folder as transformers writes it (here: exported from ours) is read by evaluate and predict:
    label names from its config.json, the same probabilities as the folder it came from."""
    ours, theirs, _, dev = hf_classifier
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


# ----------------------------------------------------------------------------- fine-tuning a classifier further

def swapped_labels(src, dst):
    """A copy of classifier `src` whose label ids are swapped (pos 0, neg 1), its head rows with them: the same
    classifier, its labels in another order."""
    import shutil

    shutil.copytree(src, dst)
    d = json.loads((dst / "config.json").read_text())
    d.update(label2id={"pos": 0, "neg": 1}, id2label={"0": "pos", "1": "neg"})
    (dst / "config.json").write_text(json.dumps(d))
    with np.load(src / "model.npz") as z:
        params = {k: z[k][::-1].copy() if k.startswith("classifier.") else z[k] for k in z.files}
    np.savez(dst / "model.npz", **params)
    return dst


def npz(folder):
    with np.load(folder / "model.npz") as z:
        return {k: z[k] for k in z.files}


def test_finetune_continues_a_classifiers_head_matching_labels_by_name(classifier, tmp_path, capsys):
    """--model a classifier whose label names are the data's: its head is trained on (at lr 1e-9 the classifier
    stays what it was: the same probabilities), label ids by name, not position; one line says so."""
    out, dev = classifier
    swapped = swapped_labels(out, tmp_path / "swapped")
    more = tmp_path / "more"
    capsys.readouterr()
    assert main(["finetune", "--model", str(swapped), "--task", "sst2", "--train", str(dev), "--dev", str(dev),
                 "--out_dir", str(more), "--epochs", "1", "--lr", "1e-9", "--batch_size", "16"]) == 0
    text = capsys.readouterr().out
    assert f"continuing the classifier head of {swapped} (labels: pos, neg)\n" in text and "fresh" not in text
    assert json.loads((more / "config.json").read_text())["label2id"] == {"pos": 0, "neg": 1}
    assert json.loads((more / "finetune.json").read_text())["recipe"]["head"] == "official"
    before, after = npz(swapped), npz(more)
    assert set(before) == set(after)
    for k in before:
        np.testing.assert_allclose(after[k], before[k], atol=1e-6, err_msg=k)
    probs = {}
    for folder in (out, more):
        a = parse("predict", "--model", str(folder), "--data", str(dev), "--output", str(tmp_path / "p.tsv"))
        probs[folder] = a.func(a, echo=lambda s: None)  # columns in label id order
    np.testing.assert_allclose(probs[more][:, ::-1], probs[out], atol=1e-5)  # pos, neg <- neg, pos
    assert main(["evaluate", "--model", str(more), "--data", str(dev)]) == 0
    accuracy = float(capsys.readouterr().out.split()[1])
    assert accuracy >= 0.95  # what the classifier had learnt, kept: a fresh head would start from chance


def test_finetune_draws_a_fresh_head_when_labels_or_head_differ(classifier, tmp_path, capsys):
    """Other label names, or another --head: a fresh head (the one init_classifier draws for the seed) on the
    classifier's encoder, with a line saying why."""
    from electra_np.classification import init_classifier

    out, dev = classifier
    other = tsv(tmp_path / "other.tsv", 60, 2, label_names=("bad", "good"))
    capsys.readouterr()
    assert main(["finetune", "--model", str(out), "--train", str(other), "--dev", str(other), "--out_dir",
                 str(tmp_path / "a"), "--epochs", "1", "--lr", "1e-9", "--batch_size", "16"]) == 0
    assert (f"drawing a fresh official classifier head instead of continuing the one of {out}: its labels are not "
            "the training data's (only in the model: neg, pos; only in the training data: bad, good)\n"
            in capsys.readouterr().out)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["label2id"] == {"bad": 0, "good": 1}
    source, got = npz(out), npz(tmp_path / "a")
    config = ElectraConfig.from_json(out / "config.json")
    fresh = init_classifier(source, config, 2, "official", seed=0)
    for k in fresh:
        np.testing.assert_allclose(got[k], fresh[k], atol=1e-6, err_msg=k)  # the encoder kept, the head new
    assert not np.allclose(fresh["classifier.weight"], source["classifier.weight"], atol=1e-3)

    assert main(["finetune", "--model", str(out), "--task", "sst2", "--train", str(dev), "--dev", str(dev),
                 "--out_dir", str(tmp_path / "b"), "--epochs", "1", "--head", "hf", "--batch_size", "16"]) == 0
    assert (f"drawing a fresh hf classifier head instead of continuing the one of {out}: it has the official head, "
            "not the hf one asked for\n" in capsys.readouterr().out)
    assert "classifier.out_proj.weight" in npz(tmp_path / "b")


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory):
    """A classifier with the hf head (ours) and its export as a Hugging Face folder, on 200 examples."""
    pytest.importorskip("safetensors")
    tmp = tmp_path_factory.mktemp("hf_clf")
    model = model_dir(tmp)
    train, dev = tsv(tmp / "train.tsv", 200, 0), tsv(tmp / "dev.tsv", 40, 1)
    ours, theirs = tmp / "clf", tmp / "clf-hf"
    assert main(["finetune", "--model", str(model), "--head", "hf", "--train", str(train), "--dev", str(dev),
                 "--out_dir", str(ours), "--epochs", "1", "--lr", "3e-3", "--batch_size", "16"]) == 0
    assert main(["export", str(ours), "--out", str(theirs)]) == 0
    return ours, theirs, train, dev


def test_finetune_continues_a_hugging_face_classifier_with_its_classifier_dropout(hf_classifier, tmp_path, capsys):
    """An ElectraForSequenceClassification folder: its hf head is continued (labels from id2label), and its
    config's classifier_dropout becomes the head's dropout, recorded with the recipe and in config.json."""
    _, theirs, train, dev = hf_classifier
    d = json.loads((theirs / "config.json").read_text())
    (theirs / "config.json").write_text(json.dumps({**d, "classifier_dropout": 0.3}))
    capsys.readouterr()
    out = tmp_path / "more"
    assert main(["finetune", "--model", str(theirs), "--train", str(train), "--dev", str(dev), "--out_dir", str(out),
                 "--epochs", "1", "--batch_size", "16"]) == 0
    text = capsys.readouterr().out
    assert f"continuing the classifier head of {theirs} (labels: neg, pos)\n" in text
    assert f"head dropout 0.3: the classifier_dropout of {theirs / 'config.json'}\n" in text
    recipe = json.loads((out / "finetune.json").read_text())["recipe"]
    assert (recipe["head"], recipe["head_dropout"], recipe["dropout"]) == ("hf", 0.3, 0.1)
    assert json.loads((out / "config.json").read_text())["classifier_dropout"] == 0.3


def test_float64_models_stay_float64_through_the_commands(tmp_path, capsys):
    """A float64 discriminator is fine-tuned in float64; evaluate and predict (ours and the exported Hugging Face
    folder) and detect compute in float64: the probabilities are the float64 reference's, not float32's."""
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    from electra_np.cli import detect
    from electra_np.data.labelled import encode_examples, pad_batch, read_tsv
    from electra_np.engine import make_classifier

    model = model_dir(tmp_path)
    np.savez(model / "model.npz", **{k: v.astype(np.float64) for k, v in npz(model).items()})
    train, dev = tsv(tmp_path / "train.tsv", 100, 0), tsv(tmp_path / "dev.tsv", 30, 1)
    ours, theirs = tmp_path / "clf", tmp_path / "clf-hf"
    assert main(["finetune", "--model", str(model), "--head", "hf", "--train", str(train), "--dev", str(dev),
                 "--out_dir", str(ours), "--epochs", "1", "--lr", "3e-3", "--batch_size", "16"]) == 0
    params = npz(ours)
    assert {v.dtype for v in params.values()} == {np.dtype(np.float64)}
    assert main(["export", str(ours), "--out", str(theirs)]) == 0
    assert "ElectraForSequenceClassification, float64)" in capsys.readouterr().out
    assert {v.dtype for v in load_file(str(theirs / "model.safetensors")).values()} == {np.dtype(np.float64)}
    assert main(["export", str(ours), "--out", str(tmp_path / "f32"), "--dtype", "float32"]) == 0
    assert {v.dtype for v in load_file(str(tmp_path / "f32" / "model.safetensors")).values()} == {np.dtype(np.float32)}
    config = ElectraConfig.from_json(ours / "config.json")
    encoded, _ = encode_examples(read_tsv(dev, "sentence", "label"), Tokenizer(VOCAB), 32)
    batch = pad_batch(encoded, 0)
    reference = {}
    for dtype in (np.float64, np.float32):
        logits = make_classifier(config, "numpy").logits({k: v.astype(dtype) for k, v in params.items()}, batch)
        z = np.exp(logits - logits.max(1, keepdims=True))
        reference[dtype] = z / z.sum(1, keepdims=True)
    assert np.abs(reference[np.float32] - reference[np.float64]).max() > 1e-9  # float32 would show
    capsys.readouterr()
    for folder in (ours, theirs):
        a = parse("predict", "--model", str(folder), "--data", str(dev), "--output", str(tmp_path / "p.tsv"))
        probs = a.func(a, echo=lambda s: None)
        assert probs.dtype == np.float64
        np.testing.assert_allclose(probs, reference[np.float64], rtol=0, atol=1e-12)
        assert main(["evaluate", "--model", str(folder), "--data", str(dev)]) == 0
    scores = capsys.readouterr().out.splitlines()
    assert scores[0] == scores[1]
    assert detect.load(model, "discriminator")[1]["electra.embeddings.word_embeddings.weight"].dtype == np.float64
    assert main(["detect", "--model", str(model), "--backend", "numpy", "--color", "never", "good film"]) == 0
