"""The attention core over packed sequences, fast: the twin of ops/varlen_attention.py
`varlen_attention_core_forward` / `varlen_attention_core_backward`, one (sequence, head) pair at a time with
the products in single-matrix BLAS calls inside the kernel, as fused_attention.py does for the padded core.

    forward, per pair (b, h), L = cu[b+1] - cu[b]:
        S = q_b k_b^T (gemm, into the pair's (L, L) block of probs);  P = softmax(S s) in place;
        P' = P * mask (a per-thread scratch);  ctx_b = P' v_b (gemm)
    backward, per pair: dP' = dctx_b v_b^T (gemm, scratch);  dS = s P (dP - rowsum(dP P)), dP = dP' mask;
        dv_b = P'^T dctx_b, dq_b = dS k_b, dk_b = dS^T q_b (gemm)

q, k, v are read in place from the model's packed (N, 3H) buffer (row stride 3H), ctx is written into (N, H),
the gradients into (N, 3H): each pair owns its rows and its head's columns, so pairs never share an output.
probs holds every pair's P, flat: sequence b's (NH, L, L) block at offset pofs[b] = NH sum_{b' < b} L_b'^2.
No key mask: every key of a sequence is real. The dropout numbers are the padded (B, NH, T, T) tensor's, at
flat position ((b NH + h) T + i) T + j (T the padded length), so they equal the reference's.

The pairs go to num_chunks() chunks, chunk c taking pairs c, c + C, c + 2C, ... (sequences of one batch have
different lengths; the interleave spreads long and short ones). A chunk's scratch is its own; nothing is
summed across pairs, so the result never depends on scheduling. The row arithmetic is attention.py's row
helpers, as fused_attention.py's. Needs NumPy's OpenBLAS gemm: `available(dtype)`.
"""

import numpy as np
from numba import njit, prange

from . import blas
from .attention import dropout_row, softmax_dropout_backward_row, softmax_row
from .checks import NO_TRANS, ROW_MAJOR, TRANS, as_input, as_output, as_seed, float_dtype
from .rows import num_chunks
from .uniforms import keep_scale
from .vecmath import FASTMATH


def available(dtype) -> bool:
    return blas.gemm_pointers(dtype) is not None


def probs_offsets(cu_seqlens: np.ndarray, num_heads: int) -> np.ndarray:
    """pofs (B+1,): sequence b's (NH, L, L) probabilities start at pofs[b] of the flat probs; pofs[B] is its size."""
    lengths = np.diff(cu_seqlens)
    return np.concatenate([[0], np.cumsum(num_heads * lengths * lengths)]).astype(np.int64)


@njit(inline="always", cache=True)
def _addr(x, offset):
    """The address of x's flat element `offset` (x C-contiguous)."""
    return np.intp(x.ctypes.data) + offset * x.itemsize


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _forward(gemm, qkv, cu, pofs, NH, T, scale, seed, p, keep_scale, drop, probs, ctx, scratch):
    N, H = ctx.shape
    hs = H // NH
    B = cu.shape[0] - 1
    C = scratch.shape[0]
    one, zero = ctx.dtype.type(1.0), ctx.dtype.type(0.0)
    for ch in prange(C):
        pd = scratch[ch, 0]  # (Tmax * Tmax,): the pair's P' as an (L, L) matrix
        for bh in range(ch, B * NH, C):
            b, h = bh // NH, bh % NH
            s0, L = cu[b], cu[b + 1] - cu[b]
            off = pofs[b] + h * L * L  # the pair's (L, L) block of probs
            q, k, v = s0 * 3 * H + h * hs, s0 * 3 * H + H + h * hs, s0 * 3 * H + 2 * H + h * hs
            gemm(ROW_MAJOR, NO_TRANS, TRANS, L, L, hs, one, _addr(qkv, q), 3 * H, _addr(qkv, k), 3 * H,
                 zero, _addr(probs, off), L)  # S = q k^T
            for i in range(L):
                row = probs[off + i * L:off + (i + 1) * L]
                for j in range(L):
                    row[j] = row[j] * scale
                softmax_row(row)
                if drop:
                    dropout_row(row, pd[i * L:(i + 1) * L], seed, ((b * NH + h) * T + i) * T, p, keep_scale)
            src = _addr(pd, 0) if drop else _addr(probs, off)
            gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, L, hs, L, one, src, L, _addr(qkv, v), 3 * H,
                 zero, _addr(ctx, s0 * H + h * hs), H)  # ctx = P' v


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(gemm, dctx, qkv, cu, pofs, NH, T, scale, seed, p, keep_scale, drop, probs, dqkv, scratch):
    N, H = dctx.shape
    hs = H // NH
    B = cu.shape[0] - 1
    C = scratch.shape[0]
    one, zero = dctx.dtype.type(1.0), dctx.dtype.type(0.0)
    for ch in prange(C):
        ds, pd = scratch[ch, 0], scratch[ch, 1]  # (L, L) each: dP' then dS; P' recomputed
        for bh in range(ch, B * NH, C):
            b, h = bh // NH, bh % NH
            s0, L = cu[b], cu[b + 1] - cu[b]
            off = pofs[b] + h * L * L
            q, k, v = s0 * 3 * H + h * hs, s0 * 3 * H + H + h * hs, s0 * 3 * H + 2 * H + h * hs
            dc = s0 * H + h * hs
            gemm(ROW_MAJOR, NO_TRANS, TRANS, L, L, hs, one, _addr(dctx, dc), H, _addr(qkv, v), 3 * H,
                 zero, _addr(ds, 0), L)  # dP' = dctx v^T
            for i in range(L):
                softmax_dropout_backward_row(ds[i * L:(i + 1) * L], probs[off + i * L:off + (i + 1) * L],
                                             pd[i * L:(i + 1) * L], seed, ((b * NH + h) * T + i) * T, p, keep_scale,
                                             drop, scale)
            src = _addr(pd, 0) if drop else _addr(probs, off)
            gemm(ROW_MAJOR, TRANS, NO_TRANS, L, hs, L, one, src, L, _addr(dctx, dc), H,
                 zero, _addr(dqkv, v), 3 * H)  # dv = P'^T dctx
            gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, L, hs, L, one, _addr(ds, 0), L, _addr(qkv, k), 3 * H,
                 zero, _addr(dqkv, q), 3 * H)  # dq = dS k
            gemm(ROW_MAJOR, TRANS, NO_TRANS, L, hs, L, one, _addr(ds, 0), L, _addr(qkv, q), 3 * H,
                 zero, _addr(dqkv, k), 3 * H)  # dk = dS^T q


