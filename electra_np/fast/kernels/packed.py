"""Row kernels for packed batches (the N real tokens of a padded (B, T) batch, unpadded.py): the twins of
unpadded.py's packed_embeddings_forward / backward and packed_dropout_forward.

A packed row n is the padded batch's row rows[n] = b T + t (Packing.indices), and dropout draws the padded
tensor's numbers there: at (n, c) the uniform at flat position rows[n] C + c. That is the one difference
from embeddings.py and the fused dropout of layernorm.py (whose row n is flat row n), so the packed encoder
applies dropout with `bias_dropout_rows` / `dropout_rows` and calls layernorm.py's kernels without theirs.

    packed_embeddings_forward:  s = W_word[ids] + W_type[types] + W_pos[positions];  x = dropout(LayerNorm(s))
    packed_embeddings_backward: LayerNorm backward of dx * mask, then the scatter-adds (embeddings.py's rule:
                                column blocks in prange, every row in order, repeated ids accumulate)
    bias_dropout_rows:          y = (y + b) * mask, in place        dropout_rows: out = dy * mask
"""

import numpy as np
from numba import njit, prange

from .checks import as_input, as_output, as_seed, float_dtype, unread
from .embeddings import COL_BLOCK
from .layernorm import normalize_row, normalize_row_backward
from .rows import per_thread
from .uniforms import keep_factor, keep_scale
from .vecmath import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _bias_dropout_rows(x, out, b, has_b, rows, seed, p, keep_scale):
    N, C = x.shape
    for i in prange(N):
        at = rows[i] * C
        for j in range(C):
            a = x[i, j] + b[j] if has_b else x[i, j]
            out[i, j] = a * keep_factor(seed, at + j, p, keep_scale)


def bias_dropout_rows(y: np.ndarray, b: np.ndarray | None, rows: np.ndarray, seed: int, p: float) -> np.ndarray:
    """In place: y (N, C) = (y + b) * mask, the mask at the padded flat positions rows[n] C + c (b None: no bias)."""
    dt = float_dtype("y", y)
    N, C = y.shape
    as_output("y", y, dt, (N, C))
    has_b = b is not None
    b = as_input("b", b, dt, (C,)) if has_b else unread(dt, 1)
    _bias_dropout_rows(y, y, b, has_b, as_input("rows", rows, np.int64, (N,)), as_seed(seed), np.float32(p),
                       keep_scale(dt, p))
    return y


def dropout_rows(dy: np.ndarray, rows: np.ndarray, seed: int, p: float, out: np.ndarray) -> np.ndarray:
    """out (N, C) = dy * mask (dropout's backward), the mask of bias_dropout_rows."""
    dt = float_dtype("dy", dy)
    N, C = dy.shape
    _bias_dropout_rows(as_input("dy", dy, dt), as_output("out", out, dt, (N, C)), unread(dt, 1), False,
                       as_input("rows", rows, np.int64, (N,)), as_seed(seed), np.float32(p), keep_scale(dt, p))
    return out


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _packed_embeddings_forward(ids, types, positions, rows, word, pos, typ, w, beta, eps, seed, p, keep_scale, drop, out,
                               xhat, rstd):
    N, E = xhat.shape
    for n in prange(N):
        xr, wr, yr, pr = xhat[n], word[ids[n]], typ[types[n]], pos[positions[n]]
        for j in range(E):
            xr[j] = wr[j] + yr[j] + pr[j]
        rstd[n] = normalize_row(xr, eps)
        for j in range(E):
            y = xr[j] * w[j] + beta[j]
            if drop:
                y = y * keep_factor(seed, rows[n] * E + j, p, keep_scale)
            out[n, j] = y


