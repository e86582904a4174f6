"""Heat maps of replaced-token detection: each word with the discriminator's probability that it was replaced,
as aligned plain text, ANSI colour for a terminal, or one self-contained HTML page.

    words = join_pieces(tokens, probs)                   # wordpieces -> whole words (p = the highest piece's)
    print(render_text(words, color=True))                # a row of words, the probabilities under them
    page = render_html([("sentence 1", words)])          # no scripts, fonts or images from the network

`electra-np detect` and the pretraining summary's demo both use it. With a corruption (`--corrupt`), each
word also knows whether the generator replaced it (and what stood there), and the renderer adds the original
and a verdict: caught (replaced, p > 0.5), missed (replaced, p <= 0.5) or false-alarm (kept, p > 0.5).
Columns are aligned by display width: East Asian wide and fullwidth characters take two terminal cells
(unicodedata.east_asian_width "W"/"F"), combining marks none.
"""

import html
import math
import unicodedata
from dataclasses import dataclass

THRESHOLD = 0.5  # p > THRESHOLD: the discriminator says "replaced" (logit > 0)
HEAT_256 = (None, 230, 223, 216, 209, 203, 196)  # xterm-256 backgrounds, p from 0 to 1 (None: no colour)
RESET = "\x1b[0m"
DIM = "\x1b[2m"
VERDICT_STYLE = {"caught": "\x1b[1;32m", "missed": "\x1b[1;31m", "false-alarm": "\x1b[1;33m"}


@dataclass(frozen=True)
class Word:
    """One displayed word: its text (wordpieces joined), the probability that it was replaced (the highest of
    its pieces'), and with a corruption whether the generator replaced one of its pieces and the original."""

    text: str
    p: float
    replaced: bool | None = None  # None: no corruption was made
    original: str | None = None

    @property
    def verdict(self) -> str:
        """caught / missed / false-alarm / "" (kept and not flagged, or no corruption)."""
        flagged = self.p > THRESHOLD
        if self.replaced:
            return "caught" if flagged else "missed"
        return "false-alarm" if flagged and self.replaced is not None else ""


def _strip(piece: str) -> str:
    return piece[2:] if piece.startswith("##") else piece


def join_pieces(tokens, probs, originals=None, pieces: bool = False) -> list[Word]:
    """Wordpieces -> whole words: a piece starting with '##' continues the word before it (BERT WordPiece).

    Inputs: tokens (N,) wordpieces as shown (the corrupted ones, with a corruption); probs (N,) floats;
            originals (N,) the pieces before corruption, or None. Word boundaries follow the original pieces,
            so a sampled '##' piece never merges two words. pieces=True: one Word per piece, no joining.
    Returns: list of Word."""
    base = list(originals) if originals is not None else list(tokens)
    groups: list[list[int]] = []
    for i, piece in enumerate(base):
        if groups and piece.startswith("##") and not pieces:
            groups[-1].append(i)
        else:
            groups.append([i])
    words = []
    for g in groups:
        text = "".join(_strip(tokens[i]) if k else tokens[i] for k, i in enumerate(g))
        p = float(max(probs[i] for i in g))
        if originals is None:
            words.append(Word(text, p))
            continue
        changed = any(tokens[i] != originals[i] for i in g)
        orig = "".join(_strip(originals[i]) if k else originals[i] for k, i in enumerate(g))
        words.append(Word(text, p, changed, orig if changed else None))
    return words


