"""Which tokens the generator sees masked, and what it samples there: the official ELECTRA recipe
(google-research/electra pretrain/pretrain_helpers.py `mask` and `sample_from_softmax`).

Masking, per sequence: round(mask_prob x n_real) positions (n_real counts [CLS] and [SEP], as the
official input_mask does), at least 1, at most max_predictions = int((mask_prob + 0.005) x T), and
never more than the row has candidates. [CLS], [SEP], [MASK] and padding are never chosen. Of the
chosen positions, mask_token_prob (85%) become [MASK] and the rest keep their token; no random-token
replacement. Unlike the official tf.random.categorical draw, positions are drawn without replacement,
so a row never holds a duplicate and always gets exactly its count.

A `Corruption` fixes all the randomness of one step; give one explicitly to reproduce a step exactly.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .counter_rng import draw_seed, uniforms

GUMBEL_EPS = 1e-9  # official sample_from_softmax: -log(-log(u + 1e-9) + 1e-9)


@dataclass
class Corruption:
    """masked (B, T) bool: the chosen positions. use_mask_token (B, T) bool, a subset of masked: the
    positions the generator sees as [MASK]. samples (M,) int or None: the generator's sampled tokens at
    the masked positions, in row-major order (np.flatnonzero(masked)); None means sample them."""

    masked: np.ndarray
    use_mask_token: np.ndarray
    samples: np.ndarray | None = None


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
            raise ValueError(f"corruption.samples must be {M} integers (one per masked position), got "
                             f"shape {s.shape} dtype {s.dtype}")
        if M and (s.min() < 0 or s.max() >= vocab_size):
            raise ValueError(f"corruption.samples holds a token id outside [0, vocab_size={vocab_size})")


def positions_from_indices(positions: ArrayLike, B: int, T: int) -> np.ndarray:
    """Explicit masked positions as (batch, position) pairs (N, 2) or per-row lists -> masked (B, T) bool.
    Out-of-range or duplicate positions are refused."""
    p = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    if ((p[:, 0] < 0) | (p[:, 0] >= B) | (p[:, 1] < 0) | (p[:, 1] >= T)).any():
        bad = p[(p[:, 0] < 0) | (p[:, 0] >= B) | (p[:, 1] < 0) | (p[:, 1] >= T)][0]
        raise ValueError(f"masked position {tuple(bad)} is outside the batch shape {(B, T)}")
    masked = np.zeros((B, T), bool)
    masked[p[:, 0], p[:, 1]] = True
    if masked.sum() != len(p):
        raise ValueError("masked positions contain duplicates")
    return masked


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
