"""Model configuration: one frozen dataclass with Hugging Face `ElectraConfig` field names.

Dimension letters used across the package (declared once, here):
    B batch, T sequence length, E embedding size, H hidden size, NH attention heads,
    hs head size (H // NH), F intermediate (feed-forward) size, V vocabulary size,
    M number of masked positions in a batch.
"""

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from .atomic import atomic_write_text

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh")  # exact erf GELU, and the tanh approximation


@dataclass(frozen=True)
class ElectraConfig:
    """Architecture of one ELECTRA encoder (discriminator or generator).

    Field names and defaults follow `transformers.ElectraConfig`, so a Hugging Face
    `config.json` maps onto it one-to-one (see `from_dict` / `to_dict`).
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
        ints = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ElectraConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"ElectraConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
                raise ValueError(f"ElectraConfig.{name} must be in [0, 1), got {p!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"ElectraConfig.hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range > 0):
            raise ValueError(f"ElectraConfig.initializer_range must be > 0, got {self.initializer_range!r}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise ValueError(f"ElectraConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not (isinstance(self.pad_token_id, int) and 0 <= self.pad_token_id < self.vocab_size):
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
        return cls(**kwargs)

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
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))


def generator_config(config: ElectraConfig, generator_hidden_size: float = 0.25) -> ElectraConfig:
    """The generator's config, derived as the official code does it (google-research/electra,
    configure_pretraining.py and run_pretraining.py `get_generator_config`):
    hidden = H x generator_hidden_size, heads = max(1, hidden // 64), F = 4 x hidden, same depth,
    same embedding size (the embeddings are shared)."""
    if not 0.0 < generator_hidden_size <= 1.0:
        raise ValueError(f"generator_hidden_size must be in (0, 1], got {generator_hidden_size!r}")
    hidden = int(round(config.hidden_size * generator_hidden_size))
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
    """The ELECTRA objective's settings (official defaults, configure_pretraining.py)."""

    mask_prob: float = 0.15
    disc_weight: float = 50.0          # lambda in L_MLM + lambda * L_disc
    temperature: float = 1.0           # Gumbel-max sampling temperature
    final_temperature: float | None = None  # None: temperature throughout; else linear from temperature to this
    generator_hidden_size: float = 0.25
    mask_token_prob: float = 0.85      # of the chosen positions, this share becomes [MASK]; the rest keep their token
    objective: str = "electra"         # "electra" or "mlm" (the BERT baseline: MLM loss only)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob!r}")
        if not (math.isfinite(self.disc_weight) and self.disc_weight >= 0):
            raise ValueError(f"disc_weight must be a finite number >= 0, got {self.disc_weight!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.final_temperature is not None and not self.final_temperature > 0:
            raise ValueError(f"final_temperature must be > 0, got {self.final_temperature!r}")
        if not 0.0 < self.generator_hidden_size <= 1.0:
            raise ValueError(f"generator_hidden_size must be in (0, 1], got {self.generator_hidden_size!r}")
        if not 0.0 <= self.mask_token_prob <= 1.0:
            raise ValueError(f"mask_token_prob must be in [0, 1], got {self.mask_token_prob!r}")
        if self.objective not in ("electra", "mlm"):
            raise ValueError(f"objective must be 'electra' or 'mlm', got {self.objective!r}")

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
