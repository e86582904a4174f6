"""The pretraining loop: batches -> engine step -> clipped AdamW update, with logging, held-out
evaluation, atomic checkpoints and exact resume.

    for step in range(start, steps):
        batch = train_data.batch(next(sampler))          # epoch-shuffled rows (data.BatchSampler)
        loss, metrics, grads = step_fn(params, batch, rng)   # engine.make_step: forward + backward
        grads, norm = clip_by_global_norm(grads, 1.0)
        optimizer.update(params, grads, learning_rate(step, lr, warmup, steps))

The optimizer and schedule are the official recipe (optim.py): AdamW, weight decay 0.01, clip 1.0,
linear warmup then linear decay to 0. The official warmup is 10,000 steps; a short run scales it
to min(10000, steps // 10).

Exact resume: everything random comes from one numpy Generator (masking, Gumbel samples, dropout)
and one BatchSampler (data order). A checkpoint stores both states with the parameters and the
AdamW moments, so a resumed run computes bit for bit the losses of a run never interrupted.
Evaluation draws from its own Generator with a fixed seed: every evaluation sees the same masks
and samples, so evaluations are comparable, and it never disturbs the training stream.

Files in out_dir (RUN_FILES): run.json (the run's settings), vocab.txt, checkpoint.npz (the last
checkpoint, checkpoint.py), metrics.jsonl (one JSON object per log / eval line), log.txt (the
console log), and at the end discriminator/ and generator/ (model.npz + config.json + vocab.txt,
ready for fine-tuning).
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from . import checkpoint
from ..engine import default_backend, make_step, make_update
from ..model import Electra, electra_forward
from ..optim import AdamW, clip_by_global_norm, global_norm, learning_rate
from ..params import check_params, discriminator_params, generator_params

CHECKPOINT_NAME = "checkpoint.npz"
RUN_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "log.txt"
VOCAB_NAME = "vocab.txt"
MODEL_DIRS = ("discriminator", "generator")
RUN_FILES = (RUN_NAME, CHECKPOINT_NAME, METRICS_NAME, LOG_NAME, VOCAB_NAME) + MODEL_DIRS
EVAL_SEED = 1234  # masks and samples of every evaluation
DEMO_SEED = 7
OFFICIAL_WARMUP = 10_000
DTYPES = ("float32", "float64")
PEAK_LR = {"tiny": 5e-4, "small": 5e-4, "base": 2e-4}  # Clark et al. 2020, Table 7 (tiny: as small)


class RunError(ValueError):
    """Bad input to a run (settings, files, a checkpoint that does not fit): nothing was written."""


class TrainingDiverged(RuntimeError):
    """A loss or the gradient norm became NaN or infinite; the last checkpoint is left as it was."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. LOCKED fields define the run: resuming with another value is refused.
    The rest (logging, backend, where the data comes from) may change between sessions."""

    preset: str = "tiny"
    steps: int = 300
    batch_size: int = 32
    seq_len: int = 128
    lr: float = None                 # None: PEAK_LR[preset]
    warmup: int = None               # None: min(10000, steps // 10)
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    eval_examples: int = 512         # held-out examples per evaluation (the first ones)
    log_every: int = 10
    eval_every: int = 100
    save_every: int = 100
    backend: str = None              # None: "fast" when electra_np.fast imports, else "numpy"
    stop_at: int = None              # end this session after this step (with a checkpoint)

    LOCKED = ("preset", "steps", "batch_size", "seq_len", "lr", "warmup", "weight_decay", "clip_norm", "seed",
              "dtype")

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "eval_examples"):
            _check_int(name, getattr(self, name), 1)
        for name in ("log_every", "eval_every", "save_every"):
            _check_int(name, getattr(self, name), 0)
        _check_int("seed", self.seed, 0)
        if self.warmup is not None:
            _check_int("warmup", self.warmup, 0)
        if self.stop_at is not None:
            _check_int("stop_at", self.stop_at, 1)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise RunError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("weight_decay", "clip_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < math.inf):
                raise RunError(f"{name} must be a number >= 0, got {v!r}")
        if self.dtype not in DTYPES:
            raise RunError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.backend not in (None, "numpy", "fast"):
            raise RunError(f"backend must be 'numpy' or 'fast', got {self.backend!r}")
        if self.lr is None:  # resolved here, so that run.json and checkpoints record the numbers used
            object.__setattr__(self, "lr", PEAK_LR.get(self.preset, 5e-4))
        if self.warmup is None:
            object.__setattr__(self, "warmup", min(OFFICIAL_WARMUP, self.steps // 10))

    def to_dict(self):
        return dataclasses.asdict(self)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RunError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ----------------------------------------------------------------------------- out_dir

def existing_run_files(out_dir):
    out_dir = Path(out_dir)
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def check_out_dir(out_dir, resume=False, overwrite=False):
    """Refuse to start a new run over another one (unless overwrite), or to resume where no checkpoint is."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"out_dir {out_dir} exists and is not a folder")
    if resume:
        if not (out_dir / CHECKPOINT_NAME).is_file():
            raise RunError(f"nothing to resume: no {CHECKPOINT_NAME} in {out_dir}")
        return
    found = existing_run_files(out_dir)
    if found and not overwrite:
        raise RunError(f"out_dir {out_dir} already holds a run ({', '.join(found)}); pass --resume to continue "
                       "it, --overwrite to replace it, or choose another --out_dir")


