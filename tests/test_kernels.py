"""Every Numba kernel against its NumPy twin at awkward sizes (T = 1, odd T, 3 heads, fully padded rows),
in float64 (to 1e-12 relative) and float32 (a few hundred float32 eps), dropout included with the same
uniforms. Also run under NUMBA_DISABLE_JIT=1 in CI, so that the kernels' Python is covered."""

import numpy as np
import pytest

from electra_np import counter_rng, masking, optim
from electra_np.counter_rng import draw_seed
from electra_np.fast.kernels import (
    adamw,
    attention,
    blas,
    checks,
    embeddings,
    fused_attention,
    gelu,
    layernorm,
    losses,
    rows,
    sampling,
    uniforms,
    vecmath,
)
from electra_np.ops import activations, dropout, linear
from electra_np.ops import layernorm as ln_ops
from electra_np.ops import losses as loss_ops
from electra_np.ops.attention import attention_core_backward, attention_core_forward, key_mask_bias
from electra_np.ops.embeddings import embeddings_backward, embeddings_forward

DTYPES = (np.float64, np.float32)
TOL = {np.float64: 1e-12, np.float32: 300 * np.finfo(np.float32).eps}


def close(got, ref, dtype, tol=None):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-30)
    err = float(np.abs(got - ref).max()) / scale if ref.size else 0.0
    assert err <= (tol or TOL[dtype]), f"relative error {err:.3g}"


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ----------------------------------------------------------------------------- attention core

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,p", [(1, 0.0), (5, 0.1), (8, 0.0), (7, 0.3)])
def test_attention_core_matches_reference(dtype, T, p):
    B, NH, hs = 3, 3, 4
    rng = np.random.default_rng(T)
    q, k, v, dctx = (rand(rng, (B, NH, T, hs), dtype, 2.0) for _ in range(4))
    mask = np.ones((B, T), np.int64)
    mask[1, T // 2 + 1:] = 0  # partial padding (none when T = 1)
    mask[2] = 0  # a fully padded sequence: every query sees only padding keys
    bias4 = key_mask_bias(mask, np.dtype(dtype))
    ref_ctx, ref_cache = attention_core_forward(q, k, v, bias4, p, np.random.default_rng(7) if p else None)
    ref = attention_core_backward(dctx, ref_cache)
    ctx, cache = attention.attention_core_forward(q, k, v, bias4[:, 0, 0], p, np.random.default_rng(7) if p else None)
    close(ctx, ref_ctx, dtype)
    assert not np.isnan(ctx).any() and np.all(ctx[2] == 0)
    for got, want in zip(attention.attention_core_backward(dctx, cache), ref):
        close(got, want, dtype)


def test_attention_kernel_accepts_strided_heads():
    """The model hands q, k, v as head views of a (B, T, 3H) buffer: BLAS reads them in place."""
    B, T, NH, hs = 2, 5, 3, 4
    rng = np.random.default_rng(0)
    qkv = rand(rng, (B, T, 3, NH, hs), np.float64)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, NH, T, hs), non-contiguous
    bias = np.zeros((B, T))
    ctx, _ = attention.attention_core_forward(q, k, v, bias, 0.0)
    ref, _ = attention_core_forward(q.copy(), k.copy(), v.copy(), bias[:, None, None, :], 0.0)
    close(ctx, ref, np.float64)


def test_softmax_dropout_backward_against_finite_differences():
    """attention.softmax_dropout_backward (and its @njit _softmax_dropout_backward) in float64, through the
    attention core: scale, key mask with a padded key, softmax and dropout, against finite differences."""
    from electra_np.gradcheck import check_op
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 5, 2)) for _ in range(3))
    bias = key_mask_bias(np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), np.dtype(np.float64))[:, 0, 0]  # (B, T)

    def forward(q, k, v):
        ctx, cache = attention.attention_core_forward(q, k, v, bias, 0.25, np.random.default_rng(8))
        return ctx.copy(), cache

    def backward(dctx, cache):
        return tuple(g.copy() for g in attention.attention_core_backward(dctx, cache))

    errors = check_op(forward, backward, {"q": q, "k": k, "v": v})
    assert errors and max(errors.values()) < 1e-7, errors


