"""Numba kernels: each fuses the elementwise work around a matrix product (which stays in BLAS) and has a
NumPy twin in electra_np/ops (or optim.py / masking.py) that tests/test_kernels.py (tests/test_fast_unpadded.py for
the packed ones) holds it equal to.

    attention.py        scale + key mask + softmax + dropout, and backward   (ops/attention.py attention core)
    fused_attention.py  the whole core per (batch, head) pair, gemm inside the kernel (ops/attention.py)
    gelu.py             bias + GELU (erf and tanh), and backward             (ops/linear.py + ops/activations.py)
    layernorm.py        bias + dropout + residual + LayerNorm, and backward  (ops/layer.py, ops/layernorm.py)
    losses.py           gathered softmax cross-entropy, binary CE            (ops/losses.py)
    embeddings.py       gather + LayerNorm + dropout, scatter-add backward   (ops/embeddings.py)
    varlen_attention.py the core per (sequence, head) over packed tokens     (ops/varlen_attention.py)
    packed.py           packed embeddings (positions gathered) and dropout   (unpadded.py)
    sampling.py         Gumbel noise + argmax, fused                         (masking.gumbel_sample)
    adamw.py            the AdamW update                                     (optim.AdamW.update)
    blas.py             batched and single-matrix gemm from NumPy's OpenBLAS, through ctypes
    rows.py             bias add, column sums, the per-thread partial buffers of batch reductions
    what they share:
    checks.py           the thin wrappers' argument checks (dtype, shape, contiguity, in place, seeds, BLAS operands)
    vecmath.py          fastmath flags, vectorizable float32 exp/erf/log/tanh, row maximum and its first index
    uniforms.py         counter_rng's uniforms inside a kernel, and inverted dropout's keep factor

All are compiled with cache=True (first run compiles and writes __pycache__/*.nbi/.nbc; later processes
load them). Numba checks only a cached kernel's own source file: after editing a helper that kernels in
other files inline (vecmath.py, uniforms.py, attention.py's row functions, layernorm.py's normalize_row),
delete electra_np/fast/kernels/__pycache__, or those kernels keep the old helper. Kernels run in prange
over independent work only; sums over the rows of a batch go through per-thread partial buffers (rows.py),
so a result is deterministic for a given thread count.

Importing these modules changes no process-wide setting: the threading layer, the vector width and the
thread counts are fast/runtime.py's `configure()`, which the fast path's builders call.
"""
