"""The settings of a pretraining run (TrainConfig) and the two ways a run ends early: RunError (bad input,
nothing written) and TrainingDiverged (a NaN, an infinity or a loss past its bound, the last checkpoint kept);
and the errnos of a resource fault (a full disk or quota, RESOURCE_ERRNOS).

The optimizer and schedule are the official recipe (optim.py): AdamW, weight decay 0.01, clip 1.0,
linear warmup then linear decay to 0. The official warmup is 10,000 steps; a short run scales it
to min(10000, steps // 10). With a wall-clock budget (budget_minutes) the steps, and so the warmup, are
set once at the start of the run from a measured step time (budget.py) and recorded with the rest.

Every field is checked when the config is made, against TRAIN_RULES (its type and range, in the rule language of
electra_np.config: True is no learning rate), and the warmup against the steps once they are known.
"""

import dataclasses
import errno
import math
import numbers
from dataclasses import dataclass

from ..config import AtLeast, Interval, OrNone, field_error

OFFICIAL_WARMUP = 10_000
RESOURCE_ERRNOS = tuple(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))  # disk full
DTYPES = ("float32", "float64")
PEAK_LR = {"tiny": 5e-4, "small": 5e-4, "base": 2e-4}  # Clark et al. 2020, Table 7 (tiny: as small)
BACKENDS = ("numpy", "fast")


@dataclass(frozen=True)
class Fractions:
    """A list of numbers in (0, 1), fractions of the steps (snapshots; _fractions checks it)."""


# What each field may hold, in the rule language of electra_np.config (Interval, AtLeast, OrNone, a tuple of the
# allowed strings), and `str` for any text. A bool is no number here: True is not a learning rate.
POSITIVE = Interval(0, math.inf, low_open=True, high_open=True)
AT_LEAST_0 = Interval(0, math.inf, high_open=True)
TRAIN_RULES = {
    "preset": str, "steps": OrNone(AtLeast(1)), "batch_size": AtLeast(1), "seq_len": AtLeast(1),
    "lr": OrNone(POSITIVE), "warmup": OrNone(AtLeast(0)), "weight_decay": Interval(0, 1), "clip_norm": AT_LEAST_0,
    "seed": AtLeast(0), "dtype": DTYPES, "eval_examples": AtLeast(1), "log_every": AtLeast(0),
    "eval_every": AtLeast(0), "save_every": AtLeast(0), "backend": OrNone(BACKENDS), "stop_at": OrNone(AtLeast(1)),
    "budget_minutes": OrNone(POSITIVE), "budget_step_seconds": OrNone(POSITIVE), "snapshots": Fractions(),
}
REASONS = {"weight_decay": ": AdamW's decoupled decay multiplies every weight by (1 - lr x weight_decay) at each step, "
                           "so past 1 it shrinks the weights faster than the learning rate moves them (the official "
                           "value is 0.01)"}


class RunError(ValueError):
    """Bad input to a run (settings, files, a checkpoint that does not fit): nothing was written."""


