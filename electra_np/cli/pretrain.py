"""`electra-np pretrain`: where each setting comes from, and the steps from a command line to a training run
(train.loop.train). Its options and the values each takes: pretrain_options.py.

    electra-np pretrain                     # the tiny preset on the embedded corpus
    electra-np pretrain --corpus my.txt --preset small --steps 100000 --out_dir runs/small
    electra-np pretrain --out_dir runs/small --resume
    electra-np pretrain --preset small --budget_minutes 60 --snapshots 0.25 0.5 --out_dir runs/small-1h

Settings come, lowest priority first, from: the defaults (and the --preset's model size), the
checkpoint when resuming, a --config JSON file, the command line. Bad input is reported in one
line (no traceback) with exit code 2, before anything is written; a value out of its option's range (and
settings that do not fit together) before anything is read, naming the option.

The command holds out_dir's lock (train.run_dir.hold) from its first look at the folder to its last line: a
second `pretrain` on the same folder is refused at once, naming the first one's PID.
"""

import argparse
import json
from pathlib import Path

from ..config import PRESETS, ElectraConfig, PretrainingConfig, preset
from ..data.cache import corpus_sources, open_data, prepared_data, vocab_for_corpus
from ..data.dataset import VOCAB_NAME as DATA_VOCAB
from ..data.dataset import load_meta, preparation_warnings
from ..data.tokenizer import Tokenizer, vocab_sha256
from ..train import checkpoint
from ..train.config import OFFICIAL_WARMUP, TrainConfig, warmup_error
from ..train.loop import train
from ..train.report import RunLog, format_summary
from ..train.run_dir import CHECKPOINT_NAME, check_inputs_apart, check_out_dir, hold, recover
from ..train.state import check_meta, resume_differences
from .common import EXIT_INTERRUPTED, CliError, check_option_values, split_by_default
from .pretrain_options import (
    DATA_DEFAULTS,
    DATA_KEYS,
    MODEL_FIELDS,
    PRESET_OBJECTIVE,
    PRETRAIN_FIELDS,
    RUN_KEYS,
    TRAIN_DEFAULTS,
    add_options,
    check_flags,
    option_error,
)


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `pretrain` on an argparse subparsers object (its options: pretrain_options.py)."""
    p = add_options(sub)
    p.set_defaults(func=cmd_pretrain)
    return p


# ----------------------------------------------------------------------------- settings

def _flatten_saved(d):
    """A run.json / checkpoint's metadata / HF config.json / flat dict -> flat {option: value}."""
    if "model_type" in d:  # a Hugging Face config.json: its architecture fields only
        return {f.name: d[f.name] for f in MODEL_FIELDS if f.name in d}
    flat = {}
    if any(k in d for k in ("model_config", "pretraining_config", "training")):
        flat.update({k: v for k, v in d.get("model_config", {}).items() if k not in ("model_type", "pad_token_id")})
        flat.update(d.get("pretraining_config", {}))
        flat.update(d.get("training", {}))
        flat.update(d.get("data_source") or {})
        return flat
    return dict(d)


