"""Where does the fast step's time go, per op? Wraps every kernel, BLAS call and random draw that the fast
step (fast/step.py, fast/encoder.py, fast/heads.py) makes with a timer (the wrappers add a few microseconds
per call) and prints seconds per step.

    python benchmarks/profile_step.py [--config small] [--batch 32] [--length 128] [--steps 5]
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: it configures the runtime before NumPy is imported)
import numpy as np  # noqa: E402

ACC = collections.defaultdict(float)
CALLS = collections.Counter()


def timer(name, fn):
    def wrapped(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            ACC[name] += time.perf_counter() - t0
            CALLS[name] += 1
    return wrapped


class _NumpyProxy:
    """The fast modules' `np`, with matmul timed as BLAS."""

    def __getattr__(self, k):
        return getattr(np, k)

    matmul = staticmethod(timer("matmul (BLAS, 2-D)", np.matmul))


TIMED = ("softmax_dropout_forward", "softmax_dropout_backward", "bias_gelu_forward", "bias_gelu_backward",
         "residual_layernorm_forward", "residual_layernorm_backward", "layernorm_apply", "embeddings_forward",
         "embeddings_backward", "softmax_xent_forward", "softmax_xent_backward", "bce_forward", "bce_backward",
         "add_bias", "sum_rows", "prepare_step", "gumbel_argmax", "key_bias")


def instrument():
    """Replace, in each fast-step module, the kernels it imported by timed wrappers (one per kernel, shared by
    the modules), its `np` by _NumpyProxy, and the fused attention kernels in their own module (the encoder
    calls them through it)."""
    from electra_np.fast import encoder, heads, step
    from electra_np.fast.kernels import fused_attention
    wrapped = {}
    for module in (step, encoder, heads):
        for name in TIMED + ("bmm",):
            if hasattr(module, name):
                label = "bmm (BLAS, batched attention)" if name == "bmm" else name
                wrapped.setdefault(name, timer(label, getattr(module, name)))
                setattr(module, name, wrapped[name])
        module.np = _NumpyProxy()
    for name in ("attention_forward", "attention_backward"):  # the per-pair kernels, BLAS inside
        setattr(fused_attention, name, timer(f"fused {name} (BLAS inside)", getattr(fused_attention, name)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    common.print_machine(common.machine())
    instrument()
    side = common.OursStep(args.config, args.batch, args.length, validate=False)
    from electra_np.fast.kernels import adamw
    adamw.adamw_update = timer("adamw_update", adamw.adamw_update)
    side.run()  # warm-up: the first step builds the workspace and faults its pages in
    ACC.clear()
    CALLS.clear()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        side.run()
    total = (time.perf_counter() - t0) / args.steps
    print(f"\n{args.config} B={args.batch} T={args.length}: {total:.3f} s/step (instrumented)")
    print(f"{'op':<34} {'s/step':>8} {'share':>6} {'calls/step':>10}")
    for name, t in sorted(ACC.items(), key=lambda kv: -kv[1]):
        print(f"{name:<34} {t / args.steps:>8.4f} {t / args.steps / total:>6.1%} {CALLS[name] / args.steps:>10.0f}")
    rest = total - sum(ACC.values()) / args.steps
    print(f"{'(everything else: Python, copies)':<34} {rest:>8.4f} {rest / total:>6.1%}")


if __name__ == "__main__":
    main()
