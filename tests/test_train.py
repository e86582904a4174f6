"""The pretraining loop: exact resume, atomic checkpoints, NaN stop, the saved models, and learning.

Most tests train a very small model (1 layer, H=32, T=32) on a synthetic corpus through `electra-np
pretrain` in-process; the learning test runs the tiny preset on the embedded corpus.
"""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from electra_np.cli import main as cli
from electra_np.params import discriminator_shapes, generator_shapes
from electra_np.train import budget, checkpoint, loop, run_dir

SMALL = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "1",
         "--num_attention_heads", "2", "--seq_len", "32", "--batch_size", "8", "--vocab_size", "300",
         "--backend", "numpy", "--log_every", "1", "--eval_examples", "16"]
LOSS_KEYS = ("loss", "mlm_loss", "disc_loss", "mlm_acc", "disc_acc", "replaced_frac", "grad_norm")


def synthetic_text(seed=0, documents=150):
    """English-like sentences from a small grammar: documents of 3-6 lines, blank lines between them."""
    rng = random.Random(seed)
    nouns = "cat dog bird parser module function value object list table server client file".split()
    verbs = "reads writes returns holds sends finds opens closes checks builds".split()
    adjs = "small large quick lazy empty full new old valid broken".split()
    docs = []
    for _ in range(documents):
        lines = []
        for _ in range(rng.randint(3, 6)):
            words = ["the", rng.choice(adjs), rng.choice(nouns), rng.choice(verbs), "a", rng.choice(nouns)]
            if rng.random() < 0.5:
                words += ["with", "the", rng.choice(adjs), rng.choice(nouns)]
            lines.append(" ".join(words) + ".")
        docs.append("\n".join(lines))
    return "\n\n".join(docs) + "\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private electra_np cache and a small synthetic corpus."""
    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        corpus = root / "corpus.txt"
        corpus.write_text(synthetic_text(), encoding="utf-8")
        yield {"root": root, "corpus": str(corpus)}


def pretrain(env, out_dir, *extra):
    return cli.main(["pretrain", "--corpus", env["corpus"], "--out_dir", str(out_dir), *SMALL, *extra])


def metrics(out_dir, split="train"):
    lines = (Path(out_dir) / run_dir.METRICS_NAME).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def crash_at(monkeypatch, call, exc=RuntimeError("simulated crash")):
    """Make the training step raise at its `call`-th call (1-based), as a killed process would stop."""
    real = loop.make_step

    def make(setup, backend):
        step, calls = real(setup, backend), [0]

        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == call:
                raise exc
            return step(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(loop, "make_step", make)


def nan_at(monkeypatch, call, term):
    """Make the training step report a NaN `term` (mlm_loss or disc_loss) at its `call`-th call."""
    real = loop.make_step

    def make(setup, backend):
        step, calls = real(setup, backend), [0]

        def wrapped(*args, **kwargs):
            loss, m, grads = step(*args, **kwargs)
            calls[0] += 1
            if calls[0] == call:
                m = dict(m, **{term: float("nan"), "loss": float("nan")})
            return loss, m, grads

        return wrapped

    monkeypatch.setattr(loop, "make_step", make)


# ----------------------------------------------------------------------------- resume

def test_resume_is_bit_identical(env, tmp_path, monkeypatch):
    full, split = tmp_path / "full", tmp_path / "split"
    assert pretrain(env, full, "--steps", "10", "--save_every", "3", "--eval_every", "5") == 0

    # session 1 stops at step 4 with a checkpoint; session 2 crashes in step 8 (last checkpoint: step 6)
    assert pretrain(env, split, "--steps", "10", "--save_every", "3", "--eval_every", "5", "--stop_at", "4") == 0
    assert checkpoint.read_meta(split / run_dir.CHECKPOINT_NAME)["step"] == 4
    with monkeypatch.context() as mp:
        crash_at(mp, 4)  # the 4th step of this session is step 8
        with pytest.raises(RuntimeError, match="simulated crash"):
            cli.main(["pretrain", "--out_dir", str(split), "--resume"])
    assert checkpoint.read_meta(split / run_dir.CHECKPOINT_NAME)["step"] == 6
    assert [r["step"] for r in metrics(split)] == [1, 2, 3, 4, 5, 6, 7]
    assert cli.main(["pretrain", "--out_dir", str(split), "--resume"]) == 0

    a, b = metrics(full), metrics(split)
    assert [r["step"] for r in b] == list(range(1, 11))  # lines after the last checkpoint were dropped
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in LOSS_KEYS} == {k: rb[k] for k in LOSS_KEYS}, ra["step"]
    assert [{k: r[k] for k in LOSS_KEYS[:3]} for r in metrics(full, "eval")] == \
        [{k: r[k] for k in LOSS_KEYS[:3]} for r in metrics(split, "eval")]
    arrays_a, meta_a = checkpoint.load(full / run_dir.CHECKPOINT_NAME)
    arrays_b, meta_b = checkpoint.load(split / run_dir.CHECKPOINT_NAME)
    assert arrays_a.keys() == arrays_b.keys()
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)  # parameters and AdamW moments
    assert meta_a["rng_state"] == meta_b["rng_state"] and meta_a["sampler_state"] == meta_b["sampler_state"]
    for kind in ("discriminator", "generator"):
        with np.load(full / kind / "model.npz") as za, np.load(split / kind / "model.npz") as zb:
            assert all(np.array_equal(za[k], zb[k]) for k in za.files)