def load_config_file(path) -> dict:
    """The settings of a --config file, flat {option: value}, checked as the command line's would be: unknown
    names, values of the wrong type ("steps": "100", "lowercase": "no") and values out of range are refused in one
    line naming the file and the key."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise CliError(f"--config: file not found: {path}") from None
    except (OSError, ValueError) as e:  # a folder, bad JSON, bad UTF-8
        raise CliError(f"--config {path}: unreadable or not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CliError(f"--config {path}: expected a JSON object of option names and values")
    sections = ("model_config", "pretraining_config", "training", "data_source")  # a run.json's
    bad = [k for k in sections if "model_type" not in d and d.get(k) is not None and not isinstance(d[k], dict)]
    if bad:
        raise CliError(f"--config {path}: \"{bad[0]}\" must be a JSON object of settings, got {type(d[bad[0]]).__name__}")
    if "model_type" in d and "embedding_size" in d and d["embedding_size"] is None:  # Hugging Face's E = H
        d = {**d, "embedding_size": d.get("hidden_size")}
    flat = _flatten_saved(d)
    if "training" in d and flat.get("budget_minutes") is not None:  # a run record of a budget run: its steps
        # (and the warmup derived from them) were measured on another run; this run measures its own
        if flat.get("warmup") == min(OFFICIAL_WARMUP, (flat.get("steps") or 0) // 10):
            flat.pop("warmup")
        for k in ("steps", "budget_step_seconds"):
            flat.pop(k, None)
    known = {f.name for f in MODEL_FIELDS} | {f.name for f in PRETRAIN_FIELDS} | set(TRAIN_DEFAULTS) | \
        set(DATA_KEYS) | set(RUN_KEYS)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise CliError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
    nullable = {k for k, v in {**TRAIN_DEFAULTS, **DATA_DEFAULTS}.items() if v is None} | {"final_temperature"}
    parser = argparse.ArgumentParser()
    check_option_values(add_options(parser.add_subparsers()), flat, f"--config {path}", nullable)
    for key in sorted(flat):  # the ranges the config classes would refuse later
        error = option_error(key, flat[key])
        if error:
            raise CliError(f"--config {path}: \"{key}\" {error}")
    return flat


def resolve_settings(given: dict, base: dict | None = None) -> tuple[dict, dict]:
    """Defaults < base (a checkpoint's settings) < --config file < command line. Returns (settings, explicit)."""
    explicit = dict(given)
    if "config" in given:
        explicit = {**load_config_file(given["config"]), **{k: v for k, v in given.items() if k != "config"}}
    if isinstance(explicit.get("corpus"), str):
        explicit["corpus"] = [explicit["corpus"]]
    preset_name = explicit.get("preset") or (base or {}).get("preset") or "tiny"
    settings = {**TRAIN_DEFAULTS, **DATA_DEFAULTS, **PRESET_OBJECTIVE.get(preset_name, {}), **(base or {}),
                **explicit}
    return settings, explicit


def build_configs(settings: dict, tokenizer: Tokenizer,
                  explicit: dict) -> tuple[ElectraConfig, PretrainingConfig, TrainConfig]:
    """ElectraConfig (vocab_size and pad id from the tokenizer), PretrainingConfig and TrainConfig."""
    model = {f.name: settings[f.name] for f in MODEL_FIELDS if f.name in settings}
    if "vocab_size" in explicit and explicit["vocab_size"] != len(tokenizer) and settings.get("vocab") is not None:
        raise CliError(f"--vocab_size {explicit['vocab_size']} but the vocabulary {settings['vocab']} has "
                       f"{len(tokenizer)} tokens")
    model.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_id)
    model_config = preset(settings["preset"], **model)
    pretraining = PretrainingConfig(**{f.name: settings[f.name] for f in PRETRAIN_FIELDS if f.name in settings})
    tc = TrainConfig(**{k: settings[k] for k in TRAIN_DEFAULTS})
    return model_config, pretraining, tc


# ----------------------------------------------------------------------------- the command

class Console:
    """print(), remembering the lines: those printed before the run folder exists reach its log.txt."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line)
        self.lines.append(line)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """lock out_dir -> settings -> vocabulary -> configs -> data -> train -> summary."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    resume, overwrite = given.pop("resume", False), given.pop("overwrite", False)
    given.pop("threads", None)  # main() has applied it
    if resume and overwrite:
        raise CliError("--resume and --overwrite exclude each other")
    console = Console()  # what is printed before the run folder exists goes into its log.txt too
    out_dir = _checked_out_dir(given, resume)
    with hold(out_dir, console):  # before the folder is read, written or cleared
        recover(out_dir, console)  # what an --overwrite killed part-way left
        return _pretrain(given, resume, overwrite, out_dir, console)


