"""The `electra-np` command: --help everywhere, gradcheck, the small subcommands, settings from a JSON file,
and every kind of bad input: a one-line error, exit code 2, and nothing overwritten."""

import argparse
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from electra_np.cli import main as cli
from electra_np.cli import tools
from electra_np.train import checkpoint, run_dir

SMALL = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "1",
         "--num_attention_heads", "2", "--seq_len", "32", "--batch_size", "8", "--vocab_size", "300",
         "--backend", "numpy", "--log_every", "1", "--eval_examples", "16", "--eval_every", "0"]


def synthetic_text(seed=0, documents=150):
    rng = random.Random(seed)
    nouns = "cat dog bird parser module function value object list table server client file".split()
    verbs = "reads writes returns holds sends finds opens closes checks builds".split()
    docs = []
    for _ in range(documents):
        lines = [f"the {rng.choice(nouns)} {rng.choice(verbs)} a {rng.choice(nouns)}."
                 for _ in range(rng.randint(3, 6))]
        docs.append("\n".join(lines))
    return "\n\n".join(docs) + "\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        corpus = root / "corpus.txt"
        corpus.write_text(synthetic_text(), encoding="utf-8")
        run = root / "run"  # a finished run to resume, damage (in copies) and refuse to overwrite
        assert cli.main(["pretrain", "--corpus", str(corpus), "--out_dir", str(run), *SMALL, "--steps", "4",
                         "--stop_at", "2"]) == 0
        yield {"root": root, "corpus": str(corpus), "run": run}


def drop(args, *options):
    """args without the given options and their values."""
    out, it = [], iter(args)
    for a in it:
        if a in options:
            next(it)
        else:
            out.append(a)
    return out


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    folder = Path(folder)
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(capsys, argv, *words, folder=None):
    """Run the command; it must exit with 2, print one error line naming `words`, and change nothing in folder."""
    before = snapshot(folder) if folder is not None else None
    capsys.readouterr()
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("electra-np"), err
    for w in words:
        assert w in err, (w, err)
    if folder is not None:
        assert snapshot(folder) == before
    return err


# ----------------------------------------------------------------------------- help and gradcheck

COMMANDS = ["pretrain", "build-vocab", "prepare", "gradcheck", "finetune", "evaluate", "predict", "detect", "plot",
            "export"]
NO_DEFAULT = {"--config", "--data", "--budget_minutes", "--task", "--text_b_column", "--file", "--html", "--generator"}


