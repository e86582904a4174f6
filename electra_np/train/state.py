"""The state of a run, and its round trip through a checkpoint: exact resume.

Everything random comes from one numpy Generator (masking, Gumbel samples, dropout) and one BatchSampler
(data order). A checkpoint stores both states with the parameters and the AdamW moments, so a resumed run
computes bit for bit the losses of a run never interrupted. Resuming with other settings, another
vocabulary or other data is refused, naming what differs.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..config import ElectraConfig, PretrainingConfig
from ..data.tokenizer import Tokenizer
from ..model import Electra
from ..optim import AdamW
from ..params import check_params
from . import checkpoint
from .config import RunError, TrainConfig

INIT_STREAM = 1  # the training Generator is default_rng([seed, 1]); init_params used default_rng(seed)


@dataclass
class RunState:
    """What a checkpoint holds besides the run's settings: parameters, AdamW, the random stream, the data
    position, the step reached and the seconds spent in earlier sessions."""

    params: dict
    optimizer: AdamW
    rng: np.random.Generator
    sampler: object  # data.BatchSampler
    step: int = 0
    elapsed: float = 0.0


def start_state(setup: Electra, tc: TrainConfig, train_data) -> RunState:
    """Step 0: fresh parameters, zero moments, the seed's streams."""
    params = setup.init_params(tc.seed, np.dtype(tc.dtype))
    optimizer = AdamW(params, weight_decay=tc.weight_decay)
    rng = np.random.default_rng([tc.seed, INIT_STREAM])  # masking, samples, dropout
    sampler = train_data.sampler(tc.batch_size, seed=tc.seed)
    return RunState(params, optimizer, rng, sampler)


def save_state(path, state: RunState, run_meta: dict, elapsed: float) -> None:
    """Write the state and the run's settings (run_meta) to a checkpoint, atomically."""
    arrays = {f"params/{k}": v for k, v in state.params.items()}
    arrays.update({f"adam_m/{k}": v for k, v in state.optimizer.m.items()})
    arrays.update({f"adam_v/{k}": v for k, v in state.optimizer.v.items()})
    checkpoint.save(path, arrays, {**run_meta, "step": state.step, "elapsed": elapsed,
                                   "optimizer": {"t": state.optimizer.t}, "rng_state": state.rng.bit_generator.state,
                                   "sampler_state": state.sampler.state()})


def restore_state(state: RunState, path, setup: Electra, model_config: ElectraConfig,
                  pretraining_config: PretrainingConfig, tc: TrainConfig, tokenizer: Tokenizer,
                  data_fp: dict | None) -> None:
    """Load a checkpoint into `state`, after checking that this run's settings and data match it.
    Raises: CheckpointError (damaged or of other shapes), RunError (other settings)."""
    arrays, meta = checkpoint.load(path)
    diffs = resume_differences(meta, model_config, pretraining_config, tc, tokenizer.ids_to_tokens, data_fp,
                               tokenizer.do_lower_case)
    if diffs:
        raise RunError(f"cannot resume {path}: this run differs from it in\n  " + "\n  ".join(diffs))
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= tc.steps:
        raise checkpoint.CheckpointError(f"{path}: its step {step!r} is outside 0..{tc.steps}, the run's steps "
                                         "(a damaged or edited checkpoint)")
    saved = checkpoint.group(arrays, "params")
    try:
        check_params(saved, setup.shapes(), what=f"{path} parameters")
    except ValueError as e:
        raise checkpoint.CheckpointError(str(e)) from None
    for k in state.params:
        state.params[k][...] = saved[k]
    state.optimizer.load_state_dict({"t": meta["optimizer"]["t"],
                                     **{f"m.{k}": v for k, v in checkpoint.group(arrays, "adam_m").items()},
                                     **{f"v.{k}": v for k, v in checkpoint.group(arrays, "adam_v").items()}})
    state.rng.bit_generator.state = meta["rng_state"]
    state.sampler.set_state(meta["sampler_state"])
    state.step, state.elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))


def resume_differences(meta: dict, model_config: ElectraConfig, pretraining_config: PretrainingConfig,
                       tc: TrainConfig, vocab, data_fp: dict | None = None,
                       do_lower_case: bool | None = None) -> list[str]:
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


def last_good(path) -> str:
    """A sentence naming the last checkpoint that a diverged run leaves (or that there is none)."""
    if path.is_file():
        try:
            step = checkpoint.read_meta(path)["step"]
            return f"The last good checkpoint (step {step}) is intact: {path}"
        except checkpoint.CheckpointError:
            pass
    return "No checkpoint was saved before this step."
