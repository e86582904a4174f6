"""The two ELECTRA losses, numerically stable in float32 and for logits of +-1e4.

MLM (generator): softmax cross-entropy at the masked positions, mean over the M masked positions
of the batch (official `get_masked_lm_output`; HF CrossEntropyLoss with -100 elsewhere).
Replaced-token detection (discriminator): sigmoid cross-entropy per token, mean over the non-padding
tokens, [CLS] and [SEP] included (official `get_discriminator_output`; HF ElectraForPreTraining).
"""

import numpy as np


def softmax_cross_entropy_forward(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, tuple]:
    """loss = mean_m [logsumexp(logits_m) - logits_m[labels_m]].  An empty batch (M = 0) has loss 0.

    Inputs:  logits (M, V), labels (M,) int
    Returns: loss (0-d array, logits' dtype), cache
    """
    M = logits.shape[0]
    row_max = logits.max(axis=-1, keepdims=True) if M else np.zeros((0, 1), logits.dtype)
    shifted = logits - row_max  # (M, V), max 0: exp cannot overflow
    e = np.exp(shifted)
    s = e.sum(axis=-1, keepdims=True)
    logprob_label = shifted[np.arange(M), labels] - np.log(s[:, 0])  # (M,)
    loss = -logprob_label.sum() / logits.dtype.type(max(M, 1))
    return np.asarray(loss, dtype=logits.dtype), (e / s, labels)


def softmax_cross_entropy_backward(dloss: np.ndarray | float, cache: tuple) -> np.ndarray:
    """d loss / d logits = (softmax(logits) - onehot(labels)) / M."""
    probs, labels = cache
    M = probs.shape[0]
    dlogits = probs.copy()
    dlogits[np.arange(M), labels] -= 1
    return dlogits * (dloss / probs.dtype.type(max(M, 1)))


def binary_cross_entropy_forward(logits: np.ndarray, labels: np.ndarray,
                                 weights: np.ndarray) -> tuple[np.ndarray, tuple]:
    """loss = sum(w * [log(1 + e^z) - y z]) / sum(w), with log(1 + e^z) = logaddexp(0, z).  No weight -> loss 0.

    Inputs:  logits (B, T), labels (B, T) in {0, 1}, weights (B, T) (the attention mask)
    Returns: loss (0-d array), cache
    """
    dtype = logits.dtype
    y = labels.astype(dtype)
    wts = weights.astype(dtype)
    n = max(float(wts.sum()), 1.0)
    per_token = np.logaddexp(dtype.type(0), logits) - y * logits  # (B, T)
    loss = (per_token * wts).sum() / dtype.type(n)
    return np.asarray(loss, dtype=dtype), (logits, y, wts, n)


def binary_cross_entropy_backward(dloss: np.ndarray | float, cache: tuple) -> np.ndarray:
    """d loss / dz = w (sigmoid(z) - y) / sum(w); sigmoid via exp of a non-positive number only."""
    logits, y, wts, n = cache
    e = np.exp(-np.abs(logits))
    sig = np.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    return (sig - y) * wts * (dloss / logits.dtype.type(n))
