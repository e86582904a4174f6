"""The fast fine-tuning step: classification.py's model and loss with the encoder of fast.py (Numba kernels
around BLAS, buffers reused per (B, T, dtype)). The head reads only the B first-token vectors, so it stays
the reference's own NumPy ops (ops/classifier.py): it is a few small products.

    clf = FastClassifier(config)
    loss, metrics, grads = clf.step(params, batch, labels, rng, train=True)   # = classification_forward
    logits = clf.logits(params, batch)                                        #   + classification_backward

Semantics are classification.classification_forward + classification_backward's, to float tolerance: the
same validation, the same dropout draws from `rng` in the same order (the encoder's in forward order, then
the head's), the same loss and metrics. `grads` are views into a workspace, valid until the next step with
the same batch shape; the fine-tuning loop consumes them at once (clipping, then AdamW).

Workspaces are kept for the `max_workspaces` most recent batch shapes (a fine-tuning batch is padded to its
longest sequence, so shapes vary; finetune.py rounds T up to a multiple of 8 to keep them few).
"""

from collections import OrderedDict

import numpy as np

from .classification import check_labels, classifier_shapes, head_of
from .fast import WORD, _Encoder
from .ops.attention import MASKED
from .ops.classifier import (OFFICIAL_HEAD_DROPOUT, hf_head_backward, hf_head_forward, mse_backward, mse_forward,
                             official_head_backward, official_head_forward)
from .ops.losses import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .params import check_params, encoder_shapes
from .validate import check_batch

TABLES = (WORD, "electra.embeddings.position_embeddings.weight", "electra.embeddings.token_type_embeddings.weight")


class FastClassifier:
    """Fine-tuning step and inference for one ElectraConfig (a discriminator's encoder + a head)."""

    def __init__(self, config, max_workspaces=8):
        self.config, self.max_workspaces = config, max_workspaces
        self.encoder_keys = tuple(encoder_shapes(config))
        self.workspaces = OrderedDict()  # (B, T, dtype) -> _Encoder, least recent first

    def _workspace(self, B, T, dt):
        key = (B, T, dt)
        if key in self.workspaces:
            self.workspaces.move_to_end(key)
        else:
            if len(self.workspaces) >= self.max_workspaces:
                self.workspaces.popitem(last=False)
            enc = _Encoder(self.config, B, T, dt)
            enc.dh = np.zeros((B, T, self.config.hidden_size), dt)  # gradient of h: nonzero on the first tokens only
            self.workspaces[key] = enc
        return self.workspaces[key]

    def _check(self, params, batch):
        """classification_forward's validation, in its order. Returns (head, C, ids, mask, types)."""
        head, C = head_of(params)
        check_params(params, classifier_shapes(self.config, C, head))
        ids, mask, types = check_batch(self.config, batch["input_ids"], batch.get("attention_mask"),
                                       batch.get("token_type_ids"))
        return head, C, ids, mask, types

    def _encode(self, params, ids, mask, types, rng):
        """The encoder. Returns (its workspace, h (B, T, H) a view of its buffer)."""
        B, T = ids.shape
        dt = params[WORD].dtype
        enc = self._workspace(B, T, dt)
        enc.ids, enc.types = ids, types
        bias = np.where(mask != 0, dt.type(0), dt.type(MASKED))  # (B, T) additive key mask
        h = enc.forward(params, ids, types, bias, rng)  # (N, H)
        return enc, h.reshape(B, T, self.config.hidden_size)  # (B, T, H)

    def _head_forward(self, head, h, params, rng, p_head):
        # the head sees only h[:, :1]: its backward then returns a (B, 1, H) gradient, not a (B, T, H) one
        if head == "hf":
            p = self.config.hidden_dropout_prob if p_head is None else p_head
            return hf_head_forward(h[:, :1], params, p, rng)  # (B, C)
        p = OFFICIAL_HEAD_DROPOUT if p_head is None else p_head
        return official_head_forward(h[:, :1], params, p, rng)  # (B, C)

    def logits(self, params, batch):
        """Inference, dropout off: logits (B, C), a fresh array."""
        head, _, ids, mask, types = self._check(params, batch)
        _, h = self._encode(params, ids, mask, types, None)
        return self._head_forward(head, h, params, None, None)[0]

    def step(self, params, batch, labels, rng=None, train=True, p_head=None):
        """classification_forward + classification_backward. Returns (loss, metrics, grads)."""
        head, C, ids, mask, types = self._check(params, batch)
        labels = check_labels(labels, ids.shape[0], C)
        drop_rng = rng if train else None
        enc, h = self._encode(params, ids, mask, types, drop_rng)
        logits, head_cache = self._head_forward(head, h, params, drop_rng, p_head)  # (B, C)
        if C == 1:
            loss, loss_cache = mse_forward(logits[:, 0], labels)
            metrics = {"loss": float(loss)}
            dlogits = mse_backward(1.0, loss_cache)[:, None]  # (B, 1)
        else:
            loss, loss_cache = softmax_cross_entropy_forward(logits, labels)
            metrics = {"loss": float(loss), "acc": float((logits.argmax(-1) == labels).mean())}
            dlogits = softmax_cross_entropy_backward(1.0, loss_cache)  # (B, C)
        # ---- backward: the head (reference ops), then the encoder from the first-token gradient
        dcls, grads = (hf_head_backward if head == "hf" else official_head_backward)(dlogits, head_cache)  # (B, 1, H)
        enc.dh[:, 0] = dcls[:, 0]  # every other row of enc.dh stays 0: the head reads only the first token
        for k in TABLES:  # the encoder's embedding scatter-adds accumulate into these
            enc.grads[k].fill(0)
        enc.backward(enc.dh.reshape(-1, enc.H))
        grads.update({k: enc.grads[k] for k in self.encoder_keys})
        return loss, metrics, grads
