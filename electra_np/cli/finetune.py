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

A fine-tuned folder holds model.npz (+ model.safetensors with the `hf` extra), config.json (with the
label names), vocab.txt, finetune.json (the recipe and the data columns) and history.jsonl.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import hf
from ..atomic import atomic_folder, atomic_write_text
from ..classification import head_of
from ..config import ElectraConfig
from ..data.labelled import Example, encode_examples, label_map, read_tsv
from ..data.tokenizer import Tokenizer
from ..train.finetune import FinetuneConfig, evaluate, finetune, predict_logits
from .common import DefaultsHelpFormatter, folder_tokenizer, read_json_object

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
    """(config, params, config dict) from model.npz, or from Hugging Face weights via electra_np.hf; either way in
    the dtype the folder holds (half precision becomes float32: hf.load_dtype)."""
    folder = model_folder(path)
    d = json.loads((folder / "config.json").read_text())
    arch = (d.get("architectures") or ["?"])[0]
    if arch == "ElectraForMaskedLM":
        raise FinetuneError(f"{folder}: this is a generator (ElectraForMaskedLM); fine-tuning starts from a "
                            "discriminator (ElectraForPreTraining) or an encoder")
    if arch not in ENCODER_ARCHS:
        raise FinetuneError(f"{folder}: architecture {arch!r} is not an ELECTRA discriminator or classifier")
    if (folder / "model.npz").is_file():
        config = ElectraConfig.from_dict(d, source=str(folder / "config.json"))
        try:
            with np.load(folder / "model.npz") as z:
                params = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise FinetuneError(f"{folder / 'model.npz'}: unreadable ({e})") from None
    else:
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


def cmd_finetune(args: argparse.Namespace, echo=print) -> dict:
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FinetuneError(f"{out}: the output folder is not empty (pass --overwrite to replace it)")
    if args.random_init and not args.vocab:
        raise FinetuneError("--random_init needs --vocab (and the model folder for its config)")
    config, params, d = load_model(args.model)
    tokenizer = load_tokenizer(args.model, args.vocab, args.lowercase)
    if len(tokenizer) != config.vocab_size:
        raise FinetuneError(f"the vocabulary has {len(tokenizer)} tokens but the model's vocab_size is "
                            f"{config.vocab_size}")
    if args.random_init:
        from ..params import encoder_shapes, init_params

        params = init_params(encoder_shapes(config), config.initializer_range, args.seed)
    train_ex, dev_ex = read_examples(args, args.train), read_examples(args, args.dev)
    head, labels, keep_head = choose_head(args, params, d, label_map(train_ex), echo)
    fc = FinetuneConfig(learning_rate=args.lr, layerwise_lr_decay=args.layer_decay,
                        official_layer_decay=args.official_layer_decay, epochs=args.epochs,
                        batch_size=args.batch_size, max_seq_length=args.max_seq_length, head=head,
                        head_dropout=d.get("classifier_dropout"), seed=args.seed, metric=args.metric,
                        weight_decay=args.weight_decay, backend=args.backend)
    if fc.head_dropout is not None:  # Hugging Face's ElectraClassificationHead reads it
        echo(f"head dropout {fc.head_dropout:g}: the classifier_dropout of {model_folder(args.model) / 'config.json'}")
    T = min(fc.max_seq_length, config.max_position_embeddings)
    train = encode_examples(train_ex, tokenizer, T, labels)
    dev = encode_examples(dev_ex, tokenizer, T, labels)
    echo(f"fine-tuning {model_folder(args.model)} on {len(train_ex)} examples, {len(labels)} labels "
         f"{sorted(labels)}, dev {len(dev_ex)}")
    best, history = finetune(params, config, len(labels), train, dev, fc, tokenizer.pad_id, log=echo,
                             keep_head=keep_head)
    columns = {"text_column": args.text_column, "text_b_column": args.text_b_column,
               "label_column": args.label_column, "no_header": args.no_header, "task": args.task}
    save_classifier(out, config, best, tokenizer, labels, fc, history, columns)
    best_epoch = max(history, key=lambda h: h[fc.metric])
    echo(f"best dev {fc.metric} {best_epoch[fc.metric]:.4f} (epoch {best_epoch['epoch']}); saved to {out}")
    return best_epoch


def choose_head(args, params, d: dict, labels: dict, echo) -> tuple[str, dict, bool]:
    """(head layout, label ids, keep the head) for fine-tuning --model. A classifier whose label names are the
    training data's keeps its head, and the ids it gives those names; otherwise a fresh head of --head is drawn
    (default: the classifier's layout, else official), with `labels`. A line says which, and why."""
    try:
        layout, _ = head_of(params)
    except ValueError:  # a discriminator or an encoder (or --random_init's fresh encoder): no head to keep
        return args.head or "official", labels, False
    folder = model_folder(args.model)
    theirs = folder_labels(d, params)
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


