"""Nothing silent, nothing lost (issue #16): one writer per run folder, --overwrite that never loses the old run
before the new one has a checkpoint, outputs kept apart from inputs, divergence caught before it is saved,
damaged checkpoints and full disks reported in one line, and a run killed at random moments that resumes to the
same numbers as one never interrupted.

Every test runs the commands as a user does: `electra_np.cli.main.main(argv)` in-process, or `python -m electra_np`
in a subprocess where a second process or a kill is the point; faults are injected by monkeypatching the step,
the update or the writes.
"""

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from electra_np import atomic
from electra_np.cli import main as cli
from electra_np.config import ElectraConfig, PretrainingConfig
from electra_np.train import checkpoint, loop, run_dir, state
from electra_np.train.config import TrainConfig

SMALL = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "1",
         "--num_attention_heads", "2", "--seq_len", "32", "--batch_size", "8", "--vocab_size", "300",
         "--backend", "numpy", "--log_every", "1", "--eval_examples", "16", "--eval_every", "0"]
LOSS_KEYS = ("loss", "mlm_loss", "disc_loss", "mlm_acc", "disc_acc", "replaced_frac", "grad_norm")
PHASES = (run_dir.ASIDE, run_dir.PARTIAL, run_dir.RESTORING, run_dir.DISCARDED)


def synthetic_text(seed=0, documents=150):
    """English-like sentences from a small grammar: documents of 3-6 lines, blank lines between them."""
    rng = random.Random(seed)
    nouns = "cat dog bird parser module function value object list table server client file".split()
    verbs = "reads writes returns holds sends finds opens closes checks builds".split()
    adjs = "small large quick lazy empty full new old valid broken".split()
    docs = []
    for _ in range(documents):
        lines = [f"the {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} a {rng.choice(nouns)}."
                 for _ in range(rng.randint(3, 6))]
        docs.append("\n".join(lines))
    return "\n\n".join(docs) + "\n"


def labelled_tsv(path, n, seed):
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.random() < 0.5
        rows.append(f"the {'new' if label else 'broken'} {rng.choice(['cat', 'dog', 'file'])} reads a list.\t"
                    f"{'pos' if label else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache, a corpus, a labelled TSV; a stopped run (checkpoint at step 2 of 6, seed 0), a finished
    run (the models for fine-tuning), a classifier fine-tuned on it, and a prepared corpus."""
    root = tmp_path_factory.mktemp("safety")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        corpus = root / "corpus.txt"
        corpus.write_text(synthetic_text(), encoding="utf-8")
        e = {"root": root, "corpus": str(corpus), "tsv": labelled_tsv(root / "labelled.tsv", 40, 0)}
        e["stopped"], e["finished"] = root / "stopped", root / "finished"
        assert pretrain(e, e["stopped"], "--steps", "6", "--stop_at", "2", "--save_every", "1") == 0
        assert pretrain(e, e["finished"], "--steps", "2") == 0
        e["classifier"], e["prepared"] = root / "classifier", root / "prepared"
        assert cli.main(finetune_argv(e, e["finished"], e["classifier"])) == 0
        assert cli.main(["prepare", "--corpus", str(corpus), "--vocab", str(e["finished"] / "vocab.txt"), "--out_dir",
                         str(e["prepared"]), "--seq_len", "32"]) == 0
        yield e


def pretrain(env, out_dir, *extra):
    return cli.main(["pretrain", "--corpus", env["corpus"], "--out_dir", str(out_dir), *SMALL, *extra])


def finetune_argv(env, model, out, *extra):
    return ["finetune", "--model", str(model), "--train", str(env["tsv"]), "--dev", str(env["tsv"]), "--out_dir",
            str(out), "--epochs", "1", "--batch_size", "8", "--max_seq_length", "32", "--backend", "numpy", *extra]


def copy_of(folder, tmp_path, name="run"):
    return Path(shutil.copytree(folder, tmp_path / name))


def snapshot(folder):
    """{relative path: sha256} of every file under folder, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run_main(capsys, argv):
    """(exit code, stdout, stderr) of main(argv); an exception main lets through is returned as the code."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except Exception as e:  # noqa: BLE001 - a crash the CLI does not map is part of what some rows test
        code = e
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err, *words, progress=None):
    """err is one line starting "electra-np", naming every word (after lines starting with `progress`, a command's
    progress report)."""
    if progress is not None:
        err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith(progress))
    assert len(err.strip().splitlines()) == 1 and err.startswith("electra-np") and "Traceback" not in err, err
    for w in words:
        assert str(w) in err, (w, err)


def python_m(env, *args, **kwargs):
    """`python -m electra_np ARGS --threads 1` in a subprocess with the test's cache."""
    return subprocess.run([sys.executable, "-m", "electra_np", *map(str, args), "--threads", "1"], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "ELECTRA_NP_CACHE": str(env["root"] / "cache")},
                          **kwargs)


