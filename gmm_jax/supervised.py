"""Supervised Gaussian mixture (labels given): the closed-form maximum-likelihood estimate.

With labels z_i observed the log-likelihood separates into a categorical part (Theorem 1 of the notes: phi_k =
n_k / n) and one Gaussian per class (Theorem 2: the class mean and the class covariance *about that mean*).  It is
exactly the M-step with one-hot responsibilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.config import is_traced
from gmm_jax.em import m_step, sufficient_stats
from gmm_jax.params import GMMParams, check_covariance_type
from gmm_jax.validation import as_data, as_sample_weight, check_labels, check_nonneg_float, check_positive_int


def fit_supervised(X, labels, n_components: int, covariance_type: str = "full", reg_covar=0.0,
                   sample_weight=None) -> GMMParams:
    """Closed-form MLE of a Gaussian mixture from labelled data.

    Args:
      X: (n, D) points.
      labels: (n,) integer classes in [0, n_components); every class needs at least one point (positive weight).
      n_components: K.
      covariance_type: 'full', 'tied', 'diag' or 'spherical'.
      reg_covar: added to the covariance diagonals (0 gives the exact MLE; a class whose points have zero variance
        along some direction then has a singular covariance, and ValueError names it: pass reg_covar > 0).
      sample_weight: optional (n,) non-negative weights.

    Returns:
      ``GMMParams``: weights = class frequencies, means = class means, covariances = class covariances.

    Raises:
      ValueError: bad shapes, NaN, labels out of range or not integers, an empty class, a singular covariance.
      Inside a caller's ``jit`` (traced inputs) only the shapes are checked, and a singular covariance gives NaN
      factors.
    """
    n_components = check_positive_int(n_components, "n_components")
    check_covariance_type(covariance_type)
    traced = any(is_traced(a) for a in (X, labels, sample_weight, reg_covar))
    if not is_traced(reg_covar):
        reg_covar = check_nonneg_float(reg_covar, "reg_covar")
    X = as_data(X)
    n = X.shape[0]
    w = as_sample_weight(sample_weight, n, X.dtype)
    labels = check_labels(labels, n, n_components)
    if not traced:
        lab = np.asarray(labels)
        mass = np.bincount(lab, weights=None if w is None else np.asarray(w, np.float64), minlength=n_components)
        if np.any(mass <= 0):
            empty = np.flatnonzero(mass <= 0).tolist()
            raise ValueError(f"class(es) {empty} have no points{'' if w is None else ' with positive weight'}: "
                             f"every one of the {n_components} classes needs at least one")
    params = _closed_form(X, labels, n_components, covariance_type, reg_covar, w)
    if not traced and not bool(jnp.all(jnp.isfinite(params.prec_chol))):
        if covariance_type == "tied":
            raise ValueError("the shared (tied) covariance is singular: the centred points do not span the "
                             f"{X.shape[1]} dimensions; pass reg_covar > 0")
        pc = np.asarray(params.prec_chol).reshape(n_components, -1)
        bad = np.flatnonzero(~np.all(np.isfinite(pc), axis=1)).tolist()
        sizes = np.bincount(np.asarray(labels), minlength=n_components)[bad].tolist()
        raise ValueError(f"the covariance of class(es) {bad} (with {sizes} points) is singular: zero variance along "
                         f"some direction of the {X.shape[1]} dimensions; pass reg_covar > 0")
    return params


def _closed_form(X, labels, n_components: int, covariance_type: str, reg_covar, sample_weight) -> GMMParams:
    resp = jax.nn.one_hot(labels, n_components, dtype=X.dtype)
    w = resp if sample_weight is None else resp * sample_weight[:, None]
    nk = jnp.sum(w, axis=0)
    # reference point: the class means themselves (computed first), so the second moments do not cancel
    center = (w.T @ X) / jnp.maximum(nk, jnp.finfo(X.dtype).tiny)[:, None]
    stats = sufficient_stats(X, resp, center, covariance_type, sample_weight)
    return m_step(stats, center, covariance_type, reg_covar)
