"""The attention core, fast: the twin of ops/attention.py `attention_core_forward` / `attention_core_backward`.

    S = q k^T (BLAS, batched: blas.bmm)  ->  P = softmax(S * s + bias), P' = dropout(P)  (one fused kernel)
    ->  ctx = P' v (BLAS)
    backward: dP' = dctx v^T, dv = P'^T dctx, dq = dS k, dk = dS^T q (BLAS), with the fused kernel
              dS = s * P * (dP - sum(dP * P)), dP = dP' * mask, recomputing P' = P * mask on the way.

The kernels run in prange over (batch, head) pairs; each pair's rows are independent. A query whose keys
are all padding gets an all-zero row, as in the reference. The dropout pattern (u >= p, u the reference's
counter_rng uniforms) is never stored: both kernels compute it from the seed and each probability's
position, and backward rewrites P' from P with it.

The fast encoder (fast/encoder.py) uses this batched form only where fused_attention.py cannot run (NumPy's
BLAS is not scipy-openblas, or ELECTRA_NP_FUSED_ATTENTION=0); that kernel does the same rows with the row
helpers below (`softmax_row`, `dropout_row`, `softmax_dropout_backward_row`), and the products inside it.
"""

import numpy as np
from numba import njit, prange

from ...counter_rng import draw_seed
from .blas import bmm
from .checks import as_input, as_output, as_seed, in_place
from .uniforms import keep_factor, keep_scale
from .vecmath import FASTMATH, exp_, row_max


@njit(inline="always", cache=True, fastmath=FASTMATH)
def softmax_row(row):
    """row = softmax(row) in place, shifted by its maximum; a row of all -inf (every key padding)
    becomes zeros, not NaN. One array read and written (see checks.in_place for why)."""
    Tk = row.shape[0]
    m = row_max(row)  # 16 running maxima: one compare-select chain does not vectorize (vecmath.row_max)
    if m == -np.inf:
        for j in range(Tk):
            row[j] = 0
        return
    total = row.dtype.type(0)
    for j in range(Tk):
        e = exp_(row[j] - m)
        row[j] = e
        total += e
    inv = row.dtype.type(1.0) / total
    for j in range(Tk):
        row[j] = row[j] * inv


@njit(inline="always", cache=True, fastmath=FASTMATH)
def dropout_row(p_row, d_row, seed, at, p, keep_scale):
    """d_row = P' = P * mask for one row; `at`: the row's first flat position in (B, NH, T, Tk)."""
    for j in range(p_row.shape[0]):
        d_row[j] = p_row[j] * keep_factor(seed, at + j, p, keep_scale)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_dropout_forward(scores, bias, scale, seed, p, keep_scale, drop, probs, probs_d):
    B, NH, T, Tk = scores.shape
    for bh in prange(B * NH):
        b, h = bh // NH, bh % NH
        b_row = bias[b]
        for i in range(T):
            s_row, p_row = scores[b, h, i], probs[b, h, i]
            for j in range(Tk):
                p_row[j] = s_row[j] * scale + b_row[j]
            softmax_row(p_row)
            if drop:
                dropout_row(p_row, probs_d[b, h, i], seed, (bh * T + i) * Tk, p, keep_scale)


def softmax_dropout_forward(scores: np.ndarray, bias: np.ndarray, scale: float, p: float, seed: int | None,
                            probs: np.ndarray, probs_d: np.ndarray | None = None) -> None:
    """P = softmax(scores * scale + bias) (rows of all -inf give 0), P' = P * (u >= p) / (1 - p).

    Inputs:  scores (B, NH, T, T) (= q k^T); bias (B, T) additive key mask (0 / -inf); scale; p;
             seed: the counter_rng seed of the uniforms u (B, NH, T, T), or None for no dropout
    Outputs (written): probs (B, NH, T, T); probs_d same shape when seed is given
    """
    dt = scores.dtype
    B, NH, T, Tk = scores.shape
    scores = as_input("scores", scores, dt)
    bias = as_input("bias", bias, dt, (B, Tk))
    as_output("probs", probs, dt, scores.shape)
    drop = seed is not None
    if drop:
        as_output("probs_d", probs_d, dt, scores.shape)
    else:
        probs_d = probs  # unread
    _softmax_dropout_forward(scores, bias, dt.type(scale), as_seed(seed), np.float32(p), keep_scale(dt, p), drop, probs,
                             probs_d)


