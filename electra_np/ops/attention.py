"""Multi-head self-attention (Vaswani et al. 2017), as Hugging Face `ElectraSelfAttention` +
the dense layer of `ElectraSelfOutput` (the residual and LayerNorm live in the layer, layer.py).

Padding is an additive key mask: 0 for real keys, -inf for padding keys (the same exact zeros that
HF's finfo.min mask produces after exp). A query whose keys are all padding gets zero attention
probabilities instead of NaN.
"""

import numpy as np

from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward

MASKED = -np.inf  # additive score for a padding key


def key_mask_bias(attention_mask: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(B, T) of 1 (real) / 0 (padding) -> additive bias (B, 1, 1, T) of 0 / -inf."""
    return np.where(attention_mask[:, None, None, :] != 0, dtype.type(0), dtype.type(MASKED))


def attention_core_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray, p_drop: float,
                           rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """ctx = dropout(softmax(q k^T / sqrt(hs) + bias)) v, per (batch, head).

    Inputs:  q, k, v (B, NH, T, hs); bias (B, 1, 1, T) of 0 / -inf; p_drop; rng (dropout on when given)
    Returns: ctx (B, NH, T, hs), cache
    """
    hs = q.shape[-1]
    scores = (q @ k.swapaxes(-1, -2)) * q.dtype.type(1.0 / np.sqrt(hs)) + bias  # (B, NH, T, T)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0)  # fully padded row: every score is -inf
    e = np.exp(scores - row_max)
    denom = e.sum(axis=-1, keepdims=True)
    probs = e / np.where(denom > 0, denom, 1)  # (B, NH, T, T), all-zero rows where every key is padding
    probs_d, drop_cache = dropout_forward(probs, p_drop, rng)
    ctx = probs_d @ v  # (B, NH, T, hs)
    return ctx, (q, k, v, probs, probs_d, drop_cache)


def attention_core_backward(dctx: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ctx = P' v with P' = dropout(P), P = softmax(S), S = q k^T * s, so
    dv = P'^T dctx, dP' = dctx v^T, dP = dropout_backward(dP'), dS = P * (dP - sum(dP * P)),
    dq = dS k * s, dk = dS^T q * s.

    Returns: dq, dk, dv (B, NH, T, hs)
    """
    q, k, v, probs, probs_d, drop_cache = cache
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    dv = probs_d.swapaxes(-1, -2) @ dctx  # (B, NH, T, hs)
    dprobs = dropout_backward(dctx @ v.swapaxes(-1, -2), drop_cache)  # (B, NH, T, T)
    dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
    dq = (dscores @ k) * scale
    dk = (dscores.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv


def self_attention_forward(x: np.ndarray, bias: np.ndarray, w: dict[str, np.ndarray], num_heads: int, p_drop: float,
                           rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """Q, K, V projections, split into heads, attention core, merge heads, output dense.

    Inputs:  x (B, T, H); bias (B, 1, 1, T); w: dict with "attention.self.{query,key,value}.{weight,bias}"
             and "attention.output.dense.{weight,bias}"; num_heads NH
    Returns: out (B, T, H), cache
    """
    B, T, H = x.shape
    hs = H // num_heads

    def heads(name):
        y, c = linear_forward(x, w[f"attention.self.{name}.weight"], w[f"attention.self.{name}.bias"])
        return y.reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3), c  # (B, NH, T, hs)

    (q, q_cache), (k, k_cache), (v, v_cache) = heads("query"), heads("key"), heads("value")
    ctx, core_cache = attention_core_forward(q, k, v, bias, p_drop, rng)
    ctx = ctx.transpose(0, 2, 1, 3).reshape(B, T, H)  # (B, T, H)
    out, out_cache = linear_forward(ctx, w["attention.output.dense.weight"], w["attention.output.dense.bias"])
    return out, (q_cache, k_cache, v_cache, core_cache, out_cache, num_heads)


def self_attention_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The forward in reverse; dx sums the three projection paths (q, k and v all read x).

    Returns: dx (B, T, H), grads dict with the keys of `w`
    """
    q_cache, k_cache, v_cache, core_cache, out_cache, num_heads = cache
    B, T, H = dout.shape
    grads = {}
    dctx, grads["attention.output.dense.weight"], grads["attention.output.dense.bias"] = linear_backward(dout, out_cache)
    dctx = dctx.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)  # (B, NH, T, hs)
    dq, dk, dv = attention_core_backward(dctx, core_cache)
    dx = 0
    for name, dh, c in (("query", dq, q_cache), ("key", dk, k_cache), ("value", dv, v_cache)):
        dh = dh.transpose(0, 2, 1, 3).reshape(B, T, H)  # (B, T, H)
        dxi, grads[f"attention.self.{name}.weight"], grads[f"attention.self.{name}.bias"] = linear_backward(dh, c)
        dx = dx + dxi  # gradients merge: x feeds all three projections
    return dx, grads
