"""The fast unpadded path (fast/unpadded.py, fast/kernels/varlen_attention.py, fast/kernels/packed.py) against
the NumPy unpadded reference (unpadded.py, ops/varlen_attention.py) and hence the padded one: the varlen
attention kernel at awkward lengths (1, odd, T past the longest), and the whole fine-tuning step (loss,
metrics, logits, every gradient) in float64 to 1e-10, dropout off and on with the same seed, both heads,
sequence lengths 1, T and between in one batch; float32 close to float64. Also run with NUMBA_DISABLE_JIT=1."""

import numpy as np
import pytest
from _compare import assert_same_step

from electra_np.classification import (
    ReferenceClassifier,
    check_inputs,
    init_classifier,
    loss_backward,
    loss_forward,
)
from electra_np.config import ElectraConfig
from electra_np.counter_rng import draw_seed
from electra_np.fast.kernels import varlen_attention as kv
from electra_np.fast.kernels.rows import num_chunks
from electra_np.fast.unpadded import FastUnpaddedClassifier
from electra_np.ops.varlen_attention import varlen_attention_core_backward, varlen_attention_core_forward
from electra_np.params import discriminator_shapes, init_params
from electra_np.unpadded import unpadded_classifier_backward, unpadded_classifier_forward

pytestmark = pytest.mark.skipif(not kv.available(np.float64), reason="needs NumPy's OpenBLAS gemm (scipy-openblas)")

EQUAL = 1e-10
H, NH = 6, 3
LENGTHS = [1, 7, 3, 5, 2]  # 1, T_max and values between
T = 7
CONFIG = ElectraConfig(vocab_size=23, embedding_size=4, hidden_size=H, num_hidden_layers=2, num_attention_heads=NH,
                       intermediate_size=7, max_position_embeddings=9, hidden_dropout_prob=0.2,
                       attention_probs_dropout_prob=0.2)


def cu_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


# ----------------------------------------------------------------------------- the varlen attention kernel

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lengths, T_pad, p", [([1], 1, 0.0), ([1, 4, 7, 3, 1], 9, 0.3), ([5, 2], 5, 0.0),
                                               ([3, 1, 6], 6, 0.5)])
def test_varlen_kernel_equals_reference(dtype, lengths, T_pad, p):
    rng = np.random.default_rng(len(lengths))
    cu, N, hs = cu_of(lengths), sum(lengths), H // NH
    qkv = (rng.standard_normal((N, 3 * H)) * 2).astype(dtype)  # (N, 3H): q, k, v side by side
    dctx = rng.standard_normal((N, H)).astype(dtype)
    q, k, v = (qkv[:, j * H:(j + 1) * H].reshape(N, NH, hs) for j in range(3))  # (N, NH, hs)
    draws = (lambda: np.random.default_rng(11)) if p else (lambda: None)
    ref_ctx, cache = varlen_attention_core_forward(q, k, v, cu, p, draws(), T_pad)
    ref_dq, ref_dk, ref_dv = varlen_attention_core_backward(dctx.reshape(N, NH, hs), cache)
    seed = draw_seed(draws()) if p else None
    pofs = kv.probs_offsets(cu, NH)
    probs, ctx, dqkv = np.empty(pofs[-1], dtype), np.empty((N, H), dtype), np.empty((N, 3 * H), dtype)
    scratch = np.empty(kv.scratch_shape(max(lengths)), dtype)
    snapshot = qkv.copy(), dctx.copy()
    kv.varlen_attention_forward(qkv, cu, pofs, NH, T_pad, p, seed, probs, ctx, scratch)
    kv.varlen_attention_backward(dctx, qkv, cu, pofs, NH, T_pad, p, seed, probs, dqkv, scratch)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for got, want in ((ctx, ref_ctx.reshape(N, H)), (dqkv[:, :H], ref_dq.reshape(N, H)),
                      (dqkv[:, H:2 * H], ref_dk.reshape(N, H)), (dqkv[:, 2 * H:], ref_dv.reshape(N, H))):
        assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())
    assert np.array_equal(qkv, snapshot[0]) and np.array_equal(dctx, snapshot[1])
    assert scratch.shape[0] == num_chunks()


