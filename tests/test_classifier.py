"""Sequence classification heads and losses against float64 finite differences (rel. error < 1e-7), and the
whole fine-tuning loss (encoder + head) at small odd shapes with padding."""

import numpy as np
import pytest

from electra_np.classification import (
    classification_backward,
    classification_forward,
    classifier_shapes,
    head_of,
    init_classifier,
)
from electra_np.config import ElectraConfig
from electra_np.gradcheck import check_function, check_op
from electra_np.ops import classifier
from electra_np.params import discriminator_shapes, init_params

TOL = 1e-7
B, T, H, C = 3, 5, 6, 4
rng = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def as_kwargs(w):
    return {k.replace(".", "__"): v for k, v in w.items()}


def head_op(forward, backward, names, **fixed):
    """check_op wants keyword inputs: unpack the weight dict, and key the gradients the same way."""
    def fwd(h, **kw):
        w = {n: kw[n.replace(".", "__")] for n in names}
        return forward(h, w, rng=np.random.default_rng(3), **fixed)  # the same dropout mask at every call

    def bwd(dout, cache):
        dh, grads = backward(dout, cache)
        return dict(h=dh, **as_kwargs(grads))
    return fwd, bwd


def assert_below(errors, tol=TOL):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert errors and not bad, bad


def test_official_head():
    w = {"classifier.weight": rand(C, H), "classifier.bias": rand(C)}
    fwd, bwd = head_op(classifier.official_head_forward, classifier.official_head_backward, list(w), p_drop=0.3)
    errs = check_op(fwd, bwd, dict(h=rand(B, T, H), **as_kwargs(w)))
    assert_below(errs)
    assert set(errs) == {"h", "classifier__weight", "classifier__bias"}


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_hf_head(act):
    w = {"classifier.dense.weight": rand(H, H), "classifier.dense.bias": rand(H),
         "classifier.out_proj.weight": rand(C, H), "classifier.out_proj.bias": rand(C)}
    fwd, bwd = head_op(classifier.hf_head_forward, classifier.hf_head_backward, list(w), p_drop=0.3, act=act)
    errs = check_op(fwd, bwd, dict(h=rand(B, T, H), **as_kwargs(w)))
    assert_below(errs)
    assert len(errs) == 5


def test_heads_read_only_the_first_token():
    w = {"classifier.weight": rand(C, H), "classifier.bias": rand(C)}
    h = rand(B, T, H)
    logits, cache = classifier.official_head_forward(h, w, 0.0)
    np.testing.assert_allclose(logits, h[:, 0] @ w["classifier.weight"].T + w["classifier.bias"], rtol=1e-14)
    dh, _ = classifier.official_head_backward(np.ones_like(logits), cache)
    assert np.abs(dh[:, 1:]).max() == 0 and np.abs(dh[:, 0]).min() > 0


def test_mse():
    errs = check_op(classifier.mse_forward, classifier.mse_backward,
                    {"predictions": rand(B), "targets": rand(B)}, grad_names=["predictions"])
    assert_below(errs)
    loss, _ = classifier.mse_forward(np.array([1.0, 2.0]), np.array([0.0, 4.0]))
    assert loss == 2.5  # ((1)^2 + (-2)^2) / 2


CONFIG = ElectraConfig(vocab_size=23, embedding_size=4, hidden_size=H, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=7, max_position_embeddings=9, hidden_dropout_prob=0.2,
                       attention_probs_dropout_prob=0.2)


def batch():
    ids = rng.integers(5, CONFIG.vocab_size, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 3:] = 0
    mask[2, 4:] = 0
    types = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0]])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def perturbed(params):
    """Move LayerNorm weights and biases away from 1 / 0 so that their gradients are exercised."""
    return {k: v + rand(*v.shape, scale=0.1) if ("LayerNorm" in k or k.endswith(".bias")) else v * 10
            for k, v in params.items()}


@pytest.mark.parametrize("head,num_labels", [("hf", 3), ("official", 3), ("hf", 1), ("official", 1)])
def test_whole_classification_loss(head, num_labels):
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1, dtype=np.float64)
    params = perturbed(init_classifier(disc, CONFIG, num_labels, head, seed=2))
    b = batch()
    labels = rng.integers(0, num_labels, B) if num_labels > 1 else rand(B)
    loss, metrics, cache = classification_forward(params, CONFIG, b, labels, train=False)
    grads = classification_backward(cache)
    assert set(grads) == set(params) and metrics["loss"] == float(loss)
    def f():
        return float(classification_forward(params, CONFIG, b, labels, train=False)[0])
    errs = check_function(f, params, grads)
    for k in [k for k in errs if k.endswith("attention.self.key.bias")]:
        # softmax ignores the per-row shift q.b_k: the true gradient is exactly 0 and the relative error
        # compares rounding noise with rounding noise (see tests/test_ops.py), so hold it to zero instead
        del errs[k]
        assert np.abs(grads[k]).max() < 1e-12
    assert_below(errs, 1e-6)  # measured <= 1e-7; the whole-loss bound of STYLE.md is 1e-5


def test_dropout_is_reproducible_and_float32_kept():
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1)
    params = init_classifier(disc, CONFIG, 2, "hf", seed=2)
    b, labels = batch(), np.array([0, 1, 1])
    runs = [classification_forward(params, CONFIG, b, labels, rng=np.random.default_rng(7)) for _ in range(2)]
    assert runs[0][0] == runs[1][0] and runs[0][0].dtype == np.float32
    assert runs[0][0] != classification_forward(params, CONFIG, b, labels, train=False)[0]  # dropout was on
    grads = classification_backward(runs[0][2])
    assert all(g.dtype == np.float32 for g in grads.values())


