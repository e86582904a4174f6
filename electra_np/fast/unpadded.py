"""The fast encoder and fine-tuning step without padding: unpadded.py's packed_encoder_forward / backward and
unpadded_classifier_forward / backward with fast/encoder.py's kernels around BLAS, over the N real tokens of
a batch instead of its B x T positions.

    clf = FastUnpaddedClassifier(config)
    loss, metrics, grads = clf.step(params, batch, labels, rng, train=True)   # = FastClassifier.step
    logits = clf.logits(params, batch)

PackedEncoder.forward / backward read as Encoder.forward / backward line for line, with three changes:
the embeddings gather each token's position (kernels/packed.py), attention runs per (sequence, head) pair
over the sequence's own length (kernels/varlen_attention.py), and dropout draws at each token's padded
position (rows = Packing.indices), applied by kernels/packed.py before layernorm.py's residual LayerNorm
(whose own dropout would count packed rows). Same dropout seeds from rng, in the same order; so the same
numbers as the padded path (tests/test_fast_unpadded.py holds them equal to unpadded.py in float64).

Buffers: N changes with every batch, so the activations are carved (fast/encoder.py's Arena) out of one
block per encoder, grown when a batch needs more, and reused; the gradients have the parameters' shapes.
Batches must be right-padded (unpadded.unpad says why and refuses others).
"""

import numpy as np

from ..config import ElectraConfig
from ..counter_rng import draw_seed
from ..params import EMBEDDING_TABLES, POSITION, TOKEN_TYPE, WORD, encoder_shapes
from ..unpadded import Packing, unpad
from . import runtime
from .classify import FastClassifier
from .encoder import EMB_LN, PROJECT, QKV, Arena
from .kernels.gelu import bias_gelu_backward, bias_gelu_forward
from .kernels.layernorm import layernorm_apply, residual_layernorm_backward, residual_layernorm_forward
from .kernels.packed import bias_dropout_rows, dropout_rows, packed_embeddings_backward, packed_embeddings_forward
from .kernels.rows import add_bias, sum_rows
from .kernels.varlen_attention import probs_offsets, scratch_shape, varlen_attention_backward, varlen_attention_forward


class PackedLayer:
    """What one layer's forward keeps for its backward: Encoder's LayerActivations, N rows, packed probs."""

    def __init__(self, N: int, P: int, H: int, F: int, dt: np.dtype, alloc):
        self.qkv, self.probs, self.ctx = alloc((N, 3 * H), dt), alloc(P, dt), alloc((N, H), dt)
        self.xhat1, self.rstd1, self.a = alloc((N, H), dt), alloc(N, dt), alloc((N, F), dt)
        self.xhat2, self.rstd2 = alloc((N, H), dt), alloc(N, dt)
        self.seeds = (None, None, None)


