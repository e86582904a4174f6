"""Numba kernels: each fuses the elementwise work around a matrix product (which stays in BLAS) and has a
NumPy twin in electra_np/ops (or optim.py / masking.py) that tests/test_kernels.py holds it equal to.

    attention.py   scale + key mask + softmax + dropout, and backward   (ops/attention.py attention core)
    gelu.py        bias + GELU (erf and tanh), and backward             (ops/linear.py + ops/activations.py)
    layernorm.py   bias + dropout + residual + LayerNorm, and backward  (ops/layer.py, ops/layernorm.py)
    losses.py      gathered softmax cross-entropy, binary CE (ops/losses.py)
    embeddings.py  gather + LayerNorm + dropout, scatter-add backward   (ops/embeddings.py)
    sampling.py    Gumbel noise + argmax, fused                         (masking.gumbel_sample)
    adamw.py       the AdamW update                                     (optim.AdamW.update)
    common.py      wrapper checks, vectorizable float32 exp/erf/tanh/log, row maximum, counter_rng's uniforms,
                   bias add, column sums

All are compiled with cache=True (first run compiles and writes __pycache__/*.nbi/.nbc; later processes
load them). Kernels run in prange over independent work only; sums over the rows of a batch go through
per-thread partial buffers, so a result is deterministic for a given thread count (threads.py).

Threading layer: workqueue, unless NUMBA_THREADING_LAYER says otherwise. The default layer on Linux is
OpenMP, whose idle threads spin between parallel regions while OpenBLAS's spin between matmuls: on 2
cores the two pools take turns stealing each other's core. Measured here (a 4-layer H=256 ELECTRA step,
B=32, T=128, 2 threads): 1.14 s/step with OpenMP, 0.60 s with workqueue, 0.87 s on 1 thread.
"""

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:  # before any parallel kernel is compiled or loaded
    numba.config.THREADING_LAYER = "workqueue"