def popen_pretrain(env, out_dir, *extra):
    cmd = [sys.executable, "-m", "electra_np", "pretrain", "--corpus", env["corpus"], "--out_dir", str(out_dir), *SMALL,
           *extra, "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ELECTRA_NP_CACHE": str(env["root"] / "cache")})


def wait_for_step(proc):
    """Read the process's output up to its next training step line; returns what it printed."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step"):
            return "".join(seen)
    raise AssertionError("the run ended before its next step:\n" + "".join(seen))


def with_step(monkeypatch, change):
    """Wrap the training step: change(call, (loss, metrics, grads)) -> the same triple (or raises), call 1-based."""
    real = loop.make_step

    def make(setup, backend):
        step, calls = real(setup, backend), [0]

        def wrapped(*args, **kwargs):
            calls[0] += 1
            return change(calls[0], step(*args, **kwargs))

        return wrapped

    monkeypatch.setattr(loop, "make_step", make)


def saves_fail(monkeypatch, at, code):
    """The `at`-th checkpoint write of the process fails with OSError(code) after writing part of its file."""
    real, calls = checkpoint.atomic_write, [0]

    def atomic_write(path, write, mode="wb"):
        calls[0] += 1
        if calls[0] != at:
            return real(path, write, mode)

        def partial(f):
            f.write(b"\0" * 4096)
            raise OSError(code, os.strerror(code))

        return real(path, partial, mode)

    monkeypatch.setattr(checkpoint, "atomic_write", atomic_write)


def hidden_left(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name in PHASES or p.name.startswith(atomic.TMP_PREFIX)
                  or p.name == run_dir.LOCK_NAME)


# ----------------------------------------------------------------------------- 1. one writer

@pytest.mark.parametrize("command", ["pretrain --resume", "pretrain --overwrite", "pretrain (fresh)",
                                     "finetune --overwrite"])
def test_a_second_process_on_a_held_folder_is_refused(env, tmp_path, command):
    """The test process holds the folder's lock as a running command would; `python -m electra_np` on the same
    folder exits 2 with one line naming the holder's PID and what to do, and touches nothing."""
    run = copy_of(env["finished"], tmp_path)
    argv = {"pretrain --resume": ["pretrain", "--out_dir", run, "--resume"],
            "pretrain --overwrite": ["pretrain", "--corpus", env["corpus"], "--out_dir", run, *SMALL, "--overwrite"],
            "pretrain (fresh)": ["pretrain", "--corpus", env["corpus"], "--out_dir", run, *SMALL],
            "finetune --overwrite": finetune_argv(env, env["finished"], run, "--overwrite")}[command]
    before = snapshot(run)
    with run_dir.hold(run, echo=None):
        assert (run / run_dir.LOCK_NAME).read_text().strip() == str(os.getpid())
        proc = python_m(env, *argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    one_error_line(proc.stderr, f"{run} is in use by another electra-np process (PID {os.getpid()}",
                   "wait for it to finish, or choose another --out_dir")
    assert snapshot(run) == before and not (run / run_dir.LOCK_NAME).exists()


def test_a_running_pretrain_holds_its_folder_until_it_ends(env, tmp_path):
    """A first `pretrain` is training; a second one (--resume, then --overwrite) is refused naming the first's PID;
    the first ends normally (SIGTERM: checkpoint, exit 130) and releases the folder, which --resume then takes."""
    out = tmp_path / "busy"
    first = popen_pretrain(env, out, "--steps", "100000", "--save_every", "0")
    try:
        wait_for_step(first)
        for argv in (["pretrain", "--out_dir", out, "--resume"],
                     ["pretrain", "--corpus", env["corpus"], "--out_dir", out, *SMALL, "--overwrite"]):
            proc = python_m(env, *argv)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            one_error_line(proc.stderr, f"(PID {first.pid},", "choose another --out_dir")
        first.send_signal(signal.SIGTERM)
        rest = first.stdout.read()
        assert first.wait(timeout=120) == 130, rest
    finally:
        first.kill()
    step = checkpoint.read_meta(out / run_dir.CHECKPOINT_NAME)["step"]  # the first run's work is all there
    assert f"interrupted: checkpoint at step {step}" in rest and not (out / run_dir.LOCK_NAME).exists()
    assert cli.main(["pretrain", "--out_dir", str(out), "--resume", "--stop_at", str(step + 1)]) == 0


def test_a_stale_lock_is_taken_over_with_a_note(env, tmp_path, capsys):
    """A lock file whose process is gone (killed: the OS dropped its flock) is taken over, with a note."""
    run = copy_of(env["stopped"], tmp_path)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    (run / run_dir.LOCK_NAME).write_text(f"{dead}\n")
    code, out, err = run_main(capsys, ["pretrain", "--out_dir", str(run), "--resume", "--stop_at", "3"])
    assert code == 0, err
    assert f"note: {run} was locked by PID {dead}, which is no longer running (killed?); taking over its lock" in out
    assert not (run / run_dir.LOCK_NAME).exists()  # released at the end
    assert checkpoint.read_meta(run / run_dir.CHECKPOINT_NAME)["step"] == 3


def test_a_refused_command_leaves_no_folder_behind(env, tmp_path, capsys):
    """The lock creates out_dir; a command refused for bad input removes it again (nothing written)."""
    out = tmp_path / "deep" / "new"
    code, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL,
                                     "--seq_len", "9999"])
    assert code == 2 and "max_position_embeddings" in err
    assert not (tmp_path / "deep").exists()
    code, _, err = run_main(capsys, finetune_argv(env, env["finished"], out, "--text_column", "nope"))
    assert code == 2 and not (tmp_path / "deep").exists()


