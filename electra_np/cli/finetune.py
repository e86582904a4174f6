"""`electra-np finetune`, `electra-np evaluate` and `electra-np predict`: text classification on top of a
pretrained discriminator (an electra_np run, or a Hugging Face ElectraForPreTraining folder).

    electra-np finetune --model runs/electra-tiny --train train.tsv --dev dev.tsv --out_dir runs/sst2
    electra-np evaluate --model runs/sst2 --data dev.tsv
    electra-np predict  --model runs/sst2 --data new.tsv --output predictions.tsv
    electra-np finetune --model runs/sst2 --train more.tsv --dev dev.tsv --out_dir runs/sst2-more  # same labels: its head goes on training

finetune --model may also be a classifier (ours, or a Hugging Face ElectraForSequenceClassification folder):
when its label names are those of the training data, its head is trained further (label ids matched by name),
else a fresh head is drawn; a line says which. A Hugging Face config's classifier_dropout is the head's dropout.
Weights keep the dtype of the folder they come from (a float64 model is fine-tuned and used in float64).
With --regression the label is a number (a score, as STS-B's): one output trained with squared error, scored by
Pearson and Spearman; evaluate and predict tell such a model by its single output.

What the data costs is said, and data that cannot work is refused in one line naming the file, line or option:
each set's size, [UNK] share and what --max_seq_length cut (labelled.report_lines; a set mostly [UNK] is refused),
empty or unknown labels, one class, scores read as classes, non-finite targets, numbers that train on nothing.

A fine-tuned folder holds model.npz (+ model.safetensors with the `hf` extra), config.json (with the
label names), vocab.txt, finetune.json (the recipe and the data columns) and history.jsonl.
"""

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import hf
from ..atomic import atomic_folder, atomic_write_text
from ..classification import head_of
from ..config import ElectraConfig
from ..data.labelled import (
    Example,
    check_targets,
    check_unk_share,
    encode_with_report,
    label_map,
    min_seq_length,
    read_tsv,
    report_lines,
)
from ..data.tokenizer import Tokenizer
from ..train.finetune import FinetuneConfig, evaluate, finetune, predict_logits
from ..train.run_dir import LOCK_NAME, hold
from .common import check_apart, classifier_labels, folder_tokenizer, read_json_object
from .finetune_args import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    add_evaluate_parser,
    add_finetune_parser,
    add_predict_parser,
)

REGRESSION_LABELS = {"LABEL_0": 0}  # one output, named as transformers names it (num_labels=1: regression)
ENCODER_ARCHS = ("ElectraForPreTraining", "ElectraModel", "ElectraForSequenceClassification",
                 "ElectraNpOfficialClassifier")


class FinetuneError(ValueError):
    """A user error: printed as one line, exit code 2."""


def model_folder(path) -> Path:
    """An electra_np pretraining run holds its discriminator in run/discriminator."""
    path = Path(path)
    if (path / "discriminator" / "config.json").is_file():
        return path / "discriminator"
    if not (path / "config.json").is_file():
        raise FinetuneError(f"{path}: no config.json here (expected a discriminator folder or an electra_np run)")
    return path


def load_model(path) -> tuple[ElectraConfig, dict, dict]:
    """(config, params, config dict) through hf.from_pretrained, the loader every command shares: model.npz or
    Hugging Face weights, in the dtype the folder holds (half precision becomes float32: hf.load_dtype), and a
    truncated file, a missing or misshapen tensor or a NaN weight refused in one line naming the file."""
    folder = model_folder(path)
    d = read_json_object(folder / "config.json")
    arch = (d.get("architectures") or ["?"])[0]
    if arch == "ElectraForMaskedLM":
        raise FinetuneError(f"{folder}: this is a generator (ElectraForMaskedLM); fine-tuning starts from a "
                            "discriminator (ElectraForPreTraining) or an encoder")
    if arch not in ENCODER_ARCHS:
        raise FinetuneError(f"{folder}: architecture {arch!r} is not an ELECTRA discriminator or classifier")
    config, params, _ = hf.from_pretrained(folder)
    return config, params, d


