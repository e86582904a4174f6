"""Does ELECTRA pretraining pay off at laptop scale? (issue: fine-tuning and evaluation)

For one compute budget on this machine, pretrain
    ELECTRA   (generator 1/4 size + discriminator, L_MLM + 50 L_disc)
    MLM-only  (the BERT baseline: a generator-style model of the discriminator's size, same masking)
on English text (../shared/data en_gutenberg + en_movie_reviews), then fine-tune each, and a randomly
initialized encoder of the same shape, on SST-2 and CoLA (dev sets, median of several seeds); and
pretrain ELECTRA on Chinese (zh_shopping_reviews 7-category reviews + zh_classics) and fine-tune on the
sentiment labels of waimai_10k (a held-out split; waimai is not in the pretraining text).

    # both English pretrainings at once, one pinned to each CPU (1 thread each), 40 minutes each
    python examples/finetune_experiment.py --stage pretrain --parallel --budget_minutes 40 --lr 1e-3
    # another ELECTRA objective, next to the first (folder en_electra_<variant>, init "electra_<variant>")
    python examples/finetune_experiment.py --stage pretrain --objectives electra --variant m25t3 \\
        --mask_prob 0.25 --temperature 3 --threads 1 --budget_minutes 40 --lr 1e-3 --steps_from electra
    # fine-tune every pretrained init found in --out, and a random one (split across processes with --inits)
    python examples/finetune_experiment.py --stage finetune --tasks cola sst2 --sst2_train 10000 --threads 1
    python examples/finetune_experiment.py --lang zh --stage pretrain --threads 1 --budget_minutes 30 --lr 1e-3
    python examples/finetune_experiment.py --lang zh --stage finetune --threads 1 --ft_epochs 2 --max_seq_length 64
    python examples/finetune_experiment.py --stage table     # the Markdown tables of examples/RESULTS.md
    python examples/finetune_experiment.py --stage probe     # is an encoder's output input-dependent?

Files in --out (default runs/experiment): vocab_<lang>.txt; <lang>_<objective>[_<variant>]/ (the pretraining
runs); pretrain_<lang>_<name>.json (steps, step time, settings, wall-clock); finetune_<lang>_<task>_<init>.json
(every seed's dev/test metrics and the median).
Equal compute means equal time on this machine: each objective's step is timed first (alternating, with the
thread count the run will use) and its number of steps set so that its pretraining takes the budget.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from electra_np.fast.runtime import configure  # noqa: E402

configure()  # before NumPy: OpenBLAS's short idle spin (fast/runtime.py); main() sets --threads
import numpy as np  # noqa: E402

from electra_np.config import ElectraConfig, PretrainingConfig, preset  # noqa: E402
from electra_np.data.labelled import encode_examples, label_map, read_glue, read_tsv  # noqa: E402
from electra_np.data.tokenizer import Tokenizer  # noqa: E402
from electra_np.engine import make_step  # noqa: E402
from electra_np.model import Electra  # noqa: E402
from electra_np.params import encoder_shapes, init_params  # noqa: E402
from electra_np.train.finetune import FinetuneConfig, evaluate, finetune  # noqa: E402
from electra_np.train.metrics import median_over_seeds  # noqa: E402

# A 4-layer ELECTRA-Small (E=128, H=256, 4 heads, F=1024): a third of Small's depth, so that the budget
# buys a few thousand steps
MODEL = dict(embedding_size=128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
             max_position_embeddings=128)
METRIC = {"sst2": "dev_accuracy", "cola": "dev_mcc", "waimai": "test_accuracy"}


def run(cmd):
    print("$ " + " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def seconds_per_step(config, pc, batch_size, seq_len, backend, steps=6):
    setup = Electra.build(config, pc)
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


def pretrain_cmd(folder, corpus, vocab, objective, steps, args):
    cmd = [sys.executable, "-m", "electra_np", "pretrain", "--preset", "small", "--out_dir", folder,
           "--corpus", *corpus, "--vocab", vocab, "--objective", objective, "--steps", steps,
           "--batch_size", args.batch_size, "--seq_len", 128, "--lr", args.lr, "--log_every", 50,
           "--eval_every", max(100, steps // 10), "--save_every", max(200, steps // 5), "--seed", args.seed,
           "--mask_prob", args.mask_prob, "--temperature", args.temperature, "--threads", args.threads,
           "--backend", args.backend, "--overwrite"]
    if args.lang == "en":
        cmd.append("--split_sentences")  # one paragraph per line
    for k, v in MODEL.items():
        cmd += [f"--{k}", v]
    return [str(c) for c in cmd]


def stage_pretrain(args, out, corpus, vocab, config, objectives):
    """Time each objective's step, set its steps for the budget, pretrain (one after the other, or at once
    pinned to one CPU each with --parallel)."""
    names = [o if not args.variant else f"{o}_{args.variant}" for o in objectives]
    pcs = {o: PretrainingConfig(objective=o, mask_prob=args.mask_prob, temperature=args.temperature)
           for o in objectives}
    times = {o: [] for o in objectives}
    for _ in range(2):  # alternating, on a quiet machine
        for o in objectives:
            times[o].append(seconds_per_step(config, pcs[o], args.batch_size, 128, args.backend))
    running = []
    for i, (o, name) in enumerate(zip(objectives, names)):
        sps = min(times[o])
        steps = max(100, int(args.budget_minutes * 60 / sps))
        if args.steps_from:  # the steps of an earlier run of the same objective (same step cost)
            steps = json.loads((out / f"pretrain_{args.lang}_{args.steps_from}.json").read_text())["steps"]
        print(f"{name}: {sps:.3f} s/step -> {steps} steps in {args.budget_minutes} min", flush=True)
        record = {"name": name, "objective": o, "steps": steps, "seconds_per_step": sps, "threads": args.threads,
                  "budget_minutes": args.budget_minutes, "lr": args.lr, "mask_prob": args.mask_prob,
                  "temperature": args.temperature, "batch_size": args.batch_size, "model": MODEL}
        cmd = pretrain_cmd(out / f"{args.lang}_{name}", corpus, vocab, o, steps, args)
        if args.parallel:
            cmd = ["taskset", "-c", str(i)] + cmd
        print("$ " + " ".join(cmd), flush=True)
        log = open(out / f"{args.lang}_{name}.stdout", "w")
        running.append((record, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.time()))
        if not args.parallel:
            running[-1][1].wait()
    for record, proc, t in running:
        if proc.wait() != 0:
            sys.exit(f"{record['name']} pretraining failed (exit {proc.returncode}); see {out}/{args.lang}_{record['name']}.stdout")
        record["wall_minutes"] = (time.time() - t) / 60
        (out / f"pretrain_{args.lang}_{record['name']}.json").write_text(json.dumps(record, indent=2))


def finetune_seeds(name, config, encoder, tokenizer, train_ex, dev_ex, test_ex, seeds, fc_kw, metric):
    labels = label_map(train_ex)
    T = fc_kw["max_seq_length"]
    train = encode_examples(train_ex, tokenizer, T, labels)
    dev = encode_examples(dev_ex, tokenizer, T, labels)
    test = encode_examples(test_ex, tokenizer, T, labels) if test_ex is not None else None
    results = []
    for seed in seeds:
        t = time.time()
        fc = FinetuneConfig(seed=seed, metric=metric, **fc_kw)
        best, history = finetune(encoder(seed) if callable(encoder) else encoder, config, len(labels), train, dev, fc,
                                 tokenizer.pad_id, log=lambda s: print(f"  [{name} seed {seed}] {s}", flush=True))
        scores = max(history, key=lambda h: h[metric])
        r = {"dev_" + k: scores[k] for k in ("accuracy", "mcc", "f1")}
        r["best_epoch"] = scores["epoch"]
        if test is not None:
            test_scores, _ = evaluate(best, config, test[0], test[1], 64, tokenizer.pad_id, fc.backend)
            r.update({"test_" + k: v for k, v in test_scores.items()})
        r["minutes"] = (time.time() - t) / 60
        print(f"  [{name} seed {seed}] {r}", flush=True)
        results.append(r)
    return {"median": median_over_seeds(results), "runs": results}


def tasks_for(args):
    """{task: (train examples, dev examples, test examples or None, metric that picks the best epoch)}"""
    if args.lang == "en":
        sst_train = read_glue("sst2", DATA / "en_sst2", "train")
        if args.sst2_train:  # a fixed random subset (seed 0), the same for every init
            idx = np.random.default_rng(0).permutation(len(sst_train))[:args.sst2_train]
            sst_train = [sst_train[i] for i in sorted(idx)]
        return {"sst2": (sst_train, read_glue("sst2", DATA / "en_sst2", "dev"), None, "accuracy"),
                "cola": (read_glue("cola", DATA / "en_cola", "train"), read_glue("cola", DATA / "en_cola", "dev"),
                         None, "mcc")}
    ex = read_tsv(DATA / "zh_shopping_reviews" / "waimai_10k.tsv", "review", "label")
    idx = np.random.default_rng(0).permutation(len(ex))
    n_dev = n_test = len(ex) // 10
    split = lambda ii: [ex[i] for i in sorted(ii)]  # noqa: E731
    return {"waimai": (split(idx[n_dev + n_test:]), split(idx[:n_dev]), split(idx[n_dev:n_dev + n_test]), "accuracy")}


def stage_finetune(args, out, tokenizer):
    inits = {}
    for folder in sorted(out.glob(f"{args.lang}_electra*/discriminator")):
        inits[folder.parent.name.split("_", 1)[1]] = load_encoder(folder)
    for folder in sorted(out.glob(f"{args.lang}_mlm*/generator")):
        inits[folder.parent.name.split("_", 1)[1]] = load_encoder(folder)
    if not inits:
        sys.exit(f"no pretraining runs in {out}: run --stage pretrain first")
    cfg0 = next(iter(inits.values()))[0]
    # a fresh random encoder of the same shape for every fine-tuning seed
    inits["random"] = (cfg0, lambda seed: init_params(encoder_shapes(cfg0), cfg0.initializer_range, 1000 + seed))
    for name in args.inits or []:
        if name not in inits:
            sys.exit(f"--inits: no init {name!r} in {out}; found {sorted(inits)}")
    fc_kw = dict(learning_rate=args.ft_lr, epochs=args.ft_epochs, batch_size=32, head="official", backend=args.backend,
                 max_seq_length=args.max_seq_length)
    tasks = tasks_for(args)
    for task in args.tasks or list(tasks):
        if task not in tasks:
            sys.exit(f"--tasks: {task!r} is not a {args.lang} task; choose from {sorted(tasks)}")
        train_ex, dev_ex, test_ex, metric = tasks[task]
        for name in args.inits or list(inits):
            cfg, enc = inits[name]
            print(f"== {task} from {name} ({len(train_ex)} train / {len(dev_ex)} dev)", flush=True)
            result = finetune_seeds(name, cfg, enc, tokenizer, train_ex, dev_ex, test_ex, args.seeds, fc_kw, metric)
            result.update(train_examples=len(train_ex), dev_examples=len(dev_ex), recipe=fc_kw, threads=args.threads)
            (out / f"finetune_{args.lang}_{task}_{name}.json").write_text(json.dumps(result, indent=2))


def stage_probe(args, out, tokenizer):
    """How input-dependent is each pretrained encoder's output (a collapse check)? On 64 dev sentences:
    the spread of the token vectors across positions and of the [CLS] vector across sentences (std over the
    rows, relative to the mean |h|), and the mean cosine between two sentences' [CLS] vectors."""
    from electra_np.data.labelled import pad_batch
    from electra_np.model import encoder_forward

    train_ex, dev_ex, _, _ = next(iter(tasks_for(args).values()))
    encoded, _ = encode_examples(dev_ex[:64], tokenizer, 128)
    b = pad_batch(encoded, tokenizer.pad_id)
    inits = {f.parent.name.split("_", 1)[1]: load_encoder(f) for f in
             sorted(out.glob(f"{args.lang}_electra*/discriminator")) + sorted(out.glob(f"{args.lang}_mlm*/generator"))}
    cfg = next(iter(inits.values()))[0]
    inits["random"] = (cfg, init_params(encoder_shapes(cfg), cfg.initializer_range, 1000))
    print("| init | token spread across positions | [CLS] spread across sentences | mean cos([CLS]_i, [CLS]_j) |\n"
          "|---|---|---|---|")
    for name, (c, w) in inits.items():
        h, _ = encoder_forward(w, c, b["input_ids"], b["token_type_ids"], b["attention_mask"])  # (B, T, H)
        tokens, cls = h[b["attention_mask"] != 0], h[:, 0]
        u = cls / np.linalg.norm(cls, axis=1, keepdims=True)
        cos = (u @ u.T)[~np.eye(len(u), dtype=bool)].mean()
        print(f"| {name} | {tokens.std(0).mean() / np.abs(tokens).mean():.4f} | "
              f"{cls.std(0).mean() / np.abs(cls).mean():.4f} | {cos:.4f} |")


