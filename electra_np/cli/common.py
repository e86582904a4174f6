"""What every command shares: the exit codes, the user-error exception, the help formatter, and the corpus
options."""

import argparse
import json
import math
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A bad command line or input: printed as one line, exit code 2."""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after an option's help where there is a default to show: not after a required
    option, a flag (default False), a None default, or a help that already says its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required or action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


CORPUS_HELP = ("text files to pretrain on (UTF-8, one sentence or paragraph per line, a blank line between documents; "
               "a .tsv file or FILE:COLUMN reads one column). Default: the embedded corpus, the docstrings of "
               "Python's standard library (about 2 MB of English)")


EVAL_FRACTION_HELP = ("share of the examples held out for evaluation: the trailing documents, or the trailing "
                      "examples when the documents are too few or too uneven to give about that share")


def add_corpus_options(p, vocab_help: bool = True, packing: bool = True) -> None:
    """--corpus, --vocab (unless vocab_help is False), --lowercase, --split_sentences (said of packing, or of
    the vocabulary when packing is False)."""
    p.add_argument("--corpus", nargs="+", metavar="FILE", help=CORPUS_HELP)
    if vocab_help:
        p.add_argument("--vocab", metavar="FILE", help="a BERT vocab.txt (one token per line, with [PAD] [UNK] [CLS] "
                                                       "[SEP] [MASK]); default: learned from the corpus and cached")
    p.add_argument("--lowercase", action=argparse.BooleanOptionalAction,
                   help="lowercase and strip accents before WordPiece, as uncased BERT/ELECTRA (default: on)")
    split = ("split each line into sentences after . ! ? (and Chinese or Japanese 。！？) before packing "
             "(for one-paragraph-per-line text, whose long lines are otherwise cut to one example) (default: off; on "
             "for the embedded corpus, whose lines are paragraphs)")
    if not packing:
        split = ("accepted for the same command line as prepare and pretrain; the vocabulary is the same either way "
                 "(sentences end where words do) (default: off)")
    p.add_argument("--split_sentences", action=argparse.BooleanOptionalAction, help=split)


def split_by_default(split_sentences: bool | None, corpus) -> bool:
    """--split_sentences as given, else on for the embedded corpus only (one docstring paragraph per line: unsplit,
    packing would cut a fifth of its tokens), off for a user's corpus, whose line layout is the user's."""
    return bool(split_sentences) if split_sentences is not None else corpus is None


def read_json_object(path) -> dict:
    """A JSON file that must hold an object (a config.json, a run.json): one-line CliError otherwise."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: unreadable or not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CliError(f"{path}: expected a JSON object")
    return d


def folder_tokenizer(folder, vocab=None, lowercase: bool | None = None):
    """The tokenizer of a model folder: `vocab` (--vocab) if given, else the folder's vocab.txt, else its run's (the
    folder above); lowercasing and accent stripping as its tokenizer_config.json records them (lowercase on when it
    says nothing), unless `lowercase` is given (accents then follow it, as in BERT). The file is read through
    hf.read_tokenizer_config: "do_lower_case": "no" is a true string, and would lowercase silently."""
    from .. import hf
    from ..data.tokenizer import Tokenizer

    folder = Path(folder)
    if vocab:
        path = Path(vocab)
        if path.is_dir():
            raise CliError(f"--vocab {vocab}: a folder, expected a vocab.txt file")
        if not path.is_file():
            raise CliError(f"--vocab {vocab}: no such file (expected a vocab.txt file)")
    else:
        path = next((p for p in (folder / "vocab.txt", folder.parent / "vocab.txt") if p.is_file()), None)
        if path is None:
            raise CliError(f"{folder / 'vocab.txt'}: no vocab.txt here or in its run folder (pass --vocab)")
    d = hf.read_tokenizer_config(folder)
    if lowercase is not None:
        return Tokenizer.from_file(path, do_lower_case=lowercase)
    return Tokenizer.from_file(path, do_lower_case=d.get("do_lower_case", True), strip_accents=d.get("strip_accents"))


