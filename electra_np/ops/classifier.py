"""Sequence classification heads on the encoder's output, and the regression loss.

Both heads read only the first token's vector h[:, 0] (the [CLS] position), as both implementations do:

Official head (google-research/electra finetune/classification/classification_tasks.py; the pooled output
is `sequence_output[:, 0]`, model/modeling.py, no tanh pooler):
    logits = dropout(h[:, 0]) W^T + b
    params "classifier.weight" (C, H), "classifier.bias" (C,)
Hugging Face `ElectraClassificationHead` (ElectraForSequenceClassification):
    x = dropout(h[:, 0]);  logits = dropout(gelu(x W_d^T + b_d)) W_o^T + b_o
    params "classifier.dense.weight" (H, H), ".bias" (H,), "classifier.out_proj.weight" (C, H), ".bias" (C,)
HF hard-codes "gelu" (exact erf) here whatever config.hidden_act says; `act` defaults to it.

Losses: softmax cross-entropy for C >= 2 classes is ops/losses.py's (mean over the batch, as both
implementations); regression (C == 1, e.g. STS-B) is the mean squared error below.
"""

import numpy as np
from numpy.typing import ArrayLike

from .activations import activation_backward, activation_forward
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward

OFFICIAL_HEAD_DROPOUT = 0.1  # classification_tasks.py: tf.nn.dropout(reprs, keep_prob=0.9), whatever the config says


def _first_token_backward(dx: np.ndarray, h_shape: tuple[int, ...]) -> np.ndarray:
    """Forward took x = h[:, 0], so dh is zero everywhere except dh[:, 0] = dx."""
    dh = np.zeros(h_shape, dtype=dx.dtype)  # (B, T, H)
    dh[:, 0] = dx
    return dh


def official_head_forward(h: np.ndarray, w: dict[str, np.ndarray], p_drop: float,
                          rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple]:
    """Inputs:  h (B, T, H) encoder output; w with "classifier.weight" (C, H), "classifier.bias" (C,); p_drop;
             rng (dropout on when given)
    Returns: logits (B, C), cache
    """
    x, drop = dropout_forward(h[:, 0], p_drop, rng)  # (B, H)
    logits, lin = linear_forward(x, w["classifier.weight"], w["classifier.bias"])  # (B, C)
    return logits, (h.shape, drop, lin)


def official_head_backward(dlogits: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns: dh (B, T, H), grads dict with the keys of `w`."""
    h_shape, drop, lin = cache
    grads = {}
    dx, grads["classifier.weight"], grads["classifier.bias"] = linear_backward(dlogits, lin)
    return _first_token_backward(dropout_backward(dx, drop), h_shape), grads


def hf_head_forward(h: np.ndarray, w: dict[str, np.ndarray], p_drop: float, rng: np.random.Generator | None = None,
                    act: str = "gelu") -> tuple[np.ndarray, tuple]:
    """Inputs:  h (B, T, H); w with "classifier.dense.*" and "classifier.out_proj.*"; p_drop (HF:
             config.classifier_dropout, else hidden_dropout_prob); rng (dropout on when given); act
    Returns: logits (B, C), cache
    """
    x, drop1 = dropout_forward(h[:, 0], p_drop, rng)  # (B, H)
    a, dense = linear_forward(x, w["classifier.dense.weight"], w["classifier.dense.bias"])  # (B, H)
    g, act_cache = activation_forward(act, a)
    g, drop2 = dropout_forward(g, p_drop, rng)
    logits, out = linear_forward(g, w["classifier.out_proj.weight"], w["classifier.out_proj.bias"])  # (B, C)
    return logits, (h.shape, drop1, dense, act, act_cache, drop2, out)


def hf_head_backward(dlogits: np.ndarray, cache: tuple) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The forward in reverse.  Returns: dh (B, T, H), grads dict with the keys of `w`."""
    h_shape, drop1, dense, act, act_cache, drop2, out = cache
    grads = {}
    dg, grads["classifier.out_proj.weight"], grads["classifier.out_proj.bias"] = linear_backward(dlogits, out)
    da = activation_backward(act, dropout_backward(dg, drop2), act_cache)
    dx, grads["classifier.dense.weight"], grads["classifier.dense.bias"] = linear_backward(da, dense)
    return _first_token_backward(dropout_backward(dx, drop1), h_shape), grads


def mse_forward(predictions: np.ndarray, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """loss = mean_b (p_b - y_b)^2 (official RegressionTask: tf.square(predictions - targets), averaged;
    HF: MSELoss()(logits.squeeze(), labels.squeeze())).

    Inputs:  predictions (B,), targets (B,) real
    Returns: loss (0-d array, predictions' dtype), cache
    """
    diff = predictions - np.asarray(targets, dtype=predictions.dtype)  # (B,)
    loss = (diff * diff).sum() / predictions.dtype.type(max(diff.size, 1))
    return np.asarray(loss, dtype=predictions.dtype), diff


def mse_backward(dloss: np.ndarray | float, cache: np.ndarray) -> np.ndarray:
    """d loss / d p_b = 2 (p_b - y_b) / B."""
    diff = cache
    return diff * (2 * dloss / diff.dtype.type(max(diff.size, 1)))
