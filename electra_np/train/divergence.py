"""When a run has diverged: losses no model that learnt anything produces, or a gradient norm that exploded.

A NaN or an infinity is the loud end of divergence; the quiet one is finite numbers far past anything a working
model gives (a run at --lr 10 without clipping finishes "successfully" with an MLM loss thousands of times a
uniform guess's). The bounds, checked on every training step:

    MLM loss  > 3 ln V      A uniform guess over the V tokens scores ln V; the generator starts there (its
                            logits are near 0 at initialisation) and only goes down while it learns. Three times
                            that is a model confidently wrong on average, which training never passes through.
    disc loss > 10 ln 2     The discriminator's per-token binary cross-entropy starts at ln 2 (a coin) and falls
                            below the always-"original" entropy H(replaced share) <= ln 2; ten times a coin's loss
                            means confident wrong answers on most tokens.
    grad norm > 1000 x      the median of this session's last NORM_WINDOW step norms, once MIN_NORMS are seen.
                            Healthy runs vary by a small factor around their median (the norm grows while the
                            discriminator starts learning, and spikes now and then); three orders of magnitude is
                            an explosion, which clipping would only hide until the weights overflow.

Each is far from what a healthy run reaches, so a stop is not a false alarm: the logged metrics of the runs behind
examples/RESULTS.md stay well inside all three. The norm history is this session's (not checkpointed): a resumed
run judges norms again after MIN_NORMS steps. NaN and infinity stop the run at once.

A step's checks see the state before its update, so the last update of a session is judged apart
(last_update_problem): a huge learning rate leaves finite weights whose next forward pass overflows to NaN, and
without that check the run would save them, export them and report NaN as its result.
"""

import math
from collections import deque

import numpy as np

from .checkpoint import first_nonfinite
from .held_out import held_out_metrics

MLM_FACTOR = 3.0         # x ln V
DISC_BOUND = 10 * math.log(2)
NORM_FACTOR = 1e3        # x the median of the recent norms
NORM_WINDOW = 100        # recent steps whose median norm is the reference (a sliding window follows slow drift)
MIN_NORMS = 10           # steps seen before the norm is judged against its median


class DivergenceGuard:
    """The bounds above for one session. check_losses() before a step's gradients are used, check_norm() after."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.mlm_bound = MLM_FACTOR * math.log(vocab_size)
        self.norms = deque(maxlen=NORM_WINDOW)

    def check_losses(self, metrics: dict) -> str | None:
        """What is wrong with the step's losses, or None."""
        names = {"mlm_loss": "the MLM (generator) loss", "disc_loss": "the discriminator loss"}
        bad = [f"{names[k]} {k}={metrics[k]}" for k in names if k in metrics and not math.isfinite(metrics[k])]
        if bad:
            return " and ".join(bad)
        mlm, disc = metrics.get("mlm_loss"), metrics.get("disc_loss")
        if mlm is not None and mlm > self.mlm_bound:
            return (f"the MLM (generator) loss {mlm:.6g} is above {self.mlm_bound:.3g} = 3 ln V (V={self.vocab_size}), "
                    f"three times a uniform guess's, so the generator has diverged")
        if disc is not None and disc > DISC_BOUND:
            return (f"the discriminator loss {disc:.6g} is above {DISC_BOUND:.3g} = 10 ln 2, ten times a coin "
                    f"flip's, so the discriminator has diverged")
        return None

    def check_norm(self, norm: float) -> str | None:
        """What is wrong with the step's gradient norm (before clipping), or None; remembers it when healthy."""
        if not math.isfinite(norm):
            return f"the gradient norm is {norm}"
        if len(self.norms) >= MIN_NORMS:
            median = float(np.median(self.norms))
            if norm > NORM_FACTOR * median:
                return (f"the gradient norm {norm:.6g} is {norm / median:.3g} times the median {median:.4g} of the "
                        f"last {len(self.norms)} steps (the bound is {NORM_FACTOR:g} times), so it exploded")
        self.norms.append(norm)
        return None


def last_update_problem(guard: DivergenceGuard, params: dict, setup, data, batch_size: int,
                        temperature: float) -> str | None:
    """What is wrong with the weights the last update of a session made, or None: a NaN or an infinity in them,
    else the losses of one forward pass on the first training batch past the bounds above (dropout off, masks and
    samples from held_out's fixed seed, so the run's own random stream is untouched and a resume is unchanged)."""
    bad = first_nonfinite(params)
    if bad is not None:
        return f"the update left NaN or infinite values in {bad}"
    with np.errstate(all="ignore"):  # overflow is what is being looked for: NumPy's warnings would only repeat it
        metrics = held_out_metrics(params, setup, data, batch_size, batch_size, temperature=temperature)
    problem = guard.check_losses(metrics)
    return None if problem is None else f"with the weights of its update, {problem} (on the first training batch)"


ADVICE = ("To try again, start a new run with a lower --lr or a longer --warmup (and --clip_norm 1, the default, if "
          "it was 0).")