# ----------------------------------------------------------------------------- 2. --overwrite loses nothing

def crash(exc):
    def change(call, result):
        if call == 2:
            raise exc
        return result
    return change


def ctrl_c(call, result):
    """The user's Ctrl-C during step 2 (the run stops after the step)."""
    if call == 2:
        os.kill(os.getpid(), signal.SIGINT)
    return result


def nan_loss(call, result):
    loss, metrics, grads = result
    return (loss, dict(metrics, mlm_loss=float("nan")), grads) if call == 2 else result


@pytest.mark.parametrize("fault, code, words", [
    (crash(RuntimeError("simulated crash")), RuntimeError, []),
    (crash(ValueError("a bad row found late")), 2, ["a bad row found late"]),
    (ctrl_c, 130, ["interrupted"]),
    (crash(KeyboardInterrupt()), 130, ["interrupted"]),
    (nan_loss, 1, ["step 2: the MLM (generator) loss mlm_loss=nan", "This run saved no checkpoint; the run that "
                                                                     "--overwrite was replacing is put back in"]),
    ("disk full", 3, ["No space left on device while writing the checkpoint", "This run saved no checkpoint"]),
], ids=["crash", "late bad input", "ctrl-c", "ctrl-c twice", "nan", "disk full at the first save"])
def test_an_overwrite_that_fails_before_its_first_checkpoint_puts_the_old_run_back(env, tmp_path, monkeypatch,
                                                                                  capsys, fault, code, words):
    run = copy_of(env["stopped"], tmp_path)
    before = snapshot(run)
    if fault == "disk full":
        saves_fail(monkeypatch, 1, errno.ENOSPC)
    else:
        with_step(monkeypatch, fault)
    got, out, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(run), *SMALL,
                                      "--steps", "4", "--seed", "1", "--overwrite"])
    assert isinstance(got, code) if isinstance(code, type) else got == code, (got, err)
    assert f"note: the new run stopped before its first checkpoint; the run that --overwrite was replacing is back in " \
           f"{run}" in out
    for w in words:
        assert w in err, (w, err)
    assert snapshot(run) == before and hidden_left(run) == []


def test_an_overwrite_keeps_the_old_run_aside_until_its_first_checkpoint(env, tmp_path, monkeypatch, capsys):
    """Before the new run's first save the old run sits in .previous-run (and out_dir has no checkpoint); from the
    first save on, the old run is gone and a later failure leaves the new run's checkpoint."""
    run = copy_of(env["stopped"], tmp_path)
    seen = []

    def watch(call, result):
        seen.append(((run / run_dir.ASIDE / run_dir.CHECKPOINT_NAME).is_file(), (run / run_dir.CHECKPOINT_NAME).is_file()))
        if call == 4:
            raise RuntimeError("simulated crash")
        return result

    with_step(monkeypatch, watch)
    got, out, _ = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(run), *SMALL,
                                    "--steps", "6", "--save_every", "2", "--seed", "1", "--overwrite"])
    assert isinstance(got, RuntimeError)
    assert seen == [(True, False), (True, False), (False, True), (False, True)]
    meta = checkpoint.read_meta(run / run_dir.CHECKPOINT_NAME)
    assert (meta["step"], meta["training"]["seed"]) == (2, 1) and "is back in" not in out
    assert hidden_left(run) == []


def _move(run, names, to):
    (run / to).mkdir(exist_ok=True)
    for name in names:
        os.replace(run / name, run / to / name)


def _bring(new, run, names):
    for name in names:
        shutil.copy2(new / name, run / name)


OLD = ("checkpoint.npz", "run.json", "metrics.jsonl", "log.txt", "vocab.txt")
NEW_NO_CKPT = ("run.json", "metrics.jsonl", "log.txt", "vocab.txt")


