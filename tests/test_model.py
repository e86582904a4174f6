"""The whole ELECTRA objective: gradients of the joint loss, masking rules, learning, determinism, dtypes."""

import numpy as np
import pytest

from electra_np.config import ElectraConfig, PretrainingConfig
from electra_np.gradcheck import check_electra, check_function
from electra_np.masking import Corruption, choose_masked_positions, corrupt, positions_from_indices
from electra_np.model import (
    Electra,
    discriminator_backward,
    discriminator_forward,
    electra_backward,
    electra_forward,
    encoder_backward,
    encoder_forward,
    generator_backward,
    generator_forward,
)
from electra_np.optim import AdamW
from electra_np.params import SHARED_KEYS, WORD, generator_params, sub

CLS, SEP, MASK, PAD = 2, 3, 4, 0


def small_setup(objective="electra", E=4, H=6, vocab=17, layers=2, heads=3, dropout=0.0):
    cfg = ElectraConfig(vocab_size=vocab, embedding_size=E, hidden_size=H, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=7, max_position_embeddings=9,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return Electra.build(cfg, PretrainingConfig(generator_hidden_size=0.5, objective=objective))


def perturbed_params(setup, seed=0, dtype=np.float64):
    """Init as HF does, then move LayerNorms and biases off 1/0 and grow the weights, so every term matters."""
    params = setup.init_params(seed, dtype)
    rng = np.random.default_rng(seed + 1)
    for k, p in params.items():
        if "LayerNorm" in k or k.endswith("bias"):
            p += rng.normal(0, 0.2, p.shape)
        else:
            p *= 20
    return params


def padded_batch(B=2, T=5, vocab=17, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (B, T))
    ids[:, 0] = CLS
    ids[0, -1] = SEP
    ids[1, 2] = SEP
    ids[1, 3:] = PAD
    mask = (np.arange(T) < np.array([[T], [3]])).astype(np.int64)
    types = np.zeros((B, T), np.int64)
    types[0, 3:] = 1
    ids[0, 2] = ids[0, 1]  # a repeated id: its embedding gradient must accumulate
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def fixed_corruption(batch, samples):
    masked = np.zeros(batch["input_ids"].shape, bool)
    masked[0, [1, 3]] = True
    masked[1, 1] = True
    use_mask = masked.copy()
    use_mask[0, 3] = False  # one chosen position keeps its token
    return Corruption(masked, use_mask, *(() if samples is None else (np.array(samples), np.argwhere(masked))))


@pytest.mark.parametrize("objective", ["electra", "mlm"])
def test_whole_loss_gradient(objective):
    setup = small_setup(objective)
    params = perturbed_params(setup)
    batch = padded_batch()
    # samples: one wrong guess, one correct guess (counts as original), one wrong guess
    corruption = fixed_corruption(batch, [9, batch["input_ids"][0, 3], 11])
    errors = check_electra(setup, params, batch, corruption)
    assert set(errors) == set(params)
    # key biases shift a whole softmax row: their true gradient is 0 and the ratio compares rounding noise
    key_bias = [k for k in errors if k.endswith("attention.self.key.bias")]
    errors = {k: v for k, v in errors.items() if k not in key_bias}
    assert max(errors.values()) < 1e-5, {k: v for k, v in errors.items() if v >= 1e-5}
    grads = electra_backward(electra_forward(params, setup, batch, corruption=corruption, train=False)[2], setup)
    assert key_bias and all(np.abs(grads[k]).max() < 1e-10 for k in key_bias)
    if objective == "electra":
        assert all(f"discriminator.{k}" in errors for k in SHARED_KEYS)


def test_shared_embeddings_receive_gradient_from_all_three_paths():
    setup = small_setup()
    params = perturbed_params(setup)
    batch = padded_batch()
    corruption = fixed_corruption(batch, [9, 10, 11])
    loss, metrics, cache = electra_forward(params, setup, batch, corruption=corruption, train=False)
    grads = electra_backward(cache, setup)
    word = "electra.embeddings.word_embeddings.weight"
    total = grads[f"discriminator.{word}"]
    # the discriminator alone, and the generator alone (MLM loss with disc_weight 0)
    no_disc = Electra(setup.disc, setup.gen, PretrainingConfig(generator_hidden_size=0.5, disc_weight=0.0))
    g_gen = electra_backward(electra_forward(params, no_disc, batch, corruption=corruption, train=False)[2], no_disc)
    g_disc_only = total - g_gen[f"discriminator.{word}"]
    # the generator's output projection touches every row; only input rows see the discriminator
    assert np.abs(g_gen[f"discriminator.{word}"][16]).max() > 0  # id 16: not in the batch, output path only
    assert np.abs(g_disc_only[16]).max() == 0
    assert np.abs(g_disc_only[9]).max() > 0  # a sampled replacement: discriminator input only
    assert "generator.electra.embeddings.word_embeddings.weight" not in grads
    assert "generator.electra.embeddings_project.weight" in grads  # each model keeps its own projection


def test_metrics_and_labels():
    setup = small_setup()
    params = perturbed_params(setup)
    batch = padded_batch()
    correct = batch["input_ids"][0, 3]
    loss, m, cache = electra_forward(params, setup, batch, corruption=fixed_corruption(batch, [9, correct, 11]), train=False)
    np.testing.assert_array_equal(np.argwhere(cache["labels"]), [[0, 1], [1, 1]])  # the correct guess is "original"
    assert abs(m["replaced_frac"] - 2 / 8) < 1e-15 and abs(m["disc_baseline_acc"] - 6 / 8) < 1e-15
    assert abs(m["loss"] - (m["mlm_loss"] + 50 * m["disc_loss"])) < 1e-12


def test_no_gradient_through_samples_and_inputs_unchanged():
    setup = small_setup()
    params = perturbed_params(setup)
    batch = padded_batch()
    corr = fixed_corruption(batch, None)
    snapshot = {k: v.copy() for k, v in batch.items()}
    p_snapshot = {k: v.copy() for k, v in params.items()}
    loss, m, cache = electra_forward(params, setup, batch, rng=np.random.default_rng(0), corruption=corr, train=True)
    electra_backward(cache, setup)
    assert corr.samples is None  # the caller's corruption is not modified
    assert cache["corruption"].samples.shape == (3,)
    for k in batch:
        np.testing.assert_array_equal(batch[k], snapshot[k])
    for k in params:
        np.testing.assert_array_equal(params[k], p_snapshot[k])


# ----------------------------------------------------------------------------- masking

def test_masking_counts_exclusions_and_no_duplicates():
    rng = np.random.default_rng(0)
    B, T = 64, 40
    ids = rng.integers(5, 100, (B, T))
    lengths = rng.integers(3, T + 1, B)
    mask = (np.arange(T) < lengths[:, None]).astype(np.int64)
    ids[:, 0] = CLS
    ids[np.arange(B), lengths - 1] = SEP
    ids[:, 5] = MASK
    ids[mask == 0] = PAD
    max_pred = int((0.15 + 0.005) * T)
    for _ in range(20):
        masked = choose_masked_positions(ids, mask, (CLS, SEP, MASK), 0.15, max_pred, rng)
        assert not masked[mask == 0].any()
        assert not np.isin(ids[masked], [CLS, SEP, MASK]).any()
        candidates = ((mask == 1) & ~np.isin(ids, [CLS, SEP, MASK])).sum(1)
        expected = np.minimum(np.clip(np.round(0.15 * lengths), 1, max_pred), candidates)
        np.testing.assert_array_equal(masked.sum(1), expected)


def test_masking_85_15_split_and_uniform_positions():
    rng = np.random.default_rng(1)
    B, T = 256, 128
    ids = rng.integers(5, 1000, (B, T))
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = np.ones((B, T), np.int64)
    n_masked = n_mask_token = 0
    hits = np.zeros(T)
    for _ in range(10):
        c = corrupt(ids, mask, (CLS, SEP, MASK), 0.15, int(0.155 * T), 0.85, rng)
        n_masked += c.masked.sum()
        n_mask_token += c.use_mask_token.sum()
        hits += c.masked.sum(0)
    share = n_mask_token / n_masked
    assert abs(share - 0.85) < 0.01, share  # 48,640 draws: 3 sigma is 0.005
    assert hits[0] == hits[-1] == 0
    assert hits[1:-1].min() > 0.6 * hits[1:-1].mean()
    assert n_masked == 10 * B * round(0.15 * T)


def test_masking_a_row_without_candidates_gets_none_but_an_empty_batch_is_refused():
    ids = np.array([[CLS, SEP, PAD], [CLS, 9, SEP]])
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    masked = choose_masked_positions(ids, mask, (CLS, SEP, MASK), 0.15, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(masked, [[False, False, False], [False, True, False]])
    with pytest.raises(ValueError, match="no maskable token"):
        choose_masked_positions(ids[:1], mask[:1], (CLS, SEP, MASK), 0.15, 5, np.random.default_rng(0))


def test_explicit_positions():
    np.testing.assert_array_equal(positions_from_indices([[0, 1], [1, 2]], 2, 3), [[0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="outside the batch shape"):
        positions_from_indices([[0, 3]], 2, 3)
    with pytest.raises(ValueError, match="duplicates"):
        positions_from_indices([[0, 1], [0, 1]], 2, 3)
    setup = small_setup()
    params = setup.init_params(0)
    batch = padded_batch()
    bad = np.zeros((2, 5), bool)
    bad[1, 4] = True
    with pytest.raises(ValueError, match=r"padding position \(batch 1, position 4\)"):
        electra_forward(params, setup, batch, corruption=Corruption(bad, bad, np.array([7])))
    good = fixed_corruption(batch, None)
    good.samples = np.array([1, 2])  # set after construction: the forward pass itself must count them
    with pytest.raises(ValueError, match="3 integers"):
        electra_forward(params, setup, batch, corruption=good)
    with pytest.raises(ValueError, match="samples holds a token id outside"):
        electra_forward(params, setup, batch, corruption=fixed_corruption(batch, [1, 2, 17]))


# ----------------------------------------------------------------------------- learning, determinism, dtypes

def test_tiny_model_overfits_one_batch():
    cfg = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    setup = Electra.build(cfg, PretrainingConfig(generator_hidden_size=0.5))
    params = setup.init_params(0, np.float32)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, (4, 16))
    ids[:, 0], ids[:, -1] = CLS, SEP
    batch = {"input_ids": ids}
    corruption = corrupt(ids, np.ones_like(ids), setup.excluded_ids, 0.15, 2, 0.85, rng)
    opt = AdamW(params, weight_decay=0.0)
    losses = []
    for step in range(200):
        # fixed positions, fresh samples: the generator learns the batch, the discriminator its replacements
        loss, m, cache = electra_forward(params, setup, batch, rng=rng, corruption=corruption)
        losses.append(float(loss))
        opt.update(params, electra_backward(cache, setup), 3e-3)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def run_steps(dtype, seed=3, steps=3):
    setup = small_setup(dropout=0.1)
    params = setup.init_params(seed, dtype)
    opt = AdamW(params)
    rng = np.random.default_rng(seed)
    batch = padded_batch()
    out = []
    for _ in range(steps):
        loss, m, cache = electra_forward(params, setup, batch, rng=rng)
        grads = electra_backward(cache, setup)
        assert loss.dtype == dtype and all(g.dtype == dtype for g in grads.values())
        opt.update(params, grads, 1e-2)
        out.append(loss.item())
    return out, params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_bit_identical(dtype):
    a, pa = run_steps(dtype)
    b, pb = run_steps(dtype)
    assert a == b
    assert all(np.array_equal(pa[k], pb[k]) and pa[k].dtype == dtype for k in pa)
    assert np.isfinite(a).all()


def test_float32_matches_float64():
    setup = small_setup()
    p64 = perturbed_params(setup)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    batch = padded_batch()
    corr = fixed_corruption(batch, [9, 10, 11])
    l64 = electra_forward(p64, setup, batch, corruption=corr, train=False)[0]
    l32 = electra_forward(p32, setup, batch, corruption=corr, train=False)[0]
    assert l32.dtype == np.float32 and abs(float(l32) - float(l64)) < 1e-4 * abs(float(l64))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(input_ids=np.where(b["input_ids"] == 9, 17, b["input_ids"]) if (b["input_ids"] == 9).any()
                        else b["input_ids"] + 17), r"token id \d+, outside \[0, vocab_size=17\)"),
    (lambda b: b.update(input_ids=-b["input_ids"]), r"token id -\d+, outside"),
    (lambda b: b.update(input_ids=b["input_ids"].astype(float)), "input_ids must hold integers"),
    (lambda b: b.update(attention_mask=b["attention_mask"][:, :4]), r"attention_mask has shape \(2, 4\), expected"),
    (lambda b: b.update(token_type_ids=b["token_type_ids"][:1]), r"token_type_ids has shape \(1, 5\), expected"),
    (lambda b: b.update(token_type_ids=b["token_type_ids"] + 2), r"token_type_ids holds 3, outside \[0, type_vocab_size=2\)"),
    (lambda b: b.update(**{k: np.tile(v, (1, 2)) for k, v in b.items()}), "T=10 exceeds max_position_embeddings=9"),
    (lambda b: b.update(input_ids=np.where(b["attention_mask"] == 1, CLS, 0)), "no maskable token"),
])
def test_bad_batches(change, message):
    setup = small_setup()
    params = setup.init_params(0)
    batch = padded_batch()
    change(batch)
    with pytest.raises(ValueError, match=message):
        electra_forward(params, setup, batch, rng=np.random.default_rng(0))