def load_tokenizer(folder, vocab=None, lowercase: bool | None = None) -> Tokenizer:
    """The tokenizer of a discriminator or classifier folder, or of a run (its discriminator's)."""
    return folder_tokenizer(model_folder(folder), vocab, lowercase)


def read_examples(args: argparse.Namespace, path) -> list:
    if args.task:
        return read_glue_file(args.task, path)
    return read_tsv(path, args.text_column, args.label_column, args.text_b_column, header=not args.no_header)


def read_glue_file(task: str, path) -> list:
    """SST-2: header sentence<TAB>label; CoLA: no header, columns source, label, mark, sentence."""
    if task == "sst2":
        return read_tsv(path, "sentence", "label")
    return read_tsv(path, 3, 1, header=False)


def save_classifier(out_dir, config: ElectraConfig, params: dict, tokenizer: Tokenizer, labels: dict,
                    fc: FinetuneConfig, history: list, columns: dict) -> None:
    """out_dir: model.npz, config.json (with the label names), vocab.txt, tokenizer_config.json, finetune.json,
    history.jsonl, and model.safetensors for the Hugging Face head; replaced in one atomic step."""
    hf_head = "classifier.out_proj.weight" in params
    head = "ElectraForSequenceClassification" if hf_head else "ElectraNpOfficialClassifier"
    d = config.to_dict()
    d.update(architectures=[head], id2label={str(i): label for label, i in labels.items()},
             label2id=dict(labels), num_labels=len(labels))
    if columns.get("regression"):  # transformers' ElectraForSequenceClassification then trains it with MSE
        d["problem_type"] = "regression"
    if fc.head_dropout is not None:
        d["classifier_dropout"] = fc.head_dropout
    with atomic_folder(out_dir) as tmp:
        np.savez(tmp / "model.npz", **params)
        (tmp / "config.json").write_text(json.dumps(d, indent=2) + "\n")
        hf.write_tokenizer(tmp, tokenizer, config.max_position_embeddings)  # the same files as a run's model folders
        (tmp / "finetune.json").write_text(json.dumps({"recipe": fc.__dict__, "columns": columns}, indent=2) + "\n")
        (tmp / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        if hf_head:
            _save_hf_weights(tmp, config, params, d)


def _save_hf_weights(folder, config, params, d):
    """model.safetensors beside model.npz (the folder's own config.json stays), when electra_np.hf can."""
    try:  # ImportError: safetensors (the hf extra) is not installed
        hf.save_pretrained(folder / "hf", config, params, "classifier", {"id2label": d["id2label"],
                                                                        "label2id": d["label2id"]})
    except ImportError:
        return
    for f in (folder / "hf").iterdir():
        if f.name not in ("config.json",):
            os.replace(f, folder / f.name)
    shutil.rmtree(folder / "hf")


def check_out_dir(args: argparse.Namespace, out: Path) -> None:
    """--out_dir may not be, sit inside or hold --model, nor hold --train, --dev or --vocab: the classifier
    replaces the whole folder at the end (atomic_folder). A non-empty one needs --overwrite (a lock file left by
    a killed run does not count)."""
    check_apart(out, "--out_dir", folders={"--model": args.model},
                files={"--train": args.train, "--dev": args.dev, "--vocab": args.vocab})
    if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()) and not args.overwrite:
        raise FinetuneError(f"{out}: the output folder is not empty (pass --overwrite to replace it)")


def cmd_finetune(args: argparse.Namespace, echo=print) -> dict:
    out = Path(args.out_dir)
    check_out_dir(args, out)
    with hold(out, echo):  # one writer per folder; a folder made only for the lock is removed if the run fails
        return _finetune(args, out, echo)