def test_checkpoint_holds_the_whole_state(env, tmp_path):
    out = tmp_path / "run"
    assert pretrain(env, out, "--steps", "3", "--eval_every", "0") == 0
    arrays, meta = checkpoint.load(out / run_dir.CHECKPOINT_NAME)
    params = checkpoint.group(arrays, "params")
    assert set(checkpoint.group(arrays, "adam_m")) == set(checkpoint.group(arrays, "adam_v")) == set(params)
    assert meta["step"] == 3 and meta["optimizer"]["t"] == 3
    assert meta["rng_state"]["bit_generator"] == "PCG64"
    assert {"epoch", "position", "seed", "batch_size"} <= set(meta["sampler_state"])
    assert meta["model_config"]["hidden_size"] == 32 and meta["pretraining_config"]["disc_weight"] == 50.0
    assert meta["training"]["steps"] == 3 and meta["training"]["warmup"] == 0  # min(10000, 10% of 3 steps)
    assert meta["vocab"][:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(meta["vocab"]) == meta["model_config"]["vocab_size"]
    assert (out / "vocab.txt").read_text().splitlines() == meta["vocab"]
    record = metrics(out)[-1]
    for key in ("step", "loss", "mlm_loss", "disc_loss", "mlm_acc", "disc_acc", "replaced_frac", "lr",
                "tokens_per_s", "time_left_s"):
        assert key in record


# ----------------------------------------------------------------------------- checkpoint files

def test_checkpoint_damage_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, {"params/w": np.arange(20000, dtype=np.float32)}, {"step": 1})
    arrays, meta = checkpoint.load(path)
    assert meta["step"] == 1 and np.array_equal(arrays["params/w"], np.arange(20000, dtype=np.float32))
    data = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated.npz.*truncated or corrupted"):
        checkpoint.load(truncated)
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:])
    with pytest.raises(checkpoint.CheckpointError, match="flipped.npz.*truncated or corrupted"):
        checkpoint.load(flipped)
    other = tmp_path / "other.npz"
    np.savez(other, w=np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError, match="not an electra_np checkpoint"):
        checkpoint.load(other)
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.npz")


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from electra_np import atomic
    from electra_np.train import checkpoint

    path, mode = sys.argv[1], sys.argv[2]
    checkpoint.save(path, {"params/w": np.full(1000, 1.0, np.float32)}, {"step": 1})  # the last good one
    big = {"params/w": np.full(4_000_000, 2.0, np.float32)}  # 16 MB
    if mode == "mid-write":  # die after 1 MB of the new archive reached the disk
        class Dying:
            def __init__(self, f):
                self.f, self.n = f, 0
            def write(self, b):
                b = memoryview(b).cast("B")
                if self.n + len(b) > 1 << 20:  # write up to 1 MB, then die
                    self.f.write(b[:(1 << 20) + 1 - self.n])
                    self.f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                self.n += len(b)
                return self.f.write(b)
            def __getattr__(self, name):
                return getattr(self.f, name)
        savez = np.savez
        checkpoint.np.savez = lambda f, **arrays: savez(Dying(f), **arrays)
    else:  # die after the whole archive is written and fsync'ed, just before the rename
        atomic.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save(path, big, {"step": 2})
    print("not killed")
