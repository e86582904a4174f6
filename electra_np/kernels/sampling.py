"""Random numbers for the fast step, the same numbers as the reference's, drawn faster.

    fill_uniform(rng, out)           = rng.random(dtype=out.dtype, out=out), by two threads
    gumbel_argmax(logits, t, u)      = masking.gumbel_sample's argmax(logits / t - log(-log(u + eps) + eps)),
                                       fused and in prange over rows, for uniforms u already drawn

fill_uniform: NumPy's PCG64 can jump ahead (`advance(k)`: as if k 64-bit outputs had been drawn), and
filling an array releases the GIL. So a copy of the generator, moved to where the second half of `out`
begins in the stream, fills that half on a second thread while `rng` fills the first; `rng` then takes the
copy's final state. The numbers and the generator's state afterwards are exactly rng.random's, which keeps
the fast step's dropout and Gumbel draws those of the NumPy reference. Float32 draws take 32 bits each
(two per 64-bit output, one kept back for the next draw: `has_uint32`), float64 draws 64. Any other bit
generator, one thread, or a small array: rng.random itself.

gumbel_argmax: float32 computes its logs with the vectorizable Cephes log (common.log_), within 2 ulp of
np.log, so a sample can differ from the reference's only where two candidates tie to within a few ulp;
float64 uses libm's log.
"""

import threading

import numba
import numpy as np
from numba import njit, prange

from .common import FASTMATH, as_input, as_output, first_index, float_dtype, log_, row_max

PARALLEL_MIN = 1 << 18  # below this many numbers a second thread costs more than it saves


def fill_uniform(rng, out):
    """out[...] = rng.random(dtype=out.dtype) (float32 or float64, C-contiguous), the same stream."""
    flat = out.reshape(-1)  # a view: out is C-contiguous
    bg = rng.bit_generator
    if flat.size < PARALLEL_MIN or type(bg) is not np.random.PCG64 or numba.get_num_threads() < 2:
        rng.random(dtype=out.dtype, out=out)
        return out
    state = bg.state
    if out.dtype == np.float32:
        h = state["has_uint32"]  # one float32 already waits in the generator
        k = (flat.size - h) // 4  # 64-bit outputs the first part consumes after it
        n1 = h + 2 * k
    else:
        k = n1 = flat.size // 2
    second = np.random.PCG64()
    second.state = {**state, "has_uint32": 0, "uinteger": 0}
    second.advance(k)
    worker = threading.Thread(target=np.random.Generator(second).random, kwargs={"dtype": out.dtype, "out": flat[n1:]})
    worker.start()
    rng.random(dtype=out.dtype, out=flat[:n1])
    worker.join()
    final = second.state
    if out.dtype == np.float64:  # double draws leave the kept-back 32 bits alone
        final.update(has_uint32=state["has_uint32"], uinteger=state["uinteger"])
    bg.state = final
    return out


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _gumbel_argmax(logits, u, inv_temp, eps, out):
    M, V = logits.shape
    for i in prange(M):
        row, g = logits[i], u[i]
        for j in range(V):
            g[j] = row[j] * inv_temp - log_(-log_(g[j] + eps) + eps)
        out[i] = first_index(g, row_max(g))


def gumbel_argmax(logits, temperature, u, eps, out):
    """out (M,) int64 = argmax over V of logits / temperature + Gumbel noise from the uniforms u (M, V)
    (logits' dtype), which are overwritten with the perturbed logits. eps: masking.GUMBEL_EPS."""
    dt = float_dtype("logits", logits)
    M, V = logits.shape
    logits = as_input("logits", logits, dt)
    as_output("u", u, dt, (M, V))
    _gumbel_argmax(logits, u, dt.type(1.0 / temperature), dt.type(eps), as_output("out", out, np.int64, (M,)))
    return out