def clear_run(out_dir):
    """Remove the files of an earlier run (only the names this module writes)."""
    out_dir = Path(out_dir)
    for name in existing_run_files(out_dir):
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# ----------------------------------------------------------------------------- resume checks

def data_fingerprint(meta):
    """What identifies a prepared corpus (data.prepare_corpus meta): resuming on other data is refused."""
    keys = ("vocab_sha256", "max_seq_length", "seed", "eval_fraction", "split_sentences", "documents", "lines",
            "splits")
    return {k: meta.get(k) for k in keys}


def vocab_sha256(tokens):
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def resume_differences(meta, model_config, pretraining_config, tc, vocab, data_fp=None, do_lower_case=None):
    """The settings in which a run differs from a checkpoint's, as readable lines; [] if it may resume."""
    diffs = []

    def compare(section, old, new, keys):
        for k in keys:
            if old.get(k) != new.get(k):
                diffs.append(f"{section}{k}: checkpoint has {old.get(k)!r}, this run {new.get(k)!r}")

    old_model, new_model = meta["model_config"], model_config.to_dict()
    compare("", old_model, new_model, sorted(set(old_model) | set(new_model)))
    old_pre, new_pre = meta["pretraining_config"], dataclasses.asdict(pretraining_config)
    compare("", old_pre, new_pre, sorted(set(old_pre) | set(new_pre)))
    compare("", meta["training"], tc.to_dict(), TrainConfig.LOCKED)
    if do_lower_case is not None and meta.get("do_lower_case") != do_lower_case:
        diffs.append(f"lowercase: checkpoint has {meta.get('do_lower_case')!r}, this run {do_lower_case!r}")
    if meta["vocab"] != list(vocab):
        old, new = meta["vocab"], list(vocab)
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        diffs.append(f"vocabulary: checkpoint has {len(old)} tokens, this run {len(new)}; first difference "
                     f"at id {first}")
    if data_fp is not None and meta.get("data") is not None and meta["data"] != data_fp:
        keys = [k for k in data_fp if meta["data"].get(k) != data_fp.get(k)]
        diffs.append(f"training data: the prepared corpus differs ({', '.join(keys)})")
    return diffs


# ----------------------------------------------------------------------------- evaluation

