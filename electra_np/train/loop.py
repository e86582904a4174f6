"""The pretraining loop: batches -> engine step -> clipped AdamW update, with logging, held-out
evaluation, atomic checkpoints and exact resume.

    for step in range(start, steps):
        batch = train_data.batch(next(sampler))          # epoch-shuffled rows (data.BatchSampler)
        loss, metrics, grads = step_fn(params, batch, rng)   # engine.make_step: forward + backward
        grads, norm = clip_by_global_norm(grads, 1.0)
        optimizer.update(params, grads, learning_rate(step, lr, warmup, steps))

The pieces: config.py (TrainConfig), run_dir.py (the files of out_dir, its lock, --overwrite's safety net),
divergence.py (the bounds past which a run has diverged), state.py (what a checkpoint
holds, exact resume), budget.py (steps from a wall-clock budget), held_out.py (evaluation and the demo),
diagnostics.py (is it paying off: detection, unigram entropy, collapse, warnings), report.py (log lines,
metrics.jsonl, the summary), export.py (the models left for fine-tuning), snapshots.py (the same models at
fractions of the schedule).
"""

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .. import atomic
from ..config import ElectraConfig, PretrainingConfig
from ..data.tokenizer import Tokenizer
from ..engine import default_backend, first_run_note, make_step, make_update
from ..model import Electra
from ..optim import clip_by_global_norm, global_norm, learning_rate
from . import checkpoint
from .budget import fit_budget
from .config import RESOURCE_ERRNOS, RunError, TrainConfig, TrainingDiverged
from .diagnostics import unigram_entropy, warnings_for
from .divergence import ADVICE, DivergenceGuard, last_update_problem
from .export import save_for_finetuning
from .held_out import demo, held_out_metrics
from .plot import plot_run
from .report import RunLog, Window, eval_line, header_lines, step_line, truncate_metrics
from .run_dir import CHECKPOINT_NAME, RUN_NAME, VOCAB_NAME, Aside, check_out_dir, hold, recover, set_aside
from .snapshots import existing_snapshots, snapshot_steps, write_snapshot, written
from .state import RunState, last_good, restore_state, save_state, start_state


def train(out_dir, model_config: ElectraConfig, pretraining_config: PretrainingConfig, tc: TrainConfig,
          tokenizer: Tokenizer, train_data, eval_data=None, data_info: dict | None = None, resume: bool = False,
          overwrite: bool = False, echo=print, preface: Sequence[str] = ()) -> dict:
    """Pretrain (or, with resume=True, continue from out_dir/checkpoint.npz) and save the result.

    Inputs: model_config: ElectraConfig of the discriminator (vocab_size = len(tokenizer));
            pretraining_config: PretrainingConfig; tc: TrainConfig; tokenizer: tokenizer.Tokenizer;
            train_data, eval_data: data.PretrainingData splits (eval_data may be None or empty);
            data_info: JSON-able description of the data (its "fingerprint" is checked on resume);
            tc.steps None (with tc.budget_minutes, a fresh run): set from a measured step time (budget.py);
            resume: continue out_dir's run; overwrite: replace the run in out_dir (else refused): the old run is
            set aside until the new one saves its first checkpoint, and put back if it fails before (run_dir.py);
            echo: called with each console line (None: silent); preface: lines already shown that belong at the
            top of this session's log.txt (the command's vocabulary and data steps).
    Returns: a summary dict (status "finished" | "stopped" | "interrupted", step, final eval, paths, demo).
    Raises: RunError on settings that do not fit (nothing written), or when another process holds out_dir;
            TrainingDiverged on NaN/inf or a loss or gradient norm past its bound (divergence.py).
    """
    out_dir = Path(out_dir)
    with hold(out_dir, echo):  # one writer per folder (a no-op when the command already holds it)
        recover(out_dir, echo)
        check_out_dir(out_dir, resume, overwrite)
        setup = build_setup(model_config, pretraining_config, tokenizer)
        check_inputs(model_config, tc, tokenizer, train_data)
        data_info = data_info or {}
        backend = tc.backend or default_backend()
        state = start_state(setup, tc, train_data)
        early = list(preface)  # shown before the run folder exists; written into log.txt once it does
        note = first_run_note(backend)
        if note and echo:
            echo(note)
            early.append(note)
        budget_line = None
        if tc.steps is None and not resume:
            if echo:
                echo(f"budget {tc.budget_minutes:g} min: timing a few steps on a copy of the model")
                early.append(f"budget {tc.budget_minutes:g} min: timing a few steps on a copy of the model")
            tc, budget_line = fit_budget(setup, tc, state.params, backend, train_data, eval_data)
        if resume:
            restore_state(state, out_dir / CHECKPOINT_NAME, setup, model_config, pretraining_config, tc, tokenizer,
                          data_info.get("fingerprint"))
            truncate_metrics(out_dir, state.step)
        aside = None if resume else set_aside(out_dir)  # an --overwrite's old run (check_out_dir refused it otherwise)
        try:
            return _run(out_dir, setup, tc, state, tokenizer, train_data, eval_data, data_info, backend, echo, early,
                        resume, budget_line, aside)
        except BaseException:
            if aside is not None and aside.pending:
                aside.restore()
                if echo:
                    echo(f"note: the new run stopped before its first checkpoint; the run that --overwrite was "
                         f"replacing is back in {out_dir}")
            raise


