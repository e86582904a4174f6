"""Bad input that used to pass silently or end in a raw traceback (issue #16, "Nothing silent, nothing lost"): each
row of CASES builds one, a user's mistake, and names what must come of it: an exception class and a fragment of its
message at the API, or an exit code and a fragment of the one line on stderr through the command line (no
traceback). The section and row comments say what happened before the fix; [held] marks a row that was refused
already and is kept so.

The API traps (masking's layouts and the samples' order) have tests of their own below the table: they check that
the right tokens are marked, not only that an error is raised."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from electra_np import hf
from electra_np.cli import main as cli
from electra_np.config import ElectraConfig, PretrainingConfig, generator_config, preset
from electra_np.data.tokenizer import Tokenizer
from electra_np.fast import runtime
from electra_np.gradcheck import check_function
from electra_np.hf_mapping import config_labels
from electra_np.masking import Corruption, SampleOrderWarning, positions_from_indices, positions_from_rows
from electra_np.model import Electra, electra_forward
from electra_np.params import discriminator_params, generator_params
from electra_np.train.config import RunError, TrainConfig

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the cat sat on a mat dog reads".split()
CONFIG = ElectraConfig(vocab_size=len(TOKENS), embedding_size=8, hidden_size=8, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
CORPUS = "".join(f"the {a} sat on a {b}.\n" for a in ("cat", "dog") for b in ("mat", "cat", "dog")) * 20


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A tiny run folder (discriminator/, generator/, run.json, vocab.txt) written by hf.save_pretrained, a
    classifier folder, a corpus; the cases damage copies of them."""
    root = tmp_path_factory.mktemp("bad_input")
    setup = Electra.build(CONFIG, PretrainingConfig(generator_hidden_size=1.0))
    params = setup.init_params(0)
    tok = Tokenizer(TOKENS)
    hf.save_pretrained(root / "run" / "discriminator", CONFIG, discriminator_params(params), "discriminator",
                       tokenizer=tok)
    hf.save_pretrained(root / "run" / "generator", CONFIG, generator_params(params), "generator", tokenizer=tok)
    shutil.copy(root / "run" / "discriminator" / "vocab.txt", root / "run" / "vocab.txt")
    (root / "run" / "run.json").write_text(json.dumps({"pretraining_config": {"mask_prob": 0.15}}))
    head = {"classifier.dense.weight": np.zeros((8, 8), np.float32), "classifier.dense.bias": np.zeros(8, np.float32),
            "classifier.out_proj.weight": np.zeros((2, 8), np.float32),
            "classifier.out_proj.bias": np.zeros(2, np.float32)}
    encoder = {k: v for k, v in discriminator_params(params).items() if k.startswith("electra.")}
    hf.save_pretrained(root / "clf", CONFIG, {**encoder, **head}, "classifier")
    (root / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    return root


# ----------------------------------------------------------------------------- builders the rows use

def copy_of(w, tmp, name="run/discriminator"):
    """A copy of one of the fixture's folders, to damage."""
    dst = tmp / name.replace("/", "_")
    shutil.copytree(w / name, dst)
    return dst


def edit_json(folder, name, change):
    path = folder / name
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))
    return folder


