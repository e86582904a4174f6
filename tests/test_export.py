"""`electra-np export`: a run's discriminator and generator and a fine-tuned classifier, written as transformers
folders, load with AutoTokenizer / AutoModel*.from_pretrained alone and give electra_np's ids and logits:

    ids: equal, on English with punctuation and accents (lowercased and cased) and on Chinese
    logits: <= 1e-5 absolute in float32 (both sides float32, summed in different orders), <= 1e-10 in float64

and every bad input is one line, exit code 2, nothing written.
"""

import json
import os
import random
import shutil

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # torch's OpenMP and numba in one process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from electra_np.cli.main import main  # noqa: E402
from electra_np.data.tokenizer import Tokenizer  # noqa: E402

F32_ABS, F64_ABS = 1e-5, 1e-10
TINY = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "2",
        "--num_attention_heads", "2", "--seq_len", "32", "--batch_size", "8", "--vocab_size", "400",
        "--backend", "numpy", "--log_every", "1", "--eval_examples", "16", "--eval_every", "0"]
SENTENCES = ["The café's owner, Zoë, said: \"naïve résumés!\"", "Hello, world... (owner?) Zürich",
             "我们喜欢机器学习。", "the dog reads a list; the cat finds 我们 too"]


def corpus_text(seed=0, documents=60):
    """English with punctuation, accented words and Chinese, so that the vocabulary holds all three."""
    rng = random.Random(seed)
    words = "the cat dog reads finds a list value café naïve résumé Zoë Zürich owner said hello world".split()
    chinese = ["我们喜欢机器学习。", "机器学习很有意思！", "我们读书。"]
    docs = []
    for _ in range(documents):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + rng.choice(".!?,;:\"'()")
                 for _ in range(3)]
        docs.append("\n".join(lines + [rng.choice(chinese)]))
    return "\n\n".join(docs) + "\n"


def tsv(path, n, seed):
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.random() < 0.5
        rows.append(f"the {'cat' if label else 'dog'} reads a {rng.choice(['list', 'value'])}.\t{'pos' if label else 'neg'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A 2-step pretraining run and two 1-epoch classifiers on it (hf head, official head)."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        corpus = root / "corpus.txt"
        corpus.write_text(corpus_text(), encoding="utf-8")
        run = root / "run"
        assert main(["pretrain", "--corpus", str(corpus), "--out_dir", str(run), *TINY, "--steps", "2"]) == 0
        data = tsv(root / "train.tsv", 24, 0)
        clf = {}
        for head in ("hf", "official"):
            clf[head] = root / f"clf-{head}"
            assert main(["finetune", "--model", str(run), "--head", head, "--train", str(data), "--dev", str(data),
                         "--out_dir", str(clf[head]), "--epochs", "1", "--batch_size", "8", "--max_seq_length", "32",
                         "--backend", "numpy"]) == 0
    return {"root": root, "run": run, "clf": clf}


def npz(folder, dtype):
    with np.load(folder / "model.npz") as z:
        return {k: z[k].astype(dtype) for k in z.files}


def batch(tokenizer, sentences=SENTENCES):
    """electra_np's [CLS] ids [SEP], right-padded, with a mask, token types 0. Returns a dict of (B, T)."""
    rows = [[tokenizer.cls_id, *tokenizer.encode(s), tokenizer.sep_id] for s in sentences]
    T = max(map(len, rows))
    ids = np.full((len(rows), T), tokenizer.pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def hf_logits(model, b):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in b.items()})
    return out.logits.numpy()


