"""Does ELECTRA pretraining pay off on this laptop, for this task? One command for the whole experiment.

    python examples/electra_experiment.py --train train.tsv --dev dev.tsv --labelled 1000 --budget_minutes 30

Protocol (each step a stage of --stages; every finished unit is recorded in --out and skipped on a rerun):
  vocab     A WordPiece vocabulary learned from the pretraining text: the text of every row of the training
            TSV (task-adaptive pretraining: rows beyond the N labelled ones serve as unlabelled text) and the
            --unlabelled files (general or in-domain text). Dev and test text are never read here.
  pretrain  ELECTRA (generator + discriminator) and MLM-only (one masked LM of the discriminator's size, the
            BERT baseline) on that text. Equal compute = equal measured time on this machine: both get the
            same --budget_minutes (`electra-np pretrain --budget_minutes` times its step and sets its steps),
            one after the other with all --threads each (or, with --parallel, both at once with one thread
            each). ELECTRA's discriminator is kept at 25%, 50% and 100% of the budget (--checkpoints).
  finetune  N labelled examples (a fixed random subset of the training TSV) are split once into a held-out
            slice (--holdout of N) and the rest. Conditions: a random encoder, MLM-only, ELECTRA at each
            checkpoint. Per condition the learning rate is the one of --lrs whose mean held-out score over
            the first --select_seeds seeds is best; then --seeds seeds train on the rest at that rate, each
            keeping the epoch best on the held-out slice. Dev and test are evaluated, never used to choose.
            Paired seeds: seed s gives every condition the same head init and the same batch order (and the
            random condition an encoder drawn from seed 10000 + s).
  table     results.md (mean +- sd over seeds, paired bootstrap 95% CIs of ELECTRA - random and ELECTRA -
            MLM, the dose-response over ELECTRA's checkpoints), results.json (every number and command, the
            machine), results.png when matplotlib imports.

Paired bootstrap: each of --bootstrap resamples draws the evaluation examples with replacement and the seeds
with replacement, one draw shared by both conditions; its statistic is the metric averaged over the drawn
seeds for condition A minus the same for B; the 95% CI is the 2.5th to 97.5th percentile. It holds both
sources of chance: which examples were evaluated and which fine-tuning seeds were run.

Interrupted? Run the same command again: finished units are skipped, and an interrupted pretraining goes on
from its checkpoint (`electra-np pretrain --resume`). Settings that change the numbers (the data, N, the
budget, the model) must stay the same for an --out folder; --seeds may grow.
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def _early_threads(argv):
    """--threads, read before NumPy is imported (fast.runtime.configure must run first)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int)
    return p.parse_known_args(argv)[0].threads


from electra_np.fast.runtime import configure  # noqa: E402

configure(_early_threads(sys.argv[1:]) if __name__ == "__main__" else None)  # before NumPy loads OpenBLAS
import numpy as np  # noqa: E402

from electra_np.atomic import atomic_write_text  # noqa: E402
from electra_np.config import ElectraConfig  # noqa: E402
from electra_np.data.labelled import encode_examples, label_map, read_tsv  # noqa: E402
from electra_np.data.tokenizer import Tokenizer  # noqa: E402
from electra_np.params import encoder_shapes, init_params  # noqa: E402
from electra_np.train.finetune import FinetuneConfig, evaluate, finetune  # noqa: E402
from electra_np.train.metrics import METRICS  # noqa: E402

STAGES = ("vocab", "pretrain", "finetune", "table")
OBJECTIVES = ("electra", "mlm")
SPLIT_SEED = 0            # the N labelled examples and the held-out slice: one fixed draw
RANDOM_INIT_SEED = 10_000  # the random condition's encoder for fine-tuning seed s: init_params(seed 10000 + s)
BOOTSTRAP_SEED = 0
DOC_ROWS = 64             # the task text gets a blank line (a document end) every 64 rows, so that the
                          # pretraining's held-out split has whole documents to take
