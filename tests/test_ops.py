"""Every op's backward against float64 centered finite differences (rel. error < 1e-7), at small odd
shapes (B=2, T=5, 3 heads) with padding; inputs and dout unchanged; dtype kept."""

import numpy as np
import pytest

from electra_np.config import ElectraConfig
from electra_np.gradcheck import check_op, rel_error
from electra_np.ops import activations, attention, dropout, embeddings, heads, layer, layernorm, linear, losses

TOL = 1e-7
B, T, H, NH, F, E, V = 2, 5, 6, 3, 7, 4, 11
rng = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# The key bias adds the same q.b_k to every score of a softmax row, so its true gradient is exactly 0 and
# the relative error compares rounding noise with rounding noise; test_key_bias_gradient_is_zero holds it.
ZERO_GRADIENT = ("attention__self__key__bias",)


def assert_all_below(errors, tol=TOL):
    assert errors, "no gradient was checked"
    bad = {k: v for k, v in errors.items() if not v < tol and k not in ZERO_GRADIENT}
    assert not bad, f"relative errors above {tol}: {bad}"


def dict_op(fwd, names):
    """Adapt an op taking a weight dict to check_op's keyword interface."""
    def forward(**kw):
        w = {n: kw.pop(n.replace(".", "__")) for n in names}
        return fwd(w=w, **kw)
    return forward


def dict_inputs(w):
    return {k.replace(".", "__"): v for k, v in w.items()}


def keyed(backward, names, x_name=None):
    def bwd(dout, cache):
        out = backward(dout, cache)
        if isinstance(out, tuple):
            dx, grads = out
            grads = dict(grads, **{x_name: dx})
        else:
            grads = out
        return {k.replace(".", "__"): v for k, v in grads.items()}
    return bwd


def test_linear():
    errs = check_op(linear.linear_forward, linear.linear_backward,
                    {"x": rand(B, T, H), "weight": rand(F, H), "bias": rand(F)})
    assert_all_below(errs)


def test_layer_norm():
    errs = check_op(layernorm.layer_norm_forward, layernorm.layer_norm_backward,
                    {"x": rand(B, T, H, scale=3) + 2, "weight": rand(H), "bias": rand(H)}, kwargs={"eps": 1e-12})
    assert_all_below(errs)


@pytest.mark.parametrize("name,fwd,bwd", [("gelu", activations.gelu_forward, activations.gelu_backward),
                                          ("gelu_new", activations.gelu_tanh_forward, activations.gelu_tanh_backward)])
def test_gelu(name, fwd, bwd):
    """Both flavours, each under its config name: the exact erf form and the tanh approximation."""
    assert activations.ACTIVATION_FUNCTIONS[name] == (fwd, bwd)
    errs = check_op(fwd, bwd, {"x": rand(B, T, F, scale=2)})
    assert_all_below(errs)


def test_gelu_values():
    # exact erf form: gelu(1) = Phi(1) = 0.8413447460685429; the tanh form differs in the 4th digit
    x = np.array([-1.0, 0.0, 1.0, 3.0])
    exact = activations.gelu_forward(x)[0]
    np.testing.assert_allclose(exact, [-0.15865525393145707, 0.0, 0.8413447460685429, 2.99595030590511], rtol=1e-15)
    approx = activations.gelu_tanh_forward(x)[0]
    assert abs(approx[2] - 0.8411919906082768) < 1e-15 and abs(approx[2] - exact[2]) > 1e-4


def test_dropout_injected_mask_and_seed():
    x = rand(B, T, H)
    mask = dropout.dropout_mask(x.shape, 0.3, np.random.default_rng(1), x.dtype)
    assert set(np.unique(mask)) <= {0.0, 1 / 0.7}
    errs = check_op(dropout.dropout_forward, dropout.dropout_backward, {"x": x}, kwargs={"p": 0.3, "mask": mask})
    assert_all_below(errs)
    a = dropout.dropout_forward(x, 0.3, np.random.default_rng(5))[0]
    b = dropout.dropout_forward(x, 0.3, np.random.default_rng(5))[0]
    np.testing.assert_array_equal(a, b)
    assert dropout.dropout_forward(x, 0.3, None)[0] is x  # no rng: evaluation mode
    big = dropout.dropout_mask((200, 200), 0.1, np.random.default_rng(2), np.dtype(np.float64))
    assert abs((big == 0).mean() - 0.1) < 0.01


def test_embedding_gather_accumulates_repeated_ids():
    ids = np.array([[1, 3, 1, 1, 0], [3, 3, 2, 1, 4]])
    w = rand(V, E)
    errs = check_op(embeddings.embedding_forward, embeddings.embedding_backward, {"ids": ids, "weight": w})
    assert_all_below(errs)
    dW = embeddings.embedding_backward(np.ones((B, T, E)), (ids, w.shape))
    assert dW[1, 0] == 4 and dW[3, 0] == 3 and dW[5, 0] == 0


