"""AdamW, fast: the twin of optim.AdamW.update (the official ELECTRA optimizer), one fused pass per tensor:

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    update = (m / c1) / (sqrt(v / c2) + eps) + wd * p   (wd only where optim.decays(name));  p -= lr * update

c1 = 1 - b1^t and c2 = 1 - b2^t with bias correction, else 1 (the official default). Elementwise, so
prange over elements; parameters, m and v are updated in place.

Tensors under SERIAL_BELOW elements (biases, LayerNorm weights: most of ELECTRA-Small's tensors) take the
same loop compiled without prange: a parallel launch on Numba's workqueue layer (which wakes a sleeping
worker and then the caller) costs more than such a tensor's whole update, and OpenMP's spinning threads,
which launch faster, fight OpenBLAS's (benchmarks/RESULTS.md, "Kept"). Same arithmetic either way (no
reduction), so the same bits.
"""

import math
from collections.abc import Callable

import numpy as np
from numba import njit, prange

from ...optim import decays
from .checks import as_input, as_output
from .vecmath import FASTMATH

SERIAL_BELOW = 1 << 16


@njit(inline="always", cache=True, fastmath=FASTMATH)
def _adamw_at(i, p, g, m, v, h):
    lr, b1, a1, b2, a2, c1, c2, eps, wd = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    mi = m[i] * b1 + a1 * g[i]
    vi = v[i] * b2 + a2 * (g[i] * g[i])
    m[i], v[i] = mi, vi
    upd = (mi / c1) / (math.sqrt(vi / c2) + eps) + wd * p[i]
    p[i] -= lr * upd


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _adamw(p, g, m, v, h):
    for i in prange(p.size):
        _adamw_at(i, p, g, m, v, h)


@njit(cache=True, fastmath=FASTMATH)
def _adamw_serial(p, g, m, v, h):
    for i in range(p.size):
        _adamw_at(i, p, g, m, v, h)


def adamw_update(params: dict, grads: dict, m: dict, v: dict, lr: float, t: int, weight_decay: float = 0.01,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6, bias_correction: bool = False,
                 lr_scales: dict | None = None) -> None:
    """Update params, m, v (dicts of C-contiguous arrays, same keys) in place for step number t (1-based,
    already incremented, as optim.AdamW.update does before updating). grads may be views of reused buffers.
    lr_scales: optional {name: factor} (layer-wise learning-rate decay), as in optim.AdamW.update."""
    c1 = 1.0 - beta1 ** t if bias_correction else 1.0
    c2 = 1.0 - beta2 ** t if bias_correction else 1.0
    for k, p in params.items():
        dt = p.dtype
        shape = p.shape
        for name, a in (("param", p), ("m", m[k]), ("v", v[k])):
            as_output(f"{name} {k}", a, dt, shape)
        g = as_input(f"grad {k}", grads[k], dt, shape)
        wd = weight_decay if (weight_decay and decays(k)) else 0.0
        lr_k = lr * (1.0 if lr_scales is None else lr_scales[k])
        # the hyperparameters in one array (each value rounded to the dtype, as scalars of it would be):
        # one argument for Numba's dispatcher to check instead of nine
        h = np.array([lr_k, beta1, 1 - beta1, beta2, 1 - beta2, c1, c2, eps, wd], dt)
        kernel = _adamw_serial if p.size < SERIAL_BELOW else _adamw
        kernel(p.reshape(-1), g.reshape(-1), m[k].reshape(-1), v[k].reshape(-1), h)


def fused_update(optimizer, lr_scales: dict | None = None) -> Callable:
    """optim.AdamW's update(params, grads, lr) through this kernel, on the optimizer's own state (m, v, t):
    the fast paths' optimizer step (pretraining; fine-tuning with layer-wise factors `lr_scales`)."""

    def update(params, grads, lr):
        optimizer.t += 1
        adamw_update(params, grads, optimizer.m, optimizer.v, lr, optimizer.t, optimizer.weight_decay,
                     optimizer.beta1, optimizer.beta2, optimizer.eps, optimizer.bias_correction, lr_scales)

    return update
