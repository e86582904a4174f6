"""The settings of a pretraining run (TrainConfig) and the two ways a run ends early: RunError (bad input,
nothing written) and TrainingDiverged (a NaN or infinity, the last checkpoint kept).

The optimizer and schedule are the official recipe (optim.py): AdamW, weight decay 0.01, clip 1.0,
linear warmup then linear decay to 0. The official warmup is 10,000 steps; a short run scales it
to min(10000, steps // 10). With a wall-clock budget (budget_minutes) the steps, and so the warmup, are
set once at the start of the run from a measured step time (budget.py) and recorded with the rest.
"""

import dataclasses
import math
from dataclasses import dataclass

OFFICIAL_WARMUP = 10_000
DTYPES = ("float32", "float64")
PEAK_LR = {"tiny": 5e-4, "small": 5e-4, "base": 2e-4}  # Clark et al. 2020, Table 7 (tiny: as small)


class RunError(ValueError):
    """Bad input to a run (settings, files, a checkpoint that does not fit): nothing was written."""


class TrainingDiverged(RuntimeError):
    """A loss or the gradient norm became NaN or infinite; the last checkpoint is left as it was."""


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
        if self.budget_minutes is not None and not (isinstance(self.budget_minutes, (int, float))
                                                    and not isinstance(self.budget_minutes, bool)
                                                    and 0 < self.budget_minutes < math.inf):
            raise RunError(f"budget_minutes must be a positive number, got {self.budget_minutes!r}")
        if self.steps is None and self.budget_minutes is None:
            raise RunError("steps must be given unless budget_minutes is (it then sets them)")
        if self.steps is not None:
            _check_int("steps", self.steps, 1)
        for name in ("batch_size", "seq_len", "eval_examples"):
            _check_int(name, getattr(self, name), 1)
        for name in ("log_every", "eval_every", "save_every"):
            _check_int(name, getattr(self, name), 0)
        _check_int("seed", self.seed, 0)
        if self.warmup is not None:
            _check_int("warmup", self.warmup, 0)
        if self.stop_at is not None:
            _check_int("stop_at", self.stop_at, 1)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise RunError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("weight_decay", "clip_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < math.inf):
                raise RunError(f"{name} must be a number >= 0, got {v!r}")
        if self.dtype not in DTYPES:
            raise RunError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.backend not in (None, "numpy", "fast"):
            raise RunError(f"backend must be 'numpy' or 'fast', got {self.backend!r}")
        object.__setattr__(self, "snapshots", _fractions(self.snapshots))
        if self.lr is None:  # resolved here, so that run.json and checkpoints record the numbers used
            object.__setattr__(self, "lr", PEAK_LR.get(self.preset, 5e-4))
        if self.warmup is None and self.steps is not None:  # with a budget: once steps are measured
            object.__setattr__(self, "warmup", min(OFFICIAL_WARMUP, self.steps // 10))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def stop(self) -> int:
        """The last step of this session: steps, or stop_at when it comes first."""
        return self.steps if self.stop_at is None else min(self.steps, self.stop_at)


def defaults() -> dict:
    """{field: default} of TrainConfig (the command line's defaults)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _fractions(values) -> tuple:
    """snapshots as a sorted tuple of distinct floats in (0, 1) (a checkpoint's JSON gives a list)."""
    values = () if values is None else values
    if isinstance(values, (int, float)):
        values = (values,)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise RunError(f"snapshots must be fractions of the steps between 0 and 1 (e.g. 0.25 0.5), got {v!r}")
        out.append(float(v))
    return tuple(sorted(set(out)))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RunError(f"{name} must be an integer >= {minimum}, got {value!r}")