class PackedEncoder:
    """ElectraModel over packed rows, for one config and dtype. Gradients go to `self.grads` (HF names; the
    embedding tables' are added into, the others overwritten)."""

    def __init__(self, config: ElectraConfig, dt: np.dtype):
        c = config
        self.c, self.dt = c, np.dtype(dt)
        self.E, self.H, self.NH, self.F = c.embedding_size, c.hidden_size, c.num_attention_heads, c.intermediate_size
        self.hs, self.proj = self.H // self.NH, c.embedding_size != c.hidden_size
        self.block = np.empty(0, np.uint8)
        self.wqkv, self.bqkv = np.empty((3 * self.H, self.H), dt), np.empty(3 * self.H, dt)
        self.grads = {k: np.zeros(s, dt) if k in EMBEDDING_TABLES else np.empty(s, dt) for k, s in encoder_shapes(c).items()
                      if ".attention.self." not in k}
        for i in range(c.num_hidden_layers):  # q, k, v gradients: views of one (3H, H) block, as Encoder's
            pre = f"electra.encoder.layer.{i}."
            g = self.grads
            g[pre + "qkv.weight"], g[pre + "qkv.bias"] = np.empty((3 * self.H, self.H), dt), np.empty(3 * self.H, dt)
            for j, name in enumerate(QKV):
                g[f"{pre}attention.self.{name}.weight"] = g[pre + "qkv.weight"][j * self.H:(j + 1) * self.H]
                g[f"{pre}attention.self.{name}.bias"] = g[pre + "qkv.bias"][j * self.H:(j + 1) * self.H]

    def _carve(self, N: int, P: int, T_max: int, alloc) -> None:
        """Every activation and scratch buffer of one batch (N rows, P probabilities, longest sequence T_max)."""
        E, H, F, dt = self.E, self.H, self.F, self.dt
        self.e_out, self.e_xhat, self.e_rstd = alloc((N, E), dt), alloc((N, E), dt), alloc(N, dt)
        self.x0 = alloc((N, H), dt) if self.proj else None
        self.layers = [PackedLayer(N, P, H, F, dt, alloc) for _ in range(self.c.num_hidden_layers)]
        self.h1, self.gf, self.y = alloc((N, H), dt), alloc((N, F), dt), alloc((N, H), dt)
        self.hs_out = (alloc((N, H), dt), alloc((N, H), dt))
        self.att_scratch = alloc(scratch_shape(T_max), dt)
        self.x_in, self.tmp, self.dd = alloc((N, H), dt), alloc((N, H), dt), alloc((N, H), dt)
        self.ds_a, self.ds_b = alloc((N, H), dt), alloc((N, H), dt)
        self.dctx, self.dqkv, self.dgf = alloc((N, H), dt), alloc((N, 3 * H), dt), alloc((N, F), dt)
        self.de, self.de_s, self.dh = alloc((N, E), dt), alloc((N, E), dt), alloc((N, H), dt)

    def _buffers(self, packing: Packing) -> None:
        """Carve this batch's buffers out of the block, growing it (by a quarter more) when it is too small."""
        N, lengths = len(packing.indices), np.diff(packing.cu_seqlens)
        self.pofs = probs_offsets(packing.cu_seqlens, self.NH)
        shape = (N, int(self.pofs[-1]), int(lengths.max()))
        sizing = Arena()
        self._carve(*shape, sizing)
        if sizing.used + Arena.ALIGN > len(self.block):
            self.block = np.empty(int(sizing.used * 1.25) + Arena.ALIGN, np.uint8)
        self._carve(*shape, Arena(self.block))

    # ------------------------------------------------------------------------- forward

    def _residual_layernorm(self, y, b, resid, ln, L, j, eps, out):
        """out = LN(resid + dropout(y + b)), dropout at the padded positions (then none in the kernel)."""
        seed = L.seeds[j]
        if seed is not None:
            bias_dropout_rows(y, b, self.packing.indices, seed, self.p_hid)
        xhat, rstd = (L.xhat1, L.rstd1) if j == 1 else (L.xhat2, L.rstd2)
        residual_layernorm_forward(y, self.w[ln + "weight"], self.w[ln + "bias"], eps, out, xhat, rstd,
                                   bias=b if seed is None else None, resid=resid)

    def forward(self, w: dict, ids: np.ndarray, types: np.ndarray, packing: Packing, rng) -> np.ndarray:
        """w: HF-named dict; ids, types (N,) int64 packed; packing: unpadded.unpad's; rng: dropout on when given.
        Returns h (N, H), a buffer of this encoder."""
        c, H, NH = self.c, self.H, self.NH
        p_att = c.attention_probs_dropout_prob if rng is not None else 0.0
        p_hid = c.hidden_dropout_prob if rng is not None else 0.0
        self._buffers(packing)
        self.w, self.ids, self.types, self.packing, self.p_att, self.p_hid = w, ids, types, packing, p_att, p_hid
        eps, rows, cu, T = c.layer_norm_eps, packing.indices, packing.cu_seqlens, packing.T
        self.e_seed = draw_seed(rng) if p_hid else None
        packed_embeddings_forward(ids, types, packing.positions, rows, w[WORD], w[POSITION], w[TOKEN_TYPE],
                                  w[EMB_LN + "weight"], w[EMB_LN + "bias"], eps, self.e_out, self.e_xhat, self.e_rstd,
                                  seed=self.e_seed, p=p_hid)
        x = self.e_out  # (N, E)
        if self.proj:
            np.matmul(x, w[PROJECT + "weight"].T, out=self.x0)
            x = add_bias(self.x0, w[PROJECT + "bias"])  # (N, H)
        for i, L in enumerate(self.layers):
            lw = f"electra.encoder.layer.{i}."
            L.seeds = tuple(draw_seed(rng) if p else None for p in (p_att, p_hid, p_hid))  # the reference's order
            for j, name in enumerate(QKV):
                self.wqkv[j * H:(j + 1) * H] = w[f"{lw}attention.self.{name}.weight"]
                self.bqkv[j * H:(j + 1) * H] = w[f"{lw}attention.self.{name}.bias"]
            np.matmul(x, self.wqkv.T, out=L.qkv)  # (N, 3H)
            add_bias(L.qkv, self.bqkv)
            varlen_attention_forward(L.qkv, cu, self.pofs, NH, T, p_att, L.seeds[0], L.probs, L.ctx, self.att_scratch)
            np.matmul(L.ctx, w[lw + "attention.output.dense.weight"].T, out=self.y)  # (N, H)
            self._residual_layernorm(self.y, w[lw + "attention.output.dense.bias"], x, lw + "attention.output.LayerNorm.",
                                     L, 1, eps, self.h1)
            np.matmul(self.h1, w[lw + "intermediate.dense.weight"].T, out=L.a)  # (N, F)
            bias_gelu_forward(L.a, w[lw + "intermediate.dense.bias"], self.gf, c.hidden_act)
            np.matmul(self.gf, w[lw + "output.dense.weight"].T, out=self.y)  # (N, H)
            h2 = self.hs_out[i % 2]
            self._residual_layernorm(self.y, w[lw + "output.dense.bias"], self.h1, lw + "output.LayerNorm.", L, 2, eps, h2)
            x = h2
        return x

    def _layer_input(self, i):
        """Layer i's input x: the embeddings' output for layer 0, else layer i-1's h2, recomputed."""
        if i == 0:
            return self.x0 if self.proj else self.e_out
        lw = f"electra.encoder.layer.{i - 1}.output.LayerNorm."
        return layernorm_apply(self.layers[i - 1].xhat2, self.w[lw + "weight"], self.w[lw + "bias"], self.x_in)

    # ------------------------------------------------------------------------- backward

    def _residual_layernorm_backward(self, dy_a, dy_b, L, j, ln, dense, ds):
        """The gradient ds of LN's input (the residual stream) and, returned, of the dense output y (ds * mask)."""
        g, seed = self.grads, L.seeds[j]
        xhat, rstd = (L.xhat1, L.rstd1) if j == 1 else (L.xhat2, L.rstd2)
        residual_layernorm_backward(dy_a, xhat, rstd, self.w[ln + "weight"], ds, g[ln + "weight"], g[ln + "bias"],
                                    dy_b=dy_b, dbias=g[dense + "bias"] if seed is None else None)
        if seed is None:
            return ds
        dropout_rows(ds, self.packing.indices, seed, self.p_hid, self.dd)
        sum_rows(self.dd, g[dense + "bias"])
        return self.dd

    def backward(self, dh: np.ndarray) -> None:
        """dh (N, H): gradient of the last hidden state. Writes self.grads (embedding tables: added into)."""
        c, w, g, H, NH, pk = self.c, self.w, self.grads, self.H, self.NH, self.packing
        dy_a, dy_b = dh, None
        for i in reversed(range(len(self.layers))):
            L, lw = self.layers[i], f"electra.encoder.layer.{i}."
            # h2 = LN(h1 + dropout(W2 g + b2)): the residual merge of the layer above happens inside the kernel
            ds2 = self.ds_a
            df = self._residual_layernorm_backward(dy_a, dy_b, L, 2, lw + "output.LayerNorm.", lw + "output.dense.", ds2)
            np.matmul(df, w[lw + "output.dense.weight"], out=self.dgf)  # dg (N, F)
            bias_gelu_backward(self.dgf, L.a, self.dgf, g[lw + "intermediate.dense.bias"], c.hidden_act, g=self.gf)
            np.matmul(df.T, self.gf, out=g[lw + "output.dense.weight"])  # dW2 = df^T gelu(a)
            h1 = layernorm_apply(L.xhat1, w[lw + "attention.output.LayerNorm.weight"],
                                 w[lw + "attention.output.LayerNorm.bias"], self.h1)  # the forward's h1 again
            np.matmul(self.dgf.T, h1, out=g[lw + "intermediate.dense.weight"])
            np.matmul(self.dgf, w[lw + "intermediate.dense.weight"], out=self.tmp)  # d(h1) through the FFN
            # h1 = LN(x + dropout(Wo ctx + bo)); d(h1) = ds2 (skip path) + tmp (FFN path)
            ds1 = self.ds_b
            do = self._residual_layernorm_backward(ds2, self.tmp, L, 1, lw + "attention.output.LayerNorm.",
                                                   lw + "attention.output.dense.", ds1)
            np.matmul(do.T, L.ctx, out=g[lw + "attention.output.dense.weight"])
            np.matmul(do, w[lw + "attention.output.dense.weight"], out=self.dctx)  # (N, H)
            varlen_attention_backward(self.dctx, L.qkv, pk.cu_seqlens, self.pofs, NH, pk.T, self.p_att, L.seeds[0],
                                      L.probs, self.dqkv, self.att_scratch)  # (N, 3H): dq, dk, dv
            sum_rows(self.dqkv, g[lw + "qkv.bias"])
            for j, name in enumerate(QKV):  # the stacked weights of the forward
                self.wqkv[j * H:(j + 1) * H] = w[f"{lw}attention.self.{name}.weight"]
            np.matmul(self.dqkv.T, self._layer_input(i), out=g[lw + "qkv.weight"])
            np.matmul(self.dqkv, self.wqkv, out=self.tmp)  # dx through q, k and v (summed by the matmul)
            dy_a, dy_b = ds1, self.tmp  # dx = ds1 (skip path) + tmp (attention path), merged below
            self.ds_a, self.ds_b = self.ds_b, self.ds_a  # ping-pong: the next layer writes the other buffer
        np.add(dy_a, dy_b, out=dy_a)  # (N, H) gradient of the encoder input
        dx = dy_a
        if self.proj:
            np.matmul(dx.T, self.e_out, out=g[PROJECT + "weight"])
            sum_rows(dx, g[PROJECT + "bias"])
            dx = np.matmul(dx, w[PROJECT + "weight"], out=self.de)  # (N, E)
        packed_embeddings_backward(dx, self.ids, self.types, pk.positions, pk.indices, self.e_xhat, self.e_rstd,
                                   w[EMB_LN + "weight"], g[WORD], g[POSITION], g[TOKEN_TYPE], g[EMB_LN + "weight"],
                                   g[EMB_LN + "bias"], self.de_s, seed=self.e_seed, p=self.p_hid)