def test_varlen_kernel_refuses_bad_arguments():
    qkv, cu = np.zeros((4, 3 * H)), cu_of([1, 3])
    pofs = kv.probs_offsets(cu, NH)
    probs, ctx, scratch = np.empty(pofs[-1]), np.empty((4, H)), np.empty(kv.scratch_shape(3))
    with pytest.raises(ValueError, match="cu_seqlens"):
        kv.varlen_attention_forward(qkv, cu_of([1, 2]), kv.probs_offsets(cu_of([1, 2]), NH), NH, 3, 0.0, None,
                                    np.empty(15), ctx, scratch)
    with pytest.raises(ValueError, match="shorter"):
        kv.varlen_attention_forward(qkv, cu, pofs, NH, 2, 0.0, None, probs, ctx, scratch)
    with pytest.raises(ValueError, match="scratch"):
        kv.varlen_attention_forward(qkv, cu, pofs, NH, 3, 0.0, None, probs, ctx, np.empty(kv.scratch_shape(2)))
    with pytest.raises(ValueError, match="float32 array"):
        kv.varlen_attention_forward(qkv.astype(np.float32), cu, pofs, NH, 3, 0.0, None, probs, ctx, scratch)


# ----------------------------------------------------------------------------- the whole fine-tuning step

def setup(head, lengths=LENGTHS, T=T, dtype=np.float64, C=3, seed=0):
    rng = np.random.default_rng(seed)
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1, dtype=np.float64)
    w = init_classifier(disc, CONFIG, C, head, seed=2)
    w = {k: (v + rng.standard_normal(v.shape) * 0.1 if ("LayerNorm" in k or k.endswith(".bias")) else v * 10).astype(dtype)
         for k, v in w.items()}  # away from 1 / 0 and 0.02, so every gradient is exercised
    B = len(lengths)
    mask = (np.arange(T) < np.asarray(lengths)[:, None]).astype(np.int64)  # (B, T) right-padded
    ids = rng.integers(5, CONFIG.vocab_size, (B, T)) * mask
    if B > 1 and lengths[1] >= 4:
        ids[1, 2:4] = ids[1, 1]  # a repeated id
    types = (rng.integers(0, 2, (B, T)) * mask).astype(np.int64)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return w, batch, rng.integers(0, C, B)


def reference_step(w, batch, labels, rng, train=True):
    """unpadded.py's classifier, with classification.py's loss: the reference the fast step must equal."""
    _, ids, mask, types, labels = check_inputs(w, CONFIG, batch, labels)
    logits, cache = unpadded_classifier_forward(w, CONFIG, ids, types, mask, rng if train else None)
    loss, metrics, loss_cache = loss_forward(logits, labels)
    return loss, metrics, unpadded_classifier_backward(loss_backward(loss_cache), cache)


def worst(fast, ref):
    return max(float(np.abs(fast[2][k].astype(np.float64) - ref[2][k]).max()) for k in ref[2])


@pytest.mark.parametrize("head", ["hf", "official"])
@pytest.mark.parametrize("dropout", [False, True])
def test_fast_unpadded_step_equals_reference(head, dropout):
    w, batch, labels = setup(head)
    snapshot = {k: v.copy() for k, v in w.items()}
    draws = (lambda: np.random.default_rng(7)) if dropout else (lambda: None)
    clf, r_fast, r_ref, r_pad = FastUnpaddedClassifier(CONFIG), draws(), draws(), draws()
    for _ in range(2):  # the second step reuses the encoder's buffers
        fast = clf.step(w, batch, labels, r_fast)
        ref = reference_step(w, batch, labels, r_ref)
        padded = ReferenceClassifier(CONFIG).step(w, batch, labels, r_pad)
        print(head, "dropout" if dropout else "no dropout", f"unpadded ref {worst(fast, ref):.1e}",
              f"padded ref {worst(fast, padded):.1e}", f"loss {abs(float(fast[0]) - float(ref[0])):.1e}")
        assert_same_step(fast, ref, EQUAL, grad_floor=1.0)
        assert_same_step(fast, padded, EQUAL, grad_floor=1.0)
        assert worst(fast, ref) < EQUAL and worst(fast, padded) < EQUAL
    if dropout:  # the same number of draws from rng on every path
        assert r_fast.bit_generator.state == r_ref.bit_generator.state == r_pad.bit_generator.state
        assert abs(float(fast[0]) - float(clf.step(w, batch, labels, None)[0])) > 1e-3  # dropout was on
    logits, ref_logits = clf.logits(w, batch), ReferenceClassifier(CONFIG).logits(w, batch)
    assert np.abs(logits - ref_logits).max() < EQUAL
    assert all(np.array_equal(w[k], snapshot[k]) for k in w)  # nothing mutated its inputs


