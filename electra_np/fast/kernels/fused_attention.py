"""The attention core, one (batch, head) pair at a time: the twin of ops/attention.py, like attention.py,
with the matrix products done by single-matrix BLAS calls inside the kernel instead of batched calls
around it.

    forward, per pair:  q, k, v += the qkv linear's bias (optional, in place);
                        S = q k^T (gemm, into probs[b, h], or a per-thread scratch in inference);
                        P = softmax(S s + bias) in place;
                        P' = P * mask (a per-thread scratch);  ctx = P' v (gemm)
    backward, per pair: dP' = dctx v^T (gemm, scratch);  dS = s P (dP - rowsum(dP P)), dP = dP' mask;
                        dv = P'^T dctx, dq = dS k, dk = dS^T q (gemm);  the qkv bias gradient's
                        per-thread partial += the column sums of dq, dk, dv (optional)

Why: the pair's S, P' and dS (T x T each) stay in the core's cache between the products and the
softmax, and each BLAS call is one thread's own, so the threads run independent pairs instead of
splitting every small product: faster than the batched calls around attention.py's kernels
(benchmarks/RESULTS.md, "Kept"). The wrapper sets OpenBLAS to one thread for the kernel's duration
(openblas_set_num_threads_local, which despite its name sets the process-wide count and returns the
previous one: set once around the kernel, since two threads restoring it would race).
The pairs go to num_chunks() fixed ranges, one scratch and one partial each, so the result never
depends on scheduling. Each entry's arithmetic is attention.py's, row for row (the row helpers are
shared), and the dropout pattern is the same counter_rng one at the same positions.

Used when blas.gemm_pointers(dtype) finds NumPy's OpenBLAS gemm (scipy-openblas, NumPy 2's wheels);
`available(dtype)` says so. Otherwise the model uses attention.py's batched path.
"""

import numpy as np
from numba import njit, prange

from . import blas
from .attention import dropout_row, softmax_dropout_backward_row, softmax_row
from .checks import (
    NO_TRANS,
    ROW_MAJOR,
    TRANS,
    as_blas_input,
    as_blas_output,
    as_input,
    as_output,
    as_seed,
    blas_readable,
    float_dtype,
    unread,
)
from .rows import num_chunks, per_thread
from .uniforms import keep_scale
from .vecmath import FASTMATH


def available(dtype) -> bool:
    return blas.gemm_pointers(dtype) is not None


@njit(inline="always", cache=True)
def _at(x, b, h):
    """The address of x[b, h, 0, 0]."""
    return np.intp(x.ctypes.data) + b * x.strides[0] + h * x.strides[1]


@njit(inline="always", cache=True)
def _ld(x):
    """The leading dimension of x[b, h] (its row stride in elements)."""
    return x.strides[2] // x.itemsize


@njit(inline="always", cache=True)
def _add_head_bias(x, b, h, bias):
    """x[b, h] += bias (hs,) on every row: the pair's share of the qkv linear's `+ b`."""
    for i in range(x.shape[2]):
        for d in range(x.shape[3]):
            x[b, h, i, d] += bias[d]


