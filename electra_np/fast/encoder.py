"""The fast ElectraModel: model.encoder_forward / encoder_backward with the elementwise work in Numba kernels
(fast/kernels), every matrix product in BLAS writing into a preallocated buffer, and every buffer allocated
once per (config, B, T, dtype).

    enc = Encoder(config, B, T, dtype)                  # training=False: forward only (inference)
    h = enc.forward(w, ids, types, key_bias(mask, dtype), rng)    # (N, H), N = B*T; rng None: no dropout
    enc.backward(dh)                                    # dh (N, H); writes enc.grads (HF names)

The encoder records in forward what its backward needs (ids, types, weights, dropout seeds), draws its
dropout seeds from `rng` in the reference's order (embeddings, then per layer attention, hidden 1, hidden 2),
and never stores a dropout mask: the kernels compute it again from the seed.

Layout: activations are 2-D (N rows). q, k and v live side by side in one (N, 3H) buffer written by one
matmul against the three weights stacked (copied into a (3H, H) buffer each step), so their gradients come
out of one matmul too, as contiguous row blocks (the query/key/value weight gradients are views).

Memory: a layer keeps its LayerNorms' normalized inputs (xhat) but not their outputs h = xhat * w + beta,
which backward recomputes (layernorm_apply, one pass) where a weight gradient needs them. The scratch of
the forward only and the scratch of the backward only share their bytes in an Arena; fast/step.py puts the
generator's and the discriminator's activations in one block the same way.
"""

import numpy as np

from ..config import ElectraConfig
from ..counter_rng import draw_seed
from ..ops.attention import MASKED
from ..params import EMBEDDING_TABLES, POSITION, TOKEN_TYPE, WORD, encoder_shapes
from .kernels import fused_attention
from .kernels.attention import softmax_dropout_backward, softmax_dropout_forward
from .kernels.blas import bmm
from .kernels.embeddings import embeddings_backward, embeddings_forward
from .kernels.gelu import bias_gelu_backward, bias_gelu_forward
from .kernels.layernorm import layernorm_apply, residual_layernorm_backward, residual_layernorm_forward
from .kernels.rows import add_bias, num_chunks, sum_rows

QKV = ("query", "key", "value")
EMB_LN = "electra.embeddings.LayerNorm."
PROJECT = "electra.embeddings_project."


def key_bias(attention_mask: np.ndarray, dt: np.dtype) -> np.ndarray:
    """The additive key mask (B, T) of ops/attention.py: 0 on real tokens, MASKED on padding."""
    return np.where(attention_mask != 0, dt.type(0), dt.type(MASKED))