def test_bad_params_listed_all_at_once():
    setup = small_setup()
    params = setup.init_params(0)
    del params["discriminator.electra.encoder.layer.0.attention.self.query.weight"]
    del params["generator.generator_lm_head.bias"]
    params["discriminator.discriminator_predictions.dense.weight"] = np.zeros((3, 3), np.float32)
    params["discriminator.extra"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError) as e:
        electra_forward(params, setup, padded_batch(), rng=np.random.default_rng(0))
    msg = str(e.value)
    for s in ("missing keys (2)", "layer.0.attention.self.query.weight", "generator_lm_head.bias",
              "unexpected keys (1): discriminator.extra", "wrong shapes (1)", "got (3, 3), expected (6, 6)"):
        assert s in msg, msg


def test_encoder_hidden_states_and_generator_view():
    setup = small_setup()
    params = setup.init_params(0)
    gen = generator_params(params)
    for k in SHARED_KEYS:
        assert gen[k] is params[f"discriminator.{k}"]  # a view, not a copy
    b = padded_batch()
    h, cache = encoder_forward(gen, setup.gen, b["input_ids"], b["token_type_ids"], b["attention_mask"])
    assert h.shape == (2, 5, 3) and len(cache["hidden_states"]) == setup.gen.num_hidden_layers + 1


