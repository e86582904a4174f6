"""Bias + dropout + residual + LayerNorm, fused: the twin of the post-LN residual block of ops/layer.py
(`h = LayerNorm(x + dropout(y + b))`, with y the BLAS output of the dense layer) and of ops/layernorm.py.

    forward:  t = resid + dropout(y + b);  out = (t - mean) * rstd * w + beta,  rstd = 1/sqrt(var + eps)
    backward: dy = dy_a + dy_b (the residual merge: the skip path's gradient plus the branch's);
              dw = sum dy * xhat, dbeta = sum dy;  ds = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w;
              dd = ds * mask (dropout backward, into the dense layer);  db = sum dd

Rows run in prange; the three sums over rows go through per-thread partial buffers.
Every part is optional (no bias, no dropout, no residual, no second upstream gradient), so the same pair
serves the generator head's plain LayerNorm.
"""

import math

import numpy as np
from numba import njit, prange

from .checks import as_input, as_output, as_seed, float_dtype, unread
from .rows import per_thread
from .uniforms import keep_factor, keep_scale
from .vecmath import FASTMATH


@njit(inline="always", cache=True, fastmath=FASTMATH)
def normalize_row(xr, eps):
    """In place: xr = (xr - mean) * rstd, rstd = 1 / sqrt(var + eps) (LayerNorm's normalization of one row,
    shared with the embeddings kernel). Returns rstd."""
    C = xr.shape[0]
    dt = xr.dtype.type
    m = dt(0.0)
    for j in range(C):
        m += xr[j]
    m = m / dt(C)
    v = dt(0.0)
    for j in range(C):
        xr[j] = xr[j] - m
        v += xr[j] * xr[j]
    r = dt(1.0) / math.sqrt(v / dt(C) + eps)
    for j in range(C):
        xr[j] = xr[j] * r
    return r


@njit(inline="always", cache=True, fastmath=FASTMATH)
def normalize_row_backward(g_row, xr, w, r, pw, pb):
    """In place: g_row holds dy, the gradient of one row's LayerNorm output, and becomes the gradient of its
    input, r (g - mean(g) - xhat mean(g xhat)), g = dy w; pw += dy xhat and pb += dy (the weight and bias
    gradients' per-thread partials). xr: the row's xhat, r: its rstd. Shared with the embeddings kernel."""
    C = xr.shape[0]
    dt = xr.dtype.type
    mg = dt(0.0)
    mgx = dt(0.0)
    for j in range(C):
        d = g_row[j]
        pw[j] += d * xr[j]
        pb[j] += d
        g = d * w[j]
        g_row[j] = g
        mg += g
        mgx += g * xr[j]
    mg, mgx = mg / dt(C), mgx / dt(C)
    for j in range(C):
        g_row[j] = r * (g_row[j] - mg - xr[j] * mgx)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _residual_layernorm_forward(y, bias, has_bias, resid, has_resid, seed, p, keep_scale, drop, w, beta, eps, out, xhat,
                                rstd):
    N, C = y.shape
    for i in prange(N):
        xr = xhat[i]
        for j in range(C):
            a = y[i, j]
            if has_bias:
                a = a + bias[j]
            if drop:
                a = a * keep_factor(seed, i * C + j, p, keep_scale)
            if has_resid:
                a = resid[i, j] + a
            xr[j] = a
        rstd[i] = normalize_row(xr, eps)
        for j in range(C):
            out[i, j] = xr[j] * w[j] + beta[j]