@pytest.mark.parametrize("with_projection", [True, False])
def test_embeddings_block(with_projection):
    names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
             "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    w = {names[0]: rand(V, E), names[1]: rand(9, E), names[2]: rand(2, E), names[3]: rand(E), names[4]: rand(E)}
    if with_projection:
        w["embeddings_project.weight"], w["embeddings_project.bias"] = rand(H, E), rand(H)
    ids = rng.integers(0, V, (B, T))
    ids[0, :3] = 7  # repeated ids accumulate
    types = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    fwd = dict_op(lambda w, **kw: embeddings.embeddings_forward(w=w, eps=1e-12, p_drop=0.2,
                                                                rng=np.random.default_rng(3), **kw), list(w))
    errs = check_op(fwd, keyed(embeddings.embeddings_backward, list(w)),
                    dict(input_ids=ids, token_type_ids=types, **dict_inputs(w)))
    assert_all_below(errs)
    assert (errs.keys() >= {"embeddings__word_embeddings__weight"})


def padded_bias():
    mask = np.ones((B, T), int)
    mask[1, 3:] = 0
    return attention.key_mask_bias(mask, np.dtype(np.float64))


def test_attention_core_with_padding_and_dropout():
    q, k, v = rand(B, NH, T, 2), rand(B, NH, T, 2), rand(B, NH, T, 2)
    def fwd(q, k, v):
        return attention.attention_core_forward(q, k, v, padded_bias(), 0.25, np.random.default_rng(4))
    errs = check_op(fwd, attention.attention_core_backward, {"q": q, "k": k, "v": v})
    assert_all_below(errs)


def test_attention_fully_padded_row_gives_zeros_not_nan():
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    q = rand(B, NH, T, 2)
    for dtype in (np.float32, np.float64):
        bias = attention.key_mask_bias(mask, np.dtype(dtype))
        ctx, cache = attention.attention_core_forward(*(a.astype(dtype) for a in (q, q, q)), bias, 0.0)
        assert ctx.dtype == dtype and np.isfinite(ctx).all()
        np.testing.assert_array_equal(ctx[1], 0)
        probs = cache[3]
        np.testing.assert_allclose(probs[0].sum(-1), 1, rtol=1e-6)
        np.testing.assert_array_equal(probs[0, :, :, 2:], 0)  # padded keys get exactly zero weight
        assert all(np.isfinite(g).all() for g in attention.attention_core_backward(np.ones_like(ctx), cache))


def layer_weights():
    names = {"attention.self.query": (H, H), "attention.self.key": (H, H), "attention.self.value": (H, H),
             "attention.output.dense": (H, H), "intermediate.dense": (F, H), "output.dense": (H, F)}
    w = {}
    for n, s in names.items():
        w[f"{n}.weight"], w[f"{n}.bias"] = rand(*s, scale=0.5), rand(s[0], scale=0.1)
    for n in ("attention.output.LayerNorm", "output.LayerNorm"):
        w[f"{n}.weight"], w[f"{n}.bias"] = 1 + rand(H, scale=0.1), rand(H, scale=0.1)
    return w


def test_self_attention():
    w = {k: v for k, v in layer_weights().items() if k.startswith("attention.") and "LayerNorm" not in k}
    fwd = dict_op(lambda w, x: attention.self_attention_forward(x, padded_bias(), w, NH, 0.1, np.random.default_rng(6)), list(w))
    errs = check_op(fwd, keyed(attention.self_attention_backward, list(w), "x"), dict(x=rand(B, T, H), **dict_inputs(w)))
    assert_all_below(errs)


def test_key_bias_gradient_is_zero():
    w = {k: v for k, v in layer_weights().items() if k.startswith("attention.") and "LayerNorm" not in k}
    out, cache = attention.self_attention_forward(rand(B, T, H), padded_bias(), w, NH, 0.0)
    _, grads = attention.self_attention_backward(rand(B, T, H), cache)
    assert np.abs(grads["attention.self.key.bias"]).max() < 1e-13
    assert np.abs(grads["attention.self.query.bias"]).max() > 1e-3


def test_feed_forward():
    w = {k: v for k, v in layer_weights().items() if k.startswith(("intermediate.", "output.dense"))}
    fwd = dict_op(lambda w, x: layer.feed_forward_forward(x, w, "gelu"), list(w))
    errs = check_op(fwd, keyed(layer.feed_forward_backward, list(w), "x"), dict(x=rand(B, T, H), **dict_inputs(w)))
    assert_all_below(errs)


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_transformer_layer(act):
    cfg = ElectraConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_attention_heads=NH, intermediate_size=F,
                        hidden_act=act, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    w = layer_weights()
    fwd = dict_op(lambda w, x: layer.transformer_layer_forward(x, padded_bias(), w, cfg, np.random.default_rng(7)), list(w))
    errs = check_op(fwd, keyed(layer.transformer_layer_backward, list(w), "x"), dict(x=rand(B, T, H), **dict_inputs(w)))
    assert_all_below(errs)
    assert len(errs) == len(w) + 1