def test_init_classifier_from_discriminator():
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1)
    for head, names in (("hf", {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                                "classifier.out_proj.bias"}), ("official", {"classifier.weight", "classifier.bias"})):
        params = init_classifier(disc, CONFIG, 5, head, seed=0)
        assert set(params) == set(classifier_shapes(CONFIG, 5, head))
        assert set(params) - set(disc) == names and head_of(params) == (head, 5)
        assert not any(k.startswith("discriminator_predictions") for k in params)
        word = "electra.embeddings.word_embeddings.weight"
        np.testing.assert_array_equal(params[word], disc[word])
        assert params[word] is not disc[word]  # a copy: fine-tuning never touches the pretrained dict
        bias = params["classifier.bias" if head == "official" else "classifier.out_proj.bias"]
        assert not bias.any()


def test_init_classifier_keeps_a_classifiers_head():
    """keep_head copies the head of a classifier (its layout and class count checked) instead of drawing one."""
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1)
    trained = init_classifier(disc, CONFIG, 3, "hf", seed=7)
    trained["classifier.out_proj.bias"] += 0.5
    kept = init_classifier(trained, CONFIG, 3, "hf", seed=0, keep_head=True)
    assert set(kept) == set(trained)
    for k in kept:
        np.testing.assert_array_equal(kept[k], trained[k])
        assert kept[k] is not trained[k]
    assert not np.array_equal(init_classifier(trained, CONFIG, 3, "hf", seed=0)["classifier.dense.weight"],
                              trained["classifier.dense.weight"])  # without keep_head: a fresh draw
    for head, labels in (("official", 3), ("hf", 2)):
        with pytest.raises(ValueError, match=r"head \(layout, labels\) is \('hf', 3\)"):
            init_classifier(trained, CONFIG, labels, head, keep_head=True)


def test_bad_labels_refused():
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1)
    params = init_classifier(disc, CONFIG, 3, "official")
    with pytest.raises(ValueError, match="num_labels=3"):
        classification_forward(params, CONFIG, batch(), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="shape"):
        classification_forward(params, CONFIG, batch(), np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        classification_forward(params, CONFIG, batch(), np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="missing keys"):
        classification_forward({k: v for k, v in params.items() if k != "classifier.bias"}, CONFIG, batch(), [0, 1, 2])


@pytest.mark.parametrize("head", ["hf", "official"])
def test_head_backward_matches_finite_differences(head):
    """classification.head_backward (the dispatch on the head's keys) against float64 finite differences,
    dropout on with a fixed mask, through head_forward."""
    from electra_np.classification import head_backward, head_forward, head_shapes
    w = {k: rand(*shape) for k, shape in head_shapes(CONFIG, C, head).items()}
    fwd, bwd = head_op(head_forward, head_backward, list(w), config=CONFIG, p_head=0.3)
    errs = check_op(fwd, bwd, dict(h=rand(B, T, H), **as_kwargs(w)))
    assert_below(errs)
    assert set(errs) == {"h"} | set(as_kwargs(w))


@pytest.mark.parametrize("num_labels", [1, 2, 4])
def test_loss_backward_matches_finite_differences(num_labels):
    """classification.loss_backward against float64 finite differences of loss_forward: squared error
    for C = 1, cross-entropy for C >= 2, with an upstream gradient other than 1."""
    from electra_np.classification import loss_backward, loss_forward
    labels = rand(B) if num_labels == 1 else rng.integers(0, num_labels, B)

    def fwd(logits):
        loss, _, cache = loss_forward(logits, labels)
        return loss, cache

    errs = check_op(fwd, lambda dout, cache: loss_backward(cache, dout), {"logits": rand(B, num_labels, scale=2.0)})
    assert_below(errs)
    assert set(errs) == {"logits"}


def test_first_token_backward():
    """ops/classifier.py's gather x = h[:, 0], which both heads start with: dh = dx on the first tokens, 0 elsewhere."""
    errs = check_op(lambda h: (h[:, 0].copy(), h.shape), classifier._first_token_backward, {"h": rand(B, T, H)})
    assert_below(errs)


@pytest.mark.parametrize("head", ["official", "hf"])
def test_classifier_backward(head):
    """classification.classifier_backward (encoder + head, dropout on with the same masks at every call) against
    float64 finite differences of the logits projected on a random dlogits, padding and sentence pairs included."""
    from electra_np.classification import classifier_backward, classifier_forward
    disc = init_params(discriminator_shapes(CONFIG), CONFIG.initializer_range, seed=1, dtype=np.float64)
    w = perturbed(init_classifier(disc, CONFIG, C, head, seed=2))
    b = batch()
    args = (w, CONFIG, b["input_ids"], b["token_type_ids"], b["attention_mask"])
    logits, cache = classifier_forward(*args, np.random.default_rng(7))
    dlogits = rand(*logits.shape)
    grads = classifier_backward(dlogits, cache)
    errs = check_function(lambda: float(np.sum(classifier_forward(*args, np.random.default_rng(7))[0] * dlogits)), w,
                          grads)
    assert set(errs) == set(w)
    for k in [k for k in errs if k.endswith("attention.self.key.bias")]:  # true gradient 0: see test_ops.py
        del errs[k]
        assert np.abs(grads[k]).max() < 1e-12
    assert_below(errs)