def test_the_command_list_is_complete(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(c in out for c in COMMANDS)
    assert sorted(next(a for a in cli.build_parser()._actions if a.dest == "command").choices) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(capsys, command):
    """A description; every option documented, saying its default where it has one, once, never 'None'."""
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"electra-np {command}" in text and "(default: None)" not in text and "(default: False)" not in text
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert len(sub.description or "") > 80
    assert any("--threads" in x.option_strings for x in sub._actions)  # main() applies it before any command
    formatter = sub._get_formatter()
    for a in sub._actions:
        if not a.option_strings or a.dest == "help":
            continue
        assert a.help, a.option_strings
        shown = formatter._expand_help(a)
        assert shown.count("(default") <= 1, shown
        if isinstance(a, argparse.BooleanOptionalAction):
            assert "(default: " in shown, shown  # on or off unless given
        elif not (a.required or a.nargs == 0 or set(a.option_strings) & NO_DEFAULT):  # nargs 0: a flag, off
            assert "default" in shown.lower() or "presets:" in shown, (a.option_strings, shown)


def test_pretrain_help_states_each_presets_objective(capsys):
    """--mask_prob and --temperature say the tiny preset's values (the default) and the paper's (small, base)."""
    from electra_np.cli.pretrain import PRESET_OBJECTIVE
    from electra_np.config import PretrainingConfig

    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    tiny, paper = PRESET_OBJECTIVE["tiny"], PretrainingConfig()
    assert f"(default: {tiny['mask_prob']:g} with the tiny preset, the default; {paper.mask_prob:g}, the paper's" in text
    assert f"(default: {tiny['temperature']:g} with the tiny preset, the default; {paper.temperature:g}, the" in text
    assert f"{paper.mask_prob:.0%} in the paper, {tiny['mask_prob']:.0%} in the tiny preset" in text


def test_pretrain_help_names_the_issue_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    text = capsys.readouterr().out
    for option in ("--corpus", "--vocab", "--out_dir", "--steps", "--batch_size", "--seq_len", "--lr", "--warmup",
                   "--eval_every", "--save_every", "--log_every", "--seed", "--backend", "--threads", "--dtype",
                   "--resume", "--overwrite", "--lowercase", "--no-lowercase", "--config", "--hidden_size",
                   "--mask_prob", "--disc_weight", "--generator_hidden_size", "--objective", "--budget_minutes",
                   "--snapshots"):
        assert option in text, option


def test_console_script_is_installed():
    out = subprocess.run(["electra-np", "--help"], capture_output=True, text=True, timeout=60)
    if out.returncode == 127 or "not found" in out.stderr:
        out = subprocess.run([sys.executable, "-m", "electra_np", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout and "gradcheck" in out.stdout


def test_gradcheck_passes(capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "all 82 parameters pass" in out
    assert "discriminator.electra.embeddings.word_embeddings.weight" in out
    lines = out.splitlines()[1:-1]
    assert len(lines) == 82 and all(" ok " in line for line in lines)
    # every gradient but the key biases' (exactly 0 by symmetry: the error compares rounding noise) within 1e-5
    assert max(float(line.split()[0]) for line in lines if "true gradient 0" not in line) < 1e-5
    assert all("key.bias" in line for line in lines if "true gradient 0" in line)


def test_gradcheck_fails_loudly_on_a_wrong_gradient(capsys, monkeypatch):
    monkeypatch.setattr(tools, "gradcheck_errors", lambda *a: ({"a": 1e-9, "b": 3e-3}, {"a": 1.0, "b": 1.0}))
    assert cli.main(["gradcheck"]) == 1
    assert "FAILED: 1 of 2 parameters above 1e-05: b" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the small subcommands

def test_build_vocab_prepare_and_pretrain_on_prepared_data(env, tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    assert cli.main(["build-vocab", "--corpus", env["corpus"], "--vocab_size", "200", "--out", str(vocab)]) == 0
    tokens = vocab.read_text().splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "cat" in tokens and len(tokens) <= 200
    fails(capsys, ["build-vocab", "--corpus", env["corpus"], "--out", str(vocab)], "exists", folder=tmp_path)

    data = tmp_path / "data"
    assert cli.main(["prepare", "--corpus", env["corpus"], "--vocab", str(vocab), "--out_dir", str(data),
                     "--seq_len", "32"]) == 0
    assert "training and" in capsys.readouterr().out
    out = tmp_path / "run"
    args = drop(SMALL, "--vocab_size", "--seq_len")  # both come from the prepared folder
    assert cli.main(["pretrain", "--data", str(data), "--out_dir", str(out), *args, "--steps", "2"]) == 0
    meta = checkpoint.read_meta(out / run_dir.CHECKPOINT_NAME)
    assert meta["vocab"] == tokens and meta["training"]["seq_len"] == 32


def test_settings_from_a_json_file(env, tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"hidden_size": 48, "num_attention_heads": 3, "steps": 2, "mask_prob": 0.2,
                                  "lr": 1e-3}))
    out = tmp_path / "run"
    args = drop(SMALL, "--hidden_size", "--num_attention_heads")
    assert cli.main(["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *args, "--config", str(config),
                     "--steps", "3"]) == 0  # the command line wins over the file
    meta = checkpoint.read_meta(out / run_dir.CHECKPOINT_NAME)
    assert meta["model_config"]["hidden_size"] == 48 and meta["model_config"]["num_attention_heads"] == 3
    assert meta["pretraining_config"]["mask_prob"] == 0.2 and meta["training"]["lr"] == 1e-3
    assert meta["training"]["steps"] == 3
    run_json = json.loads((out / run_dir.RUN_NAME).read_text())
    again = tmp_path / "again"  # a run.json is a valid --config
    assert cli.main(["pretrain", "--config", str(out / run_dir.RUN_NAME), "--out_dir", str(again),
                     "--stop_at", "1"]) == 0
    assert checkpoint.read_meta(again / run_dir.CHECKPOINT_NAME)["model_config"] == run_json["model_config"]


def test_resume_without_options_takes_everything_from_the_checkpoint(env, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    assert cli.main(["pretrain", "--out_dir", str(run), "--resume"]) == 0
    assert checkpoint.read_meta(run / run_dir.CHECKPOINT_NAME)["step"] == 4
    assert (run / "discriminator" / "model.npz").is_file()


# ----------------------------------------------------------------------------- bad input

def test_missing_corpus(env, tmp_path, capsys):
    fails(capsys, ["pretrain", "--corpus", str(tmp_path / "nope.txt"), "--out_dir", str(tmp_path / "o"), *SMALL],
          "corpus file not found", "nope.txt")
    assert not (tmp_path / "o").exists()


def test_empty_corpus(env, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    fails(capsys, ["pretrain", "--corpus", str(empty), "--out_dir", str(tmp_path / "o"), *SMALL], "empty", "empty.txt")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n")
    fails(capsys, ["pretrain", "--corpus", str(blank), "--out_dir", str(tmp_path / "o"), *SMALL], "no text")
    assert not (tmp_path / "o").exists()


def test_non_utf8_corpus(env, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    fails(capsys, ["pretrain", "--corpus", str(bad), "--out_dir", str(tmp_path / "o"), *SMALL],
          "latin1.txt", "not valid UTF-8", "line 1")
    assert not (tmp_path / "o").exists()


def test_corpus_too_small(env, tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text("just one short line.\n")
    fails(capsys, ["pretrain", "--corpus", str(one), "--out_dir", str(tmp_path / "o"), *SMALL], "document")
    few = tmp_path / "few.txt"
    few.write_text("the cat reads a file.\n\nthe dog writes a list.\n\nthe bird sends a value.\n")
    fails(capsys, ["pretrain", "--corpus", str(few), "--out_dir", str(tmp_path / "o"), *SMALL], "too small")
    assert not (tmp_path / "o").exists()


def test_vocab_without_special_tokens(env, tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("the\ncat\ndog\n")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--vocab", str(vocab), "--out_dir", str(tmp_path / "o"),
                   *SMALL], "vocab.txt", "missing special token", "[PAD]")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_checkpoint(env, tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    path = run / run_dir.CHECKPOINT_NAME
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:len(data) // 3])
    elif damage == "flip":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0x55]) + data[mid + 1:])
    else:
        path.write_bytes(b"not a zip file at all")
    fails(capsys, ["pretrain", "--out_dir", str(run), "--resume"], str(path), "truncated or corrupted", folder=run)


def test_resume_with_a_different_config_names_the_fields(env, capsys):
    err = fails(capsys, ["pretrain", "--out_dir", str(env["run"]), "--resume", "--hidden_size", "64",
                         "--mask_prob", "0.2", "--lr", "1e-3"], "cannot resume", folder=env["run"])
    assert "hidden_size: checkpoint has 32, this run 64" in err
    assert "mask_prob: checkpoint has 0.25, this run 0.2" in err  # the tiny preset's 0.25
    assert "lr: checkpoint has 0.0005, this run 0.001" in err


def test_resume_with_a_different_vocabulary(env, tmp_path, capsys):
    tokens = checkpoint.read_meta(env["run"] / run_dir.CHECKPOINT_NAME)["vocab"]
    other = tmp_path / "vocab.txt"
    other.write_text("\n".join(tokens[:-1] + ["zzzz"]) + "\n")
    err = fails(capsys, ["pretrain", "--out_dir", str(env["run"]), "--resume", "--vocab", str(other)],
                "cannot resume", "vocabulary", folder=env["run"])
    assert f"first difference at id {len(tokens) - 1}" in err
    fails(capsys, ["pretrain", "--out_dir", str(env["run"]), "--resume", "--no-lowercase"], "lowercase",
          folder=env["run"])


def test_out_dir_holding_another_run(env, capsys):
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(env["run"]), *SMALL, "--steps", "2"],
          "already holds a run", "--overwrite", folder=env["run"])


def test_overwrite_replaces_the_run(env, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    assert cli.main(["pretrain", "--corpus", env["corpus"], "--out_dir", str(run), *SMALL, "--steps", "1",
                     "--overwrite"]) == 0
    assert checkpoint.read_meta(run / run_dir.CHECKPOINT_NAME)["training"]["steps"] == 1
    records = [json.loads(line) for line in (run / run_dir.METRICS_NAME).read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [("train", 1), ("eval", 1)]  # the old run's are gone


def test_other_bad_settings(env, tmp_path, capsys):
    out = str(tmp_path / "o")
    fails(capsys, ["pretrain", "--out_dir", out, "--resume"], "nothing to resume")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", out, *SMALL, "--seq_len", "256"],
          "max_position_embeddings")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hidden_sise": 3}))
    fails(capsys, ["pretrain", "--config", str(bad), "--out_dir", out], "unknown setting", "hidden_sise")
    bad.write_text("{not json")
    fails(capsys, ["pretrain", "--config", str(bad), "--out_dir", out], "not valid JSON")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", out, *SMALL, "--hidden_size", "33"],
          "divisible")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", out, *SMALL, "--mask_prob", "1.5"], "mask_prob")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", out, *SMALL, "--steps", "0"], "steps")
    fails(capsys, ["pretrain", "--out_dir", str(env["run"]), "--resume", "--overwrite"], "exclude")
    assert not Path(out).exists()