@pytest.mark.parametrize("layout, seed, step, note", [
    # killed while setting the old run aside: the checkpoint and run.json moved, the rest not yet
    (lambda run, new: _move(run, OLD[:2], run_dir.PARTIAL), 0, 2, "while it set the previous run aside"),
    # killed during the new run, before its first checkpoint
    (lambda run, new: (_move(run, OLD, run_dir.ASIDE), _bring(new, run, NEW_NO_CKPT)), 0, 2,
     "stopped before its new run saved a checkpoint; the previous run is restored"),
    # killed while putting the old run back: three files back, the checkpoint and metrics not yet
    (lambda run, new: _move(run, OLD[:2], run_dir.RESTORING), 0, 2, "the previous run is restored"),
    # killed after the new run's first checkpoint, before the old run was deleted
    (lambda run, new: (_move(run, OLD, run_dir.ASIDE), _bring(new, run, OLD)), 1, 3,
     "deleted the previous run that an --overwrite had set aside"),
    # killed while deleting it
    (lambda run, new: (_move(run, OLD, run_dir.DISCARDED), _bring(new, run, OLD)), 1, 3, None),
], ids=["setting aside", "new run before its checkpoint", "restoring", "after the first checkpoint", "deleting"])
def test_an_overwrite_killed_at_any_phase_is_finished_by_the_next_command(env, tmp_path, capsys, layout, seed, step,
                                                                          note):
    """The folder as a SIGKILL leaves it in each phase of an --overwrite; the next --resume repairs it (a note says
    how) and continues the right run: the old one (seed 0, step 2) unless the new one (seed 1) had a checkpoint."""
    run = copy_of(env["stopped"], tmp_path)
    new = tmp_path / "new"
    assert pretrain(env, new, "--steps", "6", "--stop_at", "3", "--seed", "1") == 0
    layout(run, new)
    code, out, err = run_main(capsys, ["pretrain", "--out_dir", str(run), "--resume", "--stop_at", str(step + 1)])
    assert code == 0, err
    if note is not None:
        assert f"note: {run}: " in out and note in out, out
    meta = checkpoint.read_meta(run / run_dir.CHECKPOINT_NAME)
    assert (meta["training"]["seed"], meta["step"]) == (seed, step + 1)
    assert [r["step"] for r in map(json.loads, (run / run_dir.METRICS_NAME).read_text().splitlines())] == \
        list(range(1, step + 2))
    assert hidden_left(run) == []