def test_gumbel_max_samples_follow_the_softmax():
    from electra_np.masking import gumbel_sample

    logits = np.log(np.array([[0.5, 0.3, 0.2, 1e-12]] * 20000, np.float32))
    for temperature, want in ((1.0, [0.5, 0.3, 0.2, 0.0]), (2.0, np.sqrt([0.5, 0.3, 0.2, 1e-12]) / np.sqrt([0.5, 0.3, 0.2, 1e-12]).sum())):
        s = gumbel_sample(logits, temperature, np.random.default_rng(0))
        freq = np.bincount(s, minlength=4) / len(s)
        np.testing.assert_allclose(freq, want, atol=0.012)  # 20,000 draws: 3 sigma is about 0.01


# ----------------------------------------------------------------------------- each model's backward

def model_check(forward, backward, w, seed=3):
    """forward(w) -> (out, cache) with dropout on (the same masks at every call); backward(dout, cache) -> the
    gradient dict of w. Projects the output on a fixed random dout and checks the dict against float64 finite
    differences (rel. error < 1e-7). The attention key biases are held to 0 instead (see test_whole_loss_gradient)."""
    out, cache = forward(w)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    grads = backward(dout, cache)
    errors = check_function(lambda: float(np.sum(forward(w)[0] * dout)), w, grads)
    assert set(errors) == set(w)
    key_bias = [k for k in errors if k.endswith("attention.self.key.bias")]
    assert key_bias and all(np.abs(grads[k]).max() < 1e-10 for k in key_bias)
    bad = {k: v for k, v in errors.items() if v >= 1e-7 and k not in key_bias}
    assert not bad, bad
    return errors


def model_inputs():
    setup = small_setup(dropout=0.1)
    b = padded_batch()
    return setup, perturbed_params(setup), (b["input_ids"], b["token_type_ids"], b["attention_mask"])


def test_encoder_backward():
    setup, params, inputs = model_inputs()
    w = {k: v for k, v in sub(params, "discriminator.").items() if k.startswith("electra.")}
    model_check(lambda w: encoder_forward(w, setup.disc, *inputs, np.random.default_rng(4)), encoder_backward, w)


def test_discriminator_backward():
    setup, params, inputs = model_inputs()
    model_check(lambda w: discriminator_forward(w, setup.disc, *inputs, np.random.default_rng(5)),
                discriminator_backward, sub(params, "discriminator."))


def test_generator_backward():
    """The head runs at the flat positions only; the word embeddings get the input path and the tied output path."""
    setup, params, inputs = model_inputs()
    positions = np.array([1, 3, 6])  # flat indices into (B, T)
    errors = model_check(lambda w: generator_forward(w, setup.gen, *inputs, positions, np.random.default_rng(6)),
                         generator_backward, generator_params(params))
    assert WORD in errors
