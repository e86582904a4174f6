"""The encoder and the classifier without padding: every token-wise op (embeddings, linear layers, GELU,
LayerNorm, dropout) runs over the N real tokens of a batch instead of its B x T positions, and attention
runs per sequence (ops/varlen_attention.py). The same numbers as the padded reference
(classification.classifier_forward / classifier_backward), only without the work on padding:

    packing = unpad(attention_mask)                                  # real tokens' rows, cu_seqlens
    logits, cache = unpadded_classifier_forward(w, config, input_ids, token_type_ids, attention_mask, rng)
    grads = unpadded_classifier_backward(dlogits, cache)             # the padded path's grads, same keys

Why they agree: padding enters the padded path only as keys masked to -inf (exact zeros after exp), and
the heads read h[:, 0] only, so a real token's output, and every gradient (padding rows get exactly zero
gradient), are the same sums over the same real terms. Dropout draws the padded path's numbers: one seed
per dropout call, drawn in the padded path's order, and at a real token (b, t) the uniform at the padded
tensor's flat position of (b, t, c) (counter_rng: the number is a function of seed and position only).
tests/test_unpadded.py holds logits and every gradient equal in float64, dropout off and on.

Batches must be right-padded (each mask row 1...1 0...0, at least one real token: [CLS]), as
data/labelled.py pad_batch makes them; packed row n holds token (b, t) with b T + t = indices[n].
"""

from typing import NamedTuple

import numpy as np

from .classification import head_backward, head_forward
from .counter_rng import draw_seed
from .ops.dropout import dropout_backward, dropout_forward, dropout_mask_at
from .ops.embeddings import embedding_backward, embedding_forward
from .ops.layer import feed_forward_backward, feed_forward_forward
from .ops.layernorm import layer_norm_backward, layer_norm_forward
from .ops.linear import linear_backward, linear_forward
from .ops.varlen_attention import varlen_self_attention_backward, varlen_self_attention_forward
from .params import sub


class Packing(NamedTuple):
    """Where the N real tokens of a right-padded (B, T) batch sit.
    indices (N,): flat position b T + t of packed row n; cu_seqlens (B+1,): sequence b is rows
    cu_seqlens[b]:cu_seqlens[b+1]; positions (N,): t of each row (its position id); B, T: the padded shape."""
    indices: np.ndarray
    cu_seqlens: np.ndarray
    positions: np.ndarray
    B: int
    T: int


def unpad(attention_mask: np.ndarray) -> Packing:
    """The Packing of a right-padded batch. Inputs: attention_mask (B, T) of 1 (real) / 0 (padding)."""
    mask = np.asarray(attention_mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got {mask.shape}")
    B, T = mask.shape
    lengths = mask.sum(axis=1)  # (B,)
    if not (lengths >= 1).all() or not (mask == (np.arange(T) < lengths[:, None])).all():
        raise ValueError("unpadded execution needs right-padded rows (1...1 0...0) with at least one real token each")
    indices = np.flatnonzero(mask)  # (N,) row-major: sequence by sequence, t rising
    cu_seqlens = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (B+1,)
    return Packing(indices, cu_seqlens, indices % T, B, T)


def pack(x: np.ndarray, packing: Packing) -> np.ndarray:
    """(B, T, ...) -> (N, ...): the real tokens' rows."""
    return x.reshape(packing.B * packing.T, *x.shape[2:])[packing.indices]


def repad(x: np.ndarray, packing: Packing) -> np.ndarray:
    """(N, ...) -> (B, T, ...), zeros at padding: pack's inverse on the real tokens."""
    out = np.zeros((packing.B * packing.T, *x.shape[1:]), x.dtype)
    out[packing.indices] = x
    return out.reshape(packing.B, packing.T, *x.shape[1:])


def packed_dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None,
                           packing: Packing) -> tuple[np.ndarray, np.ndarray | None]:
    """dropout_forward on packed rows x (N, C) with the padded (B, T, C) tensor's mask: one seed, and at
    (n, c) the uniform at flat position indices[n] C + c. Off (y = x, no seed drawn) as dropout_forward."""
    if p == 0.0 or rng is None:
        return dropout_forward(x, p)
    index = packing.indices[:, None] * x.shape[1] + np.arange(x.shape[1])  # (N, C)
    return dropout_forward(x, p, mask=dropout_mask_at(draw_seed(rng), index, p, x.dtype))