class TrainingDiverged(RuntimeError):
    """A loss or the gradient norm became NaN or infinite, or past a bound no healthy run reaches (divergence.py);
    the last checkpoint is left as it was."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. LOCKED fields define the run: resuming with another value is refused.
    The rest (logging, backend, where the data comes from) may change between sessions."""

    preset: str = "tiny"
    steps: int = 300
    batch_size: int = 32
    seq_len: int = 128
    lr: float = None                 # None: PEAK_LR[preset]
    warmup: int = None               # None: min(10000, steps // 10)
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    eval_examples: int = 512         # held-out examples per evaluation (the first ones)
    log_every: int = 10
    eval_every: int = 100
    save_every: int = 100
    backend: str = None              # None: "fast" when electra_np.fast imports, else "numpy"
    stop_at: int = None              # end this session after this step (with a checkpoint)
    budget_minutes: float = None     # steps from a wall-clock budget (budget.py): steps None until measured
    budget_step_seconds: float = None  # the measured seconds per step (evaluations' share included) that set steps
    snapshots: tuple = ()            # fractions of steps at which the models are saved (snapshots.py)

    LOCKED = ("preset", "steps", "batch_size", "seq_len", "lr", "warmup", "weight_decay", "clip_norm", "seed",
              "dtype", "budget_minutes")

    def __post_init__(self) -> None:
        for name in TRAIN_RULES:
            error = setting_error(name, getattr(self, name))
            if error:
                raise RunError(f"{name} {error}")
            _plain(self, name)
        if self.steps is None and self.budget_minutes is None:
            raise RunError("steps must be given unless budget_minutes is (it then sets them)")
        object.__setattr__(self, "snapshots", _fractions(self.snapshots))
        if self.lr is None:  # resolved here, so that run.json and checkpoints record the numbers used
            object.__setattr__(self, "lr", PEAK_LR.get(self.preset, 5e-4))
        if self.warmup is None and self.steps is not None:  # with a budget: once steps are measured
            object.__setattr__(self, "warmup", min(OFFICIAL_WARMUP, self.steps // 10))
        if self.steps is not None and self.warmup > self.steps:
            raise RunError(warmup_error(self.warmup, self.steps, self.budget_minutes, self.budget_step_seconds))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def stop(self) -> int:
        """The last step of this session: steps, or stop_at when it comes first."""
        return self.steps if self.stop_at is None else min(self.steps, self.stop_at)


def defaults() -> dict:
    """{field: default} of TrainConfig (the command line's defaults)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def setting_error(name: str, value) -> str | None:
    """What is wrong with `value` for the TrainConfig field `name` on its own ("must be ..., got ..."), or None.
    The command line asks it too, to name the --flag before anything is read or written."""
    rule = TRAIN_RULES[name]
    if isinstance(rule, OrNone):
        if value is None:
            return None
        rule = rule.rule
    if isinstance(rule, Fractions):
        try:
            _fractions(value)
        except RunError as e:
            return str(e).removeprefix("snapshots ")
        return None
    if rule is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r} ({type(value).__name__})"
    if isinstance(rule, Interval) and rule.high == math.inf:  # said in words: "(0, inf)" reads badly
        what = "a positive number" if rule.low_open else f"a number >= {rule.low:g}"
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if real and math.isfinite(value) and value in rule:
            return None
        return f"must be {what}, got {value!r}" + ("" if real else f" ({type(value).__name__})")
    error = field_error(rule, value)
    out_of_range = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return f"{error}{REASONS[name]}" if error and out_of_range and name in REASONS else error


def _plain(config, name: str) -> None:
    """A NumPy integer or float becomes the Python one: run.json and checkpoints are written with json."""
    value = getattr(config, name)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value) is not int:
        object.__setattr__(config, name, int(value))
    elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and type(value) is not float:
        object.__setattr__(config, name, float(value))


def warmup_error(warmup: int, steps: int, budget_minutes=None, step_seconds=None, dash: str = "") -> str:
    """Why a warmup longer than the run is refused: learning_rate() rises for `warmup` steps and decays to 0 at
    `steps`, so the peak lr is never reached. dash: "--" to name the command line's options."""
    w, s = f"{dash}warmup", f"{dash}steps"
    fix = f"give a {w} of at most {steps}, or leave it to its default, min(10000, steps / 10)"
    if budget_minutes is not None:
        return (f"{w} {warmup} is more than the {steps} steps that {dash}budget_minutes {budget_minutes:g} allows "
                f"(at {step_seconds or 0:.3f} s/step measured): the learning rate would never reach its peak; {fix}")
    return (f"{w} {warmup} is more than {s} {steps}: the learning rate rises for {w} steps and decays to 0 at the "
            f"last step, so it would never reach its peak; {fix}")


def _fractions(values) -> tuple:
    """snapshots as a sorted tuple of distinct floats in (0, 1) (a checkpoint's JSON gives a list)."""
    values = () if values is None else values
    if isinstance(values, (int, float)):
        values = (values,)
    if not isinstance(values, (list, tuple)):
        raise RunError(f"snapshots must be a list of fractions of the steps (e.g. 0.25 0.5), got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise RunError(f"snapshots must be fractions of the steps between 0 and 1 (e.g. 0.25 0.5), got {v!r}")
        out.append(float(v))
    return tuple(sorted(set(out)))
