"""One switch between the NumPy reference path and the fast (Numba + reused buffers) path.

    step = make_step(setup, backend="fast")      # or "numpy"
    loss, metrics, grads = step(params, batch, rng, corruption=None, train=True)

Both paths take the same arguments, draw from `rng` in the same order, and return the same numbers
(to floating-point tolerance): the reference is model.electra_forward + model.electra_backward.
"""

from .model import electra_backward, electra_forward

BACKENDS = ("numpy", "fast")


def reference_step(setup):
    def step(params, batch, rng, corruption=None, train=True):
        loss, metrics, cache = electra_forward(params, setup, batch, rng=rng, corruption=corruption, train=train)
        return loss, metrics, electra_backward(cache, setup)

    return step


def make_step(setup, backend="fast"):
    if backend == "numpy":
        return reference_step(setup)
    if backend == "fast":
        from .fast.step import make_fast_step  # Numba kernels; compiled on first use, cached on disk

        return make_fast_step(setup)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
