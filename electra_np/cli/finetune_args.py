"""The command lines of `electra-np finetune`, `evaluate` and `predict`: their options, help and choices.
finetune.py registers them (add_parsers) with the functions that run them; kept apart so that each file reads
as one thing, the options here and what they do there."""

import argparse

from .common import DefaultsHelpFormatter

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
CLASSIFIER_HELP = ("a classifier: a folder written by `electra-np finetune`, or a Hugging Face "
                   "ElectraForSequenceClassification folder (with its vocab.txt); weights keep its dtype")


def column(s):
    """A column given on the command line: a header name, or an index with --no_header."""
    return int(s) if s.isdigit() else s


def add_columns(p, labelled=True, training=False) -> None:
    """The data options the three commands share: which columns of the TSV, a batch size, the backend."""
    same = "" if training else " (default: as in training)"
    p.add_argument("--task", choices=["sst2", "cola"], help="read GLUE SST-2 / CoLA files as they come" + same)
    p.add_argument("--text_column", default="sentence" if training else None, type=column,
                   help="header name (or 0-based index with --no_header) of the text" + same)
    p.add_argument("--text_b_column", default=None, type=column,
                   help="second text of a sentence pair, if any" + same)
    if labelled:
        p.add_argument("--label_column", default="label" if training else None, type=column,
                       help="header name (or index) of the label" + same)
    p.add_argument("--no_header", action="store_true", help="the TSV has no header row; columns are indices")
    p.add_argument("--batch_size", type=int, default=32, help="examples per batch")
    p.add_argument("--backend", choices=["fast", "fast-padded", "numpy"], default="fast",
                   help="fast: Numba kernels over the real tokens only (no padding; fast-padded where NumPy's "
                        "BLAS is not OpenBLAS); fast-padded: Numba kernels over the padded batch, for comparison; "
                        "numpy: the readable reference (same numbers on all three)")


def add_finetune_parser(sub) -> argparse.ArgumentParser:
    """`finetune`'s parser on an argparse subparsers object; the caller sets what it runs."""
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
    p.add_argument("--metric", default=None, choices=CLASSIFICATION_METRICS + REGRESSION_METRICS,
                   help="dev metric that picks the best epoch (default: accuracy; pearson with --regression)")
    p.add_argument("--regression", action="store_true",
                   help="the label is a number to predict (a score, as STS-B's): one output trained with squared "
                        "error, as Hugging Face's ElectraForSequenceClassification with num_labels=1")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the head, dropout and the batch order (examples of similar length batched "
                        "together, shuffled within and across length buckets, anew each epoch)")
    p.add_argument("--random_init", action="store_true",
                   help="baseline: a randomly initialized encoder of the same shape")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out_dir")
    add_columns(p, training=True)
    return p


def add_evaluate_parser(sub) -> argparse.ArgumentParser:
    """`evaluate`'s parser on an argparse subparsers object; the caller sets what it runs."""
    p = sub.add_parser("evaluate", help="score a fine-tuned classifier on a labelled TSV",
                       description="Score a fine-tuned classifier on a labelled TSV: accuracy, F1 and MCC (Pearson, "
                                   "Spearman and MSE for regression). Columns: as in training unless given.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=CLASSIFIER_HELP)
    p.add_argument("--data", required=True, help="labelled TSV (same columns as training unless given)")
    add_columns(p)
    return p


def add_predict_parser(sub) -> argparse.ArgumentParser:
    """`predict`'s parser on an argparse subparsers object; the caller sets what it runs."""
    p = sub.add_parser("predict", help="labels and probabilities for texts",
                       description="Label texts with a fine-tuned classifier. Input: a .txt file or standard input "
                                   "(-) with one text per line, or a TSV (its text column(s): --text_column, "
                                   "--text_b_column, --no_header; default: the columns of training). Output: a TSV "
                                   "with the text, the predicted label and each label's probability.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", required=True, help=CLASSIFIER_HELP)
    p.add_argument("--data", required=True, help="a .txt file (one text per line), a TSV, or - for standard input")
    p.add_argument("--output", default=None, help="output TSV (default: standard output)")
    add_columns(p, labelled=False)
    return p
