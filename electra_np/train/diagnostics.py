"""Is pretraining paying off? The numbers that tell beyond the losses, and the warnings a run prints when
they say it is not.

    detection   how well the discriminator finds the replaced tokens, whatever their share: precision and
                recall of "replaced", balanced accuracy (0.5 for any constant answer; model.disc_metrics),
                and ROC AUC, the chance that a replaced token scores above an original one (0.5: no signal).
    reference   the unigram entropy of the training tokens, in nats: the MLM loss of a generator that
                ignores the context. An MLM loss below it is what the context is worth.
    collapse    whether the encoder still tells positions and texts apart on held-out text: the spread of
                the token vectors across a sequence's positions (0 when every position has the same vector)
                and the mean cosine between different examples' sentence vectors (1 when all are the same).
    warnings    one log line per condition, once it holds at two evaluations in a row or at the last one
                (early in a run the numbers may pass through a bad state and leave it): the numbers, and what
                to change.

held_out.py computes the detection and collapse numbers at each evaluation; loop.py the unigram entropy once
per session and the warnings after each evaluation.
"""

import numpy as np

from ..model import disc_metrics
from .metrics import roc_auc

UNIGRAM_ROWS = 20_000  # rows of the training split counted at most (evenly spaced): enough for the frequencies
UNIGRAM_CHUNK = 1024  # rows read at a time
BASELINE_MARGIN = 0.01  # held-out accuracy within this of the always-original baseline: "at the baseline"
AUC_MARGIN = 0.05  # ROC AUC within this of 0.5: no signal
# Collapsed: the mean cosine between different examples' mean-pooled vectors above COLLAPSED_COSINE, or the token
# spread below COLLAPSED_SPREAD. A healthy post-LayerNorm encoder's vectors already share a large common direction
# (its cosines sit near, not at, 1), so the line is close to 1; the [CLS] vectors are not judged: at
# initialization every example's [CLS] position holds nearly the same vector (the same token and position).
COLLAPSED_COSINE = 0.995
COLLAPSED_SPREAD = 0.05


# ----------------------------------------------------------------------------- the numbers

def unigram_entropy(data, excluded_ids, max_rows: int = UNIGRAM_ROWS) -> float:
    """-sum_v p(v) log p(v), in nats, of the token distribution p over the real tokens of `data` (attention
    mask 1), ids in `excluded_ids` ([CLS], [SEP], [PAD]) left out: the cross-entropy of predicting every
    masked token by its frequency. Counts at most max_rows rows, evenly spaced, so a big corpus costs no more.

    Inputs:  data: a data.PretrainingData split (any object with len() and batch(indices))
    Returns: the entropy (0.0 when there is no token to count)
    """
    n = len(data)
    rows = np.arange(n) if n <= max_rows else np.unique(np.linspace(0, n - 1, max_rows).round().astype(np.int64))
    counts = np.zeros(0, np.int64)
    for start in range(0, len(rows), UNIGRAM_CHUNK):
        batch = data.batch(rows[start:start + UNIGRAM_CHUNK])
        ids = batch["input_ids"][(batch["attention_mask"] != 0) & ~np.isin(batch["input_ids"], excluded_ids)]
        c = np.bincount(ids)
        counts = np.pad(counts, (0, max(0, len(c) - len(counts))))
        counts[:len(c)] += c
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def token_spread(h, attention_mask) -> np.ndarray:
    """Per sequence: sqrt(mean_t |h_t - m|^2 / mean_t |h_t|^2) over its real positions t, m their mean vector:
    how far the token vectors spread around the sequence's mean, relative to their size. 0 when every position
    has the same vector; near 1 for unrelated vectors. Sequences with fewer than 2 real positions are left out.

    Inputs:  h (B, T, H); attention_mask (B, T)
    Returns: (B',) float64
    """
    spreads = []
    for x, mask in zip(h, attention_mask):
        x = x[mask != 0].astype(np.float64)  # (n, H)
        if len(x) < 2:
            continue
        power = (x * x).sum(1).mean()
        spread = ((x - x.mean(0)) ** 2).sum(1).mean()
        spreads.append(np.sqrt(spread / power) if power > 0 else 0.0)
    return np.array(spreads, np.float64)


def sentence_vectors(h, attention_mask) -> tuple[np.ndarray, np.ndarray]:
    """The two usual sentence vectors of each sequence: the [CLS] position's (what a classifier reads) and the
    mean over the real positions. Inputs: h (B, T, H); attention_mask (B, T). Returns: cls, mean, each (B, H)."""
    mask = (attention_mask != 0).astype(np.float64)[..., None]  # (B, T, 1)
    mean = (h * mask).sum(1) / np.maximum(mask.sum(1), 1)  # (B, H)
    return h[:, 0].astype(np.float64), mean


