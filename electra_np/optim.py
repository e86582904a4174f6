"""The optimizer as the official ELECTRA code does it (google-research/electra model/optimization.py):
AdamW with decoupled weight decay, global-norm clipping, and a learning rate that is
peak x linear warmup x linear decay to 0 (the two factors multiplied).

    m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
    update = m / (sqrt(v) + eps)        (m / (1 - b1^t), v / (1 - b2^t) with bias_correction=True)
    update += weight_decay * p          (not for LayerNorm or bias parameters)
    p -= lr * update

Official defaults: weight_decay 0.01, eps 1e-6, b1 0.9, b2 0.999, no bias correction, clip norm 1.0.
"""

from collections.abc import Mapping

import numpy as np

NO_DECAY = ("LayerNorm", "layer_norm", "bias")  # official exclude_from_weight_decay


def learning_rate(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """peak * (1 - step/total)_+ * min(1, step/warmup): official polynomial_decay(power=1) times warmup."""
    decay = max(0.0, 1.0 - step / total_steps) if total_steps > 0 else 1.0
    warmup = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    return peak * decay * warmup


NORM_CHUNK = 1 << 15  # elements squared into a float64 buffer at a time


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """sqrt(sum of every gradient's squares), accumulated in float64 (a float32 sum of millions of squares
    loses digits) a chunk at a time through one small buffer, so that no full-size float64 copy of each
    gradient is made every step."""
    buf = np.empty(NORM_CHUNK)
    total = 0.0
    for g in grads.values():
        flat = g.reshape(-1)
        for lo in range(0, flat.size, NORM_CHUNK):
            part = flat[lo:lo + NORM_CHUNK]
            total += float(np.square(part, dtype=np.float64, out=buf[:part.size]).sum())
    return float(np.sqrt(total))


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float = 1.0,
                        inplace: bool = False) -> tuple[dict[str, np.ndarray], float]:
    """tf.clip_by_global_norm: scale every gradient by max_norm / max(norm, max_norm). Returns (dict, norm):
    a new dict of new arrays, or with inplace=True the given arrays scaled where they are (the training
    loop owns its gradients, so it skips a full copy of them every clipped step)."""
    norm = global_norm(grads)
    scale = max_norm / max(norm, max_norm)
    if scale == 1.0:
        return (grads if inplace else dict(grads)), norm
    if inplace:
        for g in grads.values():
            g *= g.dtype.type(scale)
        return grads, norm
    return {k: g * g.dtype.type(scale) for k, g in grads.items()}, norm


def decays(name: str) -> bool:
    """Whether weight decay applies to the parameter `name` (not to LayerNorm or bias parameters)."""
    return not any(s in name for s in NO_DECAY)


class AdamW:
    """AdamW state (m, v per parameter, step count). `update` is the one function in electra_np that
    modifies parameters in place."""

    def __init__(self, params: Mapping[str, np.ndarray], weight_decay: float = 0.01, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-6, bias_correction: bool = False):
        self.weight_decay, self.beta1, self.beta2, self.eps = weight_decay, beta1, beta2, eps
        self.bias_correction = bias_correction
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], lr: float,
               lr_scales: Mapping[str, float] | None = None) -> None:
        """One step. lr_scales: optional {name: factor} (layer-wise learning-rate decay in fine-tuning)."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1 = 1.0 - b1 ** self.t if self.bias_correction else 1.0
        c2 = 1.0 - b2 ** self.t if self.bias_correction else 1.0
        for k, p in params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            dt = p.dtype.type
            m *= dt(b1)
            m += dt(1 - b1) * g
            v *= dt(b2)
            v += dt(1 - b2) * (g * g)
            update = (m / dt(c1)) / (np.sqrt(v / dt(c2)) + dt(self.eps))
            if self.weight_decay and decays(k):
                update += dt(self.weight_decay) * p
            p -= dt(lr * (1.0 if lr_scales is None else lr_scales[k])) * update

    def state_dict(self) -> dict:
        state = {"t": self.t}
        state.update({f"m.{k}": v for k, v in self.m.items()})
        state.update({f"v.{k}": v for k, v in self.v.items()})
        return state

    def load_state_dict(self, state: Mapping) -> None:
        self.t = int(state["t"])
        for k in self.m:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]