def test_an_overwrite_killed_before_its_first_checkpoint_is_undone(env, tmp_path, capsys):
    """A real SIGKILL in the middle of an --overwrite's first steps: the old run waits in .previous-run, and the
    next command puts it back."""
    run = copy_of(env["stopped"], tmp_path)
    before = snapshot(run)
    proc = popen_pretrain(env, run, "--steps", "100000", "--save_every", "0", "--seed", "1", "--overwrite")
    try:
        wait_for_step(proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
    assert (run / run_dir.ASIDE / run_dir.CHECKPOINT_NAME).is_file() and not (run / run_dir.CHECKPOINT_NAME).exists()
    run_dir.recover(run, echo=None)  # what the next command does first, under the lock
    assert {k: v for k, v in snapshot(run).items() if k != run_dir.LOCK_NAME} == before


FOLDER_FAULT = pytest.mark.parametrize("command", ["finetune", "export", "prepare"])


@FOLDER_FAULT
def test_folder_commands_replace_their_output_in_one_step(env, tmp_path, monkeypatch, capsys, command):
    """finetune, export and prepare write a temporary folder that replaces --out_dir / --out only when complete
    (atomic.atomic_folder): a full disk at the end of the writing leaves the old folder whole and no temporary."""
    if command == "export":
        pytest.importorskip("safetensors")
    parent = tmp_path / "outputs"
    parent.mkdir()
    old = {"finetune": env["classifier"], "prepare": env["prepared"], "export": None}[command]
    if old is None:
        assert cli.main(["export", str(env["finished"]), "--out", str(parent / "out")]) == 0
    else:
        shutil.copytree(old, parent / "out")
    out = parent / "out"
    before = snapshot(out)
    argv = {"finetune": finetune_argv(env, env["finished"], out, "--overwrite"),
            "export": ["export", str(env["finished"]), "--out", str(out), "--overwrite"],
            "prepare": ["prepare", "--corpus", env["corpus"], "--vocab", str(env["finished"] / "vocab.txt"),
                        "--out_dir", str(out), "--seq_len", "32", "--overwrite", "--seed", "3"]}[command]

    def full(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "fsync_tree", full)
    code, _, err = run_main(capsys, argv)
    assert code == cli.EXIT_RESOURCE, err
    one_error_line(err, "No space left on device", "free some space", progress="prepare:")
    assert snapshot(out) == before and [p.name for p in parent.iterdir()] == ["out"]


# ----------------------------------------------------------------------------- 3. outputs apart from inputs

def _data_folder(env, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(env["tsv"], folder / "train.tsv")
    shutil.copy(env["corpus"], folder / "corpus.txt")
    return folder


@pytest.mark.parametrize("case", ["finetune out = model", "finetune out inside model", "finetune out holds model",
                                  "finetune out holds --train", "pretrain out = --data", "pretrain --corpus is log.txt",
                                  "prepare out holds --corpus", "export out inside input"])
def test_an_output_folder_that_is_holds_or_sits_in_an_input_is_refused(env, tmp_path, capsys, case):
    run = copy_of(env["finished"], tmp_path)
    data = _data_folder(env, tmp_path)
    prepared = Path(shutil.copytree(env["prepared"], tmp_path / "prepared"))
    argv, out, src, words = {
        "finetune out = model": (finetune_argv(env, run, run, "--overwrite"), run, run, ["is the --model folder"]),
        "finetune out inside model": (finetune_argv(env, run, run / "discriminator", "--overwrite"),
                                      run / "discriminator", run, ["is the --model folder"]),
        "finetune out holds model": (finetune_argv(env, run / "discriminator", run, "--overwrite"), run,
                                     run / "discriminator", ["is the --model folder"]),
        "finetune out holds --train": (["finetune", "--model", str(run), "--train", str(data / "train.tsv"), "--dev",
                                        str(env["tsv"]), "--out_dir", str(data), "--overwrite"], data,
                                       data / "train.tsv", ["holds the --train file"]),
        "pretrain out = --data": (["pretrain", "--data", str(prepared), "--out_dir", str(prepared), *SMALL,
                                   "--overwrite"], prepared, prepared, ["is the --data folder"]),
        "pretrain --corpus is log.txt": (["pretrain", "--corpus", str(run / "log.txt"), "--out_dir", str(run), *SMALL,
                                          "--overwrite"], run, run / "log.txt", ["the --corpus file"]),
        "prepare out holds --corpus": (["prepare", "--corpus", str(data / "corpus.txt"), "--out_dir", str(data),
                                        "--overwrite"], data, data / "corpus.txt", ["holds the --corpus file"]),
        "export out inside input": (["export", str(run), "--out", str(run / "hf"), "--overwrite"], run / "hf", run,
                                    ["is the input folder"]),
    }[case]
    before = [snapshot(f) for f in (run, data, prepared)]
    code, _, err = run_main(capsys, argv)
    assert code == 2, err
    one_error_line(err, out.resolve(), src.resolve(), *words)
    assert [snapshot(f) for f in (run, data, prepared)] == before


def test_the_runs_own_vocabulary_may_be_reused_with_overwrite(env, tmp_path, capsys):
    """--vocab OUT_DIR/vocab.txt is read before the run writes the same tokens back: allowed."""
    run = copy_of(env["stopped"], tmp_path)
    vocab = (run / "vocab.txt").read_text()
    small = [a for i, a in enumerate(SMALL) if "--vocab_size" not in SMALL[max(i - 1, 0):i + 1]]
    code, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--vocab", str(run / "vocab.txt"),
                                     "--out_dir", str(run), *small, "--steps", "1", "--overwrite"])
    assert code == 0, err
    assert (run / "vocab.txt").read_text() == vocab and checkpoint.read_meta(run / "checkpoint.npz")["step"] == 1


# ----------------------------------------------------------------------------- 4. divergence

def scale_grads(at, factor):
    def change(call, result):
        loss, metrics, grads = result
        if call == at:
            grads = {k: g * g.dtype.type(factor) for k, g in grads.items()}
        return loss, metrics, grads
    return change


def disc_loss(at, value):
    def change(call, result):
        loss, metrics, grads = result
        return (loss, dict(metrics, disc_loss=value), grads) if call == at else result
    return change


@pytest.mark.parametrize("extra, fault, words, left", [
    # the run of the issue: it used to finish with exit 0 and an MLM loss of 126,390 (a uniform guess: ln V)
    (["--lr", "10", "--clip_norm", "0", "--steps", "20"], None,
     [": the MLM (generator) loss", "= 3 ln V (V=", "No checkpoint was saved before this step"], None),
    (["--lr", "10", "--clip_norm", "0", "--steps", "20", "--save_every", "1"], None,
     [": the MLM (generator) loss", "The last good checkpoint (step {left}) is intact, its values finite"], "before"),
    (["--steps", "20", "--save_every", "4"], disc_loss(6, 50.0),
     ["step 6: the discriminator loss 50 is above 6.93 = 10 ln 2", "The last good checkpoint (step 4) is intact"], 4),
    (["--steps", "20", "--save_every", "4"], scale_grads(14, 1e6),
     ["step 14: the gradient norm", "times the median", "of the last 13 steps (the bound is 1000 times)",
      "The last good checkpoint (step 12) is intact"], 12),
], ids=["lr 10, no clip", "lr 10, no clip, save every step", "discriminator loss", "gradient norm"])
def test_divergence_stops_the_run_with_exit_1(env, tmp_path, monkeypatch, capsys, extra, fault, words, left):
    if fault is not None:
        with_step(monkeypatch, fault)
    out = tmp_path / "diverged"
    code, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, *extra])
    assert code == cli.EXIT_DIVERGED, err
    assert "training stopped" in err and "start a new run with a lower --lr" in err
    if left == "before":  # the step it stopped at, read from the message: the checkpoint is the one before it
        left = int(err.split("step ")[1].split(":")[0]) - 1
    one_error_line(err, *[w.format(left=left) for w in words])
    path = out / run_dir.CHECKPOINT_NAME
    assert (checkpoint.read_meta(path)["step"] == left) if left is not None else not path.exists()
    assert not (out / "discriminator").exists()


