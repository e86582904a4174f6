"""The fast pretraining step: model.electra_forward + model.electra_backward, line for line, with the encoders
of fast/encoder.py and the heads of fast/heads.py working in buffers allocated once per (B, T, dtype).

    step = FastStep(setup)                # engine.make_step(setup, "fast") is the public switch
    loss, metrics, grads = step(params, batch, rng, corruption=None, train=True)
    loss, metrics, grads, out = step(params, batch, rng, outputs=True)   # out: what the reference's cache shows

Semantics are the reference's, to float tolerance: the same validation (model.prepare_step: the same checks
and masking draws), the same draws from `rng` in the same order (masking.corrupt; each dropout's counter_rng
seed, generator first, in forward order; masking.gumbel_sample's seed), the same metrics. The kernels
compute the uniforms from the seeds.

One difference of order: the step runs the generator to the end of its backward before the discriminator's
forward starts. No gradient flows through the sampled tokens, and backward draws nothing from rng, so the
draws keep their order; in exchange the two encoders' activations and scratch are never live at once and
share one block of memory (`Workspace`). The gradients, which outlive the step, have buffers of their own.

The returned `grads` are views into the workspace: valid until the next call of the same step with the same
batch shape, which overwrites them. Copy them to keep them.
"""

import numpy as np

from ..counter_rng import draw_seed
from ..masking import Corruption, with_samples
from ..model import Electra, disc_metrics, prepare_step
from ..params import EMBEDDING_TABLES, POSITION, SHARED_KEYS, TOKEN_TYPE, WORD, generator_params, sub
from . import runtime
from .encoder import Arena, Encoder, key_bias
from .heads import DiscriminatorHead, GeneratorHead
from .kernels.losses import bce_backward, bce_forward


class Workspace:
    """Every buffer of one (B, T, dtype) step: the two encoders, the two heads, the gradients. The
    generator's activations and the discriminator's share one block (see the module docstring)."""

    def __init__(self, setup: Electra, B: int, T: int, dt: np.dtype):
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
        self.disc = Encoder(setup.disc, B, T, dt, alloc=disc_alloc) if self.electra else None
        shared = {k: self.disc.grads[k] for k in EMBEDDING_TABLES} if self.electra else None
        self.gen = Encoder(setup.gen, B, T, dt, shared, alloc=gen_alloc)  # adds into the discriminator's tables
        self.gen_head = GeneratorHead(setup.gen, B, T, B * setup.objective.max_predictions(T), dt, gen_alloc)
        self.disc_head = DiscriminatorHead(setup.disc, B, T, dt, disc_alloc) if self.electra else None


