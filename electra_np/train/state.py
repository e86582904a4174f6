"""The state of a run, and its round trip through a checkpoint: exact resume.

Everything random comes from one numpy Generator (masking, Gumbel samples, dropout) and one BatchSampler
(data order). A checkpoint stores both states with the parameters and the AdamW moments, so a resumed run
computes bit for bit the losses of a run never interrupted. Resuming with other settings, another
vocabulary or other data is refused, naming what differs.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ElectraConfig, PretrainingConfig
from ..data.tokenizer import Tokenizer
from ..model import Electra
from ..optim import AdamW
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
    Raises: CheckpointError (damaged, edited or of other shapes: one line naming the file and the entry),
    RunError (other settings)."""
    arrays, meta = checkpoint.load(path)
    check_meta(meta, path)
    diffs = resume_differences(meta, model_config, pretraining_config, tc, tokenizer.ids_to_tokens, data_fp,
                               tokenizer.do_lower_case)
    if diffs:
        raise RunError(f"cannot resume {path}: this run differs from it in\n  " + "\n  ".join(diffs))
    step = meta["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= tc.steps:
        raise checkpoint.CheckpointError(f"{path}: its step {step!r} is outside 0..{tc.steps}, the run's steps "
                                         "(a damaged or edited checkpoint)")
    groups = check_arrays(arrays, setup.shapes(), path)
    for k in state.params:
        state.params[k][...] = groups["params"][k]
    state.optimizer.load_state_dict({"t": meta["optimizer"]["t"],
                                     **{f"m.{k}": v for k, v in groups["adam_m"].items()},
                                     **{f"v.{k}": v for k, v in groups["adam_v"].items()}})
    for key, restore in (("rng_state", lambda s: setattr(state.rng.bit_generator, "state", s)),
                         ("sampler_state", state.sampler.set_state)):
        try:
            restore(meta[key])
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise checkpoint.CheckpointError(f"{path}: its {key} cannot be restored ({type(e).__name__}: {e}); a "
                                             "damaged or edited checkpoint") from None
    state.step, state.elapsed = int(step), float(meta.get("elapsed", 0.0))


META_TYPES = {"step": object, "optimizer": dict, "rng_state": dict, "sampler_state": dict,
              "model_config": dict, "pretraining_config": dict, "training": dict, "vocab": list}


def check_meta(meta: dict, path) -> None:
    """The metadata entries a resume reads, each present and of its type (CheckpointError naming the first that
    is not; the step's range is restore_state's to check). A damaged or hand-edited checkpoint ends here in one
    line instead of a KeyError deep in a resume."""
    for key, kind in META_TYPES.items():
        value = meta.get(key)
        if value is None:
            raise checkpoint.CheckpointError(f"{path}: the metadata has no {key!r} entry (a damaged or edited "
                                             "checkpoint)")
        if kind is not object and not isinstance(value, kind):
            raise checkpoint.CheckpointError(f"{path}: its {key} is {value!r}, not {_kind_name(kind)} (a damaged "
                                             "or edited checkpoint)")
    if isinstance(meta.get("elapsed"), bool) or not isinstance(meta.get("elapsed", 0.0), (int, float)):
        raise checkpoint.CheckpointError(f"{path}: its elapsed is {meta['elapsed']!r}, not a number (a damaged or "
                                         "edited checkpoint)")
    t = meta["optimizer"].get("t")
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise checkpoint.CheckpointError(f"{path}: its optimizer step count optimizer.t is {t!r}, not an integer "
                                         ">= 0 (a damaged or edited checkpoint)")


def _kind_name(kind):
    return {dict: "an object", list: "a list"}[kind]


def check_arrays(arrays: dict, shapes: dict, path) -> dict:
    """{group: {name: array}} for params, adam_m and adam_v, after checking that each holds exactly the model's
    tensors in their shapes, in one floating dtype, all finite, and Adam's second moment v >= 0 (it is a mean of
    squares: a negative entry makes sqrt(v) NaN at the first step). CheckpointError names the file and the key."""
    groups = {name: checkpoint.group(arrays, name) for name in ("params", "adam_m", "adam_v")}
    dtypes = set()
    for name, group in groups.items():
        missing = [k for k in shapes if k not in group]
        extra = [k for k in group if k not in shapes]
        for keys, what in ((missing, "is missing"), (extra, "is not a tensor of this model")):
            if keys:
                more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
                raise checkpoint.CheckpointError(f"{path}: {name}/{keys[0]} {what}{more}; a damaged checkpoint or "
                                                 "one of another model")
        for k, shape in shapes.items():
            a = group[k]
            if a.shape != tuple(shape):
                raise checkpoint.CheckpointError(f"{path}: {name}/{k} has shape {a.shape}, the model's is "
                                                 f"{tuple(shape)}")
            if not np.issubdtype(a.dtype, np.floating):
                raise checkpoint.CheckpointError(f"{path}: {name}/{k} has dtype {a.dtype}, not a floating one")
            dtypes.add(a.dtype)
    if len(dtypes) > 1:
        raise checkpoint.CheckpointError(f"{path}: its tensors mix dtypes {sorted(map(str, dtypes))}")
    bad = checkpoint.first_nonfinite(arrays)
    if bad is not None:
        raise checkpoint.CheckpointError(f"{path}: {bad} holds NaN or infinite values; the checkpoint cannot be "
                                         "resumed from")
    for k, v in groups["adam_v"].items():
        if (v < 0).any():
            raise checkpoint.CheckpointError(f"{path}: adam_v/{k} has negative entries (min {v.min():.3g}), but "
                                             "Adam's second moment is a mean of squares")
    return groups


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
    old_fp = meta.get("data")
    if data_fp is not None and old_fp is not None:
        # the checkpoint's keys only: one made before a key was recorded (content_sha256) resumes on the corpus
        # prepared again, which now records it; the new key protects the runs made from now on
        keys = ([k for k in old_fp if old_fp[k] != data_fp.get(k)] if isinstance(old_fp, dict)
                else ["the checkpoint's record of it is not an object"])
        if keys:
            diffs.append(f"training data: the prepared corpus differs ({', '.join(keys)})")
    return diffs


def last_good(path) -> str:
    """A sentence naming the checkpoint that a diverged run leaves, after checking it (it is read whole: a
    checkpoint called good holds finite parameters and moments), or saying that there is none."""
    path = Path(path)
    if not path.is_file():
        return "No checkpoint was saved before this step."
    try:
        arrays, meta = checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        return f"The checkpoint in {path} cannot be read ({e}); no good checkpoint is left."
    bad = checkpoint.first_nonfinite(arrays)
    if bad is not None:
        return f"The checkpoint {path} (step {meta.get('step')}) holds NaN or infinite values in {bad}: do not resume from it."
    return f"The last good checkpoint (step {meta.get('step')}) is intact, its values finite: {path}"
