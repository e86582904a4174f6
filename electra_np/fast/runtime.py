"""Every process-wide setting electra_np makes, in one place: `configure(threads=None)`.

    from electra_np.fast import runtime
    runtime.configure()        # first, before NumPy is imported (the `electra-np` commands and the tests do)
    import numpy as np ...     # FastStep, FastClassifier and FastDiscriminator call configure() when built

Importing electra_np, or any module of it, changes nothing: only configure() does, and it is idempotent
(its first call applies the settings below; a later call changes only an explicitly given thread count).

1. OpenBLAS's idle spin. After each call OpenBLAS's threads spin for a long while before they sleep, so a
   kernel that follows a matmul shares its second core with a spinning BLAS thread. configure() sets
   OPENBLAS_THREAD_TIMEOUT=12 (2^12 cycles) unless it is set. OpenBLAS reads it once, when NumPy loads it:
   if NumPy is already imported it is too late, and configure() warns once (a RuntimeWarning that names
   the fix) instead.
2. Numba's threading layer: workqueue, unless NUMBA_THREADING_LAYER is set. The default layer on Linux is
   OpenMP, whose idle threads spin between parallel regions while OpenBLAS's spin between matmuls: the
   two pools take turns stealing each other's core. workqueue also keeps PyTorch's OpenMP and Numba apart
   in one process (benchmarks, parity tests), where two OpenMP runtimes can deadlock or oversubscribe.
3. The vector width. On a CPU with AVX-512, LLVM's tuning for Intel's AVX-512 parts prefers 256-bit
   vectors (older ones lower their clocks on 512-bit code); configure() adds "-prefer-256-bit" to the
   host's features for Numba, so the exp/erf/log polynomials and the counter RNG run 16 float32 lanes wide.
   ELECTRA_NP_VECTOR_WIDTH=256 keeps LLVM's choice (e.g. on Skylake-X servers, whose AVX-512 clock penalty
   is what the preference avoids); NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, when set, win. It must be decided
   before Numba compiles or loads a kernel; cached kernels are kept per feature set.
4. One thread count for everything that computes, Numba's kernels and the BLAS behind NumPy's matmuls:
   `threads`, else ELECTRA_NP_THREADS, else the number of CPUs this process may run on. Both pools run
   one after the other (a kernel, then a matmul), never at the same time, so n threads each means n busy
   threads at any moment. BLAS is set through threadpoolctl when it is installed; a count asked for
   (`threads` or ELECTRA_NP_THREADS) before NumPy is imported also goes to OPENBLAS_NUM_THREADS,
   OMP_NUM_THREADS, MKL_NUM_THREADS and NUMBA_NUM_THREADS, which the libraries read when they load.
   A count above the CPUs this process may use is kept, with a RuntimeWarning: results depend on the count, so
   keeping it gives the bits another machine gets with it (the threads share cores, slower).
Results depend on the thread count only through the per-thread partial sums of batch reductions
(kernels/rows.py): the same count gives the same bits.

benchmarks/RESULTS.md ("Kept") has what each setting was worth when it went in.
"""

import os
import sys
from pathlib import Path

THREADS_ENV = "ELECTRA_NP_THREADS"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
BLAS_SPIN_ENV, BLAS_SPIN = "OPENBLAS_THREAD_TIMEOUT", "12"
LAYER_ENV, LAYER = "NUMBA_THREADING_LAYER", "workqueue"
VECTOR_ENV = "ELECTRA_NP_VECTOR_WIDTH"

_configured = False  # whether configure() has run
_threads = None  # the thread count set_num_threads last set
_spin_set_before_numpy = None  # whether configure() set the idle spin before NumPy loaded OpenBLAS
_prefer_512_bit = None  # whether configure() asked Numba for 512-bit vectors
_limiter = None  # threadpoolctl's limit, kept: it holds until changed
_warned = set()  # the thread counts _warn_oversubscribed has warned about


def configure(threads: int | None = None) -> int:
    """Apply the settings of the module docstring (a count set_num_threads already set stands, unless
    `threads` is given). Returns the thread count in force."""
    global _configured
    if _configured:
        return _threads if threads is None else set_num_threads(threads)
    width = _vector_width()  # every setting is checked before any is made
    n = thread_count(threads) if threads is not None or _threads is None else _threads
    _quiet_blas_spin(n if threads is not None or os.environ.get(THREADS_ENV) else None)
    _select_numba_layer_and_vectors(width)
    _configured = True
    return set_num_threads(n)


