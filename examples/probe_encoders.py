"""Which of these encoders is worth fine-tuning? Each is fine-tuned on N labelled rows of a training TSV and
scored on a held-out slice of those rows (never dev or test): the quick probe behind the lever tables of
examples/RESULTS.md, cheaper than the whole experiment (examples/electra_experiment.py) when a choice is to be made.

    python examples/probe_encoders.py --train train.tsv --vocab runs/x/vocab.txt --labelled 1000 \\
        random runs/a/discriminator emb:runs/a/discriminator layers:runs/a/discriminator

An encoder is a model folder (a discriminator or a generator of `electra-np pretrain`), `random` (drawn as the
experiment draws its random condition, shaped as the first folder given), `emb:FOLDER` (the folder's embeddings
under freshly drawn layers) or `layers:FOLDER` (fresh embeddings under the folder's layers): the last two tell
whether the embeddings or the layers carry what helps or hurts. The N rows and their held-out slice are the
experiment's (the same seed), so its numbers and these agree. Every folder must share --vocab.
"""

import argparse
import sys
from pathlib import Path

from electra_np.fast.runtime import configure


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("encoders", nargs="+", help="FOLDER, random, emb:FOLDER or layers:FOLDER")
    ap.add_argument("--train", required=True, help="training TSV (N of its rows are used)")
    ap.add_argument("--text_column", default="sentence", help="(default: sentence)")
    ap.add_argument("--label_column", default="label", help="(default: label)")
    ap.add_argument("--labelled", type=int, default=1000, help="N labelled rows (default: 1000)")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of N held out to score (default: 0.2)")
    ap.add_argument("--vocab", required=True, help="the vocab.txt every encoder was pretrained with")
    ap.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True, help="(default: on)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-4], help="fine-tuning lrs (default: 3e-4)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs, the best on held-out kept (default: 10)")
    ap.add_argument("--layer_decay", type=float, default=0.8, help="layer-wise lr decay (default: 0.8)")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds 0..K-1 (default: 3)")
    ap.add_argument("--threads", type=int, help="threads (default: all)")
    args = ap.parse_args(argv)
    args.dev = args.test = args.text_b_column = None
    args.no_header = False
    return args


def encoder(spec, like, seed):
    """(config, "electra.*" tensors) of one encoder spec for fine-tuning seed `seed`."""
    from electra_experiment import RANDOM_INIT_SEED, load_encoder

    from electra_np.params import encoder_shapes, init_params

    mode, _, folder = spec.rpartition(":") if ":" in spec else ("all", "", spec)
    config, pretrained = load_encoder(like if spec == "random" else folder)
    fresh = init_params(encoder_shapes(config), config.initializer_range, RANDOM_INIT_SEED + seed)
    if spec == "random":
        return config, fresh
    if mode == "emb":
        return config, {k: v if ".embeddings." in k else fresh[k] for k, v in pretrained.items()}
    if mode == "layers":
        return config, {k: fresh[k] if ".embeddings." in k else v for k, v in pretrained.items()}
    return config, pretrained


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure(args.threads)  # before NumPy loads OpenBLAS
    import numpy as np
    from electra_experiment import task_data

    from electra_np.data.labelled import encode_examples
    from electra_np.data.tokenizer import Tokenizer
    from electra_np.train.finetune import FinetuneConfig, finetune

    folders = [s.rpartition(":")[2] for s in args.encoders if s != "random"]
    if not folders:
        sys.exit("probe_encoders: give at least one model folder (random is shaped as the first one)")
    for f in folders:
        if not (Path(f) / "model.npz").is_file():
            sys.exit(f"probe_encoders: {f}: no model.npz (expected a discriminator or generator folder)")
    data = task_data(args)
    tok = Tokenizer.from_file(args.vocab, do_lower_case=args.lowercase)
    print(f"{len(data['fit'])} rows to train on, {len(data['held_out'])} held out; lrs {args.lrs}, "
          f"{args.epochs} epochs, layer decay {args.layer_decay}, seeds 0..{args.seeds - 1}", flush=True)
    for spec in args.encoders:
        for lr in args.lrs:
            scores = []
            for seed in range(args.seeds):
                config, enc = encoder(spec, folders[0], seed)
                T = config.max_position_embeddings
                fit, held = (encode_examples(data[k], tok, T, data["labels"]) for k in ("fit", "held_out"))
                fc = FinetuneConfig(learning_rate=lr, epochs=args.epochs, layerwise_lr_decay=args.layer_decay,
                                    seed=seed)
                _, history = finetune(enc, config, len(data["labels"]), fit, held, fc, tok.pad_id, log=lambda s: None)
                scores.append(max(h["accuracy"] for h in history))
            print(f"{spec}  lr {lr:g}: held-out accuracy {np.mean(scores):.3f} +- {np.std(scores, ddof=1):.3f} "
                  f"(seeds: {' '.join(f'{s:.3f}' for s in scores)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