needs_fused = pytest.mark.skipif(not fused_attention.available(np.float32),
                                 reason="NumPy's BLAS is not scipy-openblas (or ELECTRA_NP_FUSED_ATTENTION=0)")


@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,p", [(1, 0.0), (5, 0.1), (8, 0.0), (7, 0.3)])
def test_fused_attention_matches_reference(dtype, T, p):
    """The per-pair kernel (BLAS inside the kernel) against ops/attention.py, with q, k, v as head views
    of one (B, T, 3, NH, hs) buffer and ctx, dq, dk, dv written into head views, as the model does."""
    B, NH, hs = 3, 3, 4
    rng = np.random.default_rng(T)
    qkv = rand(rng, (B, T, 3, NH, hs), dtype, 2.0)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, NH, T, hs), non-contiguous
    dctx = rand(rng, (B, NH, T, hs), dtype, 2.0)
    mask = np.ones((B, T), np.int64)
    mask[1, T // 2 + 1:] = 0
    mask[2] = 0  # a fully padded sequence
    bias4 = key_mask_bias(mask, np.dtype(dtype))
    ref_ctx, ref_cache = attention_core_forward(q.copy(), k.copy(), v.copy(), bias4, p,
                                                np.random.default_rng(7) if p else None)
    ref = attention_core_backward(dctx, ref_cache)
    seed = draw_seed(np.random.default_rng(7)) if p else None  # the reference's one draw
    probs = np.full((B, NH, T, T), np.nan, dtype)
    ctx = np.full((B, T, NH, hs), np.nan, dtype).transpose(0, 2, 1, 3)  # a head view of (N, H)
    scale = 1.0 / np.sqrt(hs)
    fused_attention.attention_forward(q, k, v, bias4[:, 0, 0], scale, p, seed, probs, ctx)
    close(ctx, ref_ctx, dtype)
    assert np.all(ctx[2] == 0) and np.all(probs[2] == 0)
    ctx_only = np.full_like(ctx, np.nan)  # probs=None (inference): P kept in the scratch only, same ctx
    fused_attention.attention_forward(q, k, v, bias4[:, 0, 0], scale, p, seed, None, ctx_only)
    assert np.array_equal(ctx_only, ctx)
    grads = np.full((B, T, 3, NH, hs), np.nan, dtype)
    dq, dk, dv = (grads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    snapshot = [a.copy() for a in (dctx, q, k, v, probs)]
    fused_attention.attention_backward(dctx, q, k, v, probs, scale, p, seed, dq, dk, dv)
    for got, want in zip((dq, dk, dv), ref):
        close(got, want, dtype)
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, (dctx, q, k, v, probs)))  # inputs untouched


@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_attention_adds_the_qkv_bias_and_sums_its_gradient(dtype):
    """qkv_bias: q, k, v += their biases in place (the qkv linear's `+ b`, fused); dbias: the column
    sums of dq, dk, dv. Against the reference on the biased inputs, T = 5 with padding, dropout on."""
    B, T, NH, hs = 3, 5, 3, 4
    rng = np.random.default_rng(3)
    qkv = rand(rng, (B, T, 3, NH, hs), dtype)
    b3 = rand(rng, (3, NH, hs), dtype)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    biased = [x + b3[i][None, :, None, :] for i, x in enumerate((q, k, v))]
    dctx = rand(rng, (B, NH, T, hs), dtype)
    mask = np.ones((B, T), np.int64)
    mask[1, 3:] = 0
    bias4 = key_mask_bias(mask, np.dtype(dtype))
    ref_ctx, cache = attention_core_forward(*biased, bias4, 0.2, np.random.default_rng(5))
    ref_dq, ref_dk, ref_dv = attention_core_backward(dctx, cache)
    seed = draw_seed(np.random.default_rng(5))
    probs, ctx = np.empty((B, NH, T, T), dtype), np.empty((B, NH, T, hs), dtype)
    fused_attention.attention_forward(q, k, v, bias4[:, 0, 0], 1 / np.sqrt(hs), 0.2, seed, probs, ctx, qkv_bias=b3)
    close(ctx, ref_ctx, dtype)
    for got, want in zip((q, k, v), biased):  # the views of qkv now hold the biased values
        close(got, want, dtype, 4 * np.finfo(dtype).eps)
    dq, dk, dv = (np.empty((B, NH, T, hs), dtype) for _ in range(3))
    db = np.full((3, NH, hs), np.nan, dtype)
    fused_attention.attention_backward(dctx, q, k, v, probs, 1 / np.sqrt(hs), 0.2, seed, dq, dk, dv, dbias=db)
    for got, want in zip((dq, dk, dv), (ref_dq, ref_dk, ref_dv)):
        close(got, want, dtype)
    close(db, np.stack([g.sum(axis=(0, 2)) for g in (ref_dq, ref_dk, ref_dv)]), dtype)
    with pytest.raises(ValueError, match="with qkv_bias, q is updated in place and must be a writeable view"):
        fused_attention.attention_forward(q.swapaxes(-1, -2).copy().swapaxes(-1, -2), k, v, bias4[:, 0, 0], 0.5,
                                          0.0, None, probs, ctx, qkv_bias=b3)


