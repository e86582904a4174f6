"""Embeddings: word + position + token type, LayerNorm, dropout, then the projection E -> H.

Matches Hugging Face `ElectraEmbeddings` followed by `ElectraModel.embeddings_project` (present only
when embedding_size != hidden_size), and google-research/electra modeling.py `embedding_lookup` +
`embedding_postprocessor` + the "embeddings_project" dense layer.
"""

import numpy as np

from .dropout import dropout_backward, dropout_forward
from .layernorm import layer_norm_backward, layer_norm_forward
from .linear import linear_backward, linear_forward


def embedding_forward(ids: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Row gather: y[...] = W[ids[...]].  Inputs: ids (...) int, weight (V, E).  Returns: y (..., E), cache."""
    return weight[ids], (ids, weight.shape)


def embedding_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """y = W[ids], so dW[v] = sum of dy over every position holding id v. np.add.at accumulates
    repeated ids; `dW[ids] += dy` would silently keep only one of them."""
    ids, shape = cache
    dweight = np.zeros(shape, dtype=dy.dtype)
    np.add.at(dweight, ids.reshape(-1), dy.reshape(-1, shape[1]))
    return dweight


def embeddings_forward(input_ids: np.ndarray, token_type_ids: np.ndarray, w: dict[str, np.ndarray], eps: float,
                       p_drop: float, rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """x = LayerNorm(W_word[ids] + W_pos[0..T-1] + W_type[types]); dropout; x @ W_proj.T + b_proj if E != H.

    Inputs:  input_ids (B, T), token_type_ids (B, T), w: dict with the keys below (relative to
             "electra."), eps, p_drop, rng (dropout on when given)
    Returns: x (B, T, H), cache
    """
    T = input_ids.shape[1]
    word, word_cache = embedding_forward(input_ids, w["embeddings.word_embeddings.weight"])  # (B, T, E)
    typ, type_cache = embedding_forward(token_type_ids, w["embeddings.token_type_embeddings.weight"])
    pos = w["embeddings.position_embeddings.weight"][:T]  # (T, E)
    s = word + typ + pos  # (B, T, E)
    ln, ln_cache = layer_norm_forward(s, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    x, drop_cache = dropout_forward(ln, p_drop, rng)
    proj_cache = None
    if "embeddings_project.weight" in w:
        x, proj_cache = linear_forward(x, w["embeddings_project.weight"], w["embeddings_project.bias"])  # (B, T, H)
    return x, (word_cache, type_cache, T, ln_cache, drop_cache, proj_cache, w["embeddings.position_embeddings.weight"].shape)


def embeddings_backward(dx: np.ndarray, cache: tuple) -> dict[str, np.ndarray]:
    """The forward in reverse. The position gradient is the sum over the batch of ds, in rows 0..T-1.

    Returns: dict of gradients with the same keys as `w`.
    """
    word_cache, type_cache, T, ln_cache, drop_cache, proj_cache, pos_shape = cache
    grads = {}
    if proj_cache is not None:
        dx, grads["embeddings_project.weight"], grads["embeddings_project.bias"] = linear_backward(dx, proj_cache)
    dln = dropout_backward(dx, drop_cache)
    ds, grads["embeddings.LayerNorm.weight"], grads["embeddings.LayerNorm.bias"] = layer_norm_backward(dln, ln_cache)
    dpos = np.zeros(pos_shape, dtype=ds.dtype)
    dpos[:T] = ds.sum(axis=0)
    grads["embeddings.position_embeddings.weight"] = dpos
    grads["embeddings.token_type_embeddings.weight"] = embedding_backward(ds, type_cache)
    grads["embeddings.word_embeddings.weight"] = embedding_backward(ds, word_cache)
    return grads
