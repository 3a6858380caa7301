"""Supervised Gaussian mixture (labels given): the closed-form maximum-likelihood estimate.

With labels z_i observed the log-likelihood separates into a categorical part (Theorem 1 of the notes: phi_k =
n_k / n) and one Gaussian per class (Theorem 2: the class mean and the class covariance *about that mean*).  It is
exactly the M-step with one-hot responsibilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gmm_jax.em import m_step, sufficient_stats
from gmm_jax.params import GMMParams


def fit_supervised(X, labels, n_components: int, covariance_type: str = "full", reg_covar=0.0,
                   sample_weight=None) -> GMMParams:
    """Closed-form MLE of a Gaussian mixture from labelled data.

    Args:
      X: (n, D) points.
      labels: (n,) integer classes in [0, n_components).
      n_components: K (static).
      covariance_type: 'full', 'tied', 'diag' or 'spherical'.
      reg_covar: added to the covariance diagonals (0 gives the exact MLE; a class with fewer than D + 1 distinct
        points then has a singular covariance and NaN factors).
      sample_weight: optional (n,) weights.

    Returns:
      ``GMMParams``: weights = class frequencies, means = class means, covariances = class covariances.
    """
    X = jnp.asarray(X)
    resp = jax.nn.one_hot(labels, n_components, dtype=X.dtype)
    nk = jnp.sum(resp if sample_weight is None else resp * sample_weight[:, None], axis=0)
    # reference point: the class means themselves (computed first), so the second moments do not cancel
    w = resp if sample_weight is None else resp * sample_weight[:, None]
    center = (w.T @ X) / jnp.maximum(nk, jnp.finfo(X.dtype).tiny)[:, None]
    stats = sufficient_stats(X, resp, center, covariance_type, sample_weight)
    return m_step(stats, center, covariance_type, reg_covar)
