"""The fast pretraining step: the same model and objective as model.py, with the elementwise work in Numba
kernels (electra_np/kernels), every matrix product in BLAS writing into a preallocated buffer, and every
activation and gradient buffer allocated once per (B, T, dtype) and reused by every later step.

    step = make_fast_step(setup)          # engine.make_step(setup, "fast") is the public switch
    loss, metrics, grads = step(params, batch, rng, corruption=None, train=True)

Semantics are model.electra_forward + model.electra_backward's, to float tolerance: the same validation
(model.prepare_step: the same checks and masking draws), the same draws from `rng` in the
same order (masking.corrupt; each dropout's counter_rng seed, generator first, in forward order;
masking.gumbel_sample's seed), the same metrics. The kernels compute the uniforms from the seeds.

The returned `grads` are views into the workspace: valid until the next call of the same step function
with the same batch shape, which overwrites them. Copy them to keep them.

Layout: activations are 2-D (N = B*T rows). q, k and v live side by side in one (N, 3H) buffer written by
one matmul against the three weights stacked (copied into a (3H, H) buffer each step), so their gradients
come out of one matmul too, as contiguous row blocks (the query/key/value weight gradients are views).

Memory: a layer keeps its LayerNorms' normalized inputs (xhat) but not their outputs h = xhat * w + beta,
which backward recomputes (layernorm_apply, one pass) where a weight gradient needs them. And the step runs
the generator to the end of its backward before the discriminator's forward starts (no gradient flows
through the sampled tokens, and backward draws nothing from rng, so the draws keep their order): the two
encoders' activations and scratch are never live at once and share one block of memory (`Arena`). The
gradients, which outlive the step, have buffers of their own.
"""

import numpy as np

from . import runtime as threads
from ..counter_rng import draw_seed
from .kernels.attention import softmax_dropout_backward, softmax_dropout_forward
from .kernels.blas import bmm
from .kernels.common import add_bias, num_chunks, sum_rows
from .kernels import fused_attention
from .kernels.embeddings import embeddings_backward, embeddings_forward
from .kernels.gelu import bias_gelu_backward, bias_gelu_forward
from .kernels.layernorm import layernorm_apply, residual_layernorm_backward, residual_layernorm_forward
from .kernels.losses import bce_backward, bce_forward, softmax_xent_backward, softmax_xent_forward
from .kernels.sampling import gumbel_argmax
from ..masking import GUMBEL_EPS
from ..model import disc_metrics, prepare_step
from ..ops.attention import MASKED
from ..params import check_params, generator_params, sub
from ..validate import check_batch

WORD = "electra.embeddings.word_embeddings.weight"


def key_bias(attention_mask, dt):
    """The additive key mask (B, T) of ops/attention.py: 0 on real tokens, MASKED on padding."""
    return np.where(attention_mask != 0, dt.type(0), dt.type(MASKED))