class FastStep:
    """The fast twin of engine.reference_step(setup): step(params, batch, rng, corruption=None, train=True,
    outputs=False) -> (loss, metrics, grads) [+ outputs]. Workspaces are kept per (B, T, dtype)."""

    def __init__(self, setup: Electra):
        runtime.configure()
        self.setup, self.shapes = setup, setup.shapes()
        self.workspaces: dict[tuple, Workspace] = {}

    def workspace(self, B: int, T: int, dt: np.dtype) -> Workspace:
        if (B, T, dt) not in self.workspaces:
            self.workspaces[B, T, dt] = Workspace(self.setup, B, T, dt)
        return self.workspaces[B, T, dt]

    def __call__(self, params: dict, batch: dict, rng: np.random.Generator | None, corruption=None, train: bool = True,
                 outputs: bool = False, temperature: float | None = None) -> tuple:
        """As model.electra_forward then model.electra_backward. outputs=True adds a dict of fresh copies of
        what the reference's cache exposes: mlm_logits (M, V), the corruption with its samples, and for
        ELECTRA disc_logits (B, T) and labels (B, T)."""
        setup, obj = self.setup, self.setup.objective
        input_ids, attention_mask, token_type_ids, corruption = prepare_step(params, setup, batch, rng, corruption,
                                                                             self.shapes)
        drop_rng = rng if train else None
        ws = self.workspace(*input_ids.shape, next(iter(params.values())).dtype)
        bias = key_bias(attention_mask, ws.dt)  # (B, T)
        out = {}

        # generator: a masked language model on the [MASK]ed input, evaluated at the masked positions
        positions = np.flatnonzero(corruption.masked)  # (M,) row-major
        gen_ids = np.where(corruption.use_mask_token, setup.mask_id, input_ids)  # (B, T)
        gen_w = generator_params(params)
        h = ws.gen.forward(gen_w, gen_ids, token_type_ids, bias, drop_rng)  # (N, Hg)
        mlm_logits = ws.gen_head.forward(h, positions, gen_w)  # (M, V)
        mlm_labels = input_ids.reshape(-1)[positions]  # (M,)
        mlm_loss, mlm_argmax = ws.gen_head.loss_forward(mlm_labels)
        metrics = {"mlm_loss": float(mlm_loss),
                   "mlm_acc": float((mlm_argmax == mlm_labels).mean()) if len(positions) else 0.0}
        if outputs:
            out["mlm_logits"] = mlm_logits.copy()  # before the loss's backward overwrites them

        if obj.objective == "electra":
            # sample replacements: Gumbel-max on the logits; the sample is data, no gradient flows through it
            samples = corruption.samples
            if samples is None:
                if rng is None:
                    raise ValueError("electra_forward needs rng to sample replacements, or corruption.samples")
                t = obj.temperature if temperature is None else temperature
                samples = ws.gen_head.sample(t, draw_seed(rng))  # masking.gumbel_sample's draw
            samples = np.asarray(samples, np.int64)

        # generator backward, before the discriminator runs (its activations are about to be reused).
        # Shared tables: the tied output projection's gradient initializes the word table, then the generator's
        # and (below) the discriminator's embedding scatter-adds accumulate into it and the other two tables.
        ws.gen.grads[POSITION].fill(0)
        ws.gen.grads[TOKEN_TYPE].fill(0)
        ws.gen_head.loss_backward(1.0)  # softmax_cross_entropy_backward
        dh = ws.gen_head.backward(ws.gen.grads[WORD])  # (N, Hg); the word table gets the tied output path
        ws.gen.backward(dh)  # + the generator's input path
        if obj.objective == "mlm":
            metrics["loss"] = float(mlm_loss)
            if outputs:
                out["corruption"] = _copy(corruption)
            grads = _gather(self.shapes, ("generator.", ws.gen_head.grads, ws.gen.grads))
            return (mlm_loss, metrics, grads, out) if outputs else (mlm_loss, metrics, grads)

        disc_ids = input_ids.copy()
        disc_ids.reshape(-1)[positions] = samples  # (B, T)
        labels = (disc_ids != input_ids).astype(np.int64)  # a correct guess counts as original

        # discriminator: replaced-token detection on every real token
        disc_w = sub(params, "discriminator.")
        hd = ws.disc.forward(disc_w, disc_ids, token_type_ids, bias, drop_rng)  # (N, H)
        disc_logits = ws.disc_head.forward(hd, disc_w)  # (B, T)
        disc_loss, n_real = bce_forward(disc_logits, labels, attention_mask)
        loss = mlm_loss + mlm_loss.dtype.type(obj.disc_weight) * disc_loss
        metrics.update(disc_metrics(loss, disc_loss, disc_logits, labels, attention_mask))
        if outputs:
            out.update(disc_logits=disc_logits.copy(), labels=labels,
                       corruption=_copy(with_samples(corruption, samples)))

        # discriminator backward
        ddisc = bce_backward(mlm_loss.dtype.type(obj.disc_weight), disc_logits, labels, attention_mask, n_real,
                             ws.disc_head.dlogits)  # (B, T)
        ws.disc.backward(ws.disc_head.backward(ddisc, disc_w))  # + the discriminator's input path
        for k in SHARED_KEYS:  # shared embeddings: the tables were added into in place, the LayerNorm is added here
            if k not in EMBEDDING_TABLES:
                ws.disc.grads[k] += ws.gen.grads[k]
        grads = _gather(self.shapes, ("generator.", ws.gen_head.grads, ws.gen.grads),
                        ("discriminator.", ws.disc_head.grads, ws.disc.grads))
        return (loss, metrics, grads, out) if outputs else (loss, metrics, grads)


def _gather(shapes, *sources):
    """The step's gradient dict, in the order of `shapes`: (prefix, head grads, encoder grads) per model."""
    grads = {}
    for k in shapes:
        for prefix, head, enc in sources:
            if k.startswith(prefix):
                r = k[len(prefix):]
                grads[k] = head[r] if r in head else enc[r]
    return grads


def _copy(c):
    fresh = Corruption(c.masked.copy(), c.use_mask_token.copy())
    return fresh if c.samples is None else with_samples(fresh, np.array(c.samples))  # samples row-major already
