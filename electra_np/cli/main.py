"""The `electra-np` command.

    electra-np pretrain                     # tiny ELECTRA on the embedded corpus, a few minutes on 2 cores
    electra-np pretrain --corpus my.txt --preset small --steps 100000 --out_dir runs/small
    electra-np pretrain --out_dir runs/small --resume
    electra-np build-vocab --corpus my.txt --vocab_size 30522 --out vocab.txt
    electra-np prepare --corpus my.txt --vocab vocab.txt --out_dir data/my
    electra-np gradcheck

Settings come, lowest priority first, from: the defaults (and the --preset's model size), the
checkpoint when resuming, a --config JSON file, the command line. Bad input is reported in one
line (no traceback) with exit code 2, before anything is written.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from ..config import ACTIVATIONS, PRESETS, ElectraConfig, PretrainingConfig

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130
THREAD_VARIABLES = ("ELECTRA_NP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
GRADCHECK_TOLERANCE = 1e-5


class CliError(Exception):
    """A bad command line or input: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------- options

def _preset_values(name):
    return ", ".join(f"{p} {getattr(c, name)}" for p, c in PRESETS.items())


MODEL_HELP = {
    "vocab_size": "vocabulary size to learn when no --vocab is given (presets: {}); the model's vocab_size is "
                  "always the vocabulary's length",
    "embedding_size": "E, the token embedding size, shared by generator and discriminator (presets: {})",
    "hidden_size": "H, the discriminator's hidden size (presets: {})",
    "num_hidden_layers": "transformer layers of each model (presets: {})",
    "num_attention_heads": "NH, attention heads of the discriminator (presets: {})",
    "intermediate_size": "F, the feed-forward size of the discriminator (presets: {})",
    "hidden_act": "activation: gelu is the exact erf GELU that ELECTRA uses; gelu_new and gelu_pytorch_tanh "
                  "are the tanh approximation (presets: {})",
    "hidden_dropout_prob": "dropout on embeddings and layer outputs (presets: {})",
    "attention_probs_dropout_prob": "dropout on attention probabilities (presets: {})",
    "max_position_embeddings": "longest sequence the position embeddings allow; must be >= --seq_len (presets: {})",
    "type_vocab_size": "number of segment (token type) ids (presets: {})",
    "initializer_range": "standard deviation of the initial weights (presets: {})",
    "layer_norm_eps": "LayerNorm epsilon (presets: {})",
}
# the tiny preset is a few-minute demo: with the paper's mask_prob 0.15 and temperature 1 its discriminator stays at
# the always-original baseline for the first thousands of steps; 0.25 (ELECTRA-Large's mask rate) and a flatter
# generator (temperature 3) make replaced tokens detectable within a hundred steps. docs/training.md has the numbers.
PRESET_OBJECTIVE = {"tiny": {"mask_prob": 0.25, "temperature": 3.0}}
_P = PretrainingConfig()
PRETRAIN_HELP = {
    "mask_prob": f"share of tokens masked per sequence (default {_P.mask_prob}; tiny preset "
                 f"{PRESET_OBJECTIVE['tiny']['mask_prob']})",
    "disc_weight": f"lambda: loss = MLM loss + lambda * discriminator loss (default {_P.disc_weight:g})",
    "temperature": f"sampling temperature of the generator's replacements; above 1 samples rarer tokens, easier to "
                   f"detect (default {_P.temperature:g}; tiny preset {PRESET_OBJECTIVE['tiny']['temperature']:g})",
    "generator_hidden_size": f"generator size as a fraction of the discriminator's hidden size "
                             f"(default {_P.generator_hidden_size})",
    "mask_token_prob": f"share of the masked positions shown to the generator as [MASK]; the rest keep their "
                       f"token (default {_P.mask_token_prob})",
    "objective": f"electra (generator + discriminator) or mlm (the BERT-style baseline: one masked language "
                 f"model of the full size) (default {_P.objective})",
}
MODEL_FIELDS = [f for f in dataclasses.fields(ElectraConfig) if f.name != "pad_token_id"]  # pad id: from the vocab
PRETRAIN_FIELDS = list(dataclasses.fields(PretrainingConfig))
DATA_KEYS = ("corpus", "data", "vocab", "lowercase", "eval_fraction", "split_sentences")
RUN_KEYS = ("out_dir",)
SESSION_ONLY = ("resume", "overwrite", "threads", "config")  # never read from a file or a checkpoint
DATA_DEFAULTS = dict(corpus=None, data=None, vocab=None, lowercase=True, eval_fraction=0.02, split_sentences=False)


