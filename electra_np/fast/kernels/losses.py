"""The two ELECTRA losses, fast: twins of ops/losses.py.

Softmax cross-entropy over the gathered rows (M, V): forward stores only the per-row log-sum-exp (M,);
backward rewrites the logits buffer in place into dlogits = (exp(l - lse) - onehot) * dloss / M, so the
(M, V) matrix exists once, and sums dlogits over rows on the way (the output bias gradient). Rows run in
prange; the per-row losses are added in row order. The backward kernel reads and writes one array
(checks.in_place says why).
Binary cross-entropy: B x T values, one sequential pass (too small to split).
"""

import math

import numpy as np
from numba import njit, prange

from .checks import as_input, as_output, float_dtype, in_place
from .rows import per_thread
from .vecmath import FASTMATH, exp_, first_index, row_max

SUM_BLOCK = 512  # exp sums in the logits' dtype over blocks, then in float64: V is large


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_xent_forward(logits, labels, lse, row_loss, argmax):
    M, V = logits.shape
    for i in prange(M):
        row = logits[i]
        m = row_max(row)
        am = first_index(row, m)
        total = 0.0
        for lo in range(0, V, SUM_BLOCK):
            part = row.dtype.type(0)
            for j in range(lo, min(lo + SUM_BLOCK, V)):
                part += exp_(row[j] - m)
            total += part
        s = m + math.log(total)
        lse[i] = s
        row_loss[i] = s - row[labels[i]]
        argmax[i] = am


def softmax_xent_forward(logits: np.ndarray, labels: np.ndarray, lse: np.ndarray, row_loss: np.ndarray,
                         argmax: np.ndarray) -> np.ndarray:
    """loss = mean_m [logsumexp(logits_m) - logits_m[labels_m]] (0 when M = 0).

    Inputs:  logits (M, V), labels (M,) int64 in [0, V)
    Outputs: lse (M,) for backward, row_loss (M,) float64, argmax (M,) int64 (for the accuracy metric)
    Returns: loss (0-d array of the logits' dtype)
    """
    dt = float_dtype("logits", logits)
    M, V = logits.shape
    logits, labels = as_input("logits", logits, dt), as_input("labels", labels, np.int64, (M,))
    as_output("lse", lse, np.float64, (M,))
    as_output("row_loss", row_loss, np.float64, (M,))
    as_output("argmax", argmax, np.int64, (M,))
    _softmax_xent_forward(logits, labels, lse, row_loss, argmax)
    total = 0.0
    for x in row_loss:  # fixed order
        total += x
    return np.asarray(total / max(M, 1), dtype=dt)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _softmax_xent_backward(d, labels, lse, scale, partial, want_sum):
    M, V = d.shape
    P = partial.shape[0]
    dt = d.dtype.type
    for ch in prange(P):
        acc = partial[ch]
        if want_sum:
            for j in range(V):
                acc[j] = 0
        for i in range(ch * M // P, (ch + 1) * M // P):
            s = dt(lse[i])
            row = d[i]
            for j in range(V):
                row[j] = exp_(row[j] - s) * scale
            row[labels[i]] -= scale
            if want_sum:
                for j in range(V):
                    acc[j] += row[j]


def softmax_xent_backward(dloss: float, logits: np.ndarray, labels: np.ndarray, lse: np.ndarray, dlogits: np.ndarray,
                          dbias: np.ndarray | None = None, partial: np.ndarray | None = None) -> np.ndarray:
    """dlogits (M, V) = (softmax(logits) - onehot(labels)) * dloss / M, best in place (dlogits is logits;
    otherwise logits is copied into dlogits first). dbias (V,) = dlogits summed over rows, when given
    (per-thread partials, `partial` (threads, V) if given, added in a fixed order)."""
    dt = float_dtype("logits", logits)
    M, V = logits.shape
    logits = as_input("logits", logits, dt)
    in_place("dlogits", as_output("dlogits", dlogits, dt, (M, V)), logits)
    want_sum = dbias is not None
    partial = per_thread(partial, (V if want_sum else 1,), dt)  # unread without dbias
    _softmax_xent_backward(dlogits, as_input("labels", labels, np.int64, (M,)), as_input("lse", lse, np.float64, (M,)),
                           dt.type(dloss / dt.type(max(M, 1))), partial, want_sum)
    if want_sum:
        partial.sum(axis=0, out=as_output("dbias", dbias, dt, (V,)))
    return dlogits


@njit(cache=True)
def _bce_forward(logits, labels, weights):
    total, n = 0.0, 0.0
    B, T = logits.shape
    for b in range(B):
        for t in range(T):
            z = np.float64(logits[b, t])
            per = max(z, 0.0) + math.log1p(math.exp(-abs(z))) - labels[b, t] * z
            total += weights[b, t] * per
            n += weights[b, t]
    return total, n


def bce_forward(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple:
    """loss = sum(w * [log(1 + e^z) - y z]) / max(sum(w), 1).  logits (B, T); labels, weights (B, T) int64.
    Returns: loss (0-d array), n (the divisor, for backward)."""
    dt = float_dtype("logits", logits)
    logits = as_input("logits", logits, dt)
    total, n = _bce_forward(logits, as_input("labels", labels, np.int64, logits.shape),
                            as_input("weights", weights, np.int64, logits.shape))
    n = max(n, 1.0)
    return np.asarray(total / n, dtype=dt), n


@njit(cache=True)
def _bce_backward(logits, labels, weights, scale, dlogits):
    B, T = logits.shape
    dt = logits.dtype.type
    for b in range(B):
        for t in range(T):
            z = logits[b, t]
            e = math.exp(-abs(z))
            sig = dt(1.0) / (dt(1.0) + e) if z >= 0 else e / (dt(1.0) + e)
            dlogits[b, t] = (sig - labels[b, t]) * weights[b, t] * scale


def bce_backward(dloss: float, logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, n: float,
                 dlogits: np.ndarray) -> np.ndarray:
    """dlogits (B, T) = w (sigmoid(z) - y) dloss / n."""
    dt = float_dtype("logits", logits)
    logits = as_input("logits", logits, dt)
    _bce_backward(logits, as_input("labels", labels, np.int64, logits.shape),
                  as_input("weights", weights, np.int64, logits.shape), dt.type(dloss / dt.type(n)),
                  as_output("dlogits", dlogits, dt, logits.shape))
    return dlogits
