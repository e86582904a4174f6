"""The options of `electra-np pretrain` (their help, defaults and groups) and the values each takes: the rule
tables that the model, objective and training settings are checked against (electra_np.config ELECTRA_RULES and
PRETRAINING_RULES, train.config TRAIN_RULES), so that a value given on the command line or in a --config file is
refused naming its option before anything is read or written. pretrain.py resolves the settings and runs.
"""

import argparse
import dataclasses

from ..config import ACTIVATIONS, ELECTRA_RULES, PRESETS, PRETRAINING_RULES, ElectraConfig, Interval, PretrainingConfig, field_error
from ..train.config import TRAIN_RULES, defaults, setting_error
from .common import EVAL_FRACTION_HELP, CliError, add_corpus_options

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


def add_options(sub) -> argparse.ArgumentParser:
    """Register `pretrain` and its options on an argparse subparsers object (pretrain.add_parser adds the command
    to run); its options are absent from the namespace unless given (argparse.SUPPRESS), so that
    pretrain.resolve_settings knows what the command line set."""
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


# ----------------------------------------------------------------------------- the values each option takes

MODEL_RULES = {k: v for k, v in ELECTRA_RULES.items() if k != "pad_token_id"} | PRETRAINING_RULES
DATA_RULES = {"eval_fraction": Interval(0, 1, high_open=True)}  # data.prepare's: 1 would hold out everything


def option_error(key: str, value) -> str | None:
    """What is wrong with the value of one option on its own ("must be ..., got ..."), or None (also for an option
    with no rule: a path, a flag). The ranges are those the config classes would refuse later, after the
    vocabulary was learned and the corpus prepared."""
    if key in TRAIN_RULES:
        return setting_error(key, value)
    rule = MODEL_RULES.get(key, DATA_RULES.get(key))
    return None if rule is None else field_error(rule, value)


def check_flags(given: dict) -> None:
    """Refuse the first command-line value out of its option's range (argparse checked the types, but a float
    option takes inf and nan), naming the --flag."""
    for key, value in given.items():
        error = option_error(key, value)
        if error:
            raise CliError(f"--{key} {error}")
