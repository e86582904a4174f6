"""What every command shares: the exit codes, the user-error exception, the help formatter, and the corpus
options."""

import argparse
import json
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
    """The tokenizer of a model folder: `vocab` if given, else the folder's vocab.txt, else its run's (the folder
    above); lowercasing and accent stripping as its tokenizer_config.json records them (lowercase on when it
    says nothing), unless `lowercase` is given (accents then follow it, as in BERT)."""
    from ..data.tokenizer import Tokenizer

    folder = Path(folder)
    candidates = [Path(vocab)] if vocab else [folder / "vocab.txt", folder.parent / "vocab.txt"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CliError(f"{candidates[0]}: no vocab.txt here or in its run folder (pass --vocab)")
    config = folder / "tokenizer_config.json"
    d = read_json_object(config) if config.is_file() else {}
    if lowercase is not None:
        return Tokenizer.from_file(path, do_lower_case=lowercase)
    return Tokenizer.from_file(path, do_lower_case=d.get("do_lower_case", True), strip_accents=d.get("strip_accents"))
