"""`electra-np pretrain`: its options, where each setting comes from, and the steps from a command line to
a training run (train.loop.train).

    electra-np pretrain                     # the tiny preset on the embedded corpus
    electra-np pretrain --corpus my.txt --preset small --steps 100000 --out_dir runs/small
    electra-np pretrain --out_dir runs/small --resume
    electra-np pretrain --preset small --budget_minutes 60 --snapshots 0.25 0.5 --out_dir runs/small-1h

Settings come, lowest priority first, from: the defaults (and the --preset's model size), the
checkpoint when resuming, a --config JSON file, the command line. Bad input is reported in one
line (no traceback) with exit code 2, before anything is written.
"""

import argparse
import dataclasses
import json
from pathlib import Path

from ..config import ACTIVATIONS, PRESETS, ElectraConfig, PretrainingConfig, preset
from ..data.cache import corpus_sources, open_data, prepared_data, vocab_for_corpus
from ..data.dataset import VOCAB_NAME as DATA_VOCAB
from ..data.dataset import load_meta, preparation_warnings
from ..data.tokenizer import Tokenizer, vocab_sha256
from ..train import checkpoint
from ..train.config import OFFICIAL_WARMUP, TrainConfig, defaults
from ..train.loop import train
from ..train.report import RunLog, format_summary
from ..train.run_dir import CHECKPOINT_NAME, check_out_dir
from ..train.state import resume_differences
from .common import EVAL_FRACTION_HELP, EXIT_INTERRUPTED, CliError, add_corpus_options, split_by_default

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
# the tiny preset is a short demo: with the paper's mask_prob 0.15 and temperature 1 its discriminator stays at the
# always-original baseline for a long time; 0.25 (ELECTRA-Large's mask rate) and a flatter generator (temperature 3)
# make replaced tokens detectable early in a short run. docs/training.md has the numbers.
PRESET_OBJECTIVE = {"tiny": {"mask_prob": 0.25, "temperature": 3.0}}
_P = PretrainingConfig()
_TINY = PRESET_OBJECTIVE["tiny"]
PRETRAIN_HELP = {
    "mask_prob": f"share of tokens masked per sequence (default: {_TINY['mask_prob']:g} with the tiny preset, the "
                 f"default; {_P.mask_prob:g}, the paper's, with small and base)",
    "disc_weight": f"lambda: loss = MLM loss + lambda * discriminator loss (default: {_P.disc_weight:g})",
    "temperature": f"sampling temperature of the generator's replacements; above 1 samples rarer tokens, easier to "
                   f"detect (default: {_TINY['temperature']:g} with the tiny preset, the default; "
                   f"{_P.temperature:g}, the paper's, with small and base)",
    "final_temperature": "anneal the temperature linearly from --temperature at the first step to this at the "
                         "last (e.g. --temperature 3 --final_temperature 1: easy replacements while the "
                         "discriminator starts, the paper's objective at the end) (default: none, a constant "
                         "temperature)",
    "generator_hidden_size": f"generator size as a fraction of the discriminator's hidden size "
                             f"(default: {_P.generator_hidden_size:g})",
    "mask_token_prob": f"share of the masked positions shown to the generator as [MASK]; the rest keep their "
                       f"token (default: {_P.mask_token_prob:g})",
    "objective": f"electra (generator + discriminator) or mlm (the BERT-style baseline: one masked language "
                 f"model of the full size) (default: {_P.objective})",
}
MODEL_FIELDS = [f for f in dataclasses.fields(ElectraConfig) if f.name != "pad_token_id"]  # pad id: from the vocab
PRETRAIN_FIELDS = list(dataclasses.fields(PretrainingConfig))
TRAIN_DEFAULTS = defaults()
DATA_KEYS = ("corpus", "data", "vocab", "lowercase", "eval_fraction", "split_sentences")
RUN_KEYS = ("out_dir",)
SESSION_ONLY = ("resume", "overwrite", "threads", "config")  # never read from a file or a checkpoint
DATA_DEFAULTS = dict(corpus=None, data=None, vocab=None, lowercase=True, eval_fraction=0.02, split_sentences=False)


# ----------------------------------------------------------------------------- options

