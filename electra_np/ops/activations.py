"""GELU (Hendrycks & Gimpel 2016) in its two flavours.

ELECTRA (google-research/electra modeling.py `gelu` is the erf form in TF2 / HF's "gelu") uses the
exact form  gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).  The tanh approximation
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) is HF's "gelu_new" / "gelu_pytorch_tanh": a different
function, kept under its own name.
"""

import math

import numba
import numpy as np

SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_COEF = 0.044715


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """Elementwise erf (NumPy has none; math.erf is exact to the last bit). Keeps the dtype."""
    return math.erf(x)


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Exact GELU: y = x * Phi(x).  Inputs: x (...).  Returns: y (...), cache."""
    cdf = 0.5 * (1.0 + erf(x * x.dtype.type(SQRT_HALF)))
    return x * cdf, (x, cdf)


def gelu_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """y = x Phi(x), so dy/dx = Phi(x) + x phi(x) with phi the standard normal density."""
    x, cdf = cache
    pdf = np.exp(-0.5 * x * x) * x.dtype.type(INV_SQRT_2PI)
    return dy * (cdf + x * pdf)


def gelu_tanh_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Tanh-approximated GELU ("gelu_new").  Inputs: x (...).  Returns: y (...), cache."""
    c, a = x.dtype.type(SQRT_2_OVER_PI), x.dtype.type(TANH_COEF)
    t = np.tanh(c * (x + a * x * x * x))
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_tanh_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """y = x/2 (1 + t), t = tanh(u), u = c (x + a x^3), so dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2)."""
    x, t = cache
    c, a = x.dtype.type(SQRT_2_OVER_PI), x.dtype.type(TANH_COEF)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * a * x * x))


ACTIVATION_FUNCTIONS = {
    "gelu": (gelu_forward, gelu_backward),
    "gelu_new": (gelu_tanh_forward, gelu_tanh_backward),
    "gelu_pytorch_tanh": (gelu_tanh_forward, gelu_tanh_backward),
}


def activation_forward(name: str, x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """The activation named as in ElectraConfig.hidden_act (ACTIVATION_FUNCTIONS)."""
    return ACTIVATION_FUNCTIONS[name][0](x)


def activation_backward(name: str, dy: np.ndarray, cache: tuple) -> np.ndarray:
    return ACTIVATION_FUNCTIONS[name][1](dy, cache)
