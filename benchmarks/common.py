"""What the benchmarks share: machine and version facts, a matmul peak measured in the same run, the
useful-FLOP count of an ELECTRA step, timing, memory counters, worker processes (each side of a comparison
runs in its own process so that its peak RSS is its own; the parent alternates them), and the Hugging Face
side (ElectraForMaskedLM + ElectraForPreTraining sharing embeddings, loaded with electra_np's weights).

Environment: NUMBA_THREADING_LAYER=workqueue everywhere (torch's OpenMP and Numba may share a process);
the thread count is ELECTRA_NP_THREADS (default 2) for both sides; electra_np is imported before NumPy, as
the `electra-np` commands do, so OPENBLAS_THREAD_TIMEOUT=12 holds in every process (PyTorch's BLAS is MKL,
which does not read it).
"""

import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ:  # see electra_np/threads.py
    raise RuntimeError("benchmarks/common.py must be imported before NumPy (or OPENBLAS_THREAD_TIMEOUT set): "
                       "NumPy first loads OpenBLAS with its long idle spin, which slows our side")
import electra_np  # noqa: E402,F401  (first: it shortens OpenBLAS's idle spin before NumPy loads OpenBLAS, threads.py)
import numpy as np  # noqa: E402

THREADS = int(os.environ.get("ELECTRA_NP_THREADS", "2"))
os.environ.setdefault("ELECTRA_NP_THREADS", str(THREADS))


# ----------------------------------------------------------------------------- facts

def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"), "threads": THREADS}
    import numba

    from electra_np.fast import kernels
    from electra_np.fast.kernels import fused_attention
    info["numba"] = numba.__version__
    info["numba_512_bit"] = kernels.PREFER_512_BIT
    info["fused_attention"] = fused_attention.available(np.float32)
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = ", ".join(f"{d['internal_api']} {d.get('version')} {d.get('architecture')}"
                                 for d in threadpool_info() if d.get("user_api") == "blas")
    except ImportError:
        pass
    for mod in ("torch", "transformers"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "(not installed)"
    return info


def print_machine(info):
    print("machine: " + "; ".join(f"{k}={v}" for k, v in info.items()))


def matmul_peak(n=2048, repeats=7):
    """The best float32 sgemm rate NumPy's BLAS reaches on n x n x n in this process: the "measured peak"
    that useful FLOP/s are a fraction of (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = min(timed(lambda: np.matmul(a, b, out=c), repeats))
    return 2 * n ** 3 / best / 1e9


def useful_flops(setup, B, T, M):
    """Matrix-product FLOPs one pretraining step needs (forward, and backward = 2x forward): every linear
    layer over B*T tokens, the attention products, the generator head over the M masked positions only."""
    N = B * T

    def encoder(c):
        f = 2 * N * c.embedding_size * c.hidden_size if c.embedding_size != c.hidden_size else 0
        per_layer = 2 * N * c.hidden_size * (4 * c.hidden_size + 2 * c.intermediate_size)
        per_layer += 2 * 2 * B * T * T * c.hidden_size  # q k^T and P v, over all heads
        return f + c.num_hidden_layers * per_layer

    g, d = setup.gen, setup.disc
    fwd = encoder(g) + 2 * M * (g.hidden_size * g.embedding_size + g.embedding_size * g.vocab_size)
    if setup.objective.objective == "electra":
        fwd += encoder(d) + 2 * N * (d.hidden_size * d.hidden_size + d.hidden_size)
    return 3 * fwd


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_fraction(interval=0.5):
    """Share of all CPUs busy over `interval` s (call it while this benchmark's own processes are idle:
    then it is other programs' load). 0 where /proc/stat is absent."""
    try:
        b0, t0 = _cpu_times()
        time.sleep(interval)
        b1, t1 = _cpu_times()
    except OSError:
        return 0.0
    return (b1 - b0) / max(t1 - t0, 1)


def wait_quiet(threshold=0.10, max_wait=600.0):
    """Wait (up to max_wait s) until other programs keep the CPUs less than `threshold` busy: another
    process on a 2-core machine halves what any benchmark measures. Returns the last busy fraction."""
    deadline = time.time() + max_wait
    busy = busy_fraction()
    while busy > threshold and time.time() < deadline:
        time.sleep(2.0)
        busy = busy_fraction()
    return busy


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(times):
    med = statistics.median(times)
    return med, (max(times) - min(times)) / med if med else 0.0


def memory():
    """Peak RSS (MiB: the high-water mark since the process started or since reset_peak_rss), current RSS
    (MiB), minor and major page faults."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss, peak = 0.0, ru.ru_maxrss / 1024
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    return {"peak_rss_mib": peak, "rss_mib": rss, "minflt": ru.ru_minflt, "majflt": ru.ru_majflt}


def reset_peak_rss():
    """Make the high-water mark the current RSS (Linux: /proc/self/clear_refs, 5), so that a side's peak
    is that of its training steps and not of the check run before them (Hugging Face's validation; ours
    runs in a process of its own). Returns whether it worked."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give the check's freed heap back to the system
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, AttributeError):
        return False
    return True


def random_batch(vocab, B, T, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (B, T))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": np.ones((B, T), np.int64), "token_type_ids": np.zeros((B, T), np.int64)}


def build_setup(name):
    from electra_np.config import preset
    from electra_np.model import Electra
    return Electra.build(preset(name))


# ----------------------------------------------------------------------------- worker processes

class Worker:
    """A child process holding one side of a comparison: `factory(**kwargs)` (a module-level function)
    returns an object with .run() (one timed unit of work); the parent calls time(k) and stats()."""

    def __init__(self, factory, **kwargs):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, factory, kwargs), daemon=True)
        self.proc.start()
        msg = self.conn.recv()
        if isinstance(msg, dict) and "error" in msg:
            raise RuntimeError(msg["error"])
        self.info = msg

    def time(self, k):
        self.conn.send(("time", k))
        return self._recv()

    def stats(self):
        self.conn.send(("stats", None))
        return self._recv()

    def call(self, name, arg=None):
        self.conn.send((name, arg))
        return self._recv()

    def _recv(self):
        msg = self.conn.recv()
        if isinstance(msg, dict) and "error" in msg:
            raise RuntimeError(msg["error"])
        return msg

    def close(self):
        try:
            self.conn.send(("quit", None))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=30)