MODEL_OPTIONS = ("embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "seq_len", "batch_size")
# settings that change the numbers: an --out folder keeps them (seeds, lrs, threads, stages may change)
FIXED = ("train", "dev", "test", "text_column", "label_column", "text_b_column", "no_header", "unlabelled", "lang",
         "labelled", "holdout", "budget_minutes", "steps", "checkpoints", "preset", "vocab_size", "lowercase",
         "split_sentences", "pretrain_lr", "pretrain_seed", "pretrain_args", "ft_epochs", "ft_batch_size", "layer_decay",
         "max_seq_length", "metric") + MODEL_OPTIONS
# the settings that make the pretraining: --pretraining_from reuses another folder's when these agree
PRETRAIN_FIXED = ("train", "text_column", "text_b_column", "no_header", "unlabelled", "lang", "budget_minutes", "steps",
                  "checkpoints", "preset", "vocab_size", "lowercase", "split_sentences", "pretrain_lr", "pretrain_seed",
                  "pretrain_args") + MODEL_OPTIONS
PRETRAIN_UNITS = ("vocab", "pretraining_data", "pretrain_electra", "pretrain_mlm")


class ExperimentError(ValueError):
    """The user's mistake (exit 2)."""


class StepFailed(RuntimeError):
    """A subprocess failed (exit 1)."""


# ----------------------------------------------------------------------------- the run folder

class Run:
    """The --out folder: settings.json, sessions.jsonl, units/<name>.json (one per finished unit)."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        settings = {k: getattr(args, k) for k in FIXED}
        path = self.out / "settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            diff = [k for k in FIXED if old.get(k) != json.loads(json.dumps(settings[k]))]
            if diff:
                raise ExperimentError(f"{self.out} holds an experiment with other settings ("
                                      + ", ".join(f"--{k} {old.get(k)!r}" for k in diff)
                                      + "); use another --out")
        else:
            atomic_write_text(path, json.dumps(settings, indent=2) + "\n")
        (self.out / "units").mkdir(parents=True, exist_ok=True)
        self.pre = self.out  # where the vocabulary, the pretraining data and the pretrainings are
        if args.pretraining_from:
            self.pre = Path(args.pretraining_from)
            path = self.pre / "settings.json"
            if not path.is_file():
                raise ExperimentError(f"--pretraining_from {self.pre}: no settings.json (not an experiment folder)")
            old = json.loads(path.read_text())
            diff = [k for k in PRETRAIN_FIXED if k != "checkpoints" and old.get(k) != json.loads(json.dumps(settings[k]))]
            if not set(settings["checkpoints"]) <= set(old.get("checkpoints") or []):  # a subset of its snapshots
                diff.append("checkpoints")  # may be fine-tuned (e.g. only the end, when fine-tuning is the cost)
            if diff:
                raise ExperimentError(f"--pretraining_from {self.pre} was pretrained with other settings ("
                                      + ", ".join(f"--{k} {old.get(k)!r}" for k in diff) + ")")
        self.session = len(self.sessions())
        self._append("sessions.jsonl", {"session": self.session, "started": _now(), "argv": args.argv})

    def _append(self, name, record):
        with open(self.out / name, "a") as f:
            f.write(json.dumps(record) + "\n")

    def command(self, cmd):
        """Record a command about to run (commands.jsonl: every attempt, interrupted ones included)."""
        cmd = [str(c) for c in cmd]
        self._append("commands.jsonl", {"session": self.session, "started": _now(), "command": cmd})
        return cmd

    def commands(self):
        path = self.out / "commands.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def sessions(self):
        path = self.out / "sessions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def unit(self, name):
        """The record of a finished unit, or None. Pretraining units are read from --pretraining_from if given."""
        path = (self.pre if name in PRETRAIN_UNITS else self.out) / "units" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def finish(self, name, record):
        record = dict(record, unit=name, session=self.session, finished=_now())
        atomic_write_text(self.out / "units" / f"{name}.json", json.dumps(record) + "\n")
        return record

    def units(self):
        return {p.stem: json.loads(p.read_text()) for p in sorted((self.out / "units").glob("*.json"))}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def run_command(run, cmd):
    """Run a command, its output to ours. Returns (exit code, seconds)."""
    cmd = run.command(cmd)
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.time()
    code = subprocess.run(cmd).returncode
    return code, time.time() - t0


# ----------------------------------------------------------------------------- data

def task_data(args):
    """The examples of every split and the fixed draw: N labelled rows of train, split into fit / held-out."""
    read = lambda path: read_tsv(path, args.text_column, args.label_column, args.text_b_column,  # noqa: E731
                                 header=not args.no_header)
    train = read(args.train)
    n = args.labelled or len(train)
    if n > len(train):
        raise ExperimentError(f"--labelled {n}: the training TSV has only {len(train)} rows")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train))
    n_held = max(1, int(round(args.holdout * n)))
    if n - n_held < 1:
        raise ExperimentError(f"--labelled {n} with --holdout {args.holdout} leaves no examples to train on")
    held, fit = sorted(order[:n_held]), sorted(order[n_held:n])
    return {"train": train, "labels": label_map(train), "fit": [train[i] for i in fit],
            "held_out": [train[i] for i in held], "dev": read(args.dev) if args.dev else None,
            "test": read(args.test) if args.test else None}


def write_task_text(data, path):
    """Every training row's text (never dev or test), a document end every DOC_ROWS rows."""
    lines = []
    for i, e in enumerate(data["train"]):
        if i and i % DOC_ROWS == 0:
            lines.append("")
        lines += [e.text_a] + ([e.text_b] if e.text_b else [])
    atomic_write_text(path, "\n".join(line.replace("\n", " ") for line in lines) + "\n")


# ----------------------------------------------------------------------------- vocab and pretraining

def require_pretraining_from(run):
    missing = [u for u in PRETRAIN_UNITS if not run.unit(u)]
    if missing:
        raise ExperimentError(f"--pretraining_from {run.pre}: {', '.join(missing)} not finished there; run that "
                              "folder's experiment through its pretrain stage first")


def stage_vocab(run, data):
    """The vocabulary, then the pretraining text packed into examples once for both objectives (`electra-np
    prepare`: the two runs read one folder, also when they run at once)."""
    if run.pre != run.out:  # another folder's pretraining: read, never written
        return require_pretraining_from(run)
    a = run.args
    case = "--lowercase" if a.lowercase else "--no-lowercase"
    corpus = [run.pre / "task_text.txt", *a.unlabelled]
    if not run.unit("vocab"):
        write_task_text(data, run.pre / "task_text.txt")
        cmd = [sys.executable, "-m", "electra_np", "build-vocab", "--corpus", *corpus, "--vocab_size", a.vocab_size,
               "--out", run.pre / "vocab.txt", "--overwrite", case]
        code, seconds = run_command(run, cmd)
        if code:
            raise StepFailed(f"build-vocab failed (exit {code})")
        tokens = len((run.pre / "vocab.txt").read_text(encoding="utf-8").splitlines())
        run.finish("vocab", {"command": [str(c) for c in cmd], "seconds": seconds, "tokens": tokens})
    if not run.unit("pretraining_data"):
        cmd = [sys.executable, "-m", "electra_np", "prepare", "--corpus", *corpus, "--vocab", run.pre / "vocab.txt",
               "--out_dir", run.pre / "pretraining_data", "--overwrite", case, "--seed", a.pretrain_seed]
        cmd += ["--seq_len", a.seq_len] if a.seq_len else []
        cmd += ["--split_sentences"] if a.split_sentences else []
        code, seconds = run_command(run, cmd)
        if code:
            raise StepFailed(f"prepare failed (exit {code})")
        run.finish("pretraining_data", {"command": [str(c) for c in cmd], "seconds": seconds})


def pretrain_command(run, objective, threads, resume):
    a, d = run.args, run.pre / f"pretrain_{objective}"
    cmd = [sys.executable, "-m", "electra_np", "pretrain", "--out_dir", d, "--threads", threads]
    if resume:  # the checkpoint holds every other setting
        return [str(c) for c in cmd + ["--resume"]]
    cmd += ["--data", run.pre / "pretraining_data", "--preset", a.preset, "--objective", objective,
            "--seed", a.pretrain_seed, "--overwrite"]
    cmd += ["--budget_minutes", a.budget_minutes] if a.budget_minutes else ["--steps", a.steps]
    snapshots = [f for f in a.checkpoints if f < 1]
    if snapshots:
        cmd += ["--snapshots", *snapshots]
    if a.pretrain_lr:
        cmd += ["--lr", a.pretrain_lr]
    for k in MODEL_OPTIONS:
        if getattr(a, k) is not None and k != "seq_len":  # seq_len: the prepared data's
            cmd += [f"--{k}", getattr(a, k)]
    return [str(c) for c in cmd + shlex.split(a.pretrain_args)]


def stage_pretrain(run):
    """ELECTRA and MLM-only for the same budget: one after the other with all threads (their output to ours),
    or both at once with one thread each (--parallel; output to pretrain_<objective>.stdout). A run with a
    checkpoint but no record of its end is resumed."""
    if run.pre != run.out:  # another folder's pretraining: read, never written
        return require_pretraining_from(run)
    if not run.unit("pretraining_data"):
        raise ExperimentError("no pretraining data yet: run the vocab stage first")
    parallel = run.args.parallel
    started = {}
    try:
        for objective in [o for o in OBJECTIVES if not run.unit(f"pretrain_{o}")]:
            resume = (run.pre / f"pretrain_{objective}" / "checkpoint.npz").is_file()
            cmd = run.command(pretrain_command(run, objective, 1 if parallel else run.args.threads, resume))
            log = open(run.pre / f"pretrain_{objective}.stdout", "a") if parallel else None
            print("$ " + shlex.join(cmd) + (f"   > {log.name}" if log else ""), flush=True)
            started[objective] = (cmd, subprocess.Popen(cmd, stdout=log, stderr=log and subprocess.STDOUT),
                                  time.time())
            if not parallel:
                _finish_pretraining(run, objective, *started[objective])
                del started[objective]
        for objective in list(started):
            _finish_pretraining(run, objective, *started[objective])
            del started[objective]
    except KeyboardInterrupt:  # Ctrl-C reached the runs too: let them write their checkpoints
        for _, proc, _ in started.values():
            proc.wait()
        raise


def _finish_pretraining(run, objective, cmd, proc, t0):
    code = proc.wait()
    if code:
        hint = " (interrupted: run the same command again to continue)" if code == 130 else ""
        raise StepFailed(f"{objective} pretraining failed (exit {code}){hint}; see "
                         f"{run.pre / f'pretrain_{objective}.stdout'}")
    d = run.pre / f"pretrain_{objective}"
    run_json = json.loads((d / "run.json").read_text())
    evals = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r.get("split") == "eval"]
    run.finish(f"pretrain_{objective}", {
        "objective": objective, "command": cmd, "seconds": time.time() - t0, "steps": run_json["training"]["steps"],
        "run_json": {k: v for k, v in run_json.items() if k not in ("data", "data_source")},
        "snapshots": _snapshots(d), "last_eval": evals[-1] if evals else None})