def thread_count(threads: int | None = None) -> int:
    """`threads`, else ELECTRA_NP_THREADS, else the CPUs this process may run on; a positive integer."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        return threads
    value = os.environ.get(THREADS_ENV)
    if value:
        digits = value.strip()  # plain decimal digits: int() would also take "3_0" (30) and "+3"
        n = int(digits) if digits.isascii() and digits.isdigit() else 0
        if n < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return n
    return available_cpus()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n: int | None = None) -> int:
    """Set Numba's and BLAS's thread counts to thread_count(n) now (configure's last step; also for changing
    the count later). Numba cannot go above NUMBA_NUM_THREADS (fixed at its first parallel launch).
    Returns the count."""
    global _limiter, _threads
    import numba

    n = _threads = thread_count(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _warn_oversubscribed(n, numba.config.NUMBA_NUM_THREADS)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n  # the variables set before NumPy loaded, if any, apply
    _limiter = threadpool_limits(limits=n, user_api="blas")
    return n


def _warn_oversubscribed(n, numba_limit):
    """One RuntimeWarning, once per count, when n is more threads than CPUs (they share the cores: slower, and the
    count is kept, since results depend on it: the same count gives the same bits on any machine), or more than
    Numba started with (its kernels then run fewer)."""
    cpus = available_cpus()
    if n in _warned or (n <= cpus and n <= numba_limit):
        return
    _warned.add(n)
    import warnings

    said = []
    if n > cpus:
        said.append(f"this process may run on {cpus} CPUs: the count is kept (results depend on it), so the threads "
                    "share cores and run slower")
    if n > numba_limit:
        said.append(f"Numba started with at most {numba_limit} (NUMBA_NUM_THREADS), so its kernels use {numba_limit}")
    warnings.warn(f"{n} threads asked for, but " + "; ".join(said), RuntimeWarning, stacklevel=3)


def thread_info() -> dict:
    """What is in force: Numba's count, layer and vector width, OpenBLAS's idle spin, and each BLAS
    library's count and kernel (through threadpoolctl, when installed)."""
    import numba

    info = {"configured": _configured, "numba_threads": numba.get_num_threads(),
            "numba_layer": numba.config.THREADING_LAYER, "numba_512_bit_vectors": _prefer_512_bit,
            "openblas_thread_timeout": os.environ.get(BLAS_SPIN_ENV),
            "blas_spin_set_before_numpy": _spin_set_before_numpy}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
                        for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        pass
    return info


def _quiet_blas_spin(asked):
    """Before NumPy: the short idle spin, and the thread count `asked` (None: none) in the variables the
    libraries read when they load. After NumPy: warn, once, when its OpenBLAS keeps the long spin."""
    global _spin_set_before_numpy
    _spin_set_before_numpy = "numpy" not in sys.modules
    if _spin_set_before_numpy:
        os.environ.setdefault(BLAS_SPIN_ENV, BLAS_SPIN)
        if asked is not None:
            for name in THREAD_VARIABLES:
                os.environ[name] = str(asked)
    elif BLAS_SPIN_ENV not in os.environ and _numpy_uses_openblas():
        import warnings

        warnings.warn("NumPy was imported before electra_np.fast.runtime.configure() ran, so its OpenBLAS keeps "
                      "idle threads spinning after every matmul, taking a core from the fast path's kernels; call "
                      f"configure() before importing NumPy, or set {BLAS_SPIN_ENV}={BLAS_SPIN} in the environment",
                      RuntimeWarning, stacklevel=3)  # points at configure()'s caller


def _numpy_uses_openblas():
    import numpy as np

    try:
        return "openblas" in np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    except Exception:  # NumPy < 1.26 has no dict form: assume the wheels' OpenBLAS
        return True


def _vector_width():
    width = os.environ.get(VECTOR_ENV, "512")
    if width not in ("256", "512"):
        raise ValueError(f"{VECTOR_ENV} must be 256 or 512, got {width!r}")
    return width


def _select_numba_layer_and_vectors(width):
    """Settings 2 and 3 of the module docstring, before Numba compiles or loads a kernel."""
    global _prefer_512_bit
    import numba

    if LAYER_ENV not in os.environ:
        numba.config.THREADING_LAYER = LAYER
    _prefer_512_bit = False
    if width == "256" or "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        numba.config.CPU_FEATURES = features + ",-prefer-256-bit"
        _prefer_512_bit = True


STEP_KERNEL_MODULES = ("adamw", "embeddings", "fused_attention", "gelu", "layernorm", "losses", "rows", "sampling")


def kernels_cached() -> bool:
    """Whether Numba's disk cache holds compiled kernels for every module of fast/kernels (in __pycache__ beside
    them, or under NUMBA_CACHE_DIR when that is set). False on a first run, which compiles them before its first step: the CLI
    says so instead of sitting silent. A kernel cached for one dtype only still compiles for the other."""
    kernels = Path(__file__).parent / "kernels"
    user_dir = os.environ.get("NUMBA_CACHE_DIR")  # when set, Numba caches only there
    roots = [Path(user_dir)] if user_dir else [kernels / "__pycache__"]
    found = {p.name.split(".")[0] for root in roots if root.is_dir() for p in root.rglob("*.nbi")}
    return set(STEP_KERNEL_MODULES) <= found
