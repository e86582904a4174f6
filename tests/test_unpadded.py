"""The unpadded path (unpadded.py, ops/varlen_attention.py) against the padded reference: logits and every
gradient equal in float64 (to 1e-10), dropout off and on with the same seed, both heads; varlen attention
against float64 finite differences; the length-bucketed sampler (data/buckets.py)."""

import numpy as np
import pytest

from electra_np.classification import classifier_backward, classifier_forward, init_classifier
from electra_np.config import ElectraConfig
from electra_np.counter_rng import draw_seed, uniforms, uniforms_at
from electra_np.data.buckets import bucket_of, eval_batches, in_input_order, train_batches
from electra_np.gradcheck import check_op
from electra_np.model import encoder_forward
from electra_np.ops.attention import attention_core_forward, key_mask_bias
from electra_np.ops.dropout import dropout_mask, dropout_mask_at
from electra_np.ops.varlen_attention import (
    varlen_attention_core_backward,
    varlen_attention_core_forward,
    varlen_self_attention_backward,
    varlen_self_attention_forward,
)
from electra_np.params import discriminator_shapes, init_params
from electra_np.unpadded import (
    pack,
    packed_embeddings_backward,
    packed_embeddings_forward,
    packed_encoder_backward,
    packed_encoder_forward,
    packed_layer_backward,
    packed_layer_forward,
    repad,
    unpad,
    unpadded_classifier_backward,
    unpadded_classifier_forward,
)

TOL, EQUAL = 1e-7, 1e-10
H, NH, C = 6, 3, 3
LENGTHS = [1, 7, 3, 5, 2]  # 1, T_max and values between
T = 7
rng = np.random.default_rng(0)
CONFIG = ElectraConfig(vocab_size=23, embedding_size=4, hidden_size=H, num_hidden_layers=2, num_attention_heads=NH,
                       intermediate_size=7, max_position_embeddings=9, hidden_dropout_prob=0.2,
                       attention_probs_dropout_prob=0.2)


