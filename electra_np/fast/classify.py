"""The fast fine-tuning step: classification.py's model and loss with the fast encoder (fast/encoder.py: Numba
kernels around BLAS, buffers reused per (B, T, dtype)). The head reads only the B first-token vectors, so it
stays the reference's own NumPy ops (ops/classifier.py): it is a few small products.

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

from ..classification import check_inputs, head_backward, head_forward, loss_backward, loss_forward
from ..config import ElectraConfig
from ..params import EMBEDDING_TABLES, WORD, encoder_shapes
from . import runtime
from .encoder import Encoder, key_bias


class FastClassifier:
    """Fine-tuning step and inference for one ElectraConfig (a discriminator's encoder + a head)."""

    def __init__(self, config: ElectraConfig, max_workspaces: int = 8):
        runtime.configure()
        self.config, self.max_workspaces = config, max_workspaces
        self.encoder_keys = tuple(encoder_shapes(config))
        self.workspaces = OrderedDict()  # (B, T, dtype) -> (Encoder, dh (B, T, H)), least recent first

    def _workspace(self, B, T, dt):
        """The encoder of one batch shape, and the gradient of its output h (B, T, H): zero but on the
        first tokens, the only ones the head reads."""
        key = (B, T, dt)
        if key in self.workspaces:
            self.workspaces.move_to_end(key)
        else:
            if len(self.workspaces) >= self.max_workspaces:
                self.workspaces.popitem(last=False)
            self.workspaces[key] = (Encoder(self.config, B, T, dt), np.zeros((B, T, self.config.hidden_size), dt))
        return self.workspaces[key]

    def _encode(self, params, ids, mask, types, rng):
        """The encoder forward. Returns (the encoder, its output-gradient buffer dh, the first tokens' vectors
        h[:, :1] (B, 1, H), a view of its buffer: the head reads only those, so its backward returns a
        (B, 1, H) gradient)."""
        B, T = ids.shape
        dt = params[WORD].dtype
        encoder, dh = self._workspace(B, T, dt)
        h = encoder.forward(params, ids, types, key_bias(mask, dt), rng)  # (N, H)
        return encoder, dh, h.reshape(B, T, self.config.hidden_size)[:, :1]  # (B, 1, H)

    def _encoder_gradient(self, encoder, dh, dcls):
        """The gradient of the encoder's output rows (B T, H) from the head's dcls (B, 1, H): every row but the
        first token's stays 0 (the head reads only those)."""
        dh[:, 0] = dcls[:, 0]
        return dh.reshape(-1, encoder.H)

    def logits(self, params: dict, batch: dict) -> np.ndarray:
        """Inference, dropout off: logits (B, C), a fresh array."""
        _, ids, mask, types, _ = check_inputs(params, self.config, batch)
        _, _, h = self._encode(params, ids, mask, types, None)
        return head_forward(h, params, self.config)[0]

    def step(self, params: dict, batch: dict, labels, rng=None, train: bool = True, p_head: float | None = None):
        """classification_forward + classification_backward. Returns (loss, metrics, grads)."""
        _, ids, mask, types, labels = check_inputs(params, self.config, batch, labels)
        drop_rng = rng if train else None
        encoder, dh, h = self._encode(params, ids, mask, types, drop_rng)
        logits, head_cache = head_forward(h, params, self.config, drop_rng, p_head)  # (B, C)
        loss, metrics, loss_cache = loss_forward(logits, labels)
        # ---- backward: the loss and the head (reference ops), then the encoder from the first-token gradient
        dcls, grads = head_backward(loss_backward(loss_cache), head_cache)  # (B, 1, H)
        for k in EMBEDDING_TABLES:  # the encoder's embedding scatter-adds accumulate into these
            encoder.grads[k].fill(0)
        encoder.backward(self._encoder_gradient(encoder, dh, dcls))
        grads.update({k: encoder.grads[k] for k in self.encoder_keys})
        return loss, metrics, grads
