"""Data sanity through the command line (issue #16, "nothing silent, nothing lost"): bad data and bad numbers are
refused in one line on stderr naming the file, line or option (exit 2), a diverged fine-tuning stops naming its
epoch and step (exit 1), and what a set loses is said (exit 0, a line on stdout).

CASES is the table: (case id, how the bad input is made, argv, exit code, stream, message fragment). Every row runs
`electra-np` in-process through cli.main.main, as a user's shell would, and checks the exit code, the fragment, that
no traceback is printed, and for a refused finetune or prepare that its output folder was not written.
"""

import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_finetune_cli import VOCAB, WORDS, model_dir, tsv

from electra_np.cli.main import main
from electra_np.data.cache import FINGERPRINT_KEYS
from electra_np.data.tokenizer import Tokenizer

PRETRAIN = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "1",
            "--num_attention_heads", "2", "--batch_size", "8", "--backend", "numpy", "--log_every", "1",
            "--eval_examples", "8", "--eval_every", "0", "--threads", "1"]
FINETUNE = ["finetune", "--model", "{model}", "--train", "{train}", "--dev", "{dev}", "--out_dir", "{tmp}/out",
            "--epochs", "1", "--batch_size", "8", "--threads", "1"]
UNKNOWN_WORDS = ["zebra", "quux", "blorp", "snark", "frob", "grue"]  # not in test_finetune_cli.VOCAB


def corpus_text(seed=0, documents=40, swap=False):
    """Documents of 3-5 short lines from a small grammar; swap=True trades "cat" and "dog" everywhere: other text,
    the same token counts (both are one token), so the same examples' shapes."""
    rng = random.Random(seed)
    nouns, verbs = "cat dog bird parser module value list table file".split(), "reads writes holds sends opens".split()
    docs = []
    for _ in range(documents):
        lines = [" ".join(["the", rng.choice(nouns), rng.choice(verbs), "a", rng.choice(nouns)]) + "."
                 for _ in range(rng.randint(3, 5))]
        docs.append("\n".join(lines))
    text = "\n\n".join(docs) + "\n"
    return text.replace("cat", "@").replace("dog", "cat").replace("@", "dog") if swap else text


def write_rows(path, header, rows):
    path.write_text("\n".join([header] + ["\t".join(map(str, r)) for r in rows]) + "\n", encoding="utf-8")
    return path


