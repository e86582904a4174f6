"""What the model does on text it did not train on: the held-out metrics of each evaluation, and the demo
sentence printed at the end of a run. Both use the NumPy forward pass (no backward is needed) with dropout
off, and draw masks and samples from a Generator of their own with a fixed seed: every evaluation sees the
same masks and samples, so evaluations are comparable, and none disturbs the training stream.
"""

import numpy as np

from ..data.tokenizer import Tokenizer
from ..model import Electra, electra_forward
from .diagnostics import HeldOutDiagnostics

EVAL_SEED = 1234  # masks and samples of every evaluation
DEMO_SEED = 7
DEMO_MIN_TOKENS = 12  # the demo takes the first held-out segment at least this long
DEMO_SEARCH = 200  # examples searched for one
POOLED = ("disc_precision", "disc_recall", "disc_balanced_acc")  # over all held-out tokens, not batch averages


def held_out_metrics(params: dict, setup: Electra, data, batch_size: int, max_examples: int,
                     seed: int = EVAL_SEED, temperature: float | None = None) -> dict:
    """Held-out metrics, dropout off, masks and samples from a fixed seed (comparable across evaluations).

    Averages are over tokens, not batches: MLM terms over masked positions, discriminator terms over
    real (non-padding) tokens; precision, recall, balanced accuracy and ROC AUC are computed over all the
    held-out tokens at once. The collapse check (diagnostics.py) reads the last hidden states of the
    discriminator (of the generator for the MLM objective) that the forward pass computed anyway.
    Inputs:  data: a data.PretrainingData split; max_examples: its first examples to use; temperature: the
             sampling temperature (None: the objective's; a scheduled run passes the current one)
    Returns: dict with loss, mlm_loss, mlm_acc (+ disc_loss, disc_acc, replaced_frac, disc_baseline_acc,
             disc_precision, disc_recall, disc_balanced_acc, disc_auc), token_spread, cls_cosine, mean_cosine,
             examples.
    """
    rng = np.random.default_rng(seed)
    n = min(len(data), max_examples)
    sums, counts = {}, {"mlm": 0, "disc": 0}
    diagnostics = HeldOutDiagnostics()
    for start in range(0, n, batch_size):
        batch = data.batch(np.arange(start, min(start + batch_size, n)))
        _, m, cache = electra_forward(params, setup, batch, rng=rng, train=False, temperature=temperature)
        if "disc" in cache:
            diagnostics.add(cache["disc"][0]["hidden_states"][-1], batch["attention_mask"], cache["disc_logits"],
                            cache["labels"])
        else:
            diagnostics.add(cache["gen"][0]["hidden_states"][-1], batch["attention_mask"])
        weights = {"mlm": int(cache["corruption"].masked.sum()), "disc": int(batch["attention_mask"].sum())}
        for k, v in m.items():
            if k == "loss" or k in POOLED:
                continue
            kind = "mlm" if k.startswith("mlm") else "disc"
            sums[k] = sums.get(k, 0.0) + v * weights[kind]
        counts = {kind: counts[kind] + w for kind, w in weights.items()}
    out = {k: v / max(counts["mlm" if k.startswith("mlm") else "disc"], 1) for k, v in sums.items()}
    out["loss"] = out["mlm_loss"] + (setup.objective.disc_weight * out["disc_loss"] if "disc_loss" in out else 0.0)
    out.update(diagnostics.result())
    out["examples"] = n
    return out


def demo(params: dict, setup: Electra, tokenizer: Tokenizer, data, max_tokens: int = 40, seed: int = DEMO_SEED) -> dict:
    """One held-out sentence, corrupted by the generator, with the discriminator's P(replaced) per token.

    Takes the first example whose first segment has >= DEMO_MIN_TOKENS tokens, cut to max_tokens - 2 tokens.
    Returns: dict with tokens (original), corrupted, masked, replaced (bool lists) and p_replaced
    (floats; None for the MLM objective, which has predicted instead), all without [CLS]/[SEP].
    """
    ids = _demo_segment(tokenizer, data, max_tokens)
    input_ids = np.array([[tokenizer.cls_id, *ids, tokenizer.sep_id]], np.int64)  # (1, T)
    batch = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids),
             "attention_mask": np.ones_like(input_ids)}
    rng = np.random.default_rng(seed)
    _, _, cache = electra_forward(params, setup, batch, rng=rng, train=False)
    c = cache["corruption"]
    masked = c.masked[0, 1:-1].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    out = {"tokens": tokens, "masked": masked}
    if setup.objective.objective == "mlm":
        predicted = iter(cache["mlm"][0].argmax(-1).tolist())  # softmax probabilities (M, V), row-major order
        out["predicted"] = [tokenizer.convert_ids_to_tokens(next(predicted)) if m else None for m in masked]
        return out
    corrupted = input_ids.copy()
    corrupted.reshape(-1)[np.flatnonzero(c.masked)] = c.samples
    logits = cache["disc_logits"][0, 1:-1].astype(np.float64)
    out.update(corrupted=tokenizer.convert_ids_to_tokens(corrupted[0, 1:-1]),
               replaced=(cache["labels"][0, 1:-1] != 0).tolist(), p_replaced=(1 / (1 + np.exp(-logits))).tolist())
    return out


def _demo_segment(tokenizer, data, max_tokens):
    """The first segment of the first example with >= DEMO_MIN_TOKENS tokens (else the longest seen)."""
    ids = None
    for i in range(min(len(data), DEMO_SEARCH)):
        row = data.batch([i])["input_ids"][0]
        seps = np.flatnonzero(row == tokenizer.sep_id)
        segment = row[1:seps[0]] if len(seps) else row[1:]
        if len(segment) >= DEMO_MIN_TOKENS or ids is None or len(segment) > len(ids):
            ids = segment[:max_tokens - 2]
        if len(segment) >= DEMO_MIN_TOKENS:
            break
    return ids