class Arena:
    """Hands out arrays in order from one block of memory, each 64-byte aligned. Arena() has no block: it
    counts the bytes and returns read-only stand-ins of the right shape that hold no memory (the sizing
    pass: real arrays, even untouched, would churn the heap, which NumPy marks for huge pages, and the
    kernel's khugepaged would later fill it in: RSS rising with no page faults, step after step).
    Arena(block) carves the same arrays out of `block`; two arenas on one block overlap from its start."""

    ALIGN = 64

    def __init__(self, block: np.ndarray | None = None):
        self.block = block
        self.used = (-block.ctypes.data) % self.ALIGN if block is not None else 0

    def __call__(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.used // self.ALIGN) * self.ALIGN
        self.used = start + nbytes
        if self.block is None:
            return np.broadcast_to(np.empty((), dtype), shape)  # no memory: the sizing pass only counts
        if self.used > len(self.block):
            raise RuntimeError(f"arena block of {len(self.block)} bytes is too small (needs {self.used})")
        return self.block[start:start + nbytes].view(dtype).reshape(shape)


class LayerActivations:
    """What one encoder layer's forward keeps for its backward."""

    def __init__(self, B: int, T: int, H: int, NH: int, F: int, dt: np.dtype, alloc, keep_probs: bool = True):
        N = B * T
        self.qkv = alloc((N, 3 * H), dt)
        self.probs = alloc((B, NH, T, T), dt) if keep_probs else None  # None: inference, fused attention
        self.ctx = alloc((N, H), dt)
        self.xhat1, self.rstd1 = alloc((N, H), dt), alloc(N, dt)  # h1 = xhat1 * w + beta, recomputed
        self.a = alloc((N, F), dt)  # the FFN pre-activation; gelu(a) is recomputed in backward
        self.xhat2, self.rstd2 = alloc((N, H), dt), alloc(N, dt)  # h2 likewise (the next layer's input)
        self.seeds = (None, None, None)  # the step's dropout seeds: attention, hidden 1, hidden 2 (no masks kept)


class Encoder:
    """ElectraModel (embeddings, projection, layers) for one config and one (B, T, dtype): its buffers,
    its forward and its backward. Gradients are written into `self.grads` (HF names relative to the model;
    the embedding tables' are added into, the others overwritten).

    shared: {table name: gradient buffer} for the embedding tables whose gradient this encoder adds into
    another's (the generator's into the discriminator's); alloc(shape, dtype) makes the activation and
    scratch buffers (an Arena to share memory; np.empty by default); the gradient buffers are always arrays
    of their own. training=False makes a forward-only encoder: the layers share one set of buffers (nothing
    is kept for a backward) and there is no backward scratch and no gradient."""

    def __init__(self, config: ElectraConfig, B: int, T: int, dt: np.dtype, shared: dict | None = None, alloc=np.empty,
                 training: bool = True):
        c = config
        self.c, self.B, self.T, self.dt = c, B, T, dt
        N, E, H, NH, F = B * T, c.embedding_size, c.hidden_size, c.num_attention_heads, c.intermediate_size
        self.N, self.E, self.H, self.NH, self.hs, self.F = N, E, H, NH, H // NH, F
        self.proj = E != H
        self.e_out, self.e_xhat, self.e_rstd = alloc((N, E), dt), alloc((N, E), dt), alloc(N, dt)
        self.x0 = alloc((N, H), dt) if self.proj else None
        self.training = training
        # the attention core: one (batch, head) pair at a time where NumPy's BLAS allows it
        # (kernels/fused_attention.py, a (T, T) scratch pair per thread; no probabilities kept in
        # inference), else batched products around the softmax kernels (full-size scores and
        # dropped-probability buffers)
        self.fused = fused_attention.available(dt)
        if training:
            self.layers = [LayerActivations(B, T, H, NH, F, dt, alloc) for _ in range(c.num_hidden_layers)]
        else:  # each layer overwrites the one below's buffers: forward reads only its own and hs_out
            self.layers = [LayerActivations(B, T, H, NH, F, dt, alloc, keep_probs=not self.fused)] * c.num_hidden_layers
        # scratch shared by the layers (forward and backward run one layer at a time)
        self.h1 = alloc((N, H), dt)  # the layer's h1 (forward), recomputed from xhat1 (backward)
        if self.fused:
            self.att_scratch = alloc(fused_attention.scratch_shape(T), dt)
            self.att_partial = alloc((num_chunks(), 3, NH, self.hs), dt)  # the qkv bias gradient's partials
        else:
            self.scores, self.probs_d = alloc((B, NH, T, T), dt), alloc((B, NH, T, T), dt)
        self.gf = alloc((N, F), dt)  # gelu(a) of the layer being computed
        self.wqkv, self.bqkv = alloc((3 * H, H), dt), alloc(3 * H, dt)
        # scratch of the forward only, then of the backward only: in an Arena the two share their bytes
        # (the output, in hs_out, is read by the head before backward starts)
        start = alloc.used if isinstance(alloc, Arena) else None
        self.hs_out = (alloc((N, H), dt), alloc((N, H), dt))  # layer outputs h2, alternately
        self.y = alloc((N, H), dt)
        if not training:
            self.grads = {}
            return
        if start is not None:
            forward_end, alloc.used = alloc.used, start
        self.x_in = alloc((N, H), dt)  # a layer's input recomputed from the layer below's xhat2
        self.tmp, self.dd = alloc((N, H), dt), alloc((N, H), dt)
        self.ds_a, self.ds_b = alloc((N, H), dt), alloc((N, H), dt)
        self.dctx, self.dqkv, self.dgf = alloc((N, H), dt), alloc((N, 3 * H), dt), alloc((N, F), dt)
        self.de, self.de_s = alloc((N, E), dt), alloc((N, E), dt)
        if start is not None:
            alloc.used = max(alloc.used, forward_end)
        self.grads = self._grad_buffers(shared)

    def _grad_buffers(self, shared):
        H, dt = self.H, self.dt
        g = {}
        for k, shape in encoder_shapes(self.c).items():
            if k in EMBEDDING_TABLES:  # added into by the scatter-adds
                g[k] = shared[k] if shared is not None else np.zeros(shape, dt)
            elif ".attention.self." not in k:
                g[k] = np.empty(shape, dt)
        for i in range(self.c.num_hidden_layers):
            pre = f"electra.encoder.layer.{i}."
            wqkv, bqkv = np.empty((3 * H, H), dt), np.empty(3 * H, dt)
            g[pre + "qkv.weight"], g[pre + "qkv.bias"] = wqkv, bqkv  # internal; the three keys below are views
            for j, name in enumerate(QKV):
                g[f"{pre}attention.self.{name}.weight"] = wqkv[j * H:(j + 1) * H]
                g[f"{pre}attention.self.{name}.bias"] = bqkv[j * H:(j + 1) * H]
        return g

    # ------------------------------------------------------------------------- forward

    def forward(self, w: dict, ids: np.ndarray, types: np.ndarray, bias: np.ndarray, rng) -> np.ndarray:
        """w: HF-named dict; ids, types (B, T) int64; bias (B, T) 0 / -inf (key_bias); rng: dropout on when
        given. Returns h (N, H), a buffer of this encoder."""
        c, B, T, NH, hs, H = self.c, self.B, self.T, self.NH, self.hs, self.H
        p_att = c.attention_probs_dropout_prob if rng is not None else 0.0
        p_hid = c.hidden_dropout_prob if rng is not None else 0.0
        self.w, self.ids, self.types, self.p_att, self.p_hid = w, ids, types, p_att, p_hid  # for backward
        eps = c.layer_norm_eps
        self.e_seed = draw_seed(rng) if p_hid else None
        embeddings_forward(ids, types, w[WORD], w[POSITION], w[TOKEN_TYPE], w[EMB_LN + "weight"], w[EMB_LN + "bias"],
                           eps, self.e_out, self.e_xhat, self.e_rstd, seed=self.e_seed, p=p_hid)
        x = self.e_out  # (N, E)
        if self.proj:
            np.matmul(x, w[PROJECT + "weight"].T, out=self.x0)
            x = add_bias(self.x0, w[PROJECT + "bias"])  # (N, H)
        scale = 1.0 / np.sqrt(hs)
        for i, L in enumerate(self.layers):
            lw = f"electra.encoder.layer.{i}."
            # the layer's three dropout seeds, in the reference's order (attention, then the two hidden)
            L.seeds = tuple(draw_seed(rng) if p else None for p in (p_att, p_hid, p_hid))
            for j, name in enumerate(QKV):
                self.wqkv[j * H:(j + 1) * H] = w[f"{lw}attention.self.{name}.weight"]
                self.bqkv[j * H:(j + 1) * H] = w[f"{lw}attention.self.{name}.bias"]
            np.matmul(x, self.wqkv.T, out=L.qkv)  # (N, 3H), + bqkv below
            q, k, v = self._heads(L.qkv)  # (B, NH, T, hs) views
            ctx = L.ctx.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)  # (B, NH, T, hs) view of (N, H)
            if self.fused:  # adds bqkv to its pairs' q, k, v first
                fused_attention.attention_forward(q, k, v, bias, scale, p_att, L.seeds[0], L.probs, ctx,
                                                  self.att_scratch, qkv_bias=self.bqkv.reshape(3, NH, hs))
            else:
                add_bias(L.qkv, self.bqkv)
                bmm(q, k.swapaxes(-1, -2), self.scores)  # (B, NH, T, T)
                softmax_dropout_forward(self.scores, bias, scale, p_att, L.seeds[0], L.probs, self.probs_d)
                bmm(self.probs_d if p_att else L.probs, v, ctx)
            np.matmul(L.ctx, w[lw + "attention.output.dense.weight"].T, out=self.y)
            residual_layernorm_forward(self.y, w[lw + "attention.output.LayerNorm.weight"],
                                       w[lw + "attention.output.LayerNorm.bias"], eps, self.h1, L.xhat1, L.rstd1,
                                       bias=w[lw + "attention.output.dense.bias"], resid=x,
                                       seed=L.seeds[1], p=p_hid)
            np.matmul(self.h1, w[lw + "intermediate.dense.weight"].T, out=L.a)  # (N, F)
            bias_gelu_forward(L.a, w[lw + "intermediate.dense.bias"], self.gf, c.hidden_act)
            np.matmul(self.gf, w[lw + "output.dense.weight"].T, out=self.y)  # (N, H)
            h2 = self.hs_out[i % 2]
            residual_layernorm_forward(self.y, w[lw + "output.LayerNorm.weight"], w[lw + "output.LayerNorm.bias"], eps,
                                       h2, L.xhat2, L.rstd2, bias=w[lw + "output.dense.bias"], resid=self.h1,
                                       seed=L.seeds[2], p=p_hid)
            x = h2
        return x

    def _layer_input(self, i):
        """Layer i's input x: the embeddings' output for layer 0, else layer i-1's h2, recomputed."""
        if i == 0:
            return self.x0 if self.proj else self.e_out
        lw = f"electra.encoder.layer.{i - 1}.output.LayerNorm."
        return layernorm_apply(self.layers[i - 1].xhat2, self.w[lw + "weight"], self.w[lw + "bias"], self.x_in)

    def _heads(self, buf):
        """The q, k, v head views (B, NH, T, hs) of an (N, 3H) buffer."""
        b5 = buf.reshape(self.B, self.T, 3, self.NH, self.hs)
        return tuple(b5[:, :, j].transpose(0, 2, 1, 3) for j in range(3))

    # ------------------------------------------------------------------------- backward

    def backward(self, dh: np.ndarray) -> None:
        """dh (N, H): gradient of the last hidden state. Writes self.grads (embedding tables: added into)."""
        if not self.training:
            raise RuntimeError("this encoder was built for inference (training=False): it has no backward")
        c, w, g, B, T, NH, hs, H = self.c, self.w, self.grads, self.B, self.T, self.NH, self.hs, self.H
        p_att, p_hid = self.p_att, self.p_hid
        scale = 1.0 / np.sqrt(hs)
        dy_a, dy_b = dh, None
        for i in reversed(range(len(self.layers))):
            L, lw = self.layers[i], f"electra.encoder.layer.{i}."
            # h2 = LN(h1 + dropout(W2 g + b2)): the residual merge of the layer above happens inside the kernel
            ds2 = self.ds_a
            residual_layernorm_backward(dy_a, L.xhat2, L.rstd2, w[lw + "output.LayerNorm.weight"], ds2,
                                        g[lw + "output.LayerNorm.weight"], g[lw + "output.LayerNorm.bias"], dy_b=dy_b,
                                        seed=L.seeds[2], p=p_hid, dd=self.dd if p_hid else None,
                                        dbias=g[lw + "output.dense.bias"])
            df = self.dd if p_hid else ds2  # (N, H)
            np.matmul(df, w[lw + "output.dense.weight"], out=self.dgf)  # dg (N, F)
            bias_gelu_backward(self.dgf, L.a, self.dgf, g[lw + "intermediate.dense.bias"], c.hidden_act, g=self.gf)
            np.matmul(df.T, self.gf, out=g[lw + "output.dense.weight"])  # dW2 = df^T gelu(a)
            h1 = layernorm_apply(L.xhat1, w[lw + "attention.output.LayerNorm.weight"],
                                 w[lw + "attention.output.LayerNorm.bias"], self.h1)  # the forward's h1 again
            np.matmul(self.dgf.T, h1, out=g[lw + "intermediate.dense.weight"])
            np.matmul(self.dgf, w[lw + "intermediate.dense.weight"], out=self.tmp)  # d(h1) through the FFN
            # h1 = LN(x + dropout(Wo ctx + bo)); d(h1) = ds2 (skip path) + tmp (FFN path)
            ds1 = self.ds_b
            residual_layernorm_backward(ds2, L.xhat1, L.rstd1, w[lw + "attention.output.LayerNorm.weight"], ds1,
                                        g[lw + "attention.output.LayerNorm.weight"],
                                        g[lw + "attention.output.LayerNorm.bias"], dy_b=self.tmp,
                                        seed=L.seeds[1], p=p_hid, dd=self.dd if p_hid else None,
                                        dbias=g[lw + "attention.output.dense.bias"])
            do = self.dd if p_hid else ds1
            np.matmul(do.T, L.ctx, out=g[lw + "attention.output.dense.weight"])
            np.matmul(do, w[lw + "attention.output.dense.weight"], out=self.dctx)  # (N, H)
            # attention core
            q, k, v = self._heads(L.qkv)
            dq, dk, dv = self._heads(self.dqkv)
            dctx = self.dctx.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)  # (B, NH, T, hs)
            if self.fused:  # also sums the qkv bias gradient
                fused_attention.attention_backward(dctx, q, k, v, L.probs, scale, p_att, L.seeds[0], dq, dk, dv,
                                                   self.att_scratch, dbias=g[lw + "qkv.bias"].reshape(3, NH, hs),
                                                   partial=self.att_partial)
            else:
                bmm(dctx, v.swapaxes(-1, -2), self.scores)  # dP'
                softmax_dropout_backward(self.scores, L.probs, L.seeds[0], p_att, scale, self.scores,
                                         self.probs_d)  # dS * scale
                bmm((self.probs_d if p_att else L.probs).swapaxes(-1, -2), dctx, dv)
                bmm(self.scores, k, dq)
                bmm(self.scores.swapaxes(-1, -2), q, dk)
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
        embeddings_backward(dx, self.ids, self.types, self.e_xhat, self.e_rstd, w[EMB_LN + "weight"], g[WORD],
                            g[POSITION], g[TOKEN_TYPE], g[EMB_LN + "weight"], g[EMB_LN + "bias"], self.de_s,
                            seed=self.e_seed, p=p_hid)
