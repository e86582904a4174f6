import numpy as np
import pytest

from electra_np.train.metrics import _ranks, accuracy, f1, matthews_corrcoef, median_over_seeds, pearson, spearman


def test_binary_metrics_by_hand():
    y = [1, 1, 0, 0, 1, 0]
    p = [1, 0, 0, 1, 1, 0]  # TP 2, FN 1, FP 1, TN 2
    assert accuracy(y, p) == 4 / 6
    assert f1(y, p) == 2 * 2 / (2 * 2 + 1 + 1)
    assert matthews_corrcoef(y, p) == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3), abs=1e-15)


def test_multiclass_mcc_by_hand():
    y = [0, 1, 2, 0, 1, 2]
    p = [0, 2, 1, 0, 0, 2]
    # C = [[2,0,0],[1,0,1],[0,1,1]], c = 3, s = 6, t = (2,2,2), p = (3,1,2)
    assert matthews_corrcoef(y, p) == pytest.approx((3 * 6 - (6 + 2 + 4)) / np.sqrt((36 - 14) * (36 - 12)), abs=1e-15)
    assert matthews_corrcoef(y, y) == 1.0


def test_degenerate_cases():
    assert matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0  # one class only
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0  # constant predictions
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere
    assert accuracy([1, 1, 1], [1, 1, 1]) == 1.0
    assert pearson([1, 2, 3], [5, 5, 5]) == 0.0
    assert spearman([2, 2, 2], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="3 entries but y_pred has 2"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="at least one example"):
        accuracy([], [])


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0, abs=1e-15)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5, abs=1e-15)
    np.testing.assert_array_equal(_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0, abs=1e-15)  # monotone, not linear
    # with ties: ranks x = (1, 2.5, 2.5, 4), y = (1, 2, 3, 4)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]), abs=1e-15)


def test_median_over_seeds():
    assert median_over_seeds([{"acc": 0.8}, {"acc": 0.9}, {"acc": 0.5}]) == {"acc": 0.8}
