"""Gumbel sampling, fused: the twin of masking.gumbel_sample for uniforms already drawn.

    gumbel_argmax(logits, t, u, eps, out) = argmax(logits / t - log(-log(u + eps) + eps)) per row

One pass per row in prange (the reference makes four full-size temporaries). float32 computes its logs
with the vectorizable Cephes log (common.log_), within 2 ulp of np.log, so a sample can differ from the
reference's only where two candidates tie to within a few ulp; float64 uses libm's log.
"""

import numpy as np
from numba import njit, prange

from .common import FASTMATH, as_input, as_output, first_index, float_dtype, log_, row_max


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gumbel_argmax(logits, u, inv_temp, eps, out):
    M, V = logits.shape
    for i in prange(M):
        row, g = logits[i], u[i]
        for j in range(V):
            g[j] = row[j] * inv_temp - log_(-log_(g[j] + eps) + eps)
        out[i] = first_index(g, row_max(g))


def gumbel_argmax(logits, temperature, u, eps, out):
    """out (M,) int64 = argmax over V of logits / temperature + Gumbel noise from the uniforms u (M, V)
    (logits' dtype), which are overwritten with the perturbed logits. eps: masking.GUMBEL_EPS."""
    dt = float_dtype("logits", logits)
    M, V = logits.shape
    logits = as_input("logits", logits, dt)
    as_output("u", u, dt, (M, V))
    _gumbel_argmax(logits, u, dt.type(1.0 / temperature), dt.type(eps), as_output("out", out, np.int64, (M,)))
    return out
