"""Which tokens the generator sees masked, and what it samples there: the official ELECTRA recipe
(google-research/electra pretrain/pretrain_helpers.py `mask` and `sample_from_softmax`).

Masking, per sequence: round(mask_prob x n_real) positions (n_real counts [CLS] and [SEP], as the
official input_mask does), at least 1, at most max_predictions = int((mask_prob + 0.005) x T), and
never more than the row has candidates. [CLS], [SEP], [MASK] and padding are never chosen. Of the
chosen positions, mask_token_prob (85%) become [MASK] and the rest keep their token; no random-token
replacement. Unlike the official tf.random.categorical draw, positions are drawn without replacement,
so a row never holds a duplicate and always gets exactly its count.

A `Corruption` fixes all the randomness of one step; give one explicitly to reproduce a step exactly. Its
samples are attached to the masked positions in row-major order (row by row, left to right: np.argwhere(masked),
the order the model gathers them in). Given with their positions, they are put in that order; given alone,
nothing can check their order, and a SampleOrderWarning says so.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .counter_rng import draw_seed, uniforms

GUMBEL_EPS = 1e-9  # official sample_from_softmax: -log(-log(u + 1e-9) + 1e-9)


class SampleOrderWarning(UserWarning):
    """Corruption samples given without their positions: they are read in row-major order of the mask, unchecked."""


@dataclass
class Corruption:
    """masked (B, T) bool: the chosen positions. use_mask_token (B, T) bool, a subset of masked: the
    positions the generator sees as [MASK]. samples (M,) int or None: the generator's sampled tokens at
    the masked positions; None means sample them. positions (M, 2) int or None: the (batch, position) of each
    sample, in the samples' order; they must mark exactly `masked`, and the samples are then reordered to
    row-major order (np.argwhere(masked)), which is what `samples` holds afterwards (and `positions` too).

    Without positions the samples must already be in row-major order: samples listed per row in another order,
    or column by column, would sit on the wrong tokens, so a SampleOrderWarning asks for the positions."""

    masked: np.ndarray
    use_mask_token: np.ndarray
    samples: np.ndarray | None = None
    positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.samples is not None:
            self.samples = _flat_samples(self.samples)
        if self.positions is not None:
            if self.samples is None:
                raise ValueError("corruption.positions are the samples' positions: give the samples with them")
            self.positions, self.samples = _row_major(np.asarray(self.masked), self.positions, self.samples)
        elif self.samples is not None and len(self.samples) > 1:
            warnings.warn("Corruption samples without their positions are read in row-major order of masked "
                          "(np.argwhere(masked)), unchecked; pass positions=(M, 2) (batch, position) pairs in the "
                          "samples' order to have them placed by position", SampleOrderWarning, stacklevel=3)


def with_samples(c: Corruption, samples: np.ndarray) -> Corruption:
    """c's masking with samples (M,) computed in row-major order of c.masked (the model's own, np.flatnonzero)."""
    return Corruption(c.masked, c.use_mask_token, np.asarray(samples, np.int64), np.argwhere(c.masked))


def _flat_samples(samples) -> np.ndarray:
    """samples as a 1-D integer array; per-row lists (ragged or not) are refused: their order is the question."""
    try:
        s = np.asarray(samples)
    except ValueError:  # ragged per-row lists
        s = None
    if s is None or s.ndim != 1 or not (np.issubdtype(s.dtype, np.integer) or s.size == 0):
        shape = "ragged lists" if s is None else f"shape {s.shape} dtype {s.dtype}"
        raise ValueError(f"corruption.samples must be one flat list of integer token ids, one per masked position "
                         f"(row-major, or in the order of positions=), got {shape}")
    return s.astype(np.int64) if s.size == 0 else s


def _row_major(masked: np.ndarray, positions, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, samples) sorted into row-major order, after checking that positions mark exactly `masked`."""
    if masked.ndim != 2:
        raise ValueError(f"corruption.masked must be a (B, T) bool array, got shape {masked.shape}")
    p = _pairs(positions, *masked.shape, what="corruption.positions")  # (M, 2)
    if len(p) != len(samples):
        raise ValueError(f"corruption.positions has {len(p)} pairs but corruption.samples {len(samples)} tokens: "
                         "one position per sample")
    if len(p) != int(np.count_nonzero(masked)) or not np.asarray(masked, bool)[p[:, 0], p[:, 1]].all():
        raise ValueError("corruption.positions must mark exactly the positions of corruption.masked")
    order = np.lexsort((p[:, 1], p[:, 0]))  # by batch row, then position
    return p[order], samples[order]


def choose_masked_positions(input_ids: np.ndarray, attention_mask: np.ndarray, excluded_ids: Sequence[int],
                            mask_prob: float, max_predictions: int, rng: np.random.Generator) -> np.ndarray:
    """Returns masked (B, T) bool, chosen as described in the module docstring."""
    candidates = (attention_mask != 0) & ~np.isin(input_ids, excluded_ids)  # (B, T)
    n_candidates = candidates.sum(axis=1)
    if n_candidates.sum() == 0:
        raise ValueError("the batch has no maskable token: every real token is [CLS], [SEP] or [MASK]")
    n_real = attention_mask.sum(axis=1)
    n_pred = np.clip(np.round(mask_prob * n_real).astype(np.int64), 1, max_predictions)  # (B,)
    n_pred = np.minimum(n_pred, n_candidates)
    keys = np.where(candidates, rng.random(input_ids.shape), np.inf)  # random order; non-candidates last
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")  # (B, T)
    return rank < n_pred[:, None]