def _pretrain(given, resume, overwrite, out_dir, console) -> int:
    settings, explicit, meta = _run_settings(given, resume, overwrite, out_dir)
    check_inputs_apart(out_dir, settings.get("data"), settings.get("corpus"), settings.get("vocab"))
    _budget_settings(settings, explicit, resume)
    data_meta = _prepared_meta(settings, explicit)
    tokenizer, sources = _vocabulary(settings, explicit, meta, data_meta, console)
    model_config, pretraining, tc = build_configs(settings, tokenizer, explicit)
    _check_fit(out_dir, meta, model_config, pretraining, tc, tokenizer)
    train_data, eval_data, data_info = _training_data(settings, tokenizer, tc, sources, data_meta, console)
    summary = train(out_dir, model_config, pretraining, tc, tokenizer, train_data, eval_data, data_info,
                    resume=resume, overwrite=overwrite, echo=console, preface=console.lines)
    if summary["status"] == "finished":
        log = RunLog(out_dir, print)
        for line in format_summary(summary, pretraining.objective == "electra"):
            log.line(line)
    return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0


def _checked_out_dir(given, resume) -> Path:
    """--out_dir (from the command line or --config), else runs/electra-PRESET; before it, the command line's
    values and the --config file's are checked, each on its own and together, before anything is read or
    written."""
    check_flags(given)
    settings, explicit = resolve_settings(given)  # reads and checks --config
    if not resume:  # a resumed run's settings come from its checkpoint, read under the lock
        _check_together(settings)
    return Path(explicit.get("out_dir") or f"runs/electra-{settings['preset']}")


def _check_together(settings) -> None:
    """Refuse settings that are each allowed but not together (the configs would refuse them after the vocabulary
    is learned and the corpus prepared), naming the options."""
    model = PRESETS[settings["preset"]]
    hidden, heads = (settings.get(k, getattr(model, k)) for k in ("hidden_size", "num_attention_heads"))
    if hidden % heads:
        raise CliError(f"--hidden_size {hidden} must be divisible by --num_attention_heads {heads}: each head "
                       "takes hidden_size / num_attention_heads of the hidden units")
    share = settings.get("generator_hidden_size", PretrainingConfig.generator_hidden_size)
    if settings.get("objective") != "mlm" and round(hidden * share) < 1:
        raise CliError(f"--generator_hidden_size {share:g} x --hidden_size {hidden} leaves the generator no hidden "
                       "unit; choose a larger share")
    steps, warmup = settings.get("steps"), settings.get("warmup")
    if settings.get("budget_minutes") is None and None not in (steps, warmup) and warmup > steps:
        raise CliError(warmup_error(warmup, steps, dash="--"))


def _run_settings(given, resume, overwrite, out_dir):
    """(settings, explicit, checkpoint meta or None): when resuming, the checkpoint's settings replace the
    defaults (stop_at belongs to one session only)."""
    settings, explicit = resolve_settings(given)
    check_out_dir(out_dir, resume, overwrite)
    meta = None
    if resume:
        meta = checkpoint.read_meta(out_dir / CHECKPOINT_NAME)
        check_meta(meta, out_dir / CHECKPOINT_NAME)
        saved = {k: v for k, v in _flatten_saved(meta).items() if k != "stop_at"}
        settings, explicit = resolve_settings(given, saved)
    if not resume and settings.get("data") is None:  # a resumed run keeps what its checkpoint recorded
        settings["split_sentences"] = split_by_default(explicit.get("split_sentences"), settings["corpus"])
    settings["out_dir"] = str(out_dir)
    return settings, explicit, meta


def _budget_settings(settings, explicit, resume):
    """--budget_minutes: a fresh run leaves steps to be measured (train.budget); a resumed one keeps the steps its
    checkpoint recorded. With --steps too it is refused."""
    if settings.get("budget_minutes") is None:
        return
    if "steps" in explicit and "budget_minutes" in explicit:
        raise CliError("--steps and --budget_minutes exclude each other: give the number of steps or the minutes "
                       "the run may take, not both")
    if not resume:
        settings["steps"] = settings["budget_step_seconds"] = None


def _prepared_meta(settings, explicit):
    """The meta of a --data folder (its sequence length becomes seq_len unless given), or None."""
    if settings.get("data") is None:
        return None
    try:
        data_meta = load_meta(settings["data"])
    except ValueError as e:
        raise CliError(str(e)) from None
    if "seq_len" not in explicit:
        settings["seq_len"] = data_meta["max_seq_length"]
    return data_meta