def test_a_state_holding_infinity_is_not_saved(env, tmp_path, monkeypatch, capsys):
    """The update of step 3 puts an infinity in a parameter while the losses are still finite: the checkpoint of
    step 3 is refused, the run stops, and the good one of step 2 stays."""
    real = loop.make_update

    def make(optimizer, backend):
        update, calls = real(optimizer, backend), [0]

        def wrapped(params, grads, lr):
            update(params, grads, lr)
            calls[0] += 1
            if calls[0] == 3:
                next(iter(params.values())).flat[0] = np.inf
        return wrapped

    monkeypatch.setattr(loop, "make_update", make)
    out = tmp_path / "inf"
    code, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL,
                                     "--steps", "6", "--save_every", "1"])
    assert code == cli.EXIT_DIVERGED, err
    one_error_line(err, "step 3: the state to save holds NaN or infinite values in params/",
                   "the checkpoint was not written", "The last good checkpoint (step 2) is intact")
    arrays, meta = checkpoint.load(out / run_dir.CHECKPOINT_NAME)
    assert meta["step"] == 2 and checkpoint.first_nonfinite(arrays) is None


def blow_up_update(at, factor=1e30):
    """make_update whose `at`-th call multiplies every parameter by `factor` after updating: finite weights (float32
    holds 1e30 x 0.02) whose next forward pass overflows, as an lr of 1e9 gives."""
    real = loop.make_update

    def make(optimizer, backend):
        update, calls = real(optimizer, backend), [0]

        def wrapped(params, grads, lr):
            update(params, grads, lr)
            calls[0] += 1
            if calls[0] == at:
                for p in params.values():
                    p *= p.dtype.type(factor)
        return wrapped
    return make


@pytest.mark.parametrize("extra, stop", [(["--steps", "3"], 3), (["--steps", "6", "--stop_at", "3"], 3)],
                         ids=["the run's last step", "a session's last step"])
def test_the_last_update_of_a_session_is_judged_before_it_is_saved(env, tmp_path, monkeypatch, capsys, extra, stop):
    """The checks of a step see the weights before its update; the last update of a session is judged apart (the
    weights finite, one forward pass within the bounds), so that its checkpoint and exported models are not
    written. It used to save them, export them and crash in the summary's heat map on a NaN, exit 2."""
    monkeypatch.setattr(loop, "make_update", blow_up_update(stop))
    out = tmp_path / "last"
    code, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, *extra,
                                     "--save_every", "1"])
    assert code == cli.EXIT_DIVERGED, err
    one_error_line(err, f"step {stop}: with the weights of its update, the MLM (generator) loss",
                   "(on the first training batch); training stopped", f"The last good checkpoint (step {stop - 1})")
    arrays, meta = checkpoint.load(out / run_dir.CHECKPOINT_NAME)
    assert meta["step"] == stop - 1 and max(float(np.abs(a).max()) for a in arrays.values()) < 1e3
    assert not (out / "discriminator").exists()


