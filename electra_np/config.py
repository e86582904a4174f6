"""Model configuration: one frozen dataclass with Hugging Face `ElectraConfig` field names.

Dimension letters used across the package (declared once, here):
    B batch, T sequence length, E embedding size, H hidden size, NH attention heads,
    hs head size (H // NH), F intermediate (feed-forward) size, V vocabulary size,
    M number of masked positions in a batch.
"""

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass

from .atomic import atomic_write_text

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh")  # exact erf GELU, and the tanh approximation


# ----------------------------------------------------------------------------- what each field may hold

@dataclass(frozen=True)
class Interval:
    """The real numbers a setting may take, printed as the docs write it: [0, 1), (0, 100]."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return bool(above and below)

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class AtLeast:
    """An integer >= minimum (a bool or a float is refused: True is not a layer count, 2.5 not a head count)."""

    minimum: int


@dataclass(frozen=True)
class OrNone:
    """None, or what `rule` allows."""

    rule: object


# The ranges are where a value still means what its name says; outside them a run trains at the uniform loss
# (layer_norm_eps 1e30 flattens every LayerNorm) or overflows at its first step (initializer_range inf,
# disc_weight 1e308) without a word. ELECTRA's own values sit well inside: eps 1e-12, std 0.02, lambda 50.
UNIT_OPEN = Interval(0, 1, low_open=True, high_open=True)  # (0, 1)
DROPOUT = Interval(0, 1, high_open=True)  # [0, 1): 1 would drop everything
POSITIVE = AtLeast(1)
ELECTRA_RULES = {
    "vocab_size": POSITIVE, "embedding_size": POSITIVE, "hidden_size": POSITIVE, "num_hidden_layers": POSITIVE,
    "num_attention_heads": POSITIVE, "intermediate_size": POSITIVE, "hidden_act": ACTIVATIONS,
    "hidden_dropout_prob": DROPOUT, "attention_probs_dropout_prob": DROPOUT,
    "max_position_embeddings": POSITIVE, "type_vocab_size": POSITIVE,
    "initializer_range": Interval(0, 1, low_open=True),  # a standard deviation; BERT's 0.02
    "layer_norm_eps": Interval(0, 0.1, low_open=True),  # beside unit-variance activations; 1e-12 in ELECTRA
    "pad_token_id": AtLeast(0),
}
TEMPERATURE = Interval(0, 100, low_open=True)  # past 100 any logits a model makes give nearly uniform samples
PRETRAINING_RULES = {
    "mask_prob": UNIT_OPEN, "disc_weight": Interval(0, 1e4),  # lambda; the paper's 50
    "temperature": TEMPERATURE, "final_temperature": OrNone(TEMPERATURE),
    "generator_hidden_size": Interval(0, 1, low_open=True), "mask_token_prob": Interval(0, 1),
    "objective": ("electra", "mlm"),
}


def field_error(rule, value) -> str | None:
    """What is wrong with `value` under `rule` ("must be ..., got ..."), or None when it fits. rule: an Interval
    (a finite real number in it), AtLeast (an integer), a tuple of the allowed strings, or OrNone(rule)."""
    if isinstance(rule, OrNone):
        return None if value is None else field_error(rule.rule, value)
    if isinstance(rule, tuple):
        return None if isinstance(value, str) and value in rule else f"must be one of {rule}, got {value!r}"
    got = f"got {value!r}" + ("" if _is_real(value) else f" ({type(value).__name__})")
    if isinstance(rule, AtLeast):
        what = "a positive integer" if rule.minimum == 1 else f"an integer >= {rule.minimum}"
        return None if _is_int(value) and value >= rule.minimum else f"must be {what}, {got}"
    if not _is_real(value):
        return f"must be a number in {rule}, {got}"
    return None if math.isfinite(value) and value in rule else f"must be in {rule}, {got}"


def check_fields(obj, rules: dict) -> None:
    """Refuse the first field of a config dataclass that its rule does not allow, naming it; a NumPy integer or
    float becomes the Python one (config.json and run.json are written with json)."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        error = field_error(rule, value)
        if error:
            raise ValueError(f"{type(obj).__name__}.{name} {error}")
        if _is_int(value) and type(value) is not int:
            object.__setattr__(obj, name, int(value))
        elif _is_real(value) and not isinstance(value, int) and type(value) is not float:
            object.__setattr__(obj, name, float(value))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class ElectraConfig:
    """Architecture of one ELECTRA encoder (discriminator or generator).

    Field names and defaults follow `transformers.ElectraConfig`, so a Hugging Face
    `config.json` maps onto it one-to-one (see `from_dict` / `to_dict`). Every field is checked against
    ELECTRA_RULES when the config is made: its type (an int is not a bool or a float) and its range.
    """

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        check_fields(self, ELECTRA_RULES)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"ElectraConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"ElectraConfig.pad_token_id must be in [0, vocab_size={self.vocab_size}), "
                             f"got {self.pad_token_id!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes) -> "ElectraConfig":
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json ----

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model_type"] = "electra"
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ElectraConfig":
        """Build from a Hugging Face config dict; unknown keys (architectures, summary_*, ...) are ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", "electra")
        if model_type != "electra":
            raise ValueError(f"{source}: model_type is {model_type!r}, not 'electra'; this is not an ELECTRA config")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        if d.get("embedding_size") is None and "hidden_size" in d:  # HF allows embedding_size=None -> H
            kwargs["embedding_size"] = d["hidden_size"]
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def save_json(self, path: str | os.PathLike, architectures: Iterable[str] | None = None) -> None:
        """Write config.json (atomically: a reader never sees half a file), with `architectures` if given."""
        d = self.to_dict()
        if architectures:
            d["architectures"] = list(architectures)
        atomic_write_text(path, json.dumps(d, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ElectraConfig":
        try:
            with open(path) as f:
                d = json.load(f)
        except ValueError as e:  # bad JSON or bad UTF-8
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))


def generator_config(config: ElectraConfig, generator_hidden_size: float = 0.25) -> ElectraConfig:
    """The generator's config, derived as the official code does it (google-research/electra,
    configure_pretraining.py and run_pretraining.py `get_generator_config`):
    hidden = H x generator_hidden_size, heads = max(1, hidden // 64), F = 4 x hidden, same depth,
    same embedding size (the embeddings are shared)."""
    error = field_error(PRETRAINING_RULES["generator_hidden_size"], generator_hidden_size)
    if error:
        raise ValueError(f"generator_hidden_size {error}")
    hidden = int(round(config.hidden_size * generator_hidden_size))
    if hidden < 1:
        raise ValueError(f"generator_hidden_size {generator_hidden_size!r} x hidden_size {config.hidden_size} "
                         "leaves the generator no hidden unit; choose a larger share")
    if generator_hidden_size == 1.0:
        return config
    return config.replace(hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                          intermediate_size=4 * hidden)


PRESETS = {
    # the smallest, for trying things out: 2 layers, H=128; vocab set from the tokenizer at run time
    "tiny": ElectraConfig(vocab_size=8192, embedding_size=64, hidden_size=128, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=512, max_position_embeddings=128),
    # ELECTRA-Small (Clark et al. 2020, Table 6)
    "small": ElectraConfig(vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                           num_attention_heads=4, intermediate_size=1024),
    # ELECTRA-Base
    "base": ElectraConfig(vocab_size=30522, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072),
}


def preset(name: str, **overrides) -> ElectraConfig:
    """A PRESETS config with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)


