"""Sequence classification (fine-tuning, Clark et al. 2020 Section 3.1): the discriminator's encoder with a
head on its first token, trained with softmax cross-entropy (C >= 2 labels) or squared error (C == 1,
regression such as STS-B).

Two head layouts (ops/classifier.py), told apart by their parameter names:
    "hf"       Hugging Face ElectraForSequenceClassification: classifier.dense.*, classifier.out_proj.*
               (this is the layout transformers loads; hf.py saves and loads it)
    "official" google-research/electra: one linear layer, classifier.weight (C, H), classifier.bias (C,)

    params = init_classifier(discriminator_params, config, num_labels=3, head="hf", seed=0)
    loss, metrics, cache = classification_forward(params, config, batch, labels, rng)
    grads = classification_backward(cache)
"""

import numpy as np

from .model import encoder_backward, encoder_forward
from .ops.classifier import (
    OFFICIAL_HEAD_DROPOUT,
    hf_head_backward,
    hf_head_forward,
    mse_backward,
    mse_forward,
    official_head_backward,
    official_head_forward,
)
from .ops.losses import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .params import WORD, check_params, encoder_shapes, init_params
from .validate import check_batch

HEADS = ("hf", "official")


def head_shapes(config, num_labels, head="hf"):
    """The head's parameters and shapes: C = num_labels, H = hidden size."""
    C, H = num_labels, config.hidden_size
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 1:
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
    if head == "hf":
        return {"classifier.dense.weight": (H, H), "classifier.dense.bias": (H,),
                "classifier.out_proj.weight": (C, H), "classifier.out_proj.bias": (C,)}
    if head == "official":
        return {"classifier.weight": (C, H), "classifier.bias": (C,)}
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")


def classifier_shapes(config, num_labels, head="hf"):
    """Every parameter of an encoder + classification head and its shape."""
    shapes = encoder_shapes(config)
    shapes.update(head_shapes(config, num_labels, head))
    return shapes


def head_of(params):
    """("hf" | "official", num_labels) read from a classifier's parameter names and shapes."""
    if "classifier.out_proj.weight" in params:
        return "hf", int(np.shape(params["classifier.out_proj.weight"])[0])
    if "classifier.weight" in params:
        return "official", int(np.shape(params["classifier.weight"])[0])
    raise ValueError("params hold no classification head (no classifier.out_proj.weight or classifier.weight)")


def init_classifier(encoder_params, config, num_labels, head="hf", seed=0, keep_head=False):
    """Start fine-tuning: the "electra.*" tensors of any checkpoint (a discriminator, usually) are copied,
    a fresh head is drawn as HF's _init_weights does (weights ~ N(0, initializer_range), biases 0), and
    every other tensor (the discriminator's replaced-token head) is dropped. keep_head: encoder_params is a
    classifier whose head (head_of: `head` with num_labels classes) is copied instead of drawn, to train on."""
    enc = {k: v for k, v in encoder_params.items() if k.startswith("electra.")}
    check_params(enc, encoder_shapes(config), what="encoder params")
    dtype = enc[WORD].dtype
    params = {k: np.array(v) for k, v in enc.items()}
    shapes = head_shapes(config, num_labels, head)
    if not keep_head:
        params.update(init_params(shapes, config.initializer_range, seed, dtype))
        return params
    if head_of(encoder_params) != (head, num_labels):
        raise ValueError(f"the classifier's head (layout, labels) is {head_of(encoder_params)}, not "
                         f"{(head, num_labels)}")
    params.update({k: np.array(encoder_params[k], dtype) for k in shapes})
    return params


def head_forward(h, w, config, rng=None, p_head=None):
    """The head that `w` holds (head_of) on the encoder output. p_head: the head's dropout; default
    config.hidden_dropout_prob for "hf" (HF's classifier_dropout=None fallback), 0.1 for "official".
    The heads read only h[:, 0], so h may be just the first tokens h[:, :1].

    Inputs:  h (B, T, H); w; config; rng: dropout on when given
    Returns: logits (B, C), cache
    """
    head, _ = head_of(w)
    if head == "hf":
        p = config.hidden_dropout_prob if p_head is None else p_head
        logits, cache = hf_head_forward(h, w, p, rng)  # (B, C)
    else:
        p = OFFICIAL_HEAD_DROPOUT if p_head is None else p_head
        logits, cache = official_head_forward(h, w, p, rng)  # (B, C)
    return logits, (head, cache)


def head_backward(dlogits, cache):
    """Returns: dh with the shape of head_forward's h, grads dict with the head's keys."""
    head, head_cache = cache
    return (hf_head_backward if head == "hf" else official_head_backward)(dlogits, head_cache)


