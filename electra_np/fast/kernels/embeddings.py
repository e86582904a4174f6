"""Embeddings, fast: the twin of ops/embeddings.py without its projection (a BLAS matmul in the model).

    forward:  s = W_word[ids] + W_type[types] + W_pos[t];  x = dropout(LayerNorm(s))      (prange over tokens)
    backward: dln = dx * mask;  ds = LayerNorm backward (dw, db through per-thread partials);
              dW_word[ids] += ds, dW_type[types] += ds, dW_pos[t] += ds    (scatter-add)

The scatter-add runs in prange over blocks of embedding columns: each column block is owned by one
iteration, which walks every token in order, so repeated ids accumulate (never `dW[ids] = ...`) and the
result does not depend on timing. It adds into the given gradient buffers: the generator and the
discriminator share these tables, and the word table also receives the tied output projection's gradient.
"""

import numpy as np
from numba import njit, prange

from .checks import as_input, as_output, as_seed, float_dtype
from .layernorm import normalize_row, normalize_row_backward
from .rows import per_thread
from .uniforms import keep_factor, keep_scale
from .vecmath import FASTMATH

COL_BLOCK = 16


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _embeddings_forward(ids, types, word, pos, typ, w, beta, eps, seed, p, keep_scale, drop, out, xhat, rstd):
    B, T = ids.shape
    E = word.shape[1]
    for n in prange(B * T):
        b, t = n // T, n % T
        xr, wr, yr, pr = xhat[n], word[ids[b, t]], typ[types[b, t]], pos[t]
        for j in range(E):
            xr[j] = wr[j] + yr[j] + pr[j]
        rstd[n] = normalize_row(xr, eps)
        for j in range(E):
            y = xr[j] * w[j] + beta[j]
            if drop:
                y = y * keep_factor(seed, n * E + j, p, keep_scale)
            out[n, j] = y


def embeddings_forward(ids: np.ndarray, types: np.ndarray, word: np.ndarray, pos: np.ndarray, typ: np.ndarray,
                       w: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray, xhat: np.ndarray, rstd: np.ndarray,
                       seed: int | None = None, p: float = 0.0) -> None:
    """Inputs:  ids, types (B, T) int64; word (V, E), pos (P, E), typ (Y, E); w, beta (E,) LayerNorm; eps;
             seed: the dropout uniforms' counter_rng seed, or None (no dropout), p
    Outputs: out (B*T, E), xhat (B*T, E), rstd (B*T,); the dropout pattern is not stored (backward takes the seed)
    """
    dt = float_dtype("word", word)
    B, T = ids.shape
    E = word.shape[1]
    ids, types = as_input("ids", ids, np.int64), as_input("types", types, np.int64, (B, T))
    word, pos, typ = as_input("word", word, dt), as_input("pos", pos, dt), as_input("typ", typ, dt)
    if T > pos.shape[0]:
        raise ValueError(f"sequence length {T} exceeds the {pos.shape[0]} position embeddings")
    w, beta = as_input("w", w, dt, (E,)), as_input("beta", beta, dt, (E,))
    for name, a, shape in (("out", out, (B * T, E)), ("xhat", xhat, (B * T, E)), ("rstd", rstd, (B * T,))):
        as_output(name, a, dt, shape)
    _embeddings_forward(ids, types, word, pos, typ, w, beta, dt.type(eps), as_seed(seed), np.float32(p),
                        keep_scale(dt, p), seed is not None, out, xhat, rstd)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _embeddings_ln_backward(dx, xhat, rstd, w, seed, p, keep_scale, drop, ds, partial):
    N, E = xhat.shape
    P = partial.shape[0]
    for ch in prange(P):
        pw, pb = partial[ch, 0], partial[ch, 1]
        for j in range(E):
            pw[j] = 0
            pb[j] = 0
        for i in range(ch * N // P, (ch + 1) * N // P):
            dsr = ds[i]
            for j in range(E):
                d = dx[i, j]
                if drop:
                    d = d * keep_factor(seed, i * E + j, p, keep_scale)
                dsr[j] = d
            normalize_row_backward(dsr, xhat[i], w, rstd[i], pw, pb)


@njit(parallel=True, cache=True)
def _embeddings_scatter(ds, ids, types, dword, dpos, dtyp):
    B, T = ids.shape
    E = ds.shape[1]
    nb = (E + COL_BLOCK - 1) // COL_BLOCK
    for blk in prange(nb):
        lo, hi = blk * COL_BLOCK, min(E, (blk + 1) * COL_BLOCK)
        for n in range(B * T):
            b, t = n // T, n % T
            wi, yi = ids[b, t], types[b, t]
            for j in range(lo, hi):
                g = ds[n, j]
                dword[wi, j] += g
                dtyp[yi, j] += g
                dpos[t, j] += g


def embeddings_backward(dx: np.ndarray, ids: np.ndarray, types: np.ndarray, xhat: np.ndarray, rstd: np.ndarray,
                        w: np.ndarray, dword: np.ndarray, dpos: np.ndarray, dtyp: np.ndarray, dw: np.ndarray,
                        dbeta: np.ndarray, ds: np.ndarray, seed: int | None = None, p: float = 0.0,
                        partial: np.ndarray | None = None) -> None:
    """Inputs:  dx (B*T, E); ids, types (B, T); xhat, rstd, w, seed, p: the forward's (seed None: no dropout)
    Outputs: dword (V, E), dpos (P, E), dtyp (Y, E) ADDED INTO; dw, dbeta (E,) overwritten; ds (B*T, E) scratch
    """
    dt = float_dtype("xhat", xhat)
    N, E = xhat.shape
    dx, xhat, rstd = as_input("dx", dx, dt, (N, E)), as_input("xhat", xhat, dt), as_input("rstd", rstd, dt, (N,))
    ids, types = as_input("ids", ids, np.int64), as_input("types", types, np.int64, ids.shape)
    as_output("ds", ds, dt, (N, E))
    for name, a in (("dword", dword), ("dpos", dpos), ("dtyp", dtyp)):
        as_output(name, a, dt, (a.shape[0], E))
    partial = per_thread(partial, (2, E), dt)
    _embeddings_ln_backward(dx, xhat, rstd, as_input("w", w, dt, (E,)), as_seed(seed), np.float32(p), keep_scale(dt, p),
                            seed is not None, ds, partial)
    sums = partial.sum(axis=0)
    as_output("dw", dw, dt, (E,))[...] = sums[0]
    as_output("dbeta", dbeta, dt, (E,))[...] = sums[1]
    _embeddings_scatter(ds, ids, types, dword, dpos, dtyp)