def _finetune(args: argparse.Namespace, out: Path, echo) -> dict:
    if args.random_init and not args.vocab:
        raise FinetuneError("--random_init needs --vocab (and the model folder for its config)")
    check_numbers(args, training=True)
    metric = dev_metric(args)
    config, params, d = load_model(args.model)
    tokenizer = load_tokenizer(args.model, args.vocab, args.lowercase)
    if len(tokenizer) != config.vocab_size:
        raise FinetuneError(f"the vocabulary has {len(tokenizer)} tokens but the model's vocab_size is "
                            f"{config.vocab_size}")
    if args.random_init:
        from ..params import encoder_shapes, init_params

        params = init_params(encoder_shapes(config), config.initializer_range, args.seed)
    train_ex, dev_ex = read_examples(args, args.train), read_examples(args, args.dev)
    head, labels, keep_head = choose_head(args, params, d, training_labels(args, train_ex), echo)
    fc = FinetuneConfig(learning_rate=args.lr, layerwise_lr_decay=args.layer_decay,
                        official_layer_decay=args.official_layer_decay, epochs=args.epochs,
                        batch_size=args.batch_size, max_seq_length=args.max_seq_length, head=head,
                        head_dropout=d.get("classifier_dropout"), seed=args.seed, metric=metric,
                        weight_decay=args.weight_decay, backend=args.backend)
    if fc.head_dropout is not None:  # Hugging Face's ElectraClassificationHead reads it
        echo(f"head dropout {fc.head_dropout:g}: the classifier_dropout of {model_folder(args.model) / 'config.json'}")
    T = min(fc.max_seq_length, config.max_position_embeddings)
    if T < fc.max_seq_length:
        echo(f"note: --max_seq_length {fc.max_seq_length} is more than the model's {T} positions "
             f"(max_position_embeddings): sequences are cut to {T} tokens")
    train = encode_set(train_ex, args.train, tokenizer, T, labels, args.regression, echo, always=True)
    dev = encode_set(dev_ex, args.dev, tokenizer, T, labels, args.regression, echo, always=True)
    what = "a regression target" if args.regression else f"{len(labels)} labels {sorted(labels)}"
    echo(f"fine-tuning {model_folder(args.model)} on {len(train_ex)} examples, {what}, dev {len(dev_ex)}")
    best, history = finetune(params, config, len(labels), train, dev, fc, tokenizer.pad_id, log=echo,
                             keep_head=keep_head)
    columns = {"text_column": args.text_column, "text_b_column": args.text_b_column,
               "label_column": args.label_column, "no_header": args.no_header, "task": args.task,
               "regression": args.regression}
    save_classifier(out, config, best, tokenizer, labels, fc, history, columns)
    best_epoch = max(history, key=lambda h: h[fc.metric])
    echo(f"best dev {fc.metric} {best_epoch[fc.metric]:.4f} (epoch {best_epoch['epoch']}); saved to {out}")
    return best_epoch


