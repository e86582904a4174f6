"""How fast is discriminator inference (ElectraForPreTraining logits, dropout off), electra_np's fast
encoder against Hugging Face + PyTorch (torch.inference_mode)?

    python benchmarks/bench_inference.py [--config small] [--batch 32] [--length 128] [--rounds 5] [--steps 5]

Each side in its own process, same thread count (ELECTRA_NP_THREADS, default 2), validated first against
electra_np's NumPy reference logits (model.discriminator_forward) on the same weights and batch; then the
sides alternate. Reports median s/batch, spread, tokens/s, ratio, peak RSS.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: it configures the runtime before NumPy is imported)
import numpy as np  # noqa: E402


def _reference_logits(setup, params, batch):
    from electra_np.model import discriminator_forward
    from electra_np.params import sub
    w = sub(params, "discriminator.")
    return discriminator_forward(w, setup.disc, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])[0]


class OursInfer:
    def __init__(self, name, B, T, seed=0):
        from electra_np.engine import make_discriminator
        from electra_np.params import sub
        setup = common.build_setup(name)
        params = setup.init_params(seed, np.float32)
        self.w = sub(params, "discriminator.")
        self.batch = common.random_batch(setup.disc.vocab_size, B, T, seed)
        self.fn = make_discriminator(setup.disc, "fast")
        ref = _reference_logits(setup, params, self.batch)
        err = float(np.abs(self.fn(self.w, self.batch) - ref).max() / np.abs(ref).max())
        if err > 1e-4:
            raise AssertionError(f"fast logits disagree with the reference: {err}")
        self.info = {"validation": {"logits_rel_err": err}, "peak_reset": common.reset_peak_rss()}
        self.run()

    def run(self):
        self.fn(self.w, self.batch)


class HFInfer:
    def __init__(self, name, B, T, seed=0):
        import torch
        torch.set_num_threads(common.THREADS)
        self.torch = torch
        setup = common.build_setup(name)
        params = setup.init_params(seed, np.float32)
        from electra_np.torch_electra import hf_pair
        self.disc, _ = hf_pair(setup, params)
        self.disc.eval()
        b = common.random_batch(setup.disc.vocab_size, B, T, seed)
        self.args = {k: torch.from_numpy(v) for k, v in b.items()}
        ref = _reference_logits(setup, params, b)
        with torch.inference_mode():
            got = self.disc(**self.args).logits.numpy()
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        if err > 1e-4:
            raise AssertionError(f"HF logits disagree with the reference: {err}")
        self.info = {"validation": {"logits_rel_err": err}, "peak_reset": common.reset_peak_rss()}
        self.run()

    def run(self):
        with self.torch.inference_mode():
            self.disc(**self.args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = common.machine()
    common.print_machine(info)
    B, T = args.batch, args.length
    workers = {}
    for s, cls in (("ours", OursInfer), ("hf", HFInfer)):
        workers[s] = common.Worker(cls, name=args.config, B=B, T=T)
        print(f"  {s}: ready, validation {workers[s].info.get('validation')}")
    times = {s: [] for s in workers}
    for _ in range(args.rounds):
        for s, w in workers.items():
            common.wait_quiet()  # the other side's idle thread pools spin for a while after it ran
            times[s] += w.time(args.steps)
    rows = {}
    for s, w in workers.items():
        med, spread = common.summary(times[s])
        rows[s] = {"s_per_batch": med, "spread": spread, "tokens_per_s": B * T / med,
                   "peak_rss_mib": w.stats()["peak_rss_mib"]}
        w.close()
    print(f"\n{args.config} discriminator inference, B={B} T={T}")
    print(f"{'side':<6} {'s/batch':>8} {'spread':>7} {'tokens/s':>9} {'x hf':>6} {'peak RSS':>9}")
    for s, r in rows.items():
        print(f"{s:<6} {r['s_per_batch']:>8.4f} {r['spread']:>6.0%} {r['tokens_per_s']:>9.0f} "
              f"{r['tokens_per_s'] / rows['hf']['tokens_per_s']:>6.2f} {r['peak_rss_mib']:>7.0f}Mi")
    if args.json:
        common.write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