def evaluate(params, setup, data, batch_size, max_examples, seed=EVAL_SEED):
    """Held-out metrics, dropout off, masks and samples from a fixed seed (comparable across evaluations).

    Averages are over tokens, not batches: MLM terms over masked positions, discriminator terms over
    real (non-padding) tokens. Uses the NumPy forward pass (no backward needed).
    Returns: dict with loss, mlm_loss, mlm_acc (+ disc_loss, disc_acc, replaced_frac, disc_baseline_acc), examples.
    """
    rng = np.random.default_rng(seed)
    n = min(len(data), max_examples)
    sums, counts = {}, {"mlm": 0, "disc": 0}
    for start in range(0, n, batch_size):
        batch = data.batch(np.arange(start, min(start + batch_size, n)))
        _, m, cache = electra_forward(params, setup, batch, rng=rng, train=False)
        weights = {"mlm": int(cache["corruption"].masked.sum()), "disc": int(batch["attention_mask"].sum())}
        for k, v in m.items():
            if k == "loss":
                continue
            kind = "mlm" if k.startswith("mlm") else "disc"
            sums[k] = sums.get(k, 0.0) + v * weights[kind]
        counts = {kind: counts[kind] + w for kind, w in weights.items()}
    out = {k: v / max(counts["mlm" if k.startswith("mlm") else "disc"], 1) for k, v in sums.items()}
    out["loss"] = out["mlm_loss"] + (setup.objective.disc_weight * out["disc_loss"] if "disc_loss" in out else 0.0)
    out["examples"] = n
    return out


# ----------------------------------------------------------------------------- the demo

def demo(params, setup, tokenizer, data, max_tokens=40, seed=DEMO_SEED):
    """One held-out sentence, corrupted by the generator, with the discriminator's P(replaced) per token.

    Takes the first example whose first segment has >= 12 tokens, cut to max_tokens - 2 tokens.
    Returns: dict with tokens (original), corrupted, masked, replaced (bool lists) and p_replaced
    (floats; None for the MLM objective, which has predicted instead), all without [CLS]/[SEP].
    """
    ids = None
    for i in range(min(len(data), 200)):
        row = data.batch([i])["input_ids"][0]
        seps = np.flatnonzero(row == tokenizer.sep_id)
        segment = row[1:seps[0]] if len(seps) else row[1:]
        if len(segment) >= 12 or ids is None or len(segment) > len(ids):
            ids = segment[:max_tokens - 2]
        if len(segment) >= 12:
            break
    input_ids = np.array([[tokenizer.cls_id, *ids, tokenizer.sep_id]], np.int64)  # (1, T)
    batch = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids),
             "attention_mask": np.ones_like(input_ids)}
    rng = np.random.default_rng(seed)
    _, _, cache = electra_forward(params, setup, batch, rng=rng, train=False)
    c = cache["corruption"]
    masked = c.masked[0, 1:-1].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    out = {"tokens": tokens, "masked": masked}
    if setup.objective.objective == "mlm":
        predicted = iter(cache["mlm"][0].argmax(-1).tolist())  # softmax probabilities (M, V), row-major order
        out["predicted"] = [tokenizer.convert_ids_to_tokens(next(predicted)) if m else None for m in masked]
        return out
    corrupted = input_ids.copy()
    corrupted.reshape(-1)[np.flatnonzero(c.masked)] = c.samples
    logits = cache["disc_logits"][0, 1:-1].astype(np.float64)
    out.update(corrupted=tokenizer.convert_ids_to_tokens(corrupted[0, 1:-1]),
               replaced=(cache["labels"][0, 1:-1] != 0).tolist(), p_replaced=(1 / (1 + np.exp(-logits))).tolist())
    return out


def _render(tokens, marks, changed=None):
    """Wordpieces joined as text, marked pieces as [piece]. A '##' piece is glued to the one before it,
    unless either is `changed` (a generator sample: shown as a piece of its own)."""
    text, previous_changed = "", True
    changed = changed or [False] * len(tokens)
    for tok, mark, new in zip(tokens, marks, changed):
        glue = tok.startswith("##") and not new and not previous_changed
        piece = tok[2:] if glue else tok
        piece = f"[{piece}]" if mark else piece
        text += piece if glue else " " + piece
        previous_changed = new
    return text.strip()


