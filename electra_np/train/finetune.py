"""Fine-tuning recipe of the official code (google-research/electra configure_finetuning.py and
model/optimization.py): AdamW (eps 1e-6, weight decay 0 by default), global-norm clipping at 1.0,
linear warmup over the first 10% of steps then linear decay to 0, dropout 0.1, layer-wise
learning-rate decay 0.8, evaluation on dev after every epoch with the best parameters kept.

Batches are of similar length (data/buckets.py), on every backend: training draws them from length buckets
(train_batches: shuffled within and across buckets, by the seed and the epoch), evaluation and
prediction take them sorted by length and return the results in the input's order. So the unpadded fast
encoder (the default) computes sequences of similar cost together, and a padded one pads little.

Layer-wise decay gives the lower layers smaller learning rates. With L layers and decay d, the head
trains at lr, layer L-1 (the top) at lr d, ..., layer 0 at lr d^L, the embeddings at lr d^(L+1).
The official `_get_layer_lrs` puts the head at depth L+2, one deeper than its layers reach, so every
layer gets one factor d too many (the top layer d^2); official_layer_decay=True reproduces that.
"""

import copy
import re
import time
from dataclasses import dataclass

import numpy as np

from ..classification import init_classifier
from ..config import ElectraConfig
from ..data.buckets import eval_batches, in_input_order, train_batches
from ..data.labelled import batches_of
from ..engine import CLASSIFIER_BACKENDS, make_classifier, make_update
from ..optim import AdamW, clip_by_global_norm, learning_rate
from ..params import WORD
from .config import TrainingDiverged
from .metrics import METRICS


