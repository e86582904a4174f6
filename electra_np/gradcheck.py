"""Finite-difference gradient checking, for any op or for the whole model.

    rel_error = max|analytic - numeric| / max(1e-8, max(|analytic| + |numeric|))

Numeric gradients are centered differences of a scalar f(x) = sum(forward(x) * dout), a projection of
the op's output on a fixed random upstream gradient `dout` (CS231n's eval_numerical_gradient_array),
computed in float64.

Example (one op):
    from electra_np.ops.layernorm import layer_norm_forward, layer_norm_backward
    errors = check_op(layer_norm_forward, layer_norm_backward, {"x": x, "weight": w, "bias": b},
                      kwargs={"eps": 1e-12})          # {"x": 3e-10, "weight": ..., "bias": ...}
Example (the whole model): check_electra(setup, params, batch, corruption).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:  # for the annotations only: check_electra imports the model when it is called
    from .masking import Corruption
    from .model import Electra


def rel_error(a: ArrayLike, n: ArrayLike) -> float:
    """max|a - n| / max(1e-8, max(|a| + |n|)), in float64."""
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    return float(np.max(np.abs(a - n)) / max(1e-8, float(np.max(np.abs(a) + np.abs(n)))))


def numeric_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5,
                     indices: Iterable[int] | None = None) -> np.ndarray:
    """Centered differences of the scalar function f() with respect to array x, which f reads.
    x is perturbed in place and restored. indices: the flat entries to probe (default: all)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in (range(x.size) if indices is None else indices):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def check_op(forward: Callable, backward: Callable, inputs: dict, kwargs: dict | None = None, seed: int = 0,
             h: float = 1e-5, grad_names: Sequence[str] | None = None) -> dict[str, float]:
    """Check backward(dout, cache) against finite differences of forward(**inputs, **kwargs)'s output.

    Inputs:  forward returns (out, cache); backward returns the gradients of the floating inputs, in the
             order of `grad_names` (default: the floating arrays of `inputs` in order), as a tuple, a single
             array, or a dict keyed like `inputs`.
    Returns: {name: relative error}. Also asserts that backward leaves inputs and dout unchanged.
    """
    kwargs = kwargs or {}
    inputs = {k: (np.array(v, np.float64) if np.issubdtype(np.asarray(v).dtype, np.floating) else v)
              for k, v in inputs.items()}
    if grad_names is None:
        grad_names = [k for k, v in inputs.items() if isinstance(v, np.ndarray) and v.dtype == np.float64]
    out, cache = forward(**inputs, **kwargs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    before = {k: np.copy(v) for k, v in inputs.items() if isinstance(v, np.ndarray)}
    dout_before = dout.copy()
    grads = backward(dout, cache)
    for k, v in before.items():
        if not np.array_equal(v, inputs[k]):
            raise AssertionError(f"{forward.__name__} / backward modified its input {k!r}")
    if not np.array_equal(dout, dout_before):
        raise AssertionError(f"{backward.__name__} modified dout")
    if isinstance(grads, np.ndarray):
        grads = (grads,)
    if not isinstance(grads, dict):
        grads = dict(zip(grad_names, grads))
    def f() -> float:
        return float(np.sum(forward(**inputs, **kwargs)[0] * dout))

    return {name: rel_error(grads[name], numeric_gradient(f, inputs[name], h)) for name in grad_names}


def check_function(loss_fn: Callable[[], float], params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
                   h: float = 1e-5, max_entries: int | None = None, seed: int = 0) -> dict[str, float]:
    """Check a dict of analytic gradients of a scalar loss_fn() that reads `params` (dict of float64 arrays).
    max_entries: probe at most this many random entries per tensor (None: every entry).
    Returns: {name: relative error} over the probed entries."""
    check_probe(h, max_entries)
    not64 = [k for k, p in params.items() if np.asarray(p).dtype != np.float64]
    if not64:  # float32 differences of size h are rounding noise: every error would look large, or small, falsely
        raise ValueError(f"gradient checks need float64 parameters; {not64[0]} is {np.asarray(params[not64[0]]).dtype}")
    rng = np.random.default_rng(seed)
    errors = {}
    for name, p in params.items():
        idx = None
        if max_entries is not None and p.size > max_entries:
            idx = rng.choice(p.size, max_entries, replace=False)
        num = numeric_gradient(loss_fn, p, h, idx)
        ana = np.asarray(grads[name], np.float64)
        if idx is not None:
            num, ana = num.reshape(-1)[idx], ana.reshape(-1)[idx]
        errors[name] = rel_error(ana, num)
    return errors


def check_probe(h: float, max_entries: int | None) -> None:
    """Refuse a step h that is not a small positive number and a max_entries that is not None or >= 1 (0 probes
    nothing, and an empty check would pass)."""
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 < h < 1:
        raise ValueError(f"h must be a finite step in (0, 1), got {h!r}")
    if max_entries is not None and (isinstance(max_entries, bool) or not isinstance(max_entries, (int, np.integer))
                                    or max_entries < 1):
        raise ValueError(f"max_entries must be None (every entry) or an integer >= 1, got {max_entries!r}")


def check_electra(setup: "Electra", params: dict[str, np.ndarray], batch: dict[str, np.ndarray],
                  corruption: "Corruption", h: float = 1e-5, max_entries: int | None = None,
                  seed: int = 0) -> dict[str, float]:
    """The whole ELECTRA loss (dropout off, masked positions and samples fixed by `corruption`) against
    finite differences for every parameter tensor of the joint dict. params must be float64.
    Returns: {name: relative error}."""
    from .model import electra_backward, electra_forward

    if corruption.samples is None and setup.objective.objective == "electra":
        raise ValueError("check_electra needs corruption.samples fixed: sampling is not differentiable")
    loss, _, cache = electra_forward(params, setup, batch, corruption=corruption, train=False)
    grads = electra_backward(cache, setup)

    def f() -> float:
        return float(electra_forward(params, setup, batch, corruption=corruption, train=False)[0])

    return check_function(f, params, grads, h, max_entries, seed)