def _preset_values(name):
    return ", ".join(f"{p} {getattr(c, name)}" for p, c in PRESETS.items())


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `pretrain` on an argparse subparsers object; its options are absent from the namespace unless
    given (argparse.SUPPRESS), so that resolve_settings knows what the command line set."""
    p = sub.add_parser("pretrain", argument_default=argparse.SUPPRESS,
                       help="pretrain ELECTRA (default: the tiny preset on the embedded corpus)",
                       description="Pretrain ELECTRA: a generator (a small masked language model) replaces a "
                                   f"share of the tokens (--mask_prob: {_P.mask_prob:.0%} in the paper, "
                                   f"{_TINY['mask_prob']:.0%} in the tiny preset, the default), a discriminator "
                                   "learns to find them. With no options: the tiny model on the embedded corpus, a "
                                   "short demonstration run.")
    _run_options(p.add_argument_group("run"))
    g = p.add_argument_group("data")
    add_corpus_options(g)
    g.add_argument("--data", metavar="DIR", help="a folder made by `electra-np prepare` (instead of --corpus; its "
                                                 "vocab.txt and sequence length are used)")
    g.add_argument("--eval_fraction", type=float, help=f"{EVAL_FRACTION_HELP} (default: 0.02)")
    _training_options(p.add_argument_group("training"))
    g = p.add_argument_group("model (any ElectraConfig field; default: the preset's)")
    for f in MODEL_FIELDS:
        kwargs = {"choices": ACTIVATIONS} if f.name == "hidden_act" else {"type": f.type}
        g.add_argument(f"--{f.name}", help=MODEL_HELP[f.name].format(_preset_values(f.name)), **kwargs)
    g = p.add_argument_group("objective")
    for f in PRETRAIN_FIELDS:
        kwargs = ({"choices": ("electra", "mlm")} if f.name == "objective" else
                  {"type": float} if f.name == "final_temperature" else {"type": f.type})
        g.add_argument(f"--{f.name}", help=PRETRAIN_HELP[f.name], **kwargs)
    p.set_defaults(func=cmd_pretrain)
    return p


def _run_options(g):
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


def _training_options(g):
    d = TRAIN_DEFAULTS
    g.add_argument("--steps", type=int, help=f"optimizer steps (default: {d['steps']})")
    g.add_argument("--budget_minutes", type=float, metavar="M",
                   help="instead of --steps: as many steps as fit in M minutes of wall clock, from a step time "
                        "(evaluations' share included) measured before the run starts without changing its numbers; "
                        "recorded in run.json and kept on --resume")
    g.add_argument("--snapshots", type=float, nargs="+", metavar="F",
                   help="also save the models for fine-tuning when the run reaches these fractions of its steps "
                        "(e.g. 0.25 0.5), in OUT_DIR/snapshots/step-K/discriminator and .../generator, as the final "
                        "export, with a snapshot.json (default: none)")
    g.add_argument("--batch_size", type=int, help=f"sequences per step (default: {d['batch_size']})")
    g.add_argument("--seq_len", type=int, help=f"tokens per sequence (default: {d['seq_len']})")
    g.add_argument("--lr", type=float, help="peak learning rate (default: 5e-4 for tiny and small, 2e-4 for base: "
                                            "the paper's for small and base)")
    g.add_argument("--warmup", type=int, help="linear warmup steps (default: min(10000, steps / 10); 10000 is the "
                                              "official value)")
    g.add_argument("--weight_decay", type=float, help="AdamW decoupled weight decay, not on LayerNorm and biases "
                                                      f"(default: {d['weight_decay']})")
    g.add_argument("--clip_norm", type=float, help=f"clip the gradients' global norm to this, 0 for no clipping "
                                                   f"(default: {d['clip_norm']})")
    g.add_argument("--seed", type=int, help="seed of initialization, masking, sampling, dropout and data order "
                                            f"(default: {d['seed']})")
    g.add_argument("--dtype", choices=("float32", "float64"),
                   help=f"parameter and compute dtype (default: {d['dtype']})")
    g.add_argument("--backend", choices=("numpy", "fast"), help="numpy (the reference) or fast (Numba kernels) "
                                                                "(default: fast when it is available)")
    g.add_argument("--threads", type=int, help="threads for BLAS and Numba (default: $ELECTRA_NP_THREADS, else "
                                               "every CPU this process may run on)")
    g.add_argument("--log_every", type=int, help=f"steps between log lines, 0 for none (default: {d['log_every']})")
    g.add_argument("--eval_every", type=int, help="steps between held-out evaluations, 0 for only the last "
                                                  f"(default: {d['eval_every']})")
    g.add_argument("--eval_examples", type=int, help="held-out examples per evaluation (default: "
                                                     f"{d['eval_examples']})")
    g.add_argument("--save_every", type=int, help="steps between checkpoints, 0 for only the last "
                                                  f"(default: {d['save_every']})")
    g.add_argument("--stop_at", type=int, metavar="STEP", help="end this session at STEP with a checkpoint, "
                                                               "schedule unchanged; continue later with --resume "
                                                               "(default: run to --steps)")


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


def load_config_file(path) -> dict:
    """The settings of a --config file, flat {option: value}; unknown names are refused."""
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
    if "training" in d and flat.get("budget_minutes") is not None:  # a run record of a budget run: its steps
        # (and the warmup derived from them) were measured on another run; this run measures its own
        if flat.get("warmup") == min(OFFICIAL_WARMUP, (flat.get("steps") or 0) // 10):
            flat.pop("warmup")
        for k in ("steps", "budget_step_seconds"):
            flat.pop(k, None)
    known = {f.name for f in MODEL_FIELDS} | {f.name for f in PRETRAIN_FIELDS} | set(TRAIN_DEFAULTS) | \
        set(DATA_KEYS) | set(RUN_KEYS)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise CliError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    return flat


def resolve_settings(given: dict, base: dict | None = None) -> tuple[dict, dict]:
    """Defaults < base (a checkpoint's settings) < --config file < command line. Returns (settings, explicit)."""
    explicit = dict(given)
    if "config" in given:
        explicit = {**load_config_file(given["config"]), **{k: v for k, v in given.items() if k != "config"}}
    if isinstance(explicit.get("corpus"), str):
        explicit["corpus"] = [explicit["corpus"]]
    preset_name = explicit.get("preset") or (base or {}).get("preset") or "tiny"
    settings = {**TRAIN_DEFAULTS, **DATA_DEFAULTS, **PRESET_OBJECTIVE.get(preset_name, {}), **(base or {}),
                **explicit}
    return settings, explicit


def build_configs(settings: dict, tokenizer: Tokenizer,
                  explicit: dict) -> tuple[ElectraConfig, PretrainingConfig, TrainConfig]:
    """ElectraConfig (vocab_size and pad id from the tokenizer), PretrainingConfig and TrainConfig."""
    model = {f.name: settings[f.name] for f in MODEL_FIELDS if f.name in settings}
    if "vocab_size" in explicit and explicit["vocab_size"] != len(tokenizer) and settings.get("vocab") is not None:
        raise CliError(f"--vocab_size {explicit['vocab_size']} but the vocabulary {settings['vocab']} has "
                       f"{len(tokenizer)} tokens")
    model.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_id)
    model_config = preset(settings["preset"], **model)
    pretraining = PretrainingConfig(**{f.name: settings[f.name] for f in PRETRAIN_FIELDS if f.name in settings})
    tc = TrainConfig(**{k: settings[k] for k in TRAIN_DEFAULTS})
    return model_config, pretraining, tc


