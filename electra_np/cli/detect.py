"""`electra-np detect`: the discriminator scores your sentences, each word with its probability of having been
replaced (render.py draws the heat map).

    electra-np detect --model runs/electra-tiny "the cat sat on the mat."
    electra-np detect --model electra-small-discriminator --file sentences.txt --html out.html
    echo "the dog reads a file." | electra-np detect -                  # stdin
    electra-np detect --corrupt "the cat sat on the mat."               # as in pretraining: the generator
                                                                        # replaces tokens; caught or missed?
--model is a pretraining run (its discriminator/, generator/, vocab.txt, run.json) or any ELECTRA
discriminator folder (electra_np's model.npz or Hugging Face's ElectraForPreTraining). Each sentence is one
sequence [CLS] pieces [SEP]; a word's probability is the highest of its wordpieces', sigmoid(logit).
--corrupt masks and samples exactly as a pretraining step does (masking.corrupt with the run's objective
settings, the generator's logits at the masked positions, masking.gumbel_sample), one sentence at a time
from one generator seeded by --seed.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import hf
from ..config import PRETRAINING_RULES, PretrainingConfig, field_error
from ..engine import BACKENDS, make_discriminator
from ..masking import corrupt, gumbel_sample
from ..model import generator_forward
from ..train.render import join_pieces, render_html, render_text, summary
from .common import CliError, folder_tokenizer, read_json_object

DEFAULT_MODEL = "runs/electra-tiny"  # pretrain's default --out_dir


def find_folders(path) -> tuple[Path, Path | None, Path | None]:
    """(discriminator folder, generator folder or None, run folder or None) of a run or a model folder (a
    model folder inside a run, runs/x/discriminator, finds its run)."""
    path = Path(path)
    if not path.is_dir():
        raise CliError(f"{path}: no such folder (expected a pretraining run or a discriminator folder)")
    if (path / "discriminator" / "config.json").is_file():
        disc, run = path / "discriminator", path
    elif (path / "config.json").is_file():
        disc, run = path, path.parent if (path.parent / "run.json").is_file() else None
    elif (path / "generator").is_dir():
        raise CliError(f"{path}: this run has no discriminator (an MLM-only run, or one that has not finished)")
    else:
        raise CliError(f"{path}: no discriminator here (expected config.json, or a run's discriminator/ folder)")
    archs = read_json_object(disc / "config.json").get("architectures") or ["ElectraForPreTraining"]
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise CliError(f"{disc / 'config.json'}: architectures must be a list of class names, got {archs!r}")
    arch = archs[0]
    if arch != "ElectraForPreTraining":
        raise CliError(f"{disc}: architecture {arch} is not an ELECTRA discriminator (ElectraForPreTraining)")
    gen = run / "generator" if run and (run / "generator" / "config.json").is_file() else None
    return disc, gen, run




def load(folder, kind):
    """(config, params) of a discriminator or generator folder, electra_np's or Hugging Face's, in the dtype it
    holds (half precision becomes float32: hf.load_dtype)."""
    config, params, _ = hf.from_pretrained(folder, kind=kind)
    return config, params


def read_sentences(args) -> list[str]:
    """The positional sentences ('-': the lines of standard input), then --file's lines (blank lines skipped)."""
    out = []
    for i, s in enumerate(args.sentences, 1):
        if s == "-":
            out += [line.strip() for line in sys.stdin if line.strip()]
        elif not s.strip():
            raise CliError(f"sentence {i} is empty")
        else:
            out.append(s)
    if args.file:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CliError(f"{args.file}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"{args.file}: unreadable ({e})") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise CliError(f"{args.file}: holds no sentence (every line is blank)")
        out += lines
    if not out:
        raise CliError("no sentence to score: give sentences as arguments, --file FILE, or - for standard input")
    return out


def encode(tokenizer, sentence: str, max_len: int, number: int, note) -> list[int]:
    """[CLS] pieces [SEP], the pieces cut to max_len - 2 (with a note)."""
    ids = tokenizer.encode(sentence)
    if not ids:
        raise CliError(f"sentence {number} has no token after tokenization: {sentence!r}")
    if len(ids) > max_len - 2:
        note(f"note: sentence {number} has {len(ids)} tokens; scoring the first {max_len - 2} "
             f"(max_position_embeddings {max_len}, with [CLS] and [SEP])")
        ids = ids[:max_len - 2]
    return [tokenizer.cls_id] + ids + [tokenizer.sep_id]


def replace_tokens(gen, obj: PretrainingConfig, tokenizer, ids: np.ndarray, rng) -> np.ndarray:
    """One pretraining corruption of ids (1, T): choose positions, [MASK] most of them, let the generator sample
    there (model.electra_forward's first half). Returns the corrupted ids (1, T)."""
    gen_config, gen_w = gen
    mask = np.ones_like(ids)
    excluded = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    c = corrupt(ids, mask, excluded, obj.mask_prob, max(1, obj.max_predictions(ids.shape[1])),
                obj.mask_token_prob, rng)
    positions = np.flatnonzero(c.masked)  # (M,)
    gen_ids = np.where(c.use_mask_token, tokenizer.mask_id, ids)  # (1, T)
    logits, _ = generator_forward(gen_w, gen_config, gen_ids, np.zeros_like(ids), mask, positions)  # (M, V)
    out = ids.copy()
    out.reshape(-1)[positions] = gumbel_sample(logits, obj.temperature, rng)
    return out


def objective(run: Path | None, mask_prob: float | None) -> PretrainingConfig:
    """The run's masking and sampling settings (run.json), else the defaults; --mask_prob overrides."""
    file = run / "run.json" if run else None
    d = read_json_object(file).get("pretraining_config", {}) if file and file.is_file() else {}
    if not isinstance(d, dict):
        raise CliError(f"{file}: pretraining_config must be a JSON object, got {type(d).__name__}")
    fields = PretrainingConfig.__dataclass_fields__
    obj = {k: v for k, v in d.items() if k in fields}
    try:
        PretrainingConfig(**obj)
    except ValueError as e:
        raise CliError(f"{file}: {e}") from None
    if mask_prob is not None:
        obj["mask_prob"] = mask_prob
    return PretrainingConfig(**obj)


def check_numbers(args: argparse.Namespace) -> None:
    """--mask_prob and --seed, refused before any model is read (the library's messages name neither option)."""
    error = field_error(PRETRAINING_RULES["mask_prob"], args.mask_prob) if args.mask_prob is not None else None
    if error:
        raise CliError(f"--mask_prob {error}")
    if args.seed < 0:
        raise CliError(f"--seed must be an integer >= 0, got {args.seed}")


def cmd_detect(args: argparse.Namespace) -> int:
    check_numbers(args)
    disc, gen_folder, run = find_folders(args.model)
    sentences = read_sentences(args)
    config, w = load(disc, "discriminator")
    hf.read_tokenizer_config(disc)  # refuses "do_lower_case": "no", which folder_tokenizer would read as true
    tokenizer = folder_tokenizer(disc, args.vocab, args.lowercase)
    if len(tokenizer) != config.vocab_size:
        raise CliError(f"the vocabulary has {len(tokenizer)} tokens but the discriminator's vocab_size is "
                       f"{config.vocab_size}")
    gen = obj = rng = None
    if args.corrupt:
        gen_folder = Path(args.generator) if args.generator else gen_folder
        if gen_folder is None:
            raise CliError(f"{args.model}: --corrupt needs a generator (a run's generator/ folder, or --generator)")
        gen, obj, rng = load(gen_folder, "generator"), objective(run, args.mask_prob), \
            np.random.default_rng(args.seed)
    logits_fn = make_discriminator(config, args.backend)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None  # piped: a sentence per line
    note = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.corrupt:
        note("rows: the corrupted sentence; the original under each replaced word; p(replaced); the verdict "
             "(p > 0.5 catches a replacement)")
    pages = []
    for n, sentence in enumerate(sentences, 1):
        ids = np.array([encode(tokenizer, sentence, config.max_position_embeddings, n, note)])  # (1, T)
        shown = replace_tokens(gen, obj, tokenizer, ids, rng) if args.corrupt else ids  # (1, T)
        logits = np.array(logits_fn(w, {"input_ids": shown}), np.float64)[0, 1:-1]  # (T - 2,) no [CLS]/[SEP]
        probs = 1.0 / (1.0 + np.exp(-logits))
        tokens = tokenizer.convert_ids_to_tokens(shown[0, 1:-1])
        originals = tokenizer.convert_ids_to_tokens(ids[0, 1:-1]) if args.corrupt else None
        words = join_pieces(tokens, probs, originals, pieces=args.pieces)
        if n > 1:
            print()
        print(render_text(words, color=color, width=width))
        if args.corrupt:
            print(summary(words))
        pages.append((f"{n}. {sentence}", words))
    if args.html:
        from ..atomic import atomic_write_text

        atomic_write_text(args.html, render_html(pages))
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("detect", help="score sentences with a discriminator: which tokens look replaced",
                       description="The discriminator of a pretraining run (or any ELECTRA discriminator "
                                   "folder, electra_np's or Hugging Face's) scores each word of your sentences "
                                   "with its probability of having been replaced: a heat map in colour on a "
                                   "terminal, plain aligned text when piped, and with --html one "
                                   "self-contained page.")
    p.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to score; - reads standard "
                                                                    "input, one sentence per line")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a pretraining run folder, or a discriminator folder (electra_np or Hugging Face); its "
                        f"weights keep their dtype (default: {DEFAULT_MODEL})")
    p.add_argument("--file", metavar="FILE", help="also score the lines of this UTF-8 file (- for standard input)")
    p.add_argument("--html", metavar="OUT.html", help="also write the heat map as one self-contained HTML page")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="ANSI colour; auto: on a terminal when NO_COLOR is unset (default: auto)")
    p.add_argument("--pieces", action="store_true", help="one column per wordpiece instead of whole words")
    p.add_argument("--corrupt", action="store_true",
                   help="first let the run's generator replace tokens as in pretraining, then show which "
                        "replacements the discriminator caught (p > 0.5) and missed, and its false alarms")
    p.add_argument("--generator", metavar="DIR", help="generator folder for --corrupt (default: the run's)")
    p.add_argument("--mask_prob", type=float, help="share of tokens to mask for --corrupt (default: the run's "
                                                   "run.json, else 0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of --corrupt's masking and sampling (default: 0)")
    p.add_argument("--vocab", metavar="FILE", help="vocab.txt (default: the model folder's, else the run's)")
    p.add_argument("--lowercase", default=None, action=argparse.BooleanOptionalAction,
                   help="lowercase text (default: as the folder's tokenizer_config.json says, else on)")
    p.add_argument("--backend", choices=BACKENDS, default="fast",
                   help="fast: Numba kernels; numpy: the readable reference (same numbers) (default: fast)")
    p.set_defaults(func=cmd_detect)
    return p
