"""Multi-head self-attention over packed sequences: the real tokens of a batch stacked as N rows, no padding
(the "varlen" layout of FlashAttention's flash_attn_varlen_func, Dao et al. 2022). Sequence b owns rows
cu_seqlens[b]:cu_seqlens[b+1] and attends over its own L_b keys only:

    ctx_b = dropout(softmax(q_b k_b^T / sqrt(hs))) v_b,   q_b, k_b, v_b (NH, L_b, hs)

This is attention.py's op (Hugging Face `ElectraSelfAttention` + `ElectraSelfOutput.dense`) with the
padding keys left out instead of masked to -inf: a real query's scores over padding keys are exact zeros
after exp there, so the two agree at every real position (tests/test_unpadded.py holds them equal).

Dropout on the probabilities draws the numbers the padded (B, NH, T, T) tensor draws: one seed per call,
and at (b, head, i, j) the uniform at flat position ((b NH + head) T + i) T + j of the padded layout, T the
padded length (ops/dropout.py dropout_mask_at). Same seed, same mask, with or without padding.
"""

import numpy as np

from ..counter_rng import draw_seed
from .dropout import dropout_backward, dropout_forward, dropout_mask_at
from .linear import linear_backward, linear_forward


def check_cu_seqlens(cu_seqlens: np.ndarray, N: int) -> np.ndarray:
    """Offsets (B+1,) of B >= 1 sequences of length >= 1 packed in N rows: 0 = cu[0] < cu[1] < ... < cu[B] = N."""
    cu = np.asarray(cu_seqlens)
    if cu.ndim != 1 or cu.size < 2 or not np.issubdtype(cu.dtype, np.integer):
        raise ValueError(f"cu_seqlens must be a 1-d integer array (B+1,) with B >= 1, got {cu.dtype} {cu.shape}")
    if cu[0] != 0 or cu[-1] != N or not (np.diff(cu) >= 1).all():
        raise ValueError(f"cu_seqlens must rise from 0 to N={N} in steps >= 1, got {cu.tolist()}")
    return cu.astype(np.int64)


def probs_dropout_index(b: int, num_heads: int, L: int, T: int) -> np.ndarray:
    """Flat positions in the padded (B, NH, T, T) probabilities of sequence b's (NH, L, L) block."""
    heads, i, j = np.arange(num_heads)[:, None, None], np.arange(L)[None, :, None], np.arange(L)[None, None, :]
    return ((b * num_heads + heads) * T + i) * T + j  # (NH, L, L)


def varlen_attention_core_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, cu_seqlens: np.ndarray, p_drop: float,
                                  rng: np.random.Generator | None = None, T: int | None = None) -> tuple[np.ndarray, tuple]:
    """ctx_b = dropout(softmax(q_b k_b^T / sqrt(hs))) v_b for each packed sequence b.

    Inputs:  q, k, v (N, NH, hs); cu_seqlens (B+1,); p_drop; rng (dropout on when given); T: the padded length
             whose dropout numbers to draw (default: the longest sequence)
    Returns: ctx (N, NH, hs), cache
    """
    N, NH, hs = q.shape
    cu = check_cu_seqlens(cu_seqlens, N)
    lengths = np.diff(cu)
    T = int(lengths.max()) if T is None else T
    if T < lengths.max():
        raise ValueError(f"padded length T={T} is shorter than the longest sequence ({lengths.max()})")
    seed = draw_seed(rng) if (p_drop > 0.0 and rng is not None) else None  # one seed per call, as the padded op
    scale = q.dtype.type(1.0 / np.sqrt(hs))
    ctx, blocks = np.empty_like(q), []
    for b in range(len(lengths)):
        s, e = cu[b], cu[b + 1]
        qb, kb, vb = (a[s:e].transpose(1, 0, 2) for a in (q, k, v))  # (NH, L, hs)
        scores = (qb @ kb.swapaxes(-1, -2)) * scale  # (NH, L, L): every key is real, no mask
        ex = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = ex / ex.sum(axis=-1, keepdims=True)  # (NH, L, L)
        mask = None if seed is None else dropout_mask_at(seed, probs_dropout_index(b, NH, e - s, T), p_drop, q.dtype)
        probs_d, drop_cache = dropout_forward(probs, p_drop, mask=mask)
        ctx[s:e] = (probs_d @ vb).transpose(1, 0, 2)  # (L, NH, hs)
        blocks.append((probs, probs_d, drop_cache))
    return ctx, (q, k, v, cu, blocks)