@dataclass(frozen=True)
class FinetuneConfig:
    learning_rate: float = 1e-4  # official default; 3e-4 for ELECTRA-Small
    layerwise_lr_decay: float = 0.8
    official_layer_decay: bool = False
    epochs: int = 3
    batch_size: int = 32
    warmup_proportion: float = 0.1
    weight_decay: float = 0.0
    dropout: float = 0.1
    head_dropout: float | None = None  # HF's classifier_dropout; None: dropout's for "hf", 0.1 for "official"
    max_seq_length: int = 128
    head: str = "official"
    clip_norm: float = 1.0
    seed: int = 0
    metric: str = "accuracy"
    backend: str = "fast"       # engine.make_classifier: "fast" (Numba, unpadded), "fast-padded" or "numpy"
    pad_to_multiple: int = 8    # batch length rounded up to this (pad positions are masked: same logits)
    bucket_width: int = 16      # training batches come from buckets of this many lengths (buckets.train_batches)

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 < self.layerwise_lr_decay <= 1:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.head_dropout is not None and not (isinstance(self.head_dropout, (int, float))
                                                  and 0 <= self.head_dropout < 1):
            raise ValueError(f"head_dropout must be None or in [0, 1), got {self.head_dropout!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.backend not in CLASSIFIER_BACKENDS:
            raise ValueError(f"backend must be one of {CLASSIFIER_BACKENDS}, got {self.backend!r}")
        for name in ("pad_to_multiple", "bucket_width"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")


def layer_depth(name: str, n_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, n_layers + 1 for the task head."""
    if name.startswith("electra.embeddings"):
        return 0
    m = re.match(r"electra\.encoder\.layer\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    return n_layers + 1


def layer_lr_scales(names, n_layers: int, decay: float, official_layer_decay: bool = False) -> dict[str, float]:
    """{name: learning-rate factor}: 1 for the head, decay ** (top - depth) below it, with top = n_layers + 1
    (n_layers + 2 with the official off-by-one)."""
    top = n_layers + 2 if official_layer_decay else n_layers + 1
    depths = {k: layer_depth(k, n_layers) for k in names}
    return {k: 1.0 if d == n_layers + 1 else decay ** (top - d) for k, d in depths.items()}


def predict_logits(params: dict, config: ElectraConfig, encoded, batch_size: int, pad_id: int, backend: str = "fast",
                   classifier=None, pad_to_multiple: int = 8, log=None) -> np.ndarray:
    """Logits (N, C) for encoded examples, in their order, dropout off; computed in batches sorted by length
    (buckets.eval_batches). classifier: a make_classifier object to reuse; log: where a fallback note goes."""
    clf = classifier or make_classifier(config, backend, params[WORD].dtype, log)
    order = eval_batches([len(ids) for ids, _ in encoded], batch_size)
    batched = batches_of(encoded, None, order, pad_id, pad_to_multiple, config.max_position_embeddings)
    return in_input_order(order, [clf.logits(params, batch) for _, batch, _ in batched])


def evaluate(params: dict, config: ElectraConfig, encoded, y, batch_size: int, pad_id: int, backend: str = "fast",
             classifier=None, pad_to_multiple: int = 8, log=None) -> tuple[dict, np.ndarray]:
    """Every metric on (encoded, y). Returns (metrics dict, logits in the order of encoded)."""
    logits = predict_logits(params, config, encoded, batch_size, pad_id, backend, classifier, pad_to_multiple, log)
    if logits.shape[1] == 1:
        pred = logits[:, 0]
        return {"pearson": METRICS["pearson"](y, pred), "spearman": METRICS["spearman"](y, pred),
                "mse": float(np.mean((pred - y) ** 2))}, logits
    pred = logits.argmax(-1)
    return {name: METRICS[name](y, pred) for name in ("accuracy", "f1", "mcc")}, logits


def finetune(encoder_params: dict, config: ElectraConfig, num_labels: int, train, dev, fc: FinetuneConfig, pad_id: int,
             log=print, keep_head: bool = False) -> tuple[dict, list[dict]]:
    """Fine-tune a classifier from the "electra.*" tensors of `encoder_params` (a discriminator, or a fresh
    random init for a baseline), with a fresh head, or with keep_head the fc.head that encoder_params holds
    (a classifier trained further: its label ids must be those of `train`).

    Batches, epoch e: buckets.train_batches(lengths, fc.batch_size, fc.seed, e, fc.bucket_width), on every
    backend: examples of similar length (buckets of fc.bucket_width lengths) shuffled within their bucket, the
    batches shuffled across buckets; each example once per epoch. The order depends on the lengths, the seed
    and the epoch, not on the backend; dropout draws from default_rng(fc.seed). T is rounded up to
    fc.pad_to_multiple on every backend: the unpadded encoder computes none of the padding, but the dropout
    numbers are drawn at positions of the padded (B, T) batch, so the same T gives the same numbers on all three.

    Inputs:  train, dev: (encoded examples, labels) from labelled.encode_examples; fc: FinetuneConfig
    Returns: (best params by fc.metric on dev, history: list of per-epoch dicts)
    Raises:  TrainingDiverged when the loss, the gradient norm or the dev logits stop being finite (a learning
             rate far too high): the run stops there, naming the epoch and step, and nothing is returned to save.
    """
    config = config.replace(hidden_dropout_prob=fc.dropout, attention_probs_dropout_prob=fc.dropout)
    params = init_classifier(encoder_params, config, num_labels, fc.head, fc.seed, keep_head)
    scales = layer_lr_scales(params, config.num_hidden_layers, fc.layerwise_lr_decay, fc.official_layer_decay)
    opt = AdamW(params, weight_decay=fc.weight_decay)
    clf = make_classifier(config, fc.backend, params[WORD].dtype, log)
    update = make_update(opt, "numpy" if fc.backend == "numpy" else "fast", scales)  # fast-padded: the same update
    rng = np.random.default_rng(fc.seed)  # dropout
    lengths = [len(ids) for ids, _ in train[0]]
    steps_per_epoch = len(train_batches(lengths, fc.batch_size, fc.seed, 0, fc.bucket_width))  # the same each epoch
    total = steps_per_epoch * fc.epochs
    warmup = int(fc.warmup_proportion * total)
    metric = fc.metric if num_labels > 1 or fc.metric in ("pearson", "spearman") else "pearson"
    best, best_score, history, step = None, -np.inf, [], 0
    for epoch in range(fc.epochs):
        t0, losses = time.time(), []
        order = train_batches(lengths, fc.batch_size, fc.seed, epoch, fc.bucket_width)
        for _, batch, labels in batches_of(train[0], train[1], order, pad_id, fc.pad_to_multiple,
                                           config.max_position_embeddings):
            loss, m, grads = clf.step(params, batch, labels, rng, train=True, p_head=fc.head_dropout)
            norm = clip_by_global_norm(grads, fc.clip_norm, inplace=True)[1] if fc.clip_norm else 0.0
            if not (np.isfinite(loss) and np.isfinite(norm)):
                raise TrainingDiverged(diverged(f"the loss is {float(loss)} and the gradient norm {float(norm)}",
                                                epoch, step, total, fc))
            update(params, grads, learning_rate(step, fc.learning_rate, warmup, total))
            losses.append(float(loss))
            step += 1
        scores, logits = evaluate(params, config, dev[0], dev[1], fc.batch_size, pad_id, classifier=clf,
                                  pad_to_multiple=fc.pad_to_multiple)
        if not np.isfinite(logits).all():
            raise TrainingDiverged(diverged("the dev logits are not finite", epoch, step - 1, total, fc))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **scores,
                        "seconds": time.time() - t0})
        log(f"epoch {epoch + 1}/{fc.epochs} | train loss {np.mean(losses):.4f} | dev "
            + " ".join(f"{k} {v:.4f}" for k, v in scores.items()) + f" | {time.time() - t0:.1f}s")
        if scores[metric] > best_score:
            best_score, best = scores[metric], copy.deepcopy(params)
    return best, history


def diverged(what: str, epoch: int, step: int, total: int, fc: FinetuneConfig) -> str:
    """The one line a diverged fine-tuning stops with (0-based epoch and step in; 1-based out)."""
    return (f"fine-tuning diverged in epoch {epoch + 1}/{fc.epochs}, step {step + 1}/{total}: {what}; nothing was "
            f"saved. Lower the learning rate (it is {fc.learning_rate:g})")