def truncated_npz(w, tmp, name="run/discriminator"):
    """A model folder whose only weights are a model.npz cut in half (a full disk, a killed copy)."""
    folder = copy_of(w, tmp, name)
    config, params, _ = hf.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    np.savez(folder / "model.npz", **params)
    data = (folder / "model.npz").read_bytes()
    (folder / "model.npz").write_bytes(data[:len(data) // 2])
    return folder


def nan_weights(w, tmp):
    folder = copy_of(w, tmp)
    config, params, kind = hf.from_pretrained(folder)
    params["electra.embeddings.LayerNorm.weight"][0] = np.nan
    hf.save_pretrained(folder, config, params, kind)
    return folder


def config_file(tmp, d, text=None):
    path = tmp / "settings.json"
    path.write_text(text if text is not None else json.dumps(d))
    return str(path)


def pretrain_config(d=None, text=None):
    """pretrain --config FILE with d (or raw text) in it; refused before out_dir exists."""
    return lambda w, tmp: ["pretrain", "--config", config_file(tmp, d, text), "--out_dir", str(tmp / "out"),
                           "--corpus", str(w / "corpus.txt")]


def pretrain_flags(*flags):
    """A tiny pretrain whose bad flag is refused (up front, naming it: the configs used to, after the vocabulary)."""
    return lambda w, tmp: ["pretrain", "--corpus", str(w / "corpus.txt"), "--out_dir", str(tmp / "out"),
                           "--vocab_size", "40", "--hidden_size", "8", "--embedding_size", "8", "--num_attention_heads",
                           "2", "--intermediate_size", "16", "--num_hidden_layers", "1", "--seq_len", "16",
                           "--batch_size", "2", "--steps", "1", "--backend", "numpy", *flags]


def pretrain_run(*flags):
    """pretrain_flags's tiny run, into tmp/run: a run that starts and fails (its folder stays; `out` is not made)."""
    return lambda w, tmp: [str(tmp / "run") if a == str(tmp / "out") else a for a in pretrain_flags(*flags)(w, tmp)]


def detect(folder_of, *args):
    return lambda w, tmp: ["detect", "--backend", "numpy", "--model", str(folder_of(w, tmp)), *args, "the cat"]


def with_env(name, value, fn):
    """fn() with one environment variable set (or removed: None), restored after."""
    def run():
        before = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            os.environ.pop(name) if before is None else os.environ.__setitem__(name, before)
    return run


def corruption_case(samples, positions=None, masked=((0, 1), (0, 3), (1, 2))):
    m = positions_from_indices(list(masked), 2, 5)
    return lambda w, tmp: lambda: Corruption(m, m, samples, positions)


def given(made):
    """A row whose thunk (API) or argv (CLI) needs no fixture."""
    return lambda w, tmp: made


def cli_env(env, *argv):
    """A row run as `python -m electra_np argv` with env added: the environment is read only by a fresh process
    (in this one, runtime.configure() has run already)."""
    return lambda w, tmp: ("subprocess", env, list(argv))


def hf_load(folder_of):
    return lambda w, tmp: lambda: hf.from_pretrained(folder_of(w, tmp))


def npz_classifier(change=None):
    """A classifier folder as `electra-np finetune` writes one (model.npz, config.json, the tokenizer files; no
    model.safetensors, which would be read first), its config.json edited by change(d)."""
    def build(w, tmp):
        folder = copy_of(w, tmp, "clf")
        config, params, _ = hf.from_pretrained(folder)
        (folder / "model.safetensors").unlink()
        np.savez(folder / "model.npz", **params)
        hf.write_tokenizer(folder, Tokenizer(TOKENS), CONFIG.max_position_embeddings)
        return edit_json(folder, "config.json", change) if change else folder
    return build


def labelled_tsv(tmp):
    path = tmp / "data.tsv"
    path.write_text("sentence\tlabel\n" + "the cat sat\tneg\nthe dog sat\tpos\n" * 4)
    return str(path)


def finetune_on(folder_of, vocab=None):
    """finetune --model folder_of(w, tmp) on a two-label set (--vocab vocab(w, tmp) if given); refused before
    anything trains."""
    def argv(w, tmp):
        extra = ["--vocab", str(vocab(w, tmp))] if vocab else []
        return ["finetune", "--backend", "numpy", "--model", str(folder_of(w, tmp)), "--train", labelled_tsv(tmp),
                "--dev", labelled_tsv(tmp), "--out_dir", str(tmp / "out"), *extra]
    return argv


def classify(command, folder_of):
    """evaluate (on a labelled TSV) or predict (on a .txt file) with the classifier folder_of(w, tmp)."""
    def argv(w, tmp):
        data = labelled_tsv(tmp) if command == "evaluate" else str(write(tmp / "texts.txt", b"the cat sat\n"))
        return [command, "--backend", "numpy", "--model", str(folder_of(w, tmp)), "--data", data]
    return argv


def export_of(folder_of):
    return lambda w, tmp: ["export", str(folder_of(w, tmp)), "--out", str(tmp / "out")]


def label2id(value, keep_id2label=False):
    """A config.json change: label2id set to value (id2label dropped unless kept, so that label2id is read)."""
    return lambda d: [d.update(label2id=value), None if keep_id2label else d.pop("id2label")]


def lowercase_no(folder_of):
    return lambda w, tmp: edit_json(folder_of(w, tmp), "tokenizer_config.json", lambda d: d.update(do_lower_case="no"))


INF, NAN = math.inf, math.nan
CASES = [
    # 1. configuration values are typed and finite                     [were silent, unless marked otherwise]
    ("config-temperature-inf", given(lambda: PretrainingConfig(temperature=INF)), ValueError,
     "PretrainingConfig.temperature must be in (0, 100], got inf"),
    ("config-final-temperature-nan", given(lambda: PretrainingConfig(final_temperature=NAN)), ValueError,
     "final_temperature must be in (0, 100], got nan"),
    ("config-disc-weight-overflows", given(lambda: PretrainingConfig(disc_weight=1e308)), ValueError,
     "disc_weight must be in [0, 10000]"),
    ("config-mask-prob-text", given(lambda: PretrainingConfig(mask_prob="0.15")), ValueError,
     "mask_prob must be a number in (0, 1), got '0.15' (str)"),
    ("config-mask-token-prob-bool", given(lambda: PretrainingConfig(mask_token_prob=True)), ValueError,
     "mask_token_prob must be a number in [0, 1], got True (bool)"),
    ("config-initializer-range-inf", given(lambda: preset("tiny", initializer_range=INF)), ValueError,
     "ElectraConfig.initializer_range must be in (0, 1], got inf"),
    ("config-layer-norm-eps-huge", given(lambda: preset("tiny", layer_norm_eps=1e30)), ValueError,
     "ElectraConfig.layer_norm_eps must be in (0, 0.1], got 1e+30"),
    ("config-layers-float", given(lambda: preset("tiny", num_hidden_layers=2.0)), ValueError,  # [held]
     "num_hidden_layers must be a positive integer, got 2.0"),
    ("config-heads-bool", given(lambda: preset("tiny", num_attention_heads=True)), ValueError,
     "num_attention_heads must be a positive integer, got True (bool)"),
    ("config-dropout-text", given(lambda: preset("tiny", hidden_dropout_prob="0.1")), ValueError,
     "hidden_dropout_prob must be a number in [0, 1), got '0.1' (str)"),
    ("config-json-size-text", given(lambda: ElectraConfig.from_dict({"embedding_size": 8, "hidden_size": "256"},
                                                                     "x/config.json")), ValueError,
     "x/config.json: ElectraConfig.hidden_size must be a positive integer, got '256' (str)"),
    ("generator-without-units", given(lambda: generator_config(preset("tiny"), 0.001)), ValueError,
     "leaves the generator no hidden unit"),
    ("pretrain-config-lowercase-no", pretrain_config({"lowercase": "no"}), 2,
     '"lowercase" must be true or false (as --lowercase), got "no" (a string)'),
    ("pretrain-config-steps-text", pretrain_config({"steps": "100"}), 2,
     '"steps" must be an integer (as --steps), got "100" (a string)'),
    ("pretrain-config-steps-float", pretrain_config({"steps": 100.0}), 2, '"steps" must be an integer'),
    ("pretrain-config-lr-text", pretrain_config({"lr": "fast"}), 2,
     '"lr" must be a finite number (as --lr), got "fast"'),
    ("pretrain-config-temperature-infinity", pretrain_config(text='{"temperature": Infinity}'), 2,
     '"temperature" must be a finite number'),
    ("pretrain-config-layer-norm-eps", pretrain_config({"layer_norm_eps": 1e30}), 2,
     '"layer_norm_eps" must be in (0, 0.1], got 1e+30'),
    ("pretrain-config-hidden-size-true", pretrain_config({"hidden_size": True}), 2,
     '"hidden_size" must be an integer (as --hidden_size), got true'),
    ("pretrain-config-corpus-number", pretrain_config({"corpus": 5}), 2, '"corpus" must be a string, or a list'),
    ("pretrain-config-dtype-choice", pretrain_config({"dtype": "float16"}), 2,
     '"dtype" must be one of float32, float64'),
    ("pretrain-config-null-batch", pretrain_config({"batch_size": None}), 2, '"batch_size" must be an integer'),
    ("pretrain-config-section-list", pretrain_config({"training": [1]}), 2,  # [was a traceback]
     '"training" must be a JSON object of settings'),
    ("pretrain-temperature-inf", pretrain_flags("--temperature", "inf"), 2,
     "--temperature must be in (0, 100], got inf"),
    ("pretrain-layer-norm-eps-huge", pretrain_flags("--layer_norm_eps", "1e30"), 2,  # [was: after the vocabulary,
     "--layer_norm_eps must be in (0, 0.1]"),                                          # naming ElectraConfig's field]
    ("pretrain-initializer-range-inf", pretrain_flags("--initializer_range", "inf"), 2,  # [was: diverged, exit 1]
     "--initializer_range must be in (0, 1]"),
    # TrainConfig: bools taken for numbers, an unbounded weight decay, a warmup the run never ends    [were silent]
    ("train-config-lr-bool", given(lambda: TrainConfig(lr=True)), RunError,
     "lr must be a positive number, got True (bool)"),
    ("train-config-weight-decay-bool", given(lambda: TrainConfig(weight_decay=False)), RunError,
     "weight_decay must be a number in [0, 1], got False (bool)"),
    ("train-config-clip-norm-bool", given(lambda: TrainConfig(clip_norm=True)), RunError,
     "clip_norm must be a number >= 0, got True (bool)"),
    ("train-config-weight-decay-above-one", given(lambda: TrainConfig(weight_decay=1.5)), RunError,
     "weight_decay must be in [0, 1], got 1.5: AdamW's decoupled decay multiplies every weight by (1 - lr x "),
    ("train-config-warmup-past-steps", given(lambda: TrainConfig(steps=1, warmup=100000)), RunError,
     "warmup 100000 is more than steps 1: the learning rate rises for warmup steps"),
    ("train-config-budget-warmup-past-steps",  # the steps a budget measured: the message says where they came from
     given(lambda: TrainConfig(steps=50, budget_minutes=1, warmup=500, budget_step_seconds=1.2)), RunError,
     "warmup 500 is more than the 50 steps that budget_minutes 1 allows (at 1.200 s/step measured)"),
    ("train-config-step-seconds-text", given(lambda: TrainConfig(budget_step_seconds="x")), RunError,
     "budget_step_seconds must be a positive number, got 'x' (str)"),
    # pretrain: each value checked up front and named as its --flag                [were refused after the vocabulary,
    ("pretrain-weight-decay-above-one", pretrain_flags("--weight_decay", "5"), 2,  # naming TrainConfig's fields,
     "--weight_decay must be in [0, 1], got 5.0: AdamW's decoupled decay"),        # or silent where marked]
    ("pretrain-warmup-past-steps", pretrain_flags("--warmup", "100000"), 2,  # [was silent]
     "--warmup 100000 is more than --steps 1"),
    ("pretrain-clip-norm-inf", pretrain_flags("--clip_norm", "inf"), 2, "--clip_norm must be a number >= 0, got inf"),
    ("pretrain-lr-nan", pretrain_flags("--lr", "nan"), 2, "--lr must be a positive number, got nan"),
    ("pretrain-budget-nan", pretrain_flags("--budget_minutes", "nan"), 2,
     "--budget_minutes must be a positive number, got nan"),
    ("pretrain-heads-do-not-divide", pretrain_flags("--num_attention_heads", "3"), 2,
     "--hidden_size 8 must be divisible by --num_attention_heads 3"),
    ("pretrain-config-weight-decay", pretrain_config({"weight_decay": 5}), 2,  # [was silent]
     '"weight_decay" must be in [0, 1], got 5'),
    ("pretrain-config-step-seconds-text", pretrain_config({"budget_step_seconds": "x"}), 2,  # [was silent]
     '"budget_step_seconds" must be a positive number, got \'x\' (str)'),
    ("pretrain-config-warmup-past-steps", pretrain_config({"steps": 10, "warmup": 100}), 2,  # [was silent]
     "--warmup 100 is more than --steps 10"),
    # pretrain: a learning rate that diverges at the last update: exit 1, the divergence named
    # [was: exit 2, "cannot convert float NaN to integer" from the summary's heat map, NaN weights exported]
    ("pretrain-lr-1e9-one-step", pretrain_run("--lr", "1e9"), 1,
     "step 1: with the weights of its update, the MLM (generator) loss mlm_loss=nan"),
    ("pretrain-lr-1e30-one-step", pretrain_run("--lr", "1e30"), 1, "step 1: with the weights of its update"),
    ("pretrain-lr-1e9-two-steps", pretrain_run("--steps", "2", "--lr", "1e9", "--warmup", "0"), 1,  # [held]
     "step 2: the MLM (generator) loss mlm_loss=nan"),
    ("build-vocab-min-frequency-negative",
     lambda w, tmp: ["build-vocab", "--corpus", str(w / "corpus.txt"), "--min_frequency", "-5", "--out",
                     str(tmp / "v.txt")], 2, "--min_frequency must be an integer >= 1, got -5"),
    # 2. environment variables and thread counts
    ("threads-zero", given(["gradcheck", "--threads", "0"]), 2, "--threads must be >= 1"),  # [held]
    ("threads-text", given(["gradcheck", "--threads", "two"]), 2,  # [was: the small pre-parser's usage, 2 lines]
     "--threads must be >= 1 (a whole number of threads), got 'two'"),
    ("threads-env-text", cli_env({"ELECTRA_NP_THREADS": "abc"}, "gradcheck", "--max_entries", "1"), 2,  # [held]
     "ELECTRA_NP_THREADS must be a positive integer, got 'abc'"),
    ("threads-env-underscore", given(with_env("ELECTRA_NP_THREADS", "3_0", runtime.thread_count)), ValueError,
     "ELECTRA_NP_THREADS must be a positive integer, got '3_0'"),  # [was silent: int() read 30]
    ("threads-above-cpus-warn", cli_env({}, "detect", "--threads", "1000", "--help"), 0,  # [was silent]
     "warning: 1000 threads asked for, but this process may run on"),
    # 3. model folders                                         [were tracebacks, or silent where marked]
    ("detect-truncated-npz", detect(truncated_npz), 2, "model.npz: not a readable .npz file, truncated or damaged"),
    ("hf-truncated-npz", hf_load(truncated_npz), ValueError, "model.npz: not a readable .npz file"),
    ("export-truncated-npz", lambda w, tmp: ["export", str(truncated_npz(w, tmp)), "--out", str(tmp / "out")], 2,
     "model.npz: not a readable .npz file"),
    ("detect-config-size-text", detect(lambda w, tmp: edit_json(copy_of(w, tmp), "config.json",
                                                                 lambda d: d.update(hidden_size="8"))), 2,
     "config.json: ElectraConfig.hidden_size must be a positive integer, got '8' (str)"),
    ("detect-architectures-text", detect(lambda w, tmp: edit_json(copy_of(w, tmp), "config.json",
                                                                   lambda d: d.update(architectures=5))), 2,
     "config.json: architectures must be a list of class names, got 5"),
    ("detect-tokenizer-lowercase-no", detect(lambda w, tmp: edit_json(copy_of(w, tmp), "tokenizer_config.json",
                                                                       lambda d: d.update(do_lower_case="no"))), 2,
     "tokenizer_config.json: do_lower_case must be true or false, got 'no'"),  # [was silent: "no" lowercased]
    ("detect-run-json-objective-list",
     lambda w, tmp: ["detect", "--backend", "numpy", "--corrupt", "--model",
                     str(edit_json(copy_of(w, tmp, "run"), "run.json", lambda d: d.update(pretraining_config=[1]))),
                     "the cat"], 2, "run.json: pretraining_config must be a JSON object"),
    ("detect-run-json-objective-range",
     lambda w, tmp: ["detect", "--backend", "numpy", "--corrupt", "--model",
                     str(edit_json(copy_of(w, tmp, "run"), "run.json",
                                   lambda d: d.update(pretraining_config={"temperature": 1e9}))), "the cat"], 2,
     "run.json: PretrainingConfig.temperature must be in (0, 100]"),
    ("hf-nan-weights", hf_load(nan_weights), ValueError, "holds NaN or infinite values"),  # [was silent]
    ("hf-label2id-list", hf_load(lambda w, tmp: edit_json(copy_of(w, tmp, "clf"), "config.json",
                                                          lambda d: d.update(label2id=["a", "b"]))), ValueError,
     "config.json: label2id must be a JSON object of label names and class ids, got list"),
    ("hf-label-ids-gap", lambda w, tmp: lambda: config_labels({"label2id": {"neg": 0, "pos": 5}}, "c.json"),
     ValueError, "c.json: label2id must give the class ids 0..1 once each"),  # [was silent: class 5 of 2]
    ("hf-num-labels-text", hf_load(lambda w, tmp: edit_json(copy_of(w, tmp, "clf"), "config.json",
                                                            lambda d: [d.pop("id2label"), d.pop("label2id"),
                                                                       d.update(num_labels="2")])), ValueError,
     "config.json: num_labels must be a positive integer, got '2'"),
    ("gradcheck-max-entries-zero", given(["gradcheck", "--max_entries", "0"]), 2,  # [was numpy's "zero-size array"]
     "--max_entries must be an integer >= 1, got 0"),
    ("gradcheck-max-entries-negative", given(["gradcheck", "--max_entries", "-3"]), 2,
     "--max_entries must be an integer >= 1, got -3"),
    ("gradcheck-api-max-entries-zero",
     given(lambda: check_function(lambda: 0.0, {"x": np.zeros(3)}, {"x": np.zeros(3)}, max_entries=0)), ValueError,
     "max_entries must be None (every entry) or an integer >= 1, got 0"),  # [was silent: an empty check passed]
    ("gradcheck-api-float32",
     given(lambda: check_function(lambda: 0.0, {"x": np.zeros(3, np.float32)}, {"x": np.zeros(3)})), ValueError,
     "gradient checks need float64 parameters; x is float32"),
    ("detect-mask-prob", given(["detect", "--corrupt", "--mask_prob", "1.5", "the cat"]), 2,
     "--mask_prob must be in (0, 1), got 1.5"),
    ("detect-mask-prob-nan", given(["detect", "--corrupt", "--mask_prob", "nan", "the cat"]), 2,
     "--mask_prob must be in (0, 1), got nan"),
    ("detect-seed-negative", given(["detect", "--corrupt", "--seed", "-1", "the cat"]), 2,  # [was numpy's message]
     "--seed must be an integer >= 0, got -1"),
    # 4. API traps: layouts that were read as another                                        [all were silent]
    ("positions-per-row-ragged", given(lambda: positions_from_indices([[1, 3, 4], [2]], 2, 5)), ValueError,
     "per-row lists? use positions_from_rows"),
    ("positions-per-row-three-each", given(lambda: positions_from_indices([[1, 2, 3], [0, 2, 4]], 2, 5)), ValueError,
     "must be (batch, position) pairs, an (N, 2) array, got shape (2, 3)"),
    ("positions-float", given(lambda: positions_from_indices([[0, 1.7]], 2, 5)), ValueError,
     "must be integer (batch, position) pairs, got dtype float64"),
    ("positions-rows-given-flat", given(lambda: positions_from_rows([1, 3], 5)), ValueError,
     "row 0 of the masked positions must be a list of positions, got 1"),
    ("samples-per-row-ragged", corruption_case([[7, 9], [11]]), ValueError,
     "corruption.samples must be one flat list of integer token ids"),
    ("samples-per-row-square", corruption_case([[7, 9], [11, 12]], masked=((0, 1), (0, 3), (1, 2), (1, 4))),
     ValueError, "corruption.samples must be one flat list of integer token ids, one per masked position"),
    ("samples-positions-not-masked", corruption_case([7, 9, 11], [(0, 1), (0, 3), (1, 4)]), ValueError,
     "corruption.positions must mark exactly the positions of corruption.masked"),
    ("samples-positions-fewer", corruption_case([7, 9, 11], [(0, 1), (0, 3)]), ValueError,
     "corruption.positions has 2 pairs but corruption.samples 3 tokens"),
    ("samples-without-positions-warn", corruption_case([7, 9, 11]), SampleOrderWarning,
     "read in row-major order of masked"),
    # 5. more of the same kind, already refused: held here so that they stay so
    ("pretrain-seq-len-zero", pretrain_flags("--seq_len", "0"), 2, "seq_len"),
    ("pretrain-batch-size-negative", pretrain_flags("--batch_size", "-1"), 2, "batch_size"),
    ("pretrain-snapshots-above-one", pretrain_flags("--snapshots", "1.5"), 2, "snapshots"),
    ("pretrain-eval-fraction-above-one", pretrain_flags("--eval_fraction", "1.2"), 2, "eval_fraction"),
    ("build-vocab-size-three", lambda w, tmp: ["build-vocab", "--corpus", str(w / "corpus.txt"), "--vocab_size", "3",
                                               "--out", str(tmp / "v.txt")], 2, "vocab_size"),
    ("prepare-seq-len-zero",  # [was: "max_seq_length must be...", an option the command does not have]
     lambda w, tmp: ["prepare", "--corpus", str(w / "corpus.txt"), "--out_dir", str(tmp / "p"), "--seq_len", "0"], 2,
     "--seq_len must be an integer >= 5, got 0"),
    ("prepare-seed-negative",  # [was silent]
     lambda w, tmp: ["prepare", "--corpus", str(w / "corpus.txt"), "--out_dir", str(tmp / "p"), "--seed", "-1"], 2,
     "--seed must be an integer >= 0, got -1"),
    ("corpus-not-utf8", lambda w, tmp: ["build-vocab", "--corpus", str(write(tmp / "c.txt", b"\xff\xfe ok\n")),
                                        "--out", str(tmp / "v.txt")], 2, "UTF-8"),
    ("corpus-is-a-folder", lambda w, tmp: ["build-vocab", "--corpus", str(tmp), "--out", str(tmp / "v.txt")], 2,
     "not a file"),
    ("corpus-empty", lambda w, tmp: ["build-vocab", "--corpus", str(write(tmp / "c.txt", b"")), "--out",
                                     str(tmp / "v.txt")], 2, "empty"),
    # 6. what finetune, evaluate, predict and export read: classifiers, labels, tokenizers  [were tracebacks or silent]
    ("finetune-truncated-npz", finetune_on(truncated_npz), 2,  # [was a traceback: zipfile.BadZipFile]
     "model.npz: not a readable .npz file, truncated or damaged"),
    ("evaluate-truncated-npz", classify("evaluate", lambda w, tmp: truncated_npz(w, tmp, "clf")), 2,
     "model.npz: not a readable .npz file, truncated or damaged"),
    ("predict-truncated-npz", classify("predict", lambda w, tmp: truncated_npz(w, tmp, "clf")), 2,
     "model.npz: not a readable .npz file, truncated or damaged"),
    ("finetune-label2id-list", finetune_on(npz_classifier(label2id(["neg", "pos"], keep_id2label=True))), 2,
     "config.json: label2id must be a JSON object of label names and class ids, got list"),
    ("evaluate-label2id-list", classify("evaluate", npz_classifier(label2id(["neg", "pos"]))), 2,
     "config.json: label2id must be a JSON object of label names and class ids, got list"),
    ("predict-label-ids-gap", classify("predict", npz_classifier(label2id({"neg": 0, "pos": 5}))), 2,  # [silent]
     "config.json: label2id must give the class ids 0..1 once each"),
    ("predict-labels-more-than-head", classify("predict", npz_classifier(label2id({"a": 0, "b": 1, "c": 2}))), 2,
     "config.json: label2id names 3 classes but the classifier head has 2 outputs"),  # [was silent]
    ("predict-tokenizer-lowercase-no", classify("predict", lowercase_no(npz_classifier())), 2,  # [was silent]
     "tokenizer_config.json: do_lower_case must be true or false, got 'no'"),
    ("export-tokenizer-lowercase-no", export_of(lowercase_no(copy_of)), 2,  # [was silent]
     "tokenizer_config.json: do_lower_case must be true or false, got 'no'"),
    ("export-label2id-list", export_of(npz_classifier(label2id(["neg", "pos"]))), 2,
     "config.json: label2id must be a JSON object of label names and class ids, got list"),
    ("export-label-ids-gap", export_of(npz_classifier(label2id({"neg": 0, "pos": 5}))), 2,  # [was: no file named]
     "config.json: label2id must give the class ids 0..1 once each"),
    ("finetune-vocab-folder", finetune_on(lambda w, tmp: w / "run" / "discriminator", lambda w, tmp: w / "run"), 2,
     "run: a folder, expected a vocab.txt file"),  # [was: "no vocab.txt here or in its run folder"]
    ("detect-vocab-missing",
     lambda w, tmp: ["detect", "--backend", "numpy", "--model", str(w / "run"), "--vocab", str(tmp / "nope.txt"),
                     "the cat"], 2, "nope.txt: no such file (expected a vocab.txt file)"),  # [was: "no vocab.txt here"]
    ("tokenizer-lowercase-text", given(lambda: Tokenizer(TOKENS, do_lower_case="no")), ValueError,  # [was silent]
     "do_lower_case must be True or False, got 'no' (str)"),
    ("tokenizer-strip-accents-number", given(lambda: Tokenizer(TOKENS, strip_accents=0)), ValueError,  # [silent]
     "strip_accents must be True, False or None (follow do_lower_case), got 0 (int)"),
]


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case, build, expected, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(w, tmp_path, monkeypatch, capsys, case, build, expected, fragment):
    monkeypatch.setenv("ELECTRA_NP_CACHE", str(tmp_path / "cache"))
    made = build(w, tmp_path)
    if isinstance(expected, int):
        code, err = run_cli(made, capsys)
        assert code == expected, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert fragment in err, err
        assert not (tmp_path / "out").exists()  # nothing written
    elif issubclass(expected, Warning):
        with pytest.warns(expected, match=fragment_pattern(fragment)):
            made()
    else:
        with pytest.raises(expected, match=fragment_pattern(fragment)):
            made()


def run_cli(made, capsys):
    """(exit code, stderr) of main(argv) in this process, or of `python -m electra_np` with an environment."""
    if isinstance(made, tuple):
        _, env, argv = made
        proc = subprocess.run([sys.executable, "-m", "electra_np", *argv], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=600)
        return proc.returncode, proc.stderr
    capsys.readouterr()
    try:
        code = cli.main(made)
    except SystemExit as e:  # argparse's own exits
        code = e.code
    return code, capsys.readouterr().err


def fragment_pattern(fragment):
    return re.escape(fragment)


# ----------------------------------------------------------------------------- the API traps, token by token

def test_per_row_lists_and_pairs_are_told_apart():
    """The input a user builds for two rows of two masked positions each: [[1, 3], [0, 2]]. As pairs it marks
    (1, 3) and (0, 2); as rows, positions 1 and 3 of row 0 and 0 and 2 of row 1. Each function reads its own layout,
    so the same list gives two different masks, and neither is read as the other."""
    rows = [[1, 3], [0, 2]]
    by_rows = positions_from_rows(rows, 5)
    by_pairs = positions_from_indices(rows, 2, 5)
    np.testing.assert_array_equal(np.argwhere(by_rows), [[0, 1], [0, 3], [1, 0], [1, 2]])
    np.testing.assert_array_equal(np.argwhere(by_pairs), [[0, 2], [1, 3]])
    ragged = positions_from_rows([[4, 1, 3], [2]], 5)  # rows of different lengths, positions in any order
    np.testing.assert_array_equal(np.argwhere(ragged), [[0, 1], [0, 3], [0, 4], [1, 2]])
    with pytest.raises(ValueError, match="duplicates"):
        positions_from_rows([[1, 1], []], 5)
    with pytest.raises(ValueError, match="outside the batch shape"):
        positions_from_rows([[5]], 5)


def test_samples_with_positions_sit_on_their_tokens_in_any_order():
    """Samples listed column by column (position 1 of each row, then position 3), with their positions: the model
    puts each sample on its own token. Without positions the same list would have landed row-major, on the
    wrong tokens (the old silent misread), and now warns."""
    setup = Electra.build(CONFIG, PretrainingConfig(generator_hidden_size=1.0))
    params = setup.init_params(0, np.float64)
    ids = np.array([[2, 5, 6, 7, 3], [2, 8, 9, 10, 3]])
    pairs = [(0, 1), (1, 1), (0, 3), (1, 3)]  # column-major
    samples = [11, 12, 9, 8]  # token 11 at (0, 1), 12 at (1, 1), 9 at (0, 3), 8 at (1, 3)
    masked = positions_from_indices(pairs, 2, 5)
    c = Corruption(masked, masked, samples, pairs)
    np.testing.assert_array_equal(c.samples, [11, 9, 12, 8])  # row-major now
    np.testing.assert_array_equal(c.positions, [[0, 1], [0, 3], [1, 1], [1, 3]])
    cache = electra_forward(params, setup, {"input_ids": ids}, corruption=c, train=False)[2]
    shown = ids.copy()
    shown[0, 1], shown[1, 1], shown[0, 3], shown[1, 3] = 11, 12, 9, 8
    np.testing.assert_array_equal(cache["labels"], (shown != ids).astype(np.int64))
    row_major = Corruption(masked, masked, np.array([11, 9, 12, 8]), np.argwhere(masked))
    same = electra_forward(params, setup, {"input_ids": ids}, corruption=row_major, train=False)[0]
    assert float(same) == float(electra_forward(params, setup, {"input_ids": ids}, corruption=c, train=False)[0])
    with pytest.warns(SampleOrderWarning):
        unchecked = Corruption(masked, masked, samples)  # column-major samples, no positions
    assert not np.array_equal(unchecked.samples, c.samples)


def test_corruption_changed_after_it_was_made_is_refused():
    setup = Electra.build(CONFIG, PretrainingConfig(generator_hidden_size=1.0))
    params = setup.init_params(0, np.float64)
    masked = positions_from_indices([(0, 1), (0, 2)], 1, 5)
    c = Corruption(masked, masked, [5, 6], [(0, 2), (0, 1)])
    c.masked = c.use_mask_token = positions_from_indices([(0, 1), (0, 3)], 1, 5)
    with pytest.raises(ValueError, match="corruption.positions no longer mark corruption.masked"):
        electra_forward(params, setup, {"input_ids": np.array([[2, 5, 6, 7, 3]])}, corruption=c, train=False)


def test_one_sample_or_none_needs_no_positions():
    masked = positions_from_indices([(0, 1)], 1, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Corruption(masked, masked, [7])  # one sample: no order to get wrong
        Corruption(masked, masked)  # samples drawn by the model, in its own order


def test_thread_count_above_the_cpus_is_kept():
    """The count asked for stands (results depend on it: the same count gives the same bits on any machine)."""
    n = runtime.available_cpus() + 3
    assert runtime.thread_count(n) == n
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        runtime.thread_count(0)
