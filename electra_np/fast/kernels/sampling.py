"""Gumbel sampling, fused: the twin of masking.gumbel_sample.

    gumbel_argmax(logits, t, seed, eps, out) = argmax(logits / t - log(-log(u + eps) + eps)) per row,
    u = counter_rng.uniforms(seed, logits.shape, logits.dtype), computed in the kernel

One pass per row in prange (the reference makes five full-size temporaries). float32 computes its logs
with the vectorizable Cephes log (vecmath.log_), within 2 ulp of np.log, so a sample can differ from the
reference's only where two candidates tie to within a few ulp; float64 uses libm's log.
"""

import numpy as np
from numba import njit, prange

from .checks import as_input, as_output, as_seed, float_dtype
from .rows import per_thread
from .uniforms import uniform_like
from .vecmath import FASTMATH, first_index, log_, row_max


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gumbel_argmax(logits, seed, inv_temp, eps, scratch, out):
    M, V = logits.shape
    P = scratch.shape[0]
    for ch in prange(P):  # rows in P fixed ranges, each with its own scratch row
        g = scratch[ch]
        for i in range(ch * M // P, (ch + 1) * M // P):
            row = logits[i]
            for j in range(V):
                u = uniform_like(seed, i * V + j, eps)  # in the logits' dtype (eps has it)
                g[j] = row[j] * inv_temp - log_(-log_(u + eps) + eps)
            out[i] = first_index(g, row_max(g))


def gumbel_argmax(logits: np.ndarray, temperature: float, seed: int, eps: float, out: np.ndarray,
                  scratch: np.ndarray | None = None) -> np.ndarray:
    """out (M,) int64 = argmax over V of logits / temperature + Gumbel noise, from the counter_rng
    uniforms of `seed` in the logits' dtype. eps: masking.GUMBEL_EPS. scratch (threads, V) of the logits'
    dtype holds a row's perturbed logits (made here when not given)."""
    dt = float_dtype("logits", logits)
    M, V = logits.shape
    logits = as_input("logits", logits, dt)
    _gumbel_argmax(logits, as_seed(seed), dt.type(1.0 / temperature), dt.type(eps), per_thread(scratch, (V,), dt),
                   as_output("out", out, np.int64, (M,)))
    return out