def _serve(conn, factory, kwargs):
    import traceback
    try:
        obj = factory(**kwargs)
        conn.send(getattr(obj, "info", {}))
    except Exception:
        conn.send({"error": traceback.format_exc()})
        return
    while True:
        cmd, arg = conn.recv()
        try:
            if cmd == "quit":
                return
            if cmd == "time":
                conn.send(timed(obj.run, arg))
            elif cmd == "stats":
                conn.send(memory())
            else:
                conn.send(getattr(obj, cmd)(arg))
        except Exception:
            conn.send({"error": traceback.format_exc()})


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- the two sides of a step

LR = 1e-4


class OursStep:
    """electra_np's fast step + the fast AdamW, validated first against the NumPy reference step."""

    def __init__(self, name, B, T, seed=0, validate=True):
        from electra_np.engine import make_step
        from electra_np.fast.runtime import set_num_threads, thread_info
        set_num_threads(THREADS)
        self.setup = build_setup(name)
        self.params = self.setup.init_params(seed, np.float32)
        self.batch = random_batch(self.setup.disc.vocab_size, B, T, seed)
        self.rng = np.random.default_rng(seed)
        self.step = make_step(self.setup, "fast")
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.t = 0
        self.info = {"threads": thread_info()}
        if validate:  # in a process of its own: the reference step's freed heap would stay in this one
            import subprocess
            code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import common; "
                    f"print(json.dumps(common.validate_fast_for({name!r}, {T}, {seed})))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"validation failed:\n{out.stderr}")
            self.info["validation"] = json.loads(out.stdout.strip().splitlines()[-1])
        for _ in range(2):
            self.run()

    def run(self):
        from electra_np.fast.kernels.adamw import adamw_update
        loss, metrics, grads = self.step(self.params, self.batch, self.rng)
        self.t += 1
        adamw_update(self.params, grads, self.m, self.v, LR, self.t)
        self.last_loss = float(loss)


def validate_fast_for(name, T, seed=0):
    """validate_fast on the config `name` with OursStep's parameters (same seed), at B=4."""
    setup = build_setup(name)
    return validate_fast(setup, setup.init_params(seed, np.float32), random_batch(setup.disc.vocab_size, 4, T, 1))


def validate_fast(setup, params, batch, tol=2e-3):
    """The fast step and the NumPy reference step, same seed, dropout on: losses and every gradient."""
    from electra_np.engine import make_step
    lr, _, gr = make_step(setup, "numpy")(params, batch, np.random.default_rng(5))
    lf, _, gf = make_step(setup, "fast")(params, batch, np.random.default_rng(5))
    worst = max(float(np.abs(gf[k] - gr[k]).max()) / max(float(np.abs(gr[k]).max()), 1e-3) for k in gr)
    loss_err = abs(float(lf) - float(lr)) / abs(float(lr))
    if worst > tol or loss_err > 1e-4:
        raise AssertionError(f"fast step disagrees with the reference: loss rel {loss_err:.3g}, worst grad rel {worst:.3g}")
    return {"loss_rel_err": loss_err, "worst_grad_rel_err": worst}


def hf_models(setup, params):
    """ElectraForPreTraining + ElectraForMaskedLM holding electra_np's weights, embeddings shared as in
    pretraining (the generator's embedding module is the discriminator's), output projection tied."""
    import torch
    import transformers
    from electra_np.params import generator_params, sub

    def cfg(c):
        d = c.to_dict()
        del d["model_type"]
        return transformers.ElectraConfig(**d)

    disc = transformers.ElectraForPreTraining(cfg(setup.disc))
    gen = transformers.ElectraForMaskedLM(cfg(setup.gen))
    for model, w in ((disc, sub(params, "discriminator.")), (gen, generator_params(params))):
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or any("generator_lm_head.weight" != k and "position_ids" not in k for k in missing):
            raise RuntimeError(f"HF model does not match electra_np's weights: missing {missing}, unexpected {unexpected}")
    gen.electra.embeddings = disc.electra.embeddings  # shared embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight  # tied output projection
    return disc, gen


