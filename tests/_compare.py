"""One comparison of a fast step's (loss, metrics, grads) with the reference's, shared by test_fast.py
(pretraining) and test_fast_classify.py (fine-tuning)."""

import numpy as np
import pytest


def assert_same_step(fast, ref, tol, grad_floor):
    """Loss, every metric and every gradient within `tol`; a gradient's error is relative to
    max(grad_floor, max |reference|)."""
    (lf, mf, gf), (lr, mr, gr) = fast, ref
    assert lf.dtype == lr.dtype and lf.shape == ()
    assert abs(float(lf) - float(lr)) <= tol * max(1.0, abs(float(lr)))
    assert mf.keys() == mr.keys()
    for k in mr:
        assert mf[k] == pytest.approx(mr[k], rel=tol, abs=tol), k
    assert gf.keys() == gr.keys()
    for k in gr:
        assert gf[k].shape == gr[k].shape and gf[k].dtype == gr[k].dtype, k
        err = float(np.abs(gf[k].astype(np.float64) - gr[k]).max()) / max(grad_floor, float(np.abs(gr[k]).max()))
        assert err <= tol, f"{k}: relative error {err:.3g}"
