"""Evaluation metrics for fine-tuning, as GLUE reports them (accuracy, F1, Matthews correlation for
CoLA, Pearson and Spearman for STS-B), the paper's protocol of the median over fine-tuning seeds, and
ROC AUC (the discriminator's detection of replaced tokens, diagnostics.py).

Degenerate inputs follow scikit-learn's conventions instead of returning NaN: a metric whose
denominator is zero (one class only, constant predictions, constant targets) is 0.0.
"""

import numpy as np


def _labels(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} entries but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("metrics need at least one example")
    return y_true, y_pred


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def f1(y_true, y_pred, positive=1) -> float:
    """Binary F1 of the positive class: 2 TP / (2 TP + FP + FN)."""
    y_true, y_pred = _labels(y_true, y_pred)
    tp = np.sum((y_pred == positive) & (y_true == positive))
    fp = np.sum((y_pred == positive) & (y_true != positive))
    fn = np.sum((y_pred != positive) & (y_true == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews_corrcoef(y_true, y_pred) -> float:
    """Multi-class Matthews correlation (Gorodkin 2004), from the confusion matrix C:
    (c s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c = trace C, s = number of samples."""
    y_true, y_pred = _labels(y_true, y_pred)
    classes, inv = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = inv[: y_true.size], inv[y_true.size:]
    C = np.zeros((len(classes), len(classes)), np.float64)
    np.add.at(C, (t, p), 1)
    t_k, p_k, c, s = C.sum(1), C.sum(0), np.trace(C), C.sum()
    denom = np.sqrt((s * s - p_k @ p_k) * (s * s - t_k @ t_k))
    return float((c * s - t_k @ p_k) / denom) if denom > 0 else 0.0


def pearson(x, y) -> float:
    x, y = (np.asarray(a, np.float64).reshape(-1) for a in _labels(x, y))
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    return float(xc @ yc / denom) if denom > 0 else 0.0


def _ranks(a):
    """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata)."""
    a = np.asarray(a, np.float64)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_a)) + 1]
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    x, y = _labels(x, y)
    return pearson(_ranks(x), _ranks(y))


def roc_auc(y_true, scores) -> float | None:
    """Area under the ROC curve of `scores` for binary labels (nonzero: positive): the chance that a random
    positive scores above a random negative, a tie counting one half. Computed as the Mann-Whitney statistic
    (R_pos - P (P + 1) / 2) / (P N), R_pos the sum of the positives' ranks among all scores, ties given their
    average rank; equals scikit-learn's roc_auc_score. None when a class is absent (no curve to measure)."""
    y_true, scores = _labels(y_true, scores)
    positive = y_true != 0
    P = int(positive.sum())
    N = positive.size - P
    if P == 0 or N == 0:
        return None
    return float((_ranks(scores)[positive].sum() - P * (P + 1) / 2) / (P * N))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman}


def median_over_seeds(results: list[dict]) -> dict:
    """The paper's protocol (Clark et al. 2020, Section 3.1): fine-tune with several seeds, report the median.
    results: list of {metric: value} dicts, one per seed. Returns {metric: median}."""
    if not results:
        raise ValueError("median_over_seeds needs at least one result")
    return {k: float(np.median([r[k] for r in results])) for k in results[0]}
