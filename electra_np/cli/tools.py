"""`electra-np build-vocab`, `electra-np prepare` and `electra-np gradcheck`: the steps of pretraining one
at a time (a vocabulary, a prepared corpus for `pretrain --data`), and the gradient check.

    electra-np build-vocab --corpus my.txt --vocab_size 30522 --out vocab.txt
    electra-np prepare --corpus my.txt --vocab vocab.txt --out_dir data/my
    electra-np gradcheck
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from ..config import ACTIVATIONS, ElectraConfig, PretrainingConfig
from ..data.cache import corpus_lines, corpus_sources, source_specs, vocab_for_corpus
from ..data.dataset import preparation_warnings, unk_summary
from ..data.packing import MIN_TARGET_LENGTH
from ..data.prepare import prepare_corpus
from ..data.tokenizer import Tokenizer, build_vocab
from ..gradcheck import check_electra
from ..masking import Corruption, positions_from_indices
from ..model import Electra, electra_backward, electra_forward
from .common import EVAL_FRACTION_HELP, CliError, add_corpus_options, check_apart, split_by_default

GRADCHECK_TOLERANCE = 1e-5
ZERO_GRADIENT = 1e-10  # below this a key bias's gradient is rounding noise (its true gradient is 0)


def add_parsers(sub) -> None:
    """Register build-vocab, prepare and gradcheck on an argparse subparsers object."""
    p = sub.add_parser("build-vocab", help="learn a WordPiece vocabulary from text files",
                       description="Learn a WordPiece vocabulary (BPE merges with ## continuations, as Hugging Face "
                                   "tokenizers' WordPieceTrainer) and write it as a BERT vocab.txt.")
    add_corpus_options(p, vocab_help=False, packing=False)
    p.add_argument("--vocab_size", type=int, default=8192, help="tokens in the vocabulary, the 5 special tokens "
                                                                "included (default: 8192)")
    p.add_argument("--min_frequency", type=int, default=2, help="stop merging when no pair of pieces occurs this "
                                                                "often (default: 2)")
    p.add_argument("--out", metavar="FILE", default="vocab.txt", help="the vocab.txt to write (default: vocab.txt)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_build_vocab)

    p = sub.add_parser("prepare", help="tokenize and pack a corpus into pretraining examples",
                       description="Tokenize text files and pack them into [CLS] A [SEP] B [SEP] examples "
                                   "(google-research/electra build_pretraining_dataset.py), with a held-out split; "
                                   "use the folder with `electra-np pretrain --data DIR`.")
    add_corpus_options(p)
    p.add_argument("--vocab_size", type=int, default=8192, help="vocabulary size to learn when no --vocab is given "
                                                                "(default: 8192)")
    p.add_argument("--out_dir", metavar="DIR", required=True, help="the folder to write")
    p.add_argument("--seq_len", type=int, default=128, help="tokens per example (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the packing's random choices (default: 0)")
    p.add_argument("--eval_fraction", type=float, default=0.02, help=f"{EVAL_FRACTION_HELP} (default: 0.02)")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared corpus in --out_dir")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("gradcheck", help="check every gradient of the ELECTRA loss against finite differences",
                       description="Run gradcheck.check_electra on a small float64 model (padding included, "
                                   "dropout off) and print the relative error of every parameter's gradient; "
                                   f"exit 1 if any exceeds {GRADCHECK_TOLERANCE:g}.")
    p.add_argument("--objective", choices=("electra", "mlm"), default="electra", help="which loss (default: electra)")
    p.add_argument("--hidden_act", choices=ACTIVATIONS, default="gelu", help="activation (default: gelu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parameters and the batch (default: 0)")
    p.add_argument("--max_entries", type=int, default=None, help="probe at most this many random entries per "
                                                                 "tensor (default: every entry)")
    p.set_defaults(func=cmd_gradcheck)


def at_least(option: str, value: int | None, minimum: int) -> None:
    """Refuse an integer option below its minimum, naming the option (None: not given)."""
    if value is not None and value < minimum:
        raise CliError(f"{option} must be an integer >= {minimum}, got {value}")


def cmd_build_vocab(args: argparse.Namespace) -> int:
    at_least("--min_frequency", args.min_frequency, 1)  # 0 or less merges pairs that never occur
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    sources = corpus_sources(args.corpus, echo=print)
    lowercase = True if args.lowercase is None else args.lowercase
    tokens = build_vocab(corpus_lines(sources), args.vocab_size, do_lower_case=lowercase,
                         min_frequency=args.min_frequency, progress=lambda message: print(message, file=sys.stderr))
    Tokenizer(tokens, do_lower_case=lowercase).save(out)
    print(f"wrote {len(tokens)} tokens to {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """The folder is written in one atomic step (prepare.prepare_corpus): an --overwrite that fails leaves the old
    one whole. An --out_dir holding the corpus or the vocabulary would delete them, and is refused."""
    at_least("--seq_len", args.seq_len, MIN_TARGET_LENGTH)  # [CLS] A [SEP] B [SEP] with a token each
    at_least("--seed", args.seed, 0)
    lowercase = True if args.lowercase is None else args.lowercase
    sources = corpus_sources(args.corpus, echo=print)
    check_apart(args.out_dir, "--out_dir", files={"--corpus": [s.path for s in sources], "--vocab": args.vocab})
    if args.vocab:
        tokenizer = Tokenizer.from_file(args.vocab, do_lower_case=lowercase)
    else:
        tokenizer = vocab_for_corpus(sources, args.vocab_size, lowercase)
    meta = prepare_corpus(source_specs(sources), tokenizer, args.out_dir, max_seq_length=args.seq_len,
                          seed=args.seed, eval_fraction=args.eval_fraction, progress=True, overwrite=args.overwrite,
                          split_sentences=split_by_default(args.split_sentences, args.corpus))
    s = meta["splits"]
    print(f"wrote {args.out_dir}: {s['train']['examples']:,} training and {s['eval']['examples']:,} held-out "
          f"examples of {args.seq_len} tokens, vocabulary of {meta['vocab_size']} tokens"
          + (f"; {unk_summary(meta)}" if unk_summary(meta) else ""))
    for line in preparation_warnings(meta):
        print(line)
    return 0


def gradcheck_errors(objective: str = "electra", hidden_act: str = "gelu", seed: int = 0,
                     max_entries: int | None = None) -> tuple[dict, dict]:
    """check_electra on a small float64 model: B=2, T=7 with padding, dropout off, every term active.
    Returns: ({name: relative error}, {name: max |analytic gradient|})."""
    V, T = 19, 7
    config = ElectraConfig(vocab_size=V, embedding_size=6, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=12, max_position_embeddings=T, hidden_act=hidden_act,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    setup = Electra.build(config, PretrainingConfig(generator_hidden_size=0.5, objective=objective))
    params = setup.init_params(seed, np.float64)
    rng = np.random.default_rng(seed + 1)
    for k, p in params.items():  # move LayerNorms and biases off 1 / 0 and grow the weights: every term matters
        if "LayerNorm" in k or k.endswith("bias"):
            p += rng.normal(0, 0.2, p.shape)
        else:
            p *= 20
    ids = rng.integers(5, V, (2, T))
    ids[:, 0] = 2  # [CLS]
    ids[0, -1] = 3  # [SEP]
    ids[1, 4], ids[1, 5:] = 3, 0  # row 1: [SEP] then padding
    mask = (np.arange(T) < np.array([[T], [5]])).astype(np.int64)
    types = np.zeros((2, T), np.int64)
    types[0, 4:] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    positions = [(0, 1), (0, 3), (0, 5), (1, 2)]  # (batch, position) of each sample below
    masked = positions_from_indices(positions, 2, T)  # (2, T)
    use_mask = masked.copy()
    use_mask[0, 3] = False
    samples = np.array([7, ids[0, 3], 11, 12])  # one sample equals the original: it counts as original
    corruption = Corruption(masked, use_mask, samples, positions)
    errors = check_electra(setup, params, batch, corruption, max_entries=max_entries)
    grads = electra_backward(electra_forward(params, setup, batch, corruption=corruption, train=False)[2], setup)
    return errors, {k: float(np.abs(g).max()) for k, g in grads.items()}


def cmd_gradcheck(args: argparse.Namespace) -> int:
    at_least("--max_entries", args.max_entries, 1)  # 0 would probe nothing, and pass
    at_least("--seed", args.seed, 0)
    errors, magnitude = gradcheck_errors(args.objective, args.hidden_act, args.seed, args.max_entries)
    failed = []
    print(f"relative error of every gradient of the {args.objective} loss (float64, tolerance "
          f"{GRADCHECK_TOLERANCE:g}):")
    for name in errors:
        err = errors[name]
        # a key bias shifts a whole softmax row, so its true gradient is 0: the ratio compares rounding noise
        zero_grad = name.endswith("attention.self.key.bias") and magnitude[name] < ZERO_GRADIENT
        ok = err <= GRADCHECK_TOLERANCE or zero_grad
        if not ok:
            failed.append(name)
        note = f"  (true gradient 0: |grad| < {ZERO_GRADIENT:g})" if zero_grad else ""
        print(f"  {err:9.2e}  {'ok  ' if ok else 'FAIL'}  {name}{note}")
    worst = max((e for k, e in errors.items() if k not in failed and not k.endswith("key.bias")), default=0.0)
    if failed:
        print(f"FAILED: {len(failed)} of {len(errors)} parameters above {GRADCHECK_TOLERANCE:g}: "
              + ", ".join(failed))
        return 1
    print(f"all {len(errors)} parameters pass (largest relative error {worst:.2e})")
    return 0
