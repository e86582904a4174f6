"""Counter-based uniforms for dropout and Gumbel sampling: the number at flat position i of an array is a
pure function of (seed, i), so the fast path's kernels compute it where they need it, in parallel and
with no buffer, and get exactly the numbers the NumPy reference draws here.

    seed = draw_seed(rng)                  # one draw from the np.random.Generator per dropout / sample
    u = uniforms(seed, shape, np.float32)  # u.flat[i] = to_unit(splitmix64(seed + (i + 1) * GOLDEN))

The mixer is SplitMix64's (Steele, Lea and Flood 2014, the seeding generator of xoshiro): its output
sequence from state `seed` is exactly u.flat[0], u.flat[1], ... Float32 takes the top 24 bits, float64
the top 53: multiples of 2^-24 (2^-53) in [0, 1), as rng.random's. The twin inside the kernels is
fast/kernels/uniforms.py `uniform_at`; tests/test_kernels.py holds the two bit-equal.

Why not rng.random into a buffer, as before: those draws are one sequential stream, filled by one
thread, written to memory and read back by the kernel (benchmarks/RESULTS.md, "Tried and dropped", says
what drawing them on two threads gave instead).
"""

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: SplitMix64's state increment
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def draw_seed(rng: np.random.Generator) -> np.uint64:
    """The seed of one array's uniforms: a uniform 64-bit integer from the Generator `rng`."""
    return np.uint64(rng.integers(0, 2 ** 64, dtype=np.uint64))


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of its state, on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int | np.uint64, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Uniforms in [0, 1) of `shape`, the one at flat position i from (seed, i) only."""
    n = int(np.prod(shape, dtype=np.int64))
    state = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN)
    z = splitmix64(state)
    if np.dtype(dtype) == np.float32:
        u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u.reshape(shape)


def uniforms_at(seed: int | np.uint64, index: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uniforms(seed, shape, dtype).flat[i] at the flat positions i of `index` (any shape, integers >= 0):
    the numbers a padded array draws, for just the entries kept (unpadded.py's packed rows).
    Returns: an array of index's shape."""
    state = np.uint64(seed) + (np.asarray(index, np.int64).astype(np.uint64) + np.uint64(1)) * np.uint64(GOLDEN)
    z = splitmix64(state)
    if np.dtype(dtype) == np.float32:
        return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
