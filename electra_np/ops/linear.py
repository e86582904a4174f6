"""Linear (fully connected) layer, as torch.nn.Linear: weights stored (out, in)."""

import numpy as np


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, tuple]:
    """y = x @ W.T + b over the last axis.

    Inputs:  x (..., in), weight (out, in), bias (out,) or None
    Returns: y (..., out), cache
    """
    y = x @ weight.T  # (..., out)
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


def linear_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Forward did y = x @ W.T + b, so dx = dy @ W, dW = dy^T x (summed over every leading axis), db = sum dy.

    Returns: dx (..., in), dweight (out, in), dbias (out,) or None
    """
    x, weight, has_bias = cache
    dx = dy @ weight  # (..., in)
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, out)
    dweight = dy2.T @ x.reshape(-1, x.shape[-1])  # (out, in)
    dbias = dy2.sum(axis=0) if has_bias else None  # (out,)
    return dx, dweight, dbias
