"""examples/electra_experiment.py: the whole experiment end to end on a tiny synthetic task (pretraining, the lr
choice, paired fine-tuning seeds, the table), a rerun that skips every finished unit, a resumed pretraining, an lr
choice blind to dev, paired seeds that share head init and batch order, and the paired bootstrap on cases whose
answer is known by hand."""

import importlib.util
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import electra_np.train.finetune as finetune_module

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "electra_experiment.py"
spec = importlib.util.spec_from_file_location("electra_experiment", SCRIPT)
exp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exp)

WORDS = "the a film plot actor scene story music was is very quite rather and but".split()
TINY = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "1",
        "--num_attention_heads", "2", "--max_position_embeddings", "32", "--seq_len", "32", "--batch_size", "4",
        "--vocab_size", "80", "--steps", "4",
        "--pretrain_args", "--backend numpy --log_every 1 --eval_examples 8 --eval_every 0"]
FINETUNE = ["--labelled", "40", "--seeds", "2", "--select_seeds", "2", "--lrs", "3e-3", "1e-2", "--ft_epochs", "6",
            "--ft_batch_size", "4", "--max_seq_length", "32", "--backend", "numpy", "--bootstrap", "200",
            "--threads", "1"]


def tsv(path, n, seed):
    """Reviews whose label is the sentiment word they hold; a header text<TAB>label."""
    rng = random.Random(seed)
    rows = ["text\tlabel"]
    for _ in range(n):
        label = rng.random() < 0.5
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        words.insert(rng.randrange(len(words)), "good" if label else "bad")
        rows.append(" ".join(words) + "\t" + ("pos" if label else "neg"))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def snapshots_supported():
    help_text = subprocess.run([sys.executable, "-m", "electra_np", "pretrain", "--help"], capture_output=True,
                               text=True).stdout
    return "--snapshots" in help_text


