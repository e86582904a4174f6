"""How long until training starts? The kernels are compiled with cache=True: the first process on a
machine compiles them and writes Numba's cache, later processes load it.

    python benchmarks/bench_startup.py [--config tiny] [--batch 32] [--length 128]

1. cold: a new process with an empty NUMBA_CACHE_DIR (a temporary folder): import, build the model,
   run the first fast training step (every kernel compiles).
2. warm: a second process with the same cache folder: the same, kernels loaded from the cache.
Reported per process: wall time from launch to the end of the first step (interpreter start included),
and the split inside: imports, model setup, first step. Target for warm: under 2 s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
from electra_np.fast.runtime import configure
configure()  # before NumPy, as the electra-np commands do
import numpy as np
from electra_np.engine import make_step
from electra_np.config import preset
from electra_np.model import Electra
t1 = time.perf_counter()
setup = Electra.build(preset(sys.argv[1]))
params = setup.init_params(0, np.float32)
B, T = int(sys.argv[2]), int(sys.argv[3])
ids = np.random.default_rng(0).integers(5, setup.disc.vocab_size, (B, T)); ids[:, 0] = 2; ids[:, -1] = 3
step = make_step(setup, "fast")
t2 = time.perf_counter()
loss, metrics, grads = step(params, {"input_ids": ids}, np.random.default_rng(0))
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "setup": t2 - t1, "first_step": t3 - t2, "loss": float(loss)}))
"""


def run(cache, args):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_THREADING_LAYER="workqueue")
    env.setdefault("ELECTRA_NP_THREADS", "2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, args.config, str(args.batch), str(args.length)], env=env,
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["wall"] = wall
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--warm-runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache, args)
        warm = [run(cache, args) for _ in range(args.warm_runs)]
    print(f"{args.config} B={args.batch} T={args.length}, fast step, NUMBA_CACHE_DIR fresh then reused")
    print(f"{'process':<8} {'wall s':>7} {'imports':>8} {'setup':>6} {'1st step':>9}")
    for name, d in [("cold", cold)] + [(f"warm {i + 1}", d) for i, d in enumerate(warm)]:
        print(f"{name:<8} {d['wall']:>7.2f} {d['imports']:>8.2f} {d['setup']:>6.2f} {d['first_step']:>9.2f}")
    same = all(abs(d["loss"] - cold["loss"]) <= 1e-6 * abs(cold["loss"]) for d in warm)
    assert same, "cached kernels changed the loss"
    best = min(d["wall"] for d in warm)
    print(f"first-run compile time ~ {cold['wall'] - best:.1f} s; "
          f"warm process to the end of its first step: {best:.2f} s")


if __name__ == "__main__":
    main()