def display_width(s: str) -> int:
    """Terminal cells: 2 for East Asian wide/fullwidth characters, 0 for combining marks, else 1."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in s)


def _pad(s: str, width: int) -> str:
    return s + " " * (width - display_width(s))


def heat_code(p: float) -> int | None:
    """The xterm-256 background for probability p (None below the first step, and for a NaN: a diverged model's
    words are shown uncoloured, their probability as "nan")."""
    if not math.isfinite(p):
        return None if math.isnan(p) else HEAT_256[-1 if p > 0 else 0]
    return HEAT_256[max(0, min(len(HEAT_256) - 1, int(p * len(HEAT_256))))]


def _rows(words: list[Word]) -> list[list[tuple[str, str]]]:
    """Rows of (text, ANSI style) cells, one cell per word: words, [originals], probabilities, [verdicts]."""
    corrupted = any(w.replaced is not None for w in words)
    rows = [[(w.text, "" if heat_code(w.p) is None else f"\x1b[30;48;5;{heat_code(w.p)}m") for w in words]]
    if corrupted:
        rows.append([(w.original or "", DIM) for w in words])
    rows.append([(f"{w.p:.2f}", DIM) for w in words])
    if corrupted:
        rows.append([(w.verdict, VERDICT_STYLE.get(w.verdict, "")) for w in words])
    return rows


def render_text(words: list[Word], color: bool = False, width: int | None = None) -> str:
    """The words in a row, the probabilities under them (and with a corruption, the originals above the
    probabilities and the verdicts below), each column as wide as its widest cell. color: ANSI styles (the
    padding stays outside them). width: wrap the columns into blocks of at most this many cells (None: one
    block, i.e. the words of a sentence on one line). Returns: the lines, without a final newline."""
    rows = _rows(words)
    col = [max(display_width(r[j][0]) for r in rows) for j in range(len(words))]
    blocks, start = [], 0
    while start < len(words):  # columns [start, end) fit in width (at least one per block)
        end, used = start + 1, col[start]
        while end < len(words) and (width is None or used + 1 + col[end] <= width):
            used += 1 + col[end]
            end += 1
        blocks.append(range(start, end))
        start = end
    lines = []
    for block in blocks:
        for row in rows:
            cells = []
            for j in block:
                text, style = row[j]
                shown = f"{style}{text}{RESET}" if color and style and text else text
                cells.append(shown + " " * (col[j] - display_width(text)))
            lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


def summary(words: list[Word]) -> str:
    """'replaced 3: caught 2, missed 1; false alarms 0' for a corrupted sentence, '' otherwise."""
    verdicts = [w.verdict for w in words]
    if not any(w.replaced is not None for w in words):
        return ""
    n = sum(bool(w.replaced) for w in words)
    return (f"replaced {n}: caught {verdicts.count('caught')}, missed {verdicts.count('missed')}; "
            f"false alarms {verdicts.count('false-alarm')}")


CSS = """body { font-family: sans-serif; margin: 2em; line-height: 1.2; }
.s { margin: 1.2em 0; } .h { color: #555; font-size: 0.85em; margin-bottom: 0.3em; }
.t { display: inline-block; text-align: center; margin: 0 0.15em 0.4em 0; vertical-align: top; }
.w { display: block; padding: 0.1em 0.3em; border-radius: 0.2em; border: 2px solid transparent; }
.p, .o, .v { display: block; font-size: 0.7em; color: #555; }
.o { text-decoration: line-through; } .caught .w { border-color: #2a2; } .missed .w { border-color: #d22; }
.false-alarm .w { border-style: dashed; border-color: #c90; }
.caught .v { color: #2a2; } .missed .v { color: #d22; } .false-alarm .v { color: #c90; }"""


def _html_word(w: Word) -> str:
    alpha = f"{w.p:.3f}" if math.isfinite(w.p) else "0"  # a NaN: no background (the number says "nan")
    title = f"p(replaced) = {w.p:.4f}" + (f"; original: {w.original}" if w.original else "")
    parts = [f'<span class="w" style="background: rgba(220, 40, 40, {alpha})">{html.escape(w.text)}</span>']
    if w.replaced is not None:
        parts.append(f'<span class="o">{html.escape(w.original or "")}&nbsp;</span>')
    parts.append(f'<span class="p">{w.p:.2f}</span>')
    if w.replaced is not None:
        parts.append(f'<span class="v">{w.verdict}&nbsp;</span>')
    return f'<span class="t {w.verdict}" title="{html.escape(title)}">{"".join(parts)}</span>'


def render_html(sentences: list[tuple[str, list[Word]]], title: str = "electra-np detect") -> str:
    """One self-contained page (inline CSS, no scripts, no network resources): per sentence a heading line
    and the words on a red background whose opacity is p; with a corruption, the originals struck through
    and the verdicts. Inputs: [(heading, words)]."""
    body = []
    for heading, words in sentences:
        note = summary(words)
        head = html.escape(heading + (f" ({note})" if note else ""))
        body.append(f'<div class="s"><div class="h">{head}</div>{"".join(map(_html_word, words))}</div>')
    legend = ("Each word on a red background as strong as the discriminator's probability that it was "
              "replaced (hover for the number).")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            f'</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n'
            f'<p class="h">{legend}</p>\n' + "\n".join(body) + "\n</body>\n</html>\n")
