"""What the scikit-learn estimators share: checks of their arguments, with scikit-learn's error meanings (and
wording where its own tests match it), the random key from a ``random_state``, and the precision rule (float64 input:
64-bit mode for the call only)."""

from __future__ import annotations

import contextlib
import functools

import jax
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

FLOAT_DTYPES = [np.float64, np.float32]
"""What ``validate_data`` converts to: float64 and float32 kept, anything else (integers) float64, as scikit-learn."""


def random_key(random_state):
    """A JAX key drawn from scikit-learn's ``random_state`` (None, an int or a ``RandomState``)."""
    rng = check_random_state(random_state)
    return jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))


def precision_of(dtype):
    """64-bit mode for this call only when ``dtype`` is float64 (else the caller's setting)."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def in_fitted_precision(attr):
    """Run the method in the precision of the fitted attribute ``attr`` (float64 attributes: 64-bit mode)."""

    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            check_is_fitted(self)
            with precision_of(getattr(self, attr).dtype):
                return method(self, *args, **kwargs)

        return run

    return wrap

ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined empirical covariance (for "
               "instance caused by singleton or collapsed samples). Try to decrease the number of components, "
               "increase reg_covar, or scale the input data.")


def _float_array(value, name):
    a = np.asarray(value)
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"The parameter '{name}' must be numeric, got dtype {a.dtype}")
    a = a.astype(a.dtype if a.dtype in (np.float32, np.float64) else np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"The parameter '{name}' contains NaN or infinity")
    return a


def check_shape(a, shape, name):
    if a.shape != tuple(shape):
        raise ValueError(f"The parameter '{name}' should have the shape of {tuple(shape)}, but got {a.shape}")


def check_weights(weights, n_components):
    """Non-negative weights of shape (K,) that sum to one (to 1e-8; 1e-6 in float32)."""
    w = _float_array(weights, "weights")
    check_shape(w, (n_components,), "weights")
    if np.any(w < 0) or np.any(w > 1):
        raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but got min value {w.min():.5f}, "
                         f"max value {w.max():.5f}")
    atol = 1e-6 if w.dtype == np.float32 else 1e-8
    if abs(1.0 - float(w.sum())) > atol:
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {w.sum():.5f}")
    return w


def check_means(means, n_components, n_features):
    m = _float_array(means, "means")
    check_shape(m, (n_components, n_features), "means")
    return m


def check_precisions(precisions, covariance_type, n_components, n_features):
    """Precisions of the covariance type's shape: symmetric positive definite matrices (full, tied) or positive
    values (diag, spherical)."""
    name = f"{covariance_type} precision"
    p = _float_array(precisions, name)
    shapes = {"full": (n_components, n_features, n_features), "tied": (n_features, n_features),
              "diag": (n_components, n_features), "spherical": (n_components,)}
    check_shape(p, shapes[covariance_type], name)
    if covariance_type in ("diag", "spherical"):
        if np.any(p <= 0):
            raise ValueError(f"'{name}' should be positive")
        return p
    for mat in p.reshape(-1, n_features, n_features):
        if not (np.allclose(mat, mat.T) and np.all(np.linalg.eigvalsh(mat) > 0)):
            raise ValueError(f"'{name}' should be symmetric, positive-definite")
    return p


def checked_inits(weights, means, precisions, n_components, n_features, covariance_type):
    """(weights, means, precisions) initial values checked (None where not given)."""
    return (None if weights is None else check_weights(weights, n_components),
            None if means is None else check_means(means, n_components, n_features),
            None if precisions is None else check_precisions(precisions, covariance_type, n_components, n_features))