def format_demo(d):
    lines = []
    if "predicted" in d:
        lines.append("  masked:    " + _render([("[MASK]" if m else t) for t, m in zip(d["tokens"], d["masked"])],
                                               d["masked"]))
        lines.append("  original:  " + _render(d["tokens"], d["masked"]))
        lines.append("  predicted: " + _render([p or t for t, p in zip(d["tokens"], d["predicted"])], d["masked"]))
        return lines
    flagged = [p > 0.5 for p in d["p_replaced"]]
    lines.append("  original:  " + _render(d["tokens"], d["replaced"], d["replaced"]))
    lines.append("  corrupted: " + _render(d["corrupted"], d["replaced"], d["replaced"])
                 + "    ([..] = replaced by the generator)")
    lines.append("  flagged:   " + _render(d["corrupted"], flagged, d["replaced"])
                 + "    ([..] = the discriminator says replaced)")
    lines.append("  P(replaced) at the masked positions and wherever the discriminator flags a token:")
    for i, tok in enumerate(d["corrupted"]):
        if not (d["masked"][i] or flagged[i]):
            continue
        if d["replaced"][i]:
            truth = f"replaced (was {d['tokens'][i]!r})"
        else:
            truth = "original" + (" (generator sampled the original)" if d["masked"][i] else "")
        verdict = "correct" if flagged[i] == d["replaced"][i] else "wrong"
        lines.append(f"    {tok!r:>16}  p={d['p_replaced'][i]:.2f}  {truth:<32} {verdict}")
    return lines


# ----------------------------------------------------------------------------- saving

def save_for_finetuning(out_dir, setup, params, tokenizer):
    """out_dir/discriminator and out_dir/generator: model.npz (Hugging Face state-dict names) + config.json +
    vocab.txt + tokenizer_config.json; also model.safetensors when electra_np.hf and safetensors are there.
    The MLM objective has only the generator (the BERT-style baseline to fine-tune). Returns the folders."""
    out_dir = Path(out_dir)
    models = [("generator", setup.gen, generator_params(params), "ElectraForMaskedLM")]
    if setup.objective.objective == "electra":
        models.insert(0, ("discriminator", setup.disc, discriminator_params(params), "ElectraForPreTraining"))
    written = {}
    for kind, config, weights, architecture in models:
        final = out_dir / kind
        tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".tmp-{kind}-"))
        try:
            with open(tmp / "model.npz", "wb") as f:
                np.savez(f, **weights)
                f.flush()
                os.fsync(f.fileno())
            config.save_json(tmp / "config.json", architectures=[architecture])
            tokenizer.save(tmp / "vocab.txt")
            (tmp / "tokenizer_config.json").write_text(json.dumps(
                {"tokenizer_class": "ElectraTokenizer", "do_lower_case": tokenizer.do_lower_case,
                 "model_max_length": config.max_position_embeddings}, indent=2) + "\n")
            _save_hf(tmp, config, weights, kind)
            os.chmod(tmp, 0o755)
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written[kind] = final
    return written


def _save_hf(folder, config, weights, kind):
    """Hugging Face safetensors too, if electra_np.hf and safetensors are available."""
    try:
        import safetensors  # noqa: F401
        from .. import hf
    except ImportError:
        return
    if hasattr(hf, "save_pretrained"):
        hf.save_pretrained(folder, config, weights, kind)


def replace_dir(tmp, final):
    """Move a finished folder into place; an old folder of the same name is moved away first."""
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".old-{final.name}-"))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    atomic.fsync_dir(final.parent)


# ----------------------------------------------------------------------------- the loop

