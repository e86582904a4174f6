"""`electra-np export`: a model of a run, or a fine-tuned classifier, as a complete Hugging Face `transformers`
folder (config.json, model.safetensors, vocab.txt, tokenizer_config.json, special_tokens_map.json).

    electra-np export runs/electra-tiny --out hf/electra-tiny                        # the discriminator
    electra-np export runs/electra-tiny --out hf/electra-tiny-gen --what generator
    electra-np export runs/sst2 --out hf/sst2                      # a `finetune --head hf` classifier

AutoTokenizer.from_pretrained and AutoModelForPreTraining / AutoModelForMaskedLM /
AutoModelForSequenceClassification.from_pretrained load the folder on its own, and give electra_np's ids and
logits (tests/test_export.py). The weights come from model.npz, so a run made before the `hf` extra was
installed exports too; writing model.safetensors needs that extra. The folder is written in one atomic step
(atomic.atomic_folder): an --overwrite that fails leaves the old folder as it was.
"""

import argparse
from pathlib import Path

import numpy as np

from .. import hf
from ..classification import head_of
from .common import CliError, DefaultsHelpFormatter, check_apart, classifier_labels, folder_tokenizer

WHAT = {"discriminator": "discriminator", "generator": "generator", "classifier": "classifier"}  # --what -> kind
AUTO_CLASS = {"discriminator": "AutoModelForPreTraining", "generator": "AutoModelForMaskedLM",
              "classifier": "AutoModelForSequenceClassification", "encoder": "AutoModel"}
RUN_PARTS = ("discriminator", "generator")  # a pretraining run's model folders, the default first
DTYPES = {"float32": np.float32, "float64": np.float64}
OFFICIAL_HEAD = ("{folder}: this classifier has the official head (one linear layer on [CLS], google-research/"
                 "electra), which transformers has no class for; fine-tune again with `--head hf` "
                 "(ElectraForSequenceClassification) to export it")


def source_folder(path: Path, what: str | None) -> tuple[Path, str]:
    """The model folder to export and its kind: a run's discriminator/ (or generator/), a model folder, or a
    fine-tuned classifier. Refuses a folder that holds none, a --what it does not hold, the official head."""
    if not path.is_dir():
        raise CliError(f"{path}: no such folder (expected an electra_np run, a model folder or a fine-tuned "
                       "classifier)")
    parts = [p for p in RUN_PARTS if (path / p / hf.CONFIG_NAME).is_file()]
    if parts and not (path / hf.CONFIG_NAME).is_file():
        if what == "classifier":
            raise CliError(f"{path}: a pretraining run holds no classifier (export a `electra-np finetune` folder)")
        folder = path / (what or parts[0])
        if (what or parts[0]) not in parts:
            raise CliError(f"{path}: this run has no {what} (it has {', '.join(parts)})")
    elif (path / hf.CONFIG_NAME).is_file():
        folder = path
    else:
        raise CliError(f"{path}: not a model (no config.json, and no discriminator/ or generator/ holding one); "
                       "expected an electra_np run, a model folder or a fine-tuned classifier")
    arch = (hf.read_config(folder).get("architectures") or [None])[0]
    kind = hf.ARCHITECTURE_KINDS.get(arch)
    if kind == "classifier_official":
        raise CliError(OFFICIAL_HEAD.format(folder=folder))
    if kind is None:
        raise CliError(f"{folder / hf.CONFIG_NAME}: architecture {arch!r} is not an ELECTRA model electra_np "
                       f"exports ({', '.join(hf.KINDS[k] for k in WHAT.values())})")
    if what is not None and WHAT[what] != kind:
        raise CliError(f"{folder}: this is a {kind} ({arch}), not a {what}")
    return folder, kind


def check_out(out: Path, given: Path, overwrite: bool) -> None:
    """--out may not be, hold or sit inside the input; an existing non-empty one needs --overwrite."""
    check_apart(out, "--out", folders={"input": given})
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CliError(f"--out {out}: the folder is not empty (pass --overwrite to replace it)")


def cmd_export(args: argparse.Namespace, echo=print) -> int:
    try:
        import safetensors  # noqa: F401
    except ImportError:
        raise CliError('export writes model.safetensors, which needs the safetensors package: '
                       'pip install -e ".[hf]"') from None
    given, out = Path(args.model), Path(args.out)
    folder, kind = source_folder(given, args.what)
    check_out(out, given, args.overwrite)
    tokenizer = folder_tokenizer(folder)
    config, params, _ = hf.from_pretrained(folder, kind=kind, dtype=DTYPES.get(args.dtype),
                                           vocab_size=len(tokenizer))
    extra = None
    if kind == "classifier":
        d = hf.read_config(folder)
        label2id = classifier_labels(d, head_of(params)[1], folder / hf.CONFIG_NAME)
        extra = {"id2label": {str(i): label for label, i in label2id.items()}, "label2id": label2id}
        if d.get("classifier_dropout") is not None:  # the head's dropout in fine-tuning (finetune --model)
            extra["classifier_dropout"] = d["classifier_dropout"]
    hf.save_pretrained(out, config, params, kind, extra, tokenizer=tokenizer, keep_others=False)
    dtype = next(v.dtype for v in params.values() if np.issubdtype(v.dtype, np.floating))
    echo(f"exported the {kind} of {folder} ({hf.KINDS[kind]}, {dtype}) to {out}: "
         f"{hf.CONFIG_NAME}, {hf.SAFETENSORS_NAME}, {', '.join(hf.TOKENIZER_FILES)}")
    echo(f"load it with transformers.AutoTokenizer and {AUTO_CLASS[kind]}.from_pretrained('{out}')")
    return 0


def add_parser(sub) -> None:
    """Register `export` on an argparse subparsers object."""
    p = sub.add_parser("export", help="write a run's model or a fine-tuned classifier as a transformers folder",
                       description="Write a pretraining run's discriminator or generator, or a classifier "
                                   "fine-tuned with --head hf, as a complete Hugging Face transformers folder "
                                   "(config.json, model.safetensors, vocab.txt, tokenizer_config.json, "
                                   "special_tokens_map.json) that AutoTokenizer and AutoModel* load on their own.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("model", metavar="RUN_OR_FOLDER",
                   help="a pretraining run (out_dir of `electra-np pretrain`), one model folder of it "
                        "(discriminator/ or generator/), or a classifier folder of `electra-np finetune`")
    p.add_argument("--out", required=True, help="the folder to write (not inside the input)")
    p.add_argument("--what", choices=sorted(WHAT), default=None,
                   help="which model to export; default: a run's discriminator (its generator for an MLM-only "
                        "run), else what the folder holds")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="dtype of the written weights (default: the model's own, float32 unless it was trained in "
                        "float64)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_export)