def _snapshots(run_dir):
    """[{step, fraction, folder}] of run_dir/snapshots/*/snapshot.json."""
    found = []
    for f in sorted(Path(run_dir).glob("snapshots/*/snapshot.json")):
        s = json.loads(f.read_text())
        found.append({"step": s["step"], "fraction": s["fraction"], "folder": str(f.parent.relative_to(run_dir))})
    return sorted(found, key=lambda s: s["step"])


# ----------------------------------------------------------------------------- fine-tuning

def conditions(run):
    """{name: (model folder or None for a random encoder, fraction of the budget, pretraining step)}."""
    e, m = run.unit("pretrain_electra"), run.unit("pretrain_mlm")
    if not (e and m):
        raise ExperimentError("the pretraining runs are not finished: run the pretrain stage first")
    out = {"random": (None, 0.0, 0), "mlm": (run.pre / "pretrain_mlm" / "generator", 1.0, m["steps"])}
    for fraction in sorted(run.args.checkpoints):
        if fraction == 1:
            folder, step = run.pre / "pretrain_electra" / "discriminator", e["steps"]
        else:
            snap = [s for s in e["snapshots"] if abs(s["fraction"] - fraction) < 1e-6]
            if not snap:
                raise ExperimentError(f"no ELECTRA snapshot at {fraction} of the budget in {run.pre}/pretrain_electra")
            folder, step = run.pre / "pretrain_electra" / snap[0]["folder"] / "discriminator", snap[0]["step"]
        out[f"electra_{round(100 * fraction)}"] = (folder, fraction, step)
    return out