def _vocabulary(settings, explicit, meta, data_meta, echo):
    """(tokenizer, corpus sources or None): the checkpoint's vocabulary, a --vocab file, the prepared folder's,
    or one learned from the corpus (cached). settings["vocab_size"] becomes the vocabulary's length."""
    lowercase = settings["lowercase"]
    sources = None
    if meta is not None:
        tokenizer = Tokenizer(meta["vocab"], do_lower_case=lowercase)
        if "vocab" in explicit:
            tokenizer = Tokenizer.from_file(explicit["vocab"], do_lower_case=lowercase)
    elif settings.get("vocab") is not None:
        tokenizer = Tokenizer.from_file(settings["vocab"], do_lower_case=lowercase)
    elif data_meta is not None:
        if "lowercase" not in explicit:
            lowercase = settings["lowercase"] = data_meta.get("do_lower_case", True)
        tokenizer = Tokenizer.from_file(Path(settings["data"]) / DATA_VOCAB, do_lower_case=lowercase)
    else:
        sources = corpus_sources(settings["corpus"], echo=echo)
        vocab_size = settings.get("vocab_size", PRESETS[settings["preset"]].vocab_size)
        tokenizer = vocab_for_corpus(sources, vocab_size, lowercase, echo=echo)
        if len(tokenizer) < vocab_size:
            echo(f"note: the corpus supports only {len(tokenizer)} of the {vocab_size} tokens asked for")
    if "vocab_size" in explicit and explicit["vocab_size"] != len(tokenizer) and sources is None:
        raise CliError(f"--vocab_size {explicit['vocab_size']} but the vocabulary has {len(tokenizer)} tokens")
    settings["vocab_size"] = len(tokenizer)
    return tokenizer, sources


def _check_fit(out_dir, meta, model_config, pretraining, tc, tokenizer):
    """Refuse a resume with other settings, and a seq_len the position embeddings cannot hold, before any data
    is prepared."""
    if meta is not None:
        diffs = resume_differences(meta, model_config, pretraining, tc, tokenizer.ids_to_tokens, None,
                                   tokenizer.do_lower_case)
        if diffs:
            raise CliError(f"cannot resume {out_dir / CHECKPOINT_NAME}: this run differs from it in: "
                           + "; ".join(diffs))
    if tc.seq_len > model_config.max_position_embeddings:
        raise CliError(f"--seq_len {tc.seq_len} > max_position_embeddings {model_config.max_position_embeddings}; "
                       f"pass --max_position_embeddings {tc.seq_len} or a shorter --seq_len")


def _training_data(settings, tokenizer, tc, sources, data_meta, echo):
    """(train split, eval split, data_info): the --data folder, or the corpus prepared (cached)."""
    data_dir = settings.get("data")
    if data_dir is None:
        if sources is None:
            sources = corpus_sources(settings["corpus"], echo=echo)
        data_dir = prepared_data(sources, tokenizer, tc.seq_len, settings["eval_fraction"],
                                 bool(settings["split_sentences"]), echo=echo)
    train_data, eval_data, data_info = open_data(data_dir)
    for line in preparation_warnings(load_meta(data_dir)):  # what packing lost, said on every run that uses it
        echo(line)
    if data_meta is not None and data_meta.get("vocab_sha256") != vocab_sha256(tokenizer.ids_to_tokens):
        raise CliError(f"the prepared data in {data_dir} was made with another vocabulary than the one given")
    data_info["source"] = {
        "corpus": None if settings["corpus"] is None else [str(Path(c).resolve()) for c in settings["corpus"]],
        "data": None if settings.get("data") is None else str(Path(settings["data"]).resolve()),
        "vocab": None if settings.get("vocab") is None else str(Path(settings["vocab"]).resolve()),
        "lowercase": tokenizer.do_lower_case, "eval_fraction": settings["eval_fraction"],
        "split_sentences": bool(settings["split_sentences"])}
    if len(train_data) < tc.batch_size:
        raise CliError(f"the corpus is too small: {len(train_data)} training example(s) of {tc.seq_len} tokens, "
                       f"fewer than one batch of {tc.batch_size}; use more text or a smaller --batch_size")
    return train_data, eval_data, data_info