# ----------------------------------------------------------------------------- wrappers

def scratch_shape(T_max: int) -> tuple:
    """The per-thread scratch the two kernels take: (num_chunks(), 2, T_max^2), T_max the longest sequence."""
    return (num_chunks(), 2, T_max * T_max)


def _check(qkv, cu_seqlens, pofs, num_heads, T, probs, scratch):
    dt = float_dtype("qkv", qkv)
    N, H3 = qkv.shape
    if H3 % (3 * num_heads):
        raise ValueError(f"qkv has {H3} columns, not 3 x a multiple of num_heads={num_heads}")
    qkv = as_input("qkv", qkv, dt)
    cu = as_input("cu_seqlens", cu_seqlens, np.int64)
    lengths = np.diff(cu)
    if cu.ndim != 1 or cu.size < 2 or cu[0] != 0 or cu[-1] != N or not (lengths >= 1).all():
        raise ValueError(f"cu_seqlens must rise from 0 to N={N} in steps >= 1, got {cu.tolist()}")
    if T < lengths.max():
        raise ValueError(f"padded length T={T} is shorter than the longest sequence ({lengths.max()})")
    pofs = as_input("pofs", pofs, np.int64, cu.shape)
    as_output("probs", probs, dt, (int(pofs[-1]),))
    as_output("scratch", scratch, dt, (num_chunks(), 2, scratch.shape[2]))
    if scratch.shape[2] < lengths.max() ** 2:
        raise ValueError(f"scratch holds {scratch.shape[2]} entries per block, the longest sequence needs {lengths.max() ** 2}")
    return dt, qkv, cu, pofs


def _pointers(dt):
    ptrs = blas.gemm_pointers(dt)
    if ptrs is None:
        raise RuntimeError("varlen attention needs NumPy's OpenBLAS gemm (scipy-openblas)")
    return ptrs


def varlen_attention_forward(qkv: np.ndarray, cu_seqlens: np.ndarray, pofs: np.ndarray, num_heads: int, T: int,
                             p: float, seed: int | None, probs: np.ndarray, ctx: np.ndarray,
                             scratch: np.ndarray) -> np.ndarray:
    """ctx_b = dropout(softmax(q_b k_b^T / sqrt(hs))) v_b per sequence b, keeping P in probs (backward's input).

    Inputs:  qkv (N, 3H): q, k, v side by side (biases added); cu_seqlens (B+1,); pofs (B+1,) probs_offsets;
             num_heads NH; T: the padded length whose dropout numbers to use; p, seed: dropout (seed None: none);
             scratch (num_chunks(), 2, >= L_max^2)
    Outputs (written): probs (pofs[-1],); ctx (N, H)
    """
    dt, qkv, cu, pofs = _check(qkv, cu_seqlens, pofs, num_heads, T, probs, scratch)
    N, H = qkv.shape[0], qkv.shape[1] // 3
    as_output("ctx", ctx, dt, (N, H))
    gemm, set_threads = _pointers(dt)
    prev = set_threads(1)  # each kernel thread's gemm calls run on that thread
    try:
        _forward(gemm, qkv, cu, pofs, num_heads, T, dt.type(1.0 / np.sqrt(H // num_heads)), as_seed(seed),
                 np.float32(p), keep_scale(dt, p), seed is not None, probs, ctx, scratch)
    finally:
        set_threads(prev)
    return ctx


def varlen_attention_backward(dctx: np.ndarray, qkv: np.ndarray, cu_seqlens: np.ndarray, pofs: np.ndarray,
                              num_heads: int, T: int, p: float, seed: int | None, probs: np.ndarray, dqkv: np.ndarray,
                              scratch: np.ndarray) -> np.ndarray:
    """dq, dk, dv of varlen_attention_forward's ctx, side by side in dqkv (N, 3H), from dctx (N, H) and the
    forward's qkv, probs and dropout (the pattern computed again from seed)."""
    dt, qkv, cu, pofs = _check(qkv, cu_seqlens, pofs, num_heads, T, probs, scratch)
    N, H = qkv.shape[0], qkv.shape[1] // 3
    dctx = as_input("dctx", dctx, dt, (N, H))
    as_output("dqkv", dqkv, dt, (N, 3 * H))
    gemm, set_threads = _pointers(dt)
    prev = set_threads(1)
    try:
        _backward(gemm, dctx, qkv, cu, pofs, num_heads, T, dt.type(1.0 / np.sqrt(H // num_heads)), as_seed(seed),
                  np.float32(p), keep_scale(dt, p), seed is not None, probs, dqkv, scratch)
    finally:
        set_threads(prev)
    return dqkv