def sentences(n, seed=0, unknown=0.0, length=(3, 8)):
    """n sentences of the tiny model's words; `unknown` of the words replaced by words it cannot spell."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(WORDS, rng.integers(*length))]
        out.append(" ".join(str(rng.choice(UNKNOWN_WORDS)) if rng.random() < unknown else w for w in words))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """What the cases start from: a tiny discriminator (test_finetune_cli.model_dir) with a training and a dev TSV,
    a classifier fine-tuned from it with --max_seq_length 8, a corpus, a vocabulary that spells none of it, and
    a prepared corpus; a private electra_np cache."""
    root = tmp_path_factory.mktemp("sanity")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        w = {"root": root, "model": model_dir(root), "train": tsv(root / "train.tsv", 48, 0),
             "dev": tsv(root / "dev.tsv", 24, 1), "corpus": root / "corpus.txt", "bad_vocab": root / "bad_vocab.txt",
             "prep": root / "prep", "clf": root / "clf"}
        w["corpus"].write_text(corpus_text(), encoding="utf-8")
        Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "zebra"]).save(w["bad_vocab"])
        assert main(["prepare", "--corpus", str(w["corpus"]), "--vocab_size", "120", "--out_dir", str(w["prep"]),
                     "--seq_len", "32", "--eval_fraction", "0.1", "--threads", "1"]) == 0
        assert main(["finetune", "--model", str(w["model"]), "--train", str(w["train"]), "--dev", str(w["dev"]),
                     "--out_dir", str(w["clf"]), "--epochs", "1", "--max_seq_length", "8", "--threads", "1"]) == 0
        yield w


# ----------------------------------------------------------------------------- how each bad input is made

def nothing(w, tmp):
    return {}


def copy_prep(w, tmp):
    """A copy of the prepared corpus to damage."""
    shutil.copytree(w["prep"], tmp / "prep")
    return {"prep": tmp / "prep"}


def edit_meta(w, tmp, **changes):
    folder = copy_prep(w, tmp)["prep"]
    edit_in_place(folder, **changes)
    return {"prep": folder}


def write_file(relative, text):
    """A builder that writes `text` into the copy of the prepared corpus, or a copy of the model/classifier."""
    def build(w, tmp):
        top = relative.split("/")[0]
        shutil.copytree(w[top], tmp / top)
        (tmp / relative).write_text(text)
        return {top: tmp / top}
    return build


def truncate_npy(name, size):
    def build(w, tmp):
        folder = copy_prep(w, tmp)["prep"]
        path = folder / name
        os.truncate(path, size if size >= 0 else path.stat().st_size + size)
        return {"prep": folder}
    return build


def remove_npy(w, tmp):
    folder = copy_prep(w, tmp)["prep"]
    (folder / "eval.types.npy").unlink()
    return {"prep": folder}


def all_unk_old_folder(w, tmp):
    """A prepared folder from before [UNK] was counted (no tokens_unk), every word of it [UNK]: as a folder made
    with a vocabulary of another language would be."""
    folder = edit_meta(w, tmp, tokens_unk=None)["prep"]
    meta = json.loads((folder / "meta.json").read_text())
    for split in ("train", "eval"):
        ids = np.load(folder / f"{split}.ids.npy")
        ids[~np.isin(ids, [meta["pad_id"], meta["cls_id"], meta["sep_id"]])] = meta["unk_id"]
        np.save(folder / f"{split}.ids.npy", ids)
    return {"prep": folder}


def unk_tsv(share):
    def build(w, tmp):
        rows = [(s, "pos" if i % 2 else "neg") for i, s in enumerate(sentences(24, 3, unknown=share))]
        return {"bad": write_rows(tmp / "bad.tsv", "sentence\tlabel", rows)}
    return build


def long_tsv(w, tmp):
    rows = [(s, "pos" if i % 2 else "neg") for i, s in enumerate(sentences(24, 4, length=(3, 14)))]
    return {"long": write_rows(tmp / "long.tsv", "sentence\tlabel", rows)}


def labels_tsv(labels, name="bad"):
    def build(w, tmp):
        rows = list(zip(sentences(len(labels), 5), labels))
        return {name: write_rows(tmp / f"{name}.tsv", "sentence\tlabel", rows)}
    return build


SCORES = [f"{x:.3f}" for x in np.random.default_rng(0).uniform(0, 5, 30)]  # STS-B-like: 30 distinct scores


def scores_and(labels):
    """A regression training set (SCORES, as "{scores}") and a set of `labels` ("{bad}")."""
    return lambda w, tmp: {**labels_tsv(SCORES, "scores")(w, tmp), **labels_tsv(labels)(w, tmp)}


def pairs_tsv(w, tmp):
    rows = [(a, b, "pos" if i % 2 else "neg") for i, (a, b) in enumerate(zip(sentences(12, 6), sentences(12, 7)))]
    return {"pairs": write_rows(tmp / "pairs.tsv", "sentence\tsecond\tlabel", rows)}


def text_file(w, tmp):
    path = tmp / "texts.txt"
    path.write_text("\n".join(sentences(6, 8, unknown=1.0)) + "\n")
    return {"texts": path}


def content_changed(w, tmp, swap=True, drop_hash=False):
    """A run pretrained two steps on a prepared corpus (--data), then the corpus edited and prepared again into the
    same folder: "cat" and "dog" traded, so every count of meta.json is the same and only the content differs.
    drop_hash: the folder as an older electra_np prepared it (no content_sha256)."""
    data, vocab = tmp / "data", w["prep"] / "vocab.txt"
    (tmp / "c.txt").write_text(corpus_text())
    prep = ["prepare", "--corpus", str(tmp / "c.txt"), "--vocab", str(vocab), "--out_dir", str(data), "--seq_len", "32",
            "--eval_fraction", "0.1", "--threads", "1"]
    assert main(prep) == 0
    if drop_hash:
        edit_in_place(data, content_sha256=None)
    assert main(["pretrain", "--data", str(data), "--out_dir", str(tmp / "run"), "--steps", "4", "--stop_at", "2",
                 *PRETRAIN]) == 0
    before = json.loads((data / "meta.json").read_text())
    (tmp / "c.txt").write_text(corpus_text(swap=swap))
    assert main(prep + ["--overwrite"]) == 0
    if drop_hash:
        edit_in_place(data, content_sha256=None)
    after = json.loads((data / "meta.json").read_text())
    assert {k: before[k] for k in FINGERPRINT_KEYS} == {k: after[k] for k in FINGERPRINT_KEYS}  # the counts agree
    return {}


def edit_in_place(folder, **changes):
    """meta.json of `folder` with `changes` (a None value removes its key)."""
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del meta[k]
    (folder / "meta.json").write_text(json.dumps(meta))


def finetune(*extra, train="{train}", dev="{dev}"):
    argv = list(FINETUNE)
    argv[argv.index("{train}")], argv[argv.index("{dev}")] = train, dev
    return argv + list(extra)


PRETRAIN_DATA = ["pretrain", "--data", "{prep}", "--out_dir", "{tmp}/run", "--steps", "2", *PRETRAIN]
RESUME = ["pretrain", "--out_dir", "{tmp}/run", "--resume", "--threads", "1"]

CASES = [
    # 1. [UNK] share: refused above half the tokens, with the fix; warned about above 5%
    ("unk-prepare-vocab", nothing, ["prepare", "--corpus", "{corpus}", "--vocab", "{bad_vocab}", "--out_dir", "{tmp}/out",
                                    "--seq_len", "32"], 2, "err", "are [UNK]: the vocabulary does not fit this text; "
                                                                  "build a vocabulary from this text"),
    ("unk-pretrain-corpus-vocab", nothing, ["pretrain", "--corpus", "{corpus}", "--vocab", "{bad_vocab}", "--out_dir",
                                            "{tmp}/run", "--seq_len", "32", "--steps", "2", *PRETRAIN], 2, "err",
     "100% of the corpus's"),
    ("unk-pretrain-data-old-folder", all_unk_old_folder, PRETRAIN_DATA, 2, "err", "(electra-np build-vocab, or omit "
                                                                                   "--vocab)"),
    ("unk-pretrain-data-meta", lambda w, tmp: edit_meta(w, tmp, tokens_unk=10 ** 6, tokens_read=10 ** 6), PRETRAIN_DATA,
     2, "err", "100% of the corpus's 1,000,000 tokens are [UNK]"),
    ("unk-prepare-reported", nothing, ["prepare", "--corpus", "{corpus}", "--vocab_size", "120", "--out_dir",
                                       "{tmp}/out", "--seq_len", "32"], 0, "err", "| [UNK] 0.0% of the tokens"),
    ("unk-prepare-summary", nothing, ["prepare", "--corpus", "{corpus}", "--vocab_size", "120", "--out_dir",
                                      "{tmp}/out", "--seq_len", "32"], 0, "out", " tokens; [UNK] 0.0% of the text's"),
    ("unk-prepare-warned", lambda w, tmp: edit_meta(w, tmp, tokens_unk=3000, tokens_read=10000), PRETRAIN_DATA, 0,
     "out", "warning: 30.0% of the corpus's 10,000 tokens are [UNK]"),
    ("unk-finetune-train", unk_tsv(1.0), finetune(train="{bad}"), 2, "err",
     "bad.tsv: 100% of its"),
    ("unk-finetune-dev", unk_tsv(0.9), finetune(dev="{bad}"), 2, "err",
     "the model's vocabulary does not fit this text"),
    ("unk-finetune-warned", unk_tsv(0.2), finetune(train="{bad}"), 0, "out",
     "tokens are [UNK] (words the model's vocabulary cannot spell)"),
    ("unk-finetune-reported", nothing, finetune(), 0, "out", "train.tsv: 48 examples, 264 tokens ([UNK] 0.0%); none longer than 32 tokens"),
    ("unk-evaluate", unk_tsv(1.0), ["evaluate", "--model", "{clf}", "--data", "{bad}"], 2, "err",
     "the model's vocabulary does not fit this text"),
    ("unk-predict", text_file, ["predict", "--model", "{clf}", "--data", "{texts}"], 2, "err",
     "texts.txt: 100% of its"),
    # 2. what truncation to --max_seq_length cost
    ("truncation-finetune", long_tsv, finetune("--max_seq_length", "6", train="{long}"), 0, "out",
     "examples longer than 6 tokens were cut, losing"),
    ("truncation-model-positions", nothing, finetune(), 0, "out",
     "note: --max_seq_length 128 is more than the model's 32 positions (max_position_embeddings)"),
    ("truncation-evaluate", long_tsv, ["evaluate", "--model", "{clf}", "--data", "{long}"], 0, "out",
     "examples longer than 8 tokens were cut, losing"),
    ("truncation-predict", long_tsv, ["predict", "--model", "{clf}", "--data", "{long}"], 0, "err",
     "examples longer than 8 tokens were cut, losing"),
    # 3. label columns
    ("label-empty-train", labels_tsv(["pos", "neg", "", "pos"]), finetune(train="{bad}"), 2, "err",
     "bad.tsv, line 4: the label (column 'label') is empty"),
    ("label-empty-evaluate", labels_tsv(["pos", "", "neg"]), ["evaluate", "--model", "{clf}", "--data", "{bad}"], 2,
     "err", "bad.tsv, line 3: the label (column 'label') is empty"),
    ("label-unknown-dev", labels_tsv(["pos", "neg", "meh"]), finetune(dev="{bad}"), 2, "err",
     "bad.tsv, line 4: unknown label 'meh'"),
    ("label-scores-as-classes", labels_tsv(SCORES), finetune(train="{bad}", dev="{bad}"), 2, "err",
     "its 30 distinct labels are numbers such as 0.0"),
    ("label-one-class", labels_tsv(["pos"] * 10), finetune(train="{bad}"), 2, "err",
     "every example has the label 'pos'; a classifier needs at least two classes"),
    ("regression-nan-target", labels_tsv(["1.5", "2", "nan", "3"]), finetune("--regression", train="{bad}"), 2, "err",
     "bad.tsv, line 4: label 'nan' is not a finite number"),
    ("regression-inf-target", scores_and(["1.5", "inf", "2"]), finetune("--regression", train="{scores}", dev="{bad}"),
     2, "err",
     "bad.tsv, line 3: label 'inf' is not a finite number"),
    ("regression-word-target", labels_tsv(["1.5", "2", "high"]), finetune("--regression", train="{bad}"), 2, "err",
     "bad.tsv, line 4: label 'high' is not a number"),
    ("regression-one-value", labels_tsv(["2.5"] * 8), finetune("--regression", train="{bad}"), 2, "err",
     "bad.tsv: every example has the target 2.5; regression needs at least two values"),
    ("regression-classification-metric", labels_tsv(SCORES), finetune("--regression", "--metric", "accuracy",
                                                                       train="{bad}", dev="{bad}"), 2, "err",
     "--metric accuracy does not score regression"),
    ("regression-trains", labels_tsv(SCORES), finetune("--regression", train="{bad}", dev="{bad}"), 0, "out",
     "best dev pearson"),
    # 4. --max_seq_length that holds no text
    ("max-seq-length-1", nothing, finetune("--max_seq_length", "1"), 2, "err", "--max_seq_length must be at least 3"),
    ("max-seq-length-2", nothing, finetune("--max_seq_length", "2"), 2, "err", "--max_seq_length must be at least 3"),
    ("max-seq-length-3-pairs", pairs_tsv, finetune("--max_seq_length", "3", "--text_b_column", "second", train="{pairs}",
                                                   dev="{pairs}"), 2, "err", "--max_seq_length must be at least 4"),
    ("max-seq-length-3-fits", nothing, finetune("--max_seq_length", "3"), 0, "out", "losing"),
    # 5. the corpus fingerprint holds its content
    ("resume-content-changed", content_changed, RESUME, 2, "err", "content_sha256"),
    ("resume-content-same", lambda w, tmp: content_changed(w, tmp, swap=False), RESUME, 0, "out", "step"),
    ("resume-old-folder-without-hash", lambda w, tmp: content_changed(w, tmp, swap=False, drop_hash=True), RESUME, 0,
     "out", "step"),
    # 6. a damaged prepared corpus or model folder
    ("meta-json-list", write_file("prep/meta.json", "[1, 2]"), PRETRAIN_DATA, 2, "err",
     "meta.json: expected a JSON object, found list"),
    ("meta-json-not-json", write_file("prep/meta.json", "{\"format\": "), PRETRAIN_DATA, 2, "err",
     "meta.json: unreadable or not valid JSON"),
    ("meta-json-incomplete", lambda w, tmp: edit_meta(w, tmp, splits=None), PRETRAIN_DATA, 2, "err",
     "meta.json: damaged, it lacks splits"),
    ("npy-truncated-rows", truncate_npy("train.ids.npy", -100), PRETRAIN_DATA, 2, "err",
     "train.ids.npy: damaged or truncated"),
    ("npy-truncated-header", truncate_npy("train.types.npy", 50), PRETRAIN_DATA, 2, "err",
     "train.types.npy: damaged or truncated"),
    ("npy-missing", remove_npy, PRETRAIN_DATA, 2, "err", "eval.types.npy: missing from the prepared corpus"),
    ("config-json-list", write_file("model/config.json", "[]"), finetune(), 2, "err",
     "config.json: expected a JSON object"),
    ("config-json-not-json", write_file("model/config.json", "{"), finetune(), 2, "err",
     "config.json: unreadable or not valid JSON"),
    ("tokenizer-config-json-list", write_file("model/tokenizer_config.json", "[]"), finetune(), 2, "err",
     "tokenizer_config.json: expected a JSON object"),
    ("finetune-json-list", write_file("clf/finetune.json", "[]"), ["evaluate", "--model", "{clf}", "--data", "{dev}"],
     2, "err", "finetune.json: expected a JSON object"),
    ("finetune-json-incomplete", write_file("clf/finetune.json", "{\"recipe\": {}}"),
     ["evaluate", "--model", "{clf}", "--data", "{dev}"], 2, "err", "finetune.json: damaged"),
    # 7. a diverged fine-tuning; numbers that train on nothing
    ("finetune-diverges", nothing, finetune("--lr", "1e38"), 1, "err",  # step 1 has lr 0 (warmup)
     "fine-tuning diverged in epoch 1/1, step 2/6: the loss is nan"),
    ("finetune-batch-size-0", nothing, finetune("--batch_size", "0"), 2, "err", "--batch_size must be at least 1"),
    ("evaluate-batch-size-0", nothing, ["evaluate", "--model", "{clf}", "--data", "{dev}", "--batch_size", "0"], 2,
     "err", "--batch_size must be at least 1, got 0"),
    ("predict-batch-size-0", nothing, ["predict", "--model", "{clf}", "--data", "{dev}", "--batch_size", "0"], 2,
     "err", "--batch_size must be at least 1, got 0"),
    ("finetune-epochs-0", nothing, finetune("--epochs", "0"), 2, "err", "--epochs must be at least 1, got 0"),
    ("finetune-epochs-negative", nothing, finetune("--epochs", "-2"), 2, "err", "--epochs must be at least 1, got -2"),
    ("finetune-lr-0", nothing, finetune("--lr", "0"), 2, "err", "--lr must be a positive number, got 0"),
    ("finetune-lr-negative", nothing, finetune("--lr=-1e-4"), 2, "err", "--lr must be a positive number"),
    ("finetune-lr-nan", nothing, finetune("--lr", "nan"), 2, "err", "--lr must be a positive number, got nan"),
]


MULTILINE = {"resume-content-changed"}  # train/state.py's refused resume lists the differences one per line


def fill(argv, names):
    return [a.format(**names) for a in argv]


@pytest.mark.parametrize("build, argv, code, stream, fragment", [pytest.param(*row[1:], id=row[0]) for row in CASES])
def test_bad_input(world, tmp_path, monkeypatch, capsys, request, build, argv, code, stream, fragment):
    monkeypatch.setenv("ELECTRA_NP_CACHE", str(world["root"] / "cache"))
    names = {**world, **build(world, tmp_path), "tmp": tmp_path}
    capsys.readouterr()
    assert main(fill(argv, names)) == code
    out, err = capsys.readouterr()
    assert fragment in (err if stream == "err" else out), (out, err)
    assert "Traceback" not in err
    if code:
        lines = err.strip().splitlines()
        assert lines[0].startswith("electra-np") and "error: " in lines[0]
        assert len(lines) == 1 or request.node.callspec.id in MULTILINE, err
        if argv[0] in ("finetune", "prepare"):
            assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_refusal_is_one_line_on_stderr_of_the_installed_command(world, tmp_path):
    """The same refusal as a user's shell sees it: `python -m electra_np`, exit 2, one line, no traceback."""
    bad = write_file("prep/meta.json", "[1, 2]")(world, tmp_path)["prep"]
    proc = subprocess.run([sys.executable, "-m", "electra_np", "pretrain", "--data", str(bad), "--out_dir",
                           str(tmp_path / "run"), "--threads", "1"], capture_output=True, text=True,
                          env={**os.environ, "ELECTRA_NP_CACHE": str(world["root"] / "cache")})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "meta.json: expected a JSON object, found list" in proc.stderr