def test_resume_on_changed_data_is_refused(env, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(Path(env["corpus"]).read_text())
    run = tmp_path / "run"
    assert cli.main(["pretrain", "--corpus", str(corpus), "--out_dir", str(run), *SMALL, "--steps", "4",
                     "--stop_at", "2"]) == 0
    with open(corpus, "a") as f:
        f.write("\n" + synthetic_text(seed=1, documents=40))
    fails(capsys, ["pretrain", "--out_dir", str(run), "--resume"], "cannot resume", "training data", folder=run)


def test_threads_reach_blas_and_numba_before_numpy_loads(capsys, monkeypatch):
    """main() calls fast.runtime.configure(--threads) first, before anything has imported NumPy."""
    from electra_np.fast.runtime import THREAD_VARIABLES, THREADS_ENV

    for name in (THREADS_ENV, *THREAD_VARIABLES):
        monkeypatch.setenv(name, "2")
    code = ("import os, sys\n"
            "from electra_np.fast import runtime\n"
            "seen, configure = [], runtime.configure\n"
            "runtime.configure = lambda threads=None: (seen.append(('numpy' in sys.modules, threads))\n"
            "                                          or configure(threads))\n"
            "from electra_np.cli import main as cli\n"
            "try:\n"
            "    cli.main(['pretrain', '--threads', '1', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "import numba\n"
            "print(seen, [os.environ[v] for v in runtime.THREAD_VARIABLES], numba.get_num_threads(), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().splitlines()[-1] == "[(False, 1)] ['1', '1', '1', '1'] 1", out.stderr
    fails(capsys, ["pretrain", "--threads", "0"], "--threads must be >= 1")


# ----------------------------------------------------------------------------- budget and snapshots

def test_steps_and_budget_exclude_each_other(env, tmp_path, capsys):
    out = tmp_path / "o"
    err = fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, "--steps", "5",
                         "--budget_minutes", "1"], "--steps and --budget_minutes exclude each other")
    assert err.count("\n") == 1
    config = tmp_path / "budget.json"
    config.write_text(json.dumps({"budget_minutes": 2}))
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, "--config", str(config),
                   "--steps", "5"], "exclude each other")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, "--budget_minutes", "0"],
          "budget_minutes must be a positive number")
    fails(capsys, ["pretrain", "--corpus", env["corpus"], "--out_dir", str(out), *SMALL, "--snapshots", "0.5", "1"],
          "snapshots must be fractions", "got 1.0")
    assert not out.exists()
    fails(capsys, ["pretrain", "--out_dir", str(env["run"]), "--resume", "--budget_minutes", "1"], "cannot resume",
          "budget_minutes: checkpoint has None, this run 1.0", folder=env["run"])


def test_a_budget_runs_record_as_config_measures_again(env, tmp_path, monkeypatch):
    from electra_np.train import budget

    monkeypatch.setattr(budget, "measure_step_seconds", lambda *a: (0.5, 0.0))
    first = tmp_path / "first"
    assert cli.main(["pretrain", "--corpus", env["corpus"], "--out_dir", str(first), *SMALL, "--budget_minutes",
                     "0.05", "--stop_at", "1"]) == 0
    training = json.loads((first / run_dir.RUN_NAME).read_text())["training"]
    assert (training["steps"], training["warmup"], training["budget_step_seconds"]) == (6, 0, 0.5)
    monkeypatch.setattr(budget, "measure_step_seconds", lambda *a: (0.1, 0.0))
    again = tmp_path / "again"
    assert cli.main(["pretrain", "--config", str(first / run_dir.RUN_NAME), "--out_dir", str(again),
                     "--stop_at", "1"]) == 0
    training = json.loads((again / run_dir.RUN_NAME).read_text())["training"]
    assert (training["steps"], training["warmup"], training["budget_step_seconds"]) == (30, 3, 0.1)
