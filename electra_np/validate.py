"""Input validation, done once at the model's entry: every later op (NumPy or Numba) may trust its inputs."""

import numpy as np
from numpy.typing import ArrayLike

from .config import ElectraConfig


def _int_array(name: str, a: ArrayLike) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def check_batch(config: ElectraConfig, input_ids: ArrayLike, attention_mask: ArrayLike | None = None,
                token_type_ids: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a batch against an ElectraConfig and return (input_ids, attention_mask, token_type_ids) as int64.

    Missing attention_mask means every token is real; missing token_type_ids means all zeros.
    """
    input_ids = _int_array("input_ids", input_ids)
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must have shape (B, T) with B, T >= 1, got {input_ids.shape}")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(f"sequence length T={T} exceeds max_position_embeddings={config.max_position_embeddings}")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= config.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"input_ids holds token id {bad}, outside [0, vocab_size={config.vocab_size})")
    if attention_mask is None:
        attention_mask = np.ones((B, T), np.int64)
    attention_mask = _int_array("attention_mask", attention_mask)
    if attention_mask.shape != (B, T):
        raise ValueError(f"attention_mask has shape {attention_mask.shape}, expected input_ids' shape {(B, T)}")
    if not np.isin(attention_mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    if token_type_ids is None:
        token_type_ids = np.zeros((B, T), np.int64)
    token_type_ids = _int_array("token_type_ids", token_type_ids)
    if token_type_ids.shape != (B, T):
        raise ValueError(f"token_type_ids has shape {token_type_ids.shape}, expected input_ids' shape {(B, T)}")
    if token_type_ids.min() < 0 or token_type_ids.max() >= config.type_vocab_size:
        bad = int(token_type_ids.max()) if token_type_ids.max() >= config.type_vocab_size else int(token_type_ids.min())
        raise ValueError(f"token_type_ids holds {bad}, outside [0, type_vocab_size={config.type_vocab_size})")
    return input_ids, attention_mask, token_type_ids