def test_batches_of_other_sizes_reuse_and_grow_the_buffers():
    clf = FastUnpaddedClassifier(CONFIG)
    for lengths, T_pad in (([2, 1], 3), ([1, 7, 3, 5, 2], 8), ([4], 4), ([9, 1, 9], 9)):
        w, batch, labels = setup("official", lengths, T_pad, C=2, seed=T_pad)
        fast = clf.step(w, batch, labels, np.random.default_rng(3))
        assert_same_step(fast, reference_step(w, batch, labels, np.random.default_rng(3)), EQUAL, grad_floor=1.0)


def test_float32_is_close_to_float64():
    w64, batch, labels = setup("hf")
    w32 = {k: v.astype(np.float32) for k, v in w64.items()}
    clf = FastUnpaddedClassifier(CONFIG)
    l64, _, g64 = clf.step(w64, batch, labels, np.random.default_rng(7))
    g64 = {k: v.copy() for k, v in g64.items()}  # views into the float64 encoder
    l32, _, g32 = clf.step(w32, batch, labels, np.random.default_rng(7))
    assert l32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    assert abs(float(l32) - float(l64)) < 1e-4 * max(1.0, abs(float(l64)))
    for k in g64:
        err = np.abs(g32[k] - g64[k]).max() / max(1.0, np.abs(g64[k]).max())
        assert err < 1e-3, (k, err)


def test_refuses_what_the_reference_refuses_and_left_padding():
    w, batch, labels = setup("hf")
    clf = FastUnpaddedClassifier(CONFIG)
    with pytest.raises(ValueError, match="class labels") as fast:
        clf.step(w, batch, labels + 5)
    with pytest.raises(ValueError) as ref:
        reference_step(w, batch, labels + 5, None)
    assert str(fast.value) == str(ref.value)
    left = {**batch, "attention_mask": batch["attention_mask"][:, ::-1].copy()}
    with pytest.raises(ValueError, match="right-padded"):
        clf.step(w, left, labels)


@pytest.mark.parametrize("dropout", [False, True])
def test_packed_embeddings_kernel_backward(dropout):
    """_packed_ln_backward (LayerNorm + dropout backward per packed row, per-thread sums of dw and dbeta) and the
    scatter-add after it, through packed.packed_embeddings_backward, against float64 finite differences of the
    kernel forward, repeated ids and positions included."""
    from electra_np.fast.kernels import packed
    from electra_np.gradcheck import check_op

    g = np.random.default_rng(7)
    N, E, V, P, Y = 9, 5, 6, 4, 2
    ids, types = g.integers(0, V, N), g.integers(0, Y, N)
    positions, rows = g.integers(0, P, N), np.arange(N) * 3 + 1  # rows: padded flat rows, not 0..N-1
    seed, p = (11, 0.3) if dropout else (None, 0.0)

    def fwd(word, pos, typ, w, beta):
        out, xhat, rstd = np.empty((N, E)), np.empty((N, E)), np.empty(N)
        packed.packed_embeddings_forward(ids, types, positions, rows, word, pos, typ, w, beta, 1e-12, out, xhat, rstd,
                                         seed, p)
        return out, (xhat, rstd, w, word.shape, pos.shape, typ.shape)

    def bwd(dout, cache):
        xhat, rstd, w, ws, ps, ys = cache
        d = {"word": np.zeros(ws), "pos": np.zeros(ps), "typ": np.zeros(ys), "w": np.empty(E), "beta": np.empty(E)}
        packed.packed_embeddings_backward(dout, ids, types, positions, rows, xhat, rstd, w, d["word"], d["pos"], d["typ"],
                                          d["w"], d["beta"], np.empty((N, E)), seed, p)
        return d

    inputs = {"word": g.standard_normal((V, E)), "pos": g.standard_normal((P, E)), "typ": g.standard_normal((Y, E)),
              "w": 1 + 0.3 * g.standard_normal(E), "beta": 0.3 * g.standard_normal(E)}
    errs = check_op(fwd, bwd, inputs)
    assert set(errs) == set(inputs) and max(errs.values()) < 1e-7, errs