""")


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_killed_save_leaves_the_last_checkpoint(tmp_path, mode):
    path = tmp_path / "checkpoint.npz"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), mode], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    arrays, meta = checkpoint.load(path)
    assert meta["step"] == 1 and np.array_equal(arrays["params/w"], np.ones(1000, np.float32))
    stale = list(tmp_path.glob(".tmp-*"))
    assert stale and stale[0].stat().st_size > 500_000  # the killed save's partial file, beside it
    checkpoint.save(path, {"params/w": np.zeros(2, np.float32)}, {"step": 3})  # the next save cleans up
    assert not list(tmp_path.glob(".tmp-*")) and checkpoint.read_meta(path)["step"] == 3


# ----------------------------------------------------------------------------- NaN

@pytest.mark.parametrize("term, words", [("disc_loss", "discriminator loss disc_loss=nan"),
                                         ("mlm_loss", "MLM (generator) loss mlm_loss=nan")])
def test_nan_stops_training_and_keeps_the_checkpoint(env, tmp_path, monkeypatch, capsys, term, words):
    ref, out = tmp_path / "ref", tmp_path / "nan"
    assert pretrain(env, ref, "--steps", "8", "--stop_at", "3", "--eval_every", "0") == 0
    nan_at(monkeypatch, 5, term)
    capsys.readouterr()
    assert pretrain(env, out, "--steps", "8", "--save_every", "3", "--eval_every", "0") == cli.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert f"step 5: the {words}" in err and "training stopped" in err
    assert "last good checkpoint (step 3) is intact" in err and "Traceback" not in err
    good, meta = checkpoint.load(out / run_dir.CHECKPOINT_NAME)
    expected, _ = checkpoint.load(ref / run_dir.CHECKPOINT_NAME)
    assert meta["step"] == 3 and all(np.array_equal(good[k], expected[k]) for k in expected)
    assert not (out / "discriminator").exists()


# ----------------------------------------------------------------------------- the result

def test_final_models_are_ready_for_finetuning(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(env, out, "--steps", "4", "--eval_every", "2") == 0
    text = capsys.readouterr().out
    assert "discriminator accuracy" in text and "checkpoint: " in text and "P(replaced)" in text
    # the demo is render.py's heat map: its summary counts agree with the verdict row above it
    demo = text[text.index("demo on a"):].splitlines()
    counts = next(line for line in demo if "replaced " in line and ": caught " in line)
    verdicts = " ".join(demo[:-1])
    caught, missed = (int(counts.split(f"{k} ")[1].split(",")[0].split(";")[0]) for k in ("caught", "missed"))
    assert caught == verdicts.split().count("caught") and missed == verdicts.split().count("missed")
    try:  # the run draws its curves at the end when the plot extra is there, and says where
        import matplotlib  # noqa: F401
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"curves: {out / 'curves.png'}" in text
    except ImportError:
        assert not (out / "curves.png").exists() and "curves:" not in text
    for kind, shapes_of in (("discriminator", discriminator_shapes), ("generator", generator_shapes)):
        folder = out / kind
        config = json.loads((folder / "config.json").read_text())
        from electra_np.config import ElectraConfig

        cfg = ElectraConfig.from_dict(config)
        with np.load(folder / "model.npz") as z:
            assert {k: z[k].shape for k in z.files} == shapes_of(cfg)
        assert (folder / "vocab.txt").read_text() == (out / "vocab.txt").read_text()
    gen = ElectraConfig.from_dict(json.loads((out / "generator" / "config.json").read_text()))
    assert gen.hidden_size == 8  # generator_hidden_size 0.25 of H=32
    try:
        import safetensors  # noqa: F401

        from electra_np import hf
    except ImportError:
        return
    config, params, kind = hf.from_pretrained(out / "discriminator")
    assert kind == "discriminator" and config.hidden_size == 32


def test_mlm_objective_saves_only_the_generator(env, tmp_path, capsys):
    out = tmp_path / "mlm"
    assert pretrain(env, out, "--steps", "3", "--objective", "mlm", "--eval_every", "0") == 0
    assert (out / "generator" / "model.npz").is_file() and not (out / "discriminator").exists()
    assert "predicted:" in capsys.readouterr().out
    assert "disc_loss" not in metrics(out)[-1]


def test_learning_on_the_embedded_corpus(env, tmp_path):
    """The tiny preset (its objective defaults: mask_prob 0.25, temperature 3) on the stdlib-docstring corpus,
    the longest test here (150 steps): the loss falls and the discriminator beats the always-original baseline on
    held-out text."""
    out = tmp_path / "learn"
    rc = cli.main(["pretrain", "--out_dir", str(out), "--seq_len", "64", "--batch_size", "16", "--steps", "150",
                   "--lr", "1e-3", "--backend", "numpy", "--log_every", "10", "--eval_every", "50",
                   "--save_every", "0"])
    assert rc == 0
    first = metrics(out)[0]["loss"]  # the mean of the first 10 steps
    evals = metrics(out, "eval")
    final = evals[-1]
    assert [e["step"] for e in evals] == [50, 100, 150] and final["examples"] >= 100
    assert final["loss"] < 0.65 * first, (first, final)
    assert final["disc_acc"] > final["disc_baseline_acc"] + 0.05, final
    assert final["disc_loss"] < evals[0]["disc_loss"] and final["mlm_loss"] < 6.5
    # its lines are docstring paragraphs: split into sentences by default (at 64 tokens packing then drops 25% of
    # the tokens, each example's last sentence overflowing as in the official code, against 34% unsplit)
    assert json.loads((out / run_dir.RUN_NAME).read_text())["data_source"]["split_sentences"] is True
    cut = re.search(r"packing cut off (\d+)% of the corpus", (out / run_dir.LOG_NAME).read_text())
    assert cut and 15 <= int(cut.group(1)) <= 30, cut


# ----------------------------------------------------------------------------- a wall-clock budget

def test_budget_sets_the_steps_and_resume_keeps_them(env, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "measure_step_seconds", lambda *a: (0.25, 2.0))
    out = tmp_path / "budget"
    assert pretrain(env, out, "--budget_minutes", "0.1", "--eval_every", "4", "--stop_at", "3") == 0
    # a step 0.25 s + a 2 s evaluation every 4 steps = 0.75 s per step; 6 s / 0.75 s = 8 steps
    training = json.loads((out / run_dir.RUN_NAME).read_text())["training"]
    assert (training["steps"], training["budget_step_seconds"], training["warmup"]) == (8, 0.75, 0)
    log = (out / run_dir.LOG_NAME).read_text()
    assert "budget 0.1 min: 0.750 s/step measured -> 8 steps" in log
    assert "linear decay to 0 at step 8, set by a 0.1 min budget at 0.750 s/step" in log

    def measure(*a):
        raise AssertionError("a resumed run measured again")

    monkeypatch.setattr(budget, "measure_step_seconds", measure)
    assert cli.main(["pretrain", "--out_dir", str(out), "--resume"]) == 0
    assert checkpoint.read_meta(out / run_dir.CHECKPOINT_NAME)["step"] == 8
    assert [r["step"] for r in metrics(out, "eval")] == [4, 8]


def test_a_budget_keeps_a_warmup_its_steps_allow_and_refuses_one_past_them(env, tmp_path, monkeypatch, capsys):
    """The warmup is checked against the steps once they are known: with a budget, after the measurement (the
    default warmup, min(10000, steps / 10), always fits; an explicit one must)."""
    monkeypatch.setattr(budget, "measure_step_seconds", lambda *a: (0.25, 0.0))  # 6 s / 0.25 s = 24 steps
    fits, past = tmp_path / "fits", tmp_path / "past"
    assert pretrain(env, fits, "--budget_minutes", "0.1", "--warmup", "24", "--stop_at", "1") == 0
    training = json.loads((fits / run_dir.RUN_NAME).read_text())["training"]
    assert (training["steps"], training["warmup"]) == (24, 24)
    capsys.readouterr()
    assert pretrain(env, past, "--budget_minutes", "0.1", "--warmup", "25") == 2
    err = capsys.readouterr().err
    assert "warmup 25 is more than the 24 steps that budget_minutes 0.1 allows (at 0.250 s/step measured)" in err, err
    assert not (past / run_dir.RUN_NAME).exists()


def test_measuring_the_step_time_leaves_the_run_as_it_was(env, tmp_path):
    """A real measurement on the small model; a run given the steps it found computes the same losses and
    parameters."""
    timed, counted = tmp_path / "timed", tmp_path / "counted"
    assert pretrain(env, timed, "--budget_minutes", "0.02", "--eval_every", "0", "--save_every", "0") == 0
    training = json.loads((timed / run_dir.RUN_NAME).read_text())["training"]
    steps = training["steps"]
    assert steps == max(1, math.floor(0.02 * 60 / training["budget_step_seconds"])) and steps > 1
    assert training["warmup"] == steps // 10
    assert pretrain(env, counted, "--steps", str(steps), "--eval_every", "0", "--save_every", "0") == 0
    a, b = metrics(timed), metrics(counted)
    assert len(a) == len(b) == steps
    assert [{k: r[k] for k in LOSS_KEYS} for r in a] == [{k: r[k] for k in LOSS_KEYS} for r in b]
    arrays_a, _ = checkpoint.load(timed / run_dir.CHECKPOINT_NAME)
    arrays_b, _ = checkpoint.load(counted / run_dir.CHECKPOINT_NAME)
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_b)


# ----------------------------------------------------------------------------- snapshots

def test_snapshot_steps_round_half_up():
    from electra_np.train.snapshots import snapshot_steps

    assert snapshot_steps((0.5,), 5) == {3: (0.5,)}  # 2.5 -> 3 (Python's round would give 2)
    assert snapshot_steps((0.01, 0.25, 0.3, 0.5), 8) == {1: (0.01,), 2: (0.25, 0.3), 4: (0.5,)}
    assert snapshot_steps((), 100) == {}


def snapshot_of(out, step):
    folder = out / "snapshots" / f"step-{step}"
    return folder, json.loads((folder / "snapshot.json").read_text())


def test_snapshots_are_the_models_at_their_steps(env, tmp_path):
    from electra_np.cli.finetune import load_model

    out, ref = tmp_path / "snap", tmp_path / "ref"
    assert pretrain(env, out, "--steps", "8", "--snapshots", "0.25", "0.5", "--eval_every", "4") == 0
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-2", "step-4"]
    assert pretrain(env, ref, "--steps", "8", "--stop_at", "2", "--eval_every", "4") == 0  # the same run, no snapshots
    params = checkpoint.group(checkpoint.load(ref / run_dir.CHECKPOINT_NAME)[0], "params")
    folder, info = snapshot_of(out, 2)
    config, weights, _ = load_model(folder / "discriminator")
    assert config.hidden_size == 32 and weights.keys() == {k[14:] for k in params if k.startswith("discriminator.")}
    assert all(np.array_equal(weights[k], params["discriminator." + k]) for k in weights)
    with np.load(folder / "generator" / "model.npz") as z:
        assert all(np.array_equal(z[k], params.get("generator." + k, params.get("discriminator." + k)))
                   for k in z.files)
    assert (info["step"], info["fraction"], info["fractions"], info["steps"], info["eval"]) == (2, 0.25, [0.25], 8, None)
    assert info["elapsed_s"] > 0 and info["models"] == {"discriminator": "discriminator", "generator": "generator"}
    _, info = snapshot_of(out, 4)
    record = metrics(out, "eval")[0]
    assert record["step"] == 4 and {k: info["eval"][k] for k in record if k not in ("split", "step", "warnings")} == \
        {k: v for k, v in record.items() if k not in ("split", "step", "warnings")}

    assert cli.main(["pretrain", "--out_dir", str(ref), "--resume"]) == 0  # the final export is unchanged
    for kind in ("discriminator", "generator"):
        with np.load(out / kind / "model.npz") as za, np.load(ref / kind / "model.npz") as zb:
            assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
    assert not (ref / "snapshots").exists()


def test_snapshots_survive_a_resume(env, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ("--steps", "8", "--snapshots", "0.25", "0.3", "0.5", "0.6", "--eval_every", "0", "--save_every", "3")
    # snapshots at steps 2 (0.25 and 0.3 * 8 = 2.4), 4 and 5 (0.6 * 8 = 4.8); session 1 writes all three and crashes
    # in step 6, its last checkpoint at step 3
    with monkeypatch.context() as mp:
        crash_at(mp, 6)
        with pytest.raises(RuntimeError, match="simulated crash"):
            pretrain(env, out, *args)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-2", "step-4", "step-5"]
    assert snapshot_of(out, 2)[1]["fractions"] == [0.25, 0.3] and snapshot_of(out, 5)[1]["fraction"] == 0.6
    written = {p: p.read_bytes() for p in (out / "snapshots").rglob("*") if p.is_file()}
    assert cli.main(["pretrain", "--out_dir", str(out), "--resume"]) == 0  # passes steps 4 and 5 again
    assert {p: p.read_bytes() for p in (out / "snapshots").rglob("*") if p.is_file()} == written  # not rewritten
    log = (out / run_dir.LOG_NAME).read_text()
    assert log.count("snapshot at step 4 (50% of 8)") == 1 and log.count("snapshot at step 5 (60% of 8)") == 1

    stopped = tmp_path / "stopped"  # --stop_at 3, then --resume: the same snapshots, the same models
    assert pretrain(env, stopped, *args, "--stop_at", "3") == 0
    assert sorted(p.name for p in (stopped / "snapshots").iterdir()) == ["step-2"]
    assert cli.main(["pretrain", "--out_dir", str(stopped), "--resume"]) == 0
    models = {p.relative_to(out): p.read_bytes() for p in (out / "snapshots").rglob("model.npz")}
    assert len(models) == 6
    assert {p.relative_to(stopped): p.read_bytes() for p in (stopped / "snapshots").rglob("model.npz")} == models


def test_first_run_note_and_steady_time_left(env, tmp_path, capsys, monkeypatch):
    """A run whose kernels are not compiled yet says so before its first step; the time left comes from the
    steady rate (every log window but the session's first, which holds the compilation)."""
    from electra_np.fast import runtime
    from electra_np.train.loop import steady_rate

    monkeypatch.setattr(runtime, "kernels_cached", lambda: False)
    assert pretrain(env, tmp_path / "run", "--steps", "2", "--eval_every", "0", "--backend", "fast") == 0
    lines = capsys.readouterr().out.splitlines()
    note = next(i for i, line in enumerate(lines) if line.startswith("compiling the Numba kernels: the first run"))
    assert note < next(i for i, line in enumerate(lines) if line.startswith("pretraining electra"))
    monkeypatch.setattr(runtime, "kernels_cached", lambda: True)
    assert pretrain(env, tmp_path / "again", "--steps", "2", "--eval_every", "0", "--backend", "fast") == 0
    assert "compiling the Numba kernels" not in capsys.readouterr().out
    assert steady_rate([(40.0, 4)]) == 10.0  # one window: its own rate
    assert steady_rate([(40.0, 4), (4.0, 4), (6.0, 4)]) == 10.0 / 8  # the compiling window left out


def test_log_txt_holds_what_the_console_showed(env, tmp_path, capsys, monkeypatch):
    """log.txt is the whole console output of the run: the vocabulary and data lines printed before the run
    folder existed, the run's lines, and the closing summary (here on a corpus not seen before, so that the
    vocabulary and the examples are built and announced)."""
    corpus = tmp_path / "fresh.txt"
    corpus.write_text(synthetic_text() + "\nanother line of fresh text for a new cache key\n", encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["pretrain", "--corpus", str(corpus), "--out_dir", str(out), *SMALL, "--steps", "2"]) == 0
    shown = capsys.readouterr().out
    assert "building a " in shown and "preparing examples" in shown and "done: 2 steps" in shown
    assert (out / run_dir.LOG_NAME).read_text(encoding="utf-8") == shown


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_a_checkpoint_and_resume_finishes_it(env, tmp_path, signum):
    """Ctrl-C or SIGTERM (a scheduler, `kill`, the end of a session) in the middle of training: the run saves a
    checkpoint at the step it reached, says how to continue, exits 130; --resume finishes the run."""
    out = tmp_path / "signalled"
    cmd = [sys.executable, "-m", "electra_np", "pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL,
           "--steps", "100000", "--eval_every", "0", "--save_every", "0", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ELECTRA_NP_CACHE": str(env["root"] / "cache")})
    for line in proc.stdout:  # training has begun: send the signal between steps
        if line.startswith("step"):
            proc.send_signal(signum)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest
    step = checkpoint.read_meta(out / run_dir.CHECKPOINT_NAME)["step"]
    assert 1 <= step < 100000 and f"interrupted: checkpoint at step {step}" in rest
    assert "continue with --resume" in rest
    assert cli.main(["pretrain", "--out_dir", str(out), "--resume", "--stop_at", str(step + 2)]) == 0
    assert checkpoint.read_meta(out / run_dir.CHECKPOINT_NAME)["step"] == step + 2


@pytest.mark.parametrize("bad_step", [-1, 7, 2.5])
def test_a_checkpoint_step_outside_the_run_is_refused(env, tmp_path, capsys, bad_step):
    """A step beyond --steps would "finish" at once, a negative one would train above the peak lr: refused in one
    line naming the file, exit 2, the checkpoint left as it was."""
    out = tmp_path / "edited"
    assert pretrain(env, out, "--steps", "6", "--stop_at", "2", "--eval_every", "0") == 0
    path = out / run_dir.CHECKPOINT_NAME
    arrays, meta = checkpoint.load(path)
    checkpoint.save(path, arrays, dict(meta, step=bad_step))
    capsys.readouterr()
    assert cli.main(["pretrain", "--out_dir", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"its step {bad_step!r} is outside 0..6" in err and str(path) in err and len(err.splitlines()) == 1
    assert checkpoint.read_meta(path)["step"] == bad_step


# ----------------------------------------------------------------------------- the summary of a diverged model

def test_the_heat_map_shows_nan_instead_of_crashing():
    """A NaN probability (a diverged model's) is shown as "nan", uncoloured; it used to raise "cannot convert
    float NaN to integer" in the summary of a run whose last update diverged."""
    from electra_np.train import render
    from electra_np.train.report import format_demo

    words = render.join_pieces(["the", "cat", "##s"], [0.9, float("nan"), 0.2], originals=["the", "dog", "##s"])
    assert render.heat_code(float("nan")) is None and render.heat_code(0.9) == render.HEAT_256[-1]
    text = render.render_text(words, color=True)
    assert "nan" in text and "0.90" in text
    assert 'rgba(220, 40, 40, 0)">cats<' in render.render_html([("s", words)])
    demo = {"tokens": ["the", "dog"], "corrupted": ["the", "cat"], "masked": [False, True], "replaced": [False, True],
            "p_replaced": [0.1, float("nan")]}
    assert any("nan" in line for line in format_demo(demo))