def print_tables(out, lang):
    """Markdown: the pretraining runs' last held-out numbers, then the fine-tuning medians."""
    print("| pretraining | objective | mask / temp | steps | s/step | wall min | held-out MLM acc | held-out disc acc "
          "| always-original |\n|---|---|---|---|---|---|---|---|---|")
    for path in sorted(out.glob(f"pretrain_{lang}_*.json")):
        rec = json.loads(path.read_text())
        records = [json.loads(line) for line in (out / f"{lang}_{rec['name']}" / "metrics.jsonl").read_text().splitlines()]
        ev = [r for r in records if r.get("split") == "eval"][-1]
        disc = f"{ev['disc_acc']:.4f} | {ev['disc_baseline_acc']:.4f}" if "disc_acc" in ev else "- | -"
        print(f"| {rec['name']} | {rec['objective']} | {rec['mask_prob']} / {rec['temperature']} | {rec['steps']} | "
              f"{rec['seconds_per_step']:.3f} | {rec.get('wall_minutes', float('nan')):.1f} | {ev['mlm_acc']:.4f} | {disc} |")
    print("\n| task | init | metric | median | seeds | minutes per run |\n|---|---|---|---|---|---|")
    for path in sorted(out.glob(f"finetune_{lang}_*.json")):
        task, name = path.stem.split("_", 3)[2:]
        r, metric = json.loads(path.read_text()), METRIC[task]
        print(f"| {task} | {name} | {metric} | {r['median'][metric]:.4f} | "
              + ", ".join(f"{x[metric]:.4f}" for x in r["runs"])
              + f" | {np.median([x['minutes'] for x in r['runs']]):.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", choices=["en", "zh"], default="en")
    ap.add_argument("--stage", choices=["all", "pretrain", "finetune", "table", "probe"], default="all")
    ap.add_argument("--out", default="runs/experiment")
    ap.add_argument("--budget_minutes", type=float, default=40.0, help="pretraining time per objective")
    ap.add_argument("--objectives", nargs="+", choices=["electra", "mlm"], help="default: en electra mlm, zh electra")
    ap.add_argument("--variant", default="", help="a name for runs with other settings (folder suffix)")
    ap.add_argument("--steps_from", help="take the steps of this earlier run (e.g. electra) instead of the budget")
    ap.add_argument("--parallel", action="store_true", help="pretrain the objectives at once, one pinned to each CPU")
    ap.add_argument("--threads", type=int, default=2, help="threads for Numba and BLAS")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4, help="pretraining peak learning rate")
    ap.add_argument("--mask_prob", type=float, default=0.15, help="the paper's 0.15 (the tiny preset's demo uses 0.25)")
    ap.add_argument("--temperature", type=float, default=1.0, help="the paper's 1.0 (the tiny preset's demo uses 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab_size", type=int, default=8192)
    ap.add_argument("--tasks", nargs="+", help="fine-tune on these only (en: sst2 cola; zh: waimai)")
    ap.add_argument("--inits", nargs="+", help="fine-tune from these only (default: every run found, and random)")
    ap.add_argument("--ft_lr", type=float, default=3e-4, help="fine-tuning peak learning rate (official, Small)")
    ap.add_argument("--ft_epochs", type=int, default=3)
    ap.add_argument("--max_seq_length", type=int, default=128, help="fine-tuning examples are truncated to this")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sst2_train", type=int, default=0, help="use this many SST-2 training examples (0: all)")
    ap.add_argument("--backend", default="fast")
    args = ap.parse_args()
    if args.parallel:
        args.threads = 1
    configure(args.threads)  # the step timing runs as the pretrainings will
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this experiment needs the shared corpora")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "table":
        return print_tables(out, args.lang)

    if args.lang == "en":
        corpus = [DATA / "en_gutenberg" / "gutenberg_en.txt", f"{DATA / 'en_movie_reviews' / 'reviews.tsv'}:text"]
    else:
        corpus = [f"{DATA / 'zh_shopping_reviews' / 'online_shopping_7cats.tsv'}:review",
                  *sorted((DATA / "zh_classics").glob("*.txt"))]
    objectives = args.objectives or (["electra", "mlm"] if args.lang == "en" else ["electra"])
    vocab = out / f"vocab_{args.lang}.txt"
    if not vocab.is_file():
        run([sys.executable, "-m", "electra_np", "build-vocab", "--corpus", *corpus, "--vocab_size", args.vocab_size,
             "--out", vocab])
    tokenizer = Tokenizer.from_file(vocab, do_lower_case=True)
    config = preset("small", vocab_size=len(tokenizer), **MODEL)
    if args.stage in ("all", "pretrain"):
        stage_pretrain(args, out, corpus, vocab, config, objectives)
    if args.stage == "probe":
        return stage_probe(args, out, tokenizer)
    if args.stage in ("all", "finetune"):
        stage_finetune(args, out, tokenizer)
    print_tables(out, args.lang)


if __name__ == "__main__":
    main()
