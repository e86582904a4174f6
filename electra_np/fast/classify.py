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

from . import runtime as threads
from ..classification import check_inputs, head_backward, head_forward, loss_backward, loss_forward
from .step import WORD, _Encoder, key_bias
from ..params import encoder_shapes

TABLES = (WORD, "electra.embeddings.position_embeddings.weight", "electra.embeddings.token_type_embeddings.weight")


class FastClassifier:
    """Fine-tuning step and inference for one ElectraConfig (a discriminator's encoder + a head)."""

    def __init__(self, config, max_workspaces=8):
        threads.warn_if_blas_spins()
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

    def _encode(self, params, ids, mask, types, rng):
        """The encoder. Returns (its workspace, the first tokens' vectors h[:, :1] (B, 1, H), a view of its
        buffer: the head reads only those, so its backward returns a (B, 1, H) gradient)."""
        B, T = ids.shape
        dt = params[WORD].dtype
        enc = self._workspace(B, T, dt)
        enc.ids, enc.types = ids, types
        h = enc.forward(params, ids, types, key_bias(mask, dt), rng)  # (N, H)
        return enc, h.reshape(B, T, self.config.hidden_size)[:, :1]  # (B, 1, H)

    def logits(self, params, batch):
        """Inference, dropout off: logits (B, C), a fresh array."""
        _, ids, mask, types, _ = check_inputs(params, self.config, batch)
        _, h = self._encode(params, ids, mask, types, None)
        return head_forward(h, params, self.config)[0]

    def step(self, params, batch, labels, rng=None, train=True, p_head=None):
        """classification_forward + classification_backward. Returns (loss, metrics, grads)."""
        _, ids, mask, types, labels = check_inputs(params, self.config, batch, labels)
        drop_rng = rng if train else None
        enc, h = self._encode(params, ids, mask, types, drop_rng)
        logits, head_cache = head_forward(h, params, self.config, drop_rng, p_head)  # (B, C)
        loss, metrics, loss_cache = loss_forward(logits, labels)
        # ---- backward: the loss and the head (reference ops), then the encoder from the first-token gradient
        dcls, grads = head_backward(loss_backward(loss_cache), head_cache)  # (B, 1, H)
        enc.dh[:, 0] = dcls[:, 0]  # every other row of enc.dh stays 0: the head reads only the first token
        for k in TABLES:  # the encoder's embedding scatter-adds accumulate into these
            enc.grads[k].fill(0)
        enc.backward(enc.dh.reshape(-1, enc.H))
        grads.update({k: enc.grads[k] for k in self.encoder_keys})
        return loss, metrics, grads
