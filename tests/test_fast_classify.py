"""The padded fast fine-tuning path (fast/classify.py, backend "fast-padded") against the NumPy reference
(classification.py): the same loss, metrics, logits and every gradient, with dropout on and the same seed, both
heads, classification and regression, padding and sentence pairs, float64 (1e-10) and float32; the same
refusals; workspaces reused and evicted; the whole fine-tuning loop equal on all three backends (the unpadded
"fast" too: its step is tests/test_fast_unpadded.py's); padding to a multiple of 8 changes no logit."""

import numpy as np
import pytest
from _compare import assert_same_step

from electra_np.classification import init_classifier
from electra_np.config import ElectraConfig
from electra_np.data.labelled import pad_batch
from electra_np.params import encoder_shapes, init_params
from electra_np.train.finetune import FinetuneConfig, finetune, make_classifier

CLS, SEP, PAD = 2, 3, 0


def make_config(dropout=0.1, E=8, H=12, heads=3, layers=2, act="gelu"):
    return ElectraConfig(vocab_size=31, embedding_size=E, hidden_size=H, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=20, max_position_embeddings=16,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, hidden_act=act)


def make_params(cfg, C, head, dtype, seed=0):
    enc = init_params(encoder_shapes(cfg), 0.02, seed, dtype)
    rng = np.random.default_rng(seed + 1)
    for k, p in enc.items():  # away from the near-linear regime of a fresh init
        p += rng.normal(0, 0.3, p.shape).astype(dtype)
    params = init_classifier(enc, cfg, C, head, seed)
    for k in params:
        if k.startswith("classifier"):
            params[k] += rng.normal(0, 0.3, params[k].shape).astype(dtype)
    return params


