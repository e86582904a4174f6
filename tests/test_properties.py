"""Property tests (hypothesis): masking rules and loss stability hold for any shape and any logits."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from electra_np.masking import choose_masked_positions
from electra_np.ops.losses import (
    binary_cross_entropy_backward,
    binary_cross_entropy_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

CLS, SEP, MASK = 2, 3, 4
SETTINGS = settings(max_examples=60, deadline=None, database=None)  # no example store from earlier runs


@SETTINGS
@given(B=st.integers(1, 6), T=st.integers(3, 40), mask_prob=st.floats(0.05, 0.5), seed=st.integers(0, 2**31))
def test_masking_rules_hold_for_any_batch(B, T, mask_prob, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, T + 1, B)
    mask = (np.arange(T) < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(2, 30, (B, T)), 0)  # some real tokens are [CLS]/[SEP]/[MASK] too
    ids[0, 1] = 9  # at least one candidate in the batch
    max_pred = max(1, int((mask_prob + 0.005) * T))
    masked = choose_masked_positions(ids, mask, (CLS, SEP, MASK), mask_prob, max_pred, rng)
    candidates = (mask == 1) & ~np.isin(ids, [CLS, SEP, MASK])
    assert not (masked & ~candidates).any()
    want = np.minimum(np.clip(np.round(mask_prob * lengths), 1, max_pred), candidates.sum(1))
    np.testing.assert_array_equal(masked.sum(1), want)


finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@SETTINGS
@given(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=5),
       st.sampled_from([np.float32, np.float64]))
def test_losses_finite_for_any_logits(rows, dtype):
    z = np.array(rows, dtype)
    labels = np.arange(len(rows)) % 3
    loss, cache = softmax_cross_entropy_forward(z, labels)
    d = softmax_cross_entropy_backward(dtype(1), cache)
    assert np.isfinite(loss) and loss >= 0 and np.isfinite(d).all() and loss.dtype == dtype
    y = (z > 0).astype(np.int64)
    y[0, 0] = 1 - y[0, 0]
    loss, cache = binary_cross_entropy_forward(z, y, np.ones_like(y))
    d = binary_cross_entropy_backward(dtype(1), cache)
    assert np.isfinite(loss) and loss >= 0 and np.isfinite(d).all() and loss.dtype == dtype