def argv(checkpoints):
    return ["--train", "data/train.tsv", "--dev", "data/dev.tsv", "--test", "data/test.tsv", "--text_column", "text",
            "--unlabelled", "data/unlabelled.txt", "--out", "out", "--checkpoints", *checkpoints, *TINY, *FINETUNE]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished experiment in root/out (paths relative to root, so that copies of root run as well)."""
    root = tmp_path_factory.mktemp("experiment")
    (root / "data").mkdir()
    tsv(root / "data" / "train.tsv", 60, 0)
    tsv(root / "data" / "dev.tsv", 30, 1)
    tsv(root / "data" / "test.tsv", 20, 2)
    rng = random.Random(3)
    (root / "data" / "unlabelled.txt").write_text("\n".join(
        " ".join(rng.choice(WORDS + ["good", "bad"]) for _ in range(12)) + "." for _ in range(200)) + "\n")
    checkpoints = ["0.5", "1"] if snapshots_supported() else ["1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        mp.chdir(root)
        assert exp.main(argv(checkpoints)) == 0
        yield {"root": root, "argv": argv(checkpoints), "checkpoints": checkpoints}


def results(root):
    return json.loads((Path(root) / "out" / "results.json").read_text())


def copy_of(done, tmp_path, keep=lambda name: True):
    """A copy of the finished experiment with only the units `keep` accepts."""
    root = tmp_path / "copy"
    shutil.copytree(done["root"], root)
    for f in (root / "out" / "units").glob("*.json"):
        if not keep(f.stem):
            f.unlink()
    return root


def test_the_whole_experiment_writes_every_condition_and_seed(done):
    r = results(done["root"])
    electra = [f"electra_{round(100 * float(f))}" for f in done["checkpoints"]]
    assert set(r["conditions"]) == {"random", "mlm", *electra}
    for name, c in r["conditions"].items():
        assert [run["seed"] for run in c["runs"]] == [0, 1]
        assert c["lr"] in (3e-3, 1e-2) and set(c["held_out_by_lr"]) == {"0.003", "0.01"}
        assert {run["lr"] for run in c["runs"]} == {c["lr"]}
        for split in ("held_out", "dev", "test"):
            assert c[split]["n"] == 2 and 0 <= c[split]["mean"] <= 1
    assert r["data"]["fit"] == 32 and r["data"]["held_out"] == 8 and r["data"]["dev"] == 30
    pairs = {(c["a"], c["b"], c["split"]) for c in r["comparisons"]}
    assert pairs == {(e, b, s) for e in electra for b in ("random", "mlm") for s in ("dev", "test")}
    for c in r["comparisons"]:
        assert c["lo"] <= c["diff"] <= c["hi"] and c["seeds"] == 2
    assert [c["command"][3] for c in r["commands"]] == ["build-vocab", "prepare", "pretrain", "pretrain"]  # -m electra_np
    assert len(r["conditions"]["mlm"]["lr_selection"]) == 4  # 2 lrs x 2 seeds
    assert {r["pretraining"][o]["steps"] for o in ("electra", "mlm")} == {4}
    assert r["machine"]["cpu_count"] >= 1 and r["machine"]["platform"]
    md = (done["root"] / "out" / "results.md").read_text()
    assert "| electra_100 - random | dev |" in md and "| electra_100 - mlm | test |" in md
    assert "Paired bootstrap (200 resamples)" in md and "results.png" in md


def test_a_rerun_skips_every_finished_unit(done, tmp_path, monkeypatch):
    root = copy_of(done, tmp_path)
    mtimes = {f: f.stat().st_mtime_ns for f in (root / "out" / "units").glob("*.json")}
    monkeypatch.chdir(root)
    monkeypatch.setattr(exp, "finetune", lambda *a, **k: pytest.fail("a fine-tuning ran again"))
    monkeypatch.setattr(exp.subprocess, "run", lambda *a, **k: pytest.fail("a command ran again"))
    monkeypatch.setattr(exp.subprocess, "Popen", lambda *a, **k: pytest.fail("a pretraining ran again"))
    assert exp.main(done["argv"]) == 0
    r = results(root)
    assert len(r["sessions"]) == 2 and r["sessions"][1]["units_run"] == []
    assert len(r["sessions"][0]["units_run"]) == len(mtimes)
    assert {f: f.stat().st_mtime_ns for f in (root / "out" / "units").glob("*.json")} == mtimes
    assert exp.main([*done["argv"], "--labelled", "30"]) == 2  # other settings: refused


def test_an_interrupted_pretraining_is_resumed(done, tmp_path, monkeypatch):
    """A run with a checkpoint and no record of its end is continued with --resume."""
    root = copy_of(done, tmp_path, keep=lambda name: name != "pretrain_mlm")
    monkeypatch.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
    monkeypatch.chdir(root)
    assert exp.main([*done["argv"], "--stages", "pretrain"]) == 0
    unit = json.loads((root / "out" / "units" / "pretrain_mlm.json").read_text())
    assert unit["command"][-1] == "--resume" and unit["steps"] == 4 and unit["session"] == 1
    commands = [json.loads(line) for line in (root / "out" / "commands.jsonl").read_text().splitlines()]
    assert len(commands) == 5 and commands[-1]["command"] == unit["command"] and commands[-1]["session"] == 1


def test_another_labelled_count_reuses_the_pretraining(done, tmp_path, monkeypatch):
    """--pretraining_from: a second experiment (other N labelled) fine-tunes the first one's pretrained models and
    runs no command; a folder pretrained with other settings is refused with exit 2."""
    root = copy_of(done, tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setattr(exp.subprocess, "run", lambda *a, **k: pytest.fail("a command ran"))
    monkeypatch.setattr(exp.subprocess, "Popen", lambda *a, **k: pytest.fail("a pretraining ran"))
    second = [*done["argv"], "--labelled", "30", "--out", "out30", "--pretraining_from", "out"]
    assert exp.main(second) == 0
    r, first = json.loads((root / "out30" / "results.json").read_text()), results(root)
    assert sorted(r["conditions"]) == sorted(first["conditions"])
    assert not any((root / "out30").glob("pretrain_*")) and not (root / "out30" / "vocab.txt").exists()
    units = {f.stem for f in (root / "out30" / "units").glob("*.json")}
    assert units and all(u.startswith("ft_") for u in units)
    assert exp.main([*second, "--out", "out30b", "--vocab_size", "60"]) == 2
    assert exp.main([*second, "--out", "out30c", "--checkpoints", "1"]) == 0  # a subset of its snapshots
    assert sorted(json.loads((root / "out30c" / "results.json").read_text())["conditions"]) == ["electra_100", "mlm",
                                                                                                "random"]
    assert exp.main([*second, "--out", "out30d", "--checkpoints", "0.75", "1"]) == 2  # a snapshot it lacks


def test_the_lr_choice_never_reads_dev(done, tmp_path, monkeypatch):
    """Dev labels flipped: the same lr choices and held-out scores; dev accuracy becomes 1 - accuracy (the same
    predictions: no dev label reached training or a choice)."""
    root = copy_of(done, tmp_path, keep=lambda name: not name.startswith("ft_"))
    dev = root / "data" / "dev.tsv"
    lines = dev.read_text().splitlines()
    flip = {"pos": "neg", "neg": "pos"}
    dev.write_text("\n".join([lines[0]] + [t + "\t" + flip[y] for t, y in (x.split("\t") for x in lines[1:])]) + "\n")
    monkeypatch.chdir(root)
    assert exp.main([*done["argv"], "--stages", "finetune", "table"]) == 0
    before, after = results(done["root"]), results(root)
    preds = lambda r: {f.stem: json.loads(f.read_text())["dev_pred"] for f in (r / "out" / "units").glob("ft_*")}  # noqa: E731
    assert preds(root) == preds(done["root"]) and any(len(set(p)) > 1 for p in preds(root).values())
    for name, c in before["conditions"].items():
        d = after["conditions"][name]
        assert d["lr"] == c["lr"] and d["held_out_by_lr"] == c["held_out_by_lr"]
        assert [x["held_out"] for x in d["runs"]] == [x["held_out"] for x in c["runs"]]
        np.testing.assert_allclose([x["dev"]["accuracy"] for x in d["runs"]],
                                   [1 - x["dev"]["accuracy"] for x in c["runs"]], atol=1e-12)


def test_paired_seeds_share_head_init_and_batch_order(done, tmp_path, monkeypatch):
    """Every condition fine-tuned with seed s starts from the same head and sees the same batches in the same
    order; only the encoder differs."""
    root = copy_of(done, tmp_path, keep=lambda name: not name.startswith("ft_"))
    seen = {}  # (seed, lr) -> [(encoder word embeddings, head, batch order)]
    current = {}
    real_finetune, real_init, real_batches = exp.finetune, finetune_module.init_classifier, finetune_module.batches_of

    def spy_finetune(encoder, config, num_labels, train, dev, fc, *a, **k):
        current["entry"] = {"encoder": encoder["electra.embeddings.word_embeddings.weight"], "order": []}
        seen.setdefault((fc.seed, fc.learning_rate), []).append(current["entry"])
        return real_finetune(encoder, config, num_labels, train, dev, fc, *a, **k)

    def spy_init(*a, **k):
        params = real_init(*a, **k)
        current["entry"]["head"] = {n: v.copy() for n, v in params.items() if n.startswith("classifier.")}
        return params

    def spy_batches(encoded, y, *a, **k):
        for idx, batch, labels in real_batches(encoded, y, *a, **k):
            if y is not None:  # training batches (evaluation goes without labels: predict_logits)
                current["entry"]["order"].append(idx.tolist())
            yield idx, batch, labels

    monkeypatch.setattr(exp, "finetune", spy_finetune)
    monkeypatch.setattr(finetune_module, "init_classifier", spy_init)
    monkeypatch.setattr(finetune_module, "batches_of", spy_batches)
    monkeypatch.chdir(root)
    assert exp.main([*done["argv"], "--stages", "finetune"]) == 0
    n_conditions = len(results(done["root"])["conditions"])
    assert len(seen) == 4 and all(len(v) == n_conditions for v in seen.values())
    for (seed, lr), entries in seen.items():
        first = entries[0]
        assert len(first["order"]) == 6 * 8  # 6 epochs of 32 examples (one length bucket) in batches of 4
        for e in entries[1:]:
            assert e["order"] == first["order"]
            assert all(np.array_equal(e["head"][n], first["head"][n]) for n in first["head"])
        assert len({e["encoder"].tobytes() for e in entries}) == n_conditions  # the encoders do differ
    heads = [seen[(s, 3e-3)][0]["head"]["classifier.weight"] for s in (0, 1)]
    assert not np.array_equal(*heads)  # and the seeds differ


def test_paired_bootstrap_on_hand_checkable_cases():
    y = np.array([0, 1] * 200)  # (n,) = (400,)
    right, wrong = y[None, :].repeat(3, 0), 1 - y[None, :].repeat(3, 0)  # (S, n) = (3, 400)
    ci = exp.paired_bootstrap(y, right, wrong, "accuracy", resamples=300)
    assert (ci["diff"], ci["lo"], ci["hi"]) == (1.0, 1.0, 1.0)  # the same difference in every resample
    ci = exp.paired_bootstrap(y, wrong, wrong, "mcc", resamples=100)
    assert (ci["diff"], ci["lo"], ci["hi"]) == (0.0, 0.0, 0.0)
    # A right on half the examples, B never: the resampled difference is Binomial(400, 1/2) / 400,
    # sd sqrt(0.25 / 400) = 0.025, so the CI is 0.5 +- 1.96 * 0.025 = [0.451, 0.549]
    half = np.where(np.arange(400) < 200, y, 1 - y)[None, :]  # (1, 400)
    ci = exp.paired_bootstrap(y, half, wrong[:1], "accuracy", resamples=4000)
    assert ci["diff"] == 0.5 and abs(ci["lo"] - 0.451) < 0.008 and abs(ci["hi"] - 0.549) < 0.008
    # seed 0 of A always right, seed 1 always wrong, B always wrong: the mean over two seeds drawn with
    # replacement is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4, so the 95% CI is [0, 1]
    ci = exp.paired_bootstrap(y, np.stack([y, 1 - y]), wrong[:2], "accuracy", resamples=2000)
    assert (ci["diff"], ci["lo"], ci["hi"]) == (0.5, 0.0, 1.0)


def test_mean_sd_and_lr_choice():
    assert exp.mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert exp.mean_sd([0.5]) == {"mean": 0.5, "sd": 0.0, "n": 1}
    scores = {(1e-4, 0): 0.5, (1e-4, 1): 0.25, (3e-4, 0): 0.5, (3e-4, 1): 1.0, (1e-3, 0): 1.0, (1e-3, 1): 0.5}
    records = {k: {"held_out": {"accuracy": v}, "dev": {"accuracy": 1 - v}} for k, v in scores.items()}
    lr, means = exp.choose_lr(records, [1e-3, 3e-4, 1e-4], [0, 1], "accuracy")
    assert lr == 3e-4 and means == {1e-4: 0.375, 3e-4: 0.75, 1e-3: 0.75}  # a tie: the smaller lr; dev unread
    assert exp.choose_lr(records, [1e-4, 1e-3], [1], "accuracy")[0] == 1e-3


def test_help_explains_the_protocol(capsys):
    with pytest.raises(SystemExit) as e:
        exp.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for words in ("held-out", "Paired bootstrap", "--budget_minutes", "--resume", "--labelled", "--unlabelled"):
        assert words in out


def load_probe():
    sys.modules.setdefault("electra_experiment", exp)  # the script imports it from its own folder
    spec = importlib.util.spec_from_file_location("probe_encoders", SCRIPT.parent / "probe_encoders.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return probe


def test_probe_encoders_splits_embeddings_from_layers_and_scores_each(done, monkeypatch, capsys):
    """examples/probe_encoders.py: emb:FOLDER is the run's embeddings under the random start's layers, layers:FOLDER
    the reverse; the command fine-tunes each encoder per seed and prints its held-out accuracies."""
    probe = load_probe()
    monkeypatch.chdir(done["root"])
    disc = "out/pretrain_electra/discriminator"
    _, pretrained = exp.load_encoder(disc)
    _, fresh = probe.encoder("random", disc, 1)
    _, emb = probe.encoder(f"emb:{disc}", disc, 1)
    _, layers = probe.encoder(f"layers:{disc}", disc, 1)
    assert sorted(emb) == sorted(layers) == sorted(pretrained) == sorted(fresh)
    for k in pretrained:
        assert not np.array_equal(pretrained[k], fresh[k]) or k.endswith(("bias", "LayerNorm.weight"))
        np.testing.assert_array_equal(emb[k], pretrained[k] if ".embeddings." in k else fresh[k])
        np.testing.assert_array_equal(layers[k], fresh[k] if ".embeddings." in k else pretrained[k])
    argv = ["--train", "data/train.tsv", "--text_column", "text", "--labelled", "40", "--vocab", "out/vocab.txt",
            "--epochs", "2", "--seeds", "2", "--threads", "1", "random", f"layers:{disc}"]
    assert probe.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "held-out accuracy" in line]
    assert [line.split()[0] for line in lines] == ["random", f"layers:{disc}"]
    for line in lines:
        seeds = [float(x) for x in line.split("(seeds: ")[1].rstrip(")").split()]
        assert len(seeds) == 2 and all(0 <= x <= 1 for x in seeds)
        assert f"held-out accuracy {np.mean(seeds):.3f}" in line
    with pytest.raises(SystemExit, match="no model.npz"):
        probe.main([*argv[:-2], "random", "out"])