def corrupt(input_ids: np.ndarray, attention_mask: np.ndarray, excluded_ids: Sequence[int], mask_prob: float,
            max_predictions: int, mask_token_prob: float, rng: np.random.Generator) -> Corruption:
    """Draw a Corruption (samples left to the generator)."""
    masked = choose_masked_positions(input_ids, attention_mask, excluded_ids, mask_prob, max_predictions, rng)
    use_mask_token = masked & (rng.random(masked.shape) < mask_token_prob)
    return Corruption(masked, use_mask_token)


def check_corruption(c: Corruption, input_ids: np.ndarray, attention_mask: np.ndarray, vocab_size: int) -> None:
    """Refuse a given Corruption that is out of range or masks padding."""
    B, T = input_ids.shape
    for name in ("masked", "use_mask_token"):
        a = np.asarray(getattr(c, name))
        if a.shape != (B, T):
            raise ValueError(f"corruption.{name} has shape {a.shape}, expected input_ids' shape {(B, T)}")
        if a.dtype != bool:
            raise ValueError(f"corruption.{name} must be a bool array, got dtype {a.dtype}")
    if (c.masked & (attention_mask == 0)).any():
        b, t = np.argwhere(c.masked & (attention_mask == 0))[0]
        raise ValueError(f"corruption.masked marks padding position (batch {b}, position {t})")
    if (c.use_mask_token & ~c.masked).any():
        raise ValueError("corruption.use_mask_token marks a position that corruption.masked does not")
    if c.samples is not None:
        s = np.asarray(c.samples)
        M = int(c.masked.sum())
        if s.shape != (M,) or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"corruption.samples must be {M} integers (one per masked position, in row-major "
                             f"order), got shape {s.shape} dtype {s.dtype}")
        if M and (s.min() < 0 or s.max() >= vocab_size):
            raise ValueError(f"corruption.samples holds a token id outside [0, vocab_size={vocab_size})")
        if c.positions is not None and not np.array_equal(c.positions, np.argwhere(c.masked)):
            raise ValueError("corruption.positions no longer mark corruption.masked (was masked changed after the "
                             "Corruption was made?)")


def positions_from_indices(pairs: ArrayLike, B: int, T: int) -> np.ndarray:
    """Explicit masked positions as (batch, position) pairs, an (N, 2) array or list of pairs -> masked (B, T)
    bool. Per-row lists of positions are positions_from_rows': anything not N pairs is refused here, so that a
    per-row list is never read as pairs (a 2-row list of 2 positions each is N=2 pairs to this function).
    Out-of-range or duplicate positions are refused."""
    p = _pairs(pairs, B, T, what="masked positions")
    masked = np.zeros((B, T), bool)
    masked[p[:, 0], p[:, 1]] = True
    return masked


def positions_from_rows(rows: Sequence[Sequence[int]], T: int) -> np.ndarray:
    """Explicit masked positions as one list per batch row (the rows may differ in length; B = len(rows)) ->
    masked (B, T) bool. Out-of-range or duplicate positions are refused."""
    if isinstance(rows, str) or not isinstance(rows, (Sequence, np.ndarray)):
        raise ValueError(f"positions_from_rows takes one list of positions per batch row, got {type(rows).__name__}")
    pairs = [(b, t) for b, row in enumerate(rows) for t in _row(row, b)]
    return positions_from_indices(np.array(pairs, np.int64).reshape(-1, 2), len(rows), T)


def _row(row, b: int) -> list:
    """One row's positions as a list (refusing a bare number: a flat list given as rows)."""
    if np.ndim(row) != 1:
        raise ValueError(f"row {b} of the masked positions must be a list of positions, got {row!r}")
    return list(row)


def _pairs(pairs: ArrayLike, B: int, T: int, what: str) -> np.ndarray:
    """pairs as an (N, 2) int64 array inside (B, T), none twice; anything else refused, naming `what`."""
    try:
        p = np.asarray(pairs)
    except ValueError:  # ragged: per-row lists of different lengths
        p = None
    if p is None or not (p.ndim == 2 and p.shape[1] == 2 or p.size == 0):
        shape = "ragged lists (per-row lists? use positions_from_rows)" if p is None else f"shape {p.shape}"
        raise ValueError(f"{what} must be (batch, position) pairs, an (N, 2) array, got {shape}")
    if p.size and (p.dtype == bool or not np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"{what} must be integer (batch, position) pairs, got dtype {p.dtype}")
    p = p.astype(np.int64).reshape(-1, 2)
    outside = (p[:, 0] < 0) | (p[:, 0] >= B) | (p[:, 1] < 0) | (p[:, 1] >= T)
    if outside.any():
        raise ValueError(f"masked position {tuple(int(i) for i in p[outside][0])} is outside the batch shape {(B, T)}")
    if len(np.unique(p[:, 0] * T + p[:, 1])) != len(p):
        raise ValueError(f"{what} contain duplicates")
    return p


def gumbel_sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """argmax(logits / temperature + g), g = -log(-log(u)) Gumbel noise: a sample from
    softmax(logits / temperature). No gradient flows through it. The noise is drawn in the logits' dtype
    (float32 training draws float32 uniforms: half the random bits and memory traffic of float64), from
    counter_rng for one seed drawn from `rng` (fast/kernels/sampling.py computes the same ones in its kernel).
    Inputs: logits (M, V). Returns: (M,) int64."""
    dtype = np.float32 if logits.dtype == np.float32 else np.float64
    u = uniforms(draw_seed(rng), logits.shape, dtype)
    g = -np.log(-np.log(u + dtype(GUMBEL_EPS)) + dtype(GUMBEL_EPS))
    return np.argmax(logits * dtype(1.0 / temperature) + g, axis=-1)
