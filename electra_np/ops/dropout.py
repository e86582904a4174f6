"""Inverted dropout (Srivastava et al. 2014), as torch.nn.Dropout in training mode."""

import numpy as np

from ..counter_rng import draw_seed, uniforms, uniforms_at


def dropout_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """A keep-mask scaled by 1/(1-p): entries are 0 or 1/(1-p), kept where a float32 uniform is >= p.
    The uniforms are counter_rng's for one seed drawn from the numpy Generator `rng` (the fast path's
    kernels compute the same numbers in place)."""
    keep = uniforms(draw_seed(rng), shape, np.float32) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def dropout_mask_at(seed: np.uint64, index: np.ndarray, p: float, dtype: np.dtype) -> np.ndarray:
    """dropout_mask's entries at the flat positions `index` of a larger array whose uniforms come from `seed`
    (the caller draws it, once per array, as dropout_mask does): the packed rows of a padded batch
    (unpadded.py, ops/varlen_attention.py) get exactly the mask entries the padded tensor gets there."""
    keep = uniforms_at(seed, index, np.float32) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None = None,
                    mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """y = x * mask, mask = keep / (1 - p), keep ~ Bernoulli(1 - p).

    Dropout is off (y = x) when p == 0 or when neither rng nor mask is given (evaluation mode).
    `mask` injects a given scaled mask (tests, or another implementation's dropout pattern).
    Inputs:  x (...), p in [0, 1), rng np.random.Generator or None, mask (...) or None
    Returns: y (...), cache
    """
    if mask is None and (p == 0.0 or rng is None):
        return x, None
    if mask is None:
        mask = dropout_mask(x.shape, p, rng, x.dtype)
    elif mask.shape != x.shape:
        raise ValueError(f"dropout mask has shape {mask.shape}, expected {x.shape}")
    return x * mask, mask


def dropout_backward(dy: np.ndarray, cache: np.ndarray | None) -> np.ndarray:
    """y = x * mask, so dx = dy * mask."""
    mask = cache
    return dy if mask is None else dy * mask
