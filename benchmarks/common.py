"""What the benchmarks share: machine and version facts, a matmul peak measured in the same run, the
useful-FLOP count of an ELECTRA step, timing, memory counters, worker processes (each side of a comparison
runs in its own process so that its peak RSS is its own; the parent alternates them), and the Hugging Face
side of a training step (electra_np.torch_electra: transformers' models holding electra_np's weights).

Environment: importing this module calls electra_np.fast.runtime.configure(THREADS) before NumPy is
imported, as the `electra-np` commands do, in this process and in every worker (each imports it first):
NUMBA_THREADING_LAYER=workqueue (torch's OpenMP and Numba may share a process), OpenBLAS's short idle spin
(OPENBLAS_THREAD_TIMEOUT=12; PyTorch's BLAS is MKL, which does not read it), and one thread count for both
sides, ELECTRA_NP_THREADS (default 2). A script that imports NumPy before this module is refused.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = int(os.environ.get("ELECTRA_NP_THREADS", "2"))
os.environ.setdefault("ELECTRA_NP_THREADS", str(THREADS))  # workers and subprocesses inherit it
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # for torch's sake too, in every process

if "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
    raise RuntimeError("benchmarks/common.py must be imported before NumPy (or OPENBLAS_THREAD_TIMEOUT set): "
                       "NumPy first loads OpenBLAS with its long idle spin, which slows our side")
from electra_np.fast.runtime import configure, thread_info  # noqa: E402

configure(THREADS)  # before NumPy: the idle spin, the threading layer, the vector width, the thread counts
import numpy as np  # noqa: E402

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

    from electra_np.fast.kernels import fused_attention
    info["numba"] = numba.__version__
    info["numba_512_bit"] = thread_info()["numba_512_bit_vectors"]
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
    """electra_np's fast step + the fast AdamW (engine.make_step, engine.make_update), validated first against
    the NumPy reference step."""

    def __init__(self, name, B, T, seed=0, validate=True):
        from electra_np.engine import make_step, make_update
        from electra_np.optim import AdamW
        self.setup = build_setup(name)
        self.params = self.setup.init_params(seed, np.float32)
        self.batch = random_batch(self.setup.disc.vocab_size, B, T, seed)
        self.rng = np.random.default_rng(seed)
        self.step = make_step(self.setup, "fast")
        self.update = make_update(AdamW(self.params, weight_decay=0.01), "fast")  # as HFStep's optimizer
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
        loss, metrics, grads = self.step(self.params, self.batch, self.rng)
        self.update(self.params, grads, LR)
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
        raise AssertionError(f"fast step disagrees with the reference: loss rel {loss_err:.3g}, "
                             f"worst grad rel {worst:.3g}")
    return {"loss_rel_err": loss_err, "worst_grad_rel_err": worst}


class HFStep:
    """Hugging Face transformers + PyTorch: the same objective, data, masking and optimizer settings, the loss
    electra_np.torch_electra.electra_loss. gathered=False runs ElectraForMaskedLM as it is (its head over all
    B*T tokens, then the masked rows are picked); gathered=True applies the head to the masked rows only, as
    electra_np does."""

    def __init__(self, name, B, T, gathered=False, seed=0, validate=True):
        import torch
        from threadpoolctl import threadpool_limits

        from electra_np.torch_electra import hf_pair
        torch.set_num_threads(THREADS)
        self._limits = threadpool_limits(THREADS)
        self.torch = torch
        self.setup = build_setup(name)
        params = self.setup.init_params(seed, np.float32)
        self.disc, self.gen = hf_pair(self.setup, params)
        self.gathered = gathered
        self.batch = random_batch(self.setup.disc.vocab_size, B, T, seed)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        named = dict(self.disc.named_parameters())
        named.update({f"gen.{k}": p for k, p in self.gen.named_parameters() if all(p is not q for q in named.values())})
        decay = [p for k, p in named.items() if not any(s in k for s in ("LayerNorm", "bias"))]
        no_decay = [p for k, p in named.items() if any(s in k for s in ("LayerNorm", "bias"))]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=LR, eps=1e-6)
        self.info = {"torch_threads": torch.get_num_threads(), "params": sum(p.numel() for p in named.values())}
        if validate:
            self.info["validation"] = self.validate(params)
        self.info["peak_reset"] = reset_peak_rss()
        for _ in range(2):
            self.run()

    def loss(self, batch, corruption):
        from electra_np.torch_electra import electra_loss
        return electra_loss(self.disc, self.gen, self.setup, batch, corruption, gathered=self.gathered).loss

    def validate(self, params):
        """Dropout off, a fixed corruption with fixed samples: the loss equals electra_np's reference loss."""
        from electra_np.masking import Corruption, corrupt
        from electra_np.model import electra_forward
        setup = self.setup
        b = random_batch(setup.disc.vocab_size, 4, self.batch["input_ids"].shape[1], 1)
        c = corrupt(b["input_ids"], b["attention_mask"], setup.excluded_ids, 0.15, setup.objective.max_predictions(
            b["input_ids"].shape[1]), 0.85, np.random.default_rng(2))
        samples = np.random.default_rng(3).integers(5, setup.disc.vocab_size, int(c.masked.sum()))
        c = Corruption(c.masked, c.use_mask_token, samples, np.argwhere(c.masked))
        ref = float(electra_forward(params, setup, b, corruption=c, train=False)[0])
        self.disc.eval()
        self.gen.eval()
        with self.torch.no_grad():
            got = float(self.loss(b, c))
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