def load_encoder(folder):
    """(config, the "electra.*" tensors) of a discriminator or generator folder."""
    config = ElectraConfig.from_json(Path(folder) / "config.json")
    with np.load(Path(folder) / "model.npz") as z:
        return config, {k: z[k] for k in z.files if k.startswith("electra.")}


def encoded_splits(run, data, config):
    """{split: (encoded examples, labels)} for fit, held_out, dev and test (when given), and the pad id."""
    tok = Tokenizer.from_file(run.pre / "vocab.txt", do_lower_case=run.args.lowercase)
    T = min(run.args.max_seq_length, config.max_position_embeddings)
    enc = {k: encode_examples(data[k], tok, T, data["labels"]) for k in ("fit", "held_out", "dev", "test")
           if data[k] is not None}
    return enc, tok.pad_id


def finetune_unit(args, model, condition, lr, seed):
    """One fine-tuning: train on the fit split, keep the epoch best on the held-out slice, evaluate dev/test.

    model: dict(config, encoder (None: random, drawn here from RANDOM_INIT_SEED + seed), enc, pad_id, num_labels)
    """
    config, encoder, enc, pad_id = model["config"], model["encoder"], model["enc"], model["pad_id"]
    fc = FinetuneConfig(learning_rate=lr, epochs=args.ft_epochs, batch_size=args.ft_batch_size, seed=seed,
                        layerwise_lr_decay=args.layer_decay,
                        max_seq_length=args.max_seq_length, metric=args.metric, backend=args.backend, head="official")
    if encoder is None:  # the random condition: an encoder per seed, the same for every lr
        encoder = init_params(encoder_shapes(config), config.initializer_range, RANDOM_INIT_SEED + seed)
    t0 = time.time()
    # finetune() keeps the epoch best on its `dev` argument: the held-out slice here, never dev
    best, history = finetune(encoder, config, model["num_labels"], enc["fit"], enc["held_out"], fc, pad_id,
                             log=lambda s: None)
    chosen = max(history, key=lambda h: h[args.metric])
    record = {"condition": condition, "lr": lr, "seed": seed, "best_epoch": chosen["epoch"],
              "held_out": {k: chosen[k] for k in ("accuracy", "f1", "mcc")}, "held_out_history": history}
    for split in ("dev", "test"):
        if split in enc:
            scores, logits = evaluate(best, config, *enc[split], args.ft_batch_size, pad_id, args.backend)
            record[split], record[f"{split}_pred"] = scores, logits.argmax(-1).tolist()
    record["seconds"] = time.time() - t0
    print(f"  [{condition} lr {lr:g} seed {seed}] held-out {args.metric} {chosen[args.metric]:.4f} (epoch "
          f"{chosen['epoch']})" + (f", dev {record['dev'][args.metric]:.4f}" if "dev" in record else "")
          + f" ({record['seconds']:.1f} s)", flush=True)
    return record