# ----------------------------------------------------------------------------- the command

class Console:
    """print(), remembering the lines: those printed before the run folder exists reach its log.txt."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line)
        self.lines.append(line)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """settings -> vocabulary -> configs -> data -> train -> summary."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    resume, overwrite = given.pop("resume", False), given.pop("overwrite", False)
    given.pop("threads", None)  # main() has applied it
    if resume and overwrite:
        raise CliError("--resume and --overwrite exclude each other")
    settings, explicit, out_dir, meta = _run_settings(given, resume, overwrite)
    _budget_settings(settings, explicit, resume)
    data_meta = _prepared_meta(settings, explicit)
    console = Console()  # what is printed before the run folder exists goes into its log.txt too
    tokenizer, sources = _vocabulary(settings, explicit, meta, data_meta, console)
    model_config, pretraining, tc = build_configs(settings, tokenizer, explicit)
    _check_fit(out_dir, meta, model_config, pretraining, tc, tokenizer)
    train_data, eval_data, data_info = _training_data(settings, tokenizer, tc, sources, data_meta, console)
    summary = train(out_dir, model_config, pretraining, tc, tokenizer, train_data, eval_data, data_info,
                    resume=resume, overwrite=overwrite, echo=console, preface=console.lines)
    if summary["status"] == "finished":
        log = RunLog(out_dir, print)
        for line in format_summary(summary, pretraining.objective == "electra"):
            log.line(line)
    return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0


