"""What a run tells its user: the console lines (also appended to log.txt), the records of metrics.jsonl,
and the closing summary with the demo sentence.
"""

import json
from pathlib import Path

from .. import atomic
from ..data.tokenizer import Tokenizer
from ..model import Electra
from .config import TrainConfig
from .diagnostics import COLLAPSED_COSINE, COLLAPSED_SPREAD
from .render import join_pieces, render_text, summary
from .run_dir import LOG_NAME, METRICS_NAME

DEMO_WIDTH = 100  # terminal cells per block of the demo's heat map


class RunLog:
    """Console lines to stdout (or a callback) and to log.txt; metrics to metrics.jsonl."""

    def __init__(self, out_dir, echo) -> None:
        self.out_dir, self.echo = Path(out_dir), echo

    def line(self, text: str) -> None:
        if self.echo:
            self.echo(text)
        with open(self.out_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(text + "\n")

    def record(self, lines) -> None:
        """Lines already shown on the console (before log.txt existed): into log.txt only."""
        with open(self.out_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)

    def metrics(self, record: dict) -> None:
        with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def truncate_metrics(out_dir, step: int) -> None:
    """On resume, drop the metric records that the interrupted session wrote after its last checkpoint."""
    path = Path(out_dir) / METRICS_NAME
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    atomic.atomic_write_text(path, "".join(kept))


class Window:
    """The training metrics summed over the steps since the last log line, and the seconds they took."""

    def __init__(self) -> None:
        self.sums, self.seconds, self.steps = {}, 0.0, 0

    def add(self, metrics: dict, seconds: float) -> None:
        self.seconds += seconds
        self.steps += 1
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def mean(self) -> dict:
        return {k: v / self.steps for k, v in self.sums.items()}


# ----------------------------------------------------------------------------- lines

def format_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_metrics(m: dict, electra: bool) -> str:
    """The loss / accuracy part of a log line (with the unigram entropy beside the MLM loss when m has it)."""
    text = f"loss {m['loss']:.4f} | mlm {m['mlm_loss']:.4f} acc {m['mlm_acc']:.3f}"
    if m.get("unigram_entropy") is not None:
        text += f" (unigram entropy {m['unigram_entropy']:.3f})"
    if electra:
        text += (f" | disc {m['disc_loss']:.4f} acc {m['disc_acc']:.3f} (base {m['disc_baseline_acc']:.3f})"
                 f" | replaced {m['replaced_frac']:.3f}")
    return text


def header_lines(setup: Electra, tc: TrainConfig, tokenizer: Tokenizer, n_params: int, n_train: int, n_eval: int,
                 backend: str, out_dir, resumed_at: int | None) -> list[str]:
    """The two lines that open a session: the model and data, then the optimizer and out_dir."""
    objective = setup.objective.objective
    return [f"{'resuming' if resumed_at is not None else 'pretraining'} {objective} ({tc.preset}: "
            f"H={setup.disc.hidden_size}, layers={setup.disc.num_hidden_layers}, generator "
            f"H={setup.gen.hidden_size}), {n_params / 1e6:.2f}M parameters, V={len(tokenizer)} | B={tc.batch_size} "
            f"T={tc.seq_len} | {n_train:,} train / {n_eval:,} held-out examples | backend {backend}, {tc.dtype}",
            f"AdamW lr {tc.lr:g} (warmup {tc.warmup}, linear decay to 0 at step {tc.steps}"
            + (f", set by a {tc.budget_minutes:g} min budget at {tc.budget_step_seconds:.3f} s/step"
               if tc.budget_minutes is not None else "")
            + f"), weight decay {tc.weight_decay}, clip {tc.clip_norm} | out_dir {out_dir}"
            + (f" | from step {resumed_at} of {tc.steps}" if resumed_at is not None else "")]


def step_line(step: int, steps: int, m: dict, electra: bool, lr: float, tok_s: float, left: float) -> str:
    temperature = f"| T {m['temperature']:.2f} " if "temperature" in m else ""
    return (f"step {step:>{len(str(steps))}}/{steps} | {format_metrics(m, electra)} | lr {lr:.2e} {temperature}"
            f"| gnorm {m['grad_norm']:.2f} | {tok_s:,.0f} tok/s | {format_time(left)} left")


def eval_line(step: int, steps: int, ev: dict, electra: bool, seconds: float) -> str:
    return (f"eval {step:>{len(str(steps))}}/{steps} | {format_metrics(ev, electra)} | "
            f"{format_diagnostics(ev, electra)} | {ev['examples']} held-out examples, {seconds:.1f}s")


def format_diagnostics(ev: dict, electra: bool) -> str:
    """The compact diagnostics of an eval line (diagnostics.py): replaced-token detection, then collapse."""
    text = (f"auc {_num(ev.get('disc_auc'))} P {_num(ev.get('disc_precision'))} R {_num(ev.get('disc_recall'))} "
            f"bal {_num(ev.get('disc_balanced_acc'))} | " if electra else "")
    return (text + f"spread {_num(ev.get('token_spread'))} cos {_num(ev.get('mean_cosine'))} "
            f"([CLS] {_num(ev.get('cls_cosine'))})")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ----------------------------------------------------------------------------- the end of a run

def format_summary(summary: dict, electra: bool = True) -> list[str]:
    """The closing lines printed after a finished run."""
    lines = [f"done: {summary['step']} steps in {format_time(summary['seconds'])} "
             f"(backend {summary['backend']})"]
    ev = summary.get("eval")
    if ev is not None:
        lines.append(f"held-out ({ev['examples']} examples): {format_metrics(ev, electra)}")
        if electra:
            gain = ev["disc_acc"] - ev["disc_baseline_acc"]
            lines.append(f"discriminator accuracy {ev['disc_acc']:.3f} vs {ev['disc_baseline_acc']:.3f} for always "
                         f"answering 'original' ({'+' if gain >= 0 else ''}{gain:.3f}); generator MLM accuracy "
                         f"{ev['mlm_acc']:.3f}")
        lines.extend(summary_diagnostics(ev, electra))
    for line in summary.get("warnings", []):
        lines.append(line)
    if summary.get("first_loss") is not None and summary.get("last_train") is not None:
        window = "log interval" if summary["step"] > 1 else "step"
        lines.append(f"training loss: {summary['first_loss']:.3f} at the first step of this session, "
                     f"{summary['last_train']['loss']:.3f} over the last {window}")
    lines.append(f"checkpoint: {summary['checkpoint']}")
    for kind, path in summary.get("models", {}).items():
        use = "for fine-tuning" if kind == "discriminator" or not electra else "(the masked LM; fine-tune the discriminator)"
        lines.append(f"{kind} {use}: {path}")
    if summary.get("curves"):
        lines.append(f"curves: {summary['curves']} (electra-np plot draws them again)")
    if summary.get("snapshots"):
        lines.append("snapshots for fine-tuning (step: folder): "
                     + ", ".join(f"{step}: {path}" for step, path in summary["snapshots"].items()))
    d = summary.get("demo")
    if d is not None:
        what = ("the generator fills the masked tokens" if "predicted" in d else
                "masked tokens replaced by generator samples; the discriminator finds them")
        lines.append(f"demo on a {summary.get('demo_split', 'held-out')} sentence ({what}):")
        lines.extend(format_demo(d))
    return lines


def summary_diagnostics(ev: dict, electra: bool) -> list[str]:
    """The held-out diagnostics (diagnostics.py) in words."""
    lines = []
    if electra:
        lines.append(f"replaced-token detection: ROC AUC {_num(ev.get('disc_auc'))} (0.5: no signal), precision "
                     f"{_num(ev.get('disc_precision'))}, recall {_num(ev.get('disc_recall'))}, balanced accuracy "
                     f"{_num(ev.get('disc_balanced_acc'))} (0.5: a constant answer); replaced share "
                     f"{ev['replaced_frac']:.3f}")
    if ev.get("unigram_entropy") is not None:
        gain = ev["unigram_entropy"] - ev["mlm_loss"]
        lines.append(f"generator MLM loss {ev['mlm_loss']:.3f} vs {ev['unigram_entropy']:.3f} nats, the unigram "
                     f"entropy of the training tokens (what the context is worth: {gain:+.3f} nats)")
    lines.append(f"representations ({'discriminator' if electra else 'generator'}, held-out): token spread "
                 f"{_num(ev.get('token_spread'))} (below {COLLAPSED_SPREAD}: collapsed), mean cosine between examples "
                 f"{_num(ev.get('mean_cosine'))} mean-pooled (above {COLLAPSED_COSINE}: collapsed), "
                 f"{_num(ev.get('cls_cosine'))} [CLS]")
    return lines


def format_demo(d: dict) -> list[str]:
    """held_out.demo's sentence: for ELECTRA the heat-map rows of render.py (the words as corrupted, P(replaced),
    the originals of replaced words, caught / missed / false-alarm); for MLM the masked and predicted words."""
    lines = []
    if "predicted" in d:
        lines.append("  masked:    " + _render([("[MASK]" if m else t) for t, m in zip(d["tokens"], d["masked"])],
                                               d["masked"]))
        lines.append("  original:  " + _render(d["tokens"], d["masked"]))
        lines.append("  predicted: " + _render([p or t for t, p in zip(d["tokens"], d["predicted"])], d["masked"]))
        return lines
    words = join_pieces(d["corrupted"], d["p_replaced"], originals=d["tokens"])  # the renderer of `detect`
    lines += ["  " + line for line in render_text(words, width=DEMO_WIDTH).split("\n")]
    lines.append(f"  ({summary(words)}: a word is flagged when P(replaced) > 0.5; try `electra-np detect "
                 "--corrupt` on your own sentences)")
    return lines


def _render(tokens, marks, changed=None):
    """Wordpieces joined as text, marked pieces as [piece]. A '##' piece is glued to the one before it,
    unless either is `changed` (a generator sample: shown as a piece of its own)."""
    text, previous_changed = "", True
    changed = changed or [False] * len(tokens)
    for tok, mark, new in zip(tokens, marks, changed):
        glue = tok.startswith("##") and not new and not previous_changed
        piece = tok[2:] if glue else tok
        piece = f"[{piece}]" if mark else piece
        text += piece if glue else " " + piece
        previous_changed = new
    return text.strip()
