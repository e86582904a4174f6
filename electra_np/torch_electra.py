"""ELECTRA's pretraining loss written with Hugging Face transformers + PyTorch: the outside computation that
electra_np is held against, by the parity tests (tests/test_hf_parity.py, float64 gradients through
autograd) and by the benchmarks (benchmarks/common.py, the Hugging Face side of a training step).

    disc, gen = hf_pair(setup, params)               # ElectraForPreTraining + ElectraForMaskedLM, our weights
    out = electra_loss(disc, gen, setup, batch, corruption)
    out.loss.backward()                              # gradients in disc / gen .named_parameters()

The loss is model.electra_forward's, term for term (Clark et al. 2020, eq. 1; google-research/electra
`run_pretraining.py`):
    L_MLM  = mean over the M masked positions of CE(generator logits, original token), the generator
             reading the input with corruption.use_mask_token positions set to [MASK]
    L_disc = sum over real tokens of BCE(discriminator logit, replaced?) / max(#real tokens, 1), the
             discriminator reading the input with corruption.samples at the masked positions (a sample
             equal to the original is labelled original)
    L      = L_MLM + disc_weight * L_disc
No gradient flows through the samples. With corruption.samples None they are drawn here, Gumbel-max on the
generator's logits / temperature with torch's global generator (not electra_np's random stream).

This module imports torch and transformers. Only tests and benchmarks import it; electra_np's own code
(which needs NumPy and Numba only) never does.
"""

from dataclasses import dataclass

import numpy as np
import torch
import transformers

from .params import WORD, discriminator_params, generator_params


def hf_config(config, **more):
    """transformers.ElectraConfig with the same fields as electra_np's ElectraConfig (plus `more`)."""
    d = config.to_dict()
    del d["model_type"]
    return transformers.ElectraConfig(**d, **more)


def tie(disc, gen):
    """As in pretraining: one embeddings module for both models, the generator's output projection tied to
    its word embeddings."""
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight


def hf_pair(setup, params):
    """ElectraForPreTraining + ElectraForMaskedLM holding electra_np's joint dict `params` (its dtype),
    embeddings shared and output projection tied (tie). Refuses weights that do not fill both models."""
    dtype = torch.from_numpy(np.asarray(params[f"discriminator.{WORD}"])).dtype
    disc = transformers.ElectraForPreTraining(hf_config(setup.disc)).to(dtype)
    gen = transformers.ElectraForMaskedLM(hf_config(setup.gen)).to(dtype)
    for model, w in ((disc, discriminator_params(params)), (gen, generator_params(params))):
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "generator_lm_head.weight" and "position_ids" not in k]
        if missing or unexpected:
            raise ValueError(f"electra_np's weights do not fit {type(model).__name__}: missing {missing}, "
                             f"unexpected {unexpected}")
    tie(disc, gen)
    return disc, gen



@dataclass
class TorchElectraLoss:
    loss: torch.Tensor           # () L_MLM + disc_weight * L_disc
    mlm_loss: torch.Tensor       # ()
    disc_loss: torch.Tensor      # ()
    mlm_logits: torch.Tensor     # (M, V) the generator's logits at the masked positions
    disc_logits: torch.Tensor    # (B, T)
    disc_ids: np.ndarray         # (B, T) the discriminator's input
    gen_hidden_states: tuple = None   # L_gen + 1 tensors (B, T, H_gen), with hidden_states=True
    disc_hidden_states: tuple = None  # L + 1 tensors (B, T, H), with hidden_states=True


def electra_loss(disc, gen, setup, batch, corruption, gathered=False, hidden_states=False):
    """The ELECTRA loss of the module docstring on Hugging Face's models (train() or eval(): dropout is the
    models' business).

    Inputs:  disc, gen: ElectraForPreTraining, ElectraForMaskedLM (tied, see tie); setup: model.Electra
             (mask_id, objective.disc_weight, objective.temperature); batch: input_ids, attention_mask,
             token_type_ids (B, T) int arrays; corruption: masking.Corruption (samples (M,) or None).
             gathered=False runs ElectraForMaskedLM as it is, its head over all B*T tokens, and picks the
             masked rows; True applies the head to the masked rows only, as electra_np does (same numbers).
    Returns: TorchElectraLoss
    """
    obj = setup.objective
    ids = torch.from_numpy(batch["input_ids"])  # (B, T)
    mask = torch.from_numpy(batch["attention_mask"])
    types = torch.from_numpy(batch["token_type_ids"])
    positions = torch.from_numpy(np.flatnonzero(corruption.masked))  # (M,) row-major
    gen_ids = torch.from_numpy(np.where(corruption.use_mask_token, setup.mask_id, batch["input_ids"]))
    if gathered:
        out = gen.electra(gen_ids, attention_mask=mask, token_type_ids=types, output_hidden_states=hidden_states)
        h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[positions]  # (M, H_gen)
        mlm_logits = gen.generator_lm_head(gen.generator_predictions(h))  # (M, V)
    else:
        out = gen(gen_ids, attention_mask=mask, token_type_ids=types, output_hidden_states=hidden_states)
        mlm_logits = out.logits.reshape(-1, out.logits.shape[-1])[positions]  # (M, V)
    mlm_loss = torch.nn.functional.cross_entropy(mlm_logits, ids.reshape(-1)[positions])

    with torch.no_grad():  # the samples are data: no gradient flows through them
        if corruption.samples is None:
            u = torch.rand_like(mlm_logits)
            gumbel = -torch.log(-torch.log(u + 1e-9) + 1e-9)
            samples = torch.argmax(mlm_logits / obj.temperature + gumbel, dim=-1)
        else:
            samples = torch.from_numpy(np.asarray(corruption.samples, np.int64))
    disc_ids = ids.clone()
    disc_ids.view(-1)[positions] = samples  # (B, T)
    d_out = disc(disc_ids, attention_mask=mask, token_type_ids=types, output_hidden_states=hidden_states)
    z = d_out.logits  # (B, T)
    labels = (disc_ids != ids).to(z.dtype)  # a correct guess counts as original
    w = mask.to(z.dtype)
    disc_loss = torch.nn.functional.binary_cross_entropy_with_logits(z, labels, weight=w, reduction="sum") \
        / w.sum().clamp(min=1)
    return TorchElectraLoss(mlm_loss + obj.disc_weight * disc_loss, mlm_loss, disc_loss, mlm_logits, z,
                            disc_ids.numpy(), out.hidden_states, d_out.hidden_states)
