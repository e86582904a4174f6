"""Does memory stay flat? The fast step + AdamW run for --steps steps; resident memory, peak RSS and page
faults are read after steps 1, 10, 50 and 100. Buffers are allocated on the first step of a (B, T) and
reused, so from step 10 to step 100 peak RSS should not grow and minor page faults per step should be ~0.

    python benchmarks/bench_memory.py [--config small] [--batch 32] [--length 128] [--steps 100] [--hf]

--hf runs the Hugging Face + PyTorch step the same way, in its own process, for comparison.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

CHECKPOINTS = (1, 10, 50, 100)


class Probe:
    def __init__(self, kind, name, B, T):
        self.side = common.OursStep(name, B, T, validate=(kind == "ours")) if kind == "ours" else \
            common.HFStep(name, B, T, validate=True)
        self.info = {}

    def trace(self, steps):
        out = {0: common.memory()}  # OursStep/HFStep already ran 2 warm-up steps
        for i in range(1, steps + 1):
            self.side.run()
            if i in CHECKPOINTS or i == steps:
                out[i] = common.memory()
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--hf", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = common.machine()
    common.print_machine(info)
    results = {}
    for kind in ("ours", "hf") if args.hf else ("ours",):
        w = common.Worker(Probe, kind=kind, name=args.config, B=args.batch, T=args.length)
        trace = w.call("trace", args.steps)
        w.close()
        results[kind] = trace
        print(f"\n{kind}: {args.config} B={args.batch} T={args.length} (after 2 warm-up steps)")
        print(f"{'step':>5} {'RSS MiB':>8} {'peak MiB':>9} {'minor faults':>13} {'faults/step since 10':>21}")
        for i, m in sorted(trace.items()):
            since = (m["minflt"] - trace[10]["minflt"]) / (i - 10) if i > 10 and 10 in trace else float("nan")
            print(f"{i:>5} {m['rss_mib']:>8.0f} {m['peak_rss_mib']:>9.0f} {m['minflt']:>13} {since:>21.1f}")
        last = max(trace)
        if 10 in trace and last > 10:
            grow = trace[last]["peak_rss_mib"] - trace[10]["peak_rss_mib"]
            print(f"peak RSS growth, step 10 -> {last}: {grow:+.1f} MiB; "
                  f"minor faults/step: {(trace[last]['minflt'] - trace[10]['minflt']) / (last - 10):.1f}")
    if args.json:
        common.write_json(args.json, {"machine": info, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
