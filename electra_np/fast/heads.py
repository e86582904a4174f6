"""The two ELECTRA heads and their losses, fast: ops/heads.py and ops/losses.py on preallocated buffers.

Generator (ops/heads.py generator_head_forward + ops/losses.py softmax cross-entropy), at the M masked
positions only:
    hm = h[positions];  z = LayerNorm(gelu(hm W_d^T + b_d));  logits = z W_word^T + b_out;  L_MLM
Discriminator (ops/heads.py discriminator_head_forward), one logit per token:
    logit = act(h W_d^T + b_d) w_p^T + b_p
(its loss, binary cross-entropy, is kernels/losses.py's bce_forward / bce_backward, called by the step).

Each head records in forward what its backward needs. Gradients go into `head.grads` (HF names relative
to the model); the generator's tied output projection writes its share of the word-embedding gradient into
the buffer its backward is given.
"""

import numpy as np

from ..config import ElectraConfig
from ..masking import GUMBEL_EPS
from ..params import WORD
from .kernels.gelu import bias_gelu_backward, bias_gelu_forward
from .kernels.layernorm import residual_layernorm_backward, residual_layernorm_forward
from .kernels.losses import softmax_xent_backward, softmax_xent_forward
from .kernels.rows import add_bias, num_chunks
from .kernels.sampling import gumbel_argmax

GEN_DENSE, GEN_LN = "generator_predictions.dense.", "generator_predictions.LayerNorm."
GEN_BIAS = "generator_lm_head.bias"
DISC_DENSE, DISC_PRED = "discriminator_predictions.dense.", "discriminator_predictions.dense_prediction."


class GeneratorHead:
    """ElectraForMaskedLM's head and the MLM loss for one (config, B, T, dtype), with buffers for up to M
    masked positions (grown, outside the arena, if a given corruption masks more).

        logits = head.forward(h, positions, w)        # (M, V), a view of the head's buffer
        loss, argmax = head.loss_forward(labels)      # softmax cross-entropy, mean over the M positions
        samples = head.sample(temperature, seed)      # masking.gumbel_sample's draw and argmax, fused
        head.loss_backward(dloss)                     # the logits buffer now holds dlogits
        dh = head.backward(dword)                     # (N, Hg), zero but at the positions; dword: (V, E)
    """

    def __init__(self, config: ElectraConfig, B: int, T: int, M: int, dt: np.dtype, alloc=np.empty):
        self.eps, self.dt = config.layer_norm_eps, dt
        self.N, self.Hg, self.E, self.V = B * T, config.hidden_size, config.embedding_size, config.vocab_size
        self.M_cap = 0
        self.reserve(M, alloc)
        self.dh = alloc((self.N, self.Hg), dt)  # gradient of the encoder output: zero but at the positions
        self.xent_partial = alloc((num_chunks(), self.V), dt)  # the output bias gradient's per-thread sums
        self.gumbel_rows = alloc((num_chunks(), self.V), dt)  # a row of perturbed logits per thread
        E, Hg, V = self.E, self.Hg, self.V
        self.grads = {GEN_DENSE + "weight": np.empty((E, Hg), dt), GEN_DENSE + "bias": np.empty(E, dt),
                      GEN_LN + "weight": np.empty(E, dt), GEN_LN + "bias": np.empty(E, dt),
                      GEN_BIAS: np.empty(V, dt)}

    def reserve(self, M: int, alloc=np.empty) -> None:
        """Buffers for up to M masked positions (kept when they are large enough already)."""
        if M <= self.M_cap:
            return
        dt, E = self.dt, self.E
        self.M_cap = M
        self.hm, self.dhm = alloc((M, self.Hg), dt), alloc((M, self.Hg), dt)
        self.ha, self.hg, self.hz, self.hxhat = (alloc((M, E), dt) for _ in range(4))
        self.hrstd, self.dz = alloc(M, dt), alloc((M, E), dt)
        self.logits = alloc((M, self.V), dt)
        self.lse, self.row_loss, self.argmax = alloc(M, np.float64), alloc(M, np.float64), alloc(M, np.int64)

    def forward(self, h: np.ndarray, positions: np.ndarray, w: dict) -> np.ndarray:
        """h (N, Hg) the encoder output; positions (M,) flat indices, distinct; w: the generator's HF-named
        dict (with the word embeddings, the tied output projection). Returns logits (M, V)."""
        M = len(positions)
        self.reserve(M)
        self.positions, self.w, self.M = positions, w, M
        hm, ha, hg, hz = self.hm[:M], self.ha[:M], self.hg[:M], self.hz[:M]
        np.take(h, positions, axis=0, out=hm)  # (M, Hg)
        np.matmul(hm, w[GEN_DENSE + "weight"].T, out=ha)
        bias_gelu_forward(ha, w[GEN_DENSE + "bias"], hg, "gelu")  # gelu whatever hidden_act says (ops/heads.py)
        residual_layernorm_forward(hg, w[GEN_LN + "weight"], w[GEN_LN + "bias"], self.eps, hz, self.hxhat[:M],
                                   self.hrstd[:M])
        logits = self.logits[:M]
        np.matmul(hz, w[WORD].T, out=logits)
        return add_bias(logits, w[GEN_BIAS])  # (M, V)

    def loss_forward(self, labels: np.ndarray) -> tuple:
        """Softmax cross-entropy of the logits against labels (M,). Returns (loss 0-d, argmax (M,))."""
        M = self.M
        self.labels = labels
        loss = softmax_xent_forward(self.logits[:M], labels, self.lse[:M], self.row_loss[:M], self.argmax[:M])
        return loss, self.argmax[:M]

    def sample(self, temperature: float, seed: int) -> np.ndarray:
        """argmax(logits / temperature + Gumbel noise) per row, from counter_rng's uniforms of `seed`."""
        return gumbel_argmax(self.logits[:self.M], temperature, seed, GUMBEL_EPS, np.empty(self.M, np.int64),
                             scratch=self.gumbel_rows)

    def loss_backward(self, dloss: float) -> None:
        """dlogits = (softmax - onehot) * dloss / M, in the logits buffer; the output bias gradient on the way."""
        M = self.M
        logits = self.logits[:M]
        softmax_xent_backward(dloss, logits, self.labels, self.lse[:M], logits, dbias=self.grads[GEN_BIAS],
                              partial=self.xent_partial)

    def backward(self, dword: np.ndarray) -> np.ndarray:
        """After loss_backward. Writes dword (V, E) = the tied output path's share of the word-embedding
        gradient (overwritten) and self.grads; returns dh (N, Hg), zero but at the masked positions."""
        M, w, g = self.M, self.w, self.grads
        dlogits, dz = self.logits[:M], self.dz[:M]
        np.matmul(dlogits.T, self.hz[:M], out=dword)  # (V, E): logits = z W_word^T + b
        np.matmul(dlogits, w[WORD], out=dz)  # (M, E)
        residual_layernorm_backward(dz, self.hxhat[:M], self.hrstd[:M], w[GEN_LN + "weight"], dz,
                                    g[GEN_LN + "weight"], g[GEN_LN + "bias"])
        bias_gelu_backward(dz, self.ha[:M], dz, g[GEN_DENSE + "bias"], "gelu")
        np.matmul(dz.T, self.hm[:M], out=g[GEN_DENSE + "weight"])
        np.matmul(dz, w[GEN_DENSE + "weight"], out=self.dhm[:M])  # (M, Hg)
        self.dh.fill(0)
        self.dh[self.positions] = self.dhm[:M]  # positions are distinct, so plain assignment is exact
        return self.dh


