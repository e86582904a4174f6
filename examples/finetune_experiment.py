"""Does ELECTRA pretraining pay off at laptop scale? (issue: fine-tuning and evaluation)

For one wall-clock compute budget on this machine, pretrain
    ELECTRA   (generator 1/4 size + discriminator, L_MLM + 50 L_disc)
    MLM-only  (the BERT baseline: a generator-style model of the discriminator's size, same masking)
on English text (../shared/data en_gutenberg + en_movie_reviews), then fine-tune each, and a randomly
initialized encoder of the same shape, on SST-2 and CoLA (dev sets, median of several seeds); and
pretrain ELECTRA on Chinese (zh_shopping_reviews 7-category reviews + zh_classics) and fine-tune on the
sentiment labels of waimai_10k (a held-out split; waimai is not in the pretraining text).

    python examples/finetune_experiment.py --budget_minutes 20 --out runs/experiment
    python examples/finetune_experiment.py --lang zh --budget_minutes 15 --out runs/experiment

Writes <out>/results_<lang>.json and prints a Markdown table (copied into examples/RESULTS.md).
Equal compute means equal wall-clock on this machine: each objective's step time is measured first and
its number of steps set so that pretraining takes the budget.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from electra_np.config import ElectraConfig, PretrainingConfig, preset  # noqa: E402
from electra_np.engine import make_step  # noqa: E402
from electra_np.finetune import FinetuneConfig, evaluate, finetune  # noqa: E402
from electra_np.finetune_data import encode_examples, label_map, read_glue, read_tsv  # noqa: E402
from electra_np.metrics import median_over_seeds  # noqa: E402
from electra_np.model import Electra  # noqa: E402
from electra_np.params import encoder_shapes, init_params  # noqa: E402
from electra_np.tokenizer import Tokenizer  # noqa: E402

# A 4-layer ELECTRA-Small (E=128, H=256, 4 heads, F=1024): the depth that a 20-minute budget trains best
MODEL = dict(embedding_size=128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
             max_position_embeddings=128)


def run(cmd):
    print("$ " + " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def seconds_per_step(config, objective, batch_size, seq_len, backend, steps=6):
    setup = Electra.build(config, PretrainingConfig(objective=objective))
    params = setup.init_params(0, np.float32)
    step = make_step(setup, backend)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.vocab_size, (batch_size, seq_len))
    ids[:, 0], ids[:, -1] = 2, 3
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(params, {"input_ids": ids}, rng)
        times.append(time.perf_counter() - t)
    return float(np.median(times[2:])) * 1.08  # + the optimizer update and logging, measured at about 8%


def load_encoder(folder):
    folder = Path(folder)
    config = ElectraConfig.from_json(folder / "config.json")
    with np.load(folder / "model.npz") as z:
        params = {k: z[k] for k in z.files if k.startswith("electra.")}
    return config, params


def finetune_seeds(name, config, encoder, tokenizer, train_ex, dev_ex, test_ex, seeds, fc_kw, metric):
    labels = label_map(train_ex)
    T = 128
    train = encode_examples(train_ex, tokenizer, T, labels)
    dev = encode_examples(dev_ex, tokenizer, T, labels)
    test = encode_examples(test_ex, tokenizer, T, labels) if test_ex is not None else None
    results = []
    for seed in seeds:
        t = time.time()
        fc = FinetuneConfig(seed=seed, metric=metric, **fc_kw)
        best, history = finetune(encoder(seed) if callable(encoder) else encoder, config, len(labels), train, dev, fc, tokenizer.pad_id,
                                 log=lambda s: print(f"  [{name} seed {seed}] {s}", flush=True))
        scores = max(history, key=lambda h: h[metric])
        r = {"dev_" + k: scores[k] for k in ("accuracy", "mcc", "f1")}
        if test is not None:
            test_scores, _ = evaluate(best, config, test[0], test[1], 64, tokenizer.pad_id, fc.backend)
            r.update({"test_" + k: v for k, v in test_scores.items()})
        r["minutes"] = (time.time() - t) / 60
        print(f"  [{name} seed {seed}] {r}", flush=True)
        results.append(r)
    return {"median": median_over_seeds(results), "runs": results}


def pretrain(out, corpus, vocab, objective, steps, args, extra=(), core=None):
    """One pretraining run (electra-np pretrain); with `core`, started in the background pinned to that CPU.
    Returns its wall-clock minutes, or with `core` the Popen and its start time."""
    cmd = [sys.executable, "-m", "electra_np.cli", "pretrain", "--preset", "small", "--out_dir", out, "--corpus", *corpus,
           "--vocab", vocab,
           "--objective", objective, "--steps", steps, "--batch_size", args.batch_size, "--seq_len", 128,
           "--lr", args.lr, "--log_every", 50, "--eval_every", max(100, steps // 10), "--save_every", max(200, steps // 5),
           "--seed", args.seed, "--mask_prob", args.mask_prob, "--temperature", args.temperature, "--threads", args.threads,
           "--backend", args.backend, "--overwrite", *extra]
    for k, v in MODEL.items():
        cmd += [f"--{k}", v]
    t = time.time()
    if core is not None:
        cmd = ["taskset", "-c", core, *cmd]
        print("$ " + " ".join(map(str, cmd)), flush=True)
        log = open(Path(out).parent / f"{Path(out).name}.stdout", "w")
        return subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT), t
    run(cmd)
    return (time.time() - t) / 60


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", choices=["en", "zh"], default="en")
    ap.add_argument("--budget_minutes", type=float, default=20.0, help="pretraining wall-clock per objective")
    ap.add_argument("--out", default="runs/experiment")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4, help="pretraining peak learning rate")
    ap.add_argument("--ft_lr", type=float, default=3e-4, help="fine-tuning peak learning rate (official, Small)")
    ap.add_argument("--ft_epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sst2_train", type=int, default=0, help="use only this many SST-2 training examples (0: all)")
    ap.add_argument("--vocab_size", type=int, default=8192)
    ap.add_argument("--mask_prob", type=float, default=0.15, help="the paper's 0.15 (the tiny preset's demo uses 0.25)")
    ap.add_argument("--temperature", type=float, default=1.0, help="the paper's 1.0 (the tiny preset's demo uses 3)")
    ap.add_argument("--backend", default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", choices=["all", "pretrain", "finetune", "table"], default="all",
                    help="pretrain only, fine-tune only (reusing the runs in --out), both, or print the results table")
    ap.add_argument("--tasks", nargs="+", help="fine-tune on these tasks only (en: sst2 cola; zh: waimai)")
    ap.add_argument("--threads", type=int, default=2, help="threads for Numba and BLAS (both sides)")
    ap.add_argument("--parallel", action="store_true",
                    help="run the objectives' pretrainings at once, one pinned to each CPU, 1 thread each")
    args = ap.parse_args()
    if args.parallel:
        args.threads = 1
    from electra_np.threads import set_num_threads

    set_num_threads(args.threads)  # the step-time measurement runs as the pretrainings will
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this experiment needs the shared corpora")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.lang == "en":
        corpus = [DATA / "en_gutenberg" / "gutenberg_en.txt", f"{DATA / 'en_movie_reviews' / 'reviews.tsv'}:text"]
        objectives = ["electra", "mlm"]
    else:
        corpus = [f"{DATA / 'zh_shopping_reviews' / 'online_shopping_7cats.tsv'}:review",
                  *sorted((DATA / "zh_classics").glob("*.txt"))]
        objectives = ["electra"]
    vocab = out / f"vocab_{args.lang}.txt"
    if not vocab.is_file():
        run([sys.executable, "-m", "electra_np.cli", "build-vocab", "--corpus", *corpus, "--vocab_size", args.vocab_size,
             "--out", vocab])
    tokenizer = Tokenizer.from_file(vocab, do_lower_case=True)
    config = preset("small", vocab_size=len(tokenizer), **MODEL)

    report_path = out / f"results_{args.lang}.json"
    pretraining = args.stage in ("all", "pretrain")
    report = json.loads(report_path.read_text()) if report_path.is_file() and not pretraining else {}
    if pretraining:
        report.update({"lang": args.lang, "budget_minutes": args.budget_minutes, "threads": args.threads,
                       "lr": args.lr, "mask_prob": args.mask_prob, "temperature": args.temperature, "model": MODEL})
    report.setdefault("pretraining", {})
    if pretraining:
        # equal compute = equal wall-clock: time every objective's step up front, alternating, on a quiet machine
        times = {o: [] for o in objectives}
        for _ in range(2):
            for objective in objectives:
                times[objective].append(seconds_per_step(config, objective, args.batch_size, 128, args.backend))
        running = {}
        for i, objective in enumerate(objectives):
            sps = min(times[objective])
            steps = max(100, int(args.budget_minutes * 60 / sps))
            print(f"{objective}: {sps:.3f} s/step -> {steps} steps in {args.budget_minutes} min", flush=True)
            report["pretraining"][objective] = {"steps": steps, "seconds_per_step": sps, "threads": args.threads}
            result = pretrain(out / f"{args.lang}_{objective}", corpus, vocab, objective, steps, args,
                              ["--split_sentences"] if args.lang == "en" else [], i if args.parallel else None)
            if args.parallel:
                running[objective] = result
            else:
                report["pretraining"][objective]["wall_minutes"] = result
        for objective, (proc, t) in running.items():
            if proc.wait() != 0:
                sys.exit(f"{objective} pretraining failed (exit {proc.returncode}); see its .stdout in {out}")
            report["pretraining"][objective]["wall_minutes"] = (time.time() - t) / 60
        report_path.write_text(json.dumps(report, indent=2))
        if args.stage == "pretrain":
            return
    for objective in objectives:
        folder = out / f"{args.lang}_{objective}"
        metrics = folder / "metrics.jsonl"
        if metrics.is_file():  # the last training and evaluation records of the run
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            report["pretraining"].setdefault(objective, {})["last_records"] = records[-3:]

    if args.stage == "table":
        return print_table(out, args.lang)
    report_path.write_text(json.dumps(report, indent=2))  # with the runs' last records
    fc_kw = dict(learning_rate=args.ft_lr, epochs=args.ft_epochs, batch_size=32, head="official", backend=args.backend)
    inits = {"electra": load_encoder(out / f"{args.lang}_electra" / "discriminator")}
    if args.lang == "en":
        inits["mlm"] = load_encoder(out / "en_mlm" / "generator")
    cfg0 = inits["electra"][0]
    # a fresh random encoder of the same shape for every fine-tuning seed
    inits["random"] = (cfg0, lambda seed: init_params(encoder_shapes(cfg0), cfg0.initializer_range, 1000 + seed))

    tasks = {}
    if args.lang == "en":
        sst_train = read_glue("sst2", DATA / "en_sst2", "train")
        if args.sst2_train:
            idx = np.random.default_rng(0).permutation(len(sst_train))[:args.sst2_train]
            sst_train = [sst_train[i] for i in sorted(idx)]
        tasks["sst2"] = (sst_train, read_glue("sst2", DATA / "en_sst2", "dev"), None, "accuracy")
        tasks["cola"] = (read_glue("cola", DATA / "en_cola", "train"), read_glue("cola", DATA / "en_cola", "dev"), None, "mcc")
    else:
        ex = read_tsv(DATA / "zh_shopping_reviews" / "waimai_10k.tsv", "review", "label")
        idx = np.random.default_rng(0).permutation(len(ex))
        n_dev = n_test = len(ex) // 10
        split = lambda ii: [ex[i] for i in sorted(ii)]
        tasks["waimai"] = (split(idx[n_dev + n_test:]), split(idx[:n_dev]), split(idx[n_dev:n_dev + n_test]), "accuracy")

    for task in args.tasks or list(tasks):
        if task not in tasks:
            sys.exit(f"--tasks: {task!r} is not a {args.lang} task; choose from {sorted(tasks)}")
        train_ex, dev_ex, test_ex, metric = tasks[task]
        results = {"train_examples": len(train_ex), "dev_examples": len(dev_ex), "recipe": fc_kw, "inits": {}}
        for name, (cfg, enc) in inits.items():
            print(f"== {task} from {name} ({len(train_ex)} train / {len(dev_ex)} dev)", flush=True)
            results["inits"][name] = finetune_seeds(name, cfg, enc, tokenizer, train_ex, dev_ex, test_ex, args.seeds,
                                                    fc_kw, metric)
            (out / f"results_{args.lang}_{task}.json").write_text(json.dumps(results, indent=2))
    print_table(out, args.lang)


def print_table(out, lang):
    """The Markdown table of every results_<lang>_<task>.json in `out`."""
    print("\n| task | init | metric | median | runs | minutes per run |\n|---|---|---|---|---|---|")
    for path in sorted(Path(out).glob(f"results_{lang}_*.json")):
        task = path.stem.split("_", 2)[2]
        metric = {"sst2": "dev_accuracy", "cola": "dev_mcc", "waimai": "test_accuracy"}[task]
        for name, r in json.loads(path.read_text())["inits"].items():
            print(f"| {task} | {name} | {metric} | {r['median'][metric]:.4f} | "
                  + ", ".join(f"{x[metric]:.4f}" for x in r["runs"])
                  + f" | {np.median([x['minutes'] for x in r['runs']]):.1f} |")


if __name__ == "__main__":
    main()
