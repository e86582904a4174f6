"""How fast is one full ELECTRA pretraining step (generator + Gumbel sampling + discriminator, loss
L_MLM + 50 L_disc, dropout on, backward, AdamW), electra_np's fast path against Hugging Face + PyTorch?

    python benchmarks/bench_step.py [--config small] [--batch 32] [--length 128] [--rounds 5] [--steps 3]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py     # OpenBLAS's native kernel
    OPENBLAS_CORETYPE=Haswell python benchmarks/bench_step.py                        # the AVX2 kernel

Each side runs in its own process (its peak RSS is its own) with the same thread count
(ELECTRA_NP_THREADS, default 2) and is first validated: electra_np's fast step against the NumPy reference
step (same seed, dropout on, loss and every gradient), the Hugging Face loss against electra_np's
reference loss (same weights, dropout off, fixed corruption). Then the parent alternates the sides:
`--rounds` rounds of `--steps` steps each. Sides: ours; hf (ElectraForMaskedLM as it runs, its head over
all B*T tokens); hf-gathered (the head applied at the masked positions only).
Reported: median s/step and spread, tokens/s, useful matmul GFLOP/s (common.useful_flops) and their share
of the sgemm peak measured here first, ratio to hf, peak RSS, minor page faults per timed step.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--sides", default="ours,hf,hf-gathered")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    info = common.machine()
    common.print_machine(info)
    common.wait_quiet()
    peak = common.matmul_peak()
    print(f"sgemm peak measured (2048^3, best of 7): {peak:.0f} GFLOP/s")
    setup = common.build_setup(args.config)
    B, T = args.batch, args.length
    per_row = min(round(setup.objective.mask_prob * T), setup.objective.max_predictions(T))
    flops = common.useful_flops(setup, B, T, B * per_row)
    print(f"{args.config}: B={B} T={T}, M={B * per_row} masked, useful matmul work {flops / 1e9:.1f} GFLOP/step")
    makers = {"ours": (common.OursStep, {}), "hf": (common.HFStep, {"gathered": False}),
              "hf-gathered": (common.HFStep, {"gathered": True})}
    sides = args.sides.split(",")
    workers = {}
    for s in sides:
        cls, kw = makers[s]
        workers[s] = common.Worker(cls, name=args.config, B=B, T=T, **kw)
        print(f"  {s}: ready, validation {workers[s].info.get('validation')}")
    times = {s: [] for s in sides}
    faults0 = {s: workers[s].stats()["minflt"] for s in sides}
    others = []
    for _ in range(args.rounds):
        for s in sides:
            # idle thread pools of the side that just ran (OpenBLAS, OpenMP) spin for a while: wait until the
            # CPUs are quiet, so that each side is timed alone
            others.append(common.wait_quiet())
            times[s] += workers[s].time(args.steps)
    print(f"CPU load seen before each timed block (should be ~0%): {', '.join(f'{x:.0%}' for x in others)}")
    rows = {}
    for s in sides:
        st = workers[s].stats()
        med, spread = common.summary(times[s])
        rows[s] = {"s_per_step": med, "spread": spread, "tokens_per_s": B * T / med, "gflops": flops / med / 1e9,
                   "peak_frac": flops / med / 1e9 / peak, "peak_rss_mib": st["peak_rss_mib"],
                   "minflt_per_step": (st["minflt"] - faults0[s]) / len(times[s])}
        workers[s].close()
    base = rows.get("hf", {}).get("tokens_per_s")
    print(f"\n{'side':<12} {'s/step':>8} {'spread':>7} {'tokens/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'x hf':>6} "
          f"{'peak RSS':>9} {'faults/step':>11}")
    for s, r in rows.items():
        ratio = f"{r['tokens_per_s'] / base:.2f}" if base else "-"
        print(f"{s:<12} {r['s_per_step']:>8.3f} {r['spread']:>6.0%} {r['tokens_per_s']:>9.0f} {r['gflops']:>8.1f} "
              f"{r['peak_frac']:>6.1%} {ratio:>6} {r['peak_rss_mib']:>7.0f}Mi {r['minflt_per_step']:>11.0f}")
    if args.json:
        common.write_json(args.json, {"machine": info, "peak_gflops": peak, "args": vars(args), "rows": rows,
                                      "others_load": others})


if __name__ == "__main__":
    main()
