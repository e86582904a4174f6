"""Batched matrix products for the attention core, in BLAS.

np.matmul on stacked (B, NH, T, hs) arrays calls one small gemm per (batch, head) pair from a single
thread, with OpenBLAS's per-call threading on top: far below what BLAS reaches on large products.
OpenBLAS (0.3.30+) also exports `cblas_?gemm_batch_strided`, which runs a whole batch of equal-shape
products and spreads it over its threads: one call per head, batched over B, reads the head views of the
model's (B, T, 3H) buffers in place, much faster (benchmarks/RESULTS.md, "Kept"). It is used
by default; ELECTRA_NP_BATCHED_BLAS=0 (read at import) makes `bmm` plain np.matmul: the same products
either way. (Under Numba's OpenMP layer and OpenBLAS's default idle spin the batched calls slowed every
later BLAS call; with the workqueue layer and the short spin that fast/runtime.py sets they do not.)

`gemm_pointers(dtype)` hands the single-matrix cblas_?gemm to Numba kernels as a function-pointer
argument (kernels/fused_attention.py calls it per (batch, head) pair from its own threads, with OpenBLAS
set to one thread through `openblas_set_num_threads_local` meanwhile). An argument, not a global, so that
the compiled kernel is cached without the library's load address baked in. ELECTRA_NP_FUSED_ATTENTION=0
(read at import) withholds it.

The batched call: only for float32 and only above SMALL_MATRIX_LIMIT = m n k: OpenBLAS 0.3.31's batched
call crashes (segmentation fault) when each product is small enough for its "small matrix" kernels
(m n k <= 100^3, found by bisection here, with both the SkylakeX and the Haswell kernels). Below the
limit, np.matmul. (The single-matrix gemm has no such limit.)
"""

import ctypes
import glob
import os

import numpy as np

from .checks import NO_TRANS, ROW_MAJOR, blas_operand

SMALL_MATRIX_LIMIT = 100 ** 3


def _libraries():
    """NumPy's own OpenBLAS (the numpy.libs folder of its wheels), as ctypes libraries."""
    libdir = os.path.join(os.path.dirname(np.__file__) + ".libs")
    for path in glob.glob(os.path.join(libdir, "*openblas*")):
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _load():
    if os.environ.get("ELECTRA_NP_BATCHED_BLAS", "1") == "0":
        return {}
    funcs = {}
    for lib in _libraries():
        for dtype, name, real in ((np.float32, "cblas_sgemm_batch_strided", ctypes.c_float),):
            f = getattr(lib, name, None)
            if f is None:
                continue
            Int, L, P = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p  # enums, sizes, pointers
            f.argtypes = [Int, Int, Int, L, L, L, real, P, L, L, P, L, L, real, P, L, L, L]
            f.restype = None
            funcs[np.dtype(dtype)] = f
    return funcs


_GEMM = _load()


def _load_single():
    """{dtype: (gemm, set_num_threads_local)} from the 64-bit-integer cblas of scipy-openblas (NumPy 2's
    wheels): gemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), pointers as
    integers. Empty when absent or when ELECTRA_NP_FUSED_ATTENTION=0."""
    if os.environ.get("ELECTRA_NP_FUSED_ATTENTION", "1") == "0":
        return {}
    Int, L, P = ctypes.c_int, ctypes.c_int64, ctypes.c_ssize_t
    for lib in _libraries():
        local = getattr(lib, "openblas_set_num_threads_local", None)
        if local is None:
            continue
        local.argtypes, local.restype = [Int], Int
        funcs = {}
        for dtype, name, real in ((np.float32, "scipy_cblas_sgemm64_", ctypes.c_float),
                                  (np.float64, "scipy_cblas_dgemm64_", ctypes.c_double)):
            f = getattr(lib, name, None)
            if f is not None:
                f.argtypes, f.restype = [Int, Int, Int, L, L, L, real, P, L, P, L, real, P, L], None
                funcs[np.dtype(dtype)] = (f, local)
        if funcs:
            return funcs
    return {}


_SINGLE = _load_single()


def gemm_pointers(dtype) -> tuple | None:
    """(gemm, set_num_threads_local) for dtype's cblas gemm, or None when this NumPy's BLAS lacks them."""
    return _SINGLE.get(np.dtype(dtype))


def available(dtype) -> bool:
    return np.dtype(dtype) in _GEMM


def uses_batched_blas(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Whether bmm(a, b, out) takes the batched BLAS call (else np.matmul)."""
    ta, _ = blas_operand(a)
    tb, _ = blas_operand(b)
    tc, _ = blas_operand(out)
    return (out.dtype in _GEMM and a.dtype == b.dtype == out.dtype and ta is not None and tb is not None
            and tc == NO_TRANS and a.ndim == b.ndim == out.ndim == 4 and out.flags.writeable
            and a.shape[-2] * a.shape[-1] * b.shape[-1] > SMALL_MATRIX_LIMIT)


def bmm(a: np.ndarray, b: np.ndarray, out: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """out[i, j] = alpha * a[i, j] @ b[i, j] for 4-D stacks (B, NH, m, k) @ (B, NH, k, n) -> (B, NH, m, n).

    Any view works: the batched BLAS call is used when every operand's last two axes are BLAS-readable and
    its first two axes are plain strides (the head views of the model's buffers are); otherwise np.matmul.
    """
    if not uses_batched_blas(a, b, out):
        np.matmul(a, b, out=out)
        if alpha != 1.0:
            out *= out.dtype.type(alpha)
        return out
    f = _GEMM[out.dtype]
    (ta, lda), (tb, ldb), (_, ldc) = blas_operand(a), blas_operand(b), blas_operand(out)
    B, NH, m, k = a.shape
    n = b.shape[-1]
    if b.shape != (B, NH, k, n) or out.shape != (B, NH, m, n):
        raise ValueError(f"bmm shapes do not match: {a.shape} @ {b.shape} -> {out.shape}")
    item = out.itemsize
    pa, pb, pc = a.ctypes.data, b.ctypes.data, out.ctypes.data
    for h in range(NH):
        f(ROW_MAJOR, ta, tb, m, n, k, alpha, pa + h * a.strides[1], lda, a.strides[0] // item,
          pb + h * b.strides[1], ldb, b.strides[0] // item, 0.0, pc + h * out.strides[1], ldc,
          out.strides[0] // item, B)
    return out
