"""Inference, fast: ElectraForPreTraining's per-token logits (model.discriminator_forward, dropout off) with a
forward-only encoder (fast/encoder.py, training=False: one layer's buffers, no backward scratch).

    logits = FastDiscriminator(config)(w, batch)   # w: HF-named discriminator dict; (B, T) logits, > 0: "replaced"
"""

import numpy as np

from ..config import ElectraConfig
from ..params import WORD, check_params, discriminator_shapes
from ..validate import check_batch
from . import runtime
from .encoder import Encoder, key_bias
from .heads import DiscriminatorHead


class FastDiscriminator:
    """The discriminator's logits for one ElectraConfig, with buffers kept per (B, T, dtype). Validation as
    the training step's (check_batch, check_params). The logits are a reused buffer, valid until the next
    call with the same (B, T, dtype): copy them to keep them."""

    def __init__(self, config: ElectraConfig):
        runtime.configure()
        self.config, self.shapes = config, discriminator_shapes(config)
        self.workspaces: dict[tuple, tuple] = {}  # (B, T, dtype) -> (Encoder, DiscriminatorHead)

    def __call__(self, w: dict, batch: dict) -> np.ndarray:
        check_params(w, self.shapes, "discriminator params")
        ids, mask, types = check_batch(self.config, batch["input_ids"], batch.get("attention_mask"),
                                       batch.get("token_type_ids"))
        B, T = ids.shape
        dt = w[WORD].dtype
        if (B, T, dt) not in self.workspaces:
            self.workspaces[B, T, dt] = (Encoder(self.config, B, T, dt, training=False),
                                         DiscriminatorHead(self.config, B, T, dt, training=False))
        encoder, head = self.workspaces[B, T, dt]
        h = encoder.forward(w, ids, types, key_bias(mask, dt), None)  # (N, H)
        return head.forward(h, w)  # (B, T)
