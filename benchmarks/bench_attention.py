"""How fast is the attention core, forward + backward (scale, key mask, softmax, dropout, and the two
products), electra_np's batched kernels (fast/kernels/attention.py, products in batched BLAS: the fast
step's fallback where fused_attention.py cannot run) against PyTorch's
torch.nn.functional.scaled_dot_product_attention with autograd?

    python benchmarks/bench_attention.py [--batch 32] [--heads 4] [--length 128] [--head-size 64] [--dropout 0.1]

Validation first, dropout off: both sides' ctx, dq, dk, dv against electra_np's NumPy reference
(ops/attention.py) on the same inputs, with padding. Then both sides alternate in one process
(NUMBA_THREADING_LAYER=workqueue), same thread count, dropout on. The FLOPs are the six products
(2 forward, 4 backward): 12 B NH T^2 hs.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: it configures the runtime before NumPy is imported)
import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    from electra_np.fast.kernels import attention as fast
    from electra_np.ops import attention as ref_ops
    torch.set_num_threads(common.THREADS)
    info = common.machine()
    common.print_machine(info)
    B, NH, T, hs, p = args.batch, args.heads, args.length, args.head_size, args.dropout
    rng = np.random.default_rng(0)
    q, k, v, dctx = (rng.standard_normal((B, NH, T, hs)).astype(np.float32) for _ in range(4))
    mask = np.ones((B, T), np.int64)
    mask[1, T // 2:] = 0
    bias4 = ref_ops.key_mask_bias(mask, np.dtype(np.float32))  # (B, 1, 1, T)
    buf = fast.attention_buffers(B, NH, T, hs, np.float32)

    tq, tk, tv = (torch.from_numpy(x.copy()).requires_grad_(True) for x in (q, k, v))
    tmask = torch.from_numpy(bias4)
    tdctx = torch.from_numpy(dctx)

    def torch_step(drop):
        for t in (tq, tk, tv):
            t.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask, dropout_p=drop)
        out.backward(tdctx)
        return out

    def ours_step(drop, rng=None):
        ctx, cache = fast.attention_core_forward(q, k, v, bias4[:, 0, 0], drop, rng, buffers=buf)
        return ctx, fast.attention_core_backward(dctx, cache)

    # validation, dropout off
    ref_ctx, cache = ref_ops.attention_core_forward(q, k, v, bias4, 0.0)
    ref = (ref_ctx,) + ref_ops.attention_core_backward(dctx, cache)
    ctx, grads = ours_step(0.0)
    ours = (ctx.copy(),) + tuple(g.copy() for g in grads)
    out = torch_step(0.0)
    theirs = (out.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy())
    errs = {}
    for side, got in (("ours", ours), ("torch", theirs)):
        errs[side] = max(float(np.abs(a - r).max() / np.abs(r).max()) for a, r in zip(got, ref))
        if errs[side] > 1e-4:
            raise AssertionError(f"{side} attention disagrees with the reference: {errs[side]}")
    print(f"validation (dropout off, max relative error vs ops/attention.py): {errs}")

    drop_rng = np.random.default_rng(1)
    fns = {"ours": lambda: ours_step(p, drop_rng), "torch sdpa": lambda: torch_step(p)}
    for f in fns.values():
        f()
    times = {s: [] for s in fns}
    for _ in range(args.rounds):
        common.wait_quiet()
        for s, f in fns.items():
            times[s] += common.timed(f, args.steps)
    flops = 12 * B * NH * T * T * hs
    print(f"\nattention core forward + backward, B={B} NH={NH} T={T} hs={hs}, dropout {p}")
    print(f"{'side':<11} {'ms':>8} {'spread':>7} {'GFLOP/s':>8} {'x torch':>8}")
    base = common.summary(times["torch sdpa"])[0]
    rows = {}
    for s in fns:
        med, spread = common.summary(times[s])
        rows[s] = {"ms": med * 1e3, "spread": spread, "gflops": flops / med / 1e9, "x_torch": base / med}
        print(f"{s:<11} {med * 1e3:>8.2f} {spread:>6.0%} {flops / med / 1e9:>8.1f} {base / med:>8.2f}")
    if args.json:
        common.write_json(args.json, {"machine": info, "args": vars(args), "rows": rows, "validation": errs})


if __name__ == "__main__":
    main()