def residual_layernorm_forward(y: np.ndarray, w: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray,
                               xhat: np.ndarray, rstd: np.ndarray, bias: np.ndarray | None = None,
                               resid: np.ndarray | None = None, seed: int | None = None, p: float = 0.0) -> None:
    """Inputs:  y (N, C) the dense output before its bias; w, beta (C,) LayerNorm; bias (C,) or None;
             resid (N, C) or None; seed: the dropout uniforms' counter_rng seed, or None (no dropout), p
    Outputs: out (N, C), xhat (N, C), rstd (N,). The dropout pattern is not stored: backward takes the seed.
    """
    dt = float_dtype("y", y)
    N, C = y.shape
    y = as_input("y", y, dt)
    w, beta = as_input("w", w, dt, (C,)), as_input("beta", beta, dt, (C,))
    for name, a, shape in (("out", out, (N, C)), ("xhat", xhat, (N, C)), ("rstd", rstd, (N,))):
        as_output(name, a, dt, shape)
    has_bias, has_resid, drop = bias is not None, resid is not None, seed is not None
    bias = as_input("bias", bias, dt, (C,)) if has_bias else unread(dt, 1)
    resid = as_input("resid", resid, dt, (N, C)) if has_resid else unread(dt, 2)
    _residual_layernorm_forward(y, bias, has_bias, resid, has_resid, as_seed(seed), np.float32(p), keep_scale(dt, p),
                                drop, w, beta, dt.type(eps), out, xhat, rstd)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _residual_layernorm_backward(dy_a, dy_b, has_b, xhat, rstd, w, seed, p, keep_scale, drop, ds, dd, want_dd, partial):
    N, C = xhat.shape
    P = partial.shape[0]
    for ch in prange(P):
        pw, pb, pd = partial[ch, 0], partial[ch, 1], partial[ch, 2]
        for j in range(C):
            pw[j] = 0
            pb[j] = 0
            pd[j] = 0
        for i in range(ch * N // P, (ch + 1) * N // P):
            dsr = ds[i]
            for j in range(C):
                dsr[j] = dy_a[i, j] + dy_b[i, j] if has_b else dy_a[i, j]
            normalize_row_backward(dsr, xhat[i], w, rstd[i], pw, pb)
            for j in range(C):
                v = dsr[j]
                if drop:
                    v = v * keep_factor(seed, i * C + j, p, keep_scale)
                if want_dd:
                    dd[i, j] = v
                pd[j] += v


def residual_layernorm_backward(dy_a: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, w: np.ndarray, ds: np.ndarray,
                                dw: np.ndarray, dbeta: np.ndarray, dy_b: np.ndarray | None = None,
                                seed: int | None = None, p: float = 0.0, dd: np.ndarray | None = None,
                                dbias: np.ndarray | None = None, partial: np.ndarray | None = None) -> None:
    """Inputs:  dy_a (N, C) and optionally dy_b (N, C): upstream gradients to add (the residual merge);
             xhat, rstd, w: the forward's; seed, p: the forward's dropout (seed None: none)
    Outputs: ds (N, C) gradient of t (the residual stream, may be dy_a); dw, dbeta (C,);
             dd (N, C) gradient of the dense output y (ds times the dropout mask; may be ds's buffer only
             when there is no dropout); dbias (C,) = dd summed over rows
    """
    dt = float_dtype("xhat", xhat)
    N, C = xhat.shape
    xhat, dy_a = as_input("xhat", xhat, dt), as_input("dy_a", dy_a, dt, (N, C))
    rstd, w = as_input("rstd", rstd, dt, (N,)), as_input("w", w, dt, (C,))
    as_output("ds", ds, dt, (N, C))
    as_output("dw", dw, dt, (C,))
    as_output("dbeta", dbeta, dt, (C,))
    has_b, drop, want_dd = dy_b is not None, seed is not None, dd is not None
    dy_b = as_input("dy_b", dy_b, dt, (N, C)) if has_b else unread(dt, 2)
    dd = as_output("dd", dd, dt, (N, C)) if want_dd else unread(dt, 2)
    partial = per_thread(partial, (3, C), dt)
    _residual_layernorm_backward(dy_a, dy_b, has_b, xhat, rstd, w, as_seed(seed), np.float32(p), keep_scale(dt, p),
                                 drop, ds, dd, want_dd, partial)
    sums = partial.sum(axis=0)  # (3, C), partials added in a fixed order
    dw[...], dbeta[...] = sums[0], sums[1]
    if dbias is not None:
        as_output("dbias", dbias, dt, (C,))[...] = sums[2]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _layernorm_apply(xhat, w, beta, out):
    N, C = xhat.shape
    for i in prange(N):
        for j in range(C):
            out[i, j] = xhat[i, j] * w[j] + beta[j]


def layernorm_apply(xhat: np.ndarray, w: np.ndarray, beta: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (N, C) = xhat * w + beta: a LayerNorm's output again from its saved normalized input, the
    forward's last line (the fast encoder keeps xhat and recomputes h in backward instead of keeping both)."""
    dt = float_dtype("xhat", xhat)
    N, C = xhat.shape
    xhat = as_input("xhat", xhat, dt)
    _layernorm_apply(xhat, as_input("w", w, dt, (C,)), as_input("beta", beta, dt, (C,)),
                     as_output("out", out, dt, (N, C)))
    return out
