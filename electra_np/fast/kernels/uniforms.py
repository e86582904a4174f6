"""counter_rng's uniforms inside the kernels, and inverted dropout's keep factor built on them.

counter_rng.uniforms(seed, shape) is a pure function of (seed, flat position), so a kernel computes the
uniform it needs where it needs it, in any order and in parallel, and a backward recomputes the forward's
dropout pattern from the seed instead of storing it. Integer arithmetic only (wrapping uint64): the
kernels' uniforms are bit-equal to the NumPy twin's.

Numba inlines these into the kernels of other files, and its cache checks only a kernel's own source
file: after editing this file, delete electra_np/fast/kernels/__pycache__.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from ...counter_rng import GOLDEN, MIX1, MIX2


@njit(inline="always", cache=True)
def _splitmix_at(seed, i):
    """counter_rng's 64 random bits at flat position i: SplitMix64 of seed + (i + 1) GOLDEN."""
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


def uniform_like(seed, i, x):
    """counter_rng's uniform at position i in x's dtype: uniform_at for float32, uniform64_at otherwise
    (chosen when the kernel is compiled, so the loop has no branch)."""
    return uniform_at(seed, i) if np.asarray(x).dtype == np.float32 else uniform64_at(seed, i)


@overload(uniform_like, inline="always")
def _uniform_like_overload(seed, i, x):
    if x == types.float32:
        return lambda seed, i, x: uniform_at(seed, i)
    return lambda seed, i, x: uniform64_at(seed, i)


@njit(inline="always", cache=True)
def keep_factor(seed, i, p, keep_scale):
    """Inverted dropout's factor at flat position i: keep_scale where the uniform is >= p, else 0 (ops/
    dropout.py dropout_mask's rule). Forward and backward both call it, so they apply the same pattern."""
    return keep_scale if uniform_at(seed, i) >= p else keep_scale - keep_scale


def keep_scale(dt, p: float) -> np.floating:
    """The kept entries' factor, as ops/dropout.py computes it: dtype(1 / (1 - p)) (p compared in float32)."""
    return np.dtype(dt).type(1.0 / (1.0 - p)) if p else np.dtype(dt).type(1.0)