def format_time(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_metrics(m, electra):
    """The loss / accuracy part of a log line."""
    text = f"loss {m['loss']:.4f} | mlm {m['mlm_loss']:.4f} acc {m['mlm_acc']:.3f}"
    if electra:
        text += (f" | disc {m['disc_loss']:.4f} acc {m['disc_acc']:.3f} (base {m['disc_baseline_acc']:.3f})"
                 f" | replaced {m['replaced_frac']:.3f}")
    return text


class _Log:
    """Console lines to stdout (or a callback) and to log.txt; metrics to metrics.jsonl."""

    def __init__(self, out_dir, echo):
        self.out_dir, self.echo = Path(out_dir), echo

    def line(self, text):
        if self.echo:
            self.echo(text)
        with open(self.out_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(text + "\n")

    def metrics(self, record):
        with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _truncate_metrics(out_dir, step):
    """On resume, drop the metric records that the interrupted session wrote after its last checkpoint."""
    path = Path(out_dir) / METRICS_NAME
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    atomic.atomic_write_text(path, "".join(kept))


class _StopFlag:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step with a checkpoint; a second Ctrl-C
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def build_setup(model_config, pretraining_config, tokenizer):
    return Electra.build(model_config, pretraining_config, mask_id=tokenizer.mask_id, cls_id=tokenizer.cls_id,
                         sep_id=tokenizer.sep_id)


def train(out_dir, model_config, pretraining_config, tc, tokenizer, train_data, eval_data=None, data_info=None,
          resume=False, overwrite=False, echo=print):
    """Pretrain (or, with resume=True, continue from out_dir/checkpoint.npz) and save the result.

    Inputs: model_config: ElectraConfig of the discriminator (vocab_size = len(tokenizer));
            pretraining_config: PretrainingConfig; tc: TrainConfig; tokenizer: tokenizer.Tokenizer;
            train_data, eval_data: data.PretrainingData splits (eval_data may be None or empty);
            data_info: JSON-able description of the data (its "fingerprint" is checked on resume);
            resume: continue out_dir's run; overwrite: replace the run in out_dir (else refused);
            echo: called with each console line (None: silent).
    Returns: a summary dict (status "finished" | "stopped", step, final eval, paths, demo).
    Raises: RunError on settings that do not fit (nothing written); TrainingDiverged on NaN/inf.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume, overwrite)
    setup, dtype = build_setup(model_config, pretraining_config, tokenizer), np.dtype(tc.dtype)
    electra = pretraining_config.objective == "electra"
    if train_data.max_seq_length != tc.seq_len:
        raise RunError(f"the prepared data has sequences of {train_data.max_seq_length} tokens, seq_len is {tc.seq_len}")
    if tc.seq_len > model_config.max_position_embeddings:
        raise RunError(f"seq_len {tc.seq_len} > max_position_embeddings {model_config.max_position_embeddings}; "
                       f"pass --max_position_embeddings {tc.seq_len} or a shorter --seq_len")
    if model_config.vocab_size != len(tokenizer):
        raise RunError(f"vocab_size {model_config.vocab_size} differs from the vocabulary's {len(tokenizer)} tokens")
    if tc.batch_size > len(train_data):
        raise RunError(f"batch_size {tc.batch_size} is larger than the {len(train_data)} training examples")
    data_info = data_info or {}
    ckpt_path = out_dir / CHECKPOINT_NAME
    backend = tc.backend or default_backend()

    params = setup.init_params(tc.seed, dtype)
    optimizer = AdamW(params, weight_decay=tc.weight_decay)
    rng = np.random.default_rng([tc.seed, 1])  # masking, samples, dropout (init used default_rng(seed))
    sampler = train_data.sampler(tc.batch_size, seed=tc.seed)
    step, elapsed_before = 0, 0.0
    if resume:
        arrays, meta = checkpoint.load(ckpt_path)
        diffs = resume_differences(meta, model_config, pretraining_config, tc, tokenizer.ids_to_tokens,
                                   data_info.get("fingerprint"), tokenizer.do_lower_case)
        if diffs:
            raise RunError(f"cannot resume {ckpt_path}: this run differs from it in\n  " + "\n  ".join(diffs))
        saved = checkpoint.group(arrays, "params")
        try:
            check_params(saved, setup.shapes(), what=f"{ckpt_path} parameters")
        except ValueError as e:
            raise checkpoint.CheckpointError(str(e)) from None
        for k in params:
            params[k][...] = saved[k]
        optimizer.load_state_dict({"t": meta["optimizer"]["t"],
                                   **{f"m.{k}": v for k, v in checkpoint.group(arrays, "adam_m").items()},
                                   **{f"v.{k}": v for k, v in checkpoint.group(arrays, "adam_v").items()}})
        rng.bit_generator.state = meta["rng_state"]
        sampler.set_state(meta["sampler_state"])
        step, elapsed_before = int(meta["step"]), float(meta.get("elapsed", 0.0))
        _truncate_metrics(out_dir, step)
    elif existing_run_files(out_dir):
        clear_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    run_meta = {"model_config": model_config.to_dict(), "pretraining_config": dataclasses.asdict(pretraining_config),
                "training": tc.to_dict(), "vocab": list(tokenizer.ids_to_tokens),
                "do_lower_case": tokenizer.do_lower_case, "data": data_info.get("fingerprint"),
                "data_source": data_info.get("source")}
    atomic.atomic_write_text(out_dir / RUN_NAME, json.dumps(
        {k: v for k, v in run_meta.items() if k != "vocab"}, indent=2) + "\n")
    tokenizer.save(out_dir / VOCAB_NAME)
    log = _Log(out_dir, echo)

    def save(step, elapsed):
        arrays = {f"params/{k}": v for k, v in params.items()}
        arrays.update({f"adam_m/{k}": v for k, v in optimizer.m.items()})
        arrays.update({f"adam_v/{k}": v for k, v in optimizer.v.items()})
        checkpoint.save(ckpt_path, arrays, {**run_meta, "step": step, "elapsed": elapsed,
                                            "optimizer": {"t": optimizer.t}, "rng_state": rng.bit_generator.state,
                                            "sampler_state": sampler.state()})

    n_params = sum(p.size for p in params.values())
    warmup, peak, T, B = tc.warmup, tc.lr, tc.seq_len, tc.batch_size
    log.line(f"{'resuming' if resume else 'pretraining'} {pretraining_config.objective} ({tc.preset}: "
             f"H={model_config.hidden_size}, layers={model_config.num_hidden_layers}, generator "
             f"H={setup.gen.hidden_size}), {n_params / 1e6:.2f}M parameters, V={len(tokenizer)} | B={B} T={T} | "
             f"{len(train_data):,} train / {len(eval_data) if eval_data is not None else 0:,} held-out examples | "
             f"backend {backend}, {tc.dtype}")
    log.line(f"AdamW lr {peak:g} (warmup {warmup}, linear decay to 0 at step {tc.steps}), weight decay "
             f"{tc.weight_decay}, clip {tc.clip_norm} | out_dir {out_dir}"
             + (f" | from step {step} of {tc.steps}" if resume else ""))

    step_fn = make_step(setup, backend)
    update = make_update(optimizer, backend)
    has_eval = eval_data is not None and len(eval_data) > 0
    stop = tc.steps if tc.stop_at is None else min(tc.steps, tc.stop_at)
    window, window_time, window_steps = {}, 0.0, 0
    eval_time, last_eval, first_loss, last_train = 0.0, None, None, None
    run_start = time.perf_counter()
    status = "finished"
    with _StopFlag() as interrupt:
        while step < stop:
            if interrupt.requested:
                status = "interrupted"
                break
            t0 = time.perf_counter()
            batch = train_data.batch(next(sampler))
            lr = learning_rate(step, peak, warmup, tc.steps)
            loss, metrics, grads = step_fn(params, batch, rng)
            bad = [name for name in ("mlm_loss", "disc_loss") if name in metrics and not math.isfinite(metrics[name])]
            if bad:
                terms = " and ".join(f"the {'MLM (generator)' if b == 'mlm_loss' else 'discriminator'} loss "
                                     f"{b}={metrics[b]}" for b in bad)
                raise TrainingDiverged(f"step {step + 1}: {terms}; training stopped. " + _last_good(ckpt_path))
            grads, norm = (clip_by_global_norm(grads, tc.clip_norm, inplace=True) if tc.clip_norm > 0
                           else (grads, global_norm(grads)))
            if not math.isfinite(norm):
                raise TrainingDiverged(f"step {step + 1}: the gradient norm is {norm} (losses mlm "
                                       f"{metrics['mlm_loss']:.4f}); training stopped. " + _last_good(ckpt_path))
            update(params, grads, lr)
            step += 1
            window_time += time.perf_counter() - t0
            window_steps += 1
            metrics = dict(metrics, grad_norm=norm)
            for k, v in metrics.items():
                window[k] = window.get(k, 0.0) + v
            if first_loss is None:
                first_loss = metrics["loss"]

            if (tc.log_every and step % tc.log_every == 0) or step == stop:
                m = {k: v / window_steps for k, v in window.items()}
                per_step = window_time / window_steps
                evals_left = (tc.steps // tc.eval_every - step // tc.eval_every) if tc.eval_every and has_eval else 0
                left = (tc.steps - step) * per_step + evals_left * (last_eval or 0.0)
                tok_s = B * T / per_step
                log.line(f"step {step:>{len(str(tc.steps))}}/{tc.steps} | {format_metrics(m, electra)} | lr {lr:.2e} "
                         f"| gnorm {m['grad_norm']:.2f} | {tok_s:,.0f} tok/s | {format_time(left)} left")
                log.metrics({"split": "train", "step": step, **m, "lr": lr, "tokens_per_s": tok_s,
                             "time_left_s": left, "elapsed_s": elapsed_before + time.perf_counter() - run_start})
                last_train = m
                window, window_time, window_steps = {}, 0.0, 0

            if has_eval and ((tc.eval_every and step % tc.eval_every == 0) or step == tc.steps):
                t1 = time.perf_counter()
                ev = evaluate(params, setup, eval_data, B, tc.eval_examples)
                last_eval = time.perf_counter() - t1
                eval_time += last_eval
                log.line(f"eval {step:>{len(str(tc.steps))}}/{tc.steps} | {format_metrics(ev, electra)} | "
                         f"{ev['examples']} held-out examples, {last_eval:.1f}s")
                log.metrics({"split": "eval", "step": step, **ev})

            if (tc.save_every and step % tc.save_every == 0) or step == stop:
                save(step, elapsed_before + time.perf_counter() - run_start)
        if status == "interrupted":
            save(step, elapsed_before + time.perf_counter() - run_start)
            log.line(f"interrupted: checkpoint at step {step} in {ckpt_path}; continue with --resume")

    summary = {"status": status, "step": step, "steps": tc.steps, "checkpoint": str(ckpt_path),
               "out_dir": str(out_dir), "first_loss": first_loss, "last_train": last_train, "backend": backend,
               "seconds": time.perf_counter() - run_start, "eval_seconds": eval_time}
    if step < tc.steps:
        if status == "finished":
            summary["status"] = "stopped"
            log.line(f"stopped at step {step} of {tc.steps} (--stop_at); checkpoint in {ckpt_path}; "
                     "continue with --resume")
        return summary
    summary["models"] = {k: str(v) for k, v in save_for_finetuning(out_dir, setup, params, tokenizer).items()}
    summary["eval"] = evaluate(params, setup, eval_data, B, tc.eval_examples) if has_eval else None
    summary["demo"] = demo(params, setup, tokenizer, eval_data if has_eval else train_data)
    summary["demo_split"] = "held-out" if has_eval else "training"
    summary["params"] = params
    return summary


def _last_good(ckpt_path):
    if ckpt_path.is_file():
        try:
            step = checkpoint.read_meta(ckpt_path)["step"]
            return f"The last good checkpoint (step {step}) is intact: {ckpt_path}"
        except checkpoint.CheckpointError:
            pass
    return "No checkpoint was saved before this step."


def format_summary(summary, electra=True):
    """The closing lines printed after a finished run."""
    lines = [f"done: {summary['step']} steps in {format_time(summary['seconds'])} "
             f"(backend {summary['backend']})"]
    ev = summary.get("eval")
    if ev is not None:
        lines.append(f"held-out ({ev['examples']} examples): {format_metrics(ev, electra)}")
        if electra:
            gain = ev["disc_acc"] - ev["disc_baseline_acc"]
            lines.append(f"discriminator accuracy {ev['disc_acc']:.3f} vs {ev['disc_baseline_acc']:.3f} for always "
                         f"answering 'original' ({'+' if gain >= 0 else ''}{gain:.3f}); generator MLM accuracy "
                         f"{ev['mlm_acc']:.3f}")
    if summary.get("first_loss") is not None and summary.get("last_train") is not None:
        lines.append(f"training loss: {summary['first_loss']:.3f} at the first step of this session, "
                     f"{summary['last_train']['loss']:.3f} over the last {'log interval' if summary['step'] > 1 else 'step'}")
    lines.append(f"checkpoint: {summary['checkpoint']}")
    for kind, path in summary.get("models", {}).items():
        lines.append(f"{kind} for fine-tuning: {path}")
    d = summary.get("demo")
    if d is not None:
        what = ("the generator fills the masked tokens" if "predicted" in d else
                "masked tokens replaced by generator samples; the discriminator finds them")
        lines.append(f"demo on a {summary.get('demo_split', 'held-out')} sentence ({what}):")
        lines.extend(format_demo(d))
    return lines


# ----------------------------------------------------------------------------- inputs: vocabulary and data, cached

def corpus_sources(corpus):
    """The corpus files as data.CorpusSource objects, each checked (exists, not empty, UTF-8 text).
    corpus: a list of paths, or None for the embedded default corpus (corpus.py)."""
    from ..data.default_corpus import default_corpus_path
    from ..data.prepare import CorpusSource

    specs = [str(default_corpus_path())] if corpus is None else [str(c) for c in corpus]
    if not specs:
        raise RunError("no corpus file given")
    sources = []
    for spec in specs:
        try:
            source = CorpusSource(spec)
            source.scan()
        except FileNotFoundError as e:
            raise RunError(str(e)) from None
        sources.append(source)
    return sources


def corpus_lines(sources):
    """Every non-blank line (or sentence) of the sources, in order."""
    for source in sources:
        for _, _, line in source.events():
            if line is not None:
                yield line


def _key(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def vocab_for_corpus(sources, vocab_size, lowercase=True, min_frequency=2, echo=print):
    """A WordPiece vocabulary learned from the sources (tokenizer.build_vocab), cached in the electra_np cache
    folder under a key of the files (path, size, mtime) and the settings. Returns: a Tokenizer."""
    from ..data.default_corpus import cache_dir
    from ..data.tokenizer import Tokenizer, build_vocab, load_vocab

    key = _key({"sources": [s.describe() for s in sources], "vocab_size": vocab_size, "lowercase": lowercase,
                "min_frequency": min_frequency})
    path = cache_dir() / "vocab" / f"vocab-{vocab_size}-{key}.txt"
    if path.is_file():
        try:
            return Tokenizer(load_vocab(path), do_lower_case=lowercase)
        except ValueError:
            pass  # a damaged cache file: build again
    if echo:
        echo(f"building a {vocab_size}-token WordPiece vocabulary from {', '.join(str(s.path) for s in sources)} "
             f"(cached in {path.parent})")

    tokens = build_vocab(corpus_lines(sources), vocab_size, do_lower_case=lowercase, min_frequency=min_frequency)
    tokenizer = Tokenizer(tokens, do_lower_case=lowercase)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    return tokenizer


def prepared_data(sources, tokenizer, seq_len, eval_fraction=0.02, split_sentences=False, seed=0, echo=print):
    """The corpus packed into examples (data.prepare_corpus), cached in the electra_np cache folder.
    Returns: the prepared folder."""
    from ..data.default_corpus import cache_dir
    from ..data.prepare import is_prepared_for, prepare_corpus

    specs = [str(s.path) if s.column is None else f"{s.path}:{s.column}" for s in sources]
    key = _key({"sources": [s.describe() for s in sources], "vocab": vocab_sha256(tokenizer.ids_to_tokens),
                "lowercase": tokenizer.do_lower_case, "seq_len": seq_len, "eval_fraction": eval_fraction,
                "split_sentences": split_sentences, "seed": seed})
    folder = cache_dir() / "data" / f"T{seq_len}-{key}"
    if not is_prepared_for(folder, specs, tokenizer, seq_len, seed, eval_fraction, split_sentences):
        if echo:
            echo(f"preparing examples of {seq_len} tokens (cached in {folder})")
        prepare_corpus(specs, tokenizer, folder, max_seq_length=seq_len, seed=seed, eval_fraction=eval_fraction,
                       progress=False, overwrite=True, split_sentences=split_sentences)
    return folder


def open_data(folder):
    """(train split, eval split, data_info) of a prepared folder."""
    from ..data.prepare import PretrainingData, load_meta

    meta = load_meta(folder)
    train_data, eval_data = PretrainingData(folder, "train"), PretrainingData(folder, "eval")
    return train_data, eval_data, {"fingerprint": data_fingerprint(meta), "folder": str(folder)}