def rand(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def right_padded(lengths, T):
    return (np.arange(T) < np.asarray(lengths)[:, None]).astype(np.int64)  # (B, T)


def cu_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


# ----------------------------------------------------------------------------- counter-based draws at positions

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniforms_at_are_the_padded_arrays_numbers(dtype):
    seed = np.uint64(123456789)
    full = uniforms(seed, (4, 5, 3), dtype)
    index = np.array([[0, 7], [59, 31]])
    np.testing.assert_array_equal(uniforms_at(seed, index, dtype), full.reshape(-1)[index])
    mask = dropout_mask((4, 5, 3), 0.3, np.random.default_rng(1), np.dtype(np.float64))
    seed = draw_seed(np.random.default_rng(1))
    np.testing.assert_array_equal(dropout_mask_at(seed, np.arange(60).reshape(4, 5, 3), 0.3, np.dtype(np.float64)), mask)


def test_unpad_pack_repad():
    mask = right_padded(LENGTHS, T)
    packing = unpad(mask)
    assert packing.cu_seqlens.tolist() == [0, 1, 8, 11, 16, 18] and (packing.B, packing.T) == (5, 7)
    assert packing.positions.tolist()[:11] == [0, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    x = rand(5, T, 2)
    packed = pack(x, packing)  # (N, 2)
    assert packed.shape == (18, 2)
    np.testing.assert_array_equal(repad(packed, packing), x * mask[:, :, None])
    for bad in ([[1, 0, 1]], [[0, 1, 1]], [[1, 1, 1], [0, 0, 0]]):  # a hole, left padding, an empty row
        with pytest.raises(ValueError, match="right-padded"):
            unpad(np.array(bad))


# ----------------------------------------------------------------------------- varlen attention

@pytest.mark.parametrize("seed", [None, 5])
def test_varlen_core_equals_padded_core(seed):
    """Same q, k, v at the real positions, same seed: the padded core's output there, dropout off and on."""
    B, hs = len(LENGTHS), 2
    mask = right_padded(LENGTHS, T)
    q, k, v = rand(B, NH, T, hs), rand(B, NH, T, hs), rand(B, NH, T, hs)
    draws = (lambda: None) if seed is None else (lambda: np.random.default_rng(seed))
    ctx, _ = attention_core_forward(q, k, v, key_mask_bias(mask, q.dtype), 0.3, draws())  # (B, NH, T, hs)
    packing = unpad(mask)
    packed = [pack(a.transpose(0, 2, 1, 3), packing) for a in (q, k, v)]  # (N, NH, hs)
    vctx, _ = varlen_attention_core_forward(*packed, packing.cu_seqlens, 0.3, draws(), T)
    assert np.abs(vctx - pack(ctx.transpose(0, 2, 1, 3), packing)).max() < 1e-14


def test_varlen_core_backward():
    """Dropout on (the same mask at every call), a length-1 sequence, T past the longest sequence."""
    lengths = [1, 4, 2, 3]
    cu, N = cu_of(lengths), sum(lengths)

    def fwd(q, k, v, cu_seqlens):
        return varlen_attention_core_forward(q, k, v, cu_seqlens, 0.3, np.random.default_rng(3), T=6)

    errs = check_op(fwd, varlen_attention_core_backward,
                    {"q": rand(N, NH, 2, scale=2), "k": rand(N, NH, 2, scale=2), "v": rand(N, NH, 2), "cu_seqlens": cu})
    assert set(errs) == {"q", "k", "v"} and max(errs.values()) < TOL, errs


@pytest.mark.parametrize("p_drop", [0.0, 0.3])
def test_varlen_self_attention_backward(p_drop):
    lengths = [3, 1, 4]
    names = [f"attention.self.{n}.{p}" for n in ("query", "key", "value") for p in ("weight", "bias")]
    names += ["attention.output.dense.weight", "attention.output.dense.bias"]
    w = {n: rand(H, H) if n.endswith("weight") else rand(H) for n in names}

    def fwd(x, cu_seqlens, **kw):
        weights = {n: kw[n.replace(".", "__")] for n in names}
        return varlen_self_attention_forward(x, cu_seqlens, weights, NH, p_drop, np.random.default_rng(4), T=5)

    def bwd(dout, cache):
        dx, grads = varlen_self_attention_backward(dout, cache)
        return dict(x=dx, **{k.replace(".", "__"): g for k, g in grads.items()})

    inputs = dict(x=rand(sum(lengths), H), cu_seqlens=cu_of(lengths), **{n.replace(".", "__"): v for n, v in w.items()})
    errs = check_op(fwd, bwd, inputs)
    assert len(errs) == 9
    # the key bias shifts every score of a softmax row alike: its true gradient is exactly 0 and the relative
    # error compares rounding noise with rounding noise (tests/test_ops.py), so hold it to zero instead
    del errs["attention__self__key__bias"]
    assert max(errs.values()) < TOL, errs
    out, cache = fwd(**inputs)
    assert np.abs(bwd(rand(*out.shape), cache)["attention__self__key__bias"]).max() < 1e-12


def test_varlen_refuses_bad_offsets():
    q = rand(4, NH, 2)
    for cu in ([0, 2, 5], [1, 4], [0, 0, 4], [0.0, 4.0]):
        with pytest.raises(ValueError, match="cu_seqlens"):
            varlen_attention_core_forward(q, q, q, np.array(cu), 0.0)
    with pytest.raises(ValueError, match="shorter"):
        varlen_attention_core_forward(q, q, q, np.array([0, 4]), 0.0, T=3)


# ----------------------------------------------------------------------------- the whole classifier, padded vs unpadded

FAMILIES = ("embeddings", "attention.self", "attention.output", "intermediate", "output", "classifier")


def family(key):
    if key.startswith("classifier"):
        return "classifier"
    if ".embeddings" in key or "embeddings_project" in key:
        return "embeddings"
    rest = key.split("layer.")[1].split(".", 1)[1]  # after "electra.encoder.layer.{i}."
    return next(f for f in FAMILIES if rest.startswith(f))


def setup(head, dtype=np.float64):
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1, dtype=dtype)
    w = init_classifier(disc, CONFIG, C, head, seed=2)
    w = {k: (v + rand(*v.shape, scale=0.1) if ("LayerNorm" in k or k.endswith(".bias")) else v * 10).astype(dtype)
         for k, v in w.items()}  # away from 1 / 0 and 0.02, so every gradient is exercised
    B = len(LENGTHS)
    mask = right_padded(LENGTHS, T)
    ids = rng.integers(5, CONFIG.vocab_size, (B, T))
    types = (rng.integers(0, 2, (B, T)) * mask).astype(np.int64)  # sentence pairs: 0 / 1 on real tokens
    return w, ids, types, mask


@pytest.mark.parametrize("head", ["hf", "official"])
@pytest.mark.parametrize("dropout", [False, True])
def test_unpadded_classifier_equals_padded(head, dropout):
    """The issue's bar: logits, hidden states and every gradient equal the padded reference to 1e-10 in float64."""
    w, ids, types, mask = setup(head)
    snapshot = {k: v.copy() for k, v in w.items()}
    draws = (lambda: np.random.default_rng(7)) if dropout else (lambda: None)
    rp, ru = draws(), draws()
    logits_p, cache_p = classifier_forward(w, CONFIG, ids, types, mask, rp)
    logits_u, cache_u = unpadded_classifier_forward(w, CONFIG, ids, types, mask, ru)
    if dropout:  # the two drew the same number of seeds: the Generators are in the same state afterwards
        assert rp.bit_generator.state == ru.bit_generator.state
        assert np.abs(logits_p - classifier_forward(w, CONFIG, ids, types, mask)[0]).max() > 1e-3  # dropout was on
    dlogits = rand(*logits_p.shape)
    gp, gu = classifier_backward(dlogits, cache_p), unpadded_classifier_backward(dlogits, cache_u)
    assert set(gu) == set(gp) == set(w)
    worst = {"logits": float(np.abs(logits_u - logits_p).max())}
    for k in gp:
        assert gu[k].shape == gp[k].shape and gu[k].dtype == gp[k].dtype, k
        f = family(k)
        worst[f] = max(worst.get(f, 0.0), float(np.abs(gu[k] - gp[k]).max()))
    h_p, _ = encoder_forward(w, CONFIG, ids, types, mask, draws())  # (B, T, H)
    packing = unpad(mask)
    flat = lambda a: a.reshape(-1)[packing.indices]  # noqa: E731
    h_u, _ = packed_encoder_forward(w, CONFIG, flat(ids), flat(types), packing, draws())  # (N, H)
    worst["hidden"] = float(np.abs(h_u - pack(h_p, packing)).max())
    print(head, "dropout" if dropout else "no dropout", {k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) < EQUAL, worst
    assert all(np.array_equal(w[k], snapshot[k]) for k in w)  # nothing mutated its inputs
    assert np.abs(gp["electra.embeddings.position_embeddings.weight"][T:]).max() == 0


def test_unpadded_keeps_float32():
    w, ids, types, mask = setup("hf", np.float32)
    logits, cache = unpadded_classifier_forward(w, CONFIG, ids, types, mask, np.random.default_rng(7))
    grads = unpadded_classifier_backward(np.ones_like(logits), cache)
    assert logits.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    ref = classifier_forward(w, CONFIG, ids, types, mask, np.random.default_rng(7))[0]
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- the length-bucketed sampler

LENS = np.array([5, 1, 40, 17, 16, 3, 33, 8, 64, 2, 31, 12, 9, 50, 18, 7, 1, 29, 45, 60, 22, 15, 4])


def test_train_batches_every_example_once_and_deterministic():
    for epoch in range(3):
        batches = train_batches(LENS, 4, seed=11, epoch=epoch, width=16)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(LENS)))
        assert all(1 <= len(b) <= 4 for b in batches)
        assert all(len(set(bucket_of(LENS[b], 16).tolist())) == 1 for b in batches)  # a batch never mixes buckets
        again = train_batches(LENS, 4, seed=11, epoch=epoch, width=16)
        assert all(np.array_equal(a, b) for a, b in zip(batches, again)) and len(batches) == len(again)
    order = lambda s, e: np.concatenate(train_batches(LENS, 4, seed=s, epoch=e, width=16)).tolist()  # noqa: E731
    assert order(11, 0) != order(11, 1) and order(11, 0) != order(12, 0)
    # the buckets (lengths 1-16, 17-32, 33-48, 49-64) hold 12, 5, 3, 3 examples: 3 + 2 + 1 + 1 batches of 4
    assert len(train_batches(LENS, 4, seed=0, width=16)) == 7