@njit(inline="always", cache=True)
def _sum_head_rows(x, b, h, out):
    """out (hs,) += x[b, h] summed over its rows: the pair's share of a bias gradient."""
    for i in range(x.shape[2]):
        for d in range(x.shape[3]):
            out[d] += x[b, h, i, d]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _forward(gemm, q, k, v, qkv_bias, has_bias, bias, scale, seed, p, keep_scale, drop, keep, probs, ctx, scratch):
    B, NH, T, hs = q.shape
    Tk = k.shape[2]
    C = scratch.shape[0]
    one, zero = ctx.dtype.type(1.0), ctx.dtype.type(0.0)
    for ch in prange(C):
        pd = scratch[ch, 0]  # (T, Tk): the pair's P'
        for bh in range(ch * B * NH // C, (ch + 1) * B * NH // C):
            b, h = bh // NH, bh % NH
            if has_bias:  # each pair owns its rows and columns of q, k, v: in place, no race
                _add_head_bias(q, b, h, qkv_bias[0, h])
                _add_head_bias(k, b, h, qkv_bias[1, h])
                _add_head_bias(v, b, h, qkv_bias[2, h])
            s = probs[b, h] if keep else scratch[ch, 1]  # (T, Tk): S, then P in place
            gemm(ROW_MAJOR, NO_TRANS, TRANS, T, Tk, hs, one, _at(q, b, h), _ld(q), _at(k, b, h), _ld(k),
                 zero, np.intp(s.ctypes.data), Tk)
            b_row = bias[b]
            for i in range(T):
                row = s[i]
                for j in range(Tk):
                    row[j] = row[j] * scale + b_row[j]
                softmax_row(row)
                if drop:
                    dropout_row(row, pd[i], seed, (bh * T + i) * Tk, p, keep_scale)
            src = pd if drop else s
            gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, T, hs, Tk, one, np.intp(src.ctypes.data), Tk, _at(v, b, h), _ld(v),
                 zero, _at(ctx, b, h), _ld(ctx))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _backward(gemm, dctx, q, k, v, probs, seed, p, keep_scale, drop, scale, dq, dk, dv, want_db, partial, scratch):
    B, NH, T, hs = q.shape
    Tk = k.shape[2]
    C = scratch.shape[0]
    one, zero = probs.dtype.type(1.0), probs.dtype.type(0.0)
    for ch in prange(C):
        ds, pd = scratch[ch, 0], scratch[ch, 1]  # (T, Tk): dP' then dS; P' recomputed
        if want_db:
            partial[ch] = 0
        for bh in range(ch * B * NH // C, (ch + 1) * B * NH // C):
            b, h = bh // NH, bh % NH
            P = probs[b, h]
            gemm(ROW_MAJOR, NO_TRANS, TRANS, T, Tk, hs, one, _at(dctx, b, h), _ld(dctx), _at(v, b, h), _ld(v),
                 zero, np.intp(ds.ctypes.data), Tk)  # dP' = dctx v^T
            for i in range(T):
                softmax_dropout_backward_row(ds[i], P[i], pd[i], seed, (bh * T + i) * Tk, p, keep_scale, drop, scale)
            src = pd if drop else P
            gemm(ROW_MAJOR, TRANS, NO_TRANS, Tk, hs, T, one, np.intp(src.ctypes.data), Tk, _at(dctx, b, h), _ld(dctx),
                 zero, _at(dv, b, h), _ld(dv))  # dv = P'^T dctx
            gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, T, hs, Tk, one, np.intp(ds.ctypes.data), Tk, _at(k, b, h), _ld(k),
                 zero, _at(dq, b, h), _ld(dq))  # dq = dS k
            gemm(ROW_MAJOR, TRANS, NO_TRANS, Tk, hs, T, one, np.intp(ds.ctypes.data), Tk, _at(q, b, h), _ld(q),
                 zero, _at(dk, b, h), _ld(dk))  # dk = dS^T q
            if want_db:  # the qkv bias gradient, from the pair's blocks while they are in cache
                _sum_head_rows(dq, b, h, partial[ch, 0, h])
                _sum_head_rows(dk, b, h, partial[ch, 1, h])
                _sum_head_rows(dv, b, h, partial[ch, 2, h])


# ----------------------------------------------------------------------------- wrappers

def scratch_shape(T: int, Tk: int | None = None) -> tuple:
    """The per-thread scratch the two kernels take: (num_chunks(), 2, T, Tk)."""
    return (num_chunks(), 2, T, T if Tk is None else Tk)


