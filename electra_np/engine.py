"""The one switch between the NumPy reference path and the fast path (Numba kernels, reused buffers).

    step = make_step(setup, backend)             # pretraining: step(params, batch, rng, corruption=None,
                                                 #   train=True) -> (loss, metrics, grads)
    update = make_update(optimizer, backend)     # update(params, grads, lr): optim.AdamW.update
    clf = make_classifier(config, backend)       # fine-tuning: clf.step(...), clf.logits(params, batch);
                                                 #   backend also "fast-padded" (CLASSIFIER_BACKENDS)
    logits = make_discriminator(config, backend) # logits(w, batch) -> (B, T), dropout off

Every choice between the two paths is made here and nowhere else. Both paths take the same arguments,
draw from `rng` in the same order, and return the same numbers to floating-point tolerance (the fast
path's tests hold it to the reference); the fast one is the default wherever Numba works.

The classifier's fast path has two encoders: "fast" runs over the real tokens of a batch only (fast/unpadded.py,
no padding), "fast-padded" over the padded (B, T) grid (fast/classify.py), kept for comparison and as the
fallback where the unpadded attention cannot run.
"""

import numpy as np

from .classification import ReferenceClassifier
from .model import discriminator_forward, electra_backward, electra_forward
from .validate import check_batch

BACKENDS = ("numpy", "fast")
CLASSIFIER_BACKENDS = ("numpy", "fast", "fast-padded")


def check_backend(backend, allowed=BACKENDS):
    if backend not in allowed:
        raise ValueError(f"backend must be one of {allowed}, got {backend!r}")
    return backend


def default_backend():
    """"fast" when the Numba path imports, else "numpy"."""
    try:
        from .fast import step  # noqa: F401
    except Exception:  # numba absent, or it cannot compile on this machine
        return "numpy"
    return "fast"


def reference_step(setup):
    """model.electra_forward + model.electra_backward as one call."""

    def step(params, batch, rng, corruption=None, train=True, temperature=None):
        loss, metrics, cache = electra_forward(params, setup, batch, rng=rng, corruption=corruption, train=train,
                                               temperature=temperature)
        return loss, metrics, electra_backward(cache, setup)

    return step


def make_step(setup, backend="fast"):
    if check_backend(backend) == "numpy":
        return reference_step(setup)
    from .fast.step import FastStep  # Numba kernels: compiled on first use, cached on disk

    return FastStep(setup)


def make_update(optimizer, backend="fast", lr_scales=None):
    """update(params, grads, lr): optim.AdamW.update (with per-tensor learning-rate factors lr_scales), or
    the same update in one fused kernel pass per tensor."""
    if check_backend(backend) == "numpy":
        def update(params, grads, lr):
            optimizer.update(params, grads, lr, lr_scales)

        return update
    from .fast.kernels.adamw import fused_update

    return fused_update(optimizer, lr_scales)


def make_classifier(config, backend="fast", dtype=np.float32, note=None):
    """An object with .step(params, batch, labels, rng, train) -> (loss, metrics, grads) and
    .logits(params, batch) -> (B, C): classification.py's model on any path of CLASSIFIER_BACKENDS.

    "fast" is fast/unpadded.py's FastUnpaddedClassifier, unless its attention cannot run for `dtype` (it needs
    NumPy's OpenBLAS gemm, as fused attention does): then the padded FastClassifier, and note(line) says so."""
    if check_backend(backend, CLASSIFIER_BACKENDS) == "numpy":
        return ReferenceClassifier(config)
    from .fast.classify import FastClassifier

    if backend == "fast":
        from .fast.kernels import varlen_attention

        if varlen_attention.available(dtype):
            from .fast.unpadded import FastUnpaddedClassifier

            return FastUnpaddedClassifier(config)
        if note is not None:
            note(f"note: the unpadded encoder needs NumPy's OpenBLAS gemm for {np.dtype(dtype).name}, which this "
                 "NumPy lacks: fine-tuning runs on the padded fast encoder (fast-padded)")
    return FastClassifier(config)


def make_discriminator(config, backend="fast"):
    """logits(w, batch) -> (B, T): ElectraForPreTraining's per-token logits (> 0: "replaced"), dropout off.
    w: the discriminator's HF-named dict."""
    if check_backend(backend) == "numpy":
        def logits(w, batch):
            ids, mask, types = check_batch(config, batch["input_ids"], batch.get("attention_mask"),
                                           batch.get("token_type_ids"))
            return discriminator_forward(w, config, ids, types, mask)[0]

        return logits
    from .fast.inference import FastDiscriminator

    return FastDiscriminator(config)


def first_run_note(backend: str) -> str | None:
    """A line for the console when the fast path's kernels are not compiled yet on this machine (the first run
    compiles them before its first step); None otherwise."""
    if check_backend(backend) == "numpy":
        return None
    from .fast.runtime import kernels_cached

    if kernels_cached():
        return None
    return ("compiling the Numba kernels: the first run on this machine only, about half a minute to a minute "
            "before the first step; later runs load them from the disk cache")