def test_eval_batches_sorted_and_order_restored():
    batches = eval_batches(LENS, 5)
    flat = np.concatenate(batches)
    assert np.all(np.diff(LENS[flat]) >= 0) and [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert flat[:2].tolist() == [1, 16]  # the two length-1 examples, ties in index order
    outputs = [np.stack([LENS[b] * 10, b], axis=1) for b in batches]  # one row of "results" per example
    restored = in_input_order(batches, outputs)
    np.testing.assert_array_equal(restored, np.stack([LENS * 10, np.arange(len(LENS))], axis=1))
    with pytest.raises(ValueError, match="exactly once"):
        in_input_order([np.array([0, 0])], [np.zeros(2)])
    for bad in ([], [0, 3], [1.5]):
        with pytest.raises(ValueError, match="lengths"):
            eval_batches(bad, 2)
    with pytest.raises(ValueError, match="batch_size"):
        train_batches(LENS, 0, seed=0)


# ----------------------------------------------------------------------------- the packed ops against finite differences

def packed_case(dropout):
    """A float64 classifier's weights, its packed tokens and a dropout rng factory (a fresh rng per call: the same
    masks at every finite-difference evaluation)."""
    w, ids, types, mask = setup("hf")
    packing = unpad(mask)
    make_rng = (lambda: np.random.default_rng(5)) if dropout else (lambda: None)
    return w, pack(ids, packing), pack(types, packing), packing, make_rng


def by_name(prefix, w, keep):
    return {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix) and keep(k[len(prefix):])}


