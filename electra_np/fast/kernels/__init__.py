"""Numba kernels: each fuses the elementwise work around a matrix product (which stays in BLAS) and has a
NumPy twin in electra_np/ops (or optim.py / masking.py) that tests/test_kernels.py holds it equal to.

    attention.py   scale + key mask + softmax + dropout, and backward   (ops/attention.py attention core)
    fused_attention.py  the whole core per (batch, head) pair, gemm inside the kernel (ops/attention.py)
    gelu.py        bias + GELU (erf and tanh), and backward             (ops/linear.py + ops/activations.py)
    layernorm.py   bias + dropout + residual + LayerNorm, and backward  (ops/layer.py, ops/layernorm.py)
    losses.py      gathered softmax cross-entropy, binary CE (ops/losses.py)
    embeddings.py  gather + LayerNorm + dropout, scatter-add backward   (ops/embeddings.py)
    sampling.py    Gumbel noise + argmax, fused                         (masking.gumbel_sample)
    adamw.py       the AdamW update                                     (optim.AdamW.update)
    blas.py        batched and single-matrix gemm from NumPy's OpenBLAS, through ctypes
    common.py      wrapper checks, vectorizable float32 exp/erf/tanh/log, row maximum, counter_rng's uniforms,
                   bias add, column sums

All are compiled with cache=True (first run compiles and writes __pycache__/*.nbi/.nbc; later processes
load them). Numba checks only a cached kernel's own source file: after editing a helper that kernels in
other files inline (common.py's exp_/row_max/keep_factor, attention.py's row functions), delete
electra_np/kernels/__pycache__, or those kernels keep the old helper. Kernels run in prange over
independent work only; sums over the rows of a batch go through per-thread partial buffers, so a result
is deterministic for a given thread count (threads.py).

Threading layer: workqueue, unless NUMBA_THREADING_LAYER says otherwise. The default layer on Linux is
OpenMP, whose idle threads spin between parallel regions while OpenBLAS's spin between matmuls: on 2
cores the two pools take turns stealing each other's core. Measured here (a 4-layer H=256 ELECTRA step,
B=32, T=128, 2 threads): 1.14 s/step with OpenMP, 0.60 s with workqueue, 0.87 s on 1 thread.

Vector width: on a CPU with AVX-512, LLVM's tuning for Intel's AVX-512 parts prefers 256-bit vectors
(older ones lower their clocks on 512-bit code); the kernels here are compiled with that preference off
("-prefer-256-bit" added to the host's features), so the exp/erf/log polynomials and the counter RNG
run 16 float32 lanes wide. Measured here (a Sapphire Rapids-class KVM guest, small's shapes, float32):
GELU backward 2.25 -> 1.77 ms, forward 1.06 -> 0.90, LayerNorm backward 1.25 -> 0.84, Gumbel sampling
24.3 -> 19.3, MLM loss forward 13.0 -> 11.4. Set ELECTRA_NP_VECTOR_WIDTH=256 to keep LLVM's choice (e.g.
on Skylake-X servers, whose AVX-512 clock penalty is what the preference avoids); NUMBA_CPU_NAME /
NUMBA_CPU_FEATURES, when set, win. It must be decided before Numba compiles or loads anything; cached
kernels are kept per feature set.
"""

import os

import numba

VECTOR_ENV = "ELECTRA_NP_VECTOR_WIDTH"

if "NUMBA_THREADING_LAYER" not in os.environ:  # before any parallel kernel is compiled or loaded
    numba.config.THREADING_LAYER = "workqueue"


def _prefer_512_bit_vectors():
    """Add "-prefer-256-bit" to the host's CPU features for Numba when the host has AVX-512 (see above).
    Returns whether it did."""
    width = os.environ.get(VECTOR_ENV, "512")
    if width not in ("256", "512"):
        raise ValueError(f"{VECTOR_ENV} must be 256 or 512, got {width!r}")
    if width == "256" or "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return False
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    numba.config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True


PREFER_512_BIT = _prefer_512_bit_vectors()
