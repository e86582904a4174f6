"""Layer normalization over the last axis (Ba et al. 2016), as torch.nn.LayerNorm.

ELECTRA and Hugging Face use eps = 1e-12 (ElectraConfig.layer_norm_eps); it is always passed in.
"""

import numpy as np


def layer_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> tuple[np.ndarray, tuple]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias, biased variance, over the last axis.

    Inputs:  x (..., C), weight (C,), bias (C,), eps float
    Returns: y (..., C), cache
    """
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd  # (..., C)
    y = xhat * weight + bias
    return y, (xhat, rstd, weight)


def layer_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward did y = xhat * w + b with xhat = (x - mean) * rstd, so
    dw = sum dy * xhat, db = sum dy, and with g = dy * w:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).

    Returns: dx (..., C), dweight (C,), dbias (C,)
    """
    xhat, rstd, weight = cache
    C = xhat.shape[-1]
    dy2 = dy.reshape(-1, C)
    dweight = (dy2 * xhat.reshape(-1, C)).sum(axis=0)
    dbias = dy2.sum(axis=0)
    g = dy * weight
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dweight, dbias