@dataclass(frozen=True)
class PretrainingConfig:
    """The ELECTRA objective's settings (official defaults, configure_pretraining.py), each checked against
    PRETRAINING_RULES when the config is made."""

    mask_prob: float = 0.15
    disc_weight: float = 50.0          # lambda in L_MLM + lambda * L_disc
    temperature: float = 1.0           # Gumbel-max sampling temperature
    final_temperature: float | None = None  # None: temperature throughout; else linear from temperature to this
    generator_hidden_size: float = 0.25
    mask_token_prob: float = 0.85      # of the chosen positions, this share becomes [MASK]; the rest keep their token
    objective: str = "electra"         # "electra" or "mlm" (the BERT baseline: MLM loss only)

    def __post_init__(self) -> None:
        check_fields(self, PRETRAINING_RULES)

    def temperature_at(self, step: int, steps: int) -> float:
        """The sampling temperature of optimizer step `step` (0-based) of `steps`: `temperature` throughout, or,
        with final_temperature, linear from temperature at step 0 to final_temperature at the last step. A high
        start gives the discriminator rare, easily found replacements while it learns to look at tokens at all
        (at temperature 1 a young generator replaces with frequent words, and a tiny discriminator can stay at the
        always-original baseline); the end is the paper's objective (Fast-ELECTRA, Dong et al. 2023, anneals the
        temperature for the same reason)."""
        if self.final_temperature is None:
            return self.temperature
        frac = step / max(1, steps - 1)
        return self.temperature + (self.final_temperature - self.temperature) * min(1.0, max(0.0, frac))

    def max_predictions(self, T: int) -> int:
        """Official `max_predictions_per_seq = int((mask_prob + 0.005) * max_seq_length)`."""
        return max(1, int((self.mask_prob + 0.005) * T))