@needs_fused
def test_fused_attention_equals_the_batched_kernels_and_restores_blas_threads():
    """At a model-like size the per-pair kernel gives the batched path's numbers (same row arithmetic,
    other products), copies operands BLAS cannot read, refuses such outputs, and leaves OpenBLAS's
    thread count as it found it."""
    B, NH, T, hs = 2, 2, 33, 16
    rng = np.random.default_rng(0)
    q, k, v, dctx = (rand(rng, (B, NH, T, hs), np.float32) for _ in range(4))
    bias = np.zeros((B, T), np.float32)
    bias[1, 20:] = -np.inf
    seed = draw_seed(np.random.default_rng(1))
    buf = attention.attention_buffers(B, NH, T, hs, np.float32)
    want, cache = attention.attention_core_forward(q, k, v, bias, 0.1, np.random.default_rng(1), buf)
    want_grads = [g.copy() for g in attention.attention_core_backward(dctx, cache)]
    probs, ctx = np.empty((B, NH, T, T), np.float32), np.empty((B, NH, T, hs), np.float32)
    set_threads = blas.gemm_pointers(np.float32)[1]
    before = set_threads(2)
    q_flipped = q[:, :, ::-1].copy()[:, :, ::-1]  # q with negative strides: copied, not read wrongly
    assert q_flipped.strides[2] < 0
    fused_attention.attention_forward(q_flipped, k, v, bias, 1.0 / np.sqrt(hs), 0.1, seed, probs, ctx)
    assert set_threads(before) == 2
    close(ctx, want, np.float32, 50 * np.finfo(np.float32).eps)
    dq, dk, dv = (np.empty_like(q) for _ in range(3))
    fused_attention.attention_backward(dctx, q, k, v, probs, 1.0 / np.sqrt(hs), 0.1, seed, dq, dk, dv)
    for got, ref in zip((dq, dk, dv), want_grads):
        close(got, ref, np.float32, 50 * np.finfo(np.float32).eps)
    with pytest.raises(ValueError, match="output ctx must be a writeable view with unit stride"):
        column_major = np.empty((B, NH, hs, T), np.float32).swapaxes(-1, -2)  # (B, NH, T, hs), stride 1 along T
        fused_attention.attention_forward(q, k, v, bias, 0.25, 0.0, None, probs, column_major)
    with pytest.raises(ValueError, match="k has shape"):
        fused_attention.attention_forward(q, k[:, :1], v, bias, 0.25, 0.0, None, probs, ctx)