def test_generator_head():
    M = 4
    w = {"generator_predictions.dense.weight": rand(E, H), "generator_predictions.dense.bias": rand(E),
         "generator_predictions.LayerNorm.weight": rand(E), "generator_predictions.LayerNorm.bias": rand(E),
         "generator_lm_head.bias": rand(V)}

    def fwd(h, word, **kw):
        return heads.generator_head_forward(h, word, {k: kw[k.replace(".", "__")] for k in w}, 1e-12)

    def bwd(dout, cache):
        dh, dword, g = heads.generator_head_backward(dout, cache)
        return dict({k.replace(".", "__"): v for k, v in g.items()}, h=dh, word=dword)

    errs = check_op(fwd, bwd, dict(h=rand(M, H), word=rand(V, E), **dict_inputs(w)))
    assert_all_below(errs)
    assert len(errs) == 7


def test_discriminator_head():
    w = {"discriminator_predictions.dense.weight": rand(H, H), "discriminator_predictions.dense.bias": rand(H),
         "discriminator_predictions.dense_prediction.weight": rand(1, H),
         "discriminator_predictions.dense_prediction.bias": rand(1)}
    fwd = dict_op(lambda w, h: heads.discriminator_head_forward(h, w, "gelu"), list(w))
    errs = check_op(fwd, keyed(heads.discriminator_head_backward, list(w), "h"), dict(h=rand(B, T, H), **dict_inputs(w)))
    assert_all_below(errs)


def test_softmax_cross_entropy():
    labels = np.array([0, 3, 3, 10])
    errs = check_op(lambda logits: losses.softmax_cross_entropy_forward(logits, labels),
                    losses.softmax_cross_entropy_backward, {"logits": rand(4, V, scale=3)})
    assert_all_below(errs)
    # value: uniform logits give log V
    loss, _ = losses.softmax_cross_entropy_forward(np.zeros((3, V)), np.array([1, 2, 3]))
    assert abs(float(loss) - np.log(V)) < 1e-14


def test_binary_cross_entropy():
    labels = rng.integers(0, 2, (B, T))
    weights = np.ones((B, T))
    weights[1, 3:] = 0
    errs = check_op(lambda logits: losses.binary_cross_entropy_forward(logits, labels, weights),
                    losses.binary_cross_entropy_backward, {"logits": rand(B, T, scale=3)})
    assert_all_below(errs)
    loss, _ = losses.binary_cross_entropy_forward(np.zeros((B, T)), labels, weights)
    assert abs(float(loss) - np.log(2)) < 1e-15


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_stable_at_extremes(dtype):
    big = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    loss, cache = losses.softmax_cross_entropy_forward(big, np.array([1, 2]))
    d = losses.softmax_cross_entropy_backward(dtype(1), cache)
    assert loss.dtype == dtype and np.isfinite(loss) and np.isfinite(d).all()
    assert abs(float(loss) - 1e4) < 1e-2  # row 0 pays 2e4, row 1 pays 0
    z = np.array([[1e4, -1e4], [1e4, -1e4]], dtype)
    y = np.array([[0, 1], [1, 0]])
    for w in (np.ones((2, 2)), np.zeros((2, 2))):  # all real, then fully padded
        loss, cache = losses.binary_cross_entropy_forward(z, y, w)
        d = losses.binary_cross_entropy_backward(dtype(1), cache)
        assert loss.dtype == dtype and np.isfinite(loss) and np.isfinite(d).all()
    assert float(losses.binary_cross_entropy_forward(z, y, np.zeros((2, 2)))[0]) == 0.0
    assert float(losses.softmax_cross_entropy_forward(np.zeros((0, 5), dtype), np.zeros(0, int))[0]) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_keep_dtype(dtype):
    x = rand(B, T, H).astype(dtype)
    w, b = rand(H, H).astype(dtype), rand(H).astype(dtype)
    outs = [linear.linear_forward(x, w, b)[0], layernorm.layer_norm_forward(x, b, b, 1e-12)[0],
            activations.gelu_forward(x)[0], activations.gelu_tanh_forward(x)[0],
            dropout.dropout_forward(x, 0.1, np.random.default_rng(0))[0]]
    assert all(o.dtype == dtype for o in outs)
    dx, dw, db = linear.linear_backward(x, linear.linear_forward(x, w, b)[1])
    assert dx.dtype == dw.dtype == db.dtype == dtype
    dx, dw, db = layernorm.layer_norm_backward(x, layernorm.layer_norm_forward(x, b, b, 1e-12)[1])
    assert dx.dtype == dw.dtype == db.dtype == dtype


def test_rel_error_definition():
    assert rel_error(np.array([1.0]), np.array([1.0])) == 0
    assert abs(rel_error(np.array([1.0]), np.array([1.1])) - 0.1 / 2.1) < 1e-15
    assert rel_error(np.zeros(3), np.zeros(3)) == 0