def varlen_attention_core_backward(dctx: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sequence, as attention.py's core: ctx = P' v, P' = dropout(P), P = softmax(S), S = q k^T * s, so
    dv = P'^T dctx, dP' = dctx v^T, dP = dropout_backward(dP'), dS = P * (dP - sum(dP * P)),
    dq = dS k * s, dk = dS^T q * s.

    Returns: dq, dk, dv (N, NH, hs)
    """
    q, k, v, cu, blocks = cache
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[-1]))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    for b, (probs, probs_d, drop_cache) in enumerate(blocks):
        s, e = cu[b], cu[b + 1]
        qb, kb, vb, dcb = (a[s:e].transpose(1, 0, 2) for a in (q, k, v, dctx))  # (NH, L, hs)
        dv[s:e] = (probs_d.swapaxes(-1, -2) @ dcb).transpose(1, 0, 2)
        dprobs = dropout_backward(dcb @ vb.swapaxes(-1, -2), drop_cache)  # (NH, L, L)
        dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
        dq[s:e] = ((dscores @ kb) * scale).transpose(1, 0, 2)
        dk[s:e] = ((dscores.swapaxes(-1, -2) @ qb) * scale).transpose(1, 0, 2)
    return dq, dk, dv


def varlen_self_attention_forward(x: np.ndarray, cu_seqlens: np.ndarray, w: dict[str, np.ndarray], num_heads: int,
                                  p_drop: float, rng: np.random.Generator | None = None,
                                  T: int | None = None) -> tuple[np.ndarray, tuple]:
    """Q, K, V projections of the packed rows, split into heads, varlen core, merge heads, output dense
    (attention.py self_attention_forward without the padding).

    Inputs:  x (N, H); cu_seqlens (B+1,); w: dict with "attention.self.{query,key,value}.{weight,bias}" and
             "attention.output.dense.{weight,bias}"; num_heads NH; p_drop; rng; T: padded length for dropout
    Returns: out (N, H), cache
    """
    N, H = x.shape
    hs = H // num_heads

    def heads(name):
        y, c = linear_forward(x, w[f"attention.self.{name}.weight"], w[f"attention.self.{name}.bias"])  # (N, H)
        return y.reshape(N, num_heads, hs), c  # (N, NH, hs)

    (q, q_cache), (k, k_cache), (v, v_cache) = heads("query"), heads("key"), heads("value")
    ctx, core_cache = varlen_attention_core_forward(q, k, v, cu_seqlens, p_drop, rng, T)  # (N, NH, hs)
    out, out_cache = linear_forward(ctx.reshape(N, H), w["attention.output.dense.weight"], w["attention.output.dense.bias"])
    return out, (q_cache, k_cache, v_cache, core_cache, out_cache, num_heads)


def varlen_self_attention_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The forward in reverse; dx sums the three projection paths (q, k and v all read x).

    Returns: dx (N, H), grads dict with the keys of `w`
    """
    q_cache, k_cache, v_cache, core_cache, out_cache, num_heads = cache
    N, H = dout.shape
    grads = {}
    dctx, grads["attention.output.dense.weight"], grads["attention.output.dense.bias"] = linear_backward(dout, out_cache)
    dq, dk, dv = varlen_attention_core_backward(dctx.reshape(N, num_heads, H // num_heads), core_cache)  # (N, NH, hs)
    dx = 0
    for name, dh, c in (("query", dq, q_cache), ("key", dk, k_cache), ("value", dv, v_cache)):
        dxi, grads[f"attention.self.{name}.weight"], grads[f"attention.self.{name}.bias"] = linear_backward(dh.reshape(N, H), c)
        dx = dx + dxi  # gradients merge: x feeds all three projections
    return dx, grads