# ----------------------------------------------------------------------------- bias + GELU

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
@pytest.mark.parametrize("N,C", [(1, 5), (7, 33)])
def test_bias_gelu_matches_reference(dtype, act, N, C):
    rng = np.random.default_rng(N * C)
    x, W, b, dg = rand(rng, (N, 6), dtype), rand(rng, (C, 6), dtype), rand(rng, (C,), dtype), rand(rng, (N, C), dtype)
    x[0, :] *= 4  # reach erf's saturated range
    a_ref, lin_cache = linear.linear_forward(x, W, b)
    g_ref, act_cache = activations.activation_forward(act, a_ref)
    da_ref = activations.activation_backward(act, dg, act_cache)
    a = x @ W.T
    g = np.empty_like(a)
    gelu.bias_gelu_forward(a, b, g, act)
    close(a, a_ref, dtype)
    close(g, g_ref, dtype)
    da, db, g2 = np.empty_like(a), np.empty(C, dtype), np.empty_like(a)
    gelu.bias_gelu_backward(dg, a, da, db, act, g=g2)
    close(da, da_ref, dtype)
    close(g2, g_ref, dtype)  # recomputed forward output
    close(db, da_ref.sum(axis=0), dtype)
    inplace = dg.copy()
    gelu.bias_gelu_backward(inplace, a, inplace, db, act)  # da in dg's buffer: the fast step's call
    assert np.array_equal(inplace, da)
    flat = np.zeros(N * C + 1, dtype)
    with pytest.raises(ValueError, match="overlaps"):
        gelu.bias_gelu_backward(flat[1:].reshape(N, C), a, flat[:-1].reshape(N, C), db, act)


def test_float32_exp_erf_log_tanh_are_accurate():
    import math
    x = np.linspace(-90, 88, 200001).astype(np.float32)
    ref = np.exp(x.astype(np.float64))
    got = np.array([vecmath.exp_f32(v) for v in x[::97]], np.float64)
    r = ref[::97]
    ok = r > np.finfo(np.float32).tiny
    assert np.all(np.abs(got[ok] - r[ok]) <= 2 * np.finfo(np.float32).eps * r[ok])
    assert np.all(got[~ok] <= np.finfo(np.float32).tiny)
    assert vecmath.exp_f32(np.float32(-np.inf)) == 0
    z = np.linspace(-6, 6, 2001).astype(np.float32)
    erf_ref = np.array([math.erf(float(v)) for v in z])
    assert np.abs(np.array([vecmath.erf_f32(v) for v in z]) - erf_ref).max() <= 4 * np.finfo(np.float32).eps
    # log over the Gumbel noise's range: u + 1e-9 in [1e-9, 1], then -log(u) + 1e-9 up to ~21
    w = np.concatenate([np.geomspace(1e-9, 1, 3001), np.linspace(0.5, 25, 3001),
                        [np.finfo(np.float32).tiny, 0.70710677, 0.70710683, 1.0, 2.0]]).astype(np.float32)
    log_ref = np.log(w.astype(np.float64))
    got = np.array([vecmath.log_f32(v) for v in w], np.float64)
    assert np.all(np.abs(got - log_ref) <= 2 * np.finfo(np.float32).eps * np.maximum(np.abs(log_ref), 1e-30) + 1e-45)
    t = np.linspace(-12, 12, 4001).astype(np.float32)  # tanh through exp: absolute error, clamped past +-9
    got = np.array([vecmath.tanh_f32(v) for v in t], np.float64)
    assert np.abs(got - np.tanh(t.astype(np.float64))).max() <= 2 * np.finfo(np.float32).eps


