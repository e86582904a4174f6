"""Which Numba threading layer should the fast step run on? The pretraining step under OpenMP (Numba's
default on Linux) and workqueue (electra_np's default since this benchmark), on 2 threads, and on 1.

    python benchmarks/bench_threading.py [--config exp4] [--rounds 3] [--steps 5]

Each setting in its own process (the layer is fixed at a process's first parallel launch), which first
holds the fast step against the NumPy reference step (same seed, dropout on, B=4) and then times
`--steps` steps at B=32, T=128 after one warm-up step; the settings alternate over the rounds.
`exp4` is the 4-layer H=256 model of examples/finetune_experiment.py; `tiny` and `small` are the presets.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import common  # first: configure({threads} threads from ELECTRA_NP_THREADS, the layer from the environment)
import numpy as np
from electra_np.config import preset
from electra_np.engine import make_step
from electra_np.model import Electra
import numba
kw = dict(embedding_size=128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
          max_position_embeddings=128, vocab_size=8192) if {config!r} == "exp4" else {{}}
setup = Electra.build(preset("small" if {config!r} in ("exp4", "small") else {config!r}, **kw))
params = setup.init_params(0, np.float32)
check = common.validate_fast(setup, params, common.random_batch(setup.disc.vocab_size, 4, 128))
step, rng = make_step(setup, "fast"), np.random.default_rng(0)
batch = common.random_batch(setup.disc.vocab_size, 32, 128)
times = []
for _ in range({steps} + 1):
    t = time.perf_counter(); step(params, batch, rng); times.append(time.perf_counter() - t)
print(json.dumps({{"layer": numba.threading_layer(), "times": times[1:], "validation": check}}))
"""


def run(config, layer, threads, steps):
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, ELECTRA_NP_THREADS=str(threads))
    code = CHILD.format(root=ROOT, bench=os.path.join(ROOT, "benchmarks"), threads=threads, config=config, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="exp4", choices=["exp4", "tiny", "small"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    settings = [("omp", 2), ("workqueue", 2), ("workqueue", 1)]
    times = {s: [] for s in settings}
    for r in range(args.rounds):
        for layer, threads in settings:
            res = run(args.config, layer, threads, args.steps)
            assert res["layer"] == layer, res["layer"]
            times[(layer, threads)] += res["times"]
            print(f"round {r}: {layer} x{threads}: median {np.median(res['times']):.3f} s/step "
                  f"(validation {res['validation']})", flush=True)
    base = np.median(times[("omp", 2)])
    coretype = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    print(f"\n{args.config} pretraining step, B=32 T=128, OPENBLAS_CORETYPE={coretype}")
    print("layer       threads  s/step (median)  spread   x omp")
    for (layer, threads), t in times.items():
        m = np.median(t)
        print(f"{layer:11s} {threads:7d}  {m:15.3f}  {(max(t) - min(t)) / m:6.0%}  {base / m:6.2f}")


if __name__ == "__main__":
    main()