class FastUnpaddedClassifier(FastClassifier):
    """fast/classify.py FastClassifier's step and logits (inherited) with the packed encoder: the same validation,
    dropout draws, loss, metrics and gradient keys. `grads` are views into the encoder, valid until the next
    step."""

    def __init__(self, config: ElectraConfig):
        runtime.configure()
        self.config = config
        self.encoder_keys = tuple(encoder_shapes(config))
        self.encoders = {}  # dtype -> PackedEncoder (its block grows to the largest batch seen)

    def _encode(self, params, ids, mask, types, rng):
        """The encoder forward. Returns (the encoder, the [CLS] rows cu_seqlens[:-1] (B,), their vectors
        (B, 1, H): the head reads only those)."""
        dt = params[WORD].dtype
        if dt not in self.encoders:
            self.encoders[dt] = PackedEncoder(self.config, dt)
        encoder, packing = self.encoders[dt], unpad(mask)
        packed_ids, packed_types = (np.ascontiguousarray(a.reshape(-1)[packing.indices], np.int64) for a in (ids, types))
        h = encoder.forward(params, packed_ids, packed_types, packing, rng)  # (N, H)
        cls_rows = packing.cu_seqlens[:-1]
        return encoder, cls_rows, h[cls_rows][:, None, :]  # (B, 1, H)

    def _encoder_gradient(self, encoder, cls_rows, dcls):
        """The gradient of the packed output rows (N, H) from the head's dcls (B, 1, H): every row but the [CLS]
        rows stays 0 (the head reads only those)."""
        encoder.dh.fill(0)
        encoder.dh[cls_rows] = dcls[:, 0]
        return encoder.dh