class DiscriminatorHead:
    """ElectraForPreTraining's head for one (config, B, T, dtype): forward (and, with training, backward).

        logits = head.forward(h, w)                   # (B, T), a view of the head's buffer
        dh = head.backward(dlogits, w)                # (N, H); dlogits (B, T), e.g. head.dlogits
    """

    def __init__(self, config: ElectraConfig, B: int, T: int, dt: np.dtype, alloc=np.empty, training: bool = True):
        N, H = B * T, config.hidden_size
        self.B, self.T, self.act = B, T, config.hidden_act
        self.a, self.g = alloc((N, H), dt), alloc((N, H), dt)  # the dense output and act(a)
        if training:
            self.dg, self.dh = alloc((N, H), dt), alloc((N, H), dt)
        self.logits = alloc(N, dt)
        self.grads = {}
        if training:
            self.dlogits = alloc((B, T), dt)  # where the loss's backward writes
            self.grads = {DISC_DENSE + "weight": np.empty((H, H), dt), DISC_DENSE + "bias": np.empty(H, dt),
                          DISC_PRED + "weight": np.empty((1, H), dt), DISC_PRED + "bias": np.empty(1, dt)}

    def forward(self, h: np.ndarray, w: dict) -> np.ndarray:
        """h (N, H) the encoder output; w: the discriminator's HF-named dict. Returns logits (B, T)."""
        self.h = h
        np.matmul(h, w[DISC_DENSE + "weight"].T, out=self.a)
        bias_gelu_forward(self.a, w[DISC_DENSE + "bias"], self.g, self.act)
        np.matmul(self.g, w[DISC_PRED + "weight"][0], out=self.logits)
        self.logits += w[DISC_PRED + "bias"][0]
        return self.logits.reshape(self.B, self.T)

    def backward(self, dlogits: np.ndarray, w: dict) -> np.ndarray:
        """dlogits (B, T). Writes self.grads; returns dh (N, H)."""
        g, dl = self.grads, dlogits.reshape(-1)  # (N,)
        np.matmul(dl, self.g, out=g[DISC_PRED + "weight"][0])
        g[DISC_PRED + "bias"][0] = dl.sum()
        np.multiply(dl[:, None], w[DISC_PRED + "weight"], out=self.dg)  # (N, H)
        bias_gelu_backward(self.dg, self.a, self.dg, g[DISC_DENSE + "bias"], self.act)
        np.matmul(self.dg.T, self.h, out=g[DISC_DENSE + "weight"])
        return np.matmul(self.dg, w[DISC_DENSE + "weight"], out=self.dh)
