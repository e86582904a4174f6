"""Float64 finite-difference checks named after each backward that the op-level and whole-loss tests
reach only indirectly: the model-level backwards, the tanh GELU, the classifier's first-token gather,
and the Numba kernels' backwards (through their wrappers and through the whole fast step)."""

import numpy as np
import pytest

from electra_np.config import ElectraConfig, PretrainingConfig
from electra_np.fast.step import make_fast_step
from electra_np.gradcheck import check_function, check_op
from electra_np.fast.kernels import attention as k_attention
from electra_np.masking import Corruption
from electra_np.model import (Electra, discriminator_backward, discriminator_forward, encoder_backward,
                              encoder_forward, generator_backward, generator_forward)
from electra_np.classification import classifier_backward, classifier_forward, init_classifier
from electra_np.ops.activations import gelu_tanh_backward, gelu_tanh_forward
from electra_np.ops.attention import key_mask_bias
from electra_np.ops.classifier import _first_token_backward
from electra_np.params import discriminator_shapes, generator_shapes, init_params

TOL = 1e-7
CFG = ElectraConfig(vocab_size=13, embedding_size=4, hidden_size=6, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=7, max_position_embeddings=8, hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1)
rng0 = np.random.default_rng(0)
IDS = rng0.integers(5, 13, (2, 5))
TYPES = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def perturbed(shapes, seed=0):
    p = init_params(shapes, 0.02, seed, np.float64)
    r = np.random.default_rng(seed + 1)
    for k, v in p.items():
        v += r.normal(0, 0.2 if ("LayerNorm" in k or k.endswith("bias")) else 0.3, v.shape)
    return p


def assert_below(errors, tol=TOL):
    # attention key biases shift a whole softmax row: their true gradient is 0 (held in test_ops)
    bad = {k: v for k, v in errors.items() if v >= tol and not k.endswith("attention.self.key.bias")}
    assert errors and not bad, bad


def model_check(forward, backward, w, out_shape_seed=3):
    """Project the output on a fixed random dout; check backward's dict against finite differences."""
    out, cache = forward(w)
    dout = np.random.default_rng(out_shape_seed).standard_normal(out.shape)
    grads = backward(dout, cache)
    return check_function(lambda: float(np.sum(forward(w)[0] * dout)), w, grads)


def test_gelu_tanh_backward():
    assert_below(check_op(gelu_tanh_forward, gelu_tanh_backward, {"x": rng0.standard_normal((2, 5, 7)) * 2}))


def test_first_token_backward():
    def forward(h):
        return h[:, 0].copy(), h.shape

    assert_below(check_op(forward, _first_token_backward, {"h": rng0.standard_normal((2, 5, 6))}))


def test_encoder_backward():
    w = perturbed({k: s for k, s in discriminator_shapes(CFG).items() if k.startswith("electra.")})
    fwd = lambda w: encoder_forward(w, CFG, IDS, TYPES, MASK, np.random.default_rng(4))
    assert_below(model_check(fwd, encoder_backward, w))


def test_discriminator_backward():
    w = perturbed(discriminator_shapes(CFG))
    fwd = lambda w: discriminator_forward(w, CFG, IDS, TYPES, MASK, np.random.default_rng(5))
    assert_below(model_check(fwd, discriminator_backward, w))


def test_generator_backward():
    w = perturbed(generator_shapes(CFG))
    positions = np.array([1, 3, 6])  # flat indices into (B, T); the head runs only there
    fwd = lambda w: generator_forward(w, CFG, IDS, TYPES, MASK, positions, np.random.default_rng(6))
    errors = model_check(fwd, generator_backward, w)
    assert_below(errors)
    assert "electra.embeddings.word_embeddings.weight" in errors  # input path + tied output path


@pytest.mark.parametrize("head", ["official", "hf"])
def test_classifier_backward(head):
    enc = perturbed({k: s for k, s in discriminator_shapes(CFG).items() if k.startswith("electra.")})
    w = init_classifier(enc, CFG, 3, head, seed=2)
    w = {k: np.array(v, np.float64) for k, v in w.items()}
    fwd = lambda w: classifier_forward(w, CFG, IDS, TYPES, MASK, np.random.default_rng(7))
    assert_below(model_check(fwd, classifier_backward, w))


def test_kernel_softmax_dropout_backward_through_attention_core():
    """kernels.attention.softmax_dropout_backward (and its @njit _softmax_dropout_backward) in float64:
    scale, key mask with a padded key, softmax and dropout, against finite differences."""
    q, k, v = (rng0.standard_normal((2, 3, 5, 2)) for _ in range(3))
    bias = key_mask_bias(MASK, np.dtype(np.float64))[:, 0, 0]  # (B, T)

    def forward(q, k, v):
        ctx, cache = k_attention.attention_core_forward(q, k, v, bias, 0.25, np.random.default_rng(8))
        return ctx.copy(), cache

    def backward(dctx, cache):
        return tuple(g.copy() for g in k_attention.attention_core_backward(dctx, cache))

    assert_below(check_op(forward, backward, {"q": q, "k": k, "v": v}))


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_fast_step_kernels_against_finite_differences(act):
    """The whole fast step in float64, dropout on (the same seed every evaluation), fixed corruption:
    its gradient comes from the kernels' _embeddings_ln_backward, _residual_layernorm_backward,
    _bias_gelu_backward, _softmax_dropout_backward, _softmax_xent_backward and _bce_backward."""
    setup = Electra.build(CFG.replace(hidden_act=act), PretrainingConfig(generator_hidden_size=0.5))
    params = perturbed(setup.shapes())
    ids = IDS.copy()
    ids[:, 0] = 2
    batch = {"input_ids": ids, "token_type_ids": TYPES, "attention_mask": MASK}
    masked = np.zeros((2, 5), bool)
    masked[0, [1, 3]] = masked[1, 1] = True
    use_mask = masked.copy()
    use_mask[0, 3] = False
    corruption = Corruption(masked, use_mask, np.array([9, ids[0, 3], 11]))
    step = make_fast_step(setup)
    loss = lambda: float(step(params, batch, np.random.default_rng(9), corruption)[0])
    grads = {k: g.copy() for k, g in step(params, batch, np.random.default_rng(9), corruption)[2].items()}
    errors = check_function(loss, params, grads, max_entries=8)
    assert_below(errors, 1e-6)
    assert set(errors) == set(params)
