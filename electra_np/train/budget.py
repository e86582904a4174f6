"""A schedule from a wall-clock budget (--budget_minutes M): as many steps as fit in M minutes.

    steps = max(1, floor(M * 60 / (seconds per step + seconds per evaluation / eval_every)))

The step time is measured before the run starts, on throwaway copies: a copy of the parameters with AdamW
moments of its own, a random stream of its own (default_rng([seed, MEASURE_STREAM]); training draws from
[seed, state.INIT_STREAM]), a data sampler of its own and a step function of its own. So the run computes
exactly what a run given the same --steps computes. The first steps are not timed (kernels load, buffers
are allocated); the median of the timed ones is robust to a stray pause. The measured time and the steps
are recorded in TrainConfig (run.json, checkpoints): a resumed run keeps them and never measures again.
The measurement itself, the final export and the demo come on top of the budget.
"""

import dataclasses
import math
import time

import numpy as np

from ..engine import make_step, make_update
from ..model import Electra
from ..optim import AdamW, clip_by_global_norm, global_norm
from .config import TrainConfig
from .held_out import held_out_metrics

WARM_STEPS = 2  # untimed
TIMED_STEPS = 5  # their median is the step time
MEASURE_STREAM = 2


def measure_step_seconds(setup: Electra, tc: TrainConfig, params: dict, backend: str, train_data,
                         eval_data=None) -> tuple[float, float]:
    """(seconds of one training step: load, forward + backward, clip, update; seconds of one held-out
    evaluation, 0.0 without held-out data), on copies: `params` and everything else of the run stay as they were.
    """
    params = {k: v.copy() for k, v in params.items()}
    update = make_update(AdamW(params, weight_decay=tc.weight_decay), backend)
    step_fn = make_step(setup, backend)
    rng = np.random.default_rng([tc.seed, MEASURE_STREAM])
    sampler = train_data.sampler(tc.batch_size, seed=tc.seed)
    times = []
    for i in range(WARM_STEPS + TIMED_STEPS):
        t0 = time.perf_counter()
        _, _, grads = step_fn(params, train_data.batch(next(sampler)), rng)
        grads, _ = (clip_by_global_norm(grads, tc.clip_norm, inplace=True) if tc.clip_norm > 0
                    else (grads, global_norm(grads)))
        update(params, grads, tc.lr)
        if i >= WARM_STEPS:
            times.append(time.perf_counter() - t0)
    eval_seconds = 0.0
    if eval_data is not None and len(eval_data) > 0:
        t0 = time.perf_counter()
        held_out_metrics(params, setup, eval_data, tc.batch_size, tc.eval_examples)
        eval_seconds = time.perf_counter() - t0
    return float(np.median(times)), eval_seconds


def fit_budget(setup: Electra, tc: TrainConfig, params: dict, backend: str, train_data,
               eval_data=None) -> tuple[TrainConfig, str]:
    """tc with steps (and, unless given, warmup) set from tc.budget_minutes and a measured step time, and the
    log line that says so."""
    step_seconds, eval_seconds = measure_step_seconds(setup, tc, params, backend, train_data, eval_data)
    eval_share = eval_seconds / tc.eval_every if tc.eval_every and eval_seconds else 0.0
    per_step = step_seconds + eval_share
    steps = budget_steps(tc.budget_minutes, per_step)
    tc = dataclasses.replace(tc, steps=steps, budget_step_seconds=per_step)
    line = (f"budget {tc.budget_minutes:g} min: {per_step:.3f} s/step measured -> {steps} steps (a step "
            f"{step_seconds:.3f} s" + (f" + a {eval_seconds:.1f} s evaluation every {tc.eval_every} steps"
                                       if eval_share else "") + f"; warmup {tc.warmup})")
    return tc, line


def budget_steps(budget_minutes: float, seconds_per_step: float) -> int:
    """max(1, floor(budget_minutes * 60 / seconds_per_step))."""
    return max(1, math.floor(budget_minutes * 60 / max(seconds_per_step, 1e-9)))