# ----------------------------------------------------------------------------- bias + dropout + residual + LayerNorm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,C,p", [(1, 3, 0.0), (9, 17, 0.2), (6, 64, 0.0)])
def test_residual_layernorm_matches_reference(dtype, N, C, p):
    rng = np.random.default_rng(N + C)
    y, x, b, w, beta, dy_a, dy_b = (rand(rng, s, dtype) for s in ((N, C), (N, C), (C,), (C,), (C,), (N, C), (N, C)))
    eps = 1e-12
    mask = dropout.dropout_mask((N, C), p, np.random.default_rng(3), np.dtype(dtype)) if p else None
    a, drop_cache = dropout.dropout_forward(y + b, p, mask=mask)
    h_ref, ln_cache = ln_ops.layer_norm_forward(x + a, w, beta, eps)
    ds_ref, dw_ref, dbeta_ref = ln_ops.layer_norm_backward(dy_a + dy_b, ln_cache)
    dd_ref = dropout.dropout_backward(ds_ref, drop_cache)
    seed = draw_seed(np.random.default_rng(3)) if p else None  # dropout_mask's draw
    out, xhat, rstd = np.empty((N, C), dtype), np.empty((N, C), dtype), np.empty(N, dtype)
    layernorm.residual_layernorm_forward(y, w, beta, eps, out, xhat, rstd, bias=b, resid=x, seed=seed, p=p)
    if p:  # the reference's pattern is a function of the seed alone
        assert np.array_equal(counter_rng.uniforms(seed, (N, C)) >= p, mask != 0)
    close(out, h_ref, dtype)
    again = layernorm.layernorm_apply(xhat, w, beta, np.full((N, C), np.nan, dtype))  # h recomputed from xhat
    close(again, h_ref, dtype)
    assert np.array_equal(again, out)  # the forward's own last line, bit for bit
    ds, dd, dw, dbeta, dbias = (np.empty((N, C), dtype), np.empty((N, C), dtype), np.empty(C, dtype),
                                np.empty(C, dtype), np.empty(C, dtype))
    layernorm.residual_layernorm_backward(dy_a, xhat, rstd, w, ds, dw, dbeta, dy_b=dy_b, seed=seed,
                                          p=p, dd=dd, dbias=dbias)
    for got, want in ((ds, ds_ref), (dd, dd_ref), (dw, dw_ref), (dbeta, dbeta_ref), (dbias, dd_ref.sum(axis=0))):
        close(got, want, dtype)


@pytest.mark.parametrize("C", [1, 5, 64])
def test_normalize_row_backward_matches_finite_differences(C):
    """layernorm.normalize_row_backward (the row helper both LayerNorm kernels inline), float64: for
    L = sum(G * (xhat w + beta)), xhat = normalize_row(x), it turns dy = G into dL/dx and adds dL/dw and
    dL/dbeta into the partials it is given (here holding 1.0, which must stay added to)."""
    from electra_np.gradcheck import numeric_gradient, rel_error
    rng = np.random.default_rng(C)
    x, w, beta, G = (rng.standard_normal(C) * 2 for _ in range(4))
    eps = 1e-5

    def loss():
        xr = x.copy()
        layernorm.normalize_row(xr, eps)
        return float(np.sum(G * (xr * w + beta)))

    xhat = x.copy()
    r = layernorm.normalize_row(xhat, eps)
    g_row, pw, pb = G.copy(), np.ones(C), np.ones(C)
    layernorm.normalize_row_backward(g_row, xhat, w, r, pw, pb)
    for got, var in ((g_row, x), (pw - 1, w), (pb - 1, beta)):
        assert rel_error(got, numeric_gradient(loss, var, h=1e-6)) < 1e-8
    # against the closed form too (at C = 1 the row normalizes to 0: dx = 0)
    close(pb - 1, G, np.float64)
    close(pw - 1, G * xhat, np.float64)


def test_layernorm_backward_is_deterministic():
    rng = np.random.default_rng(0)
    N, C = 257, 64
    y, w, beta, dy = (rand(rng, s, np.float32) for s in ((N, C), (C,), (C,), (N, C)))
    out, xhat, rstd = np.empty((N, C), np.float32), np.empty((N, C), np.float32), np.empty(N, np.float32)
    layernorm.residual_layernorm_forward(y, w, beta, 1e-12, out, xhat, rstd)
    runs = []
    for _ in range(3):
        ds, dw, db = np.empty((N, C), np.float32), np.empty(C, np.float32), np.empty(C, np.float32)
        layernorm.residual_layernorm_backward(dy, xhat, rstd, w, ds, dw, db)
        runs.append((ds, dw, db))
    for r in runs[1:]:
        for a, b in zip(r, runs[0]):
            assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- losses and sampling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,V", [(0, 7), (1, 5), (6, 13)])