def unit_name(condition, lr, seed):
    return f"ft_{condition}_lr{lr:g}_seed{seed}"


def choose_lr(records, lrs, seeds, metric):
    """The lr of `lrs` with the best mean held-out score over `seeds` (ties: the smaller lr). Reads only
    record["held_out"]. Returns (lr, {lr: mean held-out score})."""
    means = {lr: float(np.mean([records[(lr, s)]["held_out"][metric] for s in seeds])) for lr in sorted(lrs)}
    return max(means, key=lambda lr: (means[lr], -lr)), means


def stage_finetune(run, data):
    """Per condition: the lr grid on the selection seeds, the choice on the held-out slice, then every seed."""
    a = run.args
    seeds, select = list(range(a.seeds)), list(range(min(a.select_seeds, a.seeds)))
    for name, (folder, _, _) in conditions(run).items():
        model = {}

        def unit(lr, seed):
            key = unit_name(name, lr, seed)
            if run.unit(key):
                return run.unit(key)
            if not model:  # loaded when a unit of this condition has to run
                model.update(load_model(run, data, folder))
            return run.finish(key, finetune_unit(a, model, name, lr, seed))

        print(f"== {name}: lr from {a.lrs} by the held-out slice ({len(data['held_out'])} examples), "
              f"seeds {select}", flush=True)
        lr, _ = choose_lr({(lr, s): unit(lr, s) for lr in a.lrs for s in select}, a.lrs, select, a.metric)
        print(f"== {name}: lr {lr:g}, seeds {seeds}", flush=True)
        for s in seeds:
            unit(lr, s)


def load_model(run, data, folder):
    """What finetune_unit needs for one condition; folder None: the random encoder, shaped as the
    discriminator."""
    if folder is None:
        config, encoder = ElectraConfig.from_json(run.pre / "pretrain_electra" / "discriminator" / "config.json"), None
    else:
        config, encoder = load_encoder(folder)
    enc, pad_id = encoded_splits(run, data, config)
    return {"config": config, "encoder": encoder, "enc": enc, "pad_id": pad_id, "num_labels": len(data["labels"])}


# ----------------------------------------------------------------------------- statistics