def _run_settings(given, resume, overwrite):
    """(settings, explicit, out_dir, checkpoint meta or None): when resuming, the checkpoint's settings replace
    the defaults (stop_at belongs to one session only)."""
    settings, explicit = resolve_settings(given)
    out_dir = Path(explicit.get("out_dir") or f"runs/electra-{settings['preset']}")
    check_out_dir(out_dir, resume, overwrite)
    meta = None
    if resume:
        meta = checkpoint.read_meta(out_dir / CHECKPOINT_NAME)
        saved = {k: v for k, v in _flatten_saved(meta).items() if k != "stop_at"}
        settings, explicit = resolve_settings(given, saved)
    if not resume and settings.get("data") is None:  # a resumed run keeps what its checkpoint recorded
        settings["split_sentences"] = split_by_default(explicit.get("split_sentences"), settings["corpus"])
    settings["out_dir"] = str(out_dir)
    return settings, explicit, out_dir, meta


def _budget_settings(settings, explicit, resume):
    """--budget_minutes: a fresh run leaves steps to be measured (train.budget); a resumed one keeps the steps its
    checkpoint recorded. With --steps too it is refused."""
    if settings.get("budget_minutes") is None:
        return
    if "steps" in explicit and "budget_minutes" in explicit:
        raise CliError("--steps and --budget_minutes exclude each other: give the number of steps or the minutes "
                       "the run may take, not both")
    if not resume:
        settings["steps"] = settings["budget_step_seconds"] = None


def _prepared_meta(settings, explicit):
    """The meta of a --data folder (its sequence length becomes seq_len unless given), or None."""
    if settings.get("data") is None:
        return None
    try:
        data_meta = load_meta(settings["data"])
    except ValueError as e:
        raise CliError(str(e)) from None
    if "seq_len" not in explicit:
        settings["seq_len"] = data_meta["max_seq_length"]
    return data_meta


def _vocabulary(settings, explicit, meta, data_meta, echo):
    """(tokenizer, corpus sources or None): the checkpoint's vocabulary, a --vocab file, the prepared folder's,
    or one learned from the corpus (cached). settings["vocab_size"] becomes the vocabulary's length."""
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
        tokenizer = Tokenizer.from_file(Path(settings["data"]) / DATA_VOCAB, do_lower_case=lowercase)
    else:
        sources = corpus_sources(settings["corpus"], echo=echo)
        vocab_size = settings.get("vocab_size", PRESETS[settings["preset"]].vocab_size)
        tokenizer = vocab_for_corpus(sources, vocab_size, lowercase, echo=echo)
        if len(tokenizer) < vocab_size:
            echo(f"note: the corpus supports only {len(tokenizer)} of the {vocab_size} tokens asked for")
    if "vocab_size" in explicit and explicit["vocab_size"] != len(tokenizer) and sources is None:
        raise CliError(f"--vocab_size {explicit['vocab_size']} but the vocabulary has {len(tokenizer)} tokens")
    settings["vocab_size"] = len(tokenizer)
    return tokenizer, sources


def _check_fit(out_dir, meta, model_config, pretraining, tc, tokenizer):
    """Refuse a resume with other settings, and a seq_len the position embeddings cannot hold, before any data
    is prepared."""
    if meta is not None:
        diffs = resume_differences(meta, model_config, pretraining, tc, tokenizer.ids_to_tokens, None,
                                   tokenizer.do_lower_case)
        if diffs:
            raise CliError(f"cannot resume {out_dir / CHECKPOINT_NAME}: this run differs from it in: "
                           + "; ".join(diffs))
    if tc.seq_len > model_config.max_position_embeddings:
        raise CliError(f"--seq_len {tc.seq_len} > max_position_embeddings {model_config.max_position_embeddings}; "
                       f"pass --max_position_embeddings {tc.seq_len} or a shorter --seq_len")


def _training_data(settings, tokenizer, tc, sources, data_meta, echo):
    """(train split, eval split, data_info): the --data folder, or the corpus prepared (cached)."""
    data_dir = settings.get("data")
    if data_dir is None:
        if sources is None:
            sources = corpus_sources(settings["corpus"], echo=echo)
        data_dir = prepared_data(sources, tokenizer, tc.seq_len, settings["eval_fraction"],
                                 bool(settings["split_sentences"]), echo=echo)
    train_data, eval_data, data_info = open_data(data_dir)
    for line in preparation_warnings(load_meta(data_dir)):  # what packing lost, said on every run that uses it
        echo(line)
    if data_meta is not None and data_meta.get("vocab_sha256") != vocab_sha256(tokenizer.ids_to_tokens):
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
    return train_data, eval_data, data_info