def test_softmax_xent_matches_reference(dtype, M, V):
    rng = np.random.default_rng(M + V)
    logits = rand(rng, (M, V), dtype, 5.0)
    if M:
        logits[0, 1] = 1e4  # stable for large logits
    labels = rng.integers(0, V, M)
    loss_ref, cache = loss_ops.softmax_cross_entropy_forward(logits, labels)
    dl_ref = loss_ops.softmax_cross_entropy_backward(dtype(0.7), cache)
    lse, row_loss, am = np.empty(M), np.empty(M), np.empty(M, np.int64)
    loss = losses.softmax_xent_forward(logits, labels, lse, row_loss, am)
    assert loss.dtype == dtype
    close(loss, loss_ref, dtype)
    assert np.array_equal(am, logits.argmax(-1))
    dl, db = logits.copy(), np.full(V, np.nan, dtype)
    losses.softmax_xent_backward(0.7, dl, labels, lse, dl, dbias=db)  # in place
    close(dl, dl_ref, dtype)
    close(db, dl_ref.sum(axis=0), dtype)
    out = np.full((M, V), np.nan, dtype)
    losses.softmax_xent_backward(0.7, logits, labels, lse, out)  # into another buffer: logits unchanged
    close(out, dl_ref, dtype)
    if M:
        flat = np.zeros(M * V + 1, dtype)
        with pytest.raises(ValueError, match="overlaps"):
            losses.softmax_xent_backward(0.7, flat[:-1].reshape(M, V), labels, lse, flat[1:].reshape(M, V))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,V,T", [(1, 7, 1.0), (7, 300, 1.0), (64, 3001, 3.0)])
def test_gumbel_argmax_matches_masking(dtype, M, V, T):
    logits = rand(np.random.default_rng(V), (M, V), dtype, 2.0)
    ref = masking.gumbel_sample(logits, T, np.random.default_rng(7))
    seed = draw_seed(np.random.default_rng(7))
    got = sampling.gumbel_argmax(logits, T, seed, masking.GUMBEL_EPS, np.empty(M, np.int64))
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_reference(dtype):
    rng = np.random.default_rng(1)
    z = rand(rng, (3, 5), dtype, 4.0)
    z[0, 0], z[0, 1] = 1e4, -1e4
    y = rng.integers(0, 2, (3, 5))
    w = np.ones((3, 5), np.int64)
    w[2] = 0  # a fully padded row
    loss_ref, cache = loss_ops.binary_cross_entropy_forward(z, y, w)
    dz_ref = loss_ops.binary_cross_entropy_backward(dtype(50.0), cache)
    loss, n = losses.bce_forward(z, y, w)
    close(loss, loss_ref, dtype)
    dz = np.empty_like(z)
    losses.bce_backward(50.0, z, y, w, n, dz)
    close(dz, dz_ref, dtype)


# ----------------------------------------------------------------------------- embeddings

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,p", [(1, 0.0), (7, 0.1)])
def test_embeddings_match_reference(dtype, T, p):
    rng = np.random.default_rng(T)
    B, E, V = 3, 8, 6
    w = {"embeddings.word_embeddings.weight": rand(rng, (V, E), dtype),
         "embeddings.position_embeddings.weight": rand(rng, (9, E), dtype),
         "embeddings.token_type_embeddings.weight": rand(rng, (2, E), dtype),
         "embeddings.LayerNorm.weight": rand(rng, (E,), dtype), "embeddings.LayerNorm.bias": rand(rng, (E,), dtype)}
    ids = rng.integers(0, 3, (B, T))  # few ids: repeats must accumulate
    types = rng.integers(0, 2, (B, T))
    dx = rand(rng, (B, T, E), dtype)
    x_ref, cache = embeddings_forward(ids, types, w, 1e-12, p, np.random.default_rng(2) if p else None)
    g_ref = embeddings_backward(dx, cache)
    N = B * T
    out, xhat, rstd = np.empty((N, E), dtype), np.empty((N, E), dtype), np.empty(N, dtype)
    seed = draw_seed(np.random.default_rng(2)) if p else None
    embeddings.embeddings_forward(ids, types, w["embeddings.word_embeddings.weight"],
                                  w["embeddings.position_embeddings.weight"], w["embeddings.token_type_embeddings.weight"],
                                  w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], 1e-12,
                                  out, xhat, rstd, seed=seed, p=p)
    close(out, x_ref.reshape(N, E), dtype)
    dword, dpos, dtyp = np.zeros((V, E), dtype), np.zeros((9, E), dtype), np.zeros((2, E), dtype)
    dw, db, ds = np.empty(E, dtype), np.empty(E, dtype), np.empty((N, E), dtype)
    embeddings.embeddings_backward(dx.reshape(N, E), ids, types, xhat, rstd, w["embeddings.LayerNorm.weight"],
                                   dword, dpos, dtyp, dw, db, ds, seed=seed, p=p)
    for got, key in ((dword, "word_embeddings.weight"), (dpos, "position_embeddings.weight"),
                     (dtyp, "token_type_embeddings.weight"), (dw, "LayerNorm.weight"), (db, "LayerNorm.bias")):
        close(got, g_ref[f"embeddings.{key}"], dtype)