def test_prepared_meta_reports_unk_share_and_content_hash(world):
    meta = json.loads((world["prep"] / "meta.json").read_text())
    assert meta["tokens_unk"] == 0 and meta["tokens_read"] > 0
    assert len(meta["content_sha256"]) == 64


def test_regression_classifier_evaluates_and_predicts(world, tmp_path, capsys):
    """--regression trains one output (Hugging Face's num_labels=1, problem_type regression); evaluate scores it
    with Pearson, Spearman and MSE, predict writes the predicted number."""
    scores = labels_tsv(SCORES)(world, tmp_path)["bad"]
    out = tmp_path / "reg"
    assert main(["finetune", "--model", str(world["model"]), "--train", str(scores), "--dev", str(scores), "--out_dir",
                 str(out), "--regression", "--epochs", "1", "--threads", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] == 1 and config["problem_type"] == "regression"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(scores), "--threads", "1"]) == 0
    assert "pearson" in capsys.readouterr().out
    assert main(["predict", "--model", str(out), "--data", str(scores), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "text\tprediction" and len(lines) == 31
    float(lines[1].split("\t")[1])


def test_vocab_fixture_spells_the_training_words():
    """The rows that expect [UNK] 0.0% rely on it."""
    tok = Tokenizer(VOCAB)
    assert tok.unk_id not in tok.encode(" ".join(WORDS))
    assert all(tok.encode(w) == [tok.unk_id] for w in UNKNOWN_WORDS)


def test_library_refusals_behind_the_command_line(tmp_path):
    """The checks the rows reach, called as a library user would: the same refusals without the CLI."""
    from electra_np.classification import check_labels
    from electra_np.data.labelled import Example, encode_with_report, label_map

    with pytest.raises(ValueError, match="regression targets must be finite, got nan"):
        check_labels(np.array([1.0, np.nan]), 2, 1)
    tok = Tokenizer(VOCAB)
    with pytest.raises(ValueError, match="max_seq_length 3 leaves no room for text: at least 4"):
        encode_with_report([Example("good", "bad", "1", 2)], tok, 3, {"1": 0})
    with pytest.raises(ValueError, match="a.tsv: every example has the label '1'"):
        label_map([Example("good", None, "1", 2, "a.tsv")] * 3)
    _, y, report = encode_with_report([Example("good film zebra quux", None, "2.5", 2)], tok, 4, regression=True)
    assert y.tolist() == [2.5] and (report.tokens, report.kept, report.unk, report.cut) == (4, 2, 2, 1)
