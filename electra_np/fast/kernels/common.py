"""What every kernel module shares: argument checks for the thin wrappers, vectorizable float32 exp and
erf and log, a row maximum that vectorizes, and two small row kernels (bias add, column sums through
per-thread partial buffers).

Why our own exp and erf: Numba calls libm's scalar `expf`/`erf` one element at a time (about 7 and 25 ns
per element here), so an elementwise loop around them cannot be vectorized. `exp_` and `erf_` below are
plain arithmetic that LLVM turns into AVX-512 code (about 1 ns per element on 2 threads):
    exp:  Cody-Waite range reduction x = n ln2 + r, a degree-6 polynomial for e^r (Cephes `expf`), and 2^n
          built from its exponent bits; within 2 ulp for x <= 88, exactly 0 below -87.34 (e^x < FLT_MIN).
    erf:  Eigen's rational approximation x P(x^2) / Q(x^2) on [-4, 4] (1 outside), within 3 ulp of math.erf.
    log:  Cephes `logf` (for positive normal inputs: the Gumbel noise's), within 2 ulp of np.log.
float64 keeps libm (math.exp, math.erf): the float64 path is the one the tests hold to 1e-12 against the
NumPy reference.

Determinism: a sum over the rows of a batch is split into `num_chunks()` fixed row ranges; each range is
reduced by one prange iteration into its own row of a partial buffer, and the partials are added in order.
The result depends on the thread count, never on scheduling.
"""

import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ...counter_rng import GOLDEN, MIX1, MIX2

# fastmath without nnan / ninf: masked softmax rows meet -inf, and an infinity must stay one
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 = LN2_HI + LN2_LO, LN2_HI exact in 9 bits
EXP_MAX = 88.0                  # exp_ is valid for x <= EXP_MAX (2^127 fits a float32 exponent)
EXP_UNDERFLOW = -87.33654022216797  # log(FLT_MIN): exp_ returns exactly 0 below
ERF_CLAMP = 4.0                 # erf(4) rounds to 1 in float32
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_COEF = 0.044715
MAX_LANES = 16


# ----------------------------------------------------------------------------- wrapper checks