def test_the_last_update_judged_healthy_changes_nothing(env, tmp_path):
    """The judgement draws from a Generator of its own: a session stopped and resumed gives the losses of one
    never stopped."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert pretrain(env, whole, "--steps", "4") == 0
    assert pretrain(env, parts, "--steps", "4", "--stop_at", "2") == 0
    assert cli.main(["pretrain", "--out_dir", str(parts), "--resume"]) == 0
    a, _ = checkpoint.load(whole / run_dir.CHECKPOINT_NAME)
    b, _ = checkpoint.load(parts / run_dir.CHECKPOINT_NAME)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def write_unchecked(path, arrays, meta):
    """A checkpoint file in the format checkpoint.save writes, without its checks (a damaged or old one)."""
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **{checkpoint.META_KEY: blob}, **arrays)


def test_last_good_says_what_the_checkpoint_holds(tmp_path):
    """The sentence a stopped run prints reads the checkpoint: it is called good only when it is finite."""
    path = tmp_path / "checkpoint.npz"
    assert state.last_good(path) == "No checkpoint was saved before this step."
    meta = {"format": checkpoint.FORMAT_NAME, "version": checkpoint.FORMAT_VERSION, "step": 7}
    write_unchecked(path, {"params/w": np.array([1.0, np.nan], np.float32)}, meta)
    assert state.last_good(path) == (f"The checkpoint {path} (step 7) holds NaN or infinite values in params/w: do "
                                     "not resume from it.")
    with pytest.raises(checkpoint.NonFiniteError, match="params/w holds NaN"):
        checkpoint.save(path, {"params/w": np.array([np.inf], np.float32)}, {"step": 8})
    write_unchecked(path, {"params/w": np.ones(2, np.float32)}, meta)
    assert state.last_good(path) == f"The last good checkpoint (step 7) is intact, its values finite: {path}"


# ----------------------------------------------------------------------------- 5. damaged checkpoints

def _first(arrays, group):
    return next(k for k in arrays if k.startswith(group + "/"))


def drop_moment(arrays, meta):
    key = _first(arrays, "adam_m")
    del arrays[key]
    return key


def drop_optimizer(arrays, meta):
    del meta["optimizer"]
    return "'optimizer'"


def break_rng(arrays, meta):
    meta["rng_state"] = {"bit_generator": "PCG64", "state": {"state": "not a number"}}
    return "rng_state"


def break_sampler(arrays, meta):
    meta["sampler_state"] = {"n": -1}
    return "sampler_state"


def break_t(arrays, meta):
    meta["optimizer"]["t"] = "three"
    return "optimizer.t"


def reshape_moment(arrays, meta):
    key = next(k for k in arrays if k.startswith("adam_v/") and arrays[k].ndim == 2)
    arrays[key] = arrays[key][:, :-1].copy()
    return key


def negative_v(arrays, meta):
    key = _first(arrays, "adam_v")
    arrays[key] = arrays[key] - 1.0
    return key


def nan_param(arrays, meta):
    key = _first(arrays, "params")
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = np.nan
    return key


DAMAGES = [
    (drop_moment, ["is missing"]),
    (drop_optimizer, ["the metadata has no"]),
    (break_rng, ["cannot be restored"]),
    (break_sampler, ["cannot be restored"]),
    (break_t, ["not an integer >= 0"]),
    (reshape_moment, ["has shape", "the model's is"]),
    (negative_v, ["negative entries"]),
    (nan_param, ["holds NaN or infinite values"]),
]


@pytest.mark.parametrize("damage, words", DAMAGES, ids=[d.__name__ for d, _ in DAMAGES])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_key(env, tmp_path, capsys, damage, words):
    run = copy_of(env["stopped"], tmp_path)
    path = run / run_dir.CHECKPOINT_NAME
    arrays, meta = checkpoint.load(path)
    key = damage(arrays, meta)
    write_unchecked(path, arrays, meta)
    before = snapshot(run)
    code, _, err = run_main(capsys, ["pretrain", "--out_dir", str(run), "--resume"])
    assert code == 2, err
    one_error_line(err, path, key, *words)
    assert snapshot(run) == before


def test_a_checkpoint_from_before_the_content_hash_resumes_on_the_corpus_prepared_again(env, tmp_path, capsys):
    """A checkpoint whose data fingerprint has no content_sha256 (made before prepare recorded it) resumes on the
    corpus prepared again, whose fingerprint now has it: only the checkpoint's keys are compared. A checkpoint
    that has the hash is still held to it."""
    run = copy_of(env["stopped"], tmp_path)
    path = run / run_dir.CHECKPOINT_NAME
    arrays, meta = checkpoint.load(path)
    assert "content_sha256" in meta["data"]
    edited = dict(meta, data={k: v for k, v in meta["data"].items() if k != "content_sha256"})
    write_unchecked(path, arrays, edited)
    code, _, err = run_main(capsys, ["pretrain", "--out_dir", str(run), "--resume", "--stop_at", "3"])
    assert code == 0, err  # was: refused, "the prepared corpus differs (content_sha256)"
    assert checkpoint.read_meta(path)["step"] == 3
    model = ElectraConfig.from_dict(meta["model_config"])
    pretraining, tc = PretrainingConfig(**meta["pretraining_config"]), TrainConfig(**meta["training"])
    other = dict(meta["data"], content_sha256="0" * 64)
    assert state.resume_differences(edited, model, pretraining, tc, meta["vocab"], other) == []
    assert state.resume_differences(meta, model, pretraining, tc, meta["vocab"], other) == [
        "training data: the prepared corpus differs (content_sha256)"]


# ----------------------------------------------------------------------------- 6. a full disk

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_during_a_save_is_exit_3_and_keeps_the_last_checkpoint(env, tmp_path, monkeypatch, capsys, code):
    saves_fail(monkeypatch, 2, code)  # the checkpoint of step 4; the one of step 2 was written
    out = tmp_path / "full"
    got, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL,
                                    "--steps", "6", "--save_every", "2"])
    assert got == cli.EXIT_RESOURCE == 3, err
    path = out / run_dir.CHECKPOINT_NAME
    one_error_line(err, f"step 4: {os.strerror(code)} while writing the checkpoint {path}: it was not written and its "
                        "partial file was removed", "The last good checkpoint (step 2) is intact",
                   "Free some space, then run the command again")
    assert checkpoint.read_meta(path)["step"] == 2 and hidden_left(out) == []
    monkeypatch.undo()
    assert cli.main(["pretrain", "--out_dir", str(out), "--resume"]) == 0  # once there is room again


def test_a_full_disk_anywhere_else_names_the_file(env, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "somewhere" / "model.npz"))

    monkeypatch.setattr(loop, "save_for_finetuning", full)
    code, _, err = run_main(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(tmp_path / "r"), *SMALL,
                                     "--steps", "2"])
    assert code == 3, err
    one_error_line(err, f"No space left on device writing {tmp_path / 'somewhere' / 'model.npz'}", "free some space")


# ----------------------------------------------------------------------------- 7. SIGKILL at random moments

KILLER = textwrap.dedent("""
    # pretrain, killed by SIGKILL in the middle of its N-th checkpoint write: half-way through the archive
    # ("mid-write") or with the whole archive written and fsync'ed, just before the rename ("before-rename")
    import os, signal, sys
    from electra_np.train import checkpoint
    n, mode = int(sys.argv[1]), sys.argv[2]
    real, calls = checkpoint.atomic_write, [0]
    def atomic_write(path, write, mode_="wb"):
        calls[0] += 1
        if calls[0] != n:
            return real(path, write, mode_)
        def dying(f):
            if mode == "mid-write":
                f.write(b"PK" + b"\\0" * 2000)
                f.flush()
            else:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, dying, mode_)
    checkpoint.atomic_write = atomic_write
    from electra_np.cli.main import main
    sys.exit(main(sys.argv[3:]))
