"""The checks every kernel's thin wrapper makes before it calls the `@njit` kernel: dtypes, shapes,
contiguity, in-place buffers, seeds, stand-ins for absent optional arrays, and whether BLAS can read a
stacked matrix view in place (blas.py's batched calls, fused_attention.py's per-pair calls).

A kernel trusts its arguments (no bounds checks in compiled code), so everything is checked here, with an
error that names the argument.
"""

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enum values (order, transpose flags)


def as_input(name: str, a, dtype, shape: tuple | None = None) -> np.ndarray:
    """An input array of exactly `dtype` (refused otherwise: a silent cast would hide a mixed-precision
    bug), converted to C order if it is not (a copy, never a wrong read)."""
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype != dtype:
        raise ValueError(f"{name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def as_output(name: str, a, dtype, shape: tuple) -> np.ndarray:
    """An output buffer must already be what the kernel writes: right dtype and shape, C-contiguous, writeable."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != tuple(shape):
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"output {name} must be a {np.dtype(dtype)} array of shape {tuple(shape)}, got {got}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"output {name} must be a C-contiguous writeable array")
    return a


def in_place(name: str, out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """The buffer a one-array kernel rewrites: `out`, holding `src` (copied in unless out is src).

    Why kernels take one array to read and write, not an input and an output: given two, LLVM cannot
    know that they do not overlap, so it guards its vectorized loop with a runtime overlap check, and
    when they are the same buffer (the fast step's case) it runs the slower scalar fallback
    (benchmarks/RESULTS.md, "Kept")."""
    if out.ctypes.data != src.ctypes.data:
        if np.shares_memory(out, src):
            raise ValueError(f"{name} overlaps its input without being the same buffer")
        np.copyto(out, src)
    return out


def as_seed(seed) -> np.uint64:
    """A counter_rng seed as the kernels take it (np.uint64); an unused placeholder for None."""
    if seed is None:
        return np.uint64(0)
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    return np.uint64(seed)


def float_dtype(name: str, a: np.ndarray) -> np.dtype:
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    return a.dtype


_UNREAD = {}


def unread(dtype, ndim: int) -> np.ndarray:
    """A stand-in for an optional array argument the kernel will not touch (its flag says absent): one
    zero-filled 1-element array per (dtype, ndim), made once, so a call without the option allocates nothing."""
    key = (np.dtype(dtype), ndim)
    if key not in _UNREAD:
        _UNREAD[key] = np.zeros((1,) * ndim, dtype)
    return _UNREAD[key]


# ----------------------------------------------------------------------------- BLAS operands

def blas_operand(x: np.ndarray) -> tuple:
    """(trans flag, leading dimension) for a stacked matrix view whose last two strides make it
    BLAS-readable, else (None, None)."""
    item = x.itemsize
    sr, sc = x.strides[-2], x.strides[-1]
    if sc == item and sr % item == 0 and sr // item >= max(1, x.shape[-1]):
        return NO_TRANS, sr // item
    if sr == item and sc % item == 0 and sc // item >= max(1, x.shape[-2]):
        return TRANS, sc // item
    return None, None


def blas_readable(x: np.ndarray) -> bool:
    """Whether BLAS can read each x[b, h] of a 4-D stack in place as a row-major matrix (blas_operand's
    NO_TRANS case), the pairs at non-negative whole-item offsets."""
    return (x.ndim == 4 and blas_operand(x)[0] == NO_TRANS
            and all(s >= 0 and s % x.itemsize == 0 for s in x.strides[:2]))


def as_blas_input(name: str, x, dtype, shape: tuple) -> np.ndarray:
    """A 4-D input that BLAS reads pair by pair: x itself when it can (any head view of the model's
    buffers), else a C-contiguous copy."""
    if not isinstance(x, np.ndarray) or x.dtype != dtype:
        raise ValueError(f"{name} must be a {np.dtype(dtype)} array, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.shape != tuple(shape):
        raise ValueError(f"{name} has shape {x.shape}, expected {tuple(shape)}")
    return x if blas_readable(x) else np.ascontiguousarray(x)


def as_blas_output(name: str, x, dtype, shape: tuple) -> np.ndarray:
    """A 4-D output that BLAS writes pair by pair: a writeable view with unit stride along its last axis."""
    if not isinstance(x, np.ndarray) or x.dtype != dtype or x.shape != tuple(shape):
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"output {name} must be a {np.dtype(dtype)} array of shape {tuple(shape)}, got {got}")
    if not blas_readable(x) or not x.flags.writeable:
        raise ValueError(f"output {name} must be a writeable view with unit stride along its last axis")
    return x