def as_input(name, a, dtype, shape=None):
    """An input array of exactly `dtype` (refused otherwise: a silent cast would hide a mixed-precision
    bug), converted to C order if it is not (a copy, never a wrong read)."""
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype != dtype:
        raise ValueError(f"{name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def as_output(name, a, dtype, shape):
    """An output buffer must already be what the kernel writes: right dtype and shape, C-contiguous, writeable."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != tuple(shape):
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"output {name} must be a {np.dtype(dtype)} array of shape {tuple(shape)}, got {got}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"output {name} must be a C-contiguous writeable array")
    return a


def in_place(name, out, src):
    """The buffer a one-array kernel rewrites: `out`, holding `src` (copied in unless out is src).

    Why kernels take one array to read and write, not an input and an output: given two, LLVM cannot
    know that they do not overlap, so it guards its vectorized loop with a runtime overlap check, and
    when they are the same buffer (the fast step's case) it runs the scalar fallback: measured here,
    the MLM loss backward 4x slower, GELU backward 1.2x, softmax backward 1.4x."""
    if out.ctypes.data != src.ctypes.data:
        if np.shares_memory(out, src):
            raise ValueError(f"{name} overlaps its input without being the same buffer")
        np.copyto(out, src)
    return out


def as_seed(seed):
    """A counter_rng seed as the kernels take it (np.uint64); an unused placeholder for None."""
    if seed is None:
        return np.uint64(0)
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    return np.uint64(seed)


def float_dtype(name, a):
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    return a.dtype


def num_chunks():
    """How many per-thread partial buffers a batch reduction uses: the Numba thread count."""
    return numba.get_num_threads()


def per_thread(buf, shape, dtype):
    """A (num_chunks(), *shape) buffer of dtype, one row per chunk of a kernel's prange: `buf` when it
    is one (the workspace's, reused every step), else a new array."""
    full = (num_chunks(),) + tuple(shape)
    if buf is None or buf.shape != full or buf.dtype != dtype:
        buf = np.empty(full, dtype)
    return buf


_UNREAD = {}


def unread(dtype, ndim):
    """A stand-in for an optional array argument the kernel will not touch (its flag says absent): one
    zero-filled 1-element array per (dtype, ndim), made once, so a call without the option allocates nothing."""
    key = (np.dtype(dtype), ndim)
    if key not in _UNREAD:
        _UNREAD[key] = np.zeros((1,) * ndim, dtype)
    return _UNREAD[key]


# ----------------------------------------------------------------------------- exp and erf by dtype

@njit(inline="always", cache=True)
def _exp_f32(x):
    xc = min(max(x, np.float32(EXP_UNDERFLOW)), np.float32(EXP_MAX))
    n = np.floor(xc * np.float32(LOG2E) + np.float32(0.5))
    r = xc - n * np.float32(LN2_HI) - n * np.float32(LN2_LO)
    y = ((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r + np.float32(8.3334519073e-3)) * r
          + np.float32(4.1665795894e-2)) * r + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)
    y = y * (r * r) + r + np.float32(1.0)
    two_n = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return np.float32(0.0) if x < np.float32(EXP_UNDERFLOW) else y * two_n


@njit(inline="always", cache=True)
def _erf_f32(x):
    x = min(max(x, np.float32(-ERF_CLAMP)), np.float32(ERF_CLAMP))
    x2 = x * x
    p = np.float32(-2.72614225801306e-10)
    p = p * x2 + np.float32(2.77068142495902e-08)
    p = p * x2 + np.float32(-2.10102402082508e-06)
    p = p * x2 + np.float32(-5.69250639462346e-05)
    p = p * x2 + np.float32(-7.34990630326855e-04)
    p = p * x2 + np.float32(-2.95459980854025e-03)
    p = p * x2 + np.float32(-1.60960333262415e-02)
    q = np.float32(-1.45660718464996e-05)
    q = q * x2 + np.float32(-2.13374055278905e-04)
    q = q * x2 + np.float32(-1.68282697438203e-03)
    q = q * x2 + np.float32(-7.37332916720468e-03)
    q = q * x2 + np.float32(-1.42647390514189e-02)
    return x * p / q


def exp_(x):
    """e^x keeping the dtype: the vectorizable form for float32, libm for float64 (see module docstring)."""
    return math.exp(x)


def erf_(x):
    return math.erf(x)


@overload(exp_, inline="always")
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


@overload(erf_, inline="always")
def _erf_overload(x):
    if x == types.float32:
        return lambda x: _erf_f32(x)
    return lambda x: math.erf(x)


# ----------------------------------------------------------------------------- small row kernels

@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _add_bias(y, b):
    N, C = y.shape
    for i in prange(N):
        for j in range(C):
            y[i, j] += b[j]


def add_bias(y, b):
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


def sum_rows(x, out, partial=None):
    """out = x.sum(axis=0) (a bias gradient), through per-thread partials.  x (N, C), out (C,)."""
    x = as_input("x", x, x.dtype)
    as_output("out", out, x.dtype, (x.shape[1],))
    _sum_rows(x, per_thread(partial, (x.shape[1],), x.dtype), out)
    return out


def log_(x):
    return math.log(x)


@njit(inline="always", cache=True)
def _log_f32(x):
    """log(x) for positive normal float32 x (Cephes logf): x = 2^e f with f in [sqrt(1/2), sqrt(2)),
    log(1 + (f - 1)) by a degree-9 polynomial, e ln 2 added in two parts. No branches: vectorizes."""
    bits = np.float32(x).view(np.int32)
    e = np.float32(((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126))  # x = 2^e f, f in [0.5, 1)
    f = np.int32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000)).view(np.float32)
    small = np.float32(f < np.float32(SQRT_HALF))  # then x = 2^(e-1) (2f): f - 1 becomes 2f - 1
    e = e - small
    f = f - np.float32(1.0) + small * f
    z = f * f
    y = ((((((((np.float32(7.0376836292e-2) * f - np.float32(1.1514610310e-1)) * f + np.float32(1.1676998740e-1)) * f
              - np.float32(1.2420140846e-1)) * f + np.float32(1.4249322787e-1)) * f - np.float32(1.6668057665e-1)) * f
            + np.float32(2.0000714765e-1)) * f - np.float32(2.4999993993e-1)) * f + np.float32(3.3333331174e-1)) * f * z
    y = y + e * np.float32(LN2_LO) - np.float32(0.5) * z
    return f + y + e * np.float32(LN2_HI)


@overload(log_, inline="always")
def _log_overload(x):
    if x == types.float32:
        return lambda x: _log_f32(x)
    return lambda x: math.log(x)


@njit(inline="always", cache=True, fastmath=FASTMATH)
def row_max(row):
    """max(row) over MAX_LANES interleaved running maxima: one compare-select chain is serial, and LLVM
    does not vectorize it (3.5x slower here on a 8,192-wide row)."""
    V = row.shape[0]
    acc = np.empty(MAX_LANES, row.dtype)
    for k in range(MAX_LANES):
        acc[k] = row[0]
    nb = V // MAX_LANES
    for blk in range(nb):
        for k in range(MAX_LANES):
            v = row[blk * MAX_LANES + k]
            acc[k] = v if v > acc[k] else acc[k]
    m = acc[0]
    for k in range(1, MAX_LANES):
        m = acc[k] if acc[k] > m else m
    for j in range(nb * MAX_LANES, V):
        m = row[j] if row[j] > m else m
    return m


@njit(inline="always", cache=True)
def first_index(row, m):
    """The first j with row[j] == m: np.argmax's tie rule, once the maximum m is known."""
    for j in range(row.shape[0]):
        if row[j] == m:
            return j
    return 0


@njit(inline="always", cache=True)
def _splitmix_at(seed, i):
    """counter_rng's 64 random bits at flat position i: SplitMix64 of seed + (i + 1) GOLDEN. Integer
    arithmetic only (wrapping uint64), so bit-equal to the NumPy twin."""
    z = seed + np.uint64(i + 1) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


@njit(inline="always", cache=True)
def uniform_at(seed, i):
    """counter_rng.uniforms(seed, ...)'s float32 at flat position i: the top 24 bits times 2^-24."""
    return np.float32(_splitmix_at(seed, i) >> np.uint64(40)) * np.float32(2.0 ** -24)


@njit(inline="always", cache=True)
def uniform64_at(seed, i):
    """The float64 twin: the top 53 bits times 2^-53."""
    return np.float64(_splitmix_at(seed, i) >> np.uint64(11)) * 2.0 ** -53


@njit(inline="always", cache=True)
def keep_factor(seed, i, p, keep_scale):
    """Inverted dropout's factor at flat position i: keep_scale where the uniform is >= p, else 0 (ops/
    dropout.py dropout_mask's rule). Forward and backward both call it, so they apply the same pattern."""
    return keep_scale if uniform_at(seed, i) >= p else keep_scale - keep_scale


def uniform_like(seed, i, x):
    """counter_rng's uniform at position i in x's dtype: uniform_at for float32, uniform64_at otherwise
    (chosen when the kernel is compiled, so the loop has no branch)."""
    return uniform_at(seed, i) if np.asarray(x).dtype == np.float32 else uniform64_at(seed, i)


@overload(uniform_like, inline="always")
def _uniform_like_overload(seed, i, x):
    if x == types.float32:
        return lambda seed, i, x: uniform_at(seed, i)
    return lambda seed, i, x: uniform64_at(seed, i)


def tanh_(x):
    return math.tanh(x)


@njit(inline="always", cache=True)
def _tanh_f32(x):
    xc = min(max(x, np.float32(-9.0)), np.float32(9.0))  # tanh(9) rounds to 1 in float32
    return np.float32(1.0) - np.float32(2.0) / (_exp_f32(np.float32(2.0) * xc) + np.float32(1.0))


@overload(tanh_, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    return lambda x: math.tanh(x)


def _keep_scale(dt, p):
    """The kept entries' factor, as ops/dropout.py computes it: dtype(1 / (1 - p)) (p compared in float32)."""
    return np.dtype(dt).type(1.0 / (1.0 - p)) if p else np.dtype(dt).type(1.0)