""")
KILL_STEPS = 24


def test_runs_killed_at_random_moments_resume_to_the_same_numbers(env, tmp_path):
    """A tiny run saving every step, SIGKILLed four times (twice inside a checkpoint write, twice at random
    moments), resumed after each kill: its metrics, checkpoint and models are bit-identical to a run never killed."""
    args = ["--steps", str(KILL_STEPS), "--save_every", "1", "--threads", "1"]
    cache = {**os.environ, "ELECTRA_NP_CACHE": str(env["root"] / "cache")}
    ref, out = tmp_path / "ref", tmp_path / "killed"
    proc = python_m(env, "pretrain", "--corpus", env["corpus"], "--out_dir", ref, *SMALL, *args[:4])
    assert proc.returncode == 0, proc.stderr
    fresh = ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, *args]
    resume = ["pretrain", "--out_dir", str(out), "--resume", "--threads", "1"]
    notes = []
    for argv, n, mode in ((fresh, 4, "mid-write"), (resume, 3, "before-rename")):
        proc = subprocess.run([sys.executable, "-c", KILLER, str(n), mode, *argv], capture_output=True, text=True,
                              timeout=180, env=cache)
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
        notes.append(proc.stdout)
    assert list(out.glob(".tmp-checkpoint.npz-*")) and (out / run_dir.LOCK_NAME).exists()  # what a kill leaves
    rng = random.Random(16)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "electra_np", *resume], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=cache)
        try:  # after a random number of this session's steps, a random moment into the next one
            notes.append("".join(wait_for_step(proc) for _ in range(rng.randint(1, 4))))
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            proc.kill()
    proc = python_m(env, *resume[:-2])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "which is no longer running (killed?); taking over its lock" in notes[1]  # the first kill's lock
    assert not list(out.glob(".tmp-*")) and not (out / run_dir.LOCK_NAME).exists()

    def train_rows(folder):
        rows = [json.loads(line) for line in (folder / run_dir.METRICS_NAME).read_text().splitlines()]
        return [{k: r[k] for k in ("step", *LOSS_KEYS)} for r in rows if r["split"] == "train"]

    assert [r["step"] for r in train_rows(out)] == list(range(1, KILL_STEPS + 1))
    assert train_rows(out) == train_rows(ref)
    a, meta_a = checkpoint.load(ref / run_dir.CHECKPOINT_NAME)
    b, meta_b = checkpoint.load(out / run_dir.CHECKPOINT_NAME)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert meta_a["rng_state"] == meta_b["rng_state"] and meta_a["sampler_state"] == meta_b["sampler_state"]
    with np.load(ref / "discriminator" / "model.npz") as za, np.load(out / "discriminator" / "model.npz") as zb:
        assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
