"""The two ELECTRA heads.

Generator (Hugging Face `ElectraGeneratorPredictions` + `generator_lm_head`; official
`get_masked_lm_output`): at the masked positions only,
    z = LayerNorm(gelu(h W_d^T + b_d)),  logits = z W_word^T + b_out
with W_word the (shared, tied) word-embedding matrix (V, E) and b_out the head's own bias (V,).
Discriminator (`ElectraDiscriminatorPredictions`; official `get_discriminator_output`):
    logit = act(h W_d^T + b_d) w_p^T + b_p, one logit per token.
"""

import numpy as np

from .activations import activation_backward, activation_forward
from .layernorm import layer_norm_backward, layer_norm_forward
from .linear import linear_backward, linear_forward


def generator_head_forward(h: np.ndarray, word_embeddings: np.ndarray, w: dict[str, np.ndarray],
                           eps: float) -> tuple[np.ndarray, tuple]:
    """Inputs:  h (M, Hg) hidden states already gathered at the masked positions; word_embeddings (V, E);
             w with "generator_predictions.dense.*", "generator_predictions.LayerNorm.*", "generator_lm_head.bias"
    Returns: logits (M, V), cache
    """
    a, c1 = linear_forward(h, w["generator_predictions.dense.weight"], w["generator_predictions.dense.bias"])  # (M, E)
    g, c2 = activation_forward("gelu", a)  # HF and the official code use gelu here whatever hidden_act says
    z, c3 = layer_norm_forward(g, w["generator_predictions.LayerNorm.weight"], w["generator_predictions.LayerNorm.bias"], eps)
    logits, c4 = linear_forward(z, word_embeddings, w["generator_lm_head.bias"])  # (M, V)
    return logits, (c1, c2, c3, c4)


def generator_head_backward(dlogits: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Returns: dh (M, Hg), dword_embeddings (V, E) (the tied output path's share), grads dict."""
    c1, c2, c3, c4 = cache
    grads = {}
    dz, dword, grads["generator_lm_head.bias"] = linear_backward(dlogits, c4)
    dg, grads["generator_predictions.LayerNorm.weight"], grads["generator_predictions.LayerNorm.bias"] = layer_norm_backward(dz, c3)
    da = activation_backward("gelu", dg, c2)
    dh, grads["generator_predictions.dense.weight"], grads["generator_predictions.dense.bias"] = linear_backward(da, c1)
    return dh, dword, grads


def discriminator_head_forward(h: np.ndarray, w: dict[str, np.ndarray], act: str) -> tuple[np.ndarray, tuple]:
    """Inputs:  h (B, T, H); w with "discriminator_predictions.dense.*", "discriminator_predictions.dense_prediction.*"
    Returns: logits (B, T), cache
    """
    a, c1 = linear_forward(h, w["discriminator_predictions.dense.weight"], w["discriminator_predictions.dense.bias"])
    g, c2 = activation_forward(act, a)
    logits, c3 = linear_forward(g, w["discriminator_predictions.dense_prediction.weight"],
                                w["discriminator_predictions.dense_prediction.bias"])  # (B, T, 1)
    return logits[..., 0], (c1, c2, c3, act)  # (B, T)


def discriminator_head_backward(dlogits: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns: dh (B, T, H), grads dict."""
    c1, c2, c3, act = cache
    grads = {}
    dg, grads["discriminator_predictions.dense_prediction.weight"], grads["discriminator_predictions.dense_prediction.bias"] = \
        linear_backward(dlogits[..., None], c3)
    da = activation_backward(act, dg, c2)
    dh, grads["discriminator_predictions.dense.weight"], grads["discriminator_predictions.dense.bias"] = linear_backward(da, c1)
    return dh, grads