@njit(inline="always", cache=True, fastmath=FASTMATH)
def softmax_dropout_backward_row(ds_row, p_row, d_row, seed, at, p, keep_scale, drop, scale):
    """One row of the backward, in place: ds_row holds dP' and becomes dS = scale P (dP - sum(dP P)),
    dP = dP' * mask; d_row gets P' = P * mask (the forward's, bit-equal). `at`: the row's first flat
    position, where the forward's dropout pattern starts."""
    Tk = p_row.shape[0]
    c = p_row.dtype.type(0)
    if drop:
        for j in range(Tk):
            mk = keep_factor(seed, at + j, p, keep_scale)  # the forward's pattern again
            g = ds_row[j] * mk  # dropout backward
            ds_row[j] = g
            d_row[j] = p_row[j] * mk
            c += g * p_row[j]
    else:
        for j in range(Tk):
            c += ds_row[j] * p_row[j]
    for j in range(Tk):
        ds_row[j] = p_row[j] * (ds_row[j] - c) * scale


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_dropout_backward(d, probs, seed, p, keep_scale, drop, scale, probs_d):
    B, NH, T, Tk = probs.shape
    for bh in prange(B * NH):
        b, h = bh // NH, bh % NH
        for i in range(T):
            d_row = probs_d[b, h, i] if drop else probs_d[0, 0, 0]
            softmax_dropout_backward_row(d[b, h, i], probs[b, h, i], d_row, seed, (bh * T + i) * Tk, p, keep_scale,
                                         drop, scale)


def softmax_dropout_backward(dprobs_d: np.ndarray, probs: np.ndarray, seed: int | None, p: float, scale: float,
                             dscores: np.ndarray, probs_d: np.ndarray | None = None) -> None:
    """dS = scale * P * (dP - rowsum(dP * P)), dP = dP' * mask; also rewrites P' = P * mask into probs_d.
    seed, p: the forward's dropout (seed None: none), whose mask is computed again here.
    `scale` is folded in so that dq = dS k and dk = dS^T q need no further pass. dscores may be dprobs_d."""
    dt = probs.dtype
    dprobs_d = as_input("dprobs_d", dprobs_d, dt, probs.shape)
    probs = as_input("probs", probs, dt)
    in_place("dscores", as_output("dscores", dscores, dt, probs.shape), dprobs_d)  # dP' becomes dS there
    drop = seed is not None
    if drop:
        as_output("probs_d", probs_d, dt, probs.shape)
    else:
        probs_d = np.empty((1, 1, 1, 1), dt)
    _softmax_dropout_backward(dscores, probs, as_seed(seed), np.float32(p), keep_scale(dt, p), drop, dt.type(scale),
                              probs_d)


# ----------------------------------------------------------------------------- the core, with its matmuls

def attention_core_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray, p_drop: float,
                           rng: np.random.Generator | None = None, buffers: dict | None = None) -> tuple:
    """The twin of ops.attention.attention_core_forward, with the key mask given as bias (B, T) of 0 / -inf
    (ops.attention.key_mask_bias(...)[:, 0, 0]). Draws the same dropout seed from rng.

    Inputs:  q, k, v (B, NH, T, hs), any strides BLAS accepts; buffers: a dict from `attention_buffers`
    Returns: ctx (B, NH, T, hs), cache
    """
    B, NH, T, hs = q.shape
    buf = buffers if buffers is not None else attention_buffers(B, NH, T, hs, q.dtype)
    scale = 1.0 / np.sqrt(hs)
    bmm(q, k.swapaxes(-1, -2), buf["scores"])  # (B, NH, T, T)
    drop = p_drop > 0 and rng is not None
    seed = draw_seed(rng) if drop else None  # ops/dropout.py dropout_mask's draw
    softmax_dropout_forward(buf["scores"], bias, scale, p_drop, seed, buf["probs"], buf["probs_d"])
    bmm(buf["probs_d"] if drop else buf["probs"], v, buf["ctx"])  # (B, NH, T, hs)
    return buf["ctx"], (q, k, v, buf, p_drop, seed)


def attention_core_backward(dctx: np.ndarray, cache: tuple) -> tuple:
    """Returns: dq, dk, dv (B, NH, T, hs) (views of the buffers)."""
    q, k, v, buf, p_drop, seed = cache
    scale = 1.0 / np.sqrt(q.shape[-1])
    bmm(dctx, v.swapaxes(-1, -2), buf["scores"])  # dP' (B, NH, T, T), reusing the scores buffer
    softmax_dropout_backward(buf["scores"], buf["probs"], seed, p_drop, scale, buf["scores"], buf["probs_d"])
    bmm((buf["probs_d"] if seed is not None else buf["probs"]).swapaxes(-1, -2), dctx, buf["dv"])
    bmm(buf["scores"], k, buf["dq"])
    bmm(buf["scores"].swapaxes(-1, -2), q, buf["dk"])
    return buf["dq"], buf["dk"], buf["dv"]


def attention_buffers(B: int, NH: int, T: int, hs: int, dtype) -> dict:
    """Every array the core writes, allocated once and reused by every call with the same shapes."""
    sq, sv = (B, NH, T, T), (B, NH, T, hs)
    return {"scores": np.empty(sq, dtype), "probs": np.empty(sq, dtype), "probs_d": np.empty(sq, dtype),
            "ctx": np.empty(sv, dtype),
            "dq": np.empty(sv, dtype), "dk": np.empty(sv, dtype), "dv": np.empty(sv, dtype)}