def packed_embeddings_forward(ids: np.ndarray, types: np.ndarray, packing: Packing, w: dict[str, np.ndarray], eps: float,
                              p_drop: float, rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """ops/embeddings.py embeddings_forward on packed rows: the position embedding is a gather at each row's t.
    Inputs: ids, types (N,); packing; w relative to "electra.". Returns: x (N, H), cache."""
    word, word_cache = embedding_forward(ids, w["embeddings.word_embeddings.weight"])  # (N, E)
    typ, type_cache = embedding_forward(types, w["embeddings.token_type_embeddings.weight"])  # (N, E)
    pos, pos_cache = embedding_forward(packing.positions, w["embeddings.position_embeddings.weight"])  # (N, E)
    ln, ln_cache = layer_norm_forward(word + typ + pos, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    x, drop_cache = packed_dropout_forward(ln, p_drop, rng, packing)
    proj_cache = None
    if "embeddings_project.weight" in w:
        x, proj_cache = linear_forward(x, w["embeddings_project.weight"], w["embeddings_project.bias"])  # (N, H)
    return x, (word_cache, type_cache, pos_cache, ln_cache, drop_cache, proj_cache)


def packed_embeddings_backward(dx: np.ndarray, cache: tuple) -> dict[str, np.ndarray]:
    """The forward in reverse; the three gathers accumulate repeated ids (embedding_backward's np.add.at)."""
    word_cache, type_cache, pos_cache, ln_cache, drop_cache, proj_cache = cache
    grads = {}
    if proj_cache is not None:
        dx, grads["embeddings_project.weight"], grads["embeddings_project.bias"] = linear_backward(dx, proj_cache)
    ds, grads["embeddings.LayerNorm.weight"], grads["embeddings.LayerNorm.bias"] = layer_norm_backward(
        dropout_backward(dx, drop_cache), ln_cache)
    grads["embeddings.position_embeddings.weight"] = embedding_backward(ds, pos_cache)
    grads["embeddings.token_type_embeddings.weight"] = embedding_backward(ds, type_cache)
    grads["embeddings.word_embeddings.weight"] = embedding_backward(ds, word_cache)
    return grads


def packed_layer_forward(x: np.ndarray, packing: Packing, w: dict[str, np.ndarray], config,
                         rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """ops/layer.py transformer_layer_forward on packed rows, line for line (same dropout draws, same order):
        h1 = LayerNorm(x + dropout(VarlenSelfAttention(x))),  h2 = LayerNorm(h1 + dropout(FFN(h1)))
    Inputs: x (N, H); packing; w relative to "electra.encoder.layer.{i}.". Returns: h2 (N, H), cache."""
    p, eps = config.hidden_dropout_prob, config.layer_norm_eps
    a, att_cache = varlen_self_attention_forward(x, packing.cu_seqlens, w, config.num_attention_heads,
                                                 config.attention_probs_dropout_prob, rng, packing.T)
    a, drop1 = packed_dropout_forward(a, p, rng, packing)
    h1, ln1 = layer_norm_forward(x + a, w["attention.output.LayerNorm.weight"], w["attention.output.LayerNorm.bias"], eps)
    f, ffn_cache = feed_forward_forward(h1, w, config.hidden_act)  # token-wise: (N, H) -> (N, F) -> (N, H)
    f, drop2 = packed_dropout_forward(f, p, rng, packing)
    h2, ln2 = layer_norm_forward(h1 + f, w["output.LayerNorm.weight"], w["output.LayerNorm.bias"], eps)
    return h2, (att_cache, drop1, ln1, ffn_cache, drop2, ln2)


def packed_layer_backward(dh2: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """transformer_layer_backward's list: gradients merge at the two residual adds."""
    att_cache, drop1, ln1, ffn_cache, drop2, ln2 = cache
    grads = {}
    ds2, grads["output.LayerNorm.weight"], grads["output.LayerNorm.bias"] = layer_norm_backward(dh2, ln2)
    dh1_ffn, ffn_grads = feed_forward_backward(dropout_backward(ds2, drop2), ffn_cache)
    dh1 = ds2 + dh1_ffn  # residual: h1 feeds both the skip path and the FFN
    ds1, grads["attention.output.LayerNorm.weight"], grads["attention.output.LayerNorm.bias"] = layer_norm_backward(dh1, ln1)
    dx_att, att_grads = varlen_self_attention_backward(dropout_backward(ds1, drop1), att_cache)
    dx = ds1 + dx_att  # residual: x feeds both the skip path and the attention
    grads.update(ffn_grads)
    grads.update(att_grads)
    return dx, grads


def packed_encoder_forward(w, config, ids, types, packing, rng=None):
    """model.py encoder_forward on packed rows.

    Inputs:  w: HF-named dict ("electra.*"); ids, types (N,) packed; packing; rng: dropout on when given
    Returns: h (N, H), cache
    """
    x, emb_cache = packed_embeddings_forward(ids, types, packing, sub(w, "electra."), config.layer_norm_eps,
                                             config.hidden_dropout_prob, rng)  # (N, H)
    layer_caches = []
    for i in range(config.num_hidden_layers):
        x, c = packed_layer_forward(x, packing, sub(w, f"electra.encoder.layer.{i}."), config, rng)  # (N, H)
        layer_caches.append(c)
    return x, {"emb": emb_cache, "layers": layer_caches}


def packed_encoder_backward(dh, cache):
    """Returns: grads dict keyed "electra.*"."""
    grads = {}
    for i in reversed(range(len(cache["layers"]))):
        dh, g = packed_layer_backward(dh, cache["layers"][i])
        grads.update({f"electra.encoder.layer.{i}.{k}": v for k, v in g.items()})
    grads.update({f"electra.{k}": v for k, v in packed_embeddings_backward(dh, cache["emb"]).items()})
    return grads


def unpadded_classifier_forward(w, config, input_ids, token_type_ids, attention_mask, rng=None, p_head=None):
    """classification.classifier_forward without padding: pack, encoder over N rows, the head on the
    [CLS] rows (the first row of each sequence, cu_seqlens[:-1]).

    Inputs:  as classifier_forward: w; config; input_ids, token_type_ids, attention_mask (B, T) right-padded
    Returns: logits (B, C), cache
    """
    packing = unpad(attention_mask)
    ids, types = input_ids.reshape(-1)[packing.indices], token_type_ids.reshape(-1)[packing.indices]  # (N,)
    h, enc_cache = packed_encoder_forward(w, config, ids, types, packing, rng)  # (N, H)
    cls_rows = packing.cu_seqlens[:-1]  # (B,)
    logits, head_cache = head_forward(h[cls_rows][:, None, :], w, config, rng, p_head)  # (B, 1, H) -> (B, C)
    return logits, (enc_cache, head_cache, cls_rows, h.shape)


def unpadded_classifier_backward(dlogits, cache):
    """Returns: grads dict with the keys of `w` (the padded path's, to rounding)."""
    enc_cache, head_cache, cls_rows, h_shape = cache
    dcls, grads = head_backward(dlogits, head_cache)  # (B, 1, H)
    dh = np.zeros(h_shape, dcls.dtype)  # (N, H)
    dh[cls_rows] = dcls[:, 0]  # the head read the [CLS] rows only; they are distinct rows
    grads.update(packed_encoder_backward(dh, enc_cache))
    return grads