class HFStep:
    """Hugging Face transformers + PyTorch: the same objective, data, masking and optimizer settings.
    gathered=False runs ElectraForMaskedLM as it is (its head over all B*T tokens, then the masked rows
    are picked); gathered=True applies the head to the masked rows only, as electra_np does."""

    def __init__(self, name, B, T, gathered=False, seed=0, validate=True):
        import torch
        torch.set_num_threads(THREADS)
        from threadpoolctl import threadpool_limits
        self._limits = threadpool_limits(THREADS)
        self.torch = torch
        self.setup = build_setup(name)
        params = self.setup.init_params(seed, np.float32)
        self.disc, self.gen = hf_models(self.setup, params)
        self.gathered = gathered
        self.batch = random_batch(self.setup.disc.vocab_size, B, T, seed)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        named = dict(self.disc.named_parameters())
        named.update({f"gen.{k}": p for k, p in self.gen.named_parameters() if all(p is not q for q in named.values())})
        decay = [p for k, p in named.items() if not any(s in k for s in ("LayerNorm", "bias"))]
        no_decay = [p for k, p in named.items() if any(s in k for s in ("LayerNorm", "bias"))]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                     lr=LR, eps=1e-6)
        self.info = {"torch_threads": torch.get_num_threads(), "params": sum(p.numel() for p in named.values())}
        if validate:
            self.info["validation"] = self.validate(params)
        self.info["peak_reset"] = reset_peak_rss()
        for _ in range(2):
            self.run()

    def loss(self, batch, corruption, samples=None):
        torch, setup = self.torch, self.setup
        ids = torch.from_numpy(batch["input_ids"])
        mask = torch.from_numpy(batch["attention_mask"])
        types = torch.from_numpy(batch["token_type_ids"])
        pos = torch.from_numpy(np.flatnonzero(corruption.masked))
        gen_ids = torch.from_numpy(np.where(corruption.use_mask_token, setup.mask_id, batch["input_ids"]))
        if self.gathered:
            h = self.gen.electra(gen_ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            hm = h.reshape(-1, h.shape[-1])[pos]
            logits = self.gen.generator_lm_head(self.gen.generator_predictions(hm))
        else:
            logits = self.gen(gen_ids, attention_mask=mask, token_type_ids=types).logits
            logits = logits.reshape(-1, logits.shape[-1])[pos]
        labels = ids.reshape(-1)[pos]
        mlm = torch.nn.functional.cross_entropy(logits, labels)
        with torch.no_grad():
            if samples is None:
                u = torch.rand_like(logits)
                g = -torch.log(-torch.log(u + 1e-9) + 1e-9)
                samples = torch.argmax(logits / setup.objective.temperature + g, dim=-1)
            else:
                samples = torch.from_numpy(samples)
        disc_ids = ids.clone()
        disc_ids.view(-1)[pos] = samples
        y = (disc_ids != ids).float()
        z = self.disc(disc_ids, attention_mask=mask, token_type_ids=types).logits
        w = mask.float()
        disc = torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=w, reduction="sum") / w.sum().clamp(min=1)
        return mlm + setup.objective.disc_weight * disc

    def validate(self, params):
        """Dropout off, a fixed corruption with fixed samples: the loss equals electra_np's reference loss."""
        from electra_np.masking import Corruption, corrupt
        from electra_np.model import electra_forward
        setup = self.setup
        b = random_batch(setup.disc.vocab_size, 4, self.batch["input_ids"].shape[1], 1)
        c = corrupt(b["input_ids"], b["attention_mask"], setup.excluded_ids, 0.15, setup.objective.max_predictions(
            b["input_ids"].shape[1]), 0.85, np.random.default_rng(2))
        samples = np.random.default_rng(3).integers(5, setup.disc.vocab_size, int(c.masked.sum()))
        c = Corruption(c.masked, c.use_mask_token, samples)
        ref = float(electra_forward(params, setup, b, corruption=c, train=False)[0])
        self.disc.eval()
        self.gen.eval()
        with self.torch.no_grad():
            got = float(self.loss(b, c, samples))
        self.disc.train()
        self.gen.train()
        err = abs(got - ref) / abs(ref)
        if err > 1e-4:
            raise AssertionError(f"the Hugging Face side disagrees with electra_np's reference: {got} vs {ref}")
        return {"loss_rel_err": err}

    def run(self):
        from electra_np.masking import corrupt
        setup, b = self.setup, self.batch
        T = b["input_ids"].shape[1]
        c = corrupt(b["input_ids"], b["attention_mask"], setup.excluded_ids, setup.objective.mask_prob,
                    setup.objective.max_predictions(T), setup.objective.mask_token_prob, self.rng)
        loss = self.loss(b, c)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.last_loss = float(loss.detach())
