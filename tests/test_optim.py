import numpy as np
import pytest

from electra_np.optim import AdamW, clip_by_global_norm, global_norm, learning_rate


def test_adamw_matches_the_official_update_by_hand():
    p = {"w": np.array([1.0, -2.0]), "LayerNorm.weight": np.array([1.0]), "b.bias": np.array([0.5])}
    g = {"w": np.array([0.1, 0.2]), "LayerNorm.weight": np.array([0.3]), "b.bias": np.array([-0.4])}
    opt = AdamW(p, weight_decay=0.01)
    opt.update(p, g, lr=0.1)
    # m = 0.1 g, v = 0.001 g^2, update = m / (sqrt(v) + 1e-6) (+ 0.01 p for decayed weights)
    for k, p0 in (("w", np.array([1.0, -2.0])), ("LayerNorm.weight", np.array([1.0])), ("b.bias", np.array([0.5]))):
        upd = 0.1 * g[k] / (np.sqrt(0.001 * g[k] ** 2) + 1e-6)
        if k == "w":
            upd = upd + 0.01 * p0
        np.testing.assert_allclose(p[k], p0 - 0.1 * upd, rtol=1e-14)
    assert opt.t == 1


def test_adamw_bias_correction_switch():
    p = {"w": np.array([1.0])}
    opt = AdamW(p, weight_decay=0.0, bias_correction=True)
    opt.update(p, {"w": np.array([0.5])}, lr=0.1)
    np.testing.assert_allclose(p["w"], 1.0 - 0.1 * 0.5 / (0.5 + 1e-6), rtol=1e-12)  # m_hat = g, v_hat = g^2


def test_adamw_state_round_trip():
    p = {"w": np.ones(3, np.float32)}
    opt = AdamW(p)
    opt.update(p, {"w": np.arange(3, dtype=np.float32)}, 0.1)
    opt2 = AdamW({"w": np.ones(3, np.float32)})
    opt2.load_state_dict(opt.state_dict())
    assert opt2.t == 1 and np.array_equal(opt2.m["w"], opt.m["w"]) and np.array_equal(opt2.v["w"], opt.v["w"])


def test_clip_by_global_norm():
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    clipped, norm = clip_by_global_norm(g, 1.0)
    assert norm == 5.0 and abs(global_norm(clipped) - 1.0) < 1e-15
    np.testing.assert_allclose(clipped["a"], [0.6])
    same, norm = clip_by_global_norm({"a": np.array([0.3])}, 1.0)
    assert same["a"][0] == 0.3 and norm == 0.3
    assert g["a"][0] == 3.0  # input not modified


def test_global_norm_accumulates_in_float64_across_chunks():
    """optim.global_norm squares a chunk at a time: a float32 tensor spanning several chunks (and a
    partial last one), a transposed view and an empty tensor give the float64 norm of everything."""
    from electra_np.optim import NORM_CHUNK
    rng = np.random.default_rng(0)
    big = (rng.standard_normal(2 * NORM_CHUNK + 17) * 1e3).astype(np.float32)
    view = rng.standard_normal((40, 30)).astype(np.float32).T
    grads = {"big": big, "view": view, "empty": np.zeros((0, 3), np.float32), "one": np.array([2.5])}
    want = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert abs(global_norm(grads) - want) <= 1e-14 * want


def test_learning_rate_is_warmup_times_linear_decay():
    assert learning_rate(0, 1e-3, 10, 100) == 0.0
    assert learning_rate(5, 1e-3, 10, 100) == pytest.approx(1e-3 * 0.95 * 0.5)
    assert learning_rate(10, 1e-3, 10, 100) == pytest.approx(1e-3 * 0.9)
    assert learning_rate(100, 1e-3, 10, 100) == 0.0
    assert learning_rate(7, 1e-3, 0, 100) == pytest.approx(1e-3 * 0.93)


def test_clip_in_place_gives_the_same_bits():
    g = {"a": np.array([3.0, 1.0], np.float32), "b": np.array([4.0], np.float32)}
    copy, n1 = clip_by_global_norm(g, 1.0)
    ids = {k: id(v) for k, v in g.items()}
    same, n2 = clip_by_global_norm(g, 1.0, inplace=True)
    assert n1 == n2 and same is g and {k: id(v) for k, v in same.items()} == ids
    for k in g:
        np.testing.assert_array_equal(same[k], copy[k])