def make_batch(B=3, T=7, seed=0, pairs=True):
    rng = np.random.default_rng(seed)
    encoded = []
    for b in range(B):
        n = T if b == 0 else int(rng.integers(2, T + 1))
        ids = [CLS] + rng.integers(5, 31, n - 2).tolist() + [SEP]
        types = [0] * n
        if pairs and n >= 4:
            types[n // 2:] = [1] * (n - n // 2)
        encoded.append((ids, types))
    encoded[1] = (encoded[1][0][:1] + [encoded[1][0][1]] * 2 + encoded[1][0][3:], encoded[1][1])  # a repeated id
    return pad_batch(encoded, PAD)


def labels_for(C, B, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=B) if C == 1 else rng.integers(0, C, B)


def compare(cfg, params, batch, labels, tol, train=True, steps=1, seed=5, p_head=None):
    ref, fast = make_classifier(cfg, "numpy"), make_classifier(cfg, "fast-padded")
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(steps):
        assert_same_step(fast.step(params, batch, labels, r2, train=train, p_head=p_head),
                         ref.step(params, batch, labels, r1, train=train, p_head=p_head), tol, grad_floor=1.0)
    assert r1.random() == r2.random()  # the same number of draws from rng
    np.testing.assert_allclose(fast.logits(params, batch), ref.logits(params, batch), rtol=tol, atol=tol)


@pytest.mark.parametrize("head", ["official", "hf"])
@pytest.mark.parametrize("C", [1, 2, 3])
def test_fast_step_equals_reference_float64_with_dropout(head, C):
    cfg = make_config()
    params, batch = make_params(cfg, C, head, np.float64), make_batch()
    compare(cfg, params, batch, labels_for(C, 3), 1e-10, steps=2)


@pytest.mark.parametrize("head", ["official", "hf"])
def test_a_head_dropout_of_its_own_is_the_same_on_both_paths(head):
    """p_head (Hugging Face's classifier_dropout) reaches the head on both paths, and changes the step."""
    cfg = make_config()
    params, batch, labels = make_params(cfg, 3, head, np.float64), make_batch(), labels_for(3, 3)
    compare(cfg, params, batch, labels, 1e-10, steps=2, p_head=0.6)
    losses = [float(make_classifier(cfg, "fast-padded").step(params, batch, labels, np.random.default_rng(5), p_head=p)[0])
              for p in (None, 0.6)]
    assert losses[0] != losses[1]


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_fast_step_equals_reference_without_projection_and_dropout_off(act):
    cfg = make_config(dropout=0.0, E=12, act=act)  # E == H: no embeddings_project
    params, batch = make_params(cfg, 2, "hf", np.float64), make_batch(B=2, T=1 + 4, pairs=False)
    compare(cfg, params, batch, labels_for(2, 2), 1e-10)
    compare(cfg, params, batch, labels_for(2, 2), 1e-10, train=False)


def test_fast_step_equals_reference_float32():
    cfg = make_config()
    params, batch = make_params(cfg, 3, "official", np.float32), make_batch(B=4, T=9)
    compare(cfg, params, batch, labels_for(3, 4), 2e-4, steps=2)


def test_workspaces_are_reused_and_evicted():
    cfg = make_config()
    params = make_params(cfg, 2, "official", np.float64)
    fast, ref = make_classifier(cfg, "fast-padded"), make_classifier(cfg, "numpy")
    fast.max_workspaces = 2
    for T in (5, 7, 5, 9, 7, 5):  # shapes come and go; every result still equals the reference
        batch = make_batch(B=3, T=T, seed=T)
        y = labels_for(2, 3, seed=T)
        _, _, gf = fast.step(params, batch, y, np.random.default_rng(0))
        _, _, gr = ref.step(params, batch, y, np.random.default_rng(0))
        for k in gr:
            np.testing.assert_allclose(gf[k], gr[k], rtol=1e-10, atol=1e-12, err_msg=k)
        assert len(fast.workspaces) <= 2
    assert [k[1] for k in fast.workspaces] == [7, 5]  # the two most recent shapes, oldest first


def test_padding_to_a_multiple_of_8_changes_no_logit():
    cfg = make_config()
    params = make_params(cfg, 3, "hf", np.float64)
    encoded = [([CLS, 7, 8, 9, SEP], [0] * 5), ([CLS, 11, SEP], [0] * 3)]
    tight, padded = pad_batch(encoded, PAD), pad_batch(encoded, PAD, multiple=8)
    assert tight["input_ids"].shape == (2, 5) and padded["input_ids"].shape == (2, 8)
    assert pad_batch(encoded, PAD, multiple=8, max_len=6)["input_ids"].shape == (2, 6)  # not past the positions
    assert pad_batch(encoded, PAD, multiple=8, max_len=4)["input_ids"].shape == (2, 5)  # never cuts a sequence
    for backend in ("numpy", "fast-padded", "fast"):
        clf = make_classifier(cfg, backend)
        np.testing.assert_allclose(clf.logits(params, padded), clf.logits(params, tight), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad, message", [
    (lambda b, y, p: ({**b, "input_ids": b["input_ids"] + 100}, y, p), "outside [0, vocab_size=31)"),
    (lambda b, y, p: (b, y + 5, p), "class labels must be in [0, num_labels=3)"),
    (lambda b, y, p: (b, y[:2], p), "labels must have shape (B,)"),
    (lambda b, y, p: ({**b, "attention_mask": b["attention_mask"] * 2}, y, p), "attention_mask must hold only 0"),
    (lambda b, y, p: (b, y, {k: v for k, v in p.items() if k != "classifier.bias"}), "classifier.bias"),
])
def test_fast_refuses_what_the_reference_refuses_with_the_same_message(bad, message):
    cfg = make_config()
    b, y, p = bad(make_batch(), labels_for(3, 3), make_params(cfg, 3, "official", np.float64))
    errors = []
    for backend in ("numpy", "fast-padded", "fast"):
        with pytest.raises((ValueError, KeyError)) as e:
            make_classifier(cfg, backend).step(p, b, y, np.random.default_rng(0))
        errors.append(str(e.value))
    assert errors[0] == errors[1] == errors[2] and message in errors[0]


def finetune_data():
    rng = np.random.default_rng(0)
    data = []
    for n in (48, 16):
        ex = [([CLS] + rng.integers(5, 31, rng.integers(2, 12)).tolist() + [SEP],) for _ in range(n)]
        ex = [(ids, [0] * len(ids)) for (ids,) in ex]
        data.append((ex, np.array([int(7 in ids) for ids, _ in ex])))
    return data