def mean_pairwise_cosine(v) -> float | None:
    """The mean cosine between the rows of v over all pairs i != j: (|sum_i u_i|^2 - sum_i |u_i|^2) / (N (N - 1))
    with u_i = v_i / |v_i| (a zero row counts as cosine 0). 1 when all rows point the same way, near 0 for
    unrelated rows. Inputs: v (N, H). Returns: the mean, or None when N < 2."""
    v = np.asarray(v, np.float64)
    N = len(v)
    if N < 2:
        return None
    norms = np.linalg.norm(v, axis=1, keepdims=True)  # (N, 1)
    u = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)  # (N, H)
    total = u.sum(0)  # (H,)
    return float((total @ total - (u * u).sum()) / (N * (N - 1)))


class HeldOutDiagnostics:
    """The detection and collapse numbers of one evaluation, gathered batch by batch (held_out.py)."""

    def __init__(self) -> None:
        self.logits, self.labels, self.masks, self.spreads, self.cls, self.mean = [], [], [], [], [], []

    def add(self, h, attention_mask, disc_logits=None, labels=None) -> None:
        """h (B, T, H): the encoder's last hidden states; disc_logits, labels (B, T) for the ELECTRA objective."""
        self.spreads.append(token_spread(h, attention_mask))
        cls, mean = sentence_vectors(h, attention_mask)
        self.cls.append(cls)
        self.mean.append(mean)
        if disc_logits is not None:
            self.logits.append(disc_logits)
            self.labels.append(labels)
            self.masks.append(attention_mask)

    def result(self) -> dict:
        """disc_precision, disc_recall, disc_balanced_acc (disc_metrics over all the tokens at once), disc_auc
        (ELECTRA only); token_spread, cls_cosine, mean_cosine."""
        out = {}
        if self.logits:
            logits, labels, masks = (np.concatenate(a) for a in (self.logits, self.labels, self.masks))  # (N, T)
            m = disc_metrics(0.0, 0.0, logits, labels, masks)
            out.update({k: m[k] for k in ("disc_precision", "disc_recall", "disc_balanced_acc")})
            real = masks != 0
            out["disc_auc"] = roc_auc(labels[real], logits[real])
        spreads = np.concatenate(self.spreads)
        out["token_spread"] = float(spreads.mean()) if len(spreads) else None
        out["cls_cosine"] = mean_pairwise_cosine(np.concatenate(self.cls))
        out["mean_cosine"] = mean_pairwise_cosine(np.concatenate(self.mean))
        return out


# ----------------------------------------------------------------------------- the warnings

def warnings_for(ev: dict, step: int, tc, objective) -> list[tuple[str, str]]:
    """The conditions an evaluation shows, as (name, log line): "baseline" (past warm-up, the discriminator's
    held-out accuracy within BASELINE_MARGIN of always answering 'original', or its ROC AUC within AUC_MARGIN
    of 0.5) and "collapse" (the mean cosine between mean-pooled sentence vectors above COLLAPSED_COSINE, or the
    token spread below COLLAPSED_SPREAD).

    Inputs:  ev: held_out.held_out_metrics' dict; tc: the run's TrainConfig; objective: its PretrainingConfig
    """
    found = []
    auc = ev.get("disc_auc")
    if "disc_acc" in ev and step > tc.warmup and (ev["disc_acc"] < ev["disc_baseline_acc"] + BASELINE_MARGIN or
                                                  (auc is not None and abs(auc - 0.5) < AUC_MARGIN)):
        auc_text = "n/a" if auc is None else f"{auc:.3f}"
        found.append(("baseline", (
            f"warning: step {step}, past the {tc.warmup} warm-up steps, the discriminator sits at its baseline: "
            f"held-out accuracy {ev['disc_acc']:.3f} vs {ev['disc_baseline_acc']:.3f} for always answering "
            f"'original', ROC AUC {auc_text}, recall {ev['disc_recall']:.3f}. Replaced tokens are too hard to "
            f"tell apart yet: try a higher --mask_prob (now {objective.mask_prob:g}, e.g. "
            f"{max(0.25, objective.mask_prob + 0.1):g}), a higher --temperature (now {objective.temperature:g}, "
            f"e.g. {max(3.0, 2 * objective.temperature):g}), a smaller --generator_hidden_size (now "
            f"{objective.generator_hidden_size:g}, e.g. {objective.generator_hidden_size / 2:g}), or a lower --lr "
            f"(now {tc.lr:g}, e.g. {tc.lr / 2:g}) or longer --warmup (now {tc.warmup}, e.g. "
            f"{max(2 * tc.warmup, 10)})")))
    cos, spread = ev.get("mean_cosine"), ev.get("token_spread")
    if (cos is not None and cos > COLLAPSED_COSINE) or (spread is not None and spread < COLLAPSED_SPREAD):
        found.append(("collapse", (
            f"warning: step {step}, the encoder's representations of held-out text look collapsed: mean cosine "
            f"between the mean-pooled vectors of different examples {_num(cos)} (above {COLLAPSED_COSINE}: collapsed), "
            f"token spread across positions {_num(spread)} (below {COLLAPSED_SPREAD}: the same vector at every "
            f"position). Fine-tuning "
            f"has little to work with: try a lower --lr (now {tc.lr:g}, e.g. {tc.lr / 2:g}) or a longer --warmup "
            f"(now {tc.warmup}, e.g. {max(2 * tc.warmup, 10)})")))
    return found


def _num(x):
    return "n/a" if x is None else f"{x:.3f}"
