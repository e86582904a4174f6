"""Two small row kernels (the bias add of a linear layer, the column sums of a bias gradient) and the
per-thread partial buffers through which every kernel reduces over the rows of a batch.

Determinism: a sum over the rows of a batch is split into `num_chunks()` fixed row ranges; each range is
reduced by one prange iteration into its own row of a partial buffer, and the partials are added in order.
The result depends on the thread count, never on scheduling.
"""

import numba
import numpy as np
from numba import njit, prange

from .checks import as_input, as_output
from .vecmath import FASTMATH


def num_chunks() -> int:
    """How many per-thread partial buffers a batch reduction uses: the Numba thread count."""
    return numba.get_num_threads()


def per_thread(buf: np.ndarray | None, shape: tuple, dtype) -> np.ndarray:
    """A (num_chunks(), *shape) buffer of dtype, one row per chunk of a kernel's prange: `buf` when it
    is one (the workspace's, reused every step), else a new array."""
    full = (num_chunks(),) + tuple(shape)
    if buf is None or buf.shape != full or buf.dtype != dtype:
        buf = np.empty(full, dtype)
    return buf


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _add_bias(y, b):
    N, C = y.shape
    for i in prange(N):
        for j in range(C):
            y[i, j] += b[j]


def add_bias(y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y += b over rows, in place (the `+ b` of linear_forward).  y (N, C), b (C,)."""
    as_output("y", y, y.dtype, y.shape)
    _add_bias(y, as_input("b", b, y.dtype, (y.shape[1],)))
    return y


@njit(parallel=True, cache=True)
def _sum_rows(x, partial, out):
    N, C = x.shape
    P = partial.shape[0]
    for k in prange(P):
        lo, hi = k * N // P, (k + 1) * N // P
        for j in range(C):
            partial[k, j] = 0
        for i in range(lo, hi):
            for j in range(C):
                partial[k, j] += x[i, j]
    for j in range(C):
        out[j] = 0
    for k in range(P):
        for j in range(C):
            out[j] += partial[k, j]


def sum_rows(x: np.ndarray, out: np.ndarray, partial: np.ndarray | None = None) -> np.ndarray:
    """out = x.sum(axis=0) (a bias gradient), through per-thread partials.  x (N, C), out (C,)."""
    x = as_input("x", x, x.dtype)
    as_output("out", out, x.dtype, (x.shape[1],))
    _sum_rows(x, per_thread(partial, (x.shape[1],), x.dtype), out)
    return out