class Arena:
    """Hands out arrays in order from one block of memory, each 64-byte aligned. Arena() has no block: it
    counts the bytes and returns read-only stand-ins of the right shape that hold no memory (the sizing
    pass: real arrays, even untouched, would churn the heap, which NumPy marks for huge pages, and the
    kernel's khugepaged would later fill it in: RSS rising with no page faults, step after step).
    Arena(block) carves the same arrays out of `block`; two arenas on one block overlap from its start."""

    ALIGN = 64

    def __init__(self, block=None):
        self.block = block
        self.used = (-block.ctypes.data) % self.ALIGN if block is not None else 0

    def __call__(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.used // self.ALIGN) * self.ALIGN
        self.used = start + nbytes
        if self.block is None:
            return np.broadcast_to(np.empty((), dtype), shape)  # no memory: the sizing pass only counts
        if self.used > len(self.block):
            raise RuntimeError(f"arena block of {len(self.block)} bytes is too small (needs {self.used})")
        return self.block[start:start + nbytes].view(dtype).reshape(shape)


class _Layer:
    """One encoder layer's saved activations."""

    def __init__(self, B, T, H, NH, F, dt, alloc, keep_probs=True):
        N = B * T
        self.qkv = alloc((N, 3 * H), dt)
        self.probs = alloc((B, NH, T, T), dt) if keep_probs else None  # None: inference, fused attention
        self.ctx = alloc((N, H), dt)
        self.xhat1, self.rstd1 = alloc((N, H), dt), alloc(N, dt)  # h1 = xhat1 * w + beta, recomputed
        self.a = alloc((N, F), dt)  # the FFN pre-activation; gelu(a) is recomputed in backward
        self.xhat2, self.rstd2 = alloc((N, H), dt), alloc(N, dt)  # h2 likewise (the next layer's input)
        self.seeds = (None, None, None)  # the step's dropout seeds: attention, hidden 1, hidden 2 (no masks kept)


class _Encoder:
    """ElectraModel (embeddings, projection, layers) for one config and one (B, T, dtype): its buffers,
    its forward and its backward. Gradients are written into `self.grads` (HF names relative to the model).
    alloc(shape, dtype) makes the activation and scratch buffers (an Arena to share memory; np.empty by
    default); the gradient buffers are always arrays of their own. training=False makes a forward-only
    encoder: the layers share one set of buffers (nothing is kept for a backward) and there is no backward
    scratch and no gradient."""

    def __init__(self, c, B, T, dt, shared=None, alloc=np.empty, training=True):
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
            self.layers = [_Layer(B, T, H, NH, F, dt, alloc) for _ in range(c.num_hidden_layers)]
        else:  # each layer overwrites the one below's buffers: forward reads only its own and hs_out
            self.layers = [_Layer(B, T, H, NH, F, dt, alloc, keep_probs=not self.fused)] * c.num_hidden_layers
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
        c, dt, E, H, F = self.c, self.dt, self.E, self.H, self.F
        g = {}
        emb = {WORD: (c.vocab_size, E), "electra.embeddings.position_embeddings.weight": (c.max_position_embeddings, E),
               "electra.embeddings.token_type_embeddings.weight": (c.type_vocab_size, E)}
        for k, shape in emb.items():
            g[k] = shared[k] if shared is not None else np.zeros(shape, dt)
        g["electra.embeddings.LayerNorm.weight"], g["electra.embeddings.LayerNorm.bias"] = np.empty(E, dt), np.empty(E, dt)
        if self.proj:
            g["electra.embeddings_project.weight"], g["electra.embeddings_project.bias"] = np.empty((H, E), dt), np.empty(H, dt)
        for i in range(c.num_hidden_layers):
            pre = f"electra.encoder.layer.{i}."
            wqkv, bqkv = np.empty((3 * H, H), dt), np.empty(3 * H, dt)
            g[pre + "qkv.weight"], g[pre + "qkv.bias"] = wqkv, bqkv  # internal; the three keys below are views
            for j, name in enumerate(("query", "key", "value")):
                g[f"{pre}attention.self.{name}.weight"] = wqkv[j * H:(j + 1) * H]
                g[f"{pre}attention.self.{name}.bias"] = bqkv[j * H:(j + 1) * H]
            for name, shape in (("attention.output.dense.weight", (H, H)), ("attention.output.dense.bias", (H,)),
                                ("attention.output.LayerNorm.weight", (H,)), ("attention.output.LayerNorm.bias", (H,)),
                                ("intermediate.dense.weight", (F, H)), ("intermediate.dense.bias", (F,)),
                                ("output.dense.weight", (H, F)), ("output.dense.bias", (H,)),
                                ("output.LayerNorm.weight", (H,)), ("output.LayerNorm.bias", (H,))):
                g[pre + name] = np.empty(shape, dt)
        return g

    # ------------------------------------------------------------------------- forward

    def forward(self, w, ids, types, bias, rng):
        """w: HF-named dict; ids, types (B, T) int64; bias (B, T) 0 / -inf; rng: dropout on when given.
        Returns h (N, H), a buffer of this encoder."""
        c, B, T, NH, hs, H = self.c, self.B, self.T, self.NH, self.hs, self.H
        p_att = c.attention_probs_dropout_prob if rng is not None else 0.0
        p_hid = c.hidden_dropout_prob if rng is not None else 0.0
        self.p_att, self.p_hid = p_att, p_hid
        eps = c.layer_norm_eps
        self.e_seed = draw_seed(rng) if p_hid else None
        embeddings_forward(ids, types, w[WORD], w["electra.embeddings.position_embeddings.weight"],
                           w["electra.embeddings.token_type_embeddings.weight"], w["electra.embeddings.LayerNorm.weight"],
                           w["electra.embeddings.LayerNorm.bias"], eps, self.e_out, self.e_xhat, self.e_rstd,
                           seed=self.e_seed, p=p_hid)
        x = self.e_out  # (N, E)
        if self.proj:
            np.matmul(x, w["electra.embeddings_project.weight"].T, out=self.x0)
            x = add_bias(self.x0, w["electra.embeddings_project.bias"])  # (N, H)
        scale = 1.0 / np.sqrt(hs)
        for i, L in enumerate(self.layers):
            lw = f"electra.encoder.layer.{i}."
            # the layer's three dropout seeds, in the reference's order (attention, then the two hidden)
            L.seeds = tuple(draw_seed(rng) if p else None for p in (p_att, p_hid, p_hid))
            for j, name in enumerate(("query", "key", "value")):
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
        self.w = w
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

    def backward(self, dh):
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
            for j, name in enumerate(("query", "key", "value")):  # the stacked weights of the forward
                self.wqkv[j * H:(j + 1) * H] = w[f"{lw}attention.self.{name}.weight"]
            np.matmul(self.dqkv.T, self._layer_input(i), out=g[lw + "qkv.weight"])
            np.matmul(self.dqkv, self.wqkv, out=self.tmp)  # dx through q, k and v (summed by the matmul)
            dy_a, dy_b = ds1, self.tmp  # dx = ds1 (skip path) + tmp (attention path), merged below
            self.ds_a, self.ds_b = self.ds_b, self.ds_a  # ping-pong: the next layer writes the other buffer
        np.add(dy_a, dy_b, out=dy_a)  # (N, H) gradient of the encoder input
        dx = dy_a
        if self.proj:
            np.matmul(dx.T, self.e_out, out=g["electra.embeddings_project.weight"])
            sum_rows(dx, g["electra.embeddings_project.bias"])
            dx = np.matmul(dx, w["electra.embeddings_project.weight"], out=self.de)  # (N, E)
        embeddings_backward(dx, self.ids, self.types, self.e_xhat, self.e_rstd, w["electra.embeddings.LayerNorm.weight"],
                            g[WORD], g["electra.embeddings.position_embeddings.weight"],
                            g["electra.embeddings.token_type_embeddings.weight"], g["electra.embeddings.LayerNorm.weight"],
                            g["electra.embeddings.LayerNorm.bias"], self.de_s, seed=self.e_seed, p=p_hid)


class Workspace:
    """Every buffer of one (B, T, dtype) step: the two encoders, the two heads, the gradients. The
    generator's activations and the discriminator's share one block (see the module docstring)."""

    def __init__(self, setup, B, T, dt):
        self.B, self.T, self.dt = B, T, dt
        self.electra = setup.objective.objective == "electra"
        gen_arena, disc_arena = Arena(), Arena()
        self._build(setup, gen_arena, disc_arena)  # sizing pass
        self.gen_bytes, self.disc_bytes = gen_arena.used, disc_arena.used
        self.arena_bytes = max(gen_arena.used, disc_arena.used) + Arena.ALIGN
        self.block = np.empty(self.arena_bytes, np.uint8)
        self._build(setup, Arena(self.block), Arena(self.block))

    def _build(self, setup, gen_alloc, disc_alloc):
        B, T, dt = self.B, self.T, self.dt
        gen_c, disc_c = setup.gen, setup.disc
        N, E, V = B * T, gen_c.embedding_size, gen_c.vocab_size
        self.disc = _Encoder(disc_c, B, T, dt, alloc=disc_alloc) if self.electra else None
        shared = {k: self.disc.grads[k] for k in (WORD, "electra.embeddings.position_embeddings.weight",
                                                  "electra.embeddings.token_type_embeddings.weight")} if self.electra else None
        self.gen = _Encoder(gen_c, B, T, dt, shared, alloc=gen_alloc)
        self.M_cap = 0
        self._head_buffers(B * setup.objective.max_predictions(T), E, V, gen_c.hidden_size, gen_alloc)
        self.gen_dh = gen_alloc((N, gen_c.hidden_size), dt)
        self.xent_partial = gen_alloc((num_chunks(), V), dt)  # the output bias gradient's per-thread sums
        self.gumbel_rows = gen_alloc((num_chunks(), V), dt)  # a row of perturbed logits per thread
        self.gen_grads = {"generator_predictions.dense.weight": np.empty((E, gen_c.hidden_size), dt),
                          "generator_predictions.dense.bias": np.empty(E, dt),
                          "generator_predictions.LayerNorm.weight": np.empty(E, dt),
                          "generator_predictions.LayerNorm.bias": np.empty(E, dt),
                          "generator_lm_head.bias": np.empty(V, dt)}
        if self.electra:
            H = disc_c.hidden_size
            self.d_a, self.d_g, self.d_dg, self.d_dh = (disc_alloc((N, H), dt) for _ in range(4))
            self.d_logits, self.d_dlogits = disc_alloc(N, dt), disc_alloc(N, dt)
            self.disc_grads = {"discriminator_predictions.dense.weight": np.empty((H, H), dt),
                               "discriminator_predictions.dense.bias": np.empty(H, dt),
                               "discriminator_predictions.dense_prediction.weight": np.empty((1, H), dt),
                               "discriminator_predictions.dense_prediction.bias": np.empty(1, dt)}

    def _head_buffers(self, M, E, V, Hg, alloc=np.empty):
        """The generator head's buffers, for up to M masked positions (grown, outside the arena, if a given
        corruption masks more than the objective's max_predictions)."""
        if M <= self.M_cap:
            return
        dt = self.dt
        self.M_cap = M
        self.hm, self.dhm = alloc((M, Hg), dt), alloc((M, Hg), dt)
        self.ha, self.hg, self.hz, self.hxhat = (alloc((M, E), dt) for _ in range(4))
        self.hrstd, self.dz = alloc(M, dt), alloc((M, E), dt)
        self.logits = alloc((M, V), dt)
        self.lse, self.row_loss, self.argmax = alloc(M, np.float64), alloc(M, np.float64), alloc(M, np.int64)


def make_fast_step(setup):
    """The fast twin of engine.reference_step(setup): step(params, batch, rng, corruption=None, train=True)
    -> (loss, metrics, grads). Workspaces are kept per (B, T, dtype) in the closure."""
    threads.warn_if_blas_spins()
    workspaces = {}
    shapes = setup.shapes()
    obj = setup.objective

    def step(params, batch, rng, corruption=None, train=True):
        # ---- validation and corruption: the reference's own functions, in the reference's order
        input_ids, attention_mask, token_type_ids, corruption = prepare_step(params, setup, batch, rng, corruption,
                                                                             shapes)
        drop_rng = rng if train else None
        B, T = input_ids.shape
        dt = next(iter(params.values())).dtype
        key = (B, T, dt)
        if key not in workspaces:
            workspaces[key] = Workspace(setup, B, T, dt)
        ws = workspaces[key]
        bias = key_bias(attention_mask, dt)  # (B, T)
        gen_w = generator_params(params)

        # ---- generator: MLM at the masked positions only
        positions = np.flatnonzero(corruption.masked)  # (M,)
        M = len(positions)
        gen_ids = np.where(corruption.use_mask_token, setup.mask_id, input_ids)
        gen, gc = ws.gen, setup.gen
        gen.ids, gen.types = gen_ids, token_type_ids
        h = gen.forward(gen_w, gen_ids, token_type_ids, bias, drop_rng)  # (N, Hg)
        ws._head_buffers(M, gc.embedding_size, gc.vocab_size, gc.hidden_size)
        hm, ha, hg, hz = ws.hm[:M], ws.ha[:M], ws.hg[:M], ws.hz[:M]
        np.take(h, positions, axis=0, out=hm)  # (M, Hg)
        np.matmul(hm, gen_w["generator_predictions.dense.weight"].T, out=ha)
        bias_gelu_forward(ha, gen_w["generator_predictions.dense.bias"], hg, "gelu")
        residual_layernorm_forward(hg, gen_w["generator_predictions.LayerNorm.weight"],
                                   gen_w["generator_predictions.LayerNorm.bias"], gc.layer_norm_eps, hz,
                                   ws.hxhat[:M], ws.hrstd[:M])
        logits = ws.logits[:M]
        np.matmul(hz, gen_w[WORD].T, out=logits)
        add_bias(logits, gen_w["generator_lm_head.bias"])  # (M, V)
        mlm_labels = input_ids.reshape(-1)[positions]
        mlm_loss = softmax_xent_forward(logits, mlm_labels, ws.lse[:M], ws.row_loss[:M], ws.argmax[:M])
        metrics = {"mlm_loss": float(mlm_loss),
                   "mlm_acc": float((ws.argmax[:M] == mlm_labels).mean()) if M else 0.0}
        if obj.objective == "electra":
            # ---- sample replacements: masking.gumbel_sample's draws and argmax, fused
            samples = corruption.samples
            if samples is None:
                if rng is None:
                    raise ValueError("electra_forward needs rng to sample replacements, or corruption.samples")
                samples = gumbel_argmax(logits, obj.temperature, draw_seed(rng), GUMBEL_EPS, np.empty(M, np.int64),
                                        scratch=ws.gumbel_rows)  # masking.gumbel_sample's draw and argmax
            samples = np.asarray(samples, np.int64)

        # ---- generator backward, before the discriminator runs (its buffers are about to be reused).
        # Shared tables: the tied output projection's gradient initializes the word table, then the
        # generator's and (below) the discriminator's embedding scatter-adds accumulate into it.
        gg, genc = ws.gen_grads, ws.gen.grads
        genc["electra.embeddings.position_embeddings.weight"].fill(0)
        genc["electra.embeddings.token_type_embeddings.weight"].fill(0)
        softmax_xent_backward(1.0, logits, mlm_labels, ws.lse[:M], logits,  # logits now hold dlogits
                              dbias=gg["generator_lm_head.bias"], partial=ws.xent_partial)
        np.matmul(logits.T, hz, out=genc[WORD])  # (V, E): tied output path
        dz = ws.dz[:M]
        np.matmul(logits, gen_w[WORD], out=dz)  # (M, E)
        residual_layernorm_backward(dz, ws.hxhat[:M], ws.hrstd[:M], gen_w["generator_predictions.LayerNorm.weight"], dz,
                                    gg["generator_predictions.LayerNorm.weight"], gg["generator_predictions.LayerNorm.bias"])
        bias_gelu_backward(dz, ha, dz, gg["generator_predictions.dense.bias"], "gelu")
        np.matmul(dz.T, hm, out=gg["generator_predictions.dense.weight"])
        np.matmul(dz, gen_w["generator_predictions.dense.weight"], out=ws.dhm[:M])
        ws.gen_dh.fill(0)
        ws.gen_dh[positions] = ws.dhm[:M]  # positions are distinct
        gen.backward(ws.gen_dh)
        if obj.objective == "mlm":
            metrics["loss"] = float(mlm_loss)
            return mlm_loss, metrics, _gather_grads(shapes, ("generator.", gg, genc))

        # ---- discriminator: replaced-token detection on every real token
        disc_ids = input_ids.copy()
        disc_ids.reshape(-1)[positions] = samples
        labels = (disc_ids != input_ids).astype(np.int64)
        disc_w, dc, disc = sub(params, "discriminator."), setup.disc, ws.disc
        disc.ids, disc.types = disc_ids, token_type_ids
        hd = disc.forward(disc_w, disc_ids, token_type_ids, bias, drop_rng)  # (N, H)
        np.matmul(hd, disc_w["discriminator_predictions.dense.weight"].T, out=ws.d_a)
        bias_gelu_forward(ws.d_a, disc_w["discriminator_predictions.dense.bias"], ws.d_g, dc.hidden_act)
        np.matmul(ws.d_g, disc_w["discriminator_predictions.dense_prediction.weight"][0], out=ws.d_logits)
        ws.d_logits += disc_w["discriminator_predictions.dense_prediction.bias"][0]
        disc_logits = ws.d_logits.reshape(B, T)
        disc_loss, n_real = bce_forward(disc_logits, labels, attention_mask)
        loss = mlm_loss + mlm_loss.dtype.type(obj.disc_weight) * disc_loss
        metrics.update(disc_metrics(loss, disc_loss, disc_logits, labels, attention_mask))
        dwt = mlm_loss.dtype.type(obj.disc_weight)
        dg = ws.disc_grads
        bce_backward(dwt, disc_logits, labels, attention_mask, n_real, ws.d_dlogits.reshape(B, T))
        dl = ws.d_dlogits
        np.matmul(dl, ws.d_g, out=dg["discriminator_predictions.dense_prediction.weight"][0])
        dg["discriminator_predictions.dense_prediction.bias"][0] = dl.sum()
        np.multiply(dl[:, None], disc_w["discriminator_predictions.dense_prediction.weight"], out=ws.d_dg)
        bias_gelu_backward(ws.d_dg, ws.d_a, ws.d_dg, dg["discriminator_predictions.dense.bias"], dc.hidden_act)
        np.matmul(ws.d_dg.T, hd, out=dg["discriminator_predictions.dense.weight"])
        np.matmul(ws.d_dg, disc_w["discriminator_predictions.dense.weight"], out=ws.d_dh)
        disc.backward(ws.d_dh)
        dgr = disc.grads
        for k in ("electra.embeddings.LayerNorm.weight", "electra.embeddings.LayerNorm.bias"):
            dgr[k] += genc[k]  # shared LayerNorm: discriminator + generator
        return loss, metrics, _gather_grads(shapes, ("generator.", gg, genc), ("discriminator.", dg, dgr))

    step.workspaces = workspaces
    return step


def _gather_grads(shapes, *sources):
    """The step's gradient dict, in the order of `shapes`: (prefix, head grads, encoder grads) per model."""
    grads = {}
    for k in shapes:
        for prefix, head, enc in sources:
            if k.startswith(prefix):
                r = k[len(prefix):]
                grads[k] = head[r] if r in head else enc[r]
    return grads


def make_fast_discriminator(config):
    """Inference: ElectraForPreTraining's logits with the fast encoder, dropout off.

        logits = make_fast_discriminator(config)(w, batch)   # w: HF-named discriminator dict; (B, T) logits

    Validation as the training step's (check_batch, check_params). The logits are a reused buffer, valid
    until the next call with the same (B, T, dtype)."""
    from ..params import discriminator_shapes

    threads.warn_if_blas_spins()
    shapes = discriminator_shapes(config)
    encoders = {}

    def logits_fn(w, batch):
        check_params(w, shapes, "discriminator params")
        ids, mask, types = check_batch(config, batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        B, T = ids.shape
        dt = w[WORD].dtype
        key = (B, T, dt)
        if key not in encoders:
            enc = _Encoder(config, B, T, dt, training=False)
            enc.head_a, enc.head_g, enc.logits = np.empty((B * T, config.hidden_size), dt), \
                np.empty((B * T, config.hidden_size), dt), np.empty(B * T, dt)
            encoders[key] = enc
        enc = encoders[key]
        bias = key_bias(mask, dt)
        h = enc.forward(w, ids, types, bias, None)
        np.matmul(h, w["discriminator_predictions.dense.weight"].T, out=enc.head_a)
        bias_gelu_forward(enc.head_a, w["discriminator_predictions.dense.bias"], enc.head_g, config.hidden_act)
        np.matmul(enc.head_g, w["discriminator_predictions.dense_prediction.weight"][0], out=enc.logits)
        enc.logits += w["discriminator_predictions.dense_prediction.bias"][0]
        return enc.logits.reshape(B, T)

    return logits_fn


def FastStep(setup):  # TEMPORARY shim: replaced by the FastStep class (issue 13 refactor in progress)
    return make_fast_step(setup)
