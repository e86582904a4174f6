"""One thread count for everything that computes: Numba's kernels and the BLAS behind NumPy's matmuls.

    ELECTRA_NP_THREADS=2 electra-np pretrain ...     # or, in Python:
    from electra_np.threads import set_num_threads; set_num_threads(2)

Both pools run one after the other (a kernel, then a matmul, then a kernel), never at the same time, so
n threads each means n busy threads at any moment: no oversubscription. Default: ELECTRA_NP_THREADS, else
the number of CPUs this process may run on. BLAS is set through threadpoolctl when it is installed (it
reaches the OpenBLAS inside NumPy's wheel); without it, `configure_env` must run before NumPy is imported
and sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS instead.

Both pools run one after the other only if idle threads of one do not keep a core busy: Numba's default
OpenMP layer spins between parallel regions, which on 2 cores nearly halved the step's speed, so
electra_np.kernels selects Numba's workqueue layer unless NUMBA_THREADING_LAYER is set (its docstring
has the numbers). workqueue also keeps PyTorch's OpenMP and Numba apart in one process (benchmarks,
parity tests), where two OpenMP runtimes can deadlock or oversubscribe.
OpenBLAS's idle threads spin too: for 2^28 cycles (~0.1 s) after each call before they sleep, so every
kernel that follows a matmul shares its second core with a spinning BLAS thread (measured here, 2
threads: a Gumbel-sampling kernel 4.3 ms alone, 8.5 ms right after a matmul). `quiet_blas_spin`, called
when electra_np is imported, sets OPENBLAS_THREAD_TIMEOUT=12 (2^12 cycles, about 2 microseconds) unless it is
set; OpenBLAS reads it once, when NumPy loads it, so it takes effect only if electra_np (or this variable)
comes before NumPy's first import, as in the `electra-np` commands. tiny step: 0.180 -> 0.160 s.
Results depend on the thread count only through the per-thread partial sums of batch reductions
(kernels/common.py): the same count gives the same bits.
"""

import os

ENV = "ELECTRA_NP_THREADS"
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_threads():
    value = os.environ.get(ENV)
    if value:
        n = int(value)
        if n < 1:
            raise ValueError(f"{ENV} must be a positive integer, got {value!r}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_env(n=None):
    """Before NumPy is imported: cap the BLAS pools through the environment (no threadpoolctl needed)."""
    n = n or default_threads()
    for k in BLAS_ENV:
        os.environ.setdefault(k, str(n))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(n))
    return n


BLAS_SPIN_ENV, BLAS_SPIN = "OPENBLAS_THREAD_TIMEOUT", "12"
blas_spin_before_numpy = False  # whether quiet_blas_spin ran before NumPy was imported
_spin_may_be_long = False  # NumPy came first and OPENBLAS_THREAD_TIMEOUT was unset: OpenBLAS spins long


def quiet_blas_spin():
    """Shorten OpenBLAS's idle spin (see above) unless OPENBLAS_THREAD_TIMEOUT is set. Effective only
    before NumPy's first import; returns whether NumPy was still unimported."""
    global blas_spin_before_numpy, _spin_may_be_long
    import sys

    if "numpy" not in sys.modules:
        os.environ.setdefault(BLAS_SPIN_ENV, BLAS_SPIN)
        blas_spin_before_numpy = True
    else:
        _spin_may_be_long = BLAS_SPIN_ENV not in os.environ
    return blas_spin_before_numpy


def warn_if_blas_spins():
    """Warn once if NumPy's OpenBLAS was loaded with its long idle spin: NumPy imported before electra_np
    with OPENBLAS_THREAD_TIMEOUT unset. Measured here (2 threads): the small step 1.58 -> 1.72-1.79 s,
    discriminator inference 0.36 -> 0.42 s. The fast path's builders call it."""
    global _spin_may_be_long
    if not _spin_may_be_long:
        return False
    _spin_may_be_long = False  # asked once
    if not _numpy_uses_openblas():
        return False
    import warnings

    warnings.warn("NumPy was imported before electra_np, so its OpenBLAS keeps idle threads spinning for ~0.1 s "
                  "after every matmul, taking a core from the fast path's kernels (steps ~10% slower); import "
                  f"electra_np before NumPy, or set {BLAS_SPIN_ENV}={BLAS_SPIN} in the environment",
                  RuntimeWarning, stacklevel=3)
    return True


def _numpy_uses_openblas():
    import numpy as np

    try:
        return "openblas" in np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    except Exception:  # NumPy < 1.26 has no dict form: assume the wheels' OpenBLAS
        return True


_limiter = None


def set_num_threads(n=None):
    """Set Numba's and BLAS's thread counts to n (default: ELECTRA_NP_THREADS or the CPU count).
    Returns n. Numba cannot go above NUMBA_NUM_THREADS (fixed at its first parallel launch)."""
    global _limiter
    import numba

    n = n or default_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n  # configure_env's variables apply
    _limiter = threadpool_limits(limits=n, user_api="blas")  # kept: the limit holds until changed
    return n


def thread_info():
    """What is in force: Numba's count and layer, and each BLAS library's count and kernel (threadpoolctl)."""
    import numba

    from . import kernels

    info = {"numba_threads": numba.get_num_threads(), "numba_layer": numba.config.THREADING_LAYER,
            "numba_512_bit_vectors": kernels.PREFER_512_BIT,
            "openblas_thread_timeout": os.environ.get(BLAS_SPIN_ENV), "set_before_numpy": blas_spin_before_numpy}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
                        for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        pass
    return info