def _run(out_dir, setup, tc, state, tokenizer, train_data, eval_data, data_info, backend, echo, early, resume,
         budget_line, aside) -> dict:
    """The run record, the log's header, the session and its summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_meta = write_run_record(out_dir, setup, tc, tokenizer, data_info)
    log = RunLog(out_dir, echo)
    log.record(early)
    n_params = sum(p.size for p in state.params.values())
    for line in header_lines(setup, tc, tokenizer, n_params, len(train_data),
                             len(eval_data) if eval_data is not None else 0, backend, out_dir,
                             state.step if resume else None):
        log.line(line)
    if budget_line is not None:
        log.line(budget_line)
    session = Session(out_dir, setup, tc, state, run_meta, train_data, eval_data, backend, log, tokenizer, aside)
    status = session.run()
    return session.finish(status)


def build_setup(model_config: ElectraConfig, pretraining_config: PretrainingConfig,
                tokenizer: Tokenizer) -> Electra:
    return Electra.build(model_config, pretraining_config, mask_id=tokenizer.mask_id, cls_id=tokenizer.cls_id,
                         sep_id=tokenizer.sep_id)


def check_inputs(model_config: ElectraConfig, tc: TrainConfig, tokenizer: Tokenizer, train_data) -> None:
    """Refuse data, vocabulary and settings that do not fit together (RunError), before anything is written."""
    if train_data.max_seq_length != tc.seq_len:
        raise RunError(f"the prepared data has sequences of {train_data.max_seq_length} tokens, seq_len is "
                       f"{tc.seq_len}")
    if tc.seq_len > model_config.max_position_embeddings:
        raise RunError(f"seq_len {tc.seq_len} > max_position_embeddings {model_config.max_position_embeddings}; "
                       f"pass --max_position_embeddings {tc.seq_len} or a shorter --seq_len")
    if model_config.vocab_size != len(tokenizer):
        raise RunError(f"vocab_size {model_config.vocab_size} differs from the vocabulary's {len(tokenizer)} tokens")
    if tc.batch_size > len(train_data):
        raise RunError(f"batch_size {tc.batch_size} is larger than the {len(train_data)} training examples")


def write_run_record(out_dir: Path, setup: Electra, tc: TrainConfig, tokenizer: Tokenizer,
                     data_info: dict) -> dict:
    """run.json (the settings, without the vocabulary) and vocab.txt. Returns the settings that every
    checkpoint stores (with the vocabulary)."""
    run_meta = {"model_config": setup.disc.to_dict(), "pretraining_config": dataclasses.asdict(setup.objective),
                "training": tc.to_dict(), "vocab": list(tokenizer.ids_to_tokens),
                "do_lower_case": tokenizer.do_lower_case, "data": data_info.get("fingerprint"),
                "data_source": data_info.get("source")}
    atomic.atomic_write_text(out_dir / RUN_NAME, json.dumps(
        {k: v for k, v in run_meta.items() if k != "vocab"}, indent=2) + "\n")
    tokenizer.save(out_dir / VOCAB_NAME)
    return run_meta


class Session:
    """One session of a run: from the step the state holds to tc.stop, with log lines, evaluations, snapshots
    and checkpoints on their schedules. run() is the loop; each of its steps is a method below."""

    def __init__(self, out_dir: Path, setup: Electra, tc: TrainConfig, state: RunState, run_meta: dict,
                 train_data, eval_data, backend: str, log: RunLog, tokenizer: Tokenizer,
                 aside: Aside | None = None) -> None:
        self.out_dir, self.setup, self.tc, self.state, self.run_meta = out_dir, setup, tc, state, run_meta
        self.train_data, self.eval_data, self.backend, self.log = train_data, eval_data, backend, log
        self.tokenizer, self.aside = tokenizer, aside  # aside: the old run an --overwrite keeps until the first save
        self.guard = DivergenceGuard(setup.disc.vocab_size)
        self.ckpt_path = out_dir / CHECKPOINT_NAME
        self.electra = setup.objective.objective == "electra"
        self.has_eval = eval_data is not None and len(eval_data) > 0
        self.step_fn = make_step(setup, backend)
        self.update = make_update(state.optimizer, backend)
        self.window = Window()
        self.windows = []  # (seconds, steps) of each log window of this session
        self.eval_seconds, self.last_eval, self.first_loss, self.last_train = 0.0, None, None, None
        self.unigram_entropy = (unigram_entropy(train_data, (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id))
                                if self.has_eval else None)
        self.snapshots = snapshot_steps(tc.snapshots, tc.steps)  # {step: fractions}
        self.last_ev, self.last_found, self.warned = None, set(), {}  # (step, metrics); conditions; {condition: line}
        self.start = time.perf_counter()

    def run(self) -> str:
        """Step until tc.stop; Ctrl-C ends the session after the current step, with a checkpoint (an --overwrite
        before its first one raises KeyboardInterrupt instead: train() puts the old run back). Returns "finished"
        or "interrupted"."""
        tc = self.tc
        with _StopFlag() as interrupt:
            while self.state.step < tc.stop:
                if interrupt.requested:
                    if self.aside is not None and self.aside.pending:
                        raise KeyboardInterrupt
                    self.save()
                    self.log.line(f"interrupted: checkpoint at step {self.state.step} in {self.ckpt_path}; "
                                  "continue with --resume")
                    return "interrupted"
                lr = self.train_step()                                      # load, step, clip, update
                step = self.state.step
                if step == tc.stop:
                    self.judge_last_update()                                # judge (before it is saved)
                if _due(step, tc.log_every) or step == tc.stop:
                    self.log_train(lr)                                      # log
                if self.has_eval and (_due(step, tc.eval_every) or step == tc.steps):
                    self.log_eval()                                         # evaluate
                if step in self.snapshots:
                    self.snapshot()                                         # snapshot
                if _due(step, tc.save_every) or step == tc.stop:
                    self.save()                                             # save
        return "finished"

    def train_step(self) -> float:
        """load, step, clip, update: one optimizer step, its metrics added to the log window. Returns the lr."""
        tc, state = self.tc, self.state
        t0 = time.perf_counter()
        batch = self.train_data.batch(next(state.sampler))                          # load
        lr = learning_rate(state.step, tc.lr, tc.warmup, tc.steps)
        temperature = self.setup.objective.temperature_at(state.step, tc.steps)
        loss, metrics, grads = self.step_fn(state.params, batch, state.rng,         # step: forward + backward
                                            temperature=temperature)
        self.stop_if(self.guard.check_losses(metrics))
        grads, norm = (clip_by_global_norm(grads, tc.clip_norm, inplace=True) if tc.clip_norm > 0  # clip
                       else (grads, global_norm(grads)))
        self.stop_if(self.guard.check_norm(norm), f" (MLM loss {metrics['mlm_loss']:.4f})")
        self.update(state.params, grads, lr)                                        # update
        state.step += 1
        metrics = dict(metrics, grad_norm=norm)
        if self.setup.objective.final_temperature is not None:
            metrics["temperature"] = temperature
        self.window.add(metrics, time.perf_counter() - t0)
        if self.first_loss is None:
            self.first_loss = metrics["loss"]
        return lr

    def judge_last_update(self) -> None:
        """Stop when the session's last update diverged (divergence.last_update_problem): every other update is
        judged by the step after it."""
        temperature = self.setup.objective.temperature_at(self.state.step - 1, self.tc.steps)
        self.stop_if(last_update_problem(self.guard, self.state.params, self.setup, self.train_data,
                                         self.tc.batch_size, temperature), step=self.state.step)

    def stop_if(self, problem: str | None, detail: str = "", step: int | None = None) -> None:
        """Stop the run at a diverged step (divergence.py; default: the step being taken), saying which checkpoint
        is left."""
        if problem is not None:
            step = self.state.step + 1 if step is None else step
            raise TrainingDiverged(f"step {step}: {problem}{detail}; training stopped. {self.checkpoint_left()} "
                                   + ADVICE)

    def checkpoint_left(self) -> str:
        """A true sentence about what a run stopped now leaves (state.last_good reads the checkpoint to say it)."""
        if self.aside is not None and self.aside.pending:
            return (f"This run saved no checkpoint; the run that --overwrite was replacing is put back in "
                    f"{self.out_dir}.")
        return last_good(self.ckpt_path)

    def log_train(self, lr: float) -> None:
        """The window's mean metrics, speed and time left: a console line and a metrics.jsonl record."""
        tc, step = self.tc, self.state.step
        m = self.window.mean()
        per_step = self.window.seconds / self.window.steps
        self.windows.append((self.window.seconds, self.window.steps))
        rate = steady_rate(self.windows)
        evals_left = (tc.steps // tc.eval_every - step // tc.eval_every) if tc.eval_every and self.has_eval else 0
        left = (tc.steps - step) * rate + evals_left * (self.last_eval or 0.0)
        tok_s = tc.batch_size * tc.seq_len / per_step
        self.log.line(step_line(step, tc.steps, m, self.electra, lr, tok_s, left))
        self.log.metrics({"split": "train", "step": step, **m, "lr": lr, "tokens_per_s": tok_s,
                          "time_left_s": left, "elapsed_s": self.elapsed()})
        self.last_train = m
        self.window = Window()

    def log_eval(self) -> None:
        """Held-out metrics: a console line, a metrics.jsonl record (with the names of the warning conditions it
        shows, diagnostics.warnings_for), and a warning's line the first time its condition holds at two
        evaluations in a row, or at the last one (a run may pass through a state it then leaves)."""
        t1 = time.perf_counter()
        ev = self.evaluate()
        self.last_eval = time.perf_counter() - t1
        self.eval_seconds += self.last_eval
        step = self.state.step
        found = warnings_for(ev, step, self.tc, self.setup.objective)
        self.log.line(eval_line(step, self.tc.steps, ev, self.electra, self.last_eval))
        self.log.metrics({"split": "eval", "step": step, **ev, "warnings": [name for name, _ in found]})
        for name, line in found:
            if name not in self.warned and (name in self.last_found or step == self.tc.steps):
                self.warned[name] = line
                self.log.line(line)
        self.last_ev, self.last_found = (step, ev), {name for name, _ in found}

    def evaluate(self) -> dict:
        """held_out.held_out_metrics, with the unigram entropy of the training tokens beside the MLM loss."""
        temperature = self.setup.objective.temperature_at(max(0, self.state.step - 1), self.tc.steps)  # the last step's
        ev = held_out_metrics(self.state.params, self.setup, self.eval_data, self.tc.batch_size,
                              self.tc.eval_examples, temperature=temperature)
        ev["unigram_entropy"] = self.unigram_entropy
        return ev

    def snapshot(self) -> None:
        """The models at this step, as the final export, under out_dir/snapshots (unless already there)."""
        step = self.state.step
        if written(self.out_dir, step):
            return
        bad = checkpoint.first_nonfinite(self.state.params)
        self.stop_if(None if bad is None else f"the update left NaN or infinite values in {bad}", step=step)
        ev = self.last_ev[1] if self.last_ev is not None and self.last_ev[0] == step else None
        folder = write_snapshot(self.out_dir, step, self.snapshots[step], self.tc.steps, self.setup,
                                self.state.params, self.tokenizer, self.elapsed(), ev)
        share = ", ".join(f"{f:.0%}" for f in self.snapshots[step])
        self.log.line(f"snapshot at step {step} ({share} of {self.tc.steps}): {folder}")

    def save(self) -> None:
        """The checkpoint, unless the state holds NaN or infinity (then the run stops, the last one kept) or the
        disk is full (an OSError naming the file: the command's exit code 3). The first save of an --overwrite
        lets the old run go."""
        step = self.state.step
        try:
            save_state(self.ckpt_path, self.state, self.run_meta, self.elapsed())
        except checkpoint.NonFiniteError as e:
            self.stop_if(f"the state to save holds NaN or infinite values in {e.key}, so the checkpoint was not "
                         "written", step=step)
        except OSError as e:
            if e.errno not in RESOURCE_ERRNOS:
                raise
            raise OSError(e.errno, f"step {step}: {os.strerror(e.errno)} while writing the checkpoint "
                                   f"{self.ckpt_path}: it was not written and its partial file was removed. "
                                   f"{self.checkpoint_left()} Free some space, then run the command again "
                                   "(with --resume when a checkpoint is left).") from e
        if self.aside is not None and self.aside.pending:
            self.aside.discard()

    def elapsed(self) -> float:
        """Seconds of this run, earlier sessions included."""
        return self.state.elapsed + time.perf_counter() - self.start

    def finish(self, status: str) -> dict:
        """The summary; at the last step also the models for fine-tuning, a final evaluation (the one at this
        step if it ran: the same numbers) and the demo."""
        tc, step, tokenizer = self.tc, self.state.step, self.tokenizer
        summary = {"status": status, "step": step, "steps": tc.steps, "checkpoint": str(self.ckpt_path),
                   "out_dir": str(self.out_dir), "first_loss": self.first_loss, "last_train": self.last_train,
                   "backend": self.backend, "seconds": time.perf_counter() - self.start,
                   "eval_seconds": self.eval_seconds, "warnings": list(self.warned.values()),
                   "snapshots": {k: str(v) for k, v in existing_snapshots(self.out_dir).items()}}
        if step < tc.steps:
            if status == "finished":
                summary["status"] = "stopped"
                self.log.line(f"stopped at step {step} of {tc.steps} (--stop_at); checkpoint in {self.ckpt_path}; "
                              "continue with --resume")
            return summary
        params = self.state.params
        summary["models"] = {k: str(v) for k, v in save_for_finetuning(self.out_dir, self.setup, params,
                                                                       tokenizer).items()}
        if not self.has_eval:
            summary["eval"] = None
        else:
            summary["eval"] = self.last_ev[1] if self.last_ev is not None and self.last_ev[0] == step else self.evaluate()
        summary["demo"] = demo(params, self.setup, tokenizer, self.eval_data if self.has_eval else self.train_data)
        summary["demo_split"] = "held-out" if self.has_eval else "training"
        summary["params"] = params
        summary["curves"] = plot_run(self.out_dir)  # None without the plot extra (matplotlib)
        return summary


def steady_rate(windows: list[tuple[float, int]]) -> float:
    """Seconds per step for the time left: over every log window of the session but the first, which holds the
    kernels' compilation and the warm-up (the first window's own rate until there is a second)."""
    steady = windows[1:] or windows[:1]
    return sum(s for s, _ in steady) / sum(n for _, n in steady)


def _due(step, every):
    """Whether a schedule of `every` steps (0: never) falls on `step`."""
    return bool(every) and step % every == 0


class _StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM (a scheduler, `kill`, the end of a session) asks the loop to stop after the
    current step with a checkpoint; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
