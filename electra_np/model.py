"""The ELECTRA model and its pretraining objective (Clark et al. 2020, Section 2):

    generator (a small masked language model) sees the input with ~15% of the tokens masked,
    samples a replacement at each masked position (no gradient through the sample),
    discriminator labels every token of the corrupted input as original or replaced;
    L = L_MLM(generator) + lambda * L_disc(discriminator), lambda = 50.

Forward is a flat list of op calls; backward is the same list reversed. Gradients merge in three
places, each marked in the code: the residual adds (ops/layer.py), the generator's output projection
tied to the word embeddings, and the embeddings shared by generator and discriminator.
Parameter names, shapes and the joint dict layout: params.py.
"""

from dataclasses import dataclass, field

import numpy as np

from .config import ElectraConfig, PretrainingConfig, generator_config
from .masking import check_corruption, corrupt, gumbel_sample, with_samples
from .ops.attention import key_mask_bias
from .ops.embeddings import embeddings_backward, embeddings_forward
from .ops.heads import (
    discriminator_head_backward,
    discriminator_head_forward,
    generator_head_backward,
    generator_head_forward,
)
from .ops.layer import transformer_layer_backward, transformer_layer_forward
from .ops.losses import (
    binary_cross_entropy_backward,
    binary_cross_entropy_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from .params import SHARED_KEYS, WORD, check_params, generator_params, init_params, joint_shapes, sub
from .validate import check_batch

# ----------------------------------------------------------------------------- encoder

def encoder_forward(w, config, input_ids, token_type_ids, attention_mask, rng=None):
    """ElectraModel: embeddings (+ projection) then num_hidden_layers post-LN layers.

    Inputs:  w: HF-named dict (keys starting "electra."); input_ids, token_type_ids, attention_mask (B, T);
             rng: dropout on when given
    Returns: h (B, T, H), cache (cache["hidden_states"]: the embeddings output and every layer's output)
    """
    x, emb_cache = embeddings_forward(input_ids, token_type_ids, sub(w, "electra."), config.layer_norm_eps,
                                      config.hidden_dropout_prob, rng)  # (B, T, H)
    dtype = w[WORD].dtype
    bias = key_mask_bias(attention_mask, dtype)  # (B, 1, 1, T)
    hidden_states, layer_caches = [x], []
    for i in range(config.num_hidden_layers):
        x, c = transformer_layer_forward(x, bias, sub(w, f"electra.encoder.layer.{i}."), config, rng)
        hidden_states.append(x)
        layer_caches.append(c)
    return x, {"emb": emb_cache, "layers": layer_caches, "hidden_states": hidden_states}


def encoder_backward(dh, cache):
    """Returns: grads dict keyed "electra.*"."""
    grads = {}
    for i in reversed(range(len(cache["layers"]))):
        dh, g = transformer_layer_backward(dh, cache["layers"][i])
        grads.update({f"electra.encoder.layer.{i}.{k}": v for k, v in g.items()})
    grads.update({f"electra.{k}": v for k, v in embeddings_backward(dh, cache["emb"]).items()})
    return grads


# ----------------------------------------------------------------------------- the two models

def discriminator_forward(w, config, input_ids, token_type_ids, attention_mask, rng=None):
    """ElectraForPreTraining's logits (B, T): > 0 means "replaced"."""
    h, enc_cache = encoder_forward(w, config, input_ids, token_type_ids, attention_mask, rng)
    logits, head_cache = discriminator_head_forward(h, w, config.hidden_act)
    return logits, (enc_cache, head_cache)


def discriminator_backward(dlogits, cache):
    enc_cache, head_cache = cache
    dh, grads = discriminator_head_backward(dlogits, head_cache)
    grads.update(encoder_backward(dh, enc_cache))
    return grads


def generator_forward(w, config, input_ids, token_type_ids, attention_mask, positions, rng=None):
    """ElectraForMaskedLM's logits at the flat positions (M,) of the (B, T) batch only: the head never
    runs over all B*T tokens. Returns: logits (M, V), cache."""
    h, enc_cache = encoder_forward(w, config, input_ids, token_type_ids, attention_mask, rng)  # (B, T, Hg)
    hm = h.reshape(-1, h.shape[-1])[positions]  # (M, Hg)
    logits, head_cache = generator_head_forward(hm, w[WORD], w, config.layer_norm_eps)  # (M, V)
    return logits, (enc_cache, head_cache, positions, h.shape)


def generator_backward(dlogits, cache):
    enc_cache, head_cache, positions, h_shape = cache
    dhm, dword_out, grads = generator_head_backward(dlogits, head_cache)
    dh = np.zeros((h_shape[0] * h_shape[1], h_shape[2]), dhm.dtype)
    dh[positions] = dhm  # positions are distinct, so plain assignment is exact
    grads.update(encoder_backward(dh.reshape(h_shape), enc_cache))
    grads[WORD] = grads[WORD] + dword_out  # tied weights: input embedding path + output projection path
    return grads


# ----------------------------------------------------------------------------- the ELECTRA objective

@dataclass(frozen=True)
class Electra:
    """Everything fixed about a pretraining setup: the two configs, the objective, the special token ids."""

    disc: ElectraConfig
    gen: ElectraConfig
    objective: PretrainingConfig = field(default_factory=PretrainingConfig)
    mask_id: int = 4
    excluded_ids: tuple = (2, 3, 4)  # [CLS], [SEP], [MASK]: never chosen for masking

    @classmethod
    def build(cls, config, objective=None, mask_id=4, cls_id=2, sep_id=3):
        """Derive the generator config as the official code does; the MLM-only baseline uses a
        generator-style model of the discriminator's full size (official run_pretraining.py)."""
        objective = objective or PretrainingConfig()
        size = 1.0 if objective.objective == "mlm" else objective.generator_hidden_size
        return cls(config, generator_config(config, size), objective, mask_id, (cls_id, sep_id, mask_id))

    def shapes(self):
        return joint_shapes(self.disc, self.gen, self.objective.objective)

    def init_params(self, seed, dtype=np.float32):
        return init_params(self.shapes(), self.disc.initializer_range, seed, dtype)


def disc_metrics(loss, disc_loss, disc_logits, labels, attention_mask):
    """The step's discriminator metrics over real tokens (both backends report these): accuracy against the
    always-original baseline, and how well it finds the replaced tokens whatever their share: precision and
    recall of "replaced", and balanced accuracy, the mean of the two classes' recalls (0.5 for any constant
    answer; scikit-learn's balanced_accuracy_score). A ratio with nothing to count is 0 (scikit-learn's
    zero_division=0). Reads its inputs only: no loss, gradient or random draw depends on it.

    Inputs:  disc_logits (B, T) (> 0: "replaced"); labels (B, T) (1: replaced); attention_mask (B, T)
    Returns: dict of floats
    """
    real = attention_mask != 0
    predicted, replaced = (disc_logits > 0)[real], (labels != 0)[real]  # (N,) over real tokens
    n_replaced, n_flagged = int(replaced.sum()), int(predicted.sum())
    n_original, hits = replaced.size - n_replaced, int((predicted & replaced).sum())
    recall = hits / n_replaced if n_replaced else 0.0
    specificity = (n_original - (n_flagged - hits)) / n_original if n_original else 0.0
    present = [r for r, n in ((recall, n_replaced), (specificity, n_original)) if n]
    return {"loss": float(loss), "disc_loss": float(disc_loss),
            "disc_acc": float(((disc_logits > 0) == (labels != 0))[real].mean()),
            "replaced_frac": float(labels[real].mean()), "disc_baseline_acc": float(1 - labels[real].mean()),
            "disc_precision": hits / n_flagged if n_flagged else 0.0, "disc_recall": recall,
            "disc_balanced_acc": sum(present) / len(present) if present else 0.0}


def prepare_step(params, setup, batch, rng, corruption, shapes=None):
    """Validation and masking shared by both paths (engine.make_step): check the parameters and the batch,
    then draw the corruption from rng unless one is given, and check it.
    Returns: input_ids, attention_mask, token_type_ids (B, T) int64, corruption."""
    check_params(params, setup.shapes() if shapes is None else shapes)
    input_ids, attention_mask, token_type_ids = check_batch(setup.disc, batch["input_ids"],
                                                            batch.get("attention_mask"), batch.get("token_type_ids"))
    if corruption is None:
        if rng is None:
            raise ValueError("electra_forward needs rng (to draw masked positions) or an explicit corruption")
        obj = setup.objective
        corruption = corrupt(input_ids, attention_mask, setup.excluded_ids, obj.mask_prob,
                             obj.max_predictions(input_ids.shape[1]), obj.mask_token_prob, rng)
    check_corruption(corruption, input_ids, attention_mask, setup.disc.vocab_size)
    return input_ids, attention_mask, token_type_ids, corruption


def electra_forward(params, setup, batch, rng=None, corruption=None, train=True, temperature=None):
    """One pretraining forward pass.

    Inputs:  params: the joint dict (params.py); setup: Electra; batch: dict with input_ids and optionally
             attention_mask, token_type_ids (B, T); rng: np.random.Generator for masking, sampling and
             dropout; corruption: a Corruption that fixes masking and samples (then rng is only used for
             dropout, and for samples if corruption.samples is None); train: dropout on; temperature: the
             sampling temperature of this step (None: setup.objective.temperature; a schedule's value)
    Returns: loss (0-d), metrics dict, cache
    """
    input_ids, attention_mask, token_type_ids, corruption = prepare_step(params, setup, batch, rng, corruption)
    obj = setup.objective
    drop_rng = rng if train else None

    # generator: a masked language model on the [MASK]ed input, evaluated at the masked positions
    positions = np.flatnonzero(corruption.masked)  # (M,) row-major
    gen_ids = np.where(corruption.use_mask_token, setup.mask_id, input_ids)  # (B, T)
    gen_w = generator_params(params)
    mlm_logits, gen_cache = generator_forward(gen_w, setup.gen, gen_ids, token_type_ids, attention_mask,
                                              positions, drop_rng)  # (M, V)
    mlm_labels = input_ids.reshape(-1)[positions]  # (M,)
    mlm_loss, mlm_cache = softmax_cross_entropy_forward(mlm_logits, mlm_labels)
    metrics = {"mlm_loss": float(mlm_loss), "mlm_acc": float((mlm_logits.argmax(-1) == mlm_labels).mean()) if len(positions) else 0.0}
    cache = {"gen": gen_cache, "mlm": mlm_cache, "corruption": corruption}
    if obj.objective == "mlm":
        metrics["loss"] = float(mlm_loss)
        return mlm_loss, metrics, cache

    # sample replacements: Gumbel-max on the logits; the sample is data, no gradient flows through it
    samples = corruption.samples
    if samples is None:
        if rng is None:
            raise ValueError("electra_forward needs rng to sample replacements, or corruption.samples")
        samples = gumbel_sample(mlm_logits, obj.temperature if temperature is None else temperature, rng)
    corruption = with_samples(corruption, samples)  # row-major, as positions above
    cache["corruption"] = corruption  # a new object: the caller's corruption is never modified
    disc_ids = input_ids.copy()
    disc_ids.reshape(-1)[positions] = corruption.samples  # (B, T)
    labels = (disc_ids != input_ids).astype(np.int64)  # a correct guess counts as original

    # discriminator: replaced-token detection on every real token
    disc_logits, disc_cache = discriminator_forward(sub(params, "discriminator."), setup.disc, disc_ids,
                                                    token_type_ids, attention_mask, drop_rng)  # (B, T)
    disc_loss, disc_loss_cache = binary_cross_entropy_forward(disc_logits, labels, attention_mask)
    loss = mlm_loss + mlm_loss.dtype.type(obj.disc_weight) * disc_loss
    metrics.update(disc_metrics(loss, disc_loss, disc_logits, labels, attention_mask))
    cache.update(disc=disc_cache, disc_loss=disc_loss_cache, disc_logits=disc_logits, labels=labels)
    return loss, metrics, cache


def electra_backward(cache, setup, dloss=1.0):
    """Gradient of the loss with respect to every tensor of the joint dict (same keys)."""
    dtype = cache["mlm"][0].dtype
    dloss = dtype.type(dloss)
    gen_grads = generator_backward(softmax_cross_entropy_backward(dloss, cache["mlm"]), cache["gen"])
    if setup.objective.objective == "mlm":
        return {f"generator.{k}": v for k, v in gen_grads.items()}
    ddisc = binary_cross_entropy_backward(dloss * dtype.type(setup.objective.disc_weight), cache["disc_loss"])
    disc_grads = discriminator_backward(ddisc, cache["disc"])
    grads = {f"discriminator.{k}": v for k, v in disc_grads.items()}
    for k, v in gen_grads.items():
        if k in SHARED_KEYS:  # shared embeddings: discriminator input + generator input + generator output
            grads[f"discriminator.{k}"] = grads[f"discriminator.{k}"] + v
        else:
            grads[f"generator.{k}"] = v
    return grads