def test_finetune_loop_is_the_same_on_all_backends():
    """Three epochs of the official recipe (layer-wise decay, warmup, clipping, dropout, length buckets of 4):
    the same history on the reference, the padded and the unpadded fast path."""
    cfg = make_config()
    enc = {k: v for k, v in make_params(cfg, 2, "official", np.float64).items() if k.startswith("electra.")}
    data = finetune_data()
    out = {}
    for backend in ("numpy", "fast-padded", "fast"):
        for head_dropout in (None, 0.5):
            fc = FinetuneConfig(learning_rate=1e-3, epochs=3, batch_size=8, seed=3, backend=backend, clip_norm=0.5,
                                head_dropout=head_dropout, bucket_width=4)
            out[backend, head_dropout] = finetune(enc, cfg, 2, data[0], data[1], fc, PAD, log=lambda s: None)
    for backend in ("fast-padded", "fast"):
        for head_dropout in (None, 0.5):
            (pr, hr), (pf, hf) = out["numpy", head_dropout], out[backend, head_dropout]
            for a, b in zip(hr, hf):
                assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
                assert a["accuracy"] == b["accuracy"]
            for k in pr:
                np.testing.assert_allclose(pf[k], pr[k], rtol=1e-7, atol=1e-10, err_msg=(backend, k))
    assert out["fast", None][1][0]["train_loss"] != out["fast", 0.5][1][0]["train_loss"]  # fc.head_dropout is used


def test_unpadded_finetune_same_seed_same_numbers():
    """The default (unpadded) path, float32: the same seed gives bit-identical histories and parameters (the
    batch order is the seed's and the epoch's, buckets.train_batches); another seed gives other numbers."""
    cfg = make_config()
    enc = {k: v.astype(np.float32) for k, v in make_params(cfg, 2, "official", np.float64).items()
           if k.startswith("electra.")}
    data = finetune_data()
    runs = []
    for seed in (4, 4, 5):
        fc = FinetuneConfig(learning_rate=1e-3, epochs=2, batch_size=8, seed=seed, bucket_width=4)
        runs.append(finetune(enc, cfg, 2, data[0], data[1], fc, PAD, log=lambda s: None))
    (p0, h0), (p1, h1), (p2, h2) = runs
    assert [(h["train_loss"], h["accuracy"]) for h in h0] == [(h["train_loss"], h["accuracy"]) for h in h1]
    assert all(np.array_equal(p0[k], p1[k]) for k in p0) and p0["classifier.weight"].dtype == np.float32
    assert h2[0]["train_loss"] != h0[0]["train_loss"]


def test_rounding_up_never_passes_max_position_embeddings():
    """max_position_embeddings 12 and an 11-token example: T rounds to 12, not 16 (which check_batch refuses)."""
    from electra_np.train.finetune import predict_logits

    cfg = ElectraConfig(vocab_size=31, embedding_size=8, hidden_size=12, num_hidden_layers=1, num_attention_heads=3,
                        intermediate_size=20, max_position_embeddings=12)
    params = make_params(cfg, 2, "official", np.float64)
    encoded = [([CLS] + list(range(5, 14)) + [SEP], [0] * 11), ([CLS, 7, SEP], [0] * 3)]
    for backend in ("numpy", "fast-padded", "fast"):
        logits = predict_logits(params, cfg, encoded, 2, PAD, backend)
        np.testing.assert_allclose(logits, make_classifier(cfg, "numpy").logits(params, pad_batch(encoded, PAD)),
                                   rtol=1e-12, atol=1e-14)


def test_fast_falls_back_to_the_padded_classifier_with_one_note(monkeypatch):
    """Where the unpadded attention cannot run (no OpenBLAS gemm for the dtype), "fast" is the padded classifier,
    and one note line says so; "fast-padded" is always the padded one, without a note."""
    from electra_np.fast.classify import FastClassifier
    from electra_np.fast.kernels import varlen_attention
    from electra_np.fast.unpadded import FastUnpaddedClassifier

    cfg, notes = make_config(), []
    assert type(make_classifier(cfg, "fast", np.float64, notes.append)) is FastUnpaddedClassifier
    assert type(make_classifier(cfg, "fast-padded", np.float64, notes.append)) is FastClassifier and notes == []
    monkeypatch.setattr(varlen_attention, "available", lambda dtype: False)
    assert type(make_classifier(cfg, "fast", np.float32, notes.append)) is FastClassifier
    assert len(notes) == 1 and "fast-padded" in notes[0] and "float32" in notes[0]