def classifier_forward(w, config, input_ids, token_type_ids, attention_mask, rng=None, p_head=None):
    """Encoder, then the head that `w` holds (head_forward).

    Inputs:  w; config; input_ids, token_type_ids, attention_mask (B, T); rng: dropout on when given
    Returns: logits (B, C), cache
    """
    h, enc_cache = encoder_forward(w, config, input_ids, token_type_ids, attention_mask, rng)  # (B, T, H)
    logits, head_cache = head_forward(h, w, config, rng, p_head)  # (B, C)
    return logits, (enc_cache, head_cache)


def classifier_backward(dlogits, cache):
    """Returns: grads dict with the keys of `w`."""
    enc_cache, head_cache = cache
    dh, grads = head_backward(dlogits, head_cache)
    grads.update(encoder_backward(dh, enc_cache))
    return grads


def check_labels(labels, B, num_labels):
    """Class ids in [0, C) for classification, real targets for regression (C == 1)."""
    labels = np.asarray(labels)
    if labels.shape != (B,):
        raise ValueError(f"labels must have shape (B,) = {(B,)}, got {labels.shape}")
    if num_labels == 1:
        if not (np.issubdtype(labels.dtype, np.floating) or np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(f"regression targets must be numbers, got dtype {labels.dtype}")
        if not np.isfinite(labels).all():  # one NaN target makes the loss and every gradient NaN
            raise ValueError(f"regression targets must be finite, got {labels[~np.isfinite(labels)][0]}")
        return labels
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"class labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(f"class labels must be in [0, num_labels={num_labels}), got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def check_inputs(params, config, batch, labels=None):
    """classification_forward's validation, done once. Returns (C, input_ids, attention_mask,
    token_type_ids, labels) checked and converted; labels None (inference) stays None."""
    head, C = head_of(params)
    check_params(params, classifier_shapes(config, C, head))
    input_ids, attention_mask, token_type_ids = check_batch(config, batch["input_ids"], batch.get("attention_mask"),
                                                            batch.get("token_type_ids"))
    labels = None if labels is None else check_labels(labels, input_ids.shape[0], C)
    return C, input_ids, attention_mask, token_type_ids, labels


def loss_forward(logits, labels):
    """Cross-entropy (C >= 2) or squared error (C == 1) of logits (B, C). Returns (loss, metrics, cache)."""
    if logits.shape[1] == 1:
        loss, loss_cache = mse_forward(logits[:, 0], labels)  # (B,) predictions
        return loss, {"loss": float(loss)}, (1, loss_cache)
    loss, loss_cache = softmax_cross_entropy_forward(logits, labels)
    metrics = {"loss": float(loss), "acc": float((logits.argmax(-1) == labels).mean())}
    return loss, metrics, (logits.shape[1], loss_cache)


def loss_backward(cache, dloss=1.0):
    """Returns: dlogits (B, C)."""
    C, loss_cache = cache
    if C == 1:
        return mse_backward(dloss, loss_cache)[:, None]  # (B, 1)
    return softmax_cross_entropy_backward(dloss, loss_cache)  # (B, C)


def classification_forward(params, config, batch, labels, rng=None, train=True, p_head=None):
    """One fine-tuning forward pass: logits, then cross-entropy (C >= 2) or squared error (C == 1).

    Inputs:  params: encoder + head; config: ElectraConfig; batch: dict with input_ids and optionally
             attention_mask, token_type_ids (B, T); labels (B,); rng: dropout when train
    Returns: loss (0-d), metrics dict, cache
    """
    C, input_ids, attention_mask, token_type_ids, labels = check_inputs(params, config, batch, labels)
    logits, cache = classifier_forward(params, config, input_ids, token_type_ids, attention_mask,
                                       rng if train else None, p_head)
    loss, metrics, loss_cache = loss_forward(logits, labels)
    return loss, metrics, {"model": cache, "loss": loss_cache, "num_labels": C, "logits": logits}


def classification_backward(cache, dloss=1.0):
    """Gradient of the loss with respect to every tensor of params (same keys)."""
    return classifier_backward(loss_backward(cache["loss"], dloss), cache["model"])


class ReferenceClassifier:
    """classification_forward + classification_backward, and the logits, as one object: the reference twin of
    fast.classify.FastClassifier (engine.make_classifier chooses between them)."""

    def __init__(self, config):
        self.config = config

    def step(self, params, batch, labels, rng=None, train=True, p_head=None):
        loss, metrics, cache = classification_forward(params, self.config, batch, labels, rng, train, p_head)
        return loss, metrics, classification_backward(cache)

    def logits(self, params, batch):
        _, ids, mask, types, _ = check_inputs(params, self.config, batch)
        return classifier_forward(params, self.config, ids, types, mask)[0]