def check_numbers(args: argparse.Namespace, training: bool) -> None:
    """Refuse numbers that would fail deep inside (a zero batch size, a sequence with no room for text) or train
    on nothing (no epochs, a learning rate <= 0), naming the option."""
    if args.batch_size < 1:
        raise FinetuneError(f"--batch_size must be at least 1, got {args.batch_size}")
    if not training:
        return
    if args.epochs < 1:
        raise FinetuneError(f"--epochs must be at least 1, got {args.epochs}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise FinetuneError(f"--lr must be a positive number, got {args.lr:g}")
    if not 0 < args.layer_decay <= 1:
        raise FinetuneError(f"--layer_decay must be in (0, 1], got {args.layer_decay:g}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise FinetuneError(f"--weight_decay must be a number >= 0, got {args.weight_decay:g}")
    pairs = args.text_b_column is not None
    need = min_seq_length(pairs)
    if args.max_seq_length < need:
        holds = "[CLS] a [SEP] b [SEP] for a sentence pair" if pairs else "[CLS] a token of text [SEP]"
        raise FinetuneError(f"--max_seq_length must be at least {need} ({holds}), got {args.max_seq_length}")


def dev_metric(args: argparse.Namespace) -> str:
    """--metric, by default accuracy (classes) or pearson (--regression); a metric of the other kind is refused."""
    if args.metric is None:
        return "pearson" if args.regression else "accuracy"
    if args.regression != (args.metric in REGRESSION_METRICS):
        kind = "regression" if args.regression else "classification"
        choices = REGRESSION_METRICS if args.regression else CLASSIFICATION_METRICS
        raise FinetuneError(f"--metric {args.metric} does not score {kind}; choose one of {', '.join(choices)}")
    return args.metric


def training_labels(args: argparse.Namespace, examples: list) -> dict[str, int]:
    """{label name: class id} of the training set (labelled.label_map: one class, or scores read as classes,
    refused), or the single output of --regression (labelled.check_targets), named as transformers names it."""
    if args.regression:
        check_targets(examples)
        return dict(REGRESSION_LABELS)
    return label_map(examples)


def encode_set(examples: list, source, tokenizer: Tokenizer, T: int, labels: dict | None, regression: bool,
               echo, always: bool = False) -> tuple:
    """A labelled set encoded (labelled.encode_with_report): refused if the vocabulary cannot spell it, and what
    truncation to T tokens cut said in a line (always: also when nothing was cut). Returns (encoded, y)."""
    encoded, y, report = encode_with_report(examples, tokenizer, T, None if regression else labels, regression)
    check_unk_share(report, source)
    for line in report_lines(report, source, T, always):
        echo(line)
    return encoded, y


def choose_head(args, params, d: dict, labels: dict, echo) -> tuple[str, dict, bool]:
    """(head layout, label ids, keep the head) for fine-tuning --model. A classifier whose label names are the
    training data's keeps its head, and the ids it gives those names; otherwise a fresh head of --head is drawn
    (default: the classifier's layout, else official), with `labels`. A line says which, and why."""
    try:
        layout, _ = head_of(params)
    except ValueError:  # a discriminator or an encoder (or --random_init's fresh encoder): no head to keep
        return args.head or "official", labels, False
    folder = model_folder(args.model)
    theirs = classifier_labels(d, head_of(params)[1], folder / "config.json")
    if set(theirs) != set(labels):
        only = [f"only in the {what}: {', '.join(sorted(a - b))}" for what, a, b in
                (("model", set(theirs), set(labels)), ("training data", set(labels), set(theirs))) if a - b]
        why = f"its labels are not the training data's ({'; '.join(only)})"
    elif args.head not in (None, layout):
        why = f"it has the {layout} head, not the {args.head} one asked for"
    else:
        echo(f"continuing the classifier head of {folder} (labels: {', '.join(sorted(theirs, key=theirs.get))})")
        return layout, theirs, True
    head = args.head or layout
    echo(f"drawing a fresh {head} classifier head instead of continuing the one of {folder}: {why}")
    return head, labels, False


def _classifier(args):
    """A classifier folder: ours (finetune.json holds the recipe and the data columns), or any Hugging Face
    ElectraForSequenceClassification folder (label names from its config.json; text and label columns as
    given, else `sentence` and `label`; sequences up to max_position_embeddings)."""
    folder = Path(args.model)
    f = folder / "finetune.json"
    config_file = folder / "config.json"
    if f.is_file():
        meta = _finetune_meta(f)
    elif config_file.is_file() and "ElectraForSequenceClassification" in (read_json_object(config_file).get("architectures")
                                                                          or []):
        meta = None
    else:
        raise FinetuneError(f"{folder}: not a fine-tuned classifier (no finetune.json, and config.json names no "
                            "ElectraForSequenceClassification)")
    config, params, d = load_model(folder)
    labels = classifier_labels(d, head_of(params)[1], folder / "config.json")
    if meta is None:
        meta = {"recipe": {"max_seq_length": config.max_position_embeddings},
                "columns": {"text_column": "sentence", "text_b_column": None, "label_column": "label",
                            "no_header": False, "task": None}}
    return config, params, labels, load_tokenizer(folder), meta


def _finetune_meta(path) -> dict:
    """finetune.json: {"recipe": {..., "max_seq_length": int}, "columns": {...}}; one line naming it otherwise."""
    meta = read_json_object(path)
    recipe, columns = meta.get("recipe"), meta.get("columns")
    if not (isinstance(recipe, dict) and isinstance(recipe.get("max_seq_length"), int) and isinstance(columns, dict)):
        raise FinetuneError(f"{path}: damaged (it needs a recipe with max_seq_length, and the data columns)")
    for k in ("text_column", "text_b_column", "label_column", "no_header", "task"):
        columns.setdefault(k, None)
    return meta


def _examples(args, cols):
    """The labelled examples to evaluate: the columns given on the command line, else those of training."""
    for k in ("text_column", "text_b_column", "label_column", "no_header", "task"):
        if getattr(args, k, None) in (None, False):
            setattr(args, k, cols[k])
    if args.task:
        return read_glue_file(args.task, args.data)
    return read_tsv(args.data, args.text_column, args.label_column, args.text_b_column, header=not args.no_header)


def cmd_evaluate(args: argparse.Namespace, echo=print) -> dict:
    check_numbers(args, training=False)
    config, params, labels, tokenizer, meta = _classifier(args)
    ex = _examples(args, meta["columns"])
    T = min(meta["recipe"]["max_seq_length"], config.max_position_embeddings)
    regression = head_of(params)[1] == 1
    enc, y = encode_set(ex, args.data, tokenizer, T, labels, regression, echo)
    scores, _ = evaluate(params, config, enc, y, args.batch_size, tokenizer.pad_id, args.backend, log=echo)
    echo(" ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" ({len(ex)} examples)")
    return scores


def cmd_predict(args: argparse.Namespace, echo=print) -> np.ndarray:
    check_numbers(args, training=False)
    config, params, labels, tokenizer, meta = _classifier(args)
    ex = _texts(args, meta["columns"])
    note = echo if args.output else (lambda line: print(line, file=sys.stderr))  # stdout carries the predictions
    T = min(meta["recipe"]["max_seq_length"], config.max_position_embeddings)
    enc, _ = encode_set(ex, "standard input" if args.data == "-" else args.data, tokenizer, T, None, False, note)
    logits = predict_logits(params, config, enc, args.batch_size, tokenizer.pad_id, args.backend, log=note)
    pair = any(e.text_b is not None for e in ex)
    texts = [e.text_a + ("\t" + (e.text_b or "") if pair else "") for e in ex]
    head = "text\t" + ("text_b\t" if pair else "")
    if logits.shape[1] == 1:  # a regression head: its output is the prediction
        out = logits[:, 0]
        lines = [head + "prediction"] + [f"{t}\t{v:.6f}" for t, v in zip(texts, out)]
    else:
        names = sorted(labels, key=labels.get)
        z = logits - logits.max(1, keepdims=True)
        out = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        lines = [head + "label\t" + "\t".join(f"p_{n}" for n in names)]
        lines += [f"{t}\t{names[p.argmax()]}\t" + "\t".join(f"{q:.6f}" for q in p) for t, p in zip(texts, out)]
    text = "\n".join(lines) + "\n"
    if args.output:
        path = Path(args.output)
        atomic_write_text(path, text)
        echo(f"wrote {len(ex)} predictions to {path}")
    else:
        sys.stdout.write(text)
    return out


def _texts(args: argparse.Namespace, cols: dict) -> list[Example]:
    """The texts to label: stdin ("-") or a .txt file, one text per line; else a TSV read with the columns
    given on the command line, or else those of training (its text columns only: no label is needed)."""
    source = "standard input" if args.data == "-" else args.data
    if args.data == "-" or (Path(args.data).suffix.lower() == ".txt" and args.text_column is None):
        raw = sys.stdin.read() if args.data == "-" else _read_text(args.data)
        texts = [line.strip() for line in raw.split("\n")]
        ex = [Example(t, None, None, n, source) for n, t in enumerate(texts, 1) if t]
    else:
        if args.text_column is None and not args.no_header:  # no columns given: those of training
            task = args.task or cols.get("task")
            if task:  # a GLUE file: its text column, its header convention
                args.text_column, args.no_header = ("sentence", False) if task == "sst2" else (3, True)
            else:
                args.text_column, args.text_b_column, args.no_header = (cols["text_column"], cols["text_b_column"],
                                                                        cols["no_header"])
        ex = read_tsv(args.data, args.text_column, None, args.text_b_column, header=not args.no_header)
    if not ex:
        raise FinetuneError(f"{source}: no text to label (one text per line, or a TSV with a text column)")
    return ex


def _read_text(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FinetuneError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise FinetuneError(f"{path}: not UTF-8 (byte offset {e.start})") from None


def add_parsers(sub) -> None:
    """Register the three commands on an argparse subparsers object (their options: finetune_args.py)."""
    add_finetune_parser(sub).set_defaults(func=cmd_finetune)
    add_evaluate_parser(sub).set_defaults(func=cmd_evaluate)
    add_predict_parser(sub).set_defaults(func=cmd_predict)