def load(auto_class, out):
    """The model from the exported folder, refusing missing, unexpected or mismatched weights."""
    transformers = pytest.importorskip("transformers")
    model, info = getattr(transformers, auto_class).from_pretrained(out, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    return model.eval()


def export(src, out, *options):
    return main(["export", str(src), "--out", str(out), *options])


def check_tokenizer(out, tokenizer, sentences=SENTENCES, covered=True):
    """AutoTokenizer from the exported folder alone gives electra_np's ids, with and without [CLS]/[SEP].
    covered: the vocabulary holds every word (no [UNK])."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    for s in sentences:
        ours = tokenizer.encode(s)
        assert not covered or tokenizer.unk_id not in ours, s
        assert tok(s, add_special_tokens=False)["input_ids"] == ours, s
        assert tok(s)["input_ids"] == [tokenizer.cls_id, *ours, tokenizer.sep_id], s
    enc = tok(sentences, padding=True, return_tensors="np")
    b = batch(tokenizer, sentences)
    np.testing.assert_array_equal(enc["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(enc["attention_mask"], b["attention_mask"])
    return b


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_discriminator_ids_and_logits(env, tmp_path, capsys, dtype):
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from electra_np.config import ElectraConfig
    from electra_np.engine import make_discriminator

    out = tmp_path / "disc"
    assert export(env["run"], out, "--dtype", dtype) == 0
    assert "AutoModelForPreTraining" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                       "tokenizer_config.json", "vocab.txt"]
    folder = env["run"] / "discriminator"
    tokenizer = Tokenizer.from_file(folder / "vocab.txt")
    b = check_tokenizer(out, tokenizer)
    model = load("AutoModelForPreTraining", out)
    assert type(model).__name__ == "ElectraForPreTraining" and str(next(model.parameters()).dtype) == f"torch.{dtype}"
    config = ElectraConfig.from_json(folder / "config.json")
    ours = make_discriminator(config, "numpy")(npz(folder, dtype), b)  # (B, T)
    err = np.abs(hf_logits(model, b) - ours)[b["attention_mask"] == 1].max()
    assert err <= (F32_ABS if dtype == "float32" else F64_ABS), err


def test_generator_mlm_logits(env, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from electra_np.config import ElectraConfig
    from electra_np.model import generator_forward

    out = tmp_path / "gen"
    assert export(env["run"], out, "--what", "generator") == 0
    folder = env["run"] / "generator"
    tokenizer = Tokenizer.from_file(folder / "vocab.txt")
    b = check_tokenizer(out, tokenizer)
    b["input_ids"][:, 2] = tokenizer.mask_id  # every row has at least 3 tokens
    model = load("AutoModelForMaskedLM", out)
    assert type(model).__name__ == "ElectraForMaskedLM"
    config = ElectraConfig.from_json(folder / "config.json")
    B, T = b["input_ids"].shape
    positions = np.flatnonzero(b["attention_mask"].reshape(-1))  # every real token, masked or not
    ours, _ = generator_forward(npz(folder, np.float32), config, b["input_ids"], b["token_type_ids"],
                                b["attention_mask"], positions)  # (M, V)
    theirs = hf_logits(model, b).reshape(B * T, -1)[positions]
    assert np.abs(theirs - ours).max() <= F32_ABS
    # the same folder, given as the model folder instead of the run, exports the same files
    assert export(folder, tmp_path / "gen2") == 0
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (tmp_path / "gen2" / name).read_bytes(), name


def test_classifier_labels_and_logits(env, tmp_path, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from electra_np.config import ElectraConfig
    from electra_np.engine import make_classifier

    out = tmp_path / "clf"
    assert export(env["clf"]["hf"], out) == 0
    assert "AutoModelForSequenceClassification" in capsys.readouterr().out
    folder = env["clf"]["hf"]
    tokenizer = Tokenizer.from_file(folder / "vocab.txt")
    b = check_tokenizer(out, tokenizer)
    model = load("AutoModelForSequenceClassification", out)
    assert type(model).__name__ == "ElectraForSequenceClassification"
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}
    config = ElectraConfig.from_json(folder / "config.json")
    ours = make_classifier(config, "numpy").logits(npz(folder, np.float32), b)  # (B, C)
    assert np.abs(hf_logits(model, b) - ours).max() <= F32_ABS


def test_cased_tokenizer_keeps_case_and_accents(env, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    src = tmp_path / "cased"
    shutil.copytree(env["run"] / "discriminator", src)
    tc = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**tc, "do_lower_case": False, "strip_accents": None}))
    assert export(src, tmp_path / "out") == 0
    cased = Tokenizer.from_file(src / "vocab.txt", do_lower_case=False)
    words = ["café naïve", "Zürich", "我们喜欢机器学习。", "The CAT"]
    assert cased.encode("café") != Tokenizer.from_file(src / "vocab.txt").encode("café")  # accents matter here
    ids_file = tmp_path / "out" / "tokenizer_config.json"
    assert json.loads(ids_file.read_text())["do_lower_case"] is False
    check_tokenizer(tmp_path / "out", cased, words, covered=False)  # a lowercased vocabulary: [UNK] for "é", "T"


def test_overwrite_replaces_the_whole_folder(env, tmp_path):
    pytest.importorskip("safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert export(env["run"], out) == 2
    assert os.listdir(out) == ["stale.txt"]
    assert export(env["run"], out, "--overwrite") == 0
    assert "stale.txt" not in os.listdir(out) and (out / "model.safetensors").is_file()


def fails(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_bad_input(env, tmp_path, capsys):
    pytest.importorskip("safetensors")
    run, out = env["run"], tmp_path / "out"
    fails(capsys, ["export", str(env["clf"]["official"]), "--out", str(out)], "official head", "--head hf")
    fails(capsys, ["export", str(run), "--out", str(run)], "input folder")
    fails(capsys, ["export", str(run), "--out", str(run / "hf")], "input folder")
    fails(capsys, ["export", str(run / "discriminator"), "--out", str(run)], "input folder")  # --overwrite would eat it
    fails(capsys, ["export", str(env["root"]), "--out", str(out)], "not a model")
    fails(capsys, ["export", str(tmp_path / "nope"), "--out", str(out)], "no such folder")
    fails(capsys, ["export", str(run), "--out", str(out), "--what", "classifier"], "no classifier")
    fails(capsys, ["export", str(env["clf"]["hf"]), "--out", str(out), "--what", "generator"], "not a generator")
    not_electra = tmp_path / "bert"
    not_electra.mkdir()
    (not_electra / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    fails(capsys, ["export", str(not_electra), "--out", str(out)], "BertModel")
    no_vocab = tmp_path / "no_vocab"
    shutil.copytree(run / "discriminator", no_vocab)
    (no_vocab / "vocab.txt").unlink()
    fails(capsys, ["export", str(no_vocab), "--out", str(out)], "vocab.txt")
    assert not out.exists()


def test_without_safetensors_one_line_names_the_extra(env, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors -> ImportError
    fails(capsys, ["export", str(env["run"]), "--out", str(tmp_path / "out")], 'pip install -e ".[hf]"')
    assert not (tmp_path / "out").exists()


def test_export_from_npz_only(env, tmp_path):
    """A run made before the hf extra was installed has model.npz and no model.safetensors."""
    pytest.importorskip("safetensors")
    src = tmp_path / "old_run"
    shutil.copytree(env["run"], src, ignore=shutil.ignore_patterns("*.safetensors"))
    assert export(src, tmp_path / "a") == 0 and export(env["run"], tmp_path / "b") == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "--what" in out and "(default: the model's own" in " ".join(out.split()) and "RUN_OR_FOLDER" in out


def test_pretraining_folders_hold_the_tokenizer_files_themselves(env):
    """A run's own discriminator/ and generator/ folders are complete for AutoTokenizer (no export needed)."""
    pytest.importorskip("transformers")
    for kind in ("discriminator", "generator"):
        folder = env["run"] / kind
        assert {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"} <= set(os.listdir(folder))
        check_tokenizer(folder, Tokenizer.from_file(folder / "vocab.txt"))