# ----------------------------------------------------------------------------- AdamW and small kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("layer_scales", [False, True])
def test_adamw_matches_optim(dtype, bias_correction, layer_scales):
    rng = np.random.default_rng(0)
    params = {"a.weight": rand(rng, (5, 3), dtype), "a.bias": rand(rng, (5,), dtype),
              "LayerNorm.weight": rand(rng, (7,), dtype),
              "b.weight": rand(rng, (adamw.SERIAL_BELOW // 100 + 1, 100), dtype)}  # the parallel kernel's size
    ref_params = {k: v.copy() for k, v in params.items()}
    opt = optim.AdamW(ref_params, bias_correction=bias_correction)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    scales = {"a.weight": 0.64, "a.bias": 0.8, "LayerNorm.weight": 1.0, "b.weight": 0.9} if layer_scales else None  # fine-tuning's
    for t in (1, 2, 3):
        grads = {k: rand(rng, x.shape, dtype) for k, x in params.items()}
        opt.update(ref_params, grads, 1e-2, scales)
        adamw.adamw_update(params, grads, m, v, 1e-2, t, bias_correction=bias_correction, lr_scales=scales)
    for k in params:
        close(params[k], ref_params[k], dtype)
        close(m[k], opt.m[k], dtype)
        close(v[k], opt.v[k], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_sums_and_bias(dtype):
    rng = np.random.default_rng(0)
    x = rand(rng, (11, 300), dtype)
    out = np.empty(300, dtype)
    close(rows.sum_rows(x, out), x.sum(axis=0), dtype)
    b = rand(rng, (300,), dtype)
    y = x.copy()
    close(rows.add_bias(y, b), x + b, dtype)


# ----------------------------------------------------------------------------- bad input

def test_wrappers_refuse_wrong_dtype_and_bad_outputs():
    a = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="b has dtype float64, expected float32"):
        gelu.bias_gelu_forward(a, np.zeros(5), np.empty_like(a))
    with pytest.raises(ValueError, match="output g must be a float32 array of shape"):
        gelu.bias_gelu_forward(a, np.zeros(5, np.float32), np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        gelu.bias_gelu_forward(a, np.zeros(5, np.float32), np.empty((5, 4), np.float32).T)
    with pytest.raises(ValueError, match="float32 or float64"):
        gelu.bias_gelu_forward(np.zeros((4, 5), np.int64), np.zeros(5), np.empty((4, 5)))


def test_non_contiguous_inputs_are_converted_not_misread():
    rng = np.random.default_rng(0)
    big = rand(rng, (10, 8), np.float64)
    dy = big[::2]  # every other row: strided, non-contiguous
    a = rand(rng, (5, 8), np.float64)
    da = np.empty_like(a)
    gelu.bias_gelu_backward(dy, a, da)
    _, cache = activations.gelu_forward(a)
    close(da, activations.gelu_backward(dy, cache), np.float64)


# ----------------------------------------------------------------------------- batched BLAS

@pytest.mark.parametrize("dtype", DTYPES)
def test_bmm_matches_matmul_on_head_views(dtype):
    from electra_np.fast.kernels import blas
    rng = np.random.default_rng(0)
    B, T, NH, hs = 3, 5, 3, 4
    qkv = rand(rng, (B, T, 3, NH, hs), dtype)
    q, k = qkv[:, :, 0].transpose(0, 2, 1, 3), qkv[:, :, 1].transpose(0, 2, 1, 3)  # (B, NH, T, hs) views
    s = np.empty((B, NH, T, T), dtype)
    blas.bmm(q, k.swapaxes(-1, -2), s, alpha=0.5)
    close(s, 0.5 * (q @ k.swapaxes(-1, -2)), dtype)
    ctx = np.empty((B, T, NH, hs), dtype)
    blas.bmm(s, k, ctx.transpose(0, 2, 1, 3))  # strided output
    close(ctx.transpose(0, 2, 1, 3), s @ k, dtype)
    blas.bmm(s.swapaxes(-1, -2), q, ctx.transpose(0, 2, 1, 3))  # transposed operand
    close(ctx.transpose(0, 2, 1, 3), s.swapaxes(-1, -2) @ q, dtype)


def test_bmm_batched_blas_path_at_model_size():
    from electra_np.fast.kernels import blas
    rng = np.random.default_rng(0)
    B, T, NH, hs = 2, 128, 2, 64
    qkv = rand(rng, (B, T, 3, NH, hs), np.float32)
    q, k = qkv[:, :, 0].transpose(0, 2, 1, 3), qkv[:, :, 1].transpose(0, 2, 1, 3)
    s = np.empty((B, NH, T, T), np.float32)
    if not blas.available(np.float32):
        pytest.skip("batched BLAS off (ELECTRA_NP_BATCHED_BLAS=0) or absent from NumPy's OpenBLAS")
    assert blas.uses_batched_blas(q, k.swapaxes(-1, -2), s)
    blas.bmm(q, k.swapaxes(-1, -2), s)
    close(s, q @ k.swapaxes(-1, -2), np.float32)
    ctx = np.empty((B, T, NH, hs), np.float32)
    blas.bmm(s.swapaxes(-1, -2), q, ctx.transpose(0, 2, 1, 3))
    close(ctx.transpose(0, 2, 1, 3), s.swapaxes(-1, -2) @ q, np.float32)


# ----------------------------------------------------------------------------- counter-based uniforms

def test_counter_uniforms_kernel_twin_is_bit_equal():
    """kernels/uniforms.py uniform_at / uniform64_at against counter_rng.uniforms, at the ends of the seed
    range and for a drawn seed; the numbers are uniform and the float32 ones multiples of 2^-24."""
    from numba import njit

    @njit
    def fill(seed, out32, out64):
        for i in range(out32.size):
            out32[i] = uniforms.uniform_at(seed, i)
            out64[i] = uniforms.uniform64_at(seed, i)

    n = 10007
    for seed in (np.uint64(0), np.uint64(2 ** 64 - 1), draw_seed(np.random.default_rng(5))):
        a, b = np.empty(n, np.float32), np.empty(n)
        fill(seed, a, b)
        assert np.array_equal(a, counter_rng.uniforms(seed, n, np.float32))
        assert np.array_equal(b, counter_rng.uniforms(seed, (n,), np.float64))
        assert 0 <= a.min() and a.max() < 1 and np.all(a * 2 ** 24 == np.round(a * 2 ** 24))
        assert abs(a.mean() - 0.5) < 0.01 and abs(b.var() - 1 / 12) < 0.005
    u = counter_rng.uniforms(np.uint64(7), (3, 4, 5))
    assert np.array_equal(u.reshape(-1), counter_rng.uniforms(np.uint64(7), 60))  # flat C order
    assert not np.array_equal(u, counter_rng.uniforms(np.uint64(8), (3, 4, 5)))
    hist = np.histogram(counter_rng.uniforms(np.uint64(9), 200_000), bins=20, range=(0, 1))[0]
    assert hist.min() > 9_500 and hist.max() < 10_500  # expected 10,000 per bin, sd 98
    with pytest.raises(ValueError, match="seed"):
        checks.as_seed(-1)