@pytest.mark.parametrize("dropout", [False, True])
def test_packed_embeddings_backward(dropout):
    w, ids, types, packing, make_rng = packed_case(dropout)
    inputs = by_name("electra.", w, lambda k: k.startswith("embeddings"))

    def fwd(**kw):
        return packed_embeddings_forward(ids, types, packing, kw, CONFIG.layer_norm_eps, 0.2, make_rng())

    errs = check_op(fwd, packed_embeddings_backward, inputs)
    assert set(errs) == set(inputs) and max(errs.values()) < TOL, errs


@pytest.mark.parametrize("dropout", [False, True])
def test_packed_layer_backward(dropout):
    w, _, _, packing, make_rng = packed_case(dropout)
    inputs = {"x": rand(len(packing.indices), H), **by_name("electra.encoder.layer.0.", w, lambda k: True)}

    def fwd(x, **kw):
        return packed_layer_forward(x, packing, kw, CONFIG, make_rng())

    def bwd(dout, cache):
        dx, grads = packed_layer_backward(dout, cache)
        return dict(x=dx, **grads)

    errs = check_op(fwd, bwd, inputs)
    assert set(errs) == set(inputs)
    del errs["attention.self.key.bias"]  # its true gradient is 0 (test_varlen_self_attention_backward): held below
    assert max(errs.values()) < TOL, errs
    out, cache = fwd(**inputs)
    assert np.abs(bwd(rand(*out.shape), cache)["attention.self.key.bias"]).max() < 1e-12


@pytest.mark.parametrize("dropout", [False, True])
def test_packed_encoder_backward(dropout):
    w, ids, types, packing, make_rng = packed_case(dropout)
    inputs = {k: v for k, v in w.items() if k.startswith("electra.")}

    def fwd(**kw):
        return packed_encoder_forward(kw, CONFIG, ids, types, packing, make_rng())

    errs = check_op(fwd, packed_encoder_backward, inputs)
    assert set(errs) == set(inputs)
    key_bias = [k for k in errs if k.endswith("attention.self.key.bias")]
    assert max(v for k, v in errs.items() if k not in key_bias) < TOL, errs
    out, cache = fwd(**inputs)
    grads = packed_encoder_backward(rand(*out.shape), cache)
    assert max(np.abs(grads[k]).max() for k in key_bias) < 1e-12
