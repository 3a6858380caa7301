"""The math layer of EM for Gaussian mixtures: pure, whole-array, never jitted here.

Notation: X (n, D) data, K components, ``q`` (n, K) responsibilities, ``theta = (log phi, mu, U)`` with ``U`` the
precision Cholesky factor (see :mod:`gmm_jax.params`).  Everything is in log space:

    log p(x, z=k; theta) = log phi_k + log N(x | mu_k, Sigma_k)                       (log joint)
    log N(x | mu, Sigma) = -D/2 log(2 pi) + log det U - 1/2 ||(x - mu) U||^2
    log p(x; theta)      = logsumexp_k log p(x, z=k; theta)                            (log-likelihood)
    log q_k(x)           = log p(x, z=k; theta) - log p(x; theta)                      (E-step)
    ELBO(theta, q)       = sum_i sum_k q_ik (log p(x_i, z=k; theta) - log q_ik)        (entropy term included)

Sufficient statistics are sums over points of moments about a reference point ``center`` (K, D) (normally the
current means), so that batches and shards add and the second moment does not cancel catastrophically in float32.
These whole-array functions run the same log-density, normalisation and statistics as ``fit``'s fused pass
(:mod:`gmm_jax.density`, :mod:`gmm_jax.stats`), with all of X as one block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from gmm_jax.density import posteriors
from gmm_jax.params import GMMParams, check_covariance_type
from gmm_jax.stats import (
    SuffStats,
    add_stats,
    block_stats,
    m_step,
    m_step_covariances,
    recenter_stats,
    stats_centered,
)


def _check_shapes(X, center) -> None:
    xs, cs = jnp.shape(X), jnp.shape(center)
    if len(xs) != 2 or len(cs) != 2 or xs[1] != cs[1]:
        raise ValueError(f"X must be (n, D) and the means / reference points (K, D) with the same D, got shapes {xs} "
                         f"and {cs}")


def _posteriors(X, params: GMMParams, covariance_type: str):
    _check_shapes(X, params.means)
    return posteriors(X, params, covariance_type)


def log_gaussian(X: jax.Array, means: jax.Array, prec_chol: jax.Array, covariance_type: str = "full") -> jax.Array:
    """``log N(x_i | mu_k, Sigma_k)`` for every point and component, shape (n, K).

    Args:
      X: (n, D) points.
      means: (K, D).
      prec_chol: precision Cholesky factors of ``covariance_type``.
      covariance_type: 'full', 'tied', 'diag' or 'spherical'.
    """
    k = jnp.shape(means)[0] if jnp.ndim(means) == 2 else 1
    zero = jnp.zeros((k,), jnp.result_type(means))
    return _posteriors(X, GMMParams(zero, means, prec_chol), covariance_type)[0]


def log_joint(X: jax.Array, params: GMMParams, covariance_type: str = "full") -> jax.Array:
    """``log phi_k + log N(x_i | mu_k, Sigma_k)``, shape (n, K)."""
    return _posteriors(X, params, covariance_type)[0]


def score_samples(X: jax.Array, params: GMMParams, covariance_type: str = "full") -> jax.Array:
    """Per-point log-likelihood ``log p(x_i; theta) = logsumexp_k log_joint``, shape (n,)."""
    return _posteriors(X, params, covariance_type)[2]


def log_likelihood(X: jax.Array, params: GMMParams, covariance_type: str = "full", sample_weight=None) -> jax.Array:
    """Total (weighted) log-likelihood ``sum_i w_i log p(x_i; theta)``, a scalar."""
    ll = score_samples(X, params, covariance_type)
    return jnp.sum(ll) if sample_weight is None else jnp.sum(sample_weight * ll)


def e_step(X: jax.Array, params: GMMParams, covariance_type: str = "full") -> tuple[jax.Array, jax.Array]:
    """E-step: log-responsibilities ``log q_ik = log p(z=k | x_i; theta)``.

    The same blocked log-density and normalisation as the fused pass of ``fit``
    (:func:`gmm_jax.density.block_posteriors`), with all of X as one block.

    Returns:
      (log_resp (n, K), log_norm (n,)) where ``log_norm`` is the per-point log-likelihood.
    """
    _, log_resp, log_norm = _posteriors(X, params, covariance_type)
    return log_resp, log_norm


def elbo(X: jax.Array, params: GMMParams, resp: jax.Array, covariance_type: str = "full", sample_weight=None) -> jax.Array:
    """Evidence lower bound ``sum_i w_i sum_k q_ik (log p(x_i, z=k; theta) - log q_ik)``.

    ``q`` is any row-stochastic (n, K) matrix.  Equals :func:`log_likelihood` when ``q`` is the posterior, and
    is below it by ``sum_i KL(q_i || p(z | x_i; theta))`` otherwise.  ``0 log 0`` is taken as 0.
    """
    lj = log_joint(X, params, covariance_type)
    # where q = 0 the joint term contributes nothing (also when the joint is -inf)
    per_point = jnp.sum(jnp.where(resp > 0, resp * lj, 0.0) - xlogy(resp, resp), axis=-1)
    return jnp.sum(per_point) if sample_weight is None else jnp.sum(sample_weight * per_point)


def sufficient_stats(
    X: jax.Array, resp: jax.Array, center: jax.Array, covariance_type: str = "full", sample_weight=None
) -> SuffStats:
    """Weighted sufficient statistics about ``center`` (the fused pass's block statistics, all of X as one block).

    Args:
      X: (n, D) points.
      resp: (n, K) responsibilities (rows sum to one; any non-negative weights are accepted).
      center: (K, D) reference points, normally the current means (any value gives the same M-step in exact
        arithmetic; the current means minimise cancellation).
      covariance_type: which second moments to keep.
      sample_weight: optional (n,) non-negative per-point weights.
    """
    _check_shapes(X, center)
    check_covariance_type(covariance_type)
    want = (jnp.shape(X)[0], jnp.shape(center)[0])
    if tuple(jnp.shape(resp)) != want:
        raise ValueError(f"responsibilities must have shape (n, K) = {want}, got {tuple(jnp.shape(resp))}")
    if sample_weight is not None:
        resp = resp * sample_weight[:, None]
    return block_stats(X, resp, center, covariance_type)


def em_step(X: jax.Array, params: GMMParams, covariance_type: str = "full", reg_covar=1e-6, sample_weight=None):
    """One EM iteration on the whole array.

    Returns:
      (new_params, log_likelihood) where the log-likelihood (total, weighted) is that of the *input* params.
    """
    log_resp, log_norm = e_step(X, params, covariance_type)
    resp = jnp.exp(log_resp)
    stats = sufficient_stats(X, resp, params.means, covariance_type, sample_weight)
    ll = jnp.sum(log_norm) if sample_weight is None else jnp.sum(sample_weight * log_norm)
    return m_step(stats, params.means, covariance_type, reg_covar), ll


__all__ = [
    "SuffStats",
    "add_stats",
    "e_step",
    "elbo",
    "em_step",
    "log_gaussian",
    "log_joint",
    "log_likelihood",
    "m_step",
    "m_step_covariances",
    "recenter_stats",
    "score_samples",
    "stats_centered",
    "sufficient_stats",
]
