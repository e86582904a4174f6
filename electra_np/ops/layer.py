"""The feed-forward block and the post-LN Transformer layer, as Hugging Face `ElectraLayer`
(ElectraAttention -> ElectraIntermediate -> ElectraOutput) and google-research/electra
modeling.py `transformer_model`:

    h1 = LayerNorm(x + dropout(SelfAttention(x)))
    h2 = LayerNorm(h1 + dropout(W2 act(W1 h1 + b1) + b2))
"""

import numpy as np

from ..config import ElectraConfig
from .activations import activation_backward, activation_forward
from .attention import self_attention_backward, self_attention_forward
from .dropout import dropout_backward, dropout_forward
from .layernorm import layer_norm_backward, layer_norm_forward
from .linear import linear_backward, linear_forward


def feed_forward_forward(x: np.ndarray, w: dict[str, np.ndarray], act: str) -> tuple[np.ndarray, tuple]:
    """y = W2 act(W1 x + b1) + b2.  Inputs: x (B, T, H); w with "intermediate.dense.*", "output.dense.*".
    Returns: y (B, T, H), cache."""
    a, c1 = linear_forward(x, w["intermediate.dense.weight"], w["intermediate.dense.bias"])  # (B, T, F)
    g, c2 = activation_forward(act, a)
    y, c3 = linear_forward(g, w["output.dense.weight"], w["output.dense.bias"])  # (B, T, H)
    return y, (c1, c2, c3, act)


def feed_forward_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    c1, c2, c3, act = cache
    grads = {}
    dg, grads["output.dense.weight"], grads["output.dense.bias"] = linear_backward(dy, c3)
    da = activation_backward(act, dg, c2)
    dx, grads["intermediate.dense.weight"], grads["intermediate.dense.bias"] = linear_backward(da, c1)
    return dx, grads


def transformer_layer_forward(x: np.ndarray, bias: np.ndarray, w: dict[str, np.ndarray], config: ElectraConfig,
                              rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """One post-LN encoder layer.

    Inputs:  x (B, T, H); bias (B, 1, 1, T) additive key mask; w: dict keyed as in HF relative to
             "electra.encoder.layer.{i}."; config: ElectraConfig; rng: dropout on when given
    Returns: h2 (B, T, H), cache
    """
    p, eps = config.hidden_dropout_prob, config.layer_norm_eps
    a, att_cache = self_attention_forward(x, bias, w, config.num_attention_heads,
                                          config.attention_probs_dropout_prob, rng)
    a, drop1 = dropout_forward(a, p, rng)
    h1, ln1 = layer_norm_forward(x + a, w["attention.output.LayerNorm.weight"], w["attention.output.LayerNorm.bias"], eps)
    f, ffn_cache = feed_forward_forward(h1, w, config.hidden_act)
    f, drop2 = dropout_forward(f, p, rng)
    h2, ln2 = layer_norm_forward(h1 + f, w["output.LayerNorm.weight"], w["output.LayerNorm.bias"], eps)
    return h2, (att_cache, drop1, ln1, ffn_cache, drop2, ln2)


def transformer_layer_backward(dh2: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The forward in reverse. The two residual adds are where gradients merge:
    d(h1) = dLN2-input (skip path) + dFFN(h1), and dx = dLN1-input (skip path) + dAttention(x).

    Returns: dx (B, T, H), grads dict with the keys of `w`
    """
    att_cache, drop1, ln1, ffn_cache, drop2, ln2 = cache
    grads = {}
    ds2, grads["output.LayerNorm.weight"], grads["output.LayerNorm.bias"] = layer_norm_backward(dh2, ln2)
    dh1_ffn, ffn_grads = feed_forward_backward(dropout_backward(ds2, drop2), ffn_cache)
    dh1 = ds2 + dh1_ffn  # residual: h1 feeds both the skip path and the FFN
    ds1, grads["attention.output.LayerNorm.weight"], grads["attention.output.LayerNorm.bias"] = layer_norm_backward(dh1, ln1)
    dx_att, att_grads = self_attention_backward(dropout_backward(ds1, drop1), att_cache)
    dx = ds1 + dx_att  # residual: x feeds both the skip path and the attention
    grads.update(ffn_grads)
    grads.update(att_grads)
    return dx, grads
