"""The arithmetic every kernel shares: its fastmath flags, vectorizable float32 exp, erf, log and tanh, and a
row maximum (with the first index of it) that vectorizes.

Why our own exp and erf: Numba calls libm's scalar `expf`/`erf` one element at a time, so an elementwise
loop around them cannot be vectorized. `exp_` and `erf_` below are plain arithmetic that LLVM turns into
AVX-512 code (benchmarks/RESULTS.md has the per-kernel effect):
    exp:  Cody-Waite range reduction x = n ln2 + r, a degree-6 polynomial for e^r (Cephes `expf`), and 2^n
          built from its exponent bits; within 2 ulp for x <= 88, exactly 0 below -87.34 (e^x < FLT_MIN).
    erf:  Eigen's rational approximation x P(x^2) / Q(x^2) on [-4, 4] (1 outside), within 3 ulp of math.erf.
    log:  Cephes `logf` (for positive normal inputs: the Gumbel noise's), within 2 ulp of np.log.
    tanh: 1 - 2 / (e^(2x) + 1) with the exp above, x clamped to [-9, 9].
float64 keeps libm (math.exp, math.erf, ...): the float64 path is the one the tests hold to 1e-12 against
the NumPy reference. `exp_(x)` and the others pick the form by x's type when the kernel is compiled.

Numba inlines these into the kernels of other files, and its cache checks only a kernel's own source
file: after editing this file, delete electra_np/fast/kernels/__pycache__.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

# fastmath without nnan / ninf: masked softmax rows meet -inf, and an infinity must stay one
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 = LN2_HI + LN2_LO, LN2_HI exact in 9 bits
EXP_MAX = 88.0                  # exp_ is valid for x <= EXP_MAX (2^127 fits a float32 exponent)
EXP_UNDERFLOW = -87.33654022216797  # log(FLT_MIN): exp_ returns exactly 0 below
ERF_CLAMP = 4.0                 # erf(4) rounds to 1 in float32
TANH_CLAMP = 9.0                # tanh(9) rounds to 1 in float32
SQRT_HALF = math.sqrt(0.5)
MAX_LANES = 16


@njit(inline="always", cache=True)
def exp_f32(x):
    """e^x for float32 x, vectorizable (see the module docstring)."""
    xc = min(max(x, np.float32(EXP_UNDERFLOW)), np.float32(EXP_MAX))
    n = np.floor(xc * np.float32(LOG2E) + np.float32(0.5))
    r = xc - n * np.float32(LN2_HI) - n * np.float32(LN2_LO)
    y = ((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r + np.float32(8.3334519073e-3)) * r
          + np.float32(4.1665795894e-2)) * r + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)
    y = y * (r * r) + r + np.float32(1.0)
    two_n = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return np.float32(0.0) if x < np.float32(EXP_UNDERFLOW) else y * two_n


@njit(inline="always", cache=True)
def erf_f32(x):
    """erf(x) for float32 x, vectorizable (see the module docstring)."""
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


@njit(inline="always", cache=True)
def log_f32(x):
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


@njit(inline="always", cache=True)
def tanh_f32(x):
    """tanh(x) for float32 x, through exp_f32 (see the module docstring)."""
    xc = min(max(x, np.float32(-TANH_CLAMP)), np.float32(TANH_CLAMP))
    return np.float32(1.0) - np.float32(2.0) / (exp_f32(np.float32(2.0) * xc) + np.float32(1.0))


# ----------------------------------------------------------------------------- by dtype

def exp_(x):
    """e^x keeping the dtype: exp_f32 for float32, libm for float64 (chosen when the kernel is compiled)."""
    return math.exp(x)


def erf_(x):
    return math.erf(x)


def log_(x):
    return math.log(x)


def tanh_(x):
    return math.tanh(x)


@overload(exp_, inline="always")
def _exp_overload(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: math.exp(x)


@overload(erf_, inline="always")
def _erf_overload(x):
    if x == types.float32:
        return lambda x: erf_f32(x)
    return lambda x: math.erf(x)


@overload(log_, inline="always")
def _log_overload(x):
    if x == types.float32:
        return lambda x: log_f32(x)
    return lambda x: math.log(x)


@overload(tanh_, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: tanh_f32(x)
    return lambda x: math.tanh(x)


# ----------------------------------------------------------------------------- row maximum

@njit(inline="always", cache=True, fastmath=FASTMATH)
def row_max(row):
    """max(row) over MAX_LANES interleaved running maxima: one compare-select chain is serial, and LLVM
    does not vectorize it (benchmarks/RESULTS.md, "Kept")."""
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