EXIT_RESOURCE = 3  # a resource fault (the disk or the quota is full): one line naming the file; what was saved before is intact


def check_apart(out, out_option: str, folders: dict | None = None, files: dict | None = None) -> None:
    """Refuse an output folder that is, sits inside or holds an input folder, or that holds an input file: writing
    it (an --overwrite, a swap of the whole folder) would destroy what the command reads. Names both.
    folders, files: {what: path, or None when not given} (files: a path or a list of paths)."""
    out = Path(out).resolve()
    for what, given in (folders or {}).items():
        if given is None:
            continue
        src = Path(given).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise CliError(f"{out_option} {out} is the {what} folder {src}, sits inside it or holds it: writing it "
                           "would destroy what is read; choose a separate folder")
    for what, given in (files or {}).items():
        for path in [given] if isinstance(given, (str, Path)) else (given or []):
            src = Path(path).resolve()
            if out in src.parents:
                raise CliError(f"{out_option} {out} holds the {what} file {src}: writing the folder would delete it; "
                               "choose a separate folder")


def check_option_values(parser: argparse.ArgumentParser, values: dict, source: str, nullable=()) -> None:
    """Refuse a value from a settings file (pretrain --config) that the option of the same name would refuse on the
    command line: not its type (an integer, a finite number, text), not true/false for a flag pair (--x/--no-x:
    "no" is a true string), not one of its choices; a list only for an option that takes several values; null only
    for the names in `nullable` (a default of None). One line naming source, key and what was expected."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:  # a setting with no option (budget_step_seconds): its config class checks it
            continue
        expected = _option_kind(action)
        many = action.nargs in ("+", "*")
        items = value if many and isinstance(value, list) else [value]
        if value is None and key in nullable:
            continue
        if value is None or not all(_fits(action, v) for v in items):  # [] is fine: no snapshots
            raise CliError(f"{source}: \"{key}\" must be {expected} (as --{key}), got {json.dumps(value)} "
                           f"({_json_kind(value)})")


def _option_kind(action) -> str:
    """An option's values in words, for an error message."""
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        return "true or false"
    one = {int: "an integer", float: "a finite number"}.get(action.type, "a string")
    if action.choices:
        one = "one of " + ", ".join(map(str, action.choices))
    return f"{one}, or a list of them" if action.nargs in ("+", "*") else one


def _fits(action, v) -> bool:
    """Whether v is a value the option takes (what argparse would have made of its text)."""
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        return isinstance(v, bool)
    if isinstance(v, bool):
        return False
    if action.type is int:
        ok = isinstance(v, int)
    elif action.type is float:
        ok = isinstance(v, (int, float)) and math.isfinite(v)
    else:
        ok = isinstance(v, str)
    return ok and (not action.choices or v in action.choices)


def _json_kind(value) -> str:
    """The JSON type of a value, as a settings file's author wrote it."""
    for kind, name in ((bool, "true/false"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def classifier_labels(d: dict, classes: int, source) -> dict[str, int]:
    """{label name: class id} of a classifier's config.json d for a head of `classes` outputs: label2id, else
    id2label (hf_mapping.config_labels: a JSON object, the ids 0..C-1 once each), else transformers' own names
    LABEL_0, LABEL_1, ... Refuses labels for another number of classes than the head has: each label would be
    read off the wrong output. One line naming the file (source)."""
    from ..hf_mapping import config_labels  # here, not above: it imports NumPy, which main's configure() precedes

    if not (d.get("label2id") or d.get("id2label")):
        return {f"LABEL_{i}": i for i in range(classes)}
    labels = config_labels(d, str(source))
    if len(labels) != classes:
        key = "label2id" if d.get("label2id") else "id2label"
        raise CliError(f"{source}: {key} names {len(labels)} classes but the classifier head has {classes} outputs")
    return labels