def train_defaults():
    """TrainConfig's defaults (imported late: --threads must be set before NumPy loads)."""
    from ..train.loop import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _corpus_help():
    return ("text files to pretrain on (UTF-8, one sentence or paragraph per line, a blank line between documents; "
            "a .tsv file or FILE:COLUMN reads one column). Default: the embedded corpus, the docstrings of "
            "Python's standard library (about 2 MB of English)")


def _add_corpus_options(p, vocab_help=True):
    p.add_argument("--corpus", nargs="+", metavar="FILE", help=_corpus_help())
    if vocab_help:
        p.add_argument("--vocab", metavar="FILE", help="a BERT vocab.txt (one token per line, with [PAD] [UNK] [CLS] "
                                                       "[SEP] [MASK]); default: learned from the corpus and cached")
    p.add_argument("--lowercase", action=argparse.BooleanOptionalAction,
                   help="lowercase and strip accents before WordPiece, as uncased BERT/ELECTRA (default: on)")
    p.add_argument("--split_sentences", action=argparse.BooleanOptionalAction,
                   help="split each line into sentences after . ! ? before packing (for one-paragraph-per-line "
                        "text, whose long lines are otherwise cut to one example) (default: off)")


def _pretrain_parser(sub):
    p = sub.add_parser("pretrain", argument_default=argparse.SUPPRESS,
                       help="pretrain ELECTRA (default: the tiny preset on the embedded corpus)",
                       description="Pretrain ELECTRA: a generator (small masked language model) replaces ~15% of "
                                   "the tokens, a discriminator learns to find them. With no options: the tiny "
                                   "model on the embedded corpus, a few minutes on 2 cores.")
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.json",
                   help="settings from a JSON object whose keys are these options' names (e.g. "
                        "{\"hidden_size\": 256, \"steps\": 1000}), or a run.json / Hugging Face config.json; "
                        "the command line wins")
    g.add_argument("--out_dir", metavar="DIR", help="where the run's files go (default: runs/electra-PRESET)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out_dir from its checkpoint; the "
                                                         "losses are bit-identical to an uninterrupted run")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out_dir")
    g.add_argument("--preset", choices=sorted(PRESETS), help="model size: tiny (2 layers, H=128), small "
                                                             "(ELECTRA-Small), base (ELECTRA-Base) (default: tiny)")
    g = p.add_argument_group("data")
    _add_corpus_options(g)
    g.add_argument("--data", metavar="DIR", help="a folder made by `electra-np prepare` (instead of --corpus; its "
                                                 "vocab.txt and sequence length are used)")
    g.add_argument("--eval_fraction", type=float, help="share of the documents held out for evaluation "
                                                       "(default: 0.02)")
    g = p.add_argument_group("training")
    d = train_defaults()
    g.add_argument("--steps", type=int, help=f"optimizer steps (default: {d['steps']})")
    g.add_argument("--batch_size", type=int, help=f"sequences per step (default: {d['batch_size']})")
    g.add_argument("--seq_len", type=int, help=f"tokens per sequence (default: {d['seq_len']})")
    g.add_argument("--lr", type=float, help="peak learning rate (default: 5e-4 for tiny and small, 2e-4 for base, "
                                            "as in the paper)")
    g.add_argument("--warmup", type=int, help="linear warmup steps (default: min(10000, steps / 10); 10000 is the "
                                              "official value)")
    g.add_argument("--weight_decay", type=float, help="AdamW decoupled weight decay, not on LayerNorm and biases "
                                                      f"(default: {d['weight_decay']})")
    g.add_argument("--clip_norm", type=float, help=f"clip the gradients' global norm to this, 0 for no clipping "
                                                   f"(default: {d['clip_norm']})")
    g.add_argument("--seed", type=int, help="seed of initialization, masking, sampling, dropout and data order "
                                            f"(default: {d['seed']})")
    g.add_argument("--dtype", choices=("float32", "float64"), help="parameter and compute dtype (default: float32)")
    g.add_argument("--backend", choices=("numpy", "fast"), help="numpy (the reference) or fast (Numba kernels) "
                                                                "(default: fast when it is available)")
    g.add_argument("--threads", type=int, help="threads for BLAS and Numba (default: all cores)")
    g.add_argument("--log_every", type=int, help=f"steps between log lines, 0 for none (default: {d['log_every']})")
    g.add_argument("--eval_every", type=int, help="steps between held-out evaluations, 0 for only the last "
                                                  f"(default: {d['eval_every']})")
    g.add_argument("--eval_examples", type=int, help="held-out examples per evaluation (default: "
                                                     f"{d['eval_examples']})")
    g.add_argument("--save_every", type=int, help="steps between checkpoints, 0 for only the last "
                                                  f"(default: {d['save_every']})")
    g.add_argument("--stop_at", type=int, metavar="STEP", help="end this session at STEP with a checkpoint, "
                                                               "schedule unchanged; continue later with --resume")
    g = p.add_argument_group("model (any ElectraConfig field; default: the preset's)")
    for f in MODEL_FIELDS:
        kwargs = {"choices": ACTIVATIONS} if f.name == "hidden_act" else {"type": f.type}
        g.add_argument(f"--{f.name}", help=MODEL_HELP[f.name].format(_preset_values(f.name)), **kwargs)
    g = p.add_argument_group("objective")
    for f in PRETRAIN_FIELDS:
        kwargs = {"choices": ("electra", "mlm")} if f.name == "objective" else {"type": f.type}
        g.add_argument(f"--{f.name}", help=PRETRAIN_HELP[f.name], **kwargs)
    return p