def _scratch(scratch, T, Tk, dt):
    scratch = per_thread(scratch, scratch_shape(T, Tk)[1:], dt)
    return as_output("scratch", scratch, dt, scratch.shape)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray, scale: float, p: float,
                      seed: int | None, probs: np.ndarray | None, ctx: np.ndarray, scratch: np.ndarray | None = None,
                      qkv_bias: np.ndarray | None = None) -> np.ndarray:
    """ctx = dropout(softmax(q k^T scale + bias)) v, keeping P in probs (the backward's input).
    probs=None keeps nothing (inference): each pair's P stays in the thread's scratch.

    Inputs:  q (B, NH, T, hs), k, v (B, NH, Tk, hs): any views BLAS reads (else copied);
             bias (B, Tk) 0 / -inf; scale; p, seed: dropout (seed None: none);
             qkv_bias (3, NH, hs), optional: the q, k, v linears' biases, added to q, k, v in place first
             (the model's `+ b`, fused; q, k, v must then be views BLAS reads, as the model's are)
    Outputs (written): probs (B, NH, T, Tk) C-contiguous, or None; ctx (B, NH, T, hs), a view (the model's (N, H))
    """
    dt = q.dtype
    gemm, set_threads = _pointers(q)
    B, NH, T, hs = q.shape
    Tk = k.shape[2]
    has_bias = qkv_bias is not None
    if has_bias:
        qkv_bias = as_input("qkv_bias", qkv_bias, dt, (3, NH, hs))
        for name, x in (("q", q), ("k", k), ("v", v)):
            if not (isinstance(x, np.ndarray) and blas_readable(x) and x.flags.writeable):
                raise ValueError(f"with qkv_bias, {name} is updated in place and must be a writeable view "
                                 "with unit stride along its last axis")
    else:
        qkv_bias = unread(dt, 3)
    q = as_blas_input("q", q, dt, (B, NH, T, hs))
    k, v = as_blas_input("k", k, dt, (B, NH, Tk, hs)), as_blas_input("v", v, dt, (B, NH, Tk, hs))
    bias = as_input("bias", bias, dt, (B, Tk))
    keep = probs is not None
    if keep:
        as_output("probs", probs, dt, (B, NH, T, Tk))
    else:
        probs = unread(dt, 4)
    as_blas_output("ctx", ctx, dt, (B, NH, T, hs))
    drop = seed is not None
    scratch = _scratch(scratch, T, Tk, dt)
    prev = set_threads(1)  # each kernel thread's gemm calls run on that thread
    try:
        _forward(gemm, q, k, v, qkv_bias, has_bias, bias, dt.type(scale), as_seed(seed), np.float32(p),
                 keep_scale(dt, p), drop, keep, probs, ctx, scratch)
    finally:
        set_threads(prev)
    return ctx


def attention_backward(dctx: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, probs: np.ndarray, scale: float,
                       p: float, seed: int | None, dq: np.ndarray, dk: np.ndarray, dv: np.ndarray,
                       scratch: np.ndarray | None = None, dbias: np.ndarray | None = None,
                       partial: np.ndarray | None = None) -> tuple:
    """dq, dk, dv of attention_forward's ctx, from dctx and the forward's probs, scale and dropout (the
    pattern computed again from seed). Outputs are views (the model's (N, 3H) gradient buffer).
    dbias (3, NH, hs), optional: written with the column sums of dq, dk, dv (the qkv bias gradient),
    through per-thread partials (num_chunks(), 3, NH, hs) (made here unless given), added in order."""
    dt = q.dtype
    gemm, set_threads = _pointers(q)
    B, NH, T, hs = q.shape
    Tk = k.shape[2]
    dctx, q = as_blas_input("dctx", dctx, dt, (B, NH, T, hs)), as_blas_input("q", q, dt, (B, NH, T, hs))
    k, v = as_blas_input("k", k, dt, (B, NH, Tk, hs)), as_blas_input("v", v, dt, (B, NH, Tk, hs))
    probs = as_input("probs", probs, dt, (B, NH, T, Tk))
    dq = as_blas_output("dq", dq, dt, (B, NH, T, hs))
    dk, dv = as_blas_output("dk", dk, dt, (B, NH, Tk, hs)), as_blas_output("dv", dv, dt, (B, NH, Tk, hs))
    drop = seed is not None
    want_db = dbias is not None
    if want_db:
        as_output("dbias", dbias, dt, (3, NH, hs))
    partial = per_thread(partial, (3, NH, hs), dt)
    scratch = _scratch(scratch, T, Tk, dt)
    prev = set_threads(1)
    try:
        _backward(gemm, dctx, q, k, v, probs, as_seed(seed), np.float32(p), keep_scale(dt, p), drop,
                  dt.type(scale), dq, dk, dv, want_db, partial, scratch)
    finally:
        set_threads(prev)
    if want_db:
        partial.sum(axis=0, out=dbias)  # partials added in a fixed order
    return dq, dk, dv


def _pointers(q):
    dt = float_dtype("q", q)
    ptrs = blas.gemm_pointers(dt)
    if ptrs is None:
        raise RuntimeError("fused attention needs NumPy's OpenBLAS gemm (scipy-openblas); use kernels.attention")
    return ptrs