def folder_labels(d: dict, params: dict) -> dict[str, int]:
    """{label name: class id} of a classifier's config.json: label2id, else id2label, else transformers' own names
    LABEL_0, LABEL_1, ... for the head's classes."""
    label2id = d.get("label2id") or {name: int(i) for i, name in (d.get("id2label") or {}).items()}
    if not label2id:
        label2id = {f"LABEL_{i}": i for i in range(head_of(params)[1])}
    return {str(label): int(i) for label, i in label2id.items()}


def _classifier(args):
    """A classifier folder: ours (finetune.json holds the recipe and the data columns), or any Hugging Face
    ElectraForSequenceClassification folder (label names from its config.json; text and label columns as
    given, else `sentence` and `label`; sequences up to max_position_embeddings)."""
    folder = Path(args.model)
    f = folder / "finetune.json"
    config_file = folder / "config.json"
    if f.is_file():
        meta = json.loads(f.read_text())
    elif config_file.is_file() and "ElectraForSequenceClassification" in (read_json_object(config_file).get("architectures")
                                                                          or []):
        meta = None
    else:
        raise FinetuneError(f"{folder}: not a fine-tuned classifier (no finetune.json, and config.json names no "
                            "ElectraForSequenceClassification)")
    config, params, d = load_model(folder)
    labels = folder_labels(d, params)
    if meta is None:
        meta = {"recipe": {"max_seq_length": config.max_position_embeddings},
                "columns": {"text_column": "sentence", "text_b_column": None, "label_column": "label",
                            "no_header": False, "task": None}}
    return config, params, labels, load_tokenizer(folder), meta


def _examples(args, cols):
    """The labelled examples to evaluate: the columns given on the command line, else those of training."""
    for k in ("text_column", "text_b_column", "label_column", "no_header", "task"):
        if getattr(args, k, None) in (None, False):
            setattr(args, k, cols[k])
    if args.task:
        return read_glue_file(args.task, args.data)
    return read_tsv(args.data, args.text_column, args.label_column, args.text_b_column, header=not args.no_header)


