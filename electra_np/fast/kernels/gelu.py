"""Bias + GELU, fused: the twin of ops/linear.py's `+ b` followed by ops/activations.py (both flavours).

    forward:  a += b;  g = gelu(a)                         (a is the BLAS output x W^T, kept for backward)
    backward: da = dg * gelu'(a);  db = sum over rows of da (per-thread partials, fixed order)

Exact GELU: gelu(a) = a Phi(a), gelu'(a) = Phi(a) + a phi(a) (HF "gelu", ELECTRA's).
Tanh GELU ("gelu_new"): 0.5 a (1 + t), t = tanh(c (a + 0.044715 a^3)).
"""

import math

import numpy as np
from numba import njit, prange

from .checks import as_input, as_output, float_dtype, in_place
from .rows import per_thread
from .vecmath import FASTMATH, SQRT_HALF, erf_, exp_, tanh_

EXACT, TANH = 0, 1
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_COEF = 0.044715
ACT_CODES = {"gelu": EXACT, "gelu_new": TANH, "gelu_pytorch_tanh": TANH}


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _bias_gelu_forward(a, b, g, act):
    N, C = a.shape
    dt = a.dtype.type
    half, rs2, c, k = dt(0.5), dt(SQRT_HALF), dt(SQRT_2_OVER_PI), dt(TANH_COEF)
    for i in prange(N):
        for j in range(C):
            x = a[i, j] + b[j]
            a[i, j] = x
            if act == EXACT:
                g[i, j] = x * (half * (dt(1.0) + erf_(x * rs2)))
            else:
                g[i, j] = half * x * (dt(1.0) + tanh_(c * (x + k * x * x * x)))


def bias_gelu_forward(a: np.ndarray, b: np.ndarray, g: np.ndarray, act: str = "gelu") -> None:
    """In place: a (N, C) += b (C,); writes g (N, C) = act(a)."""
    dt = float_dtype("a", a)
    as_output("a", a, dt, a.shape)
    _bias_gelu_forward(a, as_input("b", b, dt, (a.shape[1],)), as_output("g", g, dt, a.shape), ACT_CODES[act])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _bias_gelu_backward(d, a, partial, act, g, want_g):
    N, C = a.shape
    P = partial.shape[0]
    dt = a.dtype.type
    half, rs2, ipdf, c, k = dt(0.5), dt(SQRT_HALF), dt(INV_SQRT_2PI), dt(SQRT_2_OVER_PI), dt(TANH_COEF)
    for ch in prange(P):
        for j in range(C):
            partial[ch, j] = 0
        for i in range(ch * N // P, (ch + 1) * N // P):
            for j in range(C):
                x = a[i, j]
                if act == EXACT:
                    cdf = half * (dt(1.0) + erf_(x * rs2))
                    dv = cdf + x * exp_(-half * x * x) * ipdf
                    if want_g:
                        g[i, j] = x * cdf
                else:
                    t = tanh_(c * (x + k * x * x * x))
                    dv = half * (dt(1.0) + t) + half * x * (dt(1.0) - t * t) * c * (dt(1.0) + dt(3.0) * k * x * x)
                    if want_g:
                        g[i, j] = half * x * (dt(1.0) + t)
                v = d[i, j] * dv
                d[i, j] = v
                partial[ch, j] += v


def bias_gelu_backward(dg: np.ndarray, a: np.ndarray, da: np.ndarray, db: np.ndarray | None = None, act: str = "gelu",
                       partial: np.ndarray | None = None, g: np.ndarray | None = None) -> np.ndarray:
    """da (N, C) = dg * act'(a) (da may be dg); db (C,) = da summed over rows when given; g (N, C) = act(a)
    rewritten when given (the forward's output, recomputed from the erf/tanh the derivative needs anyway,
    so that the model need not keep it)."""
    dt = float_dtype("a", a)
    a = as_input("a", a, dt)
    dg = as_input("dg", dg, dt, a.shape)
    in_place("da", as_output("da", da, dt, a.shape), dg)  # the kernel turns dg into da in da's buffer
    partial = per_thread(partial, (a.shape[1],), dt)
    want_g = g is not None
    g = as_output("g", g, dt, a.shape) if want_g else np.empty((1, 1), dt)
    _bias_gelu_backward(da, a, partial, ACT_CODES[act], g, want_g)
    if db is not None:
        as_output("db", db, dt, (a.shape[1],))
        partial.sum(axis=0, out=db)  # partials added in a fixed order
    return da