def packed_embeddings_forward(ids: np.ndarray, types: np.ndarray, positions: np.ndarray, rows: np.ndarray,
                              word: np.ndarray, pos: np.ndarray, typ: np.ndarray, w: np.ndarray, beta: np.ndarray,
                              eps: float, out: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, seed: int | None = None,
                              p: float = 0.0) -> None:
    """Inputs:  ids, types, positions, rows (N,) int64 (rows: each token's padded flat row, for dropout);
             word (V, E), pos (P, E), typ (Y, E); w, beta (E,) LayerNorm; eps; seed (None: no dropout), p
    Outputs: out (N, E), xhat (N, E), rstd (N,)
    """
    dt = float_dtype("word", word)
    N, E = ids.shape[0], word.shape[1]
    ids, types = as_input("ids", ids, np.int64, (N,)), as_input("types", types, np.int64, (N,))
    positions, rows = as_input("positions", positions, np.int64, (N,)), as_input("rows", rows, np.int64, (N,))
    word, pos, typ = as_input("word", word, dt), as_input("pos", pos, dt), as_input("typ", typ, dt)
    if N and positions.max() >= pos.shape[0]:
        raise ValueError(f"position {positions.max()} exceeds the {pos.shape[0]} position embeddings")
    w, beta = as_input("w", w, dt, (E,)), as_input("beta", beta, dt, (E,))
    for name, a, shape in (("out", out, (N, E)), ("xhat", xhat, (N, E)), ("rstd", rstd, (N,))):
        as_output(name, a, dt, shape)
    _packed_embeddings_forward(ids, types, positions, rows, word, pos, typ, w, beta, dt.type(eps), as_seed(seed),
                               np.float32(p), keep_scale(dt, p), seed is not None, out, xhat, rstd)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _packed_ln_backward(dx, xhat, rstd, w, rows, seed, p, keep_scale, drop, ds, partial):
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
                    d = d * keep_factor(seed, rows[i] * E + j, p, keep_scale)
                dsr[j] = d
            normalize_row_backward(dsr, xhat[i], w, rstd[i], pw, pb)


@njit(parallel=True, cache=True)
def _packed_scatter(ds, ids, types, positions, dword, dpos, dtyp):
    N, E = ds.shape
    nb = (E + COL_BLOCK - 1) // COL_BLOCK
    for blk in prange(nb):
        lo, hi = blk * COL_BLOCK, min(E, (blk + 1) * COL_BLOCK)
        for n in range(N):
            wi, yi, t = ids[n], types[n], positions[n]
            for j in range(lo, hi):
                g = ds[n, j]
                dword[wi, j] += g
                dtyp[yi, j] += g
                dpos[t, j] += g


def packed_embeddings_backward(dx: np.ndarray, ids: np.ndarray, types: np.ndarray, positions: np.ndarray,
                               rows: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, w: np.ndarray, dword: np.ndarray,
                               dpos: np.ndarray, dtyp: np.ndarray, dw: np.ndarray, dbeta: np.ndarray, ds: np.ndarray,
                               seed: int | None = None, p: float = 0.0, partial: np.ndarray | None = None) -> None:
    """Inputs:  dx (N, E); ids, types, positions, rows (N,); xhat, rstd, w, seed, p: the forward's
    Outputs: dword (V, E), dpos (P, E), dtyp (Y, E) ADDED INTO; dw, dbeta (E,) overwritten; ds (N, E) scratch
    """
    dt = float_dtype("xhat", xhat)
    N, E = xhat.shape
    dx, xhat, rstd = as_input("dx", dx, dt, (N, E)), as_input("xhat", xhat, dt), as_input("rstd", rstd, dt, (N,))
    ids, types = as_input("ids", ids, np.int64, (N,)), as_input("types", types, np.int64, (N,))
    positions, rows = as_input("positions", positions, np.int64, (N,)), as_input("rows", rows, np.int64, (N,))
    as_output("ds", ds, dt, (N, E))
    for name, a in (("dword", dword), ("dpos", dpos), ("dtyp", dtyp)):
        as_output(name, a, dt, (a.shape[0], E))
    partial = per_thread(partial, (2, E), dt)
    _packed_ln_backward(dx, xhat, rstd, as_input("w", w, dt, (E,)), rows, as_seed(seed), np.float32(p), keep_scale(dt, p),
                        seed is not None, ds, partial)
    sums = partial.sum(axis=0)
    as_output("dw", dw, dt, (E,))[...] = sums[0]
    as_output("dbeta", dbeta, dt, (E,))[...] = sums[1]
    _packed_scatter(ds, ids, types, positions, dword, dpos, dtyp)