def cmd_evaluate(args: argparse.Namespace, echo=print) -> dict:
    config, params, labels, tokenizer, meta = _classifier(args)
    ex = _examples(args, meta["columns"])
    T = min(meta["recipe"]["max_seq_length"], config.max_position_embeddings)
    enc, y = encode_examples(ex, tokenizer, T, labels)
    scores, _ = evaluate(params, config, enc, y, args.batch_size, tokenizer.pad_id, args.backend)
    echo(" ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" ({len(ex)} examples)")
    return scores


def cmd_predict(args: argparse.Namespace, echo=print) -> np.ndarray:
    config, params, labels, tokenizer, meta = _classifier(args)
    ex = _texts(args, meta["columns"])
    enc, _ = encode_examples(ex, tokenizer, min(meta["recipe"]["max_seq_length"], config.max_position_embeddings))
    logits = predict_logits(params, config, enc, args.batch_size, tokenizer.pad_id, args.backend)
    names = sorted(labels, key=labels.get)
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    pair = any(e.text_b is not None for e in ex)
    lines = ["text\t" + ("text_b\t" if pair else "") + "label\t" + "\t".join(f"p_{n}" for n in names)]
    for e, p in zip(ex, probs):
        text = e.text_a + ("\t" + (e.text_b or "") if pair else "")
        lines.append(f"{text}\t{names[p.argmax()]}\t" + "\t".join(f"{q:.6f}" for q in p))
    text = "\n".join(lines) + "\n"
    if args.output:
        out = Path(args.output)
        atomic_write_text(out, text)
        echo(f"wrote {len(ex)} predictions to {out}")
    else:
        sys.stdout.write(text)
    return probs


def _texts(args: argparse.Namespace, cols: dict) -> list[Example]:
    """The texts to label: stdin ("-") or a .txt file, one text per line; else a TSV read with the columns
    given on the command line, or else those of training (its text columns only: no label is needed)."""
    source = "standard input" if args.data == "-" else args.data
    if args.data == "-" or (Path(args.data).suffix.lower() == ".txt" and args.text_column is None):
        raw = sys.stdin.read() if args.data == "-" else _read_text(args.data)
        texts = [line.strip() for line in raw.split("\n")]
        ex = [Example(t, None, None, n) for n, t in enumerate(texts, 1) if t]
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


def _column(s):
    """A column given on the command line: a header name, or an index with --no_header."""
    return int(s) if s.isdigit() else s


CLASSIFIER_HELP = ("a classifier: a folder written by `electra-np finetune`, or a Hugging Face "
                   "ElectraForSequenceClassification folder (with its vocab.txt); weights keep its dtype")


def add_parsers(sub) -> None:
    """Register the three commands on an argparse subparsers object."""
    def columns(p, labelled=True, training=False):
        same = "" if training else " (default: as in training)"
        p.add_argument("--task", choices=["sst2", "cola"], help="read GLUE SST-2 / CoLA files as they come" + same)
        p.add_argument("--text_column", default="sentence" if training else None, type=_column,
                       help="header name (or 0-based index with --no_header) of the text" + same)
        p.add_argument("--text_b_column", default=None, type=_column,
                       help="second text of a sentence pair, if any" + same)
        if labelled:
            p.add_argument("--label_column", default="label" if training else None, type=_column,
                           help="header name (or index) of the label" + same)
        p.add_argument("--no_header", action="store_true", help="the TSV has no header row; columns are indices")
        p.add_argument("--batch_size", type=int, default=32, help="examples per batch")
        p.add_argument("--backend", choices=["fast", "numpy"], default="fast",
                       help="fast: Numba kernels and reused buffers; numpy: the readable reference (same numbers)")

    p = sub.add_parser("finetune", help="fine-tune a discriminator for text classification",
                       description="Fine-tune a pretrained discriminator (an electra_np run or an ELECTRA folder, "
                                   "ours or Hugging Face) for text classification with the official recipe: "
                                   "layer-wise learning-rate decay, warmup then linear decay, dev evaluation after "
                                   "every epoch with the best epoch kept. A classifier given as --model is trained "
                                   "further when its labels are those of --train.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="what to start from: an electra_np pretraining run (its discriminator), a discriminator or "
                        "encoder folder (electra_np's, or Hugging Face's ElectraForPreTraining / ElectraModel), or a "
                        "classifier (a folder of `electra-np finetune`, or Hugging Face's "
                        "ElectraForSequenceClassification): its head is trained further when its label names are "
                        "those of --train, else a fresh head is drawn. Weights keep the folder's dtype")
    p.add_argument("--train", required=True, help="training TSV")
    p.add_argument("--dev", required=True, help="dev TSV, evaluated after every epoch; the best epoch is kept")
    p.add_argument("--out_dir", required=True, help="where the fine-tuned classifier goes")
    p.add_argument("--vocab", default=None, help="vocab.txt (default: the model folder's)")
    p.add_argument("--lowercase", default=None, action=argparse.BooleanOptionalAction,
                   help="lowercase text (default: as the model's tokenizer_config.json says)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (official: 1e-4; 3e-4 for Small)")
    p.add_argument("--layer_decay", type=float, default=0.8, help="layer-wise learning-rate decay")
    p.add_argument("--official_layer_decay", action="store_true",
                   help="reproduce the official code's off-by-one (top layer gets decay squared)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs")
    p.add_argument("--max_seq_length", type=int, default=128, help="longer examples are truncated")
    p.add_argument("--head", choices=["official", "hf"], default=None,
                   help="official: [CLS] -> dropout -> linear; hf: ElectraClassificationHead, the one `export` "
                        "writes (default: a classifier --model's own, else official)")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (official: 0)")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "f1", "mcc"],
                   help="dev metric that picks the best epoch")
    p.add_argument("--seed", type=int, default=0, help="seed for the head, shuffling and dropout")
    p.add_argument("--random_init", action="store_true",
                   help="baseline: a randomly initialized encoder of the same shape")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out_dir")
    columns(p, training=True)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score a fine-tuned classifier on a labelled TSV",
                       description="Score a fine-tuned classifier on a labelled TSV: accuracy, F1 and MCC (Pearson, "
                                   "Spearman and MSE for regression). Columns: as in training unless given.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=CLASSIFIER_HELP)
    p.add_argument("--data", required=True, help="labelled TSV (same columns as training unless given)")
    columns(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="labels and probabilities for texts",
                       description="Label texts with a fine-tuned classifier. Input: a .txt file or standard input "
                                   "(-) with one text per line, or a TSV (its text column(s): --text_column, "
                                   "--text_b_column, --no_header; default: the columns of training). Output: a TSV "
                                   "with the text, the predicted label and each label's probability.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=CLASSIFIER_HELP)
    p.add_argument("--data", required=True, help="a .txt file (one text per line), a TSV, or - for standard input")
    p.add_argument("--output", default=None, help="output TSV (default: standard output)")
    columns(p, labelled=False)
    p.set_defaults(func=cmd_predict)