def build_parser():
    parser = argparse.ArgumentParser(prog="electra-np", description="ELECTRA pretraining in NumPy with hand-written "
                                                                    "backward passes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _pretrain_parser(sub)

    p = sub.add_parser("build-vocab", help="learn a WordPiece vocabulary from text files",
                       description="Learn a WordPiece vocabulary (BPE merges with ## continuations, as Hugging Face "
                                   "tokenizers' WordPieceTrainer) and write it as a BERT vocab.txt.")
    _add_corpus_options(p, vocab_help=False)
    p.add_argument("--vocab_size", type=int, default=8192, help="tokens in the vocabulary, the 5 special tokens "
                                                                "included (default: 8192)")
    p.add_argument("--min_frequency", type=int, default=2, help="stop merging when no pair of pieces occurs this "
                                                                "often (default: 2)")
    p.add_argument("--out", metavar="FILE", default="vocab.txt", help="the vocab.txt to write (default: vocab.txt)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("prepare", help="tokenize and pack a corpus into pretraining examples",
                       description="Tokenize text files and pack them into [CLS] A [SEP] B [SEP] examples "
                                   "(google-research/electra build_pretraining_dataset.py), with a held-out split; "
                                   "use the folder with `electra-np pretrain --data DIR`.")
    _add_corpus_options(p)
    p.add_argument("--vocab_size", type=int, default=8192, help="vocabulary size to learn when no --vocab is given "
                                                                "(default: 8192)")
    p.add_argument("--out_dir", metavar="DIR", required=True, help="the folder to write")
    p.add_argument("--seq_len", type=int, default=128, help="tokens per example (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the packing's random choices (default: 0)")
    p.add_argument("--eval_fraction", type=float, default=0.02, help="share of the documents held out "
                                                                     "(default: 0.02)")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared corpus in --out_dir")

    p = sub.add_parser("gradcheck", help="check every gradient of the ELECTRA loss against finite differences",
                       description="Run gradcheck.check_electra on a small float64 model (padding included, "
                                   "dropout off) and print the relative error of every parameter's gradient; "
                                   f"exit 1 if any exceeds {GRADCHECK_TOLERANCE:g}.")
    p.add_argument("--objective", choices=("electra", "mlm"), default="electra", help="which loss (default: electra)")
    p.add_argument("--hidden_act", choices=ACTIVATIONS, default="gelu", help="activation (default: gelu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parameters and the batch (default: 0)")
    p.add_argument("--max_entries", type=int, default=None, help="probe at most this many random entries per "
                                                                 "tensor (default: every entry)")
    try:  # finetune / evaluate / predict (finetune_cli.py), when present
        from .finetune import add_parsers
    except ImportError:
        return parser
    add_parsers(sub)
    return parser


# ----------------------------------------------------------------------------- settings

def _flatten_saved(d):
    """A run.json / checkpoint's metadata / HF config.json / flat dict -> flat {option: value}."""
    if "model_type" in d:  # a Hugging Face config.json: its architecture fields only
        return {f.name: d[f.name] for f in MODEL_FIELDS if f.name in d}
    flat = {}
    if any(k in d for k in ("model_config", "pretraining_config", "training")):
        flat.update({k: v for k, v in d.get("model_config", {}).items() if k not in ("model_type", "pad_token_id")})
        flat.update(d.get("pretraining_config", {}))
        flat.update(d.get("training", {}))
        flat.update(d.get("data_source") or {})
        return flat
    return dict(d)


def load_config_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise CliError(f"--config: file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CliError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CliError(f"--config {path}: expected a JSON object of option names and values")
    flat = _flatten_saved(d)
    known = {f.name for f in MODEL_FIELDS} | {f.name for f in PRETRAIN_FIELDS} | set(train_defaults()) | \
        set(DATA_KEYS) | set(RUN_KEYS)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise CliError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    return flat


def resolve_settings(given, base=None):
    """Defaults < base (a checkpoint's settings) < --config file < command line. Returns (settings, explicit)."""
    explicit = dict(given)
    if "config" in given:
        explicit = {**load_config_file(given["config"]), **{k: v for k, v in given.items() if k != "config"}}
    if isinstance(explicit.get("corpus"), str):
        explicit["corpus"] = [explicit["corpus"]]
    preset_name = explicit.get("preset") or (base or {}).get("preset") or "tiny"
    settings = {**train_defaults(), **DATA_DEFAULTS, **PRESET_OBJECTIVE.get(preset_name, {}), **(base or {}),
                **explicit}
    return settings, explicit


def _build_configs(settings, tokenizer, explicit):
    """ElectraConfig (vocab_size and pad id from the tokenizer), PretrainingConfig and TrainConfig."""
    from ..config import preset
    from ..train.loop import TrainConfig

    model = {f.name: settings[f.name] for f in MODEL_FIELDS if f.name in settings}
    if "vocab_size" in explicit and explicit["vocab_size"] != len(tokenizer) and settings.get("vocab") is not None:
        raise CliError(f"--vocab_size {explicit['vocab_size']} but the vocabulary {settings['vocab']} has "
                       f"{len(tokenizer)} tokens")
    model.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_id)
    model_config = preset(settings["preset"], **model)
    pretraining = PretrainingConfig(**{f.name: settings[f.name] for f in PRETRAIN_FIELDS if f.name in settings})
    tc = TrainConfig(**{k: settings[k] for k in train_defaults()})
    return model_config, pretraining, tc


# ----------------------------------------------------------------------------- commands

def cmd_pretrain(given):
    from ..train import checkpoint
    from ..train import loop as tr
    from ..data.prepare import VOCAB_NAME as DATA_VOCAB, load_meta
    from ..data.tokenizer import Tokenizer

    resume, overwrite = given.pop("resume", False), given.pop("overwrite", False)
    given.pop("threads", None)
    if resume and overwrite:
        raise CliError("--resume and --overwrite exclude each other")
    settings, explicit = resolve_settings(given)
    out_dir = Path(explicit.get("out_dir") or f"runs/electra-{settings['preset']}")
    tr.check_out_dir(out_dir, resume, overwrite)
    meta = None
    if resume:  # the checkpoint's settings replace the defaults; stop_at belongs to one session only
        meta = checkpoint.read_meta(out_dir / tr.CHECKPOINT_NAME)
        saved = {k: v for k, v in _flatten_saved(meta).items() if k != "stop_at"}
        settings, explicit = resolve_settings(given, saved)
    settings["out_dir"] = str(out_dir)
    echo = print

    # the vocabulary
    data_dir = settings.get("data")
    data_meta = None
    if data_dir is not None:
        try:
            data_meta = load_meta(data_dir)
        except ValueError as e:
            raise CliError(str(e)) from None
        if "seq_len" not in explicit:
            settings["seq_len"] = data_meta["max_seq_length"]
    lowercase = settings["lowercase"]
    sources = None
    if meta is not None:
        tokenizer = Tokenizer(meta["vocab"], do_lower_case=lowercase)
        if "vocab" in explicit:
            tokenizer = Tokenizer.from_file(explicit["vocab"], do_lower_case=lowercase)
    elif settings.get("vocab") is not None:
        tokenizer = Tokenizer.from_file(settings["vocab"], do_lower_case=lowercase)
    elif data_meta is not None:
        if "lowercase" not in explicit:
            lowercase = settings["lowercase"] = data_meta.get("do_lower_case", True)
        tokenizer = Tokenizer.from_file(Path(data_dir) / DATA_VOCAB, do_lower_case=lowercase)
    else:
        sources = tr.corpus_sources(settings["corpus"])
        vocab_size = settings.get("vocab_size", PRESETS[settings["preset"]].vocab_size)
        tokenizer = tr.vocab_for_corpus(sources, vocab_size, lowercase, echo=echo)
        if len(tokenizer) < vocab_size:
            echo(f"note: the corpus supports only {len(tokenizer)} of the {vocab_size} tokens asked for")
    if "vocab_size" in explicit and explicit["vocab_size"] != len(tokenizer) and sources is None:
        raise CliError(f"--vocab_size {explicit['vocab_size']} but the vocabulary has {len(tokenizer)} tokens")
    settings["vocab_size"] = len(tokenizer)

    # the configs: refuse a bad one before preparing data
    model_config, pretraining, tc = _build_configs(settings, tokenizer, explicit)
    if meta is not None:
        diffs = tr.resume_differences(meta, model_config, pretraining, tc, tokenizer.ids_to_tokens, None,
                                      tokenizer.do_lower_case)
        if diffs:
            raise CliError(f"cannot resume {out_dir / tr.CHECKPOINT_NAME}: this run differs from it in: "
                           + "; ".join(diffs))
    if tc.seq_len > model_config.max_position_embeddings:
        raise CliError(f"--seq_len {tc.seq_len} > max_position_embeddings {model_config.max_position_embeddings}; "
                       f"pass --max_position_embeddings {tc.seq_len} or a shorter --seq_len")

    # the data
    if data_dir is None:
        if sources is None:
            sources = tr.corpus_sources(settings["corpus"])
        data_dir = tr.prepared_data(sources, tokenizer, tc.seq_len, settings["eval_fraction"],
                                    bool(settings["split_sentences"]), echo=echo)
    train_data, eval_data, data_info = tr.open_data(data_dir)
    if data_meta is not None and data_meta.get("vocab_sha256") != tr.vocab_sha256(tokenizer.ids_to_tokens):
        raise CliError(f"the prepared data in {data_dir} was made with another vocabulary than the one given")
    data_info["source"] = {
        "corpus": None if settings["corpus"] is None else [str(Path(c).resolve()) for c in settings["corpus"]],
        "data": None if settings.get("data") is None else str(Path(settings["data"]).resolve()),
        "vocab": None if settings.get("vocab") is None else str(Path(settings["vocab"]).resolve()),
        "lowercase": tokenizer.do_lower_case, "eval_fraction": settings["eval_fraction"],
        "split_sentences": bool(settings["split_sentences"])}
    if len(train_data) < tc.batch_size:
        raise CliError(f"the corpus is too small: {len(train_data)} training example(s) of {tc.seq_len} tokens, "
                       f"fewer than one batch of {tc.batch_size}; use more text or a smaller --batch_size")
    summary = tr.train(out_dir, model_config, pretraining, tc, tokenizer, train_data, eval_data, data_info,
                       resume=resume, overwrite=overwrite, echo=echo)
    if summary["status"] == "finished":
        for line in tr.format_summary(summary, pretraining.objective == "electra"):
            echo(line)
    return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0


def cmd_build_vocab(args):
    from ..train import loop as tr

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    from ..data.tokenizer import Tokenizer, build_vocab

    sources = tr.corpus_sources(args.corpus)
    lowercase = True if args.lowercase is None else args.lowercase

    tokens = build_vocab(tr.corpus_lines(sources), args.vocab_size, do_lower_case=lowercase, min_frequency=args.min_frequency,
                         progress=lambda message: print(message, file=sys.stderr))
    Tokenizer(tokens, do_lower_case=lowercase).save(out)
    print(f"wrote {len(tokens)} tokens to {out}")
    return 0


def cmd_prepare(args):
    from ..train import loop as tr
    from ..data.prepare import prepare_corpus
    from ..data.tokenizer import Tokenizer

    lowercase = True if args.lowercase is None else args.lowercase
    sources = tr.corpus_sources(args.corpus)
    if args.vocab:
        tokenizer = Tokenizer.from_file(args.vocab, do_lower_case=lowercase)
    else:
        tokenizer = tr.vocab_for_corpus(sources, args.vocab_size, lowercase)
    specs = [str(s.path) if s.column is None else f"{s.path}:{s.column}" for s in sources]
    meta = prepare_corpus(specs, tokenizer, args.out_dir, max_seq_length=args.seq_len, seed=args.seed,
                          eval_fraction=args.eval_fraction, progress=True, overwrite=args.overwrite,
                          split_sentences=bool(args.split_sentences))
    s = meta["splits"]
    print(f"wrote {args.out_dir}: {s['train']['examples']:,} training and {s['eval']['examples']:,} held-out "
          f"examples of {args.seq_len} tokens, vocabulary of {meta['vocab_size']} tokens")
    return 0


def gradcheck_errors(objective="electra", hidden_act="gelu", seed=0, max_entries=None):
    """check_electra on a small float64 model: B=2, T=7 with padding, dropout off, every term active.
    Returns: ({name: relative error}, {name: max |analytic gradient|})."""
    import numpy as np

    from ..gradcheck import check_electra
    from ..masking import Corruption
    from ..model import Electra, electra_backward, electra_forward

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
    masked = np.zeros((2, T), bool)
    masked[0, [1, 3, 5]] = True
    masked[1, 2] = True
    use_mask = masked.copy()
    use_mask[0, 3] = False
    samples = np.array([7, ids[0, 3], 11, 12])  # one sample equals the original: it counts as original
    corruption = Corruption(masked, use_mask, samples)
    errors = check_electra(setup, params, batch, corruption, max_entries=max_entries)
    grads = electra_backward(electra_forward(params, setup, batch, corruption=corruption, train=False)[2], setup)
    return errors, {k: float(np.abs(g).max()) for k, g in grads.items()}


def cmd_gradcheck(args):
    errors, magnitude = gradcheck_errors(args.objective, args.hidden_act, args.seed, args.max_entries)
    failed = []
    print(f"relative error of every gradient of the {args.objective} loss (float64, tolerance "
          f"{GRADCHECK_TOLERANCE:g}):")
    for name in errors:
        err = errors[name]
        # a key bias shifts a whole softmax row, so its true gradient is 0: the ratio compares rounding noise
        zero_grad = name.endswith("attention.self.key.bias") and magnitude[name] < 1e-10
        ok = err <= GRADCHECK_TOLERANCE or zero_grad
        if not ok:
            failed.append(name)
        note = "  (true gradient 0: |grad| < 1e-10)" if zero_grad else ""
        print(f"  {err:9.2e}  {'ok  ' if ok else 'FAIL'}  {name}{note}")
    worst = max((e for k, e in errors.items() if k not in failed and not k.endswith("key.bias")), default=0.0)
    if failed:
        print(f"FAILED: {len(failed)} of {len(errors)} parameters above {GRADCHECK_TOLERANCE:g}: "
              + ", ".join(failed))
        return 1
    print(f"all {len(errors)} parameters pass (largest relative error {worst:.2e})")
    return 0


# ----------------------------------------------------------------------------- entry point

def _set_threads(argv):
    """--threads must reach BLAS before NumPy loads: read it first, set the usual variables."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int)
    known, _ = pre.parse_known_args(argv)
    if known.threads is None:
        return
    if known.threads < 1:
        raise CliError(f"--threads must be >= 1, got {known.threads}")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(known.threads)
    if "numpy" in sys.modules or "numba" in sys.modules:  # already loaded (e.g. called from Python): set live
        try:
            from ..fast.runtime import set_num_threads
        except ImportError:
            return
        set_num_threads(known.threads)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _set_threads(argv)
        args = build_parser().parse_args(argv)
        if args.command == "pretrain":
            given = {k: v for k, v in vars(args).items() if k != "command"}
            return cmd_pretrain(given)
        commands = {"build-vocab": cmd_build_vocab, "prepare": cmd_prepare, "gradcheck": cmd_gradcheck}
        if args.command in commands:
            return commands[args.command](args)
        return args.func(args) or 0  # a subcommand registered by another module (finetune_cli)
    except BrokenPipeError:  # e.g. `electra-np pretrain | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("electra-np: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        from ..train.loop import TrainingDiverged

        if os.environ.get("ELECTRA_NP_TRACEBACK"):
            raise
        if isinstance(e, TrainingDiverged):
            print(f"electra-np: error: {e}", file=sys.stderr)
            return EXIT_DIVERGED
        if isinstance(e, (CliError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                          PermissionError)):
            print(f"electra-np {argv[0] if argv else ''}: error: {e}".replace("  ", " "), file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