def mean_sd(values):
    """{mean, sd (sample, ddof 1; 0 for one value), n}."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def paired_bootstrap(y, pred_a, pred_b, metric="accuracy", resamples=2000, seed=BOOTSTRAP_SEED):
    """The paired bootstrap of the module docstring for the difference A - B of a metric.

    Inputs:  y (n,) labels; pred_a, pred_b (S, n) predictions of S paired seeds (row s of both: seed s)
    Returns: {"diff": mean over seeds of metric(A) - metric(B) on all examples, "lo", "hi": the 95% CI,
              "resamples", "seeds", "examples"}
    """
    y, pred_a, pred_b = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    S, n = pred_a.shape
    score = METRICS[metric]
    diff = lambda i: np.array([score(y[i], pred_a[s, i]) - score(y[i], pred_b[s, i]) for s in range(S)])  # noqa: E731
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        examples, seeds = rng.integers(0, n, n), rng.integers(0, S, S)
        stats[r] = diff(examples)[seeds].mean()
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return {"diff": float(diff(np.arange(n)).mean()), "lo": float(lo), "hi": float(hi), "resamples": resamples,
            "seeds": S, "examples": n}


# ----------------------------------------------------------------------------- results

def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine(threads):
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__}


def collect(run, data):
    """results.json's content: every unit's numbers, the choices, the summaries and the comparisons."""
    a, units = run.args, run.units()
    seeds, select = list(range(a.seeds)), list(range(min(a.select_seeds, a.seeds)))
    results = {"protocol": {k: getattr(a, k) for k in FIXED} | {"seeds": seeds, "select_seeds": select,
                                                                 "lrs": a.lrs, "bootstrap": a.bootstrap},
               "machine": machine(a.threads), "sessions": [], "commands": [],
               "data": {k: len(v) for k, v in data.items() if isinstance(v, list)} | {"labels": data["labels"]},
               "pretraining": {o: run.unit(f"pretrain_{o}") for o in OBJECTIVES}, "conditions": {},
               "pretraining_from": str(run.pre) if run.pre != run.out else None}
    for s in run.sessions():
        s["units_run"] = sorted(k for k, u in units.items() if u["session"] == s["session"])
        results["sessions"].append(s)
    results["commands"] = run.commands()
    preds = {}
    for name, (folder, fraction, step) in conditions(run).items():
        recs = {(u["lr"], u["seed"]): u for u in units.values() if u.get("condition") == name}
        if not all((lr, s) in recs for lr in a.lrs for s in select):
            continue
        lr, means = choose_lr(recs, a.lrs, select, a.metric)
        runs = [recs[(lr, s)] for s in seeds if (lr, s) in recs]
        c = {"init": str(folder) if folder else f"random (init_params seed {RANDOM_INIT_SEED} + s)",
             "fraction": fraction, "pretraining_step": step, "lr": lr,
             "held_out_by_lr": {f"{k:g}": v for k, v in means.items()},
             "runs": [{k: v for k, v in r.items() if not k.endswith("_pred")} for r in runs],
             "lr_selection": [{k: recs[(lr_, s)][k] for k in ("lr", "seed", "best_epoch", "held_out")}
                              for lr_ in sorted(a.lrs) for s in select]}
        for split in ("held_out", "dev", "test"):
            if runs and split in runs[0]:
                c[split] = mean_sd([r[split][a.metric] for r in runs])
                preds[(name, split)] = {r["seed"]: r.get(f"{split}_pred") for r in runs}
        results["conditions"][name] = c
    results["comparisons"] = comparisons(data, preds, a)
    return results


def comparisons(data, preds, a):
    """ELECTRA (each checkpoint) - random and - MLM-only, on dev and test, over the seeds both have."""
    out = []
    labels = data["labels"]
    for split in ("dev", "test"):
        if data[split] is None:
            continue
        y = np.array([labels[e.label] for e in data[split]])
        for name in sorted({n for n, s in preds if n.startswith("electra_") and s == split},
                           key=lambda n: int(n.split("_")[1])):
            for base in ("random", "mlm"):
                if (base, split) not in preds:
                    continue
                common = sorted(set(preds[(name, split)]) & set(preds[(base, split)]))
                pa = [preds[(name, split)][s] for s in common]
                pb = [preds[(base, split)][s] for s in common]
                ci = paired_bootstrap(y, pa, pb, a.metric, a.bootstrap)
                out.append({"a": name, "b": base, "split": split, "metric": a.metric, **ci})
    return out


def fmt(ms):
    return f"{ms['mean']:.4f} ± {ms['sd']:.4f}" if ms else "-"


def markdown(results, png_note):
    """results.md: the conditions, the comparisons with their CIs, the dose-response."""
    p, m, conds = results["protocol"], results["protocol"]["metric"], results["conditions"]
    d, mach = results["data"], results["machine"]
    budget = f"{p['budget_minutes']:g} minutes each" if p["budget_minutes"] else f"{p['steps']} steps each"
    lines = [f"# ELECTRA vs MLM-only vs random init: {Path(p['train']).name}", "",
             f"{d['fit']} training examples + {d['held_out']} held-out (of {p['labelled'] or d['train']} labelled; "
             f"{d['train']} training rows as pretraining text, + {len(p['unlabelled'])} unlabelled file(s)); "
             f"pretraining: preset {p['preset']}, {budget}; metric: {m}; {len(p['seeds'])} seeds; "
             f"{mach['platform']}, {mach['usable_cpus']} CPUs, {mach['threads']} threads.", "",
             "| condition | pretraining steps | lr (held-out mean) | held-out | dev | test | seeds |",
             "|---|---|---|---|---|---|---|"]
    for name, c in conds.items():
        chosen = c["held_out_by_lr"][f"{c['lr']:g}"]
        lines.append(f"| {name} | {c['pretraining_step']} | {c['lr']:g} ({chosen:.4f}) | "
                     f"{fmt(c.get('held_out'))} | {fmt(c.get('dev'))} | {fmt(c.get('test'))} | {len(c['runs'])} |")
    lines += ["", f"Mean ± sd over seeds of {m}. The lr of each condition is chosen on the held-out slice of the "
                  "training examples only.", "",
              "| difference | split | mean | 95% CI |", "|---|---|---|---|"]
    for c in results["comparisons"]:
        lines.append(f"| {c['a']} - {c['b']} | {c['split']} | {c['diff']:+.4f} | [{c['lo']:+.4f}, {c['hi']:+.4f}] |")
    lines += ["", f"Paired bootstrap ({p['bootstrap']} resamples): each resample draws the evaluation examples and "
                  "the seeds with replacement, the same draw for both conditions (paired seeds share the head init "
                  "and the batch order); the CI is the 2.5th to 97.5th percentile of the difference of the "
                  "seed-averaged metric.", "", "Dose-response (ELECTRA's discriminator at fractions of its budget; "
                  "0 = the random init):", "", "| fraction | steps | dev | test |", "|---|---|---|---|"]
    for name, c in sorted(conds.items(), key=lambda kv: kv[1]["fraction"]):
        if name == "random" or name.startswith("electra_"):
            lines.append(f"| {c['fraction']:g} | {c['pretraining_step']} | {fmt(c.get('dev'))} | "
                         f"{fmt(c.get('test'))} |")
    return "\n".join(lines + ["", png_note, ""])


def plot(results, path):
    """results.png: the dose-response (dev, and test if given) with MLM-only at its budget. Returns a note."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(results.png not written: matplotlib is not installed; `pip install matplotlib`)"
    conds = results["conditions"]
    curve = sorted((c for n, c in conds.items() if n == "random" or n.startswith("electra_")),
                   key=lambda c: c["fraction"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for split, colour in (("dev", "C0"), ("test", "C1")):
        if curve and split in curve[0]:
            ax.errorbar([c["fraction"] for c in curve], [c[split]["mean"] for c in curve],
                        [c[split]["sd"] for c in curve], marker="o", color=colour, capsize=3, label=f"ELECTRA {split}")
            if "mlm" in conds:
                ax.errorbar([1.0], [conds["mlm"][split]["mean"]], [conds["mlm"][split]["sd"]], marker="s",
                            color=colour, mfc="white", capsize=3, ls="none", label=f"MLM-only {split}")
    ax.set_xlabel("fraction of the pretraining budget (0 = random init)")
    ax.set_ylabel(results["protocol"]["metric"] + " (mean ± sd over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "![dose-response](results.png)"


def stage_table(run, data):
    results = collect(run, data)
    note = plot(results, run.out / "results.png")
    atomic_write_text(run.out / "results.json", json.dumps(results, indent=1) + "\n")
    text = markdown(results, note)
    atomic_write_text(run.out / "results.md", text)
    print(text)


# ----------------------------------------------------------------------------- command line

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    g = ap.add_argument_group("task")
    g.add_argument("--train", required=True, help="training TSV (its text is also pretraining text)")
    g.add_argument("--dev", required=True, help="dev TSV: evaluated only")
    g.add_argument("--test", help="test TSV: evaluated only")
    g.add_argument("--text_column", default="sentence", type=_column, help="header name, or index with --no_header")
    g.add_argument("--label_column", default="label", type=_column, help="header name, or index with --no_header")
    g.add_argument("--text_b_column", type=_column, help="second text of a sentence pair, if any")
    g.add_argument("--no_header", action="store_true", help="the TSVs have no header row; columns are indices")
    g.add_argument("--labelled", type=int, default=0, help="N: labelled training examples used (0: all)")
    g.add_argument("--holdout", type=float, default=0.2, help="share of N held out to choose lr and epoch")
    g.add_argument("--metric", choices=("accuracy", "f1", "mcc"), default="accuracy",
                   help="chooses lr and epoch on the held-out slice, and is reported")
    g = ap.add_argument_group("pretraining")
    g.add_argument("--unlabelled", nargs="*", default=[], metavar="FILE",
                   help="more pretraining text (FILE or FILE.tsv:COLUMN), general or in-domain; never dev/test")
    g.add_argument("--lang", choices=("en", "zh"), default="en",
                   help="en splits paragraph lines into sentences; zh keeps lines (CJK characters are tokens)")
    g.add_argument("--budget_minutes", type=float, help="pretraining time of each objective on this machine")
    g.add_argument("--steps", type=int, help="instead of a budget: this many steps each (not equal compute)")
    g.add_argument("--checkpoints", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="fractions of the budget at which ELECTRA is fine-tuned (1.0 = the end); with "
                        "--pretraining_from, any subset of that folder's")
    g.add_argument("--preset", choices=("tiny", "small"), default="tiny", help="model size (electra-np presets)")
    for k in MODEL_OPTIONS:
        g.add_argument(f"--{k}", type=int, help=f"`electra-np pretrain --{k}` (default: the preset's)")
    g.add_argument("--pretrain_lr", type=float, help="pretraining peak lr (default: electra-np pretrain's)")
    g.add_argument("--pretrain_seed", type=int, default=0, help="seed of both pretrainings and of the packing")
    g.add_argument("--pretrain_args", default="", help="more `electra-np pretrain` options, one quoted string")
    g.add_argument("--vocab_size", type=int, default=8192, help="WordPiece vocabulary size (at most)")
    g.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True,
                   help="lowercase and strip accents (uncased BERT/ELECTRA)")
    g.add_argument("--parallel", action="store_true", help="both objectives at once, one thread each")
    g.add_argument("--pretraining_from", metavar="DIR", help="use the vocabulary, data and pretrainings of another "
                   "--out folder made with the same pretraining settings (e.g. the same task with other --labelled)")
    g = ap.add_argument_group("fine-tuning")
    g.add_argument("--seeds", type=int, default=5, help="paired fine-tuning seeds 0..K-1 per condition")
    g.add_argument("--select_seeds", type=int, default=2, help="seeds whose mean held-out score picks the lr")
    g.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3], help="the lr grid")
    g.add_argument("--ft_epochs", type=int, default=10,
                   help="fine-tuning epochs, the best on held-out kept (the official 3 leave 800 examples "
                        "undertrained: a random 2-layer start reaches 0.69 held-out SST-2 after 3, 0.75 after 15)")
    g.add_argument("--layer_decay", type=float, default=0.8, help="layer-wise lr decay (1: none)")
    g.add_argument("--ft_batch_size", type=int, default=32, help="fine-tuning batch size")
    g.add_argument("--max_seq_length", type=int, default=128, help="fine-tuning examples are cut to this")
    g.add_argument("--backend", choices=("fast", "numpy"), default="fast", help="fine-tuning backend")
    g.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    g = ap.add_argument_group("run")
    g.add_argument("--out", default="runs/electra_experiment", help="where everything goes")
    g.add_argument("--threads", type=int, default=usable_cpus(), help="threads for pretraining and fine-tuning "
                                                                        "(default: the CPUs this process may use)")
    g.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="run only these stages")
    args = ap.parse_args(argv)
    if (args.budget_minutes is None) == (args.steps is None):
        ap.error("give one of --budget_minutes and --steps")
    if args.seeds < 1 or args.select_seeds < 1 or not all(0 < f <= 1 for f in args.checkpoints):
        ap.error("--seeds and --select_seeds must be >= 1, --checkpoints in (0, 1]")
    args.checkpoints = sorted(set(args.checkpoints) | {1.0})
    args.split_sentences = args.lang == "en"
    args.unlabelled = [str(u) for u in args.unlabelled]
    args.argv = list(argv)
    return args


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The docstring as written, and the options' defaults (those that are set)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, "", [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _column(s):
    return int(s) if s.isdigit() else s


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure(args.threads)
    try:
        data = task_data(args)  # the TSVs are read and checked before anything is written
        run = Run(args)
        for stage, fn in (("vocab", stage_vocab), ("pretrain", lambda r, d: stage_pretrain(r)),
                          ("finetune", stage_finetune), ("table", stage_table)):
            if stage in args.stages:
                fn(run, data)
    except (ExperimentError, ValueError, FileNotFoundError) as e:
        print(f"electra_experiment: error: {e}", file=sys.stderr)
        return 2
    except StepFailed as e:
        print(f"electra_experiment: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("electra_experiment: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
